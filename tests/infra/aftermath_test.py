"""Echoes of a reported error stay silent; everything else is printed as before. Real processes: what
matters is what reaches stderr by the time the interpreter has gone."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _run(body: str) -> subprocess.CompletedProcess:
    script = textwrap.dedent(
        """
        import atexit, os, sys, threading
        from grace_jax.infra import aftermath, cli, errors

        def closed_loop_echo():  # what TensorStore's threads do after a failed read
            thread = threading.Thread(target=lambda: (_ for _ in ()).throw(RuntimeError("Event loop is closed")))
            thread.start()
            thread.join()
        """
    ) + textwrap.dedent(body)
    env = dict(os.environ, PYTHONPATH=REPO)
    return subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)


def test_after_the_error_line_teardown_writes_nothing_more():
    done = _run(
        """
        def main():
            atexit.register(lambda: os.write(2, b"teardown noise\\n"))  # runs after the error line
            raise errors.UserError("data/x.array_record: damaged")
        cli.run_plain(main)
        """
    )
    assert done.returncode == 1
    assert done.stderr.splitlines() == ["-c: error: data/x.array_record: damaged"], done.stderr


def test_without_an_error_teardown_output_is_kept():
    done = _run(
        """
        def main():
            atexit.register(lambda: os.write(2, b"teardown noise\\n"))
            closed_loop_echo()  # not expected: a real error somewhere, printed
        cli.run_plain(main)
        """
    )
    assert done.returncode == 0
    assert "RuntimeError: Event loop is closed" in done.stderr and "teardown noise" in done.stderr


def test_closed_loop_echoes_after_a_reported_failure_are_dropped_and_other_errors_kept():
    done = _run(
        """
        def main():
            aftermath.expect_closed_loop_echoes()
            closed_loop_echo()
            threading.Thread(target=lambda: 1 / 0).start()
            print("finished", flush=True)
        cli.run_plain(main)
        """
    )
    assert done.returncode == 0 and done.stdout == "finished\n"
    assert "Event loop is closed" not in done.stderr and "ZeroDivisionError" in done.stderr, done.stderr


def test_a_stop_signal_lost_in_a_finalizer_is_not_printed(monkeypatch):
    # A Ctrl-C raised while Python runs a finalizer or gc callback cannot propagate; the watcher's
    # flag stops the run instead, so the report of the lost exception is an echo.
    from grace_jax.infra import aftermath, distributed

    aftermath.drop_when(distributed._is_stopped)  # what PreemptionWatcher does
    printed = []
    monkeypatch.setattr(aftermath, "_previous_unraisable_hook", lambda u: printed.append(repr(u.exc_value)))

    class Stopping:
        def __del__(self):
            raise distributed.Stopped("SIGINT")

    class Failing:
        def __del__(self):
            raise ValueError("a real error")

    Stopping()
    Failing()
    assert printed == ["ValueError('a real error')"]


def test_closed_loop_echoes_are_dropped_while_a_save_is_in_flight_and_after_one_failed(monkeypatch):
    # A full disk during a save: TensorStore's aborted writes report the closed loop before the
    # disk-full error reaches the command and is reported.
    from grace_jax.infra import aftermath

    monkeypatch.setattr(aftermath, "_expect_closed_loop", False)
    monkeypatch.setattr(aftermath, "_in_flight", 0)
    aftermath.io_started()  # installs the hooks
    printed = []
    monkeypatch.setattr(aftermath, "_previous_excepthook", lambda t, e, tb: printed.append(str(e)))
    closed = RuntimeError("Event loop is closed")
    sys.excepthook(RuntimeError, closed, None)  # during the save: dropped
    aftermath.io_finished()
    sys.excepthook(RuntimeError, closed, None)  # nothing in flight, nothing failed: printed
    aftermath.io_started()
    aftermath.io_finished(failed=True)
    sys.excepthook(RuntimeError, closed, None)  # after a failed save: dropped for good
    assert printed == ["Event loop is closed"]
