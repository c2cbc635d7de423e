"""grace_jax.run.runs: which kind of folder `load` takes a source for, and the errors that name the
flag the source came from. Loading itself is tested on a trained run (tests/evaluate_test.py,
tests/predict_test.py), an export (tests/interop/hf_export_test.py) and a converted DFER-CLIP
checkpoint (tests/interop/dferclip_test.py)."""

from __future__ import annotations

import pytest

from grace_jax.infra import errors
from grace_jax.interop import hf_export
from grace_jax.run import runs


def test_the_kind_is_told_from_the_source(tmp_path):
    exported = tmp_path / "exported"
    exported.mkdir()
    (exported / hf_export.WEIGHTS).write_bytes(b"")
    run = tmp_path / "run"
    run.mkdir()
    assert runs._kind_of(str(exported)) == "export"  # noqa: SLF001
    assert runs._kind_of(str(run)) == "run"  # noqa: SLF001
    assert runs._kind_of("someone/grace-dfew3") == "export"  # noqa: SLF001 -- a hub name
    assert runs._kind_of("gs://bucket/runs/dfew3") == "run"  # noqa: SLF001
    assert runs._kind_of(str(tmp_path / "typo")) == "run"  # noqa: SLF001 -- then named as a missing run


def test_errors_name_the_missing_file_for_the_flag_given(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(errors.NotFoundError, match=r"empty/config\.json: not found; --workdir must be a grace_jax run"):
        runs.load(str(empty))
    with pytest.raises(hf_export.ExportError, match=r"empty/model\.safetensors: not found; not a grace_jax model"):
        runs.load(str(empty), kind="export")
    with pytest.raises(ValueError, match="checkpoint must be 'best' or 'last', got 'middle'"):
        runs.load(str(empty), "middle")
    with pytest.raises(ValueError, match="kind must be 'run', 'export' or None"):
        runs.load(str(empty), kind="checkpoint")
