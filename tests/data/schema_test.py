"""The record format: round trip, lazy frame access, ground-truth frames, old records, and refusal of
foreign or damaged bytes."""

import dataclasses
import json
import struct

import numpy as np
import pytest

from grace_jax.data import schema


def _record(caption="smiles slowly"):
    frames = tuple(schema.encode_jpeg(np.full((16, 16, 3), 30 * i, np.uint8), 95) for i in range(5))
    return schema.ClipRecord(label=3, clip_id="DFEW_Frame_Face/03271", frames=frames, frame_size=16, caption=caption)


@pytest.mark.parametrize("caption", ["smiles slowly", "sourit — lentement", None])
def test_round_trip(caption):
    record = _record(caption)
    assert schema.deserialize(schema.serialize(record)) == record


def test_decode_frames_reads_only_requested_frames_in_requested_order():
    view = schema.parse(schema.serialize(_record()))
    frames = view.decode_frames([4, 0, 0, 2])
    assert frames.shape == (4, 16, 16, 3)
    np.testing.assert_allclose(frames.mean(axis=(1, 2, 3)), [120, 0, 0, 60], atol=2)
    assert (view.label, view.num_frames, view.clip_id) == (3, 5, "DFEW_Frame_Face/03271")


def test_parse_rejects_foreign_and_truncated_bytes():
    data = schema.serialize(_record())
    with pytest.raises(ValueError, match="not a grace_jax clip record"):
        schema.parse(b"JUNK" + data[4:])
    with pytest.raises(ValueError, match="truncated"):
        schema.parse(data[:-10])


def test_shard_names_round_trip():
    name = schema.shard_name("train", 3, 16)
    assert name == "train-00003-of-00016.array_record"
    assert schema.parse_shard_name(name) == ("train", 3, 16)
    assert schema.parse_shard_name("train-3-of-16.array_record") is None


def _ground_truth_record():
    rng = np.random.default_rng(0)
    expression = rng.integers(0, 256, (4, 16, 16, 3), dtype=np.uint8)
    distractors = rng.integers(0, 256, (4, 16, 16, 3), dtype=np.uint8)
    record = schema.ClipRecord(
        label=1,
        clip_id="synth/test/000001",
        frame_size=16,
        frames=tuple(schema.encode_jpeg(f, 95) for f in expression),
        expression_frames=tuple(schema.encode_png(f) for f in expression),
        distractor_frames=tuple(schema.encode_png(f) for f in distractors),
    )
    return record, expression, distractors


def test_ground_truth_round_trips_losslessly_and_decodes_by_index():
    record, expression, distractors = _ground_truth_record()
    data = schema.serialize(record)
    assert schema.deserialize(data) == record
    view = schema.parse(data)
    assert view.has_ground_truth and view.header["v"] == schema.FORMAT_VERSION == 2
    assert view.header["expression_lengths"] == [len(f) for f in record.expression_frames]
    np.testing.assert_array_equal(view.decode_ground_truth("expression", [3, 0, 0]), expression[[3, 0, 0]])
    np.testing.assert_array_equal(view.decode_ground_truth("distractor", [1]), distractors[[1]])
    assert view.decode_frames([2]).shape == (1, 16, 16, 3)  # the JPEG frames are where they were
    with pytest.raises(ValueError, match="truncated"):
        schema.parse(data[:-3])
    with pytest.raises(ValueError, match="ground-truth kind 'mouth'"):
        view.decode_ground_truth("mouth", [0])


def test_records_without_ground_truth_keep_the_version_1_bytes():
    record = _record()
    # A record as version-1 writers made it, built by hand from the format description.
    header = {
        "v": 1,
        "label": 3,
        "clip_id": record.clip_id,
        "num_frames": 5,
        "frame_size": 16,
        "caption": record.caption,
        "lengths": [len(f) for f in record.frames],
    }
    header_bytes = json.dumps(header, ensure_ascii=False).encode("utf-8")
    old = b"".join([b"GRC1", struct.pack("<I", len(header_bytes)), header_bytes, *record.frames])
    assert schema.serialize(record) == old
    view = schema.parse(old)
    assert not view.has_ground_truth and schema.deserialize(old) == record
    assert record.expression_frames is None and record.distractor_frames is None
    with pytest.raises(ValueError, match="no ground-truth frames"):
        view.decode_ground_truth("expression", [0])


def test_ground_truth_must_match_the_frames_and_versions_are_checked():
    record, _, _ = _ground_truth_record()
    with pytest.raises(ValueError, match="come together"):
        dataclasses.replace(record, distractor_frames=None)
    with pytest.raises(ValueError, match="3 expression frames for 4 frames"):
        dataclasses.replace(record, expression_frames=record.expression_frames[:3])
    data = schema.serialize(record).replace(b'"v": 2', b'"v": 3', 1)
    with pytest.raises(ValueError, match="version 3 is not one of"):
        schema.parse(data)
