"""What every command does with a full disk and with a syntax error in the user's own config file:
one line, no traceback (grace_jax/infra/cli.py).

The full disk is real where the test can mount a small tmpfs (`unshare -rm`: a private mount namespace,
root inside it, which works as root and, where user namespaces are enabled, as any user); elsewhere the
same command runs with `os.replace` of its checkpoint writes faked to fail with ENOSPC (a `-c` wrapper),
as named in the test's output."""

from __future__ import annotations

import errno
import os
import re
import shutil
import subprocess
import sys

import pytest

from grace_jax.infra import cli

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


# ------------------------------------------------------------------------------- disk full, in-process
def test_disk_full_is_found_in_an_exception_chain_or_in_its_text():
    plain = OSError(errno.ENOSPC, "No space left on device", "/data/run/metrics.jsonl")
    assert cli.disk_full(plain) is plain
    try:
        try:
            raise plain
        except OSError as e:
            raise RuntimeError("cannot schedule new futures after interpreter shutdown") from e
    except RuntimeError as wrapped:
        assert cli.disk_full(wrapped) is plain
    tensorstore = ValueError(
        'RESOURCE_EXHAUSTED: Error writing "opt_state.mu.kernel.value/0.0" in OCDBT database at local file '
        '"/runs/a/checkpoints/last/4.orbax-checkpoint-tmp/state/ocdbt.process_0/": Failed to write 552256 '
        "bytes to file 9: No space left on device [os_error_code='28']"
    )
    assert cli.disk_full(tensorstore) is tensorstore
    assert cli.disk_full(ValueError("nan at step 4")) is None
    assert cli.disk_full(ExceptionGroup("several", [ValueError("x"), plain])) is plain


def test_the_message_names_the_path_the_free_space_and_a_checkpoints_size(tmp_path):
    last = tmp_path / "checkpoints" / "last"
    (last / "2" / "state").mkdir(parents=True)
    (last / "2" / "state" / "data").write_bytes(b"x" * 3 * 1024 * 1024)
    (last / "4.orbax-checkpoint-tmp" / "state").mkdir(parents=True)
    failed = f"{last}/4.orbax-checkpoint-tmp/state/ocdbt.process_0/d/a88e"
    error = ValueError(
        f'Error writing "opt_state.mu.kernel.value/0.0" at local file "{failed}": No space left on device'
    )
    message = cli.disk_full_message(error)
    free = shutil.disk_usage(tmp_path).free
    assert message.startswith(f"no space left on device writing {failed} (")
    assert "free on its filesystem; a checkpoint there takes about 3.0 MB)" in message
    assert str(round(free / 1024**3, 1)) in message or "MB free" in message or "KB free" in message
    assert "the ones saved before are intact" in message and "\n" not in message
    # An OSError's own filename, outside any checkpoint folder: no size, no word about checkpoints.
    other = cli.disk_full_message(OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "out.json")))
    assert other.startswith(f"no space left on device writing {tmp_path}/out.json (") and "checkpoint" not in other


# ----------------------------------------------------------------------------- through the commands
def _env() -> dict:
    return dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=REPO)


@pytest.mark.slow
def test_a_syntax_error_in_ones_config_file_is_the_file_line_and_caret(tmp_path):
    config = tmp_path / "my_config.py"
    config.write_text(
        "from grace_jax.configs import demo\n\n\ndef get_config():\n    c = demo.get_config()\n"
        "    c.optim.batch_size = = 8\n    return c\n"
    )
    workdir = tmp_path / "run"
    done = subprocess.run(
        [sys.executable, "-m", "grace_jax.main", f"--config={config}", f"--workdir={workdir}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, env=_env(),
    )  # fmt: skip
    assert done.returncode == 2, done.stderr[-3000:]
    assert done.stderr.splitlines() == [
        f"grace_jax.main: error: --config={config}: syntax error in {config}, line 6: invalid syntax",
        "    c.optim.batch_size = = 8",
        "                         ^",
    ], done.stderr[-3000:]
    assert not workdir.exists()


def _can_mount_tmpfs(tmp_path) -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = tmp_path / "probe"
    probe.mkdir()
    done = subprocess.run(["unshare", "-rm", "sh", "-c", f"mount -t tmpfs -o size=64k tmpfs {probe}"],
                          capture_output=True, timeout=30)  # fmt: skip
    return done.returncode == 0


# A checkpoint write that fails as on a full disk: orbax renames each finished temporary folder into
# place with os.rename; those of the step-4 save raise ENOSPC as a full disk's write would.
_FAKE_FULL_DISK = """
import errno, os, runpy, sys
real_rename = os.rename
def rename(src, dst, *a, **k):
    if '/4.orbax-checkpoint-tmp' in str(src):
        raise OSError(errno.ENOSPC, 'No space left on device', str(src))
    return real_rename(src, dst, *a, **k)
os.rename = rename
sys.argv = ['grace_jax.main', *sys.argv[1:]]
runpy.run_module('grace_jax.main', run_name='__main__', alter_sys=True)
"""


@pytest.mark.slow
@pytest.mark.parametrize("disk", ["tmpfs", "faked"])
def test_a_full_disk_during_a_save_is_one_line_and_the_earlier_checkpoint_stays(synthfer_dir, tmp_path, disk):
    """tmpfs: a real 4 MB filesystem holds the step-2 checkpoint (2.6 MB) and not the step-4 one (where
    no tmpfs can be mounted, this case is faked too, and says so). faked: the step-4 save's renames fail
    with ENOSPC in orbax's commit thread."""
    small, kept = tmp_path / "small", tmp_path / "kept"
    small.mkdir()
    args = ["--config=configs/demo.py", f"--workdir={small}/run", f"--config.data.dir={synthfer_dir}",
            "--config.data.num_frames=4", "--config.model.num_frames=4", "--config.data.image_size=32",
            "--config.optim.batch_size=8", "--config.optim.num_train_steps=4",
            "--config.train.ckpt_every_steps=2", "--config.train.eval_every_steps=1000"]  # fmt: skip
    real = disk == "tmpfs" and _can_mount_tmpfs(tmp_path)
    if real:
        script = f'mount -t tmpfs -o size=4m tmpfs {small} && "$@"; rc=$?; cp -a {small}/. {kept}/; exit $rc'
        command = ["unshare", "-rm", "sh", "-c", script, "sh", sys.executable, "-m", "grace_jax.main", *args]
        kept.mkdir()
    else:
        command = [sys.executable, "-c", _FAKE_FULL_DISK, *args]
        kept = small
    print("full disk:", "a real 4 MB tmpfs" if real else "faked ENOSPC (no tmpfs could be mounted)")
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600, env=_env())
    assert done.returncode == 1, done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-5000:]
    # Besides absl's INFO lines (the tests' compilation cache is announced), the one error line only.
    lines = [line for line in done.stderr.splitlines() if line.strip() and not re.match(r"I\d{4} ", line)]
    assert len(lines) == 1, done.stderr[-5000:]
    assert lines[0].startswith(f"grace_jax.main: error: no space left on device writing {small}/run/checkpoints/")
    assert "the ones saved before are intact" in lines[0] and "run the same command again" in lines[0]
    if real:
        assert "free on its filesystem; a checkpoint there takes about 2." in lines[0]
    # The step-2 checkpoint is whole and loads; the step-4 one never became a checkpoint.
    last = kept / "run" / "checkpoints" / "last"
    assert "2" in os.listdir(last) and "4" not in os.listdir(last)
    from grace_jax.run import runs

    loaded = runs.load(str(kept / "run"), "last")
    assert loaded.step == 2
    assert not (kept / "run" / "lock.json").exists()


@pytest.mark.slow
@pytest.mark.parametrize(
    "content, what",
    [
        (b"<!DOCTYPE html>\n<html><head><title>Google Drive - Virus scan warning</title></head></html>\n",
         "it is an HTML page"),
        (b"", "it is empty (0 bytes)"),
    ],
)  # fmt: skip
def test_a_web_page_saved_as_a_pth_is_not_a_checkpoint(tmp_path, content, what):
    page = tmp_path / "DFEW-set1-model_best.pth"
    page.write_bytes(content)
    workdir = tmp_path / "converted"
    done = subprocess.run(
        [sys.executable, "-m", "grace_jax.convert", "dferclip", f"--checkpoint={page}", f"--workdir={workdir}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, env=_env(),
    )  # fmt: skip
    assert done.returncode == 1, done.stderr[-3000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr[-3000:]
    assert lines[0].startswith(f"grace_jax.convert: error: {page}: not a PyTorch checkpoint: {what}")
    assert "refused" not in lines[0] and "Download the .pth again" in lines[0]
    assert not workdir.exists() and page.read_bytes() == content
