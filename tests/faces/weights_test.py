"""The shipped weights file: complete, exact, and clear errors for a missing or foreign one."""

import numpy as np
import pytest

from grace_jax.faces import weights


def test_shipped_file_is_complete_and_exact():
    raw = np.load(weights.DEFAULT_WEIGHTS)
    meta = weights.metadata()
    assert meta["source_sha256"] == "99bf9494d84f50acc6617d89873f71bf6635a841ea699c17cb3377f9507cfec3"
    params = weights.load_params()  # raises unless the network reads every tensor, shapes fitting
    assert len(params) == len(raw.files) - 1 == 178
    # float16 -> float32 is exact, and the layout change only moves values.
    k = raw["conv2d_5/Kernel"]  # [O,1,1,I] -> [I,O]
    np.testing.assert_array_equal(np.asarray(params["conv2d_5/Kernel"]), k[:, 0, 0, :].T.astype(np.float32))
    dw = raw["depthwise_conv2d_3/Kernel"]  # [1,3,3,C] -> [3,3,1,C]
    np.testing.assert_array_equal(np.asarray(params["depthwise_conv2d_3/Kernel"])[:, :, 0], dw[0])
    stem = raw["conv2d/Kernel"]  # [O,3,3,I] -> HWIO
    np.testing.assert_array_equal(np.asarray(params["conv2d/Kernel"])[1, 2, :, 7], stem[7, 1, 2, :])


def test_missing_file_is_named(tmp_path):
    path = str(tmp_path / "nope.npz")
    with pytest.raises(FileNotFoundError, match="nope.npz"):
        weights.load_params(path)


def test_foreign_files_are_refused(tmp_path):
    raw = dict(np.load(weights.DEFAULT_WEIGHTS))
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="bad.npz"):
        weights.load_params(str(bad))

    missing = dict(raw)
    del missing["conv2d_17/Bias"]
    np.savez(tmp_path / "missing.npz", **missing)
    with pytest.raises(ValueError, match="conv2d_17/Bias"):
        weights.load_params(str(tmp_path / "missing.npz"))

    extra = dict(raw, **{"conv2d_99/Kernel": np.zeros((1, 1, 1, 1), np.float16)})
    np.savez(tmp_path / "extra.npz", **extra)
    with pytest.raises(ValueError, match="conv2d_99/Kernel"):
        weights.load_params(str(tmp_path / "extra.npz"))

    wrong = dict(raw, **{"conv2d_5/Kernel": np.zeros((12, 1, 1, 31), np.float16)})
    np.savez(tmp_path / "wrong.npz", **wrong)
    with pytest.raises(ValueError, match="does not fit"):
        weights.load_params(str(tmp_path / "wrong.npz"))
