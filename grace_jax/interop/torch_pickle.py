"""Reads a PyTorch checkpoint (.pth) without running code from it.

Checkpoints come from file-sharing links, so reading one never runs code from it: the pickle is first
scanned for the globals it names, and a file that names anything beyond tensors, containers and the
training-curve recorder DFER-CLIP's main.py saves beside them (e.g. `os.system`) is refused unread; the
file is then read with `torch.load(weights_only=True)`, the recorder and its numpy arrays replaced by
inert placeholders. PyTorch is needed for this reader only: `pip install -e '.[torch]'`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

import numpy as np

from grace_jax.infra.errors import UserError

__all__ = ["ConversionError", "UnsafeCheckpointError", "read_torch_checkpoint"]

# Globals DFER-CLIP's main.py names in its checkpoints besides tensors: its RecorderMeter (training
# curves) and the numpy arrays inside it. They are rebuilt as inert placeholders, never as the named
# objects.
_INERT_GLOBALS = (
    "__main__.RecorderMeter",
    "numpy.core.multiarray._reconstruct",
    "numpy._core.multiarray._reconstruct",
    "numpy.core.multiarray.scalar",
    "numpy._core.multiarray.scalar",
    "numpy.ndarray",
    "numpy.dtype",
)
_INERT_PREFIXES = ("numpy.dtypes.",)  # numpy 2's dtype classes (Float32DType, ...)


class ConversionError(UserError, ValueError):
    """A checkpoint that cannot be read or converted; the message names the file and the key."""


class UnsafeCheckpointError(ConversionError):
    """A checkpoint whose pickle would construct arbitrary objects; it was not loaded."""


class _Inert:
    """Stands in for the recorder and numpy objects: built from anything, keeps nothing, runs nothing."""

    def __new__(cls, *args, **kwargs):
        return object.__new__(cls)

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        pass


def _is_inert(name: str) -> bool:
    return name in _INERT_GLOBALS or name.startswith(_INERT_PREFIXES)


def _import_torch(path: str):
    try:
        import torch
    except ImportError as e:
        raise ConversionError(
            f"{path}: reading a PyTorch checkpoint needs PyTorch, which grace_jax uses for this "
            "conversion only. Install it with: pip install -e '.[torch]'  (a CPU build is enough: "
            "pip install torch --index-url https://download.pytorch.org/whl/cpu)"
        ) from e
    return torch


# torch.save writes a zip archive (PyTorch >= 1.6) or, in the legacy format, a pickle (protocol opcode).
_CHECKPOINT_STARTS = (b"PK\x03\x04", b"\x80")


def _check_looks_like_checkpoint(path: str) -> None:
    """ConversionError "not a checkpoint" for a file that is neither of torch.save's formats (an HTML
    page saved by a download link, a text file, an empty file), before torch's unpickler calls it unsafe."""
    with open(path, "rb") as f:
        head = f.read(512)
    if head.startswith(_CHECKPOINT_STARTS):
        return
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if not head:
        what = "it is empty (0 bytes): an interrupted download?"
    elif text.startswith((b"<!doctype html", b"<html", b"<head", b"<!--", b"<?xml")) or b"<html" in text:
        what = (
            "it is an HTML page (a download that saved the web page, e.g. a sign-in or virus-scan "
            "notice, instead of the file)"
        )
    elif head.startswith(b"\x1f\x8b"):
        what = "it is gzip-compressed: decompress it first"
    else:
        what = f"it starts with {head[:16]!r}, neither a zip archive nor a pickle"
    raise ConversionError(
        f"{path}: not a PyTorch checkpoint: {what}. Download the .pth again (its direct link) and check "
        "its size; nothing in it was loaded."
    )


def read_torch_checkpoint(path: str) -> tuple[dict[str, np.ndarray], dict]:
    """Reads a .pth without running code from it.

    Returns:
      (state dict as float32 numpy arrays keyed as saved, {"epoch", "best_acc"} where present).

    Raises:
      UnsafeCheckpointError: the pickle names a global beyond tensors and main.py's recorder.
      ConversionError: missing torch, an unreadable file, or no state dict in it.
    """
    if not os.path.isfile(path):
        raise ConversionError(f"{path}: file not found.")
    _check_looks_like_checkpoint(path)
    torch = _import_torch(path)
    import pickle

    try:
        # Static: lists the GLOBAL opcodes of the pickle without executing any of them.
        named = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # noqa: BLE001 -- not the zip format: torch.load's own allowlist decides.
        named = []
    refused = [g for g in named if not _is_inert(g)]
    if refused:
        raise UnsafeCheckpointError(
            f"{path}: refused: its pickle would construct {', '.join(sorted(refused))}, which a "
            "weights file never needs. It was not loaded, so nothing in it ran."
        )
    inert = [(_Inert, name) for name in {*_INERT_GLOBALS, *(g for g in named if _is_inert(g))}]
    try:
        with torch.serialization.safe_globals(inert):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        detail = re.search(r"WeightsUnpickler error:\s*(.*?)\s*(?:Check the documentation|$)", str(e), re.S)
        reason = " ".join((detail.group(1) if detail else str(e)).split()) or type(e).__name__
        raise UnsafeCheckpointError(
            f"{path}: refused by torch.load(weights_only=True), nothing in it ran: {reason}"
        ) from e
    except Exception as e:  # noqa: BLE001 -- torch raises many types for a bad file.
        raise ConversionError(f"{path}: not a readable PyTorch checkpoint ({e}).") from e

    meta: dict = {}
    if isinstance(obj, Mapping) and "state_dict" in obj:
        state = obj["state_dict"]
        for key in ("epoch", "best_acc"):
            value = obj.get(key)
            if isinstance(value, torch.Tensor) and value.numel() == 1:
                value = value.item()
            if isinstance(value, (int, float)):
                meta[key] = value
    elif isinstance(obj, Mapping) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        state = obj  # a bare model.state_dict()
    else:
        raise ConversionError(
            f"{path}: no 'state_dict' in it (DFER-CLIP's main.py saves {{'epoch', 'state_dict', "
            "'best_acc', 'optimizer', 'recorder'}})."
        )
    arrays = {}
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise ConversionError(f"{path}: state_dict entry {key!r} is not a tensor.")
        arrays[str(key)] = value.detach().to(torch.float32).numpy()
    return arrays, meta
