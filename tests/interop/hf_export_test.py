"""grace_jax.interop.hf_export: a Hugging Face style folder without pickle that predicts as the run does,
from a folder and from a hub name in the hub cache (offline), read back by `runs.load`."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
from flax import nnx
from PIL import Image
from safetensors import safe_open

from grace_jax import predict
from grace_jax.infra import errors
from grace_jax.interop import hf_export
from grace_jax.run import runs


@pytest.fixture(scope="module")
def exported(tiny_run, tmp_path_factory):
    workdir, _ = tiny_run
    out = str(tmp_path_factory.mktemp("exports") / "grace-tiny")
    info = hf_export.export_run(runs.load(workdir), out, command="python -m grace_jax.export --workdir=x --out=y")
    return workdir, out, info


def _clips(tmp_path):
    rng = np.random.RandomState(3)
    inputs = []
    for k, n in enumerate((6, 3)):  # one longer than the model's 4 frames, one shorter
        folder = tmp_path / f"clip{k}"
        folder.mkdir()
        for i in range(n):
            Image.fromarray(rng.randint(0, 255, (40, 40, 3), dtype=np.uint8)).save(folder / f"{i + 1:05d}.png")
        inputs.append(str(folder))
    return inputs


def test_the_folder_holds_safetensors_config_classes_and_card_and_no_pickle(exported):
    workdir, out, info = exported
    assert sorted(os.listdir(out)) == sorted(hf_export.FILES)
    for name in hf_export.FILES:
        with open(os.path.join(out, name), "rb") as f:
            assert f.read(1) != b"\x80", f"{name} looks like a pickle"
    with safe_open(os.path.join(out, hf_export.WEIGHTS), framework="np") as f:
        keys = set(f.keys())
        assert f.metadata()["format"] == "grace_jax" and f.metadata()["checkpoint"] == info["checkpoint"]
        assert f.get_tensor("prompts/ids").dtype == np.int32
    assert "clip/vision_model/embeddings/class_embedding" in keys and "cue_ids" in keys
    assert not any("opt_state" in k for k in keys)
    config = json.load(open(os.path.join(out, "config.json")))
    assert config["model"]["clip"]["init"] == "" and config["model"]["clip"]["architecture"]
    assert config["model"]["prompt"]["token_ids"] and config["model"]["cate"]["token_ids"]
    assert json.load(open(os.path.join(out, "classes.json"))) == json.load(open(os.path.join(workdir, "classes.json")))
    card = open(os.path.join(out, "README.md")).read()
    assert card.startswith("---\nlibrary_name: grace_jax\n")
    for text in (
        "## Classes",
        "| 0 | happiness |",
        "## Metrics",
        "training, best",
        "## Sources",
        "python -m grace_jax.predict --model=grace-tiny",
        "python -m grace_jax.export",
    ):
        assert text in card, text


@pytest.fixture(scope="module")
def from_run(exported, tmp_path_factory):
    """(inputs, predict --workdir's results and CSV) on two frame folders."""
    folder = tmp_path_factory.mktemp("inputs")
    inputs = _clips(folder)
    results, errors = predict.run(exported[0], inputs, str(folder / "out"), pictures=False, face_crop="none")
    assert errors == []
    return inputs, results, (folder / "out" / "predictions.csv").read_text()


@pytest.mark.slow
def test_predict_from_the_folder_equals_predict_from_the_run(exported, from_run, tmp_path):
    inputs, expected, csv_text = from_run
    from_model, _ = predict.run(None, inputs, str(tmp_path / "b"), pictures=False, model=exported[1], face_crop="none")
    assert [r["probabilities"] for r in from_model] == [r["probabilities"] for r in expected]
    assert (tmp_path / "b" / "predictions.csv").read_text() == csv_text


def test_predict_from_a_hub_name_reads_the_hub_cache_offline(exported, from_run, tmp_path, monkeypatch):
    """A hub name resolves through huggingface_hub's cache (the layout `hf download` leaves behind);
    the tests run with HF_HUB_OFFLINE=1, so nothing is fetched."""
    _, out, _ = exported
    cache = tmp_path / "hub"
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / "models--someone--grace-tiny"
    shutil.copytree(out, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    import huggingface_hub.constants as hub_constants

    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(cache))  # where `hf download` puts it
    inputs, expected, _ = from_run
    from_hub, errors = predict.run(
        None, inputs, str(tmp_path / "c"), pictures=False, model="someone/grace-tiny", face_crop="none"
    )
    assert errors == [] and [r["probabilities"] for r in from_hub] == [r["probabilities"] for r in expected]
    with pytest.raises(hf_export.ExportError, match="HF_HUB_OFFLINE"):
        runs.load("someone/not-there", cache_dir=str(cache))


def test_a_tampered_folder_fails_naming_the_tensor(exported, tmp_path):
    from safetensors.numpy import load_file, save_file

    _, out, _ = exported
    broken = tmp_path / "broken"
    shutil.copytree(out, broken)
    tensors = load_file(str(broken / hf_export.WEIGHTS))
    del tensors["temporal/cls_token"]
    save_file(tensors, str(broken / hf_export.WEIGHTS))
    with pytest.raises(hf_export.ExportError, match="'temporal/cls_token' is missing"):
        runs.load(str(broken))
    with pytest.raises(hf_export.ExportError, match="already exists"):
        hf_export.export_run(runs.load(exported[0]), out)


def test_the_loaded_folder_is_the_run_s_model(exported):
    workdir, out, info = exported
    run, folder = runs.load(workdir), runs.load(out)
    assert (run.exported, folder.exported) == (False, True) and folder.directory == out
    assert (folder.checkpoint, folder.step) == (info["checkpoint"], info["step"]) == (run.checkpoint, run.step)
    assert folder.class_names == run.class_names and "opt_state" not in folder.state

    def flat(model):
        return {"/".join(map(str, p)): np.asarray(v[...]) for p, v in nnx.to_flat_state(nnx.state(model))}

    expected, got = flat(run.model), flat(folder.model)
    assert set(got) == set(expected)
    for key, value in expected.items():
        np.testing.assert_array_equal(got[key], value, err_msg=key)
    assert info["checkpoint"] == "best"  # the tiny run evaluated once, so it has a best checkpoint
    with pytest.raises(errors.ConfigError, match="holds the run's best checkpoint only"):
        runs.load(out, "last")
