"""Loads the BlazeFace full-range weights that grace_jax ships (made by tools/convert_blazeface.py).

The .npz holds every weight of MediaPipe's `face_detection_full_range.tflite` under its tensor name,
float16 as stored in the .tflite (the graph dequantizes them to float32 before use, so float32 here
is exact), in the .tflite's layout: conv kernels [O,kh,kw,I], depthwise kernels [1,3,3,C]. Its
licence notice is NOTICE beside it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from grace_jax.faces import blazeface

DEFAULT_WEIGHTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "blazeface_full_range.npz")


def to_jax_layout(name: str, value: np.ndarray) -> np.ndarray:
    """One .tflite weight -> float32 in the layout `blazeface.forward` reads."""
    value = np.asarray(value, np.float32)
    if not name.endswith("/Kernel"):
        return value
    if "depthwise" in name:  # [1,3,3,C] -> [3,3,1,C] (HWIO with one input channel per group)
        return value.transpose(1, 2, 0, 3)
    if value.shape[1:3] == (1, 1):  # [O,1,1,I] -> [I,O]
        return value[:, 0, 0, :].T
    return value.transpose(1, 2, 3, 0)  # [O,kh,kw,I] -> HWIO


def _read(path: str) -> dict[str, np.ndarray]:
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"BlazeFace weights file {path} is missing: it ships inside the grace_jax package "
            f"(grace_jax/faces/blazeface_full_range.npz); reinstall grace_jax, or rebuild it with "
            f"tools/convert_blazeface.py"
        )
    try:
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    except Exception as e:  # a truncated or foreign file: say which one
        raise ValueError(f"BlazeFace weights file {path} is not a readable .npz: {e}") from e


def check_complete(params: Mapping[str, jax.Array], path: str = "<params>") -> None:
    """Raises ValueError unless `blazeface.forward` reads every entry of `params`, shapes fitting.

    Traces the network abstractly (no compute) over a dict that records the names it is asked for.
    """
    read: set[str] = set()
    missing: list[str] = []

    class _Recorder(dict):
        def __getitem__(self, key):
            read.add(key)
            if key not in self.keys():
                missing.append(key)
            return dict.__getitem__(self, key)

    spec = jax.ShapeDtypeStruct((1, blazeface.INPUT_SIZE, blazeface.INPUT_SIZE, 3), jnp.float32)
    try:
        jax.eval_shape(lambda x: blazeface.forward(_Recorder(params), x), spec)
    except Exception as e:  # a missing name (KeyError) or shapes that do not chain (einsum, asserts)
        if missing:
            raise ValueError(f"BlazeFace weights file {path} has no tensor {missing[0]!r}") from None
        raise ValueError(f"BlazeFace weights file {path} does not fit the network: {e!r}") from e
    unused = sorted(set(params) - read)
    if unused:
        raise ValueError(f"BlazeFace weights file {path} has tensors the network does not use: {unused}")


def load_params(path: str | None = None) -> dict[str, jax.Array]:
    """The network's parameters (float32, JAX layout) from `path` (default: the shipped file)."""
    path = path or DEFAULT_WEIGHTS
    raw = _read(path)
    raw.pop("__meta__", None)
    params = {k: jnp.asarray(to_jax_layout(k, v)) for k, v in raw.items()}
    check_complete(params, path)
    return params


def metadata(path: str | None = None) -> dict:
    """The provenance record the converter stored (source file, its sha256, layout)."""
    raw = _read(path or DEFAULT_WEIGHTS)
    return json.loads(str(raw["__meta__"])) if "__meta__" in raw else {}
