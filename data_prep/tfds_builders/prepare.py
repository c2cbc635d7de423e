"""One TFDS build: checks the arguments, runs tfds's download_and_prepare, writes the bad-clip report.

`python -m data_prep.tfds_builders.build` is its command line; see there for the layout written.
"""

from __future__ import annotations

import dataclasses
import os

from data_prep import report
from data_prep.writer import OutputExistsError
from grace_jax.data import schema
from grace_jax.infra import errors

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


def build(
    dataset: str,
    manual_dir: str,
    data_dir: str,
    *,
    fold: int | None = None,
    frame_size: int = 224,
    captions: str | None = None,
    workers: int = 1,
    max_bad_fraction: float = 0.05,
    jpeg_quality: int = 95,
    overwrite: bool = False,
    progress: bool = True,
) -> Prepared:
    """Runs tfds's download_and_prepare for one dataset config; raises errors.UserError on bad input.

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
        raise errors.UsageError(f"--dataset={dataset!r}: choose one of {sorted(BUILDERS)}")
    folds = FOLDS[dataset]
    if folds and (fold is None or not 1 <= fold <= folds):
        raise errors.UsageError(f"--dataset={dataset} needs --fold=1..{folds}, got {fold}")
    if not folds and fold is not None:
        raise errors.UsageError(f"--dataset={dataset} has no folds; leave out --fold")
    if frame_size < 8:
        raise errors.UsageError(f"--frame_size={frame_size}: give a frame side of at least 8 pixels")
    if not os.path.isdir(manual_dir):
        raise errors.NotFoundError(f"--manual_dir={manual_dir} is not a folder")
    if captions is not None and not os.path.isfile(captions):
        raise errors.NotFoundError(f"--captions={captions} does not exist")
    if not progress:
        tfds.disable_progress_bar()
    config = make_config(fold if folds else None, frame_size)
    cls = BUILDERS[dataset]
    # tfds takes a registered config by name only (an equal instance is refused as a clash).
    registered = config.name in {c.name for c in cls.BUILDER_CONFIGS}
    builder = cls(
        config=config.name if registered else config,
        data_dir=os.path.abspath(data_dir),
        file_format="array_record",
        captions=captions,
        workers=workers,
        max_bad_fraction=max_bad_fraction,
        jpeg_quality=jpeg_quality,
    )
    if builder.is_prepared() and not overwrite:
        raise OutputExistsError(
            f"{builder.data_dir} already holds {dataset}/{config.name}; nothing was "
            "written. Pass --overwrite to rebuild it, or choose another --data_dir."
        )
    mode = (
        tfds.download.GenerateMode.FORCE_REDOWNLOAD if overwrite else tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS
    )
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=os.path.abspath(manual_dir), download_mode=mode)
    )
    path = os.fspath(builder.data_dir)
    report_path = os.path.join(path, BAD_CLIP_REPORT_NAME)
    report.write_report(report_path, builder.bad_clips)
    return Prepared(
        name=f"{dataset}/{config.name}",
        path=path,
        num_clips={s: int(v.num_examples) for s, v in builder.info.splits.items()},
        num_bad_clips=len(builder.bad_clips),
        report=report_path,
    )
