"""grace_jax.interop.torch_pickle: a .pth is read without running code from it. DFER-CLIP's main.py
checkpoint (with its recorder, an object of a class in __main__) is read, its recorder left inert; a
pickle that would construct anything else is refused before anything in it runs."""

from __future__ import annotations

import os
import pickle
import sys

import numpy as np
import pytest
import torch

from grace_jax.interop import torch_pickle


class RecorderMeter:
    """Stands for main.py's RecorderMeter: training curves in numpy arrays, pickled by reference to a
    class in __main__."""

    def __init__(self, total_epoch):
        self.total_epoch = total_epoch
        self.epoch_losses = np.zeros((total_epoch, 2), np.float32)


RecorderMeter.__module__ = "__main__"


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _state_dict() -> dict:
    return {"module.a.weight": torch.arange(6.0).reshape(2, 3), "module.b": torch.tensor([1.5], dtype=torch.float16)}


def _save_with_recorder(obj: dict, path: str) -> None:
    main = sys.modules["__main__"]
    had = hasattr(main, "RecorderMeter")
    main.RecorderMeter = RecorderMeter
    try:
        torch.save({**obj, "recorder": RecorderMeter(3)}, path)
    finally:
        if not had:
            del main.RecorderMeter


def test_main_py_s_checkpoint_is_read_as_float32_arrays_with_its_metadata(tmp_path):
    path = str(tmp_path / "DFEW-set1-model_best.pth")
    sd = _state_dict()
    _save_with_recorder({"epoch": 7, "state_dict": sd, "best_acc": torch.tensor([61.25])[0],
                         "optimizer": {"state": {0: {"momentum_buffer": torch.ones(2)}}}}, path)  # fmt: skip
    arrays, meta = torch_pickle.read_torch_checkpoint(path)
    assert set(arrays) == set(sd) and all(a.dtype == np.float32 for a in arrays.values())
    np.testing.assert_array_equal(arrays["module.a.weight"], np.arange(6.0).reshape(2, 3))
    np.testing.assert_array_equal(arrays["module.b"], [1.5])
    assert meta == {"epoch": 7, "best_acc": pytest.approx(61.25)}


def test_a_bare_state_dict_is_read_and_other_contents_are_named(tmp_path):
    bare = str(tmp_path / "bare.pth")
    torch.save(_state_dict(), bare)
    arrays, meta = torch_pickle.read_torch_checkpoint(bare)
    assert sorted(arrays) == ["module.a.weight", "module.b"] and meta == {}
    other = str(tmp_path / "other.pth")
    torch.save({"weights": [1, 2]}, other)
    with pytest.raises(torch_pickle.ConversionError, match="no 'state_dict' in it"):
        torch_pickle.read_torch_checkpoint(other)
    not_tensor = str(tmp_path / "not_tensor.pth")
    torch.save({"state_dict": {"module.a": 3}}, not_tensor)
    with pytest.raises(torch_pickle.ConversionError, match="entry 'module.a' is not a tensor"):
        torch_pickle.read_torch_checkpoint(not_tensor)
    with pytest.raises(torch_pickle.ConversionError, match="nope.pth: file not found"):
        torch_pickle.read_torch_checkpoint(str(tmp_path / "nope.pth"))


@pytest.mark.parametrize("container", ["torch.save", "pickle"])
def test_a_pickle_that_would_run_code_is_refused_unrun(tmp_path, container):
    marker = tmp_path / "ran"
    evil = str(tmp_path / "evil.pth")
    if container == "torch.save":  # the zip format main.py writes, one extra entry
        torch.save({"state_dict": _state_dict(), "epoch": _Payload(marker)}, evil)
    else:  # a bare pickle (protocol 2, as torch's legacy format): torch.load's legacy path
        with open(evil, "wb") as f:
            pickle.dump({"state_dict": {}, "epoch": _Payload(marker)}, f, protocol=2)
    with pytest.raises(torch_pickle.UnsafeCheckpointError, match="refused") as e:
        torch_pickle.read_torch_checkpoint(evil)
    assert "system" in str(e.value)
    assert not marker.exists()


def test_without_torch_the_message_says_how_to_install_it(tmp_path, monkeypatch):
    path = str(tmp_path / "model.pth")
    torch.save(_state_dict(), path)
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` raises ImportError
    with pytest.raises(torch_pickle.ConversionError, match=r"pip install -e '\.\[torch\]'"):
        torch_pickle.read_torch_checkpoint(path)
