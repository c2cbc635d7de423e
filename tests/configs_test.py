"""Every config builds, has the fields the trainer reads, and the fold argument is checked."""

import importlib

import pytest

CONFIGS = [
    "base",
    "demo",
    "dfew",
    "ferv39k",
    "mafw",
    "ablations.dferclip",
    "ablations.motion",
    "ablations.cate",
    "ablations.ot",
    "ablations.grace",
]


@pytest.mark.parametrize("name", CONFIGS)
def test_config_builds(name):
    c = importlib.import_module(f"configs.{name}").get_config()
    for field in (
        "model.clip.variant",
        "model.num_classes",
        "data.dir",
        "data.image_size",
        "optim.batch_size",
        "optim.num_epochs",
        "optim.groups",
        "train.log_every_steps",
        "train.ckpt_every_steps",
        "mesh.shape",
        "seed",
    ):
        obj = c
        for part in field.split("."):
            obj = obj[part]
    assert c.data.num_frames == c.model.num_frames


def test_folds():
    dfew = importlib.import_module("configs.dfew")
    assert dfew.get_config("fold=3").data.dir.endswith("dfew_fold3")
    mafw = importlib.import_module("configs.mafw").get_config("fold=2")
    assert mafw.model.num_classes == 11 and mafw.model.cate.captions
    with pytest.raises(ValueError, match="fold=N"):
        dfew.get_config("fold=6")
