"""The record format: round trip, lazy frame access, and refusal of foreign or damaged bytes."""

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
