"""`python -m grace_jax.export`: the command writes the folder and says how to share it; a taken --out
is refused before the run is loaded. The folder itself is tested in tests/interop/hf_export_test.py."""

from __future__ import annotations

import os
import subprocess
import sys

from grace_jax.interop import hf_export

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _export(*args: str, cwd) -> subprocess.CompletedProcess:
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=REPO)
    return subprocess.run([sys.executable, "-m", "grace_jax.export", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip


def test_the_command_writes_the_folder_of_the_chosen_checkpoint(tiny_run, tmp_path):
    out = tmp_path / "grace-tiny"
    done = _export(f"--workdir={tiny_run[0]}", f"--out={out}", "--checkpoint=last", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(os.listdir(out)) == sorted(hf_export.FILES)
    assert hf_export.weights_metadata(str(out))["checkpoint"] == "last"
    assert f"Wrote {out} (" in done.stdout and "from the last checkpoint, step 6)" in done.stdout
    assert f"huggingface-cli upload <you>/<model-name> {out}" in done.stdout
    card = (out / "README.md").read_text()
    assert "Exported with `python -m grace_jax.export --workdir=" in card and "--checkpoint=last`" in card


def test_a_taken_out_folder_is_refused_before_the_run_is_read(tmp_path):
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "keep.txt").write_text("x")
    # The workdir does not exist: the refusal names --out, so --out was checked first.
    done = _export(f"--workdir={tmp_path / 'no_run'}", f"--out={taken}", cwd=tmp_path)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    said = [line for line in done.stderr.splitlines() if ": error: " in line]
    assert said == [f"grace_jax.export: error: {taken}: already exists; choose a new --out."], done.stderr
    assert os.listdir(taken) == ["keep.txt"]
