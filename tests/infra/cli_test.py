"""Every command ends a user's mistake with one line on stderr, exit 1 (2 for usage), no traceback.

The wrapper itself is tested in this process; then each public command runs as a subprocess on a bad
input that fails before any work (a few seconds each, two at a time), and must name the culprit.
The trainer's own checks, which need no subprocess, are in config_checks_test.py.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from absl import app

from grace_jax.infra import cli, errors

REPO = Path(__file__).resolve().parents[2]


# ------------------------------------------------------------------------------------ the wrapper
def _outcome(fn, capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as e:
        cli.guarded(fn, "prog")()
    return e.value.code, capsys.readouterr().err


def test_user_errors_are_one_line_with_their_exit_code(capsys):
    def missing():
        raise errors.NotFoundError("/data/x: no such folder")

    def usage():
        raise errors.UsageError("give a workdir")

    def absl_usage():
        raise app.UsageError("Unexpected arguments: ['x']")

    assert _outcome(missing, capsys) == (1, "prog: error: /data/x: no such folder\n")
    assert _outcome(usage, capsys) == (2, "prog: error: give a workdir\n")
    assert _outcome(absl_usage, capsys) == (2, "prog: error: Unexpected arguments: ['x']\n")
    # The standard-library-compatible subclasses keep `except FileNotFoundError/ValueError` working.
    assert issubclass(errors.NotFoundError, FileNotFoundError) and issubclass(errors.ConfigError, ValueError)


def test_other_errors_propagate_with_their_traceback():
    def bug():
        raise KeyError("not the user's fault")

    with pytest.raises(KeyError):
        cli.guarded(bug, "prog")()


def test_library_errors_users_can_fix_are_user_errors():
    from data_prep.job import BuildError
    from data_prep.sources.datasets import SourceError
    from data_prep.writer import OutputExistsError
    from grace_jax.data.errors import ClipError
    from grace_jax.interop.hf_export import ExportError
    from grace_jax.interop.torch_pickle import ConversionError
    from grace_jax.models.clip_checkpoint import CheckpointError
    from grace_jax.run.workdir_lock import LockHeldError
    from grace_jax.text.tokenizer import TokenizerError

    for error in (
        BuildError,
        SourceError,
        OutputExistsError,
        ConversionError,
        ClipError,
        ExportError,
        CheckpointError,
        TokenizerError,
        LockHeldError,
    ):
        assert issubclass(error, errors.UserError), error


# ------------------------------------------------------------------------------------ the commands
def _env(tmp: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu", HF_HUB_OFFLINE="1")
    env["XLA_FLAGS"] = " ".join(
        [f for f in env.get("XLA_FLAGS", "").split() if "device_count" not in f]
        + ["--xla_force_host_platform_device_count=8"]
    )
    env["PATH"] = str(tmp / "bin")  # empty: no tensorboard, gcloud, ... (python is run by its full path)
    return env


def _cases(tmp: Path, synthfer_dir: str, run_copy: str, locked: str) -> dict[str, tuple]:
    """name -> (argv after `python -m`, expected exit code, texts stderr must contain)."""
    not_a_run = tmp / "not_a_run"
    not_a_run.mkdir()
    (tmp / "bin").mkdir()
    demo = f"--config={REPO / 'configs' / 'demo.py'}"
    tiny = [
        "--config.data.num_frames=4",
        "--config.model.num_frames=4",
        "--config.data.image_size=32",
        "--config.optim.batch_size=8",
        "--config.optim.num_train_steps=6",
        "--config.train.log_every_steps=2",
        "--config.train.eval_every_steps=1000",
        "--config.train.ckpt_every_steps=1000",
    ]
    return {
        "main: a misspelt config field": (
            ["grace_jax.main", demo, f"--workdir={tmp / 'w1'}", "--config.optim.bach_size=8"],
            2,
            ["--config.optim.bach_size=8", "no field optim.bach_size", "did you mean optim.batch_size?"],
        ),
        "main: data.dir missing": (
            ["grace_jax.main", demo, f"--workdir={tmp / 'w2'}", f"--config.data.dir={tmp / 'nowhere'}"],
            1,
            [f"data.dir={tmp / 'nowhere'}: no such folder", "data_prep.build_dataset"],
        ),
        "main: a finished run resumed with another prompt.n_ctx": (
            [
                "grace_jax.main",
                demo,
                f"--workdir={run_copy}",
                f"--config.data.dir={synthfer_dir}",
                *tiny,
                "--config.model.prompt.n_ctx=6",
            ],
            1,
            ["model.prompt.n_ctx: 4 in config.json, 6 now", "another --workdir"],
        ),
        "main: a workdir another trainer holds": (
            ["grace_jax.main", demo, f"--workdir={locked}", f"--config.data.dir={synthfer_dir}", *tiny],
            1,
            [f"is in use by another trainer (pid {os.getpid()} on host", f"kill {os.getpid()}"],
        ),
        "predict: --workdir is not a run": (
            ["grace_jax.predict", f"--workdir={not_a_run}", str(tmp)],
            1,
            [f"{not_a_run}/config.json: not found", "--workdir must be a grace_jax run"],
        ),
        "predict: no inputs": (["grace_jax.predict", f"--workdir={not_a_run}"], 2, ["Give one or more videos"]),
        "evaluate: --workdir is not a run": (
            ["grace_jax.evaluate", f"--workdir={not_a_run}", f"--data_dir={synthfer_dir}"],
            1,
            [f"{not_a_run}/config.json: not found"],
        ),
        "export: --workdir is not a run": (
            ["grace_jax.export", f"--workdir={not_a_run}", f"--out={tmp / 'export'}"],
            1,
            [f"{not_a_run}/config.json: not found"],
        ),
        "convert: no such checkpoint": (
            ["grace_jax.convert", "dferclip", f"--checkpoint={tmp / 'nope.pth'}", f"--workdir={tmp / 'conv'}"],
            1,
            [f"{tmp / 'nope.pth'}: file not found"],
        ),
        "folds: a run that has not finished": (
            ["grace_jax.folds", str(not_a_run)],
            1,
            [f"{not_a_run}/final_metrics.json: not found"],
        ),
        "build_dataset: --root is not a folder": (
            ["data_prep.build_dataset", "--dataset=dfew", f"--root={tmp / 'nope'}", f"--out={tmp / 'shards'}"],
            1,
            [f"--root {tmp / 'nope'} is not a folder"],
        ),
        "launch.tpu: a tool that is not installed": (
            ["launch.tpu", "--project=p", "--zone=z", "--name=n", "--workdir=gs://b/r", "--steps=tensorboard"],
            1,
            ["tensorboard: command not found"],
        ),
    }


@pytest.fixture(scope="module")
def command_results(tmp_path_factory, tiny_run, synthfer_dir):
    """Runs every case of `_cases` (two at a time); name -> (case, CompletedProcess)."""
    from grace_jax.run import workdir_lock

    tmp = tmp_path_factory.mktemp("cli")
    run_copy = str(tmp / "run_copy")
    shutil.copytree(tiny_run[0], run_copy)
    locked = str(tmp / "locked")
    cases = _cases(tmp, synthfer_dir, run_copy, locked)
    env = _env(tmp)

    def run(argv):
        return subprocess.run(
            [sys.executable, "-m", *argv], cwd=tmp, env=env, capture_output=True, text=True, timeout=180
        )

    with workdir_lock.acquire(locked), concurrent.futures.ThreadPoolExecutor(2) as pool:
        results = dict(zip(cases, pool.map(run, [argv for argv, _, _ in cases.values()])))
    return {name: (cases[name], results[name], tmp) for name in cases}


CASES = (
    "main: a misspelt config field",
    "main: data.dir missing",
    "main: a finished run resumed with another prompt.n_ctx",
    "main: a workdir another trainer holds",
    "predict: --workdir is not a run",
    "predict: no inputs",
    "evaluate: --workdir is not a run",
    "export: --workdir is not a run",
    "convert: no such checkpoint",
    "folds: a run that has not finished",
    "build_dataset: --root is not a folder",
    "launch.tpu: a tool that is not installed",
)


@pytest.mark.slow
def test_every_case_is_run(command_results):
    assert tuple(command_results) == CASES


@pytest.mark.slow
@pytest.mark.parametrize("name", CASES)
def test_command_names_the_culprit_in_one_line(command_results, name):
    (argv, code, texts), done, _ = command_results[name]
    said = f"exit {done.returncode}\nstdout:\n{done.stdout[-2000:]}\nstderr:\n{done.stderr[-4000:]}"
    assert done.returncode == code, said
    assert "Traceback" not in done.stdout + done.stderr, said
    errors = [line for line in done.stderr.splitlines() if ": error: " in line]
    assert len(errors) == 1 and errors[0].startswith(f"{argv[0]}: error: "), said
    for text in texts:
        assert text in done.stderr, f"{text!r} not in stderr; {said}"


@pytest.mark.slow
def test_refused_commands_left_the_workdirs_as_they_were(command_results, tiny_run):
    (_, _, _), _, tmp = command_results["main: a finished run resumed with another prompt.n_ctx"]
    with open(os.path.join(tiny_run[0], "config.json")) as f, open(tmp / "run_copy" / "config.json") as g:
        assert json.load(f) == json.load(g)  # not overwritten with n_ctx=6
    assert not (tmp / "run_copy" / "lock.json").exists()  # taken, then released
    assert not (tmp / "w1").exists() and not (tmp / "w2").exists()  # never created
    assert not (tmp / "export").exists() and not (tmp / "conv").exists() and not (tmp / "shards").exists()
