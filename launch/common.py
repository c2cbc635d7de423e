"""What the launch recipes share: run commands or, with --dry_run, print them exactly."""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence

from grace_jax.infra import errors


class Runner:
    """Runs argv lists (stopping at the first failure) or, with `dry_run`, prints them one a line,
    shell-quoted so the printed text can be pasted into a shell as is."""

    def __init__(self, dry_run: bool, stream=sys.stdout):
        self.dry_run = dry_run
        self.stream = stream

    def run(self, argv: Sequence[str]) -> None:
        argv = [str(a) for a in argv]
        print(shlex.join(argv), file=self.stream, flush=True)
        if not self.dry_run:
            _checked(argv)

    def output(self, argv: Sequence[str]) -> str:
        """Prints and runs a query command; returns its stdout (dry run: only prints it, returns "")."""
        argv = [str(a) for a in argv]
        print(shlex.join(argv), file=self.stream, flush=True)
        if self.dry_run:
            return ""
        return _checked(argv, capture_output=True, text=True).stdout

    def wait_until(self, argv: Sequence[str], wanted: str, *, timeout_s: float, every_s: float = 30.0) -> None:
        """Repeats a query until its output (stripped) is `wanted`; dry run: prints it once."""
        if self.dry_run:
            self.output(argv)
            return
        deadline = time.monotonic() + timeout_s
        while True:
            state = self.output(argv).strip()
            print(f"  state: {state or '?'}", file=self.stream, flush=True)
            if state == wanted:
                return
            if time.monotonic() > deadline:
                raise errors.UserError(
                    f"{shlex.join(argv)}: not {wanted} after {timeout_s:.0f} s (last: {state!r}); check it "
                    "in the Cloud console, then run the remaining --steps again"
                )
            time.sleep(every_s)


def _checked(argv: list[str], **kwargs) -> subprocess.CompletedProcess:
    """subprocess.run that stops the recipe with one line naming the command that failed (its own
    output, already on the terminal or in the error, says why)."""
    try:
        done = subprocess.run(argv, **kwargs)
    except FileNotFoundError:
        raise errors.NotFoundError(f"{argv[0]}: command not found; install it or put it on PATH") from None
    if done.returncode != 0:
        said = (done.stderr or "").strip().splitlines()[-1:] if kwargs.get("capture_output") else []
        raise errors.UserError(
            f"{shlex.join(argv)} failed with exit status {done.returncode}"
            + (f": {said[0]}" if said else " (its output is above)")
        )
    return done


def train_command(args: argparse.Namespace, *, python: str = "python") -> list[str]:
    """The one training command every process runs (the same on all hosts)."""
    argv = [
        python,
        "-m",
        "grace_jax.main",
        f"--config={args.config}",
        f"--workdir={args.workdir}",
        "--config.distributed.enabled=True",
    ]
    if args.data_dir:
        argv.append(f"--config.data.dir={args.data_dir}")
    return argv + list(args.overrides)


def add_train_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default="configs/ferv39k.py", help="config file (relative to the repo)")
    parser.add_argument("--workdir", required=True, help="run directory every host sees (gs://... on TPU)")
    parser.add_argument("--data_dir", default="", help="config.data.dir: shards on gs:// or a mounted path")
    parser.add_argument("--dry_run", action="store_true", help="print the exact commands, run nothing")
    parser.add_argument(
        "overrides", nargs="*", default=[], help="more trainer flags after `--`, e.g. -- --config.optim.batch_size=64"
    )
