r"""Summarizes k-fold runs (DFEW, MAFW) as mean +- std of UAR and WAR over folds.

  python -m grace_jax.folds runs/dfew1 runs/dfew2 runs/dfew3 runs/dfew4 runs/dfew5 [--which=best]
  python -m grace_jax.folds --split=test runs/dferclip_dfew1 ... runs/dferclip_dfew5

Workdirs may be local or URIs (gs://bucket/dfew1). Reads each run's final_metrics.json; `best` is each fold's best evaluation (the checkpoint kept in
checkpoints/best), `last` its final one. With `--split`, each run's result of `grace_jax.evaluate` on
that split is read instead (`<workdir>/evaluation/<split>-<which>.json`), e.g. for converted runs,
which were never trained here. Prints one line per fold and the summary.
"""

from __future__ import annotations

import json

import numpy as np
from absl import app, flags

from grace_jax import cli, paths

_WHICH = flags.DEFINE_enum("which", "last", ["best", "last"], "Which evaluation of each run.")
_SPLIT = flags.DEFINE_string(
    "split", "", "Read grace_jax.evaluate's results on this split instead of final_metrics.json."
)


def summarize_folds(workdirs: list[str], which: str = "last", split: str = "") -> dict:
    """{"folds": [{"workdir", "uar", "war"}], "uar_mean", "uar_std", "war_mean", "war_std"}.

    std is the population standard deviation over folds (numpy's default), as DFER papers report.
    `split` (non-empty) reads grace_jax.evaluate's results on that split.
    """
    folds = []
    for workdir in workdirs:
        if not paths.is_uri(workdir) and not paths.exists(workdir):  # a gs:// "folder" is only a prefix
            raise cli.NotFoundError(f"{workdir}: no such run folder (give the --workdir of each fold's run).")
        if split:
            path = paths.join(workdir, "evaluation", f"{split}-{which}.json")
            if not paths.exists(path):
                raise cli.NotFoundError(
                    f"{path}: not found; evaluate the run first: python -m grace_jax.evaluate "
                    f"--workdir={workdir} --data_dir=... --split={split} --checkpoint={which}"
                )
            result = json.loads(paths.read_text(path))
            folds.append({"workdir": workdir, "uar": result["uar"], "war": result["war"]})
            continue
        path = paths.join(workdir, "final_metrics.json")
        if not paths.exists(path):
            raise cli.NotFoundError(f"{path}: not found; has this run finished?")
        result = json.loads(paths.read_text(path))[which]
        folds.append({"workdir": workdir, "uar": result["uar"], "war": result["war"]})
    uar = np.array([f["uar"] for f in folds])
    war = np.array([f["war"] for f in folds])
    return {
        "folds": folds,
        "uar_mean": float(uar.mean()),
        "uar_std": float(uar.std()),
        "war_mean": float(war.mean()),
        "war_std": float(war.std()),
    }


def main(argv):
    if len(argv) < 2:
        raise app.UsageError("Give the workdirs of the folds' runs.")
    summary = summarize_folds(argv[1:], _WHICH.value, _SPLIT.value)
    for fold in summary["folds"]:
        print(f"{fold['workdir']}: UAR {100 * fold['uar']:.2f} WAR {100 * fold['war']:.2f}")
    print(
        f"UAR {100 * summary['uar_mean']:.2f} +- {100 * summary['uar_std']:.2f}  "
        f"WAR {100 * summary['war_mean']:.2f} +- {100 * summary['war_std']:.2f}  "
        f"({len(summary['folds'])} folds, {_WHICH.value}"
        + (f", grace_jax.evaluate on {_SPLIT.value})" if _SPLIT.value else ")")
    )


if __name__ == "__main__":
    cli.run(main)
