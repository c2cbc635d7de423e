"""`python -m grace_jax.doctor`: the README's quick self-check on CPU, its one-line errors, and its
largest-batch search. The peak table and MFU arithmetic it reports are in tests/infra/machine_test.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from grace_jax import doctor

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(*args: str, cwd: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    # 2 fake devices, not the suite's 8: the mesh path is exercised, at a quarter of the compute.
    env["XLA_FLAGS"] = " ".join(
        [f for f in env.get("XLA_FLAGS", "").split() if "device_count" not in f]
        + ["--xla_force_host_platform_device_count=2"]
    )
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [_REPO, env.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-m", "grace_jax.doctor", *args], cwd=cwd, env=env, capture_output=True, text=True
    )


@pytest.mark.slow
def test_quick_self_check_on_cpu(tmp_path):
    out = tmp_path / "report.json"
    run = _run("--quick", "--max_batch_search", f"--out={out}", cwd=str(tmp_path))
    assert run.returncode == 0, run.stdout + run.stderr
    lines = run.stdout.strip().splitlines()
    assert len(lines) <= 40, run.stdout  # one screen
    assert lines[-1].startswith("report") and f"{out}: 4 of 4 checks passed" in lines[-1]
    report = json.loads(out.read_text())
    env = report["environment"]
    assert env["versions"]["jax"] and env["versions"]["grace_jax"] and env["versions"]["python"]
    assert env["platform"] == "cpu" and env["local_devices"] == 2
    assert report["checks"] == {"numerics": True, "attention": True, "ot": True, "step": True}
    num = report["numerics"]
    assert num["same_device"] and "both sides are the CPU" in run.stdout
    assert [r["dtype"] for r in num["rows"]] == ["float32", "bfloat16"]
    assert num["rows"][0]["rel"] == {"loss": 0.0, "grad_norm": 0.0}  # the same program on the same CPU
    assert num["rows"][1]["fp32_state_and_loss"] is True
    assert report["attention"]["model_call"] == "xla" and "not tried" in report["attention"]["cudnn"]
    step = report["step"]
    assert step["variant"] == "tiny" and step["devices"] == 2 and step["global_batch"] == 4
    assert step["flops_per_step"] > 0 and step["step_s"] > 0 and step["clips_per_s"] > 0
    assert step["estimate_bytes"] > 0 and step["measured_peak_bytes"] is None  # XLA:CPU reports none
    # An unknown chip (the CPU): no MFU, a note saying so, and the achieved rate.
    assert step["mfu"] is None and "achieved FLOP/s only" in step["mfu_note"]
    assert step["achieved_tflops"] == pytest.approx(step["flops_per_step"] / step["step_s"] / 1e12)
    assert set(step["remat_check"]) == {"true", "false"}
    assert "no memory limit" in step["largest_batch"]["note"]


@pytest.mark.slow
@pytest.mark.parametrize(
    "args, message",
    [
        (["--variant=ViT-X/9"], "--variant=ViT-X/9: choose one of"),
        (["--frames=0"], "--frames=0: must be >= 1"),
        (["--out=/no/such/folder/d.json"], "the folder /no/such/folder does not exist"),
        (["--dtype=float16"], "float16"),
    ],
)
def test_bad_flags_are_one_line_errors(tmp_path, args, message):
    run = _run(*args, cwd=str(tmp_path))
    assert run.returncode == 2, run.stdout + run.stderr
    assert run.stderr.strip().count("\n") == 0 and message in run.stderr, run.stderr
    assert run.stderr.startswith("grace_jax.doctor: error: ")
    assert not os.listdir(tmp_path)  # no report for a run that never started


def test_largest_batch_doubles_until_the_estimate_passes_90_percent():
    estimate = lambda b: 100 + 10 * b  # bytes  # noqa: E731
    # limit 400: 90% is 360; 1..16 fit (260 at 16), 32 (420) does not.
    found = doctor.largest_batch(estimate, 400, max_batch=256)
    assert found["largest"] == 16 and list(found["estimates"]) == [1, 2, 4, 8, 16, 32] and not found["capped"]
    found = doctor.largest_batch(estimate, 10**6, max_batch=8)  # everything fits: stops at the cap
    assert found["largest"] == 8 and found["capped"]
    assert doctor.largest_batch(estimate, 100, max_batch=8)["largest"] is None  # not even 1 fits
