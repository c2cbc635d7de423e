"""k-fold summary: mean and std over folds, and a clear error for a missing or unfinished run."""

import json

import pytest

from grace_jax import folds


def test_mean_and_std(tmp_path):
    dirs = []
    for i, (uar, war) in enumerate([(0.5, 0.6), (0.7, 0.8)]):
        d = tmp_path / f"fold{i}"
        d.mkdir()
        last = {"uar": uar, "war": war}
        (d / "final_metrics.json").write_text(json.dumps({"last": last, "best": last}))
        dirs.append(str(d))
    out = folds.summarize_folds(dirs)
    assert out["uar_mean"] == pytest.approx(0.6) and out["uar_std"] == pytest.approx(0.1)
    assert out["war_mean"] == pytest.approx(0.7) and out["war_std"] == pytest.approx(0.1)
    with pytest.raises(FileNotFoundError, match="nope: no such run folder"):
        folds.summarize_folds([str(tmp_path / "nope")])
    (tmp_path / "unfinished").mkdir()
    with pytest.raises(FileNotFoundError, match="unfinished/final_metrics.json: not found; has this run finished"):
        folds.summarize_folds([str(tmp_path / "unfinished")])


def _fold(tmp_path, name, best, best_war, last, recall):
    d = tmp_path / name
    d.mkdir()

    def ev(uar_war, step):
        return {
            "uar": uar_war[0],
            "war": uar_war[1],
            "step": step,
            "num_examples": 10,
            "per_class_recall": recall,
            "confusion": [[5, 0], [1, 4]],
        }

    (d / "final_metrics.json").write_text(
        json.dumps({"best": ev(best, 2), "best_war": ev(best_war, 3), "last": ev(last, 4)})
    )
    return str(d)


def test_selection_rules_and_both_stds_against_hand_computed_values(tmp_path):
    dirs = [
        _fold(tmp_path, "f1", (0.50, 0.60), (0.45, 0.65), (0.40, 0.55), {"a": 0.4, "b": None}),
        _fold(tmp_path, "f2", (0.60, 0.70), (0.60, 0.70), (0.55, 0.68), {"a": 0.6, "b": 0.5}),
        _fold(tmp_path, "f3", (0.70, 0.62), (0.66, 0.72), (0.70, 0.62), {"a": 0.8, "b": 0.7}),
    ]
    results = folds.protocol_results(dirs)
    s = results["summary"]
    assert list(s) == ["best_uar", "best_war", "last"]
    # best by UAR: UAR 0.5, 0.6, 0.7 -> mean 0.6; deviations -0.1, 0, 0.1: population std
    # sqrt(0.02 / 3) = 0.081650, sample std sqrt(0.02 / 2) = 0.1.
    assert s["best_uar"]["uar_mean"] == pytest.approx(0.6)
    assert s["best_uar"]["uar_std"] == pytest.approx(0.0816497, abs=1e-6)
    assert s["best_uar"]["uar_std_sample"] == pytest.approx(0.1)
    # best by WAR (DFER-CLIP's): WAR 0.65, 0.70, 0.72 -> mean 0.69; deviations -0.04, 0.01, 0.03:
    # squares sum 0.0026, population std sqrt(0.0026 / 3) = 0.029439, sample sqrt(0.0013) = 0.036056;
    # its UAR is that of the same evaluations: (0.45 + 0.6 + 0.66) / 3 = 0.57.
    assert s["best_war"]["war_mean"] == pytest.approx(0.69)
    assert s["best_war"]["war_std"] == pytest.approx(0.0294392, abs=1e-6)
    assert s["best_war"]["war_std_sample"] == pytest.approx(0.0360555, abs=1e-6)
    assert s["best_war"]["uar_mean"] == pytest.approx(0.57)
    assert s["last"]["uar_mean"] == pytest.approx((0.40 + 0.55 + 0.70) / 3)
    # Per-class recall: a class missing from a fold's test set (None) is left out of its mean.
    assert s["best_uar"]["per_class_recall_mean"] == pytest.approx({"a": 0.6, "b": 0.6})
    assert s["best_uar"]["num_test_clips"] == 30
    assert "ddof=0" in results["std"] and "DFER-CLIP" in s["best_war"]["rule"]
    assert results["folds"][0]["rules"]["best_war"]["confusion"] == [[5, 0], [1, 4]]
    text = folds.format_results(results)
    assert "best_war UAR 57.00 +- " in text and "population std; sample std" in text
    # The old one-rule summary: `best` is the best-UAR selection, std the population one.
    old = folds.summarize_folds(dirs, "best")
    assert old["uar_mean"] == pytest.approx(0.6) and old["uar_std"] == pytest.approx(0.0816497, abs=1e-6)
