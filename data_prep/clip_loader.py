"""Turns one ClipSpec into serialized record bytes, or into a BadClip; runs in worker processes."""

from __future__ import annotations

import dataclasses

import numpy as np

from data_prep import synth
from data_prep.sources.clip_spec import BadClip, ClipSpec
from grace_jax.data import schema
from grace_jax.data.errors import ClipError
from grace_jax.data.frames import read_frame_folder
from grace_jax.data.video import read_video

# Reason prefix of report lines for kept clips whose listed frame count is wrong.
FRAME_COUNT_MISMATCH = "frame count mismatch"


@dataclasses.dataclass(frozen=True)
class LoadOptions:
    """Everything a worker needs besides the clip itself (picklable)."""

    frame_size: int = 224
    jpeg_quality: int = 95
    synth_seed: int = 0
    synth_min_frames: int = 12
    synth_max_frames: int = 24
    face_crop: str = "none"  # "auto": crop videos and frame folders to the face (grace_jax.faces)
    min_face_fraction: float = 0.25
    synth_variant: str = "standard"  # synth.VARIANTS
    # SynthFER splits whose records also carry the expression-only / distractors-only frames as PNG.
    synth_ground_truth_splits: tuple[str, ...] = ()


_detector = None  # one face detector per worker process, built on its first clip


def _face_crops(spec: ClipSpec, options: LoadOptions) -> np.ndarray:
    """All frames of a video or frame folder, cropped to the clip's face (or centre squares when the
    face already fills them); ClipError for a clip without a face."""
    from grace_jax import faces

    global _detector
    if _detector is None:
        _detector = faces.FaceDetector()
    read = read_frame_folder if spec.kind == "frames" else read_video
    whole = read(spec.path, faces.WHOLE_FRAME_SIDE, whole_frame=True)
    found = faces.crop_clip(
        whole, _detector, size=options.frame_size, face_crop="auto", min_face_fraction=options.min_face_fraction
    )
    if found.no_face:
        raise ClipError(f"{spec.path}: {found.reason}")
    return faces.frames_for_model(found, options.frame_size)


def synth_index(clip_id: str) -> int:
    """Index of a SynthFER clip from its id `synth/<split>/<index>`."""
    return int(clip_id.rsplit("/", 1)[1])


def _frames_of(spec: ClipSpec, options: LoadOptions):
    if options.face_crop == "auto" and spec.kind in ("frames", "video"):
        return _face_crops(spec, options)
    if spec.kind == "frames":
        return read_frame_folder(spec.path, options.frame_size)
    if spec.kind == "video":
        return read_video(spec.path, options.frame_size)
    if spec.kind == "synth":
        return synth.sample_clip(_synth_seed(spec, options), spec.label, synth_config(options))
    raise ValueError(f"unknown clip kind {spec.kind!r} for {spec.path}")


def synth_config(options: LoadOptions) -> synth.SynthConfig:
    """The SynthFER generator settings of a build."""
    return synth.SynthConfig(
        frame_size=options.frame_size,
        min_frames=options.synth_min_frames,
        max_frames=options.synth_max_frames,
        variant=options.synth_variant,
    )


def _synth_seed(spec: ClipSpec, options: LoadOptions) -> np.random.SeedSequence:
    return synth.clip_seed(options.synth_seed, spec.split, synth_index(spec.clip_id))


def _ground_truth(spec: ClipSpec, options: LoadOptions) -> dict:
    """ClipRecord's `expression_frames`/`distractor_frames` (PNG, lossless) for SynthFER clips of the
    ground-truth splits; {} for every other clip."""
    if spec.kind != "synth" or spec.split not in options.synth_ground_truth_splits:
        return {}
    expression, distractors = synth.sample_ground_truth(_synth_seed(spec, options), spec.label, synth_config(options))
    return {
        "expression_frames": tuple(schema.encode_png(f) for f in expression),
        "distractor_frames": tuple(schema.encode_png(f) for f in distractors),
    }


def frame_count_note(spec: ClipSpec, num_frames: int) -> BadClip | None:
    """A report line for a kept clip whose annotation line gives a frame count other than the frames
    found on disk (DFER-CLIP's own DFEW lists carried such counts until its PR #1); None if they agree
    or the list gives no count. The clip keeps all the frames on disk: the real count is used."""
    if spec.listed_frames is None or spec.listed_frames == num_frames:
        return None
    return BadClip(
        spec.split,
        spec.source,
        spec.path,
        f"{FRAME_COUNT_MISMATCH} (clip kept): the list says {spec.listed_frames} frames, "
        f"{num_frames} found; {num_frames} used",
    )


def load_clip(spec: ClipSpec, options: LoadOptions) -> tuple[ClipSpec, bytes | None, BadClip | None, BadClip | None]:
    """Reads, resizes and JPEG-encodes one clip (plus, for SynthFER ground-truth splits, its PNG
    expression-only and distractors-only frames).

    Returns:
      (spec, record bytes, None, note) for a good clip, where `note` is `frame_count_note`'s line or
      None; (spec, None, BadClip, None) for one that cannot be used. Unexpected exceptions are reported
      as bad clips too, so one odd file cannot kill a long job.
    """
    try:
        frames = _frames_of(spec, options)
        ground_truth = _ground_truth(spec, options)
    except ClipError as e:
        return spec, None, BadClip(spec.split, spec.source, spec.path, str(e)), None
    except Exception as e:  # noqa: BLE001 - any decoder failure is a property of this clip
        bad = BadClip(spec.split, spec.source, spec.path, f"{type(e).__name__}: {e}")
        return spec, None, bad, None
    record = schema.ClipRecord(
        label=spec.label,
        clip_id=spec.clip_id,
        frames=tuple(schema.encode_jpeg(f, options.jpeg_quality) for f in frames),
        frame_size=options.frame_size,
        caption=spec.caption,
        **ground_truth,
    )
    return spec, schema.serialize(record), None, frame_count_note(spec, len(frames))
