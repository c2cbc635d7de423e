r"""Summarizes k-fold runs (DFEW, MAFW) as mean +- std of UAR and WAR over folds.

  python -m grace_jax.folds runs/dfew1 runs/dfew2 runs/dfew3 runs/dfew4 runs/dfew5 [--which=best]

Reads each run's final_metrics.json; `best` is each fold's best evaluation (the checkpoint kept in
checkpoints/best), `last` its final one. Prints one line per fold and the summary.
"""

from __future__ import annotations

import json
import os

import numpy as np
from absl import app, flags

_WHICH = flags.DEFINE_enum("which", "last", ["best", "last"], "Which evaluation of each run.")


def summarize_folds(workdirs: list[str], which: str = "last") -> dict:
    """{"folds": [{"workdir", "uar", "war"}], "uar_mean", "uar_std", "war_mean", "war_std"}.

    std is the population standard deviation over folds (numpy's default), as DFER papers report.
    """
    folds = []
    for workdir in workdirs:
        path = os.path.join(workdir, "final_metrics.json")
        if not os.path.exists(path):
            raise FileNotFoundError(f"{path}: not found; has this run finished?")
        with open(path) as f:
            result = json.load(f)[which]
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
    summary = summarize_folds(argv[1:], _WHICH.value)
    for fold in summary["folds"]:
        print(f"{fold['workdir']}: UAR {100 * fold['uar']:.2f} WAR {100 * fold['war']:.2f}")
    print(
        f"UAR {100 * summary['uar_mean']:.2f} +- {100 * summary['uar_std']:.2f}  "
        f"WAR {100 * summary['war_mean']:.2f} +- {100 * summary['war_std']:.2f}  "
        f"({len(summary['folds'])} folds, {_WHICH.value})"
    )


if __name__ == "__main__":
    app.run(main)
