r"""Prepares the DFEW, FERV39k or MAFW TFDS dataset from the manually downloaded data, without TensorFlow.

Usage:

  python -m data_prep.tfds_builders.build --dataset=dfew --fold=3 --manual_dir=/data/DFEW \
      --data_dir=/data/tensorflow_datasets                      # -> dfew/fold_3
  python -m data_prep.tfds_builders.build --dataset=ferv39k --manual_dir=/data/FERV39k \
      --data_dir=/data/tensorflow_datasets                      # -> ferv39k
  python -m data_prep.tfds_builders.build --dataset=mafw --fold=1 --manual_dir=/data/MAFW \
      --captions=/data/MAFW/captions.tsv --data_dir=/data/tensorflow_datasets --frame_size=112
                                                                # -> mafw/fold_1_112px

(`tfds build` would import TensorFlow; this is the same `download_and_prepare` through the Python API.)
Output: `<data_dir>/<dataset>/<config>/1.0.0/` with tfds's ArrayRecord files, its dataset_info.json and
`bad_clips.tsv` (data_prep's report: skipped clips with the reason, then kept clips whose listed frame
count was wrong). Read it with `tfds.data_source("dfew/fold_3", data_dir=...)` or train on it with
`--config.data.tfds=dfew/fold_3 --config.data.tfds_dir=/data/tensorflow_datasets`.
"""

from __future__ import annotations

import dataclasses
import os

from absl import app, flags

from data_prep import report
from data_prep.writer import OutputExistsError
from grace_jax import cli
from grace_jax.data import schema

BAD_CLIP_REPORT_NAME = schema.BAD_CLIP_REPORT_NAME
FOLDS = {"dfew": 5, "ferv39k": 0, "mafw": 5}


@dataclasses.dataclass(frozen=True)
class Prepared:
    """What a build wrote: the tfds name to load, its folder, clips per split, the report's lines."""

    name: str
    path: str
    num_clips: dict[str, int]
    num_bad_clips: int
    report: str


def build(dataset: str, manual_dir: str, data_dir: str, *, fold: int | None = None, frame_size: int = 224,
          captions: str | None = None, workers: int = 1, max_bad_fraction: float = 0.05, jpeg_quality: int = 95,
          overwrite: bool = False, progress: bool = True) -> Prepared:
    """Runs tfds's download_and_prepare for one dataset config; raises cli.UserError on bad input.

    Args:
      manual_dir: the dataset's folder as downloaded (frame folders and lists; see the builders'
        MANUAL_DOWNLOAD_INSTRUCTIONS).
      data_dir: tfds's data folder; the dataset lands in `<data_dir>/<dataset>/<config>/<version>`.
      overwrite: replace a dataset already prepared there (otherwise that is refused).
    """
    import tensorflow_datasets as tfds

    from data_prep.tfds_builders import BUILDERS
    from data_prep.tfds_builders.clip_builder import make_config

    if dataset not in BUILDERS:
        raise cli.UsageError(f"--dataset={dataset!r}: choose one of {sorted(BUILDERS)}")
    folds = FOLDS[dataset]
    if folds and (fold is None or not 1 <= fold <= folds):
        raise cli.UsageError(f"--dataset={dataset} needs --fold=1..{folds}, got {fold}")
    if not folds and fold is not None:
        raise cli.UsageError(f"--dataset={dataset} has no folds; leave out --fold")
    if frame_size < 8:
        raise cli.UsageError(f"--frame_size={frame_size}: give a frame side of at least 8 pixels")
    if not os.path.isdir(manual_dir):
        raise cli.NotFoundError(f"--manual_dir={manual_dir} is not a folder")
    if captions is not None and not os.path.isfile(captions):
        raise cli.NotFoundError(f"--captions={captions} does not exist")
    if not progress:
        tfds.disable_progress_bar()
    config = make_config(fold if folds else None, frame_size)
    builder = BUILDERS[dataset](config=config, data_dir=os.path.abspath(data_dir), file_format="array_record",
                                captions=captions, workers=workers, max_bad_fraction=max_bad_fraction,
                                jpeg_quality=jpeg_quality)
    if builder.is_prepared() and not overwrite:
        raise OutputExistsError(f"{builder.data_dir} already holds {dataset}/{config.name}; nothing was "
                                "written. Pass --overwrite to rebuild it, or choose another --data_dir.")
    mode = tfds.download.GenerateMode.FORCE_REDOWNLOAD if overwrite else tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        manual_dir=os.path.abspath(manual_dir), download_mode=mode))
    path = os.fspath(builder.data_dir)
    report_path = os.path.join(path, BAD_CLIP_REPORT_NAME)
    report.write_report(report_path, builder.bad_clips)
    return Prepared(name=f"{dataset}/{config.name}", path=path,
                    num_clips={s: int(v.num_examples) for s, v in builder.info.splits.items()},
                    num_bad_clips=len(builder.bad_clips), report=report_path)


FLAGS = flags.FLAGS
flags.DEFINE_enum("dataset", None, sorted(FOLDS), "Which dataset to prepare.")
flags.DEFINE_string("manual_dir", None, "The dataset's folder as downloaded (frame folders and lists).")
flags.DEFINE_string("data_dir", os.path.expanduser("~/tensorflow_datasets"), "tfds data folder to write into.")
flags.DEFINE_integer("fold", None, "DFEW/MAFW fold (1..5).")
flags.DEFINE_integer("frame_size", 224, "Stored square frame side; other than 224 adds _<side>px to the config name.")
flags.DEFINE_string("captions", None, "Clip id -> caption file (JSON object, or CSV/TSV `clip_id,text`).")
flags.DEFINE_integer("workers", os.cpu_count() or 1, "Worker processes reading and encoding clips.")
flags.DEFINE_float("max_bad_fraction", 0.05, "Fail when more than this fraction of listed clips is bad.")
flags.DEFINE_integer("jpeg_quality", 95, "JPEG quality of stored frames.")
flags.DEFINE_bool("overwrite", False, "Rebuild a dataset already prepared in --data_dir.")
flags.mark_flags_as_required(["dataset", "manual_dir"])


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    done = build(FLAGS.dataset, FLAGS.manual_dir, FLAGS.data_dir, fold=FLAGS.fold, frame_size=FLAGS.frame_size,
                 captions=FLAGS.captions, workers=FLAGS.workers, max_bad_fraction=FLAGS.max_bad_fraction,
                 jpeg_quality=FLAGS.jpeg_quality, overwrite=FLAGS.overwrite)
    counts = ", ".join(f"{s}: {n} clips" for s, n in done.num_clips.items())
    print(f"prepared {done.name} in {done.path} ({counts}; {done.num_bad_clips} lines in {done.report})")


if __name__ == "__main__":
    cli.run(main)
