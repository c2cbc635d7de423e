"""A cut `model.safetensors` (an interrupted copy or download) is an ExportError naming the file, for
its metadata and its tensors alike; safetensors' own message names no file. (Through
`python -m grace_jax.predict --model`, on a real export: tests/run/damaged_run_test.py.)"""

from __future__ import annotations

import os

import numpy as np
import pytest
from safetensors.numpy import save_file

from grace_jax.interop import hf_export


@pytest.mark.parametrize("fraction", [0.55, 0.001, 0.0])
def test_a_cut_weights_file_is_named(tmp_path, fraction):
    path = tmp_path / hf_export.WEIGHTS
    save_file({"w": np.ones((64, 64), np.float32)}, str(path), metadata={"format": "grace_jax"})
    assert hf_export.weights_metadata(str(tmp_path)) == {"format": "grace_jax"}
    os.truncate(path, int(os.path.getsize(path) * fraction))
    for read in (hf_export.weights_metadata, lambda folder: hf_export.read_weights(folder, [])):
        with pytest.raises(hf_export.ExportError) as e:
            read(str(tmp_path))
        message = str(e.value)
        assert message.startswith(f"{path}: cannot be read, the file is damaged or cut short (")
        assert message.endswith(
            "export the run again (python -m grace_jax.export) or copy or download the folder again."
        )
        assert "\n" not in message
