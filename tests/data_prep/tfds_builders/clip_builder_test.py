"""What the three builders share (clip_builder.py): the bad-clip budget stops a build before any record
file is left, and config names."""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from tfds_fixtures import assert_no_tensorflow, block_tensorflow  # noqa: E402

block_tensorflow()  # checked before tensorflow_datasets is imported

from data_prep import job  # noqa: E402
from data_prep.tfds_builders import prepare  # noqa: E402


def test_too_many_bad_clips_fail_clearly_and_leave_no_records(dfew_tree, tmp_path):
    with pytest.raises(
        job.BuildError, match=r"3 of 10 listed clips are bad \(30.0%\), above max_bad_fraction=0.2"
    ) as e:
        prepare.build(
            "dfew", str(dfew_tree), str(tmp_path / "tfds"), fold=1, frame_size=32, max_bad_fraction=0.2, progress=False
        )
    assert "set_1_train.txt:4" in str(e.value)
    written = [f for _, _, files in os.walk(tmp_path / "tfds") for f in files]
    assert not [f for f in written if "array_record" in f or f == "dataset_info.json"], written


def test_config_names():
    from data_prep.tfds_builders.clip_builder import config_name

    assert [config_name(3, 224), config_name(3, 112), config_name(None, 224), config_name(None, 64)] == [
        "fold_3",
        "fold_3_112px",
        "default",
        "64px",
    ]
    assert_no_tensorflow()
