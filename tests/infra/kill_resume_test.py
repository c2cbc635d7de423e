"""A trainer killed with SIGKILL (no handler runs, the lock stays, a checkpoint save may be cut off)
and restarted with the same command ends exactly like an uninterrupted run: the same per-step
losses, the same parameters and the same final confusion matrix as `tiny_run`."""

from __future__ import annotations

import json
import os
import re
import time

import jax
import numpy as np
import pytest
from distributed_test import RUN_TIMEOUT_S, Run, _args, _env, _final_confusion, _last_checkpoint

# Kills training subprocesses at many moments and restarts them.
pytestmark = pytest.mark.slow

TERMS = ("loss", "ce", "ot_ce", "align", "accuracy", "grad_norm", "ot_converged", "ot_iterations")


def _wait_for(condition, run: Run, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline and run.proc.poll() is None, run.output()
        time.sleep(0.05)


def _train_records(workdir) -> dict[int, dict]:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        records = [json.loads(line) for line in f]
    train = [r for r in records if r["split"] == "train"]
    assert len({r["step"] for r in train}) == len(train), "a step logged twice"
    return {r["step"]: r for r in train}


def test_sigkill_at_any_moment_then_restart_matches_the_uninterrupted_run(
    tiny_run, tiny_config, synthfer_dir, tmp_path
):
    straight, summary = tiny_run  # 6 steps, a record every 2 steps (the mean of those 2 steps)
    config = tiny_config(synthfer_dir, 6)
    config.train.log_every_steps = 1  # per-step losses, and a line per step to kill at
    config.train.ckpt_every_steps = 2
    workdir = tmp_path / "killed"
    # 1st kill: once step 2's checkpoint is committed, between two saves. 2nd kill: on the line of
    # the first even step after the resume, as that step's save starts: a cut-off save must be
    # ignored by the restart.
    first = Run(_args(config, workdir), _env(8))
    try:
        first.wait_for_line(r"^step 3/6 ", RUN_TIMEOUT_S)
        _wait_for(lambda: (workdir / "checkpoints" / "last" / "2").is_dir(), first)
        first.proc.kill()
        first.wait(30)
    finally:
        first.kill()
    assert (workdir / "lock.json").exists()  # nothing released it
    second = Run(_args(config, workdir), _env(8))
    try:
        resumed = int(re.search(r"at step (\d+)\.", second.wait_for_line(r"^Resumed from ", RUN_TIMEOUT_S)).group(1))
        assert resumed >= 2
        second.wait_for_line(rf"^step {resumed + 2}/6 ", RUN_TIMEOUT_S)
        second.proc.kill()
        second.wait(30)
    finally:
        second.kill()
    said = second.output(last=None)
    assert "warning: taking over" in said and "no longer runs" in said  # the first trainer's lock
    last = Run(_args(config, workdir), _env(8))
    try:
        assert last.wait(RUN_TIMEOUT_S) == 0, last.output()
    finally:
        last.kill()
    out = last.output(last=None)
    assert "warning: taking over" in out and re.search(rf"Resumed from .* at step ({resumed}|{resumed + 2})\.", out), (
        out
    )
    assert not (workdir / "lock.json").exists()  # released at the end

    ours, theirs = _train_records(str(workdir)), _train_records(straight)
    assert sorted(ours) == [1, 2, 3, 4, 5, 6] and sorted(theirs) == [2, 4, 6]
    for step, record in theirs.items():  # the trainer logs the mean of the steps since its last line
        for term in TERMS:
            assert float(np.mean([ours[step - 1][term], ours[step][term]])) == record[term], (step, term)
    step_a, params_a = _last_checkpoint(straight)
    step_b, params_b = _last_checkpoint(str(workdir))
    assert step_a == step_b == 6
    for a, b in zip(jax.tree.leaves(params_a), jax.tree.leaves(params_b), strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(_final_confusion(str(workdir)), np.asarray(summary["confusion"]))
