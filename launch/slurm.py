r"""Multi-node GPU recipe for SLURM: one training process per host, each driving all the host's GPUs.

  python -m launch.slurm --nodes=4 --gpus_per_node=8 --partition=gpu --time=24:00:00 \
      --workdir=/shared/runs/ferv39k --data_dir=/shared/shards/ferv39k --config=configs/ferv39k.py \
      --dry_run -- --config.optim.batch_size=256

Runs (or, with --dry_run, prints) one command:
  env JAX_LOCAL_DEVICE_IDS=0,...,G-1 srun --nodes=N --ntasks-per-node=1 --gpus-per-node=G ... \
      python -m grace_jax.main --config=... --workdir=... --config.distributed.enabled=True
jax reads SLURM's variables (SLURM_JOB_ID, SLURM_STEP_NODELIST, SLURM_NTASKS, SLURM_PROCID) for the
coordinator (the first node, a port derived from the job id), the number of processes and each one's
id. It would also give each task only GPU SLURM_LOCALID (one process per GPU);
JAX_LOCAL_DEVICE_IDS gives the one process of each host all of them.

Inside an allocation (salloc) run it as is; `--sbatch` instead writes a batch script with the same
srun line (plus --requeue and --signal=TERM@<grace_s>: SIGTERM that many seconds before the time
limit) and submits it with sbatch. The workdir must be on storage every node sees (or gs://).

Preemption: SLURM sends SIGTERM to every task (preemption, scancel, the --signal before the time
limit) and SIGKILL KillWait seconds later (30 by default); the trainer finishes its step, all
processes agree on it, save a checkpoint and exit 0. The same command (or the requeued job) resumes.
"""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from grace_jax.infra import cli
from launch import common


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m launch.slurm", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nodes", type=int, required=True)
    parser.add_argument("--gpus_per_node", type=int, default=8)
    parser.add_argument("--cpus_per_task", type=int, default=0, help="0: SLURM's default")
    parser.add_argument("--partition", default="")
    parser.add_argument("--account", default="")
    parser.add_argument("--time", default="", help="time limit, e.g. 24:00:00")
    parser.add_argument("--job_name", default="grace_jax")
    parser.add_argument("--python", default="python", help="the Python with grace_jax installed, on every node")
    parser.add_argument("--sbatch", action="store_true", help="write a batch script and submit it")
    parser.add_argument("--script", default="grace_jax.sbatch", help="where --sbatch writes the script")
    parser.add_argument("--grace_s", type=int, default=120, help="--sbatch: SIGTERM this long before the limit")
    common.add_train_flags(parser)
    args = parser.parse_args(argv)
    if args.nodes < 1 or args.gpus_per_node < 1:
        parser.error("--nodes and --gpus_per_node must be >= 1")
    return args


def resources(args) -> list[str]:
    flags = [f"--nodes={args.nodes}", "--ntasks-per-node=1", f"--gpus-per-node={args.gpus_per_node}"]
    if args.cpus_per_task:
        flags.append(f"--cpus-per-task={args.cpus_per_task}")
    for name in ("partition", "account", "time"):
        if getattr(args, name):
            flags.append(f"--{name}={getattr(args, name)}")
    return flags + [f"--job-name={args.job_name}"]


def device_ids(args) -> str:
    return ",".join(str(i) for i in range(args.gpus_per_node))


def srun_command(args) -> list[str]:
    return [
        "env",
        f"JAX_LOCAL_DEVICE_IDS={device_ids(args)}",
        "srun",
        *resources(args),
        "--kill-on-bad-exit=1",
        *common.train_command(args, python=args.python),
    ]


def batch_script(args) -> str:
    lines = ["#!/bin/bash"]
    lines += [f"#SBATCH {flag}" for flag in resources(args)]
    lines += [
        "#SBATCH --requeue",
        f"#SBATCH --signal=TERM@{args.grace_s}",
        f"#SBATCH --output={args.job_name}-%j.out",
        "set -euo pipefail",
        f"export JAX_LOCAL_DEVICE_IDS={device_ids(args)}",
        shlex.join(["srun", "--kill-on-bad-exit=1", *common.train_command(args, python=args.python)]),
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    run = common.Runner(args.dry_run)
    if not args.sbatch:
        run.run(srun_command(args))
        return 0
    script = batch_script(args)
    if args.dry_run:
        print(f"cat > {shlex.quote(args.script)} <<'EOF'\n{script}EOF", flush=True)
    else:
        Path(args.script).write_text(script)
        print(f"wrote {args.script}", flush=True)
    run.run(["sbatch", args.script])
    return 0


if __name__ == "__main__":
    cli.run_plain(main)
