"""Several processes, one job: `jax.distributed` start-up, each process's rows of a batch, preemption.

`initialize(config.distributed)` runs first thing in `train.train_and_evaluate`, before anything
starts jax's backend (jax refuses to initialize afterwards). It calls `jax.distributed.initialize`
when the job is distributed, that is when any of these holds:

  config.distributed.enabled            True (jax then auto-detects Cloud TPU, SLURM, Open MPI, GKE)
  config.distributed.coordinator_address "host:port" of process 0 (env: JAX_COORDINATOR_ADDRESS)
  config.distributed.num_processes       > 0 (env: JAX_NUM_PROCESSES)

The process id comes from `config.distributed.process_id` (>= 0) or the env var JAX_PROCESS_ID;
what is still unset is left to jax's cluster auto-detection. A plain single-process run calls
nothing.

Each process feeds the rows of every global batch that its devices hold (`batch_rows`, used with
`input_pipeline.BatchSliceSampler`). `CompiledTogether` compiles a step on every process before any
runs it and `barrier` waits on the coordination service, not on a device collective: XLA:CPU's gloo
gives a late peer only 30 s at the first collective.

Preemption: `PreemptionWatcher.reached(step)` is asked after every training step on every process and
is True on all of them at the same step once any of them got SIGTERM. In a distributed job that is
jax's preemption sync point (`jax.distributed.initialize` installs jax's own C++ SIGTERM handler and
sync manager; a Python handler would disable it); in a single process that never initialized
`jax.distributed`, a Python SIGTERM handler that sets a flag. The trainer then saves a checkpoint and
returns normally, so the process exits 0 and the same command resumes.

Ctrl-C (SIGINT) is watched the same way on each process for itself. During the trainer's start-up
(`PreemptionWatcher.raising`) either signal raises `Stopped` at once, so a long restore or model
build does not keep a stopped job (and its workdir lock) waiting; with jax's preemption service,
a SIGTERM during start-up stops the run after its first step instead.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import jax
from absl import logging

from grace_jax.infra import aftermath

ENV_COORDINATOR = "JAX_COORDINATOR_ADDRESS"  # read by jax itself too
ENV_NUM_PROCESSES = "JAX_NUM_PROCESSES"  # ours: jax reads no such variable
ENV_PROCESS_ID = "JAX_PROCESS_ID"  # ours


def _get(cfg, name, default):
    return cfg.get(name, default) if cfg is not None else default


def wanted(cfg, environ=None) -> bool:
    """Whether config or environment ask for a distributed job."""
    environ = os.environ if environ is None else environ
    return bool(
        _get(cfg, "enabled", False)
        or _get(cfg, "coordinator_address", "")
        or _get(cfg, "num_processes", 0) > 0
        or environ.get(ENV_COORDINATOR)
        or environ.get(ENV_NUM_PROCESSES)
    )


def initialize_kwargs(cfg, environ=None) -> dict:
    """The arguments for `jax.distributed.initialize`; None leaves a value to jax's auto-detection."""
    environ = os.environ if environ is None else environ
    address = _get(cfg, "coordinator_address", "") or environ.get(ENV_COORDINATOR) or None
    num = _get(cfg, "num_processes", 0)
    if num <= 0 and environ.get(ENV_NUM_PROCESSES):
        num = int(environ[ENV_NUM_PROCESSES])
    pid = _get(cfg, "process_id", -1)
    if pid < 0 and environ.get(ENV_PROCESS_ID):
        pid = int(environ[ENV_PROCESS_ID])
    kwargs = dict(
        coordinator_address=address,
        num_processes=num if num > 0 else None,
        process_id=pid if pid >= 0 else None,
        initialization_timeout=int(_get(cfg, "initialization_timeout_s", 300)),
        heartbeat_timeout_seconds=int(_get(cfg, "heartbeat_timeout_s", 100)),
        shutdown_timeout_seconds=int(_get(cfg, "shutdown_timeout_s", 300)),
    )
    bind = _get(cfg, "coordinator_bind_address", "")
    if bind:
        kwargs["coordinator_bind_address"] = bind
    return kwargs


def initialize(cfg) -> bool:
    """Starts `jax.distributed` if the job is distributed (see the module doc); returns whether it is.

    Must run before anything starts jax's backend. Calling it again (or after the caller initialized
    `jax.distributed` itself) does nothing.
    """
    if jax.distributed.is_initialized():
        return True
    if not wanted(cfg):
        return False
    collectives = _get(cfg, "cpu_collectives", "gloo")
    if collectives:  # only XLA:CPU reads it; without it cross-process CPU computations fail
        jax.config.update("jax_cpu_collectives_implementation", collectives)
    kwargs = initialize_kwargs(cfg)
    try:
        jax.distributed.initialize(**kwargs)
    except ValueError as e:
        from grace_jax.infra import errors

        raise errors.ConfigError(
            f"jax.distributed.initialize: {e}. Outside Cloud TPU/SLURM/Open MPI/GKE (which jax "
            f"detects), set config.distributed.coordinator_address, num_processes and process_id "
            f"(or {ENV_COORDINATOR}, {ENV_NUM_PROCESSES}, {ENV_PROCESS_ID})."
        ) from e
    logging.info(
        "jax.distributed: process %d of %d, %d local of %d devices",
        jax.process_index(),
        jax.process_count(),
        jax.local_device_count(),
        jax.device_count(),
    )
    return True


def batch_rows(batch_sharding: jax.sharding.Sharding, global_batch_size: int) -> tuple[int, int]:
    """(block index, block count): this process feeds rows [index * n, (index + 1) * n) of every
    global batch, n = global_batch_size / count, as its devices hold them under `batch_sharding`.

    Processes whose devices hold the same rows (a batch replicated across them) get the same block.
    """
    indices = batch_sharding.addressable_devices_indices_map((global_batch_size,))
    rows = set()
    for index in indices.values():
        start, stop, _ = index[0].indices(global_batch_size)
        rows.update(range(start, stop))
    lo, hi = min(rows), max(rows) + 1
    size = hi - lo
    if len(rows) != size or global_batch_size % size or lo % size:
        raise ValueError(
            f"process {jax.process_index()} holds rows {sorted(rows)} of a batch of "
            f"{global_batch_size}: not one aligned contiguous block; use a mesh whose batch axes "
            "give each process its own block of rows."
        )
    return lo // size, global_batch_size // size


_barriers = 0


def barrier(name: str, timeout_s: float = 3600.0) -> None:
    """Waits until every process gets here; does nothing in a single process.

    The coordination service's barrier, not a device collective: XLA:CPU's gloo gives a peer only 30 s
    to turn up for the first collective (a process still compiling or building data that much longer
    than the others kills the job), and jax's `multihost_utils.sync_global_devices` is one.
    """
    global _barriers
    if jax.process_count() == 1:
        return
    from jax._src import distributed as jax_distributed

    _barriers += 1  # every process calls the same barriers in the same order
    jax_distributed.global_state.client.wait_at_barrier(f"grace_jax/{_barriers}/{name}", int(timeout_s * 1000))


def on_process_0(name: str, fn, timeout_s: float = 600.0):
    """`fn()` on process 0 only (its result there, None elsewhere); the other processes wait for it
    and, if it raised a user error, raise one with the same message, so every process of the job
    stops with the one line that explains it. A single process just calls `fn`."""
    from grace_jax.infra import errors

    if jax.process_count() == 1:
        return fn()
    from jax._src import distributed as jax_distributed

    client = jax_distributed.global_state.client
    key = f"grace_jax/on_process_0/{name}"
    if jax.process_index() == 0:
        try:
            result = fn()
        except errors.UserError as e:
            client.key_value_set(key, f"user_error\n{e}")
            raise
        except BaseException as e:
            client.key_value_set(key, f"error\n{type(e).__name__}: {e}")
            raise
        client.key_value_set(key, "ok\n")
        return result
    status, _, message = client.blocking_key_value_get(key, int(timeout_s * 1000)).partition("\n")
    if status == "user_error":
        raise errors.UserError(message)
    if status != "ok":
        raise RuntimeError(f"process 0 failed at {name!r}: {message}")
    return None


class CompiledTogether:
    """A jitted function that, with several processes, is compiled for its first call's arguments on
    every process and run only once all have compiled it (`barrier`); later calls run that executable.

    The arguments' shapes and shardings must not change between calls (the trainer's batches are
    padded to one shape). A single process calls the jitted function as it is.
    """

    def __init__(self, jitted, name: str, check=None):
        """`check(compiled, args)`, when given, sees the compiled executable before its first run
        (the trainer's memory check) and may raise; the step is then compiled ahead on one process
        too."""
        self._jitted = jitted
        self._name = name
        self._compiled = None
        self._check = check

    def __call__(self, *args):
        if self._compiled is None:
            if jax.process_count() > 1 or self._check is not None:
                start = time.perf_counter()
                compiled = self._jitted.lower(*args).compile()
                if self._check is not None:
                    self._check(compiled, args)
                if jax.process_count() > 1:
                    logging.info(
                        "%s compiled in %.1f s; waiting for the other processes",
                        self._name,
                        time.perf_counter() - start,
                    )
                    barrier(f"compiled {self._name}")
                self._compiled = compiled
            else:
                self._compiled = self._jitted
        return self._compiled(*args)


def _is_stopped(error: BaseException) -> bool:
    return isinstance(error, Stopped)


class Stopped(BaseException):
    """SIGTERM or SIGINT during start-up (`PreemptionWatcher.raising`), where no step can be finished
    first. A BaseException, as KeyboardInterrupt is: no `except Exception` on the way swallows it."""

    def __init__(self, signame: str):
        super().__init__(signame)
        self.signame = signame  # "SIGTERM" or "SIGINT"


class PreemptionWatcher:
    """`reached(step)`: True once, at the same step on every process, after a SIGTERM to any of them;
    or, on this process, after a SIGINT (Ctrl-C). `stop_signal` then says which ("SIGTERM"/"SIGINT").

    Use as a context manager around the run (it restores the previous handlers). While `raising` is
    set (the trainer's start-up: restore, model build, the first step's compile), a signal handled here raises `Stopped` at
    once instead; a signal that came while it was off raises when it is set. A second Ctrl-C raises
    KeyboardInterrupt: stop now, without waiting for the step.
    """

    def __init__(self):
        self.signal_received = False  # SIGTERM, through grace_jax's handler
        self.sigint_received = False
        self._raising = False
        self._handlers = {}  # signal number -> the handler it replaced
        self._jax = False
        if jax.distributed.is_initialized():
            from jax._src import distributed as jax_distributed  # the sync manager has no public getter

            self._jax = jax_distributed.global_state.preemption_sync_manager is not None
            if not self._jax and jax.process_count() > 1:
                logging.warning("jax_enable_preemption_service is off: SIGTERM will not stop training cleanly.")
        if threading.current_thread() is not threading.main_thread():
            return
        # With jax's preemption service, SIGTERM is jax's (its C++ handler and the sync point); a
        # Python handler would replace it. Without it, several processes cannot agree on a step.
        if not self._jax and jax.process_count() == 1:
            self._handlers[signal.SIGTERM] = signal.signal(signal.SIGTERM, self._on_signal)
        self._handlers[signal.SIGINT] = signal.signal(signal.SIGINT, self._on_signal)
        # A signal can land while Python runs a callback it cannot raise from (a gc callback, a
        # __del__): Stopped is then printed as unraisable and lost. The flag set above still stops
        # start-up (`start_up_over`), so that report is an echo.
        aftermath.drop_when(_is_stopped)

    @property
    def mechanism(self) -> str:
        """ "jax" (jax's preemption sync point), "signal" (grace_jax's SIGTERM handler) or "none"."""
        return "jax" if self._jax else ("signal" if signal.SIGTERM in self._handlers else "none")

    @property
    def stop_signal(self) -> str | None:
        """The signal that stops the run: "SIGINT" if Ctrl-C came, else "SIGTERM" once one did."""
        if self.sigint_received:
            return "SIGINT"
        return "SIGTERM" if self.signal_received else None

    def _on_signal(self, signum, frame):
        del frame
        if signum == signal.SIGINT:
            if self.sigint_received:  # the second Ctrl-C: out now
                raise KeyboardInterrupt
            self.sigint_received = True
        else:
            self.signal_received = True
        if self._raising:
            raise Stopped(signal.Signals(signum).name)
        # otherwise only a flag: the loop saves and stops after the step

    @property
    def raising(self) -> bool:
        return self._raising

    @raising.setter
    def raising(self, on: bool) -> None:
        self._raising = bool(on)
        if on and self.stop_signal:
            raise Stopped(self.stop_signal)

    def start_up_over(self) -> None:
        """Turns `raising` off for good (the first step is compiled and dispatched). A signal that came
        while it was on but whose `Stopped` Python could not raise (see __init__) stops start-up here."""
        was, self._raising = self._raising, False
        if was and self.stop_signal:
            raise Stopped(self.stop_signal)

    def reached(self, step: int) -> bool:
        if self.sigint_received:
            return True
        if self._jax:
            from jax.experimental import multihost_utils

            self.signal_received = bool(multihost_utils.reached_preemption_sync_point(int(step)))
        return self.signal_received

    def close(self) -> None:
        self._raising = False
        for signum, previous in self._handlers.items():
            signal.signal(signum, signal.SIG_DFL if previous is None else previous)
        self._handlers = {}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
