r"""Cloud TPU recipe: create a TPU VM slice, install grace_jax on every worker, train on all of them.

  python -m launch.tpu --project=my-proj --zone=us-east5-a --name=grace --accelerator_type=v5litepod-16 \
      --workdir=gs://my-bucket/runs/ferv39k --data_dir=gs://my-bucket/shards/ferv39k \
      --config=configs/ferv39k.py --dry_run -- --config.optim.batch_size=64

Steps (`--steps`, comma-separated, in this order):
  create       a queued resource (default; `--spot` for Spot capacity) or, with --no_queued, a TPU VM
               directly; then waits until it is ACTIVE
  install      copies this checkout (`git archive HEAD`, committed files only) or clones `--repo`
               on every worker, and installs it with jax[tpu] into ~/venv (Python 3.11, via uv)
  mount        (only with --mount_bucket) gcsfuse with the file cache for ArrayRecord's random reads
  train        the same `python -m grace_jax.main ... --config.distributed.enabled=True` on all workers
               (`gcloud compute tpus tpu-vm ssh --worker=all --command=...`); jax finds the other
               workers itself; `--detach` leaves it running under nohup, log in ~/train.log
  tensorboard  TensorBoard on this machine, reading <workdir>/tensorboard from GCS
  delete       deletes the queued resource / TPU VM
Default: create,install,train. `--dry_run` prints every command exactly, one a line, and runs none.

Preemption: Spot/preemptible TPU VMs get SIGTERM before they go; the trainer finishes its step, all
workers agree on it, save a checkpoint to the gs:// workdir and exit 0. Run the same command again
(delete, then create,install,train) and it resumes from that checkpoint.
"""

from __future__ import annotations

import argparse
import shlex
import tempfile
from pathlib import Path

from grace_jax.infra import cli
from launch import common

REPO = Path(__file__).resolve().parents[1]
STEPS = ("create", "install", "mount", "train", "tensorboard", "delete")
RUNTIME_VERSIONS = {  # TPU software versions for JAX (cloud.google.com/tpu/docs/runtimes)
    "v4": "tpu-ubuntu2204-base",
    "v5litepod": "v2-alpha-tpuv5-lite",
    "v5p": "v2-alpha-tpuv5",
    "v6e": "v2-alpha-tpuv6e",
}
JAX_VERSION = "0.10.2"  # setup.py's pin; jax[tpu] brings the matching libtpu
GCSFUSE_INSTALL = (
    "export GCSFUSE_REPO=gcsfuse-$(lsb_release -c -s) && "
    'echo "deb [signed-by=/usr/share/keyrings/cloud.google.asc] https://packages.cloud.google.com/apt '
    '$GCSFUSE_REPO main" | sudo tee /etc/apt/sources.list.d/gcsfuse.list && '
    "curl -s https://packages.cloud.google.com/apt/doc/apt-key.gpg | sudo tee /usr/share/keyrings/cloud.google.asc "
    "> /dev/null && sudo apt-get update -q && sudo apt-get install -y -q gcsfuse"
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m launch.tpu", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--project", required=True)
    parser.add_argument("--zone", required=True)
    parser.add_argument("--name", required=True, help="TPU VM (and queued resource) name")
    parser.add_argument("--accelerator_type", default="v5litepod-16", help="e.g. v4-32, v5litepod-16, v5p-32")
    parser.add_argument("--runtime_version", default="", help="default: from the accelerator generation")
    parser.add_argument("--spot", action="store_true", help="Spot capacity (cheaper, preemptible)")
    parser.add_argument(
        "--no_queued",
        dest="queued",
        action="store_false",
        help="create the TPU VM directly instead of through a queued resource",
    )
    parser.add_argument("--create_timeout_s", type=float, default=3600.0)
    parser.add_argument("--repo", default="", help="git URL to clone on the workers; default: this checkout")
    parser.add_argument("--mount_bucket", default="", help="bucket to mount with gcsfuse (mount step)")
    parser.add_argument("--mount_point", default="/mnt/gcs")
    parser.add_argument("--detach", action="store_true", help="train under nohup, log in ~/train.log")
    parser.add_argument("--steps", default="create,install,train")
    common.add_train_flags(parser)
    args = parser.parse_args(argv)
    args.steps = [s for s in args.steps.split(",") if s]
    unknown = sorted(set(args.steps) - set(STEPS))
    if unknown:
        parser.error(f"unknown steps {unknown}; choose from {','.join(STEPS)}")
    if "mount" in args.steps and not args.mount_bucket:
        parser.error("the mount step needs --mount_bucket")
    if not args.runtime_version:
        generation = args.accelerator_type.rsplit("-", 1)[0]
        if generation not in RUNTIME_VERSIONS:
            parser.error(f"no default --runtime_version for {args.accelerator_type}; give one")
        args.runtime_version = RUNTIME_VERSIONS[generation]
    return args


def _where(args) -> list[str]:
    return [f"--project={args.project}", f"--zone={args.zone}"]


def _ssh(args, command: str, worker: str = "all") -> list[str]:
    return [
        "gcloud",
        "compute",
        "tpus",
        "tpu-vm",
        "ssh",
        args.name,
        *_where(args),
        f"--worker={worker}",
        f"--command={command}",
    ]


def create(run: common.Runner, args) -> None:
    spot = ["--spot"] if args.spot else []
    if args.queued:
        run.run(
            [
                "gcloud",
                "compute",
                "tpus",
                "queued-resources",
                "create",
                args.name,
                f"--node-id={args.name}",
                *_where(args),
                f"--accelerator-type={args.accelerator_type}",
                f"--runtime-version={args.runtime_version}",
                *spot,
            ]
        )
        run.wait_until(
            [
                "gcloud",
                "compute",
                "tpus",
                "queued-resources",
                "describe",
                args.name,
                *_where(args),
                "--format=value(state.state)",
            ],
            "ACTIVE",
            timeout_s=args.create_timeout_s,
        )
    else:
        run.run(
            [
                "gcloud",
                "compute",
                "tpus",
                "tpu-vm",
                "create",
                args.name,
                *_where(args),
                f"--accelerator-type={args.accelerator_type}",
                f"--version={args.runtime_version}",
                *spot,
            ]
        )


def install(run: common.Runner, args) -> None:
    if args.repo:
        fetch = f"(git -C ~/grace_jax pull --ff-only || git clone {shlex.quote(args.repo)} ~/grace_jax)"
    else:
        archive = str(Path(tempfile.gettempdir()) / f"grace_jax-{args.name}.tar.gz")
        run.run(["git", "-C", str(REPO), "archive", "--format=tar.gz", "-o", archive, "HEAD"])
        run.run(
            [
                "gcloud",
                "compute",
                "tpus",
                "tpu-vm",
                "scp",
                archive,
                f"{args.name}:~/grace_jax.tar.gz",
                *_where(args),
                "--worker=all",
            ]
        )
        fetch = "mkdir -p ~/grace_jax && tar -xzf ~/grace_jax.tar.gz -C ~/grace_jax"
    run.run(
        _ssh(
            args,
            " && ".join(
                [
                    "set -e",
                    fetch,
                    "(command -v uv || curl -LsSf https://astral.sh/uv/install.sh | sh)",
                    "~/.local/bin/uv venv --allow-existing --python 3.11 ~/venv",
                    f"cd ~/grace_jax && ~/.local/bin/uv pip install --python ~/venv/bin/python -e . 'jax[tpu]=={JAX_VERSION}'",
                ]
            ),
        )
    )


def mount(run: common.Runner, args) -> None:
    cache = "/mnt/disks/gcsfuse-cache"
    point = shlex.quote(args.mount_point)
    run.run(
        _ssh(
            args,
            " && ".join(
                [
                    "set -e",
                    f"(command -v gcsfuse || ({GCSFUSE_INSTALL}))",
                    f"sudo mkdir -p {point} {cache} && sudo chown $USER {point} {cache}",
                    f"(mountpoint -q {point} || gcsfuse --implicit-dirs --file-cache-max-size-mb=-1 "
                    f"--file-cache-cache-file-for-range-read=true --cache-dir={cache} --metadata-cache-ttl-secs=-1 "
                    f"--stat-cache-max-size-mb=1024 -o ro {shlex.quote(args.mount_bucket)} {point})",
                ]
            ),
        )
    )


def train(run: common.Runner, args) -> None:
    command = shlex.join(common.train_command(args))
    if args.detach:
        command = f"nohup {command} >> ~/train.log 2>&1 &"
    run.run(_ssh(args, f"cd ~/grace_jax && . ~/venv/bin/activate && {command}"))


def tensorboard(run: common.Runner, args) -> None:
    run.run(["tensorboard", f"--logdir={args.workdir.rstrip('/')}/tensorboard"])


def delete(run: common.Runner, args) -> None:
    if args.queued:
        run.run(
            ["gcloud", "compute", "tpus", "queued-resources", "delete", args.name, *_where(args), "--force", "--quiet"]
        )
    else:
        run.run(["gcloud", "compute", "tpus", "tpu-vm", "delete", args.name, *_where(args), "--quiet"])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    run = common.Runner(args.dry_run)
    for step in STEPS:  # always in this order, whatever order --steps lists them in
        if step in args.steps:
            globals()[step](run, args)
    return 0


if __name__ == "__main__":
    cli.run_plain(main)
