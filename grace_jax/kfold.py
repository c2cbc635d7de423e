r"""The k-fold protocol (DFEW, MAFW) in one command: train every fold, then aggregate (grace_jax.folds).

  python -m grace_jax.kfold --config=configs/dfew.py --workdir=runs/dfew \
      --data_dir=/data/shards/dfew_fold{fold}
  python -m grace_jax.kfold --config=configs/mafw.py --workdir=runs/mafw -- --config.optim.grad_accum_steps=4

Fold k trains as `python -m grace_jax.main --config=<config>:fold=k --workdir=<workdir>/fold_k` (with
`--config.data.dir=<data_dir with {fold} replaced by k>` when --data_dir is given; the arguments after
`--` are passed to every fold), one after the other; a fold whose final_metrics.json exists is skipped,
and an unfinished one resumes. Then `<workdir>/results.json` is written (grace_jax.folds: best-UAR,
best-WAR and last selections, mean +- std with the kind named, per-class recall, confusion matrices,
test clip counts, clip-list checksums, frame source).

--select_on=val: each fold selects its best checkpoint on a validation part held out of its training
fold (`data_prep.build_dataset --val_fraction=0.1` writes it as split `val`) and never looks at the
test fold until the end, when `grace_jax.evaluate` scores the best and the last checkpoint on `test`.

Clusters: `--launch="python -m launch.slurm --nodes=1 --gpus_per_node=8 --sbatch"` (or launch.tpu with its
flags) submits each fold through that recipe instead of training here (each gets --config, --workdir,
--data_dir and the overrides); once all have finished, the same command with --aggregate_only writes
results.json. --dry_run prints every command and runs none.
"""

from __future__ import annotations

import argparse
import json
import shlex
import signal
import subprocess
import sys

from grace_jax import folds
from grace_jax.infra import cli, errors, paths


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m grace_jax.kfold", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--config",
        required=True,
        help="a k-fold config: configs/dfew.py, configs/mafw.py, "
        "configs/dferclip.py:dfew (its argument, if any, gets ',fold=k')",
    )
    parser.add_argument("--workdir", required=True, help="fold k trains in <workdir>/fold_k; results.json here")
    parser.add_argument("--folds", default="1,2,3,4,5", help="comma-separated fold numbers")
    parser.add_argument(
        "--data_dir",
        default="",
        help="config.data.dir per fold, with {fold} for the number "
        "(default: the config's own, /data/shards/<dataset>_fold<k>)",
    )
    parser.add_argument(
        "--select_on",
        choices=("test", "val"),
        default="test",
        help="the split each fold selects its best checkpoint on (val: held out of train)",
    )
    parser.add_argument("--launch", default="", help="a launch/ recipe command to submit each fold with")
    parser.add_argument("--aggregate_only", action="store_true", help="write results.json from finished folds")
    parser.add_argument("--dry_run", action="store_true", help="print the commands, run nothing")
    parser.add_argument("--python", default=sys.executable, help="the Python that trains")
    parser.add_argument("overrides", nargs="*", default=[], help="trainer flags after `--`")
    args = parser.parse_args(argv)
    try:
        args.fold_list = [int(f) for f in args.folds.split(",") if f.strip()]
    except ValueError:
        parser.error(f"--folds={args.folds}: give fold numbers, e.g. 1,2,3,4,5")
    if not args.fold_list:
        parser.error("--folds names no fold")
    if args.data_dir and "{fold}" not in args.data_dir and len(args.fold_list) > 1:
        parser.error(
            f"--data_dir={args.data_dir}: put {{fold}} where the fold number goes, "
            "e.g. /data/shards/dfew_fold{fold}; every fold would otherwise read the same data"
        )
    return args


def fold_config(config: str, fold: int) -> str:
    path, _, arg = config.partition(":")
    kept = [a for a in arg.split(",") if a and not a.startswith("fold=")]
    return f"{path}:{','.join(kept + [f'fold={fold}'])}"


def fold_workdir(workdir: str, fold: int) -> str:
    return paths.join(workdir, f"fold_{fold}")


def fold_overrides(args, fold: int) -> list[str]:
    extra = [f"--config.data.dir={args.data_dir.format(fold=fold)}"] if args.data_dir else []
    if args.select_on == "val":
        extra.append("--config.data.eval_split=val")
    return extra + list(args.overrides)


def train_command(args, fold: int) -> list[str]:
    return [
        args.python,
        "-m",
        "grace_jax.main",
        f"--config={fold_config(args.config, fold)}",
        f"--workdir={fold_workdir(args.workdir, fold)}",
        *fold_overrides(args, fold),
    ]


def launch_command(args, fold: int) -> list[str]:
    argv = [
        *shlex.split(args.launch),
        f"--config={fold_config(args.config, fold)}",
        f"--workdir={fold_workdir(args.workdir, fold)}",
    ]
    return argv + ["--", *fold_overrides(args, fold)]


def evaluate_commands(args, fold: int) -> list[list[str]]:
    """--select_on=val: score the checkpoints selected on val (best) and the last one on test."""
    workdir = fold_workdir(args.workdir, fold)
    data_dir = (
        json.loads(paths.read_text(paths.join(workdir, "config.json")))["data"]["dir"]
        if not args.dry_run
        else (args.data_dir.format(fold=fold) if args.data_dir else "<the fold's data.dir>")
    )
    return [
        [
            args.python,
            "-m",
            "grace_jax.evaluate",
            f"--workdir={workdir}",
            f"--data_dir={data_dir}",
            "--split=test",
            f"--checkpoint={which}",
        ]
        for which in ("best", "last")
    ]


def _run(argv: list[str], dry_run: bool) -> None:
    print(shlex.join(argv), flush=True)
    if dry_run:
        return
    returncode = _run_child(argv)
    if returncode in (130, -signal.SIGINT):
        print("Interrupted (Ctrl-C): run this command again to resume from this fold.", file=sys.stderr, flush=True)
        sys.exit(130)
    if returncode != 0:
        raise errors.UserError(
            f"{shlex.join(argv)} failed (its output is above); run this command again to "
            "resume from the folds already done"
        )


def _run_child(argv: list[str]) -> int:
    """Runs one fold's command and returns its exit status. The child has its own process group, so a
    Ctrl-C in the terminal reaches this process only, which passes it on once per press: the trainer
    then saves the step it finished and exits 130 (subprocess.run would kill it 0.25 s after the
    first press, losing that step). SIGTERM (preemption of the whole job) is passed on the same way;
    the trainer saves and exits 0, and so does this command."""
    child = subprocess.Popen(argv, start_new_session=True)
    received = []

    def forward(signum, frame):
        received.append(signum)
        if child.poll() is None:
            child.send_signal(signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        returncode = child.wait()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if signal.SIGTERM in received and returncode == 0:
        print("Preempted (SIGTERM): run this command again to resume from this fold.", file=sys.stderr, flush=True)
        sys.exit(0)
    return returncode


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    workdirs = [fold_workdir(args.workdir, k) for k in args.fold_list]
    if not args.aggregate_only:
        for fold, workdir in zip(args.fold_list, workdirs):
            if args.launch:
                _run(launch_command(args, fold), args.dry_run)
                continue
            if paths.exists(paths.join(workdir, "final_metrics.json")):
                print(f"fold {fold}: {workdir}/final_metrics.json exists, skipped", flush=True)
            else:
                _run(train_command(args, fold), args.dry_run)
            if args.select_on == "val":
                for command in evaluate_commands(args, fold):
                    _run(command, args.dry_run)
        if args.launch:
            print(
                "Once every fold has finished: "
                + shlex.join(
                    [
                        "python",
                        "-m",
                        "grace_jax.kfold",
                        *(argv if argv is not None else sys.argv[1:]),
                        "--aggregate_only",
                    ]
                )
            )
            return 0
    if args.dry_run:
        return 0
    results = folds.protocol_results(workdirs, split="test" if args.select_on == "val" else "")
    results["command"] = shlex.join(["python", "-m", "grace_jax.kfold", *(argv if argv is not None else sys.argv[1:])])
    results["selection_split"] = args.select_on
    out = paths.join(args.workdir, "results.json")
    folds.write_results(results, out)
    print(folds.format_results(results))
    print(f"Wrote {out}")
    return 0


if __name__ == "__main__":
    cli.run_plain(main)
