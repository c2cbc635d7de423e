"""Every config builds, has the fields the trainer reads, and the fold argument is checked."""

import importlib

import pytest

CONFIGS = [
    "base",
    "demo",
    "dfew",
    "ferv39k",
    "mafw",
    "dferclip",
    "ablation",
]


@pytest.mark.parametrize("name", CONFIGS)
def test_config_builds(name):
    c = importlib.import_module(f"grace_jax.configs.{name}").get_config()
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
    dfew = importlib.import_module("grace_jax.configs.dfew")
    assert dfew.get_config("fold=3").data.dir.endswith("dfew_fold3")
    mafw = importlib.import_module("grace_jax.configs.mafw").get_config("fold=2")
    assert mafw.model.num_classes == 11 and mafw.model.cate.captions
    with pytest.raises(ValueError, match="fold=N"):
        dfew.get_config("fold=6")


# What each of the removed configs/ablations/<variant>.py files set: the same switches under the same names.
@pytest.mark.parametrize(
    "variant, motion, cate, ot",
    [
        ("grace", True, True, True),
        ("motion", True, False, False),
        ("cate", False, True, False),
        ("ot", False, False, True),
    ],
)
def test_ablation_variants(variant, motion, cate, ot):
    from grace_jax.configs import ablation, base

    c = ablation.get_config(variant)
    m = c.model
    assert (m.motion.enabled, m.cate.enabled, m.ot.enabled) == (motion, cate, ot)
    # Everything but the three switches is the base recipe.
    expected = base.get_config()
    expected.model.motion.enabled, expected.model.cate.enabled, expected.model.ot.enabled = motion, cate, ot
    assert c.to_json_best_effort(sort_keys=True) == expected.to_json_best_effort(sort_keys=True)


def test_ablation_default_and_unknown_variant():
    from grace_jax.configs import ablation

    assert ablation.get_config().to_json_best_effort() == ablation.get_config("grace").to_json_best_effort()
    with pytest.raises(ValueError, match="takes one of grace, motion, cate, ot .*got 'dferclip'"):
        ablation.get_config("dferclip")


def test_ablation_from_the_command_line(tmp_path):
    """`--config=configs/ablation.py:ot` loads the file by path (ml_collections), whose `from
    grace_jax.configs import base` must resolve, from the repository root as the README runs it."""
    import os

    from absl import flags
    from ml_collections import config_flags

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    argv = ["main", f"--config={root}/configs/ablation.py:ot", "--config.model.ot.epsilon=0.25"]
    fv = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, flag_values=fv, lock_config=True, sys_argv=argv)
    fv(argv)
    m = fv.config.model
    assert (m.motion.enabled, m.cate.enabled, m.ot.enabled, m.ot.epsilon) == (False, False, True, 0.25)
    argv = ["main", f"--config={root}/configs/ablation.py:nope"]
    fv = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, flag_values=fv, lock_config=True, sys_argv=argv)
    with pytest.raises(flags.IllegalFlagValueError, match="takes one of grace, motion, cate, ot .*got 'nope'"):
        fv(argv)
