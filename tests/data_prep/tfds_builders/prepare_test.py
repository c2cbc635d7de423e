"""prepare.build: bad arguments refused with the flag named, an existing build refused unless
overwrite, which rebuilds it."""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from tfds_fixtures import block_tensorflow  # noqa: E402

block_tensorflow()  # checked before tensorflow_datasets is imported

from data_prep.tfds_builders import prepare  # noqa: E402
from data_prep.writer import OutputExistsError  # noqa: E402
from grace_jax.infra import errors  # noqa: E402


def test_bad_arguments_and_an_existing_build_are_refused(dfew_tree, tmp_path):
    with pytest.raises(errors.UsageError, match="needs --fold=1..5"):
        prepare.build("dfew", str(dfew_tree), str(tmp_path / "t"), frame_size=32)
    with pytest.raises(errors.UsageError, match="has no folds"):
        prepare.build("ferv39k", str(dfew_tree), str(tmp_path / "t"), fold=1)
    with pytest.raises(errors.NotFoundError, match="--manual_dir=.*nowhere is not a folder"):
        prepare.build("dfew", str(tmp_path / "nowhere"), str(tmp_path / "t"), fold=1)
    kw = dict(fold=2, frame_size=32, progress=False)
    first = prepare.build("dfew", str(dfew_tree), str(tmp_path / "t"), **kw)
    with pytest.raises(OutputExistsError, match="already holds dfew/fold_2_32px.*--overwrite"):
        prepare.build("dfew", str(dfew_tree), str(tmp_path / "t"), **kw)
    again = prepare.build("dfew", str(dfew_tree), str(tmp_path / "t"), overwrite=True, **kw)
    assert again.num_clips == first.num_clips == {"train": 1, "test": 1}
