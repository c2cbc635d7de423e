r"""Summarizes k-fold runs (DFEW, MAFW): every selection rule, mean +- std, per-class recall, results.json.

  python -m grace_jax.folds runs/dfew/fold_1 runs/dfew/fold_2 runs/dfew/fold_3 runs/dfew/fold_4 \
      runs/dfew/fold_5 [--out=runs/dfew/results.json]
  python -m grace_jax.folds --split=test runs/dferclip_dfew1 ... runs/dferclip_dfew5

`python -m grace_jax.kfold` trains all folds and calls this at the end. Workdirs may be local or URIs
(gs://bucket/dfew1). Each run's `final_metrics.json` holds three evaluations, one per selection rule:

- `best_uar`: the evaluation with the highest UAR (the checkpoint kept in checkpoints/best; ours);
- `best_war`: the one with the highest WAR (DFER-CLIP keeps the epoch with the best test accuracy);
- `last`: the final one.

`best_*` select on the split the run evaluated on: the test fold, unless the run held out a validation
part of its training fold (`data_prep.build_dataset --val_fraction`, `grace_jax.kfold --select_on=val`),
in which case `--split=test` reads `grace_jax.evaluate`'s test results of the checkpoints selected on
it (`<workdir>/evaluation/test-<best|last>.json`). std is given both ways and named: the population
std (ddof=0, numpy's default, what DFER papers' "+-" usually is) and the sample std (ddof=1).

`results.json` (`--out`) holds per fold and rule UAR, WAR, per-class recall and the confusion matrix,
the number of test clips, and the data's provenance: a SHA-256 of each split's clip list (the shards'
`<split>.clips.tsv`), the frame source data_prep recorded, and the published-count check.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
from absl import app, flags

from grace_jax.infra import cli, errors, paths

RULES = ("best_uar", "best_war", "last")
RULE_TEXT = {
    "best_uar": "per fold, the evaluation with the highest UAR (the checkpoint in checkpoints/best)",
    "best_war": "per fold, the evaluation with the highest WAR (DFER-CLIP's rule)",
    "last": "per fold, the final evaluation",
}
STD_TEXT = "population std over folds (ddof=0); *_std_sample: sample std (ddof=1)"
_FINAL_KEYS = {"best_uar": "best", "best_war": "best_war", "last": "last"}


def _std(values: np.ndarray) -> tuple[float, float]:
    """(population std, sample std) of fold values; the sample std of one fold is 0."""
    return float(values.std()), float(values.std(ddof=1)) if len(values) > 1 else 0.0


def _provenance(workdir: str) -> dict:
    """What the run's data was: clip-list checksums, frame source, clip-count check (from data_prep's
    manifest beside the shards named in the run's config.json); {} where it cannot be read."""
    config_path = paths.join(workdir, "config.json")
    if not paths.exists(config_path):
        return {}
    data = json.loads(paths.read_text(config_path)).get("data", {})
    data_dir = data.get("dir", "")
    if data.get("tfds"):
        return {"data": f"tfds:{data['tfds']}", "frame_source": None}
    if not data_dir or not paths.exists(paths.join(data_dir, "manifest.json")):
        return {"data_dir": data_dir or None}
    manifest = json.loads(paths.read_text(paths.join(data_dir, "manifest.json")))
    checksums = {}
    for split, info in manifest.get("splits", {}).items():
        table = info.get("clip_table")
        if table and paths.exists(paths.join(data_dir, table)):
            checksums[split] = hashlib.sha256(paths.read_text(paths.join(data_dir, table)).encode()).hexdigest()
    return {
        "data_dir": data_dir,
        "dataset": manifest.get("dataset"),
        "fold": manifest.get("source", {}).get("fold"),
        "frame_source": manifest.get("frame_source"),
        "published_counts": manifest.get("published_counts"),
        "clips_per_split": {s: v.get("num_clips") for s, v in manifest.get("splits", {}).items()},
        "clip_list_sha256": checksums,
        "train_split": data.get("train_split"),
        "eval_split": data.get("eval_split"),
    }


def _evaluation(result: dict) -> dict:
    return {
        "uar": result["uar"],
        "war": result["war"],
        "step": result.get("step"),
        "num_test_clips": result.get("num_examples"),
        "per_class_recall": result.get("per_class_recall"),
        "confusion": result.get("confusion"),
    }


def _read_fold(workdir: str, split: str) -> dict:
    if not paths.is_uri(workdir) and not paths.exists(workdir):  # a gs:// "folder" is only a prefix
        raise errors.NotFoundError(f"{workdir}: no such run folder (give the --workdir of each fold's run).")
    rules = {}
    if split:
        for which in ("best", "last"):  # whichever of the two was evaluated
            path = paths.join(workdir, "evaluation", f"{split}-{which}.json")
            if paths.exists(path):
                rules["best_uar" if which == "best" else "last"] = _evaluation(json.loads(paths.read_text(path)))
        if not rules:
            raise errors.NotFoundError(
                f"{paths.join(workdir, 'evaluation', f'{split}-best.json')}: not found; evaluate the run first: "
                f"python -m grace_jax.evaluate --workdir={workdir} --data_dir=... --split={split} --checkpoint=best"
            )
    else:
        path = paths.join(workdir, "final_metrics.json")
        if not paths.exists(path):
            raise errors.NotFoundError(f"{path}: not found; has this run finished?")
        final = json.loads(paths.read_text(path))
        for rule, key in _FINAL_KEYS.items():
            if key in final and final[key].get("uar", -1) >= 0:  # runs before best_war existed lack it
                rules[rule] = _evaluation(final[key])
    return {"workdir": workdir, "rules": rules, "provenance": _provenance(workdir)}


def summarize_rule(folds: list[dict], rule: str) -> dict:
    """Mean and both stds of UAR and WAR over the folds' `rule` evaluations, and the mean per-class
    recall (classes absent from a fold's test set are left out of that class's mean)."""
    evals = [f["rules"][rule] for f in folds]
    out: dict = {"rule": RULE_TEXT[rule], "num_folds": len(evals)}
    for metric in ("uar", "war"):
        values = np.array([e[metric] for e in evals], np.float64)
        out[f"{metric}_mean"] = float(values.mean())
        out[f"{metric}_std"], out[f"{metric}_std_sample"] = _std(values)
    names = list(evals[0].get("per_class_recall") or {})
    out["per_class_recall_mean"] = {
        name: (
            float(np.mean(got))
            if (got := [e["per_class_recall"][name] for e in evals if e["per_class_recall"].get(name) is not None])
            else None
        )
        for name in names
    }
    out["num_test_clips"] = sum(e.get("num_test_clips") or 0 for e in evals)
    return out


def protocol_results(workdirs: list[str], split: str = "") -> dict:
    """Everything results.json holds (see the module docstring)."""
    folds = [_read_fold(w, split) for w in workdirs]
    rules = [r for r in RULES if all(r in f["rules"] for f in folds)]
    return {
        "std": STD_TEXT,
        "selected_on": (
            f"grace_jax.evaluate on split {split!r}"
            if split
            else "each run's own evaluation split (config data.eval_split, in provenance)"
        ),
        "summary": {rule: summarize_rule(folds, rule) for rule in rules},
        "folds": folds,
    }


def summarize_folds(workdirs: list[str], which: str = "last", split: str = "") -> dict:
    """{"folds": [{"workdir", "uar", "war"}], "uar_mean", "uar_std", "war_mean", "war_std"} of one rule
    (`which`: best = best_uar, best_war or last); std is the population std (ddof=0)."""
    rule = {"best": "best_uar"}.get(which, which)
    results = protocol_results(workdirs, split)
    if rule not in results["summary"]:
        hint = (
            f"; evaluate them first: python -m grace_jax.evaluate --split={split} --checkpoint={which} ..."
            if split
            else ""
        )
        raise errors.NotFoundError(f"{which}: not every run's results hold that evaluation{hint}")
    summary = results["summary"][rule]
    return {
        "folds": [
            {"workdir": f["workdir"], "uar": f["rules"][rule]["uar"], "war": f["rules"][rule]["war"]}
            for f in results["folds"]
        ],
        **{k: summary[k] for k in ("uar_mean", "uar_std", "war_mean", "war_std")},
    }


def format_results(results: dict) -> str:
    """One line per fold and rule, then per rule the summary and the mean per-class recall."""
    lines = []
    for fold in results["folds"]:
        shown = "  ".join(
            f"{rule} UAR {100 * e['uar']:.2f} WAR {100 * e['war']:.2f}" for rule, e in fold["rules"].items()
        )
        source = fold["provenance"].get("frame_source") or "frame source not recorded"
        if isinstance(source, dict):  # data_prep's record: {"kind", "description", ...}
            source = source.get("description") or source.get("kind") or "frame source not recorded"
        lines.append(f"{fold['workdir']}: {shown}  ({source})")
    for rule, s in results["summary"].items():
        lines.append(
            f"{rule:8s} UAR {100 * s['uar_mean']:.2f} +- {100 * s['uar_std']:.2f}  WAR {100 * s['war_mean']:.2f} "
            f"+- {100 * s['war_std']:.2f}  (population std; sample std {100 * s['uar_std_sample']:.2f} / "
            f"{100 * s['war_std_sample']:.2f}; {s['num_folds']} folds, {s['num_test_clips']} test clips): "
            f"{s['rule']}"
        )
        recall = "  ".join(
            f"{name} {100 * v:.1f}" if v is not None else f"{name} -" for name, v in s["per_class_recall_mean"].items()
        )
        lines.append(f"         per-class recall (mean over folds): {recall}")
    return "\n".join(lines)


def write_results(results: dict, out: str) -> None:
    paths.write_text(out, json.dumps(results, indent=2) + "\n")


def main(argv):
    if len(argv) < 2:
        raise app.UsageError("Give the workdirs of the folds' runs.")
    results = protocol_results(argv[1:], _SPLIT.value)
    print(format_results(results))
    if _OUT.value:
        write_results(results, _OUT.value)
        print(f"Wrote {_OUT.value}")


if __name__ == "__main__":
    # Flags live here, not at import: grace_jax.kfold and the tests import this module beside
    # commands with flags of the same names (--out, --split).
    _SPLIT = flags.DEFINE_string(
        "split", "", "Read grace_jax.evaluate's results on this split instead of final_metrics.json."
    )
    _OUT = flags.DEFINE_string("out", "", "Write results.json here (e.g. runs/dfew/results.json).")
    cli.run(main)
