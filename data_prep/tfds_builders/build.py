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

import os

from absl import app, flags

from data_prep.tfds_builders.prepare import FOLDS, build
from grace_jax.infra import cli

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
    done = build(
        FLAGS.dataset,
        FLAGS.manual_dir,
        FLAGS.data_dir,
        fold=FLAGS.fold,
        frame_size=FLAGS.frame_size,
        captions=FLAGS.captions,
        workers=FLAGS.workers,
        max_bad_fraction=FLAGS.max_bad_fraction,
        jpeg_quality=FLAGS.jpeg_quality,
        overwrite=FLAGS.overwrite,
    )
    counts = ", ".join(f"{s}: {n} clips" for s, n in done.num_clips.items())
    print(f"prepared {done.name} in {done.path} ({counts}; {done.num_bad_clips} lines in {done.report})")


if __name__ == "__main__":
    cli.run(main)
