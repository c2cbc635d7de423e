"""The on-disk record format shared by the shard writer and the input pipeline.

A record is one clip. Its bytes are:

    b"GRC1" | uint32 little-endian header length | header (UTF-8 JSON) | JPEG 0 | JPEG 1 | ...
        [ | expression PNG 0 | ... | expression PNG T-1 | distractor PNG 0 | ... | distractor PNG T-1 ]

The header holds the label, the clip id, the frame count, the optional caption, the frame side and the
byte length of every JPEG, so a reader can decode only the frames it samples (16 of a 96-frame DFEW clip)
without touching the others. JSON keeps the format readable from any language without a schema compiler.

Version 2 adds optional per-frame ground truth of where the expression is (SynthFER test clips, whose
generator knows what moved): the clip rendered with the expression only and with the distractors only,
one lossless PNG per frame each (JPEG's error would be mistaken for motion), their byte lengths in the
header as `expression_lengths` and `distractor_lengths`. A record without them is written as version 1,
byte for byte what version-1 writers wrote; readers accept both versions.

Shard files are named `<split>-00000-of-00004.array_record` and are written with the ArrayRecord option
`group_size:1` so that every record can be read at random with one seek.
"""

from __future__ import annotations

import dataclasses
import io
import json
import re
import struct

import numpy as np
from PIL import Image

MAGIC = b"GRC1"
FORMAT_VERSION = 2  # the newest version this module writes; it reads READABLE_VERSIONS
READABLE_VERSIONS = (1, 2)
# Kinds of ground-truth frames a record may carry, in their order in the bytes.
GROUND_TRUTH_KINDS = ("expression", "distractor")
WRITER_OPTIONS = "group_size:1"
MANIFEST_NAME = "manifest.json"
BAD_CLIP_REPORT_NAME = "bad_clips.tsv"
CLIP_TABLE_COLUMNS = ("index", "clip_id", "label", "num_frames", "has_caption")


def clip_table_name(split: str) -> str:
    """Per-split TSV mapping record index (the pipeline's `clip_index`) to clip id, label and length."""
    return f"{split}.clips.tsv"


# Class order of DFEW and FERV39k (DESIGN section 3); MAFW appends four classes.
BASIC_CLASSES = ("happiness", "sadness", "neutral", "anger", "surprise", "disgust", "fear")
MAFW_CLASSES = BASIC_CLASSES + ("contempt", "anxiety", "helplessness", "disappointment")
CLASS_NAMES = {
    "dfew": BASIC_CLASSES,
    "ferv39k": BASIC_CLASSES,
    "mafw": MAFW_CLASSES,
    "synth": BASIC_CLASSES,
    "folder": BASIC_CLASSES,
}

_SHARD_RE = re.compile(r"^(?P<split>.+)-(?P<index>\d{5})-of-(?P<count>\d{5})\.array_record$")


@dataclasses.dataclass(frozen=True)
class ClipRecord:
    """One clip as stored: `frames` are JPEG byte strings of square frames of side `frame_size`.

    `expression_frames` / `distractor_frames` (both or neither; None when absent): PNG byte strings, one
    per frame of `frames`, of the clip rendered with the expression only / the distractors only.
    """

    label: int
    clip_id: str
    frames: tuple[bytes, ...]
    frame_size: int
    caption: str | None = None
    expression_frames: tuple[bytes, ...] | None = None
    distractor_frames: tuple[bytes, ...] | None = None

    def __post_init__(self):
        present = (self.expression_frames is not None, self.distractor_frames is not None)
        if present[0] != present[1]:
            raise ValueError(f"clip {self.clip_id!r}: expression_frames and distractor_frames come together")
        for kind, frames in zip(GROUND_TRUTH_KINDS, (self.expression_frames, self.distractor_frames)):
            if frames is not None and len(frames) != len(self.frames):
                raise ValueError(f"clip {self.clip_id!r}: {len(frames)} {kind} frames for {len(self.frames)} frames")

    @property
    def num_frames(self) -> int:
        return len(self.frames)

    @property
    def has_ground_truth(self) -> bool:
        return self.expression_frames is not None


def shard_name(split: str, index: int, count: int) -> str:
    """File name of shard `index` of `count` for `split`, e.g. `train-00003-of-00016.array_record`."""
    return f"{split}-{index:05d}-of-{count:05d}.array_record"


def parse_shard_name(name: str) -> tuple[str, int, int] | None:
    """Inverse of `shard_name`: (split, index, count), or None when `name` is not a shard file."""
    match = _SHARD_RE.match(name)
    if match is None:
        return None
    return match["split"], int(match["index"]), int(match["count"])


def encode_jpeg(frame: np.ndarray, quality: int) -> bytes:
    """JPEG bytes of one uint8 RGB frame [H, W, 3]."""
    buffer = io.BytesIO()
    Image.fromarray(frame, mode="RGB").save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def decode_jpeg(data: bytes) -> np.ndarray:
    """uint8 RGB array [H, W, 3] of one JPEG byte string."""
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))


def encode_png(frame: np.ndarray) -> bytes:
    """Lossless PNG bytes of one uint8 RGB frame [H, W, 3]."""
    buffer = io.BytesIO()
    Image.fromarray(frame, mode="RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def decode_png(data: bytes) -> np.ndarray:
    """uint8 RGB array [H, W, 3] of one PNG byte string."""
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))


def serialize(record: ClipRecord) -> bytes:
    """Bytes of one record in the format described in the module docstring."""
    header = {
        # Version 1 when there is no ground truth: such records stay readable by version-1 readers.
        "v": FORMAT_VERSION if record.has_ground_truth else 1,
        "label": int(record.label),
        "clip_id": record.clip_id,
        "num_frames": record.num_frames,
        "frame_size": int(record.frame_size),
        "caption": record.caption,
        "lengths": [len(f) for f in record.frames],
    }
    extra: list[bytes] = []
    if record.has_ground_truth:
        for kind, frames in zip(GROUND_TRUTH_KINDS, (record.expression_frames, record.distractor_frames)):
            header[f"{kind}_lengths"] = [len(f) for f in frames]
            extra += frames
    header_bytes = json.dumps(header, ensure_ascii=False).encode("utf-8")
    return b"".join([MAGIC, struct.pack("<I", len(header_bytes)), header_bytes, *record.frames, *extra])


@dataclasses.dataclass(frozen=True)
class RecordView:
    """A parsed record header plus the raw bytes; frames are sliced out lazily."""

    header: dict
    data: bytes
    offsets: tuple[int, ...]  # start of frame i in `data`; offsets[-1] is the end of the last frame
    # {kind: offsets like `offsets`} of the ground-truth PNGs (GROUND_TRUTH_KINDS); empty without them.
    ground_truth_offsets: dict[str, tuple[int, ...]] = dataclasses.field(default_factory=dict)

    @property
    def label(self) -> int:
        return self.header["label"]

    @property
    def clip_id(self) -> str:
        return self.header["clip_id"]

    @property
    def num_frames(self) -> int:
        return self.header["num_frames"]

    @property
    def caption(self) -> str | None:
        return self.header.get("caption")

    @property
    def has_ground_truth(self) -> bool:
        return bool(self.ground_truth_offsets)

    def frame_bytes(self, index: int) -> bytes:
        """JPEG bytes of frame `index`."""
        return self.data[self.offsets[index] : self.offsets[index + 1]]

    def decode_frames(self, indices) -> np.ndarray:
        """uint8 frames [len(indices), S, S, 3]; each distinct frame is decoded once."""
        cache: dict[int, np.ndarray] = {}
        out = []
        for i in indices:
            i = int(i)
            if i not in cache:
                cache[i] = decode_jpeg(self.frame_bytes(i))
            out.append(cache[i])
        return np.stack(out)

    def ground_truth_bytes(self, kind: str, index: int) -> bytes:
        """PNG bytes of frame `index` of the `kind` ground truth (one of GROUND_TRUTH_KINDS)."""
        if kind not in GROUND_TRUTH_KINDS:
            raise ValueError(f"ground-truth kind {kind!r}: expected one of {', '.join(GROUND_TRUTH_KINDS)}")
        if not self.has_ground_truth:
            raise ValueError(f"record of clip {self.clip_id!r} has no ground-truth frames")
        offsets = self.ground_truth_offsets[kind]
        return self.data[offsets[index] : offsets[index + 1]]

    def decode_ground_truth(self, kind: str, indices) -> np.ndarray:
        """uint8 ground-truth frames [len(indices), S, S, 3] of `kind` ("expression": the clip with the
        expression only, "distractor": with the distractors only); each distinct frame is decoded once."""
        cache: dict[int, np.ndarray] = {}
        out = []
        for i in indices:
            i = int(i)
            if i not in cache:
                cache[i] = decode_png(self.ground_truth_bytes(kind, i))
            out.append(cache[i])
        return np.stack(out)


def parse(data: bytes) -> RecordView:
    """Parses the header of serialized record bytes; raises ValueError on foreign or truncated bytes."""
    if data[:4] != MAGIC:
        raise ValueError(f"not a grace_jax clip record (magic {data[:4]!r}, expected {MAGIC!r})")
    (header_len,) = struct.unpack("<I", data[4:8])
    header = json.loads(data[8 : 8 + header_len].decode("utf-8"))
    if header.get("v") not in READABLE_VERSIONS:
        raise ValueError(
            f"record format version {header.get('v')} is not one of {READABLE_VERSIONS} (written by a newer grace_jax?)"
        )
    offsets = [8 + header_len]
    for length in header["lengths"]:
        offsets.append(offsets[-1] + length)
    end = offsets[-1]
    ground_truth = {}
    if f"{GROUND_TRUTH_KINDS[0]}_lengths" in header:
        for kind in GROUND_TRUTH_KINDS:
            lengths = header[f"{kind}_lengths"]
            if len(lengths) != len(header["lengths"]):
                raise ValueError(
                    f"record of clip {header.get('clip_id')!r} has {len(lengths)} {kind} frames "
                    f"for {len(header['lengths'])} frames"
                )
            kind_offsets = [end]
            for length in lengths:
                kind_offsets.append(kind_offsets[-1] + length)
            ground_truth[kind] = tuple(kind_offsets)
            end = kind_offsets[-1]
    if end != len(data):
        raise ValueError(f"record of clip {header.get('clip_id')!r} is truncated or padded")
    return RecordView(header=header, data=data, offsets=tuple(offsets), ground_truth_offsets=ground_truth)


def deserialize(data: bytes) -> ClipRecord:
    """Full inverse of `serialize` (all frames as JPEG bytes, ground truth as PNG bytes)."""
    view = parse(data)
    frames = tuple(view.frame_bytes(i) for i in range(view.num_frames))
    ground_truth = {
        kind: tuple(view.ground_truth_bytes(kind, i) for i in range(view.num_frames)) if view.has_ground_truth else None
        for kind in GROUND_TRUTH_KINDS
    }
    return ClipRecord(
        label=view.label,
        clip_id=view.clip_id,
        frames=frames,
        frame_size=view.header["frame_size"],
        caption=view.caption,
        expression_frames=ground_truth["expression"],
        distractor_frames=ground_truth["distractor"],
    )
