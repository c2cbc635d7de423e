"""Several real processes and SIGTERM, end to end through `python -m grace_jax.main`.

- 2 processes x 4 CPU devices (loopback coordinator, gloo) train the tiny config (with SGD) to the
  parameters and eval confusion matrix of 1 process x 8 devices; a SIGTERM to one of them on the way
  stops both at the same step, and the same commands resume;
- SIGTERM mid-run to one process: it finishes its step, saves it, says so and exits 0; the same
  command then resumes to the bit-identical parameters of the uninterrupted run (`tiny_run`).
- the pieces: config/env -> jax.distributed.initialize arguments, each process's block of rows.

After jax.distributed.initialize a process ignores SIGTERM (jax's handler only notes it), so the
drivers below stop leftovers with SIGKILL, and every wait has a timeout.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from grace_jax.infra import distributed

REPO = Path(__file__).resolve().parents[2]
RUN_TIMEOUT_S = 600  # one training command: mostly compilation, ~1 min on 2 idle cores


# ------------------------------------------------------------------------------------ helpers
def _flatten(config, prefix=""):
    out = {}
    for key, value in config.items():
        if hasattr(value, "items"):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def config_flags(config) -> list[str]:
    """`--config.a.b=value` for every field in which `config` differs from configs/demo.py."""
    from grace_jax.configs import demo

    base = _flatten(demo.get_config())
    flags = []
    for key, value in _flatten(config).items():
        if key in base and base[key] == value:
            continue
        text = value if isinstance(value, str) else repr(value) if isinstance(value, tuple) else str(value)
        flags.append(f"--config.{key}={text}")
    return flags


def _env(num_devices: int, num_processes: int = 1) -> dict:
    env = dict(os.environ)
    kept = [f for f in env.get("XLA_FLAGS", "").split() if not f.startswith("--xla_force_host_platform_device_count")]
    env["XLA_FLAGS"] = " ".join(kept + [f"--xla_force_host_platform_device_count={num_devices}"])
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONUNBUFFERED"] = "1"
    # One process reads the suite's persistent compilation cache (tests/conftest.py; jax sorts the
    # XLA flags in its keys, so these runs hit what this process compiled for the same config).
    # Several processes do not: resumed 2 x 4-device runs whose steps came from it hung in a gloo
    # collective of their second or third step (3 of 4 tries here, CI included; 0 of 3 compiling afresh).
    if num_processes > 1:
        env.pop("JAX_COMPILATION_CACHE_DIR", None)
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Run:
    """One `python -m grace_jax.main` process whose output lines are collected as they come."""

    def __init__(self, args: list[str], env: dict, *, new_session: bool = False):
        self.lines: list[str] = []
        self.times: list[float] = []  # time.monotonic() at which each line arrived
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "grace_jax.main", *args],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=new_session,  # a process group of its own
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.proc.stdout:
            self.times.append(time.monotonic())
            self.lines.append(line.rstrip("\n"))

    def wait_for_line(self, pattern: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if re.search(pattern, line):
                    return line
            if self.proc.poll() is not None and not self._reader.is_alive():
                break
            time.sleep(0.01)
        raise AssertionError(f"no line matching {pattern!r}; output:\n" + self.output())

    def wait(self, timeout: float) -> int:
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"still running after {timeout} s; output:\n" + self.output()) from None
        self._reader.join(timeout=10)
        return rc

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()  # SIGTERM would be ignored after jax.distributed.initialize
            self.proc.wait(timeout=30)

    def output(self, last: int | None = 60) -> str:
        return "\n".join(self.lines[-last:] if last else self.lines)


def _run_all(runs: list[Run], timeout: float) -> list[int]:
    """Every run's exit code when all exit 0. A run that fails, or that is still running past `timeout`
    or 90 s after a peer exited (a peer that left cleanly leaves the others waiting in a collective),
    fails the test at once with every run's output."""
    deadline = time.monotonic() + timeout
    first_exit = None
    try:
        while True:
            codes = [r.proc.poll() for r in runs]
            if all(c == 0 for c in codes):
                for r in runs:
                    r._reader.join(timeout=10)
                return codes
            now = time.monotonic()
            if first_exit is None and any(c is not None for c in codes):
                first_exit = now
            failed = any(c not in (None, 0) for c in codes)
            if failed or now > deadline or (first_exit is not None and now > first_exit + 90):
                for r in runs:
                    r.kill()
                    r._reader.join(timeout=10)
                outputs = "\n".join(
                    f"--- process {i}: exit code {r.proc.returncode} ---\n{r.output(last=80)}"
                    for i, r in enumerate(runs)
                )
                raise AssertionError(f"exit codes {codes} ({'a run failed' if failed else 'stuck'}):\n{outputs}")
            time.sleep(0.1)
    finally:
        for r in runs:
            r.kill()


def _args(config, workdir) -> list[str]:
    return ["--config=" + str(REPO / "configs" / "demo.py"), "--workdir=" + str(workdir), *config_flags(config)]


def _two_processes(config, workdir) -> list[Run]:
    port = _free_port()
    address = f"127.0.0.1:{port}"
    common = [
        f"--config.distributed.coordinator_address={address}",
        f"--config.distributed.coordinator_bind_address={address}",  # loopback only, not [::]
        "--config.distributed.num_processes=2",
        "--config.distributed.initialization_timeout_s=120",
        "--config.distributed.heartbeat_timeout_s=60",
        "--config.distributed.shutdown_timeout_s=60",
    ]
    return [
        Run(_args(config, workdir) + common + [f"--config.distributed.process_id={i}"], _env(4, num_processes=2))
        for i in range(2)
    ]


def _last_checkpoint(workdir):
    """(step, params) of the latest checkpoint, onto one device whatever the processes that saved it."""
    path = os.path.join(workdir, "checkpoints", "last")
    with ocp.CheckpointManager(path) as manager:
        step = manager.latest_step()
        tree = ocp.StandardCheckpointer().metadata(os.path.join(path, str(step), "state")).item_metadata
        device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
        target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), tree)
        restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target)))
    return step, restored["state"]["params"]


def _final_confusion(workdir):
    with open(os.path.join(workdir, "final_metrics.json")) as f:
        return np.asarray(json.load(f)["last"]["confusion"])


# ------------------------------------------------------------------------------------ unit
def test_initialize_arguments_from_config_then_environment():
    import ml_collections

    from grace_jax.configs import base

    cfg = base.get_config().distributed
    assert not distributed.wanted(cfg, environ={})
    assert distributed.wanted(cfg, environ={"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234"})
    kw = distributed.initialize_kwargs(cfg, environ={"JAX_NUM_PROCESSES": "4", "JAX_PROCESS_ID": "3"})
    assert (kw["coordinator_address"], kw["num_processes"], kw["process_id"]) == (None, 4, 3)
    assert "coordinator_bind_address" not in kw  # jax's default
    cfg = ml_collections.ConfigDict(dict(cfg))
    cfg.enabled, cfg.coordinator_address, cfg.num_processes, cfg.process_id = True, "h:1", 2, 1
    cfg.coordinator_bind_address, cfg.heartbeat_timeout_s = "127.0.0.1:1", 7
    kw = distributed.initialize_kwargs(cfg, environ={"JAX_NUM_PROCESSES": "4", "JAX_PROCESS_ID": "3"})
    assert kw == dict(
        coordinator_address="h:1",
        num_processes=2,
        process_id=1,
        initialization_timeout=300,
        heartbeat_timeout_seconds=7,
        shutdown_timeout_seconds=300,
        coordinator_bind_address="127.0.0.1:1",
    )
    # Nothing given: all None, left to jax's auto-detection (Cloud TPU, SLURM, ...).
    kw = distributed.initialize_kwargs(None, environ={})
    assert (kw["coordinator_address"], kw["num_processes"], kw["process_id"]) == (None, None, None)


def test_batch_rows_follow_the_devices_of_each_process():
    from grace_jax import sharding

    mesh = sharding.make_mesh({"data": -1})
    assert distributed.batch_rows(sharding.batch_sharding(mesh), 16) == (0, 1)  # one process holds all

    # Stand-in for one of two processes: a sharding whose addressable devices hold rows 8..15.
    class Half:
        def addressable_devices_indices_map(self, shape):
            return {d: (slice(8 + 2 * i, 10 + 2 * i),) for i, d in enumerate("abcd")}

    assert distributed.batch_rows(Half(), 16) == (1, 2)

    class Scattered:
        def addressable_devices_indices_map(self, shape):
            return {"a": (slice(0, 2),), "b": (slice(4, 6),)}

    with pytest.raises(ValueError, match="not one aligned contiguous block"):
        distributed.batch_rows(Scattered(), 8)


def test_single_process_barrier_and_compile_are_plain():
    distributed.barrier("nothing to wait for")
    add = jax.jit(lambda x: x + 1)
    together = distributed.CompiledTogether(add, "add")
    assert int(together(1)) == 2 and together._compiled is add  # one process: the jitted function itself


def test_single_process_watcher_turns_sigterm_into_a_flag():
    previous = signal.getsignal(signal.SIGTERM)
    with distributed.PreemptionWatcher() as watcher:
        assert watcher.mechanism == "signal" and not watcher.reached(1)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)
        assert watcher.reached(2)
    assert signal.getsignal(signal.SIGTERM) == previous


def test_config_flags_rebuild_the_tiny_config(tiny_config):
    from ml_collections import config_flags as cf  # noqa: F401  (the parser the flags go through)

    flags = config_flags(tiny_config("/data/x", 6))
    assert "--config.data.dir=/data/x" in flags and "--config.optim.num_train_steps=6" in flags


# ------------------------------------------------------------------------------------ end to end
def _sgd_config(tiny_config, synthfer_dir):
    # The tiny config with SGD instead of its AdamW. Some parameters have a gradient that is exactly 0
    # in exact arithmetic (attention key biases, the CATE scorer's output bias: a softmax ignores them),
    # so what XLA computes for them is rounding noise, which differs at the ulp level with the order of
    # the cross-process sums; Adam divides it by its own size and moves those parameters by +-lr per
    # step (2 processes vs 1: 5.5e-4 on them, <= 1.2e-7 on every other parameter). SGD keeps the noise
    # at its size, so the whole parameter set must agree.
    config = tiny_config(synthfer_dir, 6)
    config.optim.optimizer = "sgd"
    return config


@pytest.fixture(scope="module")
def sgd_one_process(tiny_config, synthfer_dir, tmp_path_factory):
    """(workdir, summary) of the SGD tiny run in this process: 1 process x 8 devices."""
    from grace_jax import train

    workdir = str(tmp_path_factory.mktemp("sgd") / "one")
    return workdir, train.train_and_evaluate(_sgd_config(tiny_config, synthfer_dir), workdir)


@pytest.mark.slow
def test_two_processes_train_like_one_and_stop_together(sgd_one_process, tiny_config, synthfer_dir, tmp_path):
    # 2 processes x 4 devices for 6 steps, with a SIGTERM to process 1 on the way: both stop at one
    # step, save it together and exit 0; the same 2 commands resume and end where 1 process x 8 ends.
    one_workdir, one_summary = sgd_one_process
    config = _sgd_config(tiny_config, synthfer_dir)
    config.train.log_every_steps = 1  # process 0 prints a line per step: the test knows it is mid-run
    workdir = tmp_path / "two"
    start = time.monotonic()
    runs = _two_processes(config, workdir)
    try:
        runs[0].wait_for_line(r"^step 1/6 ", RUN_TIMEOUT_S)
        sent = time.monotonic()
        runs[1].proc.send_signal(signal.SIGTERM)
        assert _run_all(runs, 180) == [0, 0]
        print(f"2 processes: SIGTERM to process 1 -> both exited {time.monotonic() - sent:.1f} s later")
    finally:
        for r in runs:
            r.kill()
    line = runs[0].wait_for_line(r"^Preempted \(SIGTERM\): saved the checkpoint of step \d+", 1)
    stopped = int(re.search(r"step (\d+)", line).group(1))
    assert 1 <= stopped < 6
    assert not any(line.startswith("Preempted (SIGTERM)") for line in runs[1].lines)  # one line, from process 0
    assert _last_checkpoint(str(workdir))[0] == stopped
    # Both took part in the checkpoint: each saved its data iterator's position. (The tiny state's
    # arrays are small and replicated, so their first replica, on process 0, writes them all.)
    assert {p.name for p in (workdir / f"checkpoints/last/{stopped}/data").glob("process_*.json")} == {
        "process_0-of-2.json",
        "process_1-of-2.json",
    }
    again = _two_processes(config, workdir)
    assert _run_all(again, RUN_TIMEOUT_S) == [0, 0]
    print(f"2 processes x 4 devices, 6 steps in two runs: {time.monotonic() - start:.1f} s")
    assert f"at step {stopped}." in again[0].output(last=None)
    step_one, params_one = _last_checkpoint(one_workdir)
    step_two, params_two = _last_checkpoint(str(workdir))
    assert step_one == step_two == 6
    diffs = [
        float(np.max(np.abs(np.asarray(a) - np.asarray(b)), initial=0.0))
        for a, b in zip(jax.tree.leaves(params_one), jax.tree.leaves(params_two), strict=True)
    ]
    print(f"max |params(2 processes) - params(1 process)| = {max(diffs):.3g}")
    assert max(diffs) <= 1e-6
    np.testing.assert_array_equal(_final_confusion(str(workdir)), np.asarray(one_summary["confusion"]))
    assert _final_confusion(str(workdir)).sum() == 20  # every test clip once across the two processes
    # Only process 0 wrote metrics: one line per step, across the stop and the resume.
    with open(workdir / "metrics.jsonl") as f:
        assert [r["step"] for r in map(json.loads, f) if r["split"] == "train"] == [1, 2, 3, 4, 5, 6]
    assert "eval step 6" not in again[1].output(last=None)


@pytest.mark.slow
def test_sigterm_saves_the_step_exits_0_and_the_restart_matches(tiny_run, tiny_config, synthfer_dir, tmp_path):
    straight, _ = tiny_run  # the uninterrupted 6-step run, same devices
    config = tiny_config(synthfer_dir, 6)
    config.train.log_every_steps = 1  # a progress line after each step: the test knows it is mid-run
    workdir = tmp_path / "preempted"
    run = Run(_args(config, workdir), _env(8))
    try:
        run.wait_for_line(r"^step 1/6 ", RUN_TIMEOUT_S)
        sent = time.monotonic()
        run.proc.send_signal(signal.SIGTERM)
        assert run.wait(120) == 0, run.output()
        exited = time.monotonic()
    finally:
        run.kill()
    line = run.wait_for_line(r"^Preempted \(SIGTERM\): saved the checkpoint of step \d+", 1)
    said = run.times[run.lines.index(line)]
    print(f"SIGTERM -> 'Preempted' line {said - sent:.2f} s, -> exit {exited - sent:.2f} s")
    stopped = int(re.search(r"step (\d+)", line).group(1))
    assert 1 <= stopped < 6 and f"step {stopped + 1}/6" not in run.output(last=None)
    step, _ = _last_checkpoint(str(workdir))
    assert step == stopped
    assert not (workdir / "final_metrics.json").exists()
    again = Run(_args(config, workdir), _env(8))
    assert _run_all([again], RUN_TIMEOUT_S) == [0], again.output()
    assert f"Resumed from {workdir}/checkpoints at step {stopped}." in again.output(last=None)
    step_a, params_a = _last_checkpoint(straight)
    step_b, params_b = _last_checkpoint(str(workdir))
    assert step_a == step_b == 6
    for a, b in zip(jax.tree.leaves(params_a), jax.tree.leaves(params_b), strict=True):
        np.testing.assert_array_equal(a, b)
