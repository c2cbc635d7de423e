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
