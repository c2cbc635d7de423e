"""launch/: `--dry_run` prints exactly the commands a real run executes. The real runs here go to
stand-ins for gcloud, git, srun, sbatch and tensorboard on PATH that record their argv."""

from __future__ import annotations

import json
import os
import shlex
import stat
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
STAND_IN = f"""#!{sys.executable}
import json, os, sys
with open(os.environ["LAUNCH_RECORD"], "a") as f:
    f.write(json.dumps({{"argv": [os.path.basename(sys.argv[0])] + sys.argv[1:],
                        "JAX_LOCAL_DEVICE_IDS": os.environ.get("JAX_LOCAL_DEVICE_IDS")}}) + "\\n")
if "describe" in sys.argv:
    print("ACTIVE")
"""


@pytest.fixture
def stand_ins(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("gcloud", "git", "srun", "sbatch", "tensorboard"):
        path = bin_dir / name
        path.write_text(STAND_IN)
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
    record = tmp_path / "record.jsonl"
    # launch/ is not part of the installed package: it runs from a checkout (here: PYTHONPATH).
    env = dict(
        os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", LAUNCH_RECORD=str(record), PYTHONPATH=str(REPO)
    )
    return env, record


def _launch(module, args, env, cwd):
    out = subprocess.run(
        [sys.executable, "-m", module, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def _recorded(record):
    if not record.exists():
        return []
    return [json.loads(line) for line in record.read_text().splitlines()]


TPU_ARGS = [
    "--project=my-proj",
    "--zone=us-east5-a",
    "--name=grace-test",
    "--accelerator_type=v5litepod-16",
    "--workdir=gs://bucket/runs/f39",
    "--data_dir=gs://bucket/shards/f39",
    "--config=configs/ferv39k.py",
    "--spot",
    "--mount_bucket=bucket",
    "--steps=create,install,mount,train,tensorboard,delete",
    "--",
    "--config.optim.batch_size=64",
]


def test_tpu_dry_run_prints_what_the_real_run_runs(stand_ins, tmp_path):
    env, record = stand_ins
    printed = _launch("launch.tpu", TPU_ARGS + [], env, REPO).splitlines()
    dry = _launch("launch.tpu", ["--dry_run", *TPU_ARGS], env, REPO).splitlines()
    ran = [shlex.join(r["argv"]) for r in _recorded(record)]
    assert not any("--dry_run" in line for line in ran)
    # The real run prints each command before it runs it (and the state it waited for).
    assert [line for line in printed if not line.startswith("  state:")] == dry == ran
    assert "  state: ACTIVE" in printed
    commands = [shlex.split(line) for line in dry]
    assert commands[0][:6] == ["gcloud", "compute", "tpus", "queued-resources", "create", "grace-test"]
    assert "--accelerator-type=v5litepod-16" in commands[0] and "--spot" in commands[0]
    assert "--runtime-version=v2-alpha-tpuv5-lite" in commands[0]
    assert commands[2][:3] == ["git", "-C", str(REPO)] and commands[2][3] == "archive"
    ssh = [c for c in commands if c[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh"]]
    assert len(ssh) == 3 and all("--worker=all" in c for c in ssh)
    train = ssh[-1][-1]
    assert train.startswith("--command=cd ~/grace_jax && . ~/venv/bin/activate && python -m grace_jax.main ")
    trainer = shlex.split(train.split("&& ", 2)[2])
    assert trainer == [
        "python",
        "-m",
        "grace_jax.main",
        "--config=configs/ferv39k.py",
        "--workdir=gs://bucket/runs/f39",
        "--config.distributed.enabled=True",
        "--config.data.dir=gs://bucket/shards/f39",
        "--config.optim.batch_size=64",
    ]
    assert "gcsfuse --implicit-dirs" in ssh[1][-1] and "--cache-dir=" in ssh[1][-1]
    assert commands[-2] == ["tensorboard", "--logdir=gs://bucket/runs/f39/tensorboard"]
    assert commands[-1][:5] == ["gcloud", "compute", "tpus", "queued-resources", "delete"]


def test_tpu_flags_are_checked(stand_ins):
    env, _ = stand_ins
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "launch.tpu",
            "--project=p",
            "--zone=z",
            "--name=n",
            "--workdir=gs://b/r",
            "--steps=create,fly",
        ],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2 and "unknown steps ['fly']" in out.stderr
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "launch.tpu",
            "--project=p",
            "--zone=z",
            "--name=n",
            "--workdir=gs://b/r",
            "--accelerator_type=v9-8",
            "--dry_run",
        ],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2 and "no default --runtime_version for v9-8" in out.stderr


SLURM_ARGS = [
    "--nodes=4",
    "--gpus_per_node=8",
    "--partition=gpu",
    "--time=24:00:00",
    "--workdir=/shared/runs/f39",
    "--data_dir=/shared/shards/f39",
    "--",
    "--config.seed=3",
]


def test_slurm_srun_dry_run_and_real_run(stand_ins, tmp_path):
    env, record = stand_ins
    dry = _launch("launch.slurm", ["--dry_run", *SLURM_ARGS], env, tmp_path).splitlines()
    assert len(dry) == 1
    command = shlex.split(dry[0])
    assert command[:3] == ["env", "JAX_LOCAL_DEVICE_IDS=0,1,2,3,4,5,6,7", "srun"]
    assert {"--nodes=4", "--ntasks-per-node=1", "--gpus-per-node=8", "--partition=gpu"} <= set(command)
    assert command[command.index("python") :] == [
        "python",
        "-m",
        "grace_jax.main",
        "--config=configs/ferv39k.py",
        "--workdir=/shared/runs/f39",
        "--config.distributed.enabled=True",
        "--config.data.dir=/shared/shards/f39",
        "--config.seed=3",
    ]
    assert _launch("launch.slurm", SLURM_ARGS, env, tmp_path).splitlines() == dry
    (ran,) = _recorded(record)  # `env` ran the stand-in srun with the device ids set
    assert ran["argv"] == command[2:] and ran["JAX_LOCAL_DEVICE_IDS"] == "0,1,2,3,4,5,6,7"


def test_slurm_sbatch_writes_the_printed_script(stand_ins, tmp_path):
    env, record = stand_ins
    args = ["--sbatch", "--script=job.sbatch", *SLURM_ARGS]
    dry = _launch("launch.slurm", ["--dry_run", *args], env, tmp_path)
    assert not (tmp_path / "job.sbatch").exists() and not _recorded(record)
    heredoc, submit = dry.rsplit("EOF\n", 1)[0], dry.rsplit("EOF\n", 1)[1]
    assert heredoc.startswith("cat > job.sbatch <<'EOF'\n") and submit == "sbatch job.sbatch\n"
    _launch("launch.slurm", args, env, tmp_path)
    script = (tmp_path / "job.sbatch").read_text()
    assert script == heredoc.split("\n", 1)[1]
    assert "#SBATCH --requeue\n" in script and "#SBATCH --signal=TERM@120\n" in script
    assert "export JAX_LOCAL_DEVICE_IDS=0,1,2,3,4,5,6,7\n" in script
    assert script.splitlines()[-1].startswith("srun --kill-on-bad-exit=1 python -m grace_jax.main ")
    assert [r["argv"] for r in _recorded(record)] == [["sbatch", "job.sbatch"]]
