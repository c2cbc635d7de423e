"""How a training run stops when it does not finish: what it says and what it leaves.

Every stop is orderly (grace_jax/train.py): the save in flight is waited for, the workdir lock is
released, and one line says which step is safely saved and that the same command resumes from it.

  SIGTERM (preemption)   the step just finished saved; "Preempted (SIGTERM): ..."; exit 0
  SIGINT (Ctrl-C)        the step just finished saved; "Interrupted (Ctrl-C): ..."; exit 130
                         (a second Ctrl-C stops without waiting for the step)
  either, in start-up    nothing new to save; the line names the newest checkpoint, or says there is none
  a failure in the loop  the traceback, then the line as its note; exit 1
  divergence             `DivergedError` (a user error, one line): a non-finite loss, gradient norm or
                         state stops the run before anything non-finite is saved as `last` or `best`
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from absl import logging

from grace_jax.infra import cli, distributed, errors, paths
from grace_jax.models import grace

EXIT_CODES = {"SIGTERM": 0, "SIGINT": 130}
_HOW = {"SIGTERM": "Preempted (SIGTERM)", "SIGINT": "Interrupted (Ctrl-C)"}


class DivergedError(errors.UserError):
    """The loss, gradient norm or train state became non-finite; `diverged` makes it."""

    remade = None  # () -> the same error, naming the checkpoints complete by then


class Interrupted(KeyboardInterrupt):
    """Ctrl-C stopped the run in order; its line (the argument) has been printed."""


def saved_step(ckpt_dir: str) -> int | None:
    """The newest complete step under `<ckpt_dir>/last`, None if there is none.

    A step folder is complete once orbax renamed it from its temporary name (locally) or wrote its
    commit_success.txt (Cloud Storage, where nothing is renamed)."""
    last = paths.join(ckpt_dir, "last")
    try:
        names = paths.listdir(last) if paths.exists(last) else []
    except OSError:
        return None
    steps = [int(n) for n in names if n.isdigit()]
    if paths.is_uri(last):
        steps = [s for s in steps if paths.exists(paths.join(last, str(s), "commit_success.txt"))]
    return max(steps, default=None)


def where_it_resumes(ckpt_dir: str, step: int | None) -> str:
    if step is None:
        return "no checkpoint was saved yet; the same command starts the run afresh."
    return f"the checkpoint of step {step} in {ckpt_dir} is complete; run the same command again to resume from it."


def stop_line(signame: str, ckpt_dir: str, *, saved: int | None, during_start_up: bool) -> str:
    """The one line of a stop by `signame`: `saved` is the step it saved (in the loop; None when it
    saved none) or the newest complete one (in start-up)."""
    how = _HOW[signame]
    if during_start_up:
        return f"{how} during start-up: {where_it_resumes(ckpt_dir, saved)}"
    if saved is None:  # Ctrl-C to one of several processes: no save of its own
        return f"{how}: {where_it_resumes(ckpt_dir, saved_step(ckpt_dir))}"
    return f"{how}: saved the checkpoint of step {saved} to {ckpt_dir}; run the same command again to resume."


def failure_note(step: int, ckpt_dir: str) -> str:
    """The line after a failure's traceback."""
    return f"Training stopped at step {step} by the error above; {where_it_resumes(ckpt_dir, saved_step(ckpt_dir))}"


def say(result: dict, workdir: str) -> dict:
    """`train_and_evaluate`'s result; for a run a signal stopped ({"stopped": name, "step": the step
    saved or None, "start_up": whether it stopped there}), its line, said once the lock is released:
    then {"preempted": True, "step": ...} for SIGTERM, stops.Interrupted raised for Ctrl-C."""
    signame = result.pop("stopped", None)
    if signame is None:
        return result
    ckpt_dir = paths.join(workdir, "checkpoints")
    in_start_up = result["start_up"]
    saved = saved_step(ckpt_dir) if in_start_up else result["step"]
    line = stop_line(signame, ckpt_dir, saved=saved, during_start_up=in_start_up)
    if jax.process_index() == 0:
        print(line, flush=True)
    else:
        logging.info("%s", line)
    if signame == "SIGINT":
        raise Interrupted(line)
    return {"preempted": True, "step": saved}


def after_failure(run, error: BaseException) -> BaseException:
    """After an exception in the trainer's loop (`run`: its train_iter, ckpt, writer and step): the
    save in flight finished (it would otherwise be cut off at interpreter exit, leaving only a
    temporary folder), the writer closed, and the traceback ended by a line saying where the same
    command resumes. A second Ctrl-C (KeyboardInterrupt) does not wait for the save. Returns the
    error to raise: `error`, or a DivergedError that names the checkpoint the wait completed."""
    ckpt_dir = run.ckpt.directory
    if isinstance(error, distributed.Stopped):  # in start-up (the first step's compile): nothing in flight
        run.train_iter.close()
        return error
    if isinstance(error, KeyboardInterrupt):
        error.add_note(
            f"Interrupted (Ctrl-C) twice: stopped without waiting; {where_it_resumes(ckpt_dir, saved_step(ckpt_dir))}"
        )
        return error
    run.train_iter.close()
    try:
        run.ckpt.wait()
        run.ckpt.close()
    except Exception as e:  # noqa: BLE001 -- the first error is the one to report
        logging.warning("while stopping, the checkpoint save failed too: %s", e)
    run.writer.close()
    if isinstance(error, DivergedError) and error.remade is not None:
        return error.remade()
    if not isinstance(error, errors.UserError):
        error.add_note(failure_note(run.step, ckpt_dir))
    return error


# ------------------------------------------------------------------------------------ divergence
_WATCHED = ("loss", "grad_norm")


def first_non_finite(steps_metrics: list[tuple[int, dict]]) -> tuple[int, dict] | None:
    """(step, {name: value}) of the first step whose loss or gradient norm is not finite."""
    for step, m in steps_metrics:
        values = {k: float(m[k]) for k in _WATCHED if k in m}
        if not all(map(math.isfinite, values.values())):
            return step, values
    return None


def check_finite(unchecked: list[tuple[int, dict]], run) -> None:
    """Raises DivergedError if a step's loss or gradient norm is not finite, unless the step was
    skipped (train.max_nonfinite_steps; `run.skipped` counts them) and the count allows it. Empties
    `unchecked`. `run`: the trainer's run (its config, ckpt and skipped)."""
    most = run.config.train.get("max_nonfinite_steps", 0)
    for step, m in unchecked:
        bad = first_non_finite([(step, m)])
        if bad is None:
            continue
        what = ", ".join(f"the {k.replace('_', ' ')} is {v}" for k, v in bad[1].items())
        if "skipped" in m and float(m["skipped"]) and len(run.skipped) < most:
            run.skipped.append(step)
            if run.is_main:
                cli.warn(
                    f"step {step}: {what}; skipped, no update applied ({len(run.skipped)} of "
                    f"train.max_nonfinite_steps={most})."
                )
            continue
        unchecked.clear()
        if most:
            what += f" (after {len(run.skipped)} skipped steps, train.max_nonfinite_steps={most})"
        raise diverged(step, what, run.ckpt.directory, run.config)
    unchecked.clear()


def save_checked(run, unchecked: list[tuple[int, dict]], **kwargs) -> None:
    """`run.ckpt.save` of the trainer's state once the steps in `unchecked` and the state itself are
    checked finite (a large update can overflow the parameters with a finite loss and gradient)."""
    check_finite(unchecked, run)
    if not state_is_finite(run.state):
        raise diverged(run.step, "the parameters or optimizer state are not finite", run.ckpt.directory, run.config)
    if "best" not in kwargs:
        kwargs["data_iterator"] = run.train_iter
    run.ckpt.save(run.step, run.state, **kwargs)


@jax.jit
def _all_finite(tree) -> jax.Array:
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.inexact)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.asarray(True)


def state_is_finite(state: dict) -> bool:
    """Whether the trained parameters and the optimizer state hold only finite numbers (the frozen
    parameters never change)."""
    return bool(_all_finite({"params": state["params"], "opt_state": state["opt_state"]}))


def diverged(step: int, what: str, ckpt_dir: str, config) -> DivergedError:
    """The error for a run whose `what` ("the loss is nan", ...) at `step` is not finite."""
    saved = saved_step(ckpt_dir)
    good = (
        f"the last good checkpoint is step {saved} in {ckpt_dir} (nothing non-finite was saved)"
        if saved is not None
        else "no checkpoint was saved before it"
    )
    fixes = ["a lower learning rate (the rates of optim.groups)"]
    warmup = config.optim.get("warmup_steps", 0)
    fixes.append(f"a longer warmup (optim.warmup_steps, now {warmup})" if warmup else "optim.warmup_steps > 0")
    dtype = str(config.model.clip.get("dtype", "float32"))
    computed = jnp.dtype(grace.compute_dtype(dtype)).name
    if computed in ("bfloat16", "float16"):
        fixes.append(f"model.clip.dtype=float32 (now {dtype}: {computed})")
    if not config.train.get("max_nonfinite_steps", 0):
        fixes.append("train.max_nonfinite_steps > 0 to skip a rare non-finite step")
    error = DivergedError(
        f"training diverged at step {step}: {what}; {good}. Usual fixes: {', '.join(fixes)}. The "
        "optimizer settings are part of the checkpoint, so train the fixed config into a new --workdir."
    )
    error.remade = lambda: diverged(step, what, ckpt_dir, config)
    return error
