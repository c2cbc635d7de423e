"""Every stop of `python -m grace_jax.main` is orderly (grace_jax/run/stops.py): Ctrl-C and SIGTERM in
the loop and during start-up, and a diverging run. Each ends with its exit code and one line naming
the step that is safely saved, the workdir lock released, and only complete, finite checkpoints on
disk (no orbax temporary folder left behind).

The end-to-end tests send real signals to real training subprocesses (the helpers of
distributed_test.py); the unit tests check the pieces in this process."""

from __future__ import annotations

import math
import os
import re
import signal
import sys
import time
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from distributed_test import RUN_TIMEOUT_S, Run, _args, _env

from grace_jax.infra import distributed
from grace_jax.run import stops


# ------------------------------------------------------------------------------------ helpers
class GroupRun(Run):
    """A Run in a process group of its own, signalled as a terminal or SLURM does: the whole group,
    the data loader's worker processes included."""

    def __init__(self, args: list[str], env: dict):
        super().__init__(args, env, new_session=True)

    def signal_group(self, signum: int) -> None:
        os.killpg(self.proc.pid, signum)


def _wait_for_file(path: Path, run: Run, timeout: float = RUN_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline and run.proc.poll() is None, run.output()
        time.sleep(0.01)


def _finish(run: Run, timeout: float = 180) -> int:
    try:
        return run.wait(timeout)
    finally:
        run.kill()


def _checkpoint_steps(workdir: Path, kind: str = "last") -> list[int]:
    """The step folders under checkpoints/<kind>; fails on any orbax temporary folder."""
    folder = workdir / "checkpoints" / kind
    if not folder.exists():
        return []
    names = sorted(p.name for p in folder.iterdir())
    assert not [n for n in names if "tmp" in n], names  # a save cut off
    return sorted(int(n) for n in names if n.isdigit())


def _read_params(workdir: Path, step: int, kind: str = "last"):
    """The parameters of a checkpoint step, read onto one device: it is complete and readable."""
    path = str(workdir / "checkpoints" / kind)
    with ocp.CheckpointManager(path) as manager:
        tree = ocp.StandardCheckpointer().metadata(os.path.join(path, str(step), "state")).item_metadata
        device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
        target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), tree)
        restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target)))
    return restored["state"]["params"]


def _assert_finite(params) -> None:
    for leaf in jax.tree.leaves(params):
        assert np.all(np.isfinite(np.asarray(leaf)))


def _no_traceback(run: Run) -> None:
    out = run.output(last=None)
    assert "Traceback" not in out and "RuntimeError" not in out, out


def _stop_lines(run: Run) -> list[str]:
    return [line for line in run.lines if re.match(r"^(Preempted|Interrupted) \(", line)]


# ------------------------------------------------------------------------------------ unit
def test_stop_lines_name_the_saved_step_or_say_there_is_none(tmp_path):
    ckpt = str(tmp_path / "checkpoints")
    assert stops.saved_step(ckpt) is None
    (tmp_path / "checkpoints/last/2").mkdir(parents=True)
    (tmp_path / "checkpoints/last/4.orbax-checkpoint-tmp-17").mkdir()  # a save cut off: not a checkpoint
    assert stops.saved_step(ckpt) == 2
    assert stops.stop_line("SIGINT", ckpt, saved=6, during_start_up=False) == (
        f"Interrupted (Ctrl-C): saved the checkpoint of step 6 to {ckpt}; run the same command again to resume."
    )
    assert stops.stop_line("SIGTERM", ckpt, saved=2, during_start_up=True) == (
        f"Preempted (SIGTERM) during start-up: the checkpoint of step 2 in {ckpt} is complete; run the same "
        "command again to resume from it."
    )
    assert stops.stop_line("SIGTERM", ckpt, saved=None, during_start_up=True).endswith(
        "no checkpoint was saved yet; the same command starts the run afresh."
    )


def test_non_finite_steps_and_states_are_found():
    ok = {"loss": np.float32(1.5), "grad_norm": np.float32(3.0)}
    assert stops.first_non_finite([(1, ok), (2, ok)]) is None
    bad = stops.first_non_finite([(1, ok), (2, dict(ok, grad_norm=np.float32(np.inf))), (3, dict(ok, loss=np.nan))])
    assert bad[0] == 2 and bad[1]["loss"] == 1.5 and math.isinf(bad[1]["grad_norm"])
    state = {"params": {"w": np.ones(3, np.float32)}, "opt_state": (np.zeros(2), np.int32(4)), "frozen": {}}
    assert stops.state_is_finite(state)
    state["params"]["w"][1] = np.inf
    assert not stops.state_is_finite(state)


def test_watcher_raises_in_start_up_and_flags_in_the_loop():
    previous = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    with distributed.PreemptionWatcher() as watcher:
        watcher.raising = True
        with pytest.raises(distributed.Stopped) as stopped:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)  # the handler runs at the next bytecode; the sleep only bounds the wait
        assert stopped.value.signame == "SIGTERM"
    with distributed.PreemptionWatcher() as watcher:
        assert not watcher.reached(1)
        os.kill(os.getpid(), signal.SIGINT)  # in the loop: only a flag
        time.sleep(0.05)
        assert watcher.reached(2) and watcher.stop_signal == "SIGINT"
        with pytest.raises(distributed.Stopped):  # a signal before start-up's raising begins
            watcher.raising = True
        watcher.raising = False
        with pytest.raises(KeyboardInterrupt):  # a second Ctrl-C: out now
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == previous


class _SignalsItselfWhenCollected:
    def __del__(self):
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(1)  # the handler's Stopped ends this sleep, then Python can only print it as unraisable


def test_a_start_up_signal_python_could_not_raise_stops_start_up_when_the_first_step_is_dispatched():
    with distributed.PreemptionWatcher() as watcher:
        watcher.raising = True
        unraisable = []
        previous_hook, sys.unraisablehook = sys.unraisablehook, unraisable.append
        try:
            _SignalsItselfWhenCollected()  # collected at once: the signal lands inside __del__
        finally:
            sys.unraisablehook = previous_hook
        assert [type(u.exc_value) for u in unraisable] == [distributed.Stopped]
        with pytest.raises(distributed.Stopped) as stopped:
            watcher.start_up_over()
        assert stopped.value.signame == "SIGINT"
        watcher.start_up_over()  # once only: in the loop the flag waits for the step
        assert watcher.reached(1) and not watcher.raising


# ------------------------------------------------------------------------------------ end to end
@pytest.mark.slow
def test_ctrl_c_saves_the_step_then_sigterm_in_start_up_then_the_same_command_resumes(
    tiny_config, synthfer_dir, tmp_path
):
    config = tiny_config(synthfer_dir, 6)
    config.train.log_every_steps = 1  # a line per step: the test knows the loop is running
    config.data.num_workers = 2  # worker processes, which a terminal's Ctrl-C reaches too
    workdir = tmp_path / "run"
    ckpt_dir = workdir / "checkpoints"

    # Ctrl-C mid-loop, to the process group as a terminal sends it: the step reached is saved, one
    # line, exit 130, the lock released; no traceback from the trainer or its data workers.
    run = GroupRun(_args(config, workdir), _env(8))
    run.wait_for_line(r"^step 2/6 ", RUN_TIMEOUT_S)
    run.signal_group(signal.SIGINT)
    assert _finish(run) == 130, run.output()
    _no_traceback(run)
    [line] = _stop_lines(run)
    saved = int(re.match(r"^Interrupted \(Ctrl-C\): saved the checkpoint of step (\d+) to (\S+); run the", line)[1])
    assert 2 <= saved < 6 and f"to {ckpt_dir};" in line and line.endswith("run the same command again to resume.")
    assert f"step {saved + 1}/6" not in run.output(last=None)
    assert not (workdir / "lock.json").exists()
    assert _checkpoint_steps(workdir) == [saved]
    _assert_finite(_read_params(workdir, saved))

    # SIGTERM half a second after the lock is taken, while the run restores, builds and compiles:
    # exit 0, the lock released, the line names the checkpoint still there.
    run = GroupRun(_args(config, workdir), _env(8))
    _wait_for_file(workdir / "lock.json", run)
    time.sleep(0.5)
    run.signal_group(signal.SIGTERM)  # as SLURM's scancel does
    assert _finish(run) == 0, run.output()
    _no_traceback(run)
    assert _stop_lines(run) == [
        f"Preempted (SIGTERM) during start-up: the checkpoint of step {saved} in {ckpt_dir} is complete; run "
        "the same command again to resume from it."
    ]
    assert not [line for line in run.lines if re.match(r"^step \d+/6 ", line)]
    assert not (workdir / "lock.json").exists()
    assert _checkpoint_steps(workdir) == [saved]

    # The same command resumes from the step Ctrl-C saved and finishes.
    run = Run(_args(config, workdir), _env(8))
    assert _finish(run, RUN_TIMEOUT_S) == 0, run.output()
    assert f"Resumed from {ckpt_dir} at step {saved}." in run.output(last=None)
    assert not (workdir / "lock.json").exists() and (workdir / "final_metrics.json").exists()
    assert _checkpoint_steps(workdir)[-1] == 6


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_right_after_the_lock_is_taken_stops_start_up(signum, tiny_config, synthfer_dir, tmp_path):
    config = tiny_config(synthfer_dir, 6)
    workdir = tmp_path / "fresh"
    run = Run(_args(config, workdir), _env(8))
    _wait_for_file(workdir / "lock.json", run)
    run.proc.send_signal(signum)
    assert _finish(run) == (130 if signum == signal.SIGINT else 0), run.output()
    _no_traceback(run)
    how = "Interrupted (Ctrl-C)" if signum == signal.SIGINT else "Preempted (SIGTERM)"
    assert _stop_lines(run) == [
        f"{how} during start-up: no checkpoint was saved yet; the same command starts the run afresh."
    ]
    assert not [line for line in run.lines if re.match(r"^step \d+/6 ", line)]
    assert not (workdir / "lock.json").exists()
    assert _checkpoint_steps(workdir) == []


@pytest.mark.slow
@pytest.mark.parametrize("skips", [0, 2])
def test_a_diverging_run_stops_in_one_line_and_saves_nothing_non_finite(skips, tiny_config, synthfer_dir, tmp_path):
    config = tiny_config(synthfer_dir, 8)
    config.train.log_every_steps = 4  # the check does not wait for a log line
    config.train.ckpt_every_steps = 1  # a save in flight at every step
    config.train.max_checkpoints = 10  # all kept: a skipped step's parameters are its predecessor's
    config.train.eval_every_steps = 1  # and a `best` candidate at every step
    config.train.max_nonfinite_steps = skips
    workdir = tmp_path / "diverged"
    # The demo's warmup makes step 1's rate 0 and raises it from there; AdamW moves each parameter
    # by about the rate, so the 1e8 of this override overflows within a few steps.
    run = Run(_args(config, workdir) + ["--config.optim.groups=(('.*', 1e8),)"], _env(8))
    assert _finish(run, RUN_TIMEOUT_S) == 1, run.output()
    _no_traceback(run)
    errors = [line for line in run.lines if line.startswith("grace_jax.main: error: ")]
    assert len(errors) == 1, run.output()
    print(errors[0])
    m = re.match(
        r"^grace_jax\.main: error: training diverged at step (\d+): (.*); the last good checkpoint is step (\d+) "
        rf"in {re.escape(str(workdir / 'checkpoints'))} \(nothing non-finite was saved\)\. Usual fixes: a lower "
        r"learning rate \(the rates of optim\.groups\), a longer warmup \(optim\.warmup_steps, now 20\)",
        errors[0],
    )
    assert m, errors[0]
    bad, good = int(m[1]), int(m[3])
    assert 1 <= good < bad <= 8 and ("nan" in m[2] or "inf" in m[2] or "not finite" in m[2])
    assert errors[0].endswith("train the fixed config into a new --workdir.")
    assert not (workdir / "lock.json").exists()
    steps = _checkpoint_steps(workdir)
    assert steps and steps[-1] == good and max(steps) < bad
    params = {step: _read_params(workdir, step) for step in steps}
    for p in params.values():  # every checkpoint left is complete and finite, `best` included
        _assert_finite(p)
    for step in _checkpoint_steps(workdir, "best"):
        assert step < bad
        _assert_finite(_read_params(workdir, step, "best"))
    skipped = [
        int(re.search(r"warning: step (\d+): .*; skipped, no update applied", line)[1])
        for line in run.lines
        if "skipped, no update applied" in line
    ]
    assert len(skipped) == skips and all(k < bad for k in skipped)
    if skips:
        assert f"(after {skips} skipped steps, train.max_nonfinite_steps={skips})" in errors[0]
        assert "train.max_nonfinite_steps > 0" not in errors[0]
        for k in skipped:  # no update: the parameters of the step before
            for a, b in zip(jax.tree.leaves(params[k]), jax.tree.leaves(params[k - 1]), strict=True):
                np.testing.assert_array_equal(a, b)
    else:
        assert "train.max_nonfinite_steps > 0 to skip a rare non-finite step" in errors[0]


def test_a_failure_in_the_loop_waits_for_the_save_and_ends_its_traceback_with_the_line(tmp_path):
    calls = []

    class Recorder:
        def __init__(self, name):
            self.name = name

        def __getattr__(self, method):
            return lambda *a, **k: calls.append(f"{self.name}.{method}")

    class FakeRun:  # what `after_failure` uses of the trainer's run
        train_iter, writer, step = Recorder("train_iter"), Recorder("writer"), 5
        ckpt = Recorder("ckpt")

    FakeRun.ckpt.directory = str(tmp_path / "checkpoints")
    (tmp_path / "checkpoints/last/4").mkdir(parents=True)
    error = stops.after_failure(FakeRun(), RuntimeError("boom"))
    assert calls == ["train_iter.close", "ckpt.wait", "ckpt.close", "writer.close"]  # the save waited for
    assert error.__notes__ == [
        f"Training stopped at step 5 by the error above; the checkpoint of step 4 in {tmp_path}/checkpoints is "
        "complete; run the same command again to resume from it."
    ]
    calls.clear()
    error = stops.after_failure(FakeRun(), KeyboardInterrupt())  # a second Ctrl-C: no waiting
    assert calls == [] and error.__notes__[0].startswith("Interrupted (Ctrl-C) twice: stopped without waiting; ")
