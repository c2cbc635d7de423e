"""Damaged files of a real run, through the public commands: a truncated array file or an emptied
newest step makes `grace_jax.main` set that step aside and resume from the older one; with no
readable step it stops in one line that says how to start fresh; a cut last line of metrics.jsonl is
set aside and the run resumes; predict, evaluate and export on a damaged `best`, and predict on an
export with a cut model.safetensors, each stop in one line naming the file. (The same at the library
level, fast: tests/run/checkpoint_damage_test.py.)"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from grace_jax import train

pytestmark = pytest.mark.slow  # training and inference subprocesses

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _command(module: str, *args: str, cwd) -> subprocess.CompletedProcess:
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=REPO)
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)  # fmt: skip


def _lines(text: str, kind: str) -> list[str]:
    return [line for line in text.splitlines() if f": {kind}: " in line]


def _files(folder) -> list[str]:
    return sorted(os.path.relpath(os.path.join(d, n), folder) for d, _, names in os.walk(folder) for n in names)


def _truncate_largest_array_file(step_dir) -> str:
    """Cuts the largest array file of the step's state in half, as an interrupted copy leaves it."""
    files = [os.path.join(d, n) for d, _, names in os.walk(os.path.join(step_dir, "state")) for n in names]
    largest = max(files, key=os.path.getsize)
    os.truncate(largest, os.path.getsize(largest) // 2)
    return os.path.relpath(largest, step_dir)


@pytest.fixture(scope="module")
def two_steps(tiny_run, tiny_config, synthfer_dir, tmp_path_factory):
    """`tiny_run` trained on to step 8: checkpoints/last holds steps 6 and 8, best step 8 or 6."""
    workdir = str(tmp_path_factory.mktemp("damaged") / "run")
    shutil.copytree(tiny_run[0], workdir)
    train.train_and_evaluate(tiny_config(synthfer_dir, 8), workdir)
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints", "last"))) == ["6", "8"]
    return workdir


def _copy(run: str, tmp_path) -> str:
    workdir = str(tmp_path / "run")
    shutil.copytree(run, workdir)
    return workdir


def _resume(workdir: str, tmp_path) -> subprocess.CompletedProcess:
    # The run's own config (configs/run.py:<workdir>): the same command a requeued job runs.
    return _command("grace_jax.main", f"--config={REPO}/configs/run.py:{workdir}", f"--workdir={workdir}", cwd=tmp_path)


def _assert_resumed_from_6_with_8_set_aside(done, workdir: str, moved_files: list[str]) -> list[str]:
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    assert f"Resumed from {workdir}/checkpoints at step 6." in done.stdout
    warnings = _lines(done.stderr, "warning")
    said = [w for w in warnings if "/checkpoints/last/8" in w]
    assert len(said) == 1, warnings
    assert said[0].startswith(f"grace_jax.main: warning: {workdir}/checkpoints/last/8 cannot be read (")
    assert f"moved to {workdir}/checkpoints/damaged/last-8 (nothing deleted)" in said[0]
    assert said[0].endswith("Resuming from step 6, the newest readable checkpoint.")
    # Nothing deleted: the damaged step is whole beside the checkpoints; step 8 trained and saved again.
    assert _files(os.path.join(workdir, "checkpoints", "damaged", "last-8")) == moved_files
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints", "last"))) == ["6", "8"]
    assert not os.path.exists(os.path.join(workdir, "lock.json"))
    return warnings


def test_a_truncated_newest_step_and_a_cut_metrics_line_resume_from_the_older_step(two_steps, tmp_path):
    workdir = _copy(two_steps, tmp_path)
    step_8 = os.path.join(workdir, "checkpoints", "last", "8")
    files = _files(step_8)
    cut = _truncate_largest_array_file(step_8)
    cut_size = os.path.getsize(os.path.join(step_8, cut))
    metrics = os.path.join(workdir, "metrics.jsonl")
    with open(metrics) as f:
        text = f.read()
    whole = [json.loads(line) for line in text.splitlines()]
    tail = text[: -len(text.splitlines()[-1]) // 2 - 1]  # the last line cut in half, no newline
    with open(metrics, "w") as f:
        f.write(tail)

    done = _resume(workdir, tmp_path)
    warnings = _assert_resumed_from_6_with_8_set_aside(done, workdir, files)
    assert os.path.getsize(os.path.join(workdir, "checkpoints", "damaged", "last-8", cut)) == cut_size
    said = [w for w in warnings if "metrics.jsonl" in w]
    assert said == [f"grace_jax.main: warning: {metrics}: 1 damaged line (cut short, e.g. by a full disk or a power "
                    f"loss) moved to {metrics}.damaged-1; the readable lines are kept."]  # fmt: skip
    assert len(warnings) == 2, warnings
    with open(metrics + ".damaged-1") as f:
        assert f.read() == tail.splitlines()[-1] + "\n"
    with open(metrics) as f:
        records = [json.loads(line) for line in f]  # every line whole
    assert [(r["step"], r["split"]) for r in records] == [(r["step"], r["split"]) for r in whole]


def test_an_emptied_newest_step_resumes_from_the_older_step(two_steps, tmp_path):
    workdir = _copy(two_steps, tmp_path)
    step_8 = os.path.join(workdir, "checkpoints", "last", "8")
    shutil.rmtree(step_8)
    os.mkdir(step_8)  # a copy cut off after making the folder
    done = _resume(workdir, tmp_path)
    warnings = _assert_resumed_from_6_with_8_set_aside(done, workdir, [])
    assert "FileNotFoundError" in warnings[0] and len(warnings) == 1, warnings


def test_with_no_readable_step_one_line_says_how_to_start_fresh_and_nothing_moves(two_steps, tmp_path):
    workdir = _copy(two_steps, tmp_path)
    last = os.path.join(workdir, "checkpoints", "last")
    for step in ("6", "8"):
        _truncate_largest_array_file(os.path.join(last, step))
    before = _files(os.path.join(workdir, "checkpoints"))
    done = _resume(workdir, tmp_path)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]
    errors = _lines(done.stderr, "error")
    assert len(errors) == 1 and done.stderr.rstrip().endswith(errors[0]), done.stderr[-3000:]
    assert errors[0].startswith(f"grace_jax.main: error: {last}: no checkpoint can be read, each is damaged (step 8: ")
    assert "step 6: " in errors[0] and "another --workdir" in errors[0] and f"move {workdir}/checkpoints" in errors[0]
    assert _files(os.path.join(workdir, "checkpoints")) == before  # nothing moved
    assert not os.path.exists(os.path.join(workdir, "lock.json"))


def _frames(tmp_path) -> str:
    folder = tmp_path / "frames"
    folder.mkdir()
    rng = np.random.RandomState(0)
    for i in range(4):
        Image.fromarray(rng.randint(0, 255, (32, 32, 3), dtype=np.uint8)).save(folder / f"{i:03d}.png")
    return str(folder)


def test_predict_evaluate_and_export_on_a_damaged_best_name_it_in_one_line(tiny_run, synthfer_dir, tmp_path):
    workdir = _copy(tiny_run[0], tmp_path)
    best = os.path.join(workdir, "checkpoints", "best", "6")
    _truncate_largest_array_file(best)
    before = _files(os.path.join(workdir, "checkpoints"))
    commands = {
        "grace_jax.predict": [f"--workdir={workdir}", f"--out={tmp_path / 'predictions'}", _frames(tmp_path)],
        "grace_jax.evaluate": [
            f"--workdir={workdir}",
            f"--data_dir={synthfer_dir}",
            "--batch_size=8",
            "--num_workers=0",
            f"--out={tmp_path / 'evaluation'}",
        ],  # fmt: skip
        "grace_jax.export": [f"--workdir={workdir}", f"--out={tmp_path / 'export'}"],
    }
    for module, args in commands.items():
        done = _command(module, *args, cwd=tmp_path)
        assert done.returncode == 1 and "Traceback" not in done.stderr, (module, done.stderr[-3000:])
        errors = _lines(done.stderr, "error")
        assert len(errors) == 1 and done.stderr.rstrip().endswith(errors[0]), (module, done.stderr[-3000:])
        assert errors[0].startswith(f"{module}: error: {best}: this checkpoint is damaged and cannot be read ("), errors
        assert errors[0].endswith("Use --checkpoint=last, or copy the run again from where it was made."), errors
    assert _files(os.path.join(workdir, "checkpoints")) == before  # readers move nothing
    assert not (tmp_path / "export").exists() and not (tmp_path / "evaluation" / "test-best.json").exists()
    # The remedy works: the last checkpoint is whole.
    done = _command("grace_jax.export", f"--workdir={workdir}", f"--out={tmp_path / 'export'}", "--checkpoint=last",
                    cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]


def test_predict_on_an_export_with_a_cut_weights_file_names_it(tiny_run, tmp_path):
    export = tmp_path / "export"
    done = _command("grace_jax.export", f"--workdir={tiny_run[0]}", f"--out={export}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    weights = export / "model.safetensors"
    os.truncate(weights, int(os.path.getsize(weights) * 0.55))  # an interrupted download
    done = _command("grace_jax.predict", f"--model={export}", f"--out={tmp_path / 'p'}", _frames(tmp_path),
                    cwd=tmp_path)  # fmt: skip
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]
    errors = _lines(done.stderr, "error")
    assert len(errors) == 1 and done.stderr.rstrip().endswith(errors[0]), done.stderr[-3000:]
    assert re.match(
        rf"grace_jax\.predict: error: {weights}: cannot be read, the file is damaged or cut short \(.*incomplete "
        r"metadata.*\); export the run again \(python -m grace_jax\.export\) or copy or download the folder again\.$",
        errors[0],
    ), errors
