"""One trainer per workdir: the lock refuses a second trainer and names the holder, takes over a lock
whose trainer is gone, and is renewed while held and removed when released; a two-process job stops
on both processes when it is held. (The gs:// variant is in
gcs_test.py; a second `python -m grace_jax.main` refused, in cli_test.py; a SIGKILLed trainer's
lock taken over by its restart, in kill_resume_test.py.)"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from grace_jax.infra import errors
from grace_jax.run import workdir_lock


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _write_lock(workdir, **fields):
    record = dict(workdir_lock._this_process(), **fields)  # noqa: SLF001 -- a lock as another process wrote it
    path = os.path.join(workdir, workdir_lock.LOCK_NAME)
    with open(path, "w") as f:
        json.dump(record, f)
    return path


def test_the_lock_names_its_holder_and_refuses_a_second_trainer(tmp_path):
    workdir = str(tmp_path / "run")
    with workdir_lock.acquire(workdir) as lock:  # creates the workdir
        with open(lock.path) as f:
            record = json.load(f)
        assert (record["host"], record["pid"]) == (socket.gethostname(), os.getpid())
        assert record["started_utc"] and record["command"]
        with pytest.raises(workdir_lock.LockHeldError) as e:
            workdir_lock.acquire(workdir)
        message = str(e.value)
        assert f"is in use by another trainer (pid {os.getpid()} on host {socket.gethostname()}" in message
        assert f"kill {os.getpid()}" in message and "another --workdir" in message
        assert isinstance(e.value, errors.UserError)
    assert os.listdir(workdir) == []  # released: the lock and its temporary files are gone


def test_a_lock_whose_process_is_gone_is_taken_over_with_a_warning(tmp_path, capsys):
    workdir = str(tmp_path)
    dead = _dead_pid()
    _write_lock(workdir, pid=dead, command="python -m grace_jax.main (killed)")
    with workdir_lock.acquire(workdir) as lock:
        with open(lock.path) as f:
            assert json.load(f)["pid"] == os.getpid()
    err = capsys.readouterr().err
    assert f"warning: taking over {lock.path}: its trainer (pid {dead} on this host) no longer runs" in err


def test_a_reused_pid_is_not_the_holder(tmp_path):
    # The holder's pid now belongs to another process (here: this one), started at another time.
    _write_lock(str(tmp_path), pid=os.getpid(), pid_start="1")
    workdir_lock.acquire(str(tmp_path)).release()


def test_another_machines_lock_holds_until_it_goes_unrenewed(tmp_path, capsys):
    path = _write_lock(str(tmp_path), host="other-host", pid=12345)
    with pytest.raises(workdir_lock.LockHeldError) as e:
        workdir_lock.acquire(str(tmp_path))
    assert "pid 12345 on host other-host" in str(e.value) and "counts as abandoned" in str(e.value)
    old = time.time() - workdir_lock.STALE_AFTER_S - 60
    os.utime(path, (old, old))
    workdir_lock.acquire(str(tmp_path)).release()
    assert "not renewed for" in capsys.readouterr().err and not os.path.exists(path)


def test_the_lock_is_renewed_while_held_and_release_keeps_anothers_lock(tmp_path, monkeypatch):
    monkeypatch.setattr(workdir_lock, "HEARTBEAT_S", 0.05)
    lock = workdir_lock.acquire(str(tmp_path))
    old = time.time() - 1000
    os.utime(lock.path, (old, old))
    time.sleep(0.5)
    assert time.time() - os.stat(lock.path).st_mtime < 100  # renewed
    # Someone replaced it (a takeover): releasing must not delete their lock.
    replaced = _write_lock(str(tmp_path), pid=1, command="the other trainer")
    time.sleep(0.3)
    lock.release()
    with open(replaced) as f:
        assert json.load(f)["command"] == "the other trainer"


def test_an_unwritable_workdir_is_named(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(errors.ConfigError, match=f"--workdir={tmp_path / 'file' / 'run'} cannot be created"):
        workdir_lock.acquire(str(tmp_path / "file" / "run"))


@pytest.mark.slow
def test_a_two_process_job_stops_on_every_process_when_the_lock_is_held(tiny_config, synthfer_dir, tmp_path):
    # Process 0 asks for the lock; process 1 learns the answer through the coordination service and
    # stops with the same line, instead of waiting for a peer that has left.
    from distributed_test import _two_processes

    workdir = tmp_path / "held"
    with workdir_lock.acquire(str(workdir)):
        runs = _two_processes(tiny_config(synthfer_dir, 6), workdir)
        try:
            codes = [r.wait(120) for r in runs]
        finally:
            for r in runs:
                r.kill()
    for i, (r, code) in enumerate(zip(runs, codes)):
        out = r.output(last=None)
        assert code == 1, f"process {i}: {out[-3000:]}"
        assert f"is in use by another trainer (pid {os.getpid()} on host" in out and "Traceback" not in out, out[-3000:]
