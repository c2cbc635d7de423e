"""What the DFEW, FERV39k and MAFW builders share: features, configs and the example generator.

A TFDS example is one clip, with the same JPEG frames as a record of `data_prep.build_dataset`'s shards
(the frames come from the same `load_clip`), in features that need no TensorFlow:

    frames       Tensor((None,), object)         the clip's JPEG frames, each a byte string, in order
    label        ClassLabel                      the dataset's class names (grace_jax.data.schema)
    clip_id      Text                            e.g. "DFEW_Frame_Face/03271"
    caption      Text                            "" when the clip has none (has_caption tells)
    has_caption  Scalar(bool)
    frame_size   Scalar(int32)                   side of the square frames

tfds's Image and Video features would decode frames themselves, which needs TensorFlow (FACTS.md);
bytes leave decoding to grace_jax's pipeline, which decodes only the frames it samples.
`Sequence(Tensor((), object))` works without TensorFlow too and stores the same bytes, but tfds then
decodes every frame separately in Python: reading a 24-frame clip took 0.32 ms against 0.28 ms
(medians of 7 passes over 8 clips on the shared 2-core machine).

The clips are listed and read exactly as `data_prep.build_dataset` lists and reads them (`job.gather`,
`job.load_all`): lists re-rooted onto `manual_dir`, bad clips skipped and kept in `bad_clips` for the
report, and the build failing when more than `max_bad_fraction` of the listed clips are bad.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import numpy as np
import tensorflow_datasets as tfds

from data_prep import job, report
from data_prep.clip_loader import LoadOptions
from data_prep.sources.clip_spec import BadClip, ClipSpec
from grace_jax.data import schema

VERSION = "1.0.0"
DEFAULT_FRAME_SIZE = 224


@dataclasses.dataclass
class ClipConfig(tfds.core.BuilderConfig):
    """One build of a dataset: its fold (DFEW, MAFW; None for FERV39k) and the stored frame side."""

    fold: int | None = None
    frame_size: int = DEFAULT_FRAME_SIZE


def config_name(fold: int | None, frame_size: int) -> str:
    """`fold_3` (or `default` without folds), with `_<side>px` appended for a frame side other than 224."""
    base = f"fold_{fold}" if fold is not None else "default"
    if frame_size == DEFAULT_FRAME_SIZE:
        return base
    return f"{frame_size}px" if fold is None else f"{base}_{frame_size}px"


def make_config(fold: int | None, frame_size: int = DEFAULT_FRAME_SIZE) -> ClipConfig:
    return ClipConfig(
        name=config_name(fold, frame_size),
        fold=fold,
        frame_size=frame_size,
        description=f"fold {fold}, {frame_size}px frames" if fold else f"{frame_size}px frames",
    )


def features(class_names: tuple[str, ...]) -> tfds.features.FeaturesDict:
    """The TF-free features of one clip (module docstring)."""
    return tfds.features.FeaturesDict(
        {
            "frames": tfds.features.Tensor(shape=(None,), dtype=np.object_),
            "label": tfds.features.ClassLabel(names=list(class_names)),
            "clip_id": tfds.features.Text(),
            "caption": tfds.features.Text(),
            "has_caption": tfds.features.Scalar(np.bool_),
            "frame_size": tfds.features.Scalar(np.int32),
        }
    )


class ClipBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Base of the three builders; subclasses set DATASET (a data_prep dataset name) and BUILDER_CONFIGS."""

    VERSION = tfds.core.Version(VERSION)
    RELEASE_NOTES = {str(VERSION): "Frames as JPEG bytes, read from the manually downloaded frame folders."}
    DATASET: str = ""
    HOMEPAGE: str = ""

    def __init__(
        self,
        *,
        captions: str | None = None,
        workers: int = 1,
        max_bad_fraction: float = 0.05,
        jpeg_quality: int = 95,
        **kwargs,
    ):
        """`captions`: a captions file (data_prep's `--captions` formats); the others as in build_dataset."""
        self._captions = captions
        self._workers = workers
        self._max_bad_fraction = max_bad_fraction
        self._jpeg_quality = jpeg_quality
        self._skipped: list[BadClip] = []
        self._notes: list[BadClip] = []
        self._total = 0
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=features(schema.CLASS_NAMES[self.DATASET]),
            homepage=self.HOMEPAGE,
            metadata=tfds.core.MetadataDict(frame_size=self.builder_config.frame_size, dataset=self.DATASET),
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict:
        clips, bad = job.gather(
            job.BuildConfig(
                dataset=self.DATASET,
                out="",
                root=str(dl_manager.manual_dir),
                fold=self.builder_config.fold,
                captions=self._captions,
                max_bad_fraction=self._max_bad_fraction,
            )
        )
        self._skipped, self._notes = list(bad), []
        self._total = len(clips) + len(bad)
        if not clips:
            raise job.BuildError(
                f"the lists under {dl_manager.manual_dir} name no usable clip; first problems:\n{report.summarize(bad)}"
            )
        self._check_budget()
        splits = dict.fromkeys(c.split for c in clips)
        # Generators run one split after the other while tfds writes; a clip is read when its turn
        # comes, so a dataset never has to fit in memory.
        return {s: self._generate_examples([c for c in clips if c.split == s]) for s in splits}

    @property
    def bad_clips(self) -> list[BadClip]:
        """The report's lines so far: skipped clips, then kept clips whose listed frame count was wrong."""
        return self._skipped + self._notes

    def _check_budget(self) -> None:
        if len(self._skipped) > self._max_bad_fraction * self._total:
            raise job.BuildError(
                f"{len(self._skipped)} of {self._total} listed clips are bad "
                f"({len(self._skipped) / self._total:.1%}), above max_bad_fraction={self._max_bad_fraction}; "
                f"nothing was written. First problems:\n{report.summarize(self._skipped)}"
            )

    def _generate_examples(self, clips: list[ClipSpec]) -> Iterator[tuple[str, dict]]:
        options = LoadOptions(self.builder_config.frame_size, self._jpeg_quality)
        kept = 0
        for spec, record, problem, note in job.load_all(clips, options, self._workers):
            if problem is not None:
                self._skipped.append(problem)
                self._check_budget()
                continue
            if note is not None:
                self._notes.append(note)
            kept += 1
            clip = schema.deserialize(record)
            yield (
                spec.clip_id,
                {
                    "frames": list(clip.frames),
                    "label": clip.label,
                    "clip_id": clip.clip_id,
                    "caption": clip.caption or "",
                    "has_caption": clip.caption is not None,
                    "frame_size": clip.frame_size,
                },
            )
        if not kept:
            raise job.BuildError(
                f"split {clips[0].split!r} has no readable clip; first problems:\n{report.summarize(self._skipped)}"
            )
