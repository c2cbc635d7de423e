"""configs/dferclip.py: DFER-CLIP's official recipe (main.py, train_*.sh), per dataset."""

import importlib

import pytest
from absl import flags
from ml_collections import config_flags

from grace_jax.configs import base, dferclip


def _keys(cfg, prefix=""):
    out = set()
    for k, v in cfg.items():
        out.add(prefix + k)
        if hasattr(v, "items"):
            out |= _keys(v, prefix + k + ".")
    return out


@pytest.mark.parametrize(
    "arg, dataset, data_dir, classes",
    [
        (None, "dfew", "/data/shards/dfew_fold1", 7),
        ("dfew,fold=3", "dfew", "/data/shards/dfew_fold3", 7),
        ("ferv39k", "ferv39k", "/data/shards/ferv39k", 7),
        ("mafw,fold=2", "mafw", "/data/shards/mafw_fold2", 11),
    ],
)
def test_recipe(arg, dataset, data_dir, classes):
    c = dferclip.get_config(arg)
    assert c.data.dir == data_dir and c.model.num_classes == classes
    m = c.model
    assert m.clip.variant == "ViT-B/32" and m.clip.dtype == "float32"
    assert not (m.motion.enabled or m.cate.enabled or m.ot.enabled or m.cate.captions)
    assert m.loss.ot_weight == m.loss.align_weight == m.loss.label_smoothing == 0.0
    assert m.prompt.text == "cue" and m.prompt.n_ctx == 8 and m.prompt.class_specific
    assert m.temporal.depth == 1 and m.num_frames == c.data.num_frames == 16
    assert (m.temporal.heads, m.temporal.dim_head, m.temporal.mlp_dim) == (8, 64, 1024)
    assert m.logit_scale == 100.0
    o = c.optim
    assert o.optimizer == "sgd" and o.momentum == 0.9 and o.weight_decay == 1e-4
    assert o.batch_size == 48 and o.num_epochs == 50 and o.num_train_steps == -1
    assert tuple(o.lr_decay_epochs) == (30, 40) and o.lr_decay == 0.1 and o.warmup_steps == 0
    assert [lr for _, lr in o.groups] == [0.0, 1e-5, 1e-3, 1e-2]
    assert c.seed == 1
    d = c.data
    assert d.normalize == "unit" and d.augment == "dferclip" and d.image_size == 224
    assert d.flip_probability == 0.5
    assert (d.brightness, d.rotation_degrees) == {
        "dfew": (0.5, 0.0),
        "ferv39k": (0.0, 4.0),
        "mafw": (0.0, 0.0),
    }[dataset]
    # Only fields the trainer knows: the ablation sets, it does not invent.
    dataset_cfg = importlib.import_module(f"grace_jax.configs.{dataset}").get_config()
    assert (
        _keys(c) == _keys(dataset_cfg) == _keys(base.get_config()) | ({"data.fold"} if dataset != "ferv39k" else set())
    )


@pytest.mark.parametrize("arg", ["ferv39k,fold=2", "dfew,fold=6", "affectnet", "mafw,fold="])
def test_bad_arguments(arg):
    with pytest.raises(ValueError, match="fold|takes"):
        dferclip.get_config(arg)


def test_command_line_with_descriptor_sentences():
    """One command per dataset; DFER-CLIP's own sentences can be passed as a tuple override (commas
    inside the sentences are fine)."""
    argv = [
        "main",
        "--config=configs/dferclip.py:mafw,fold=2",
        "--config.model.class_cues=('a b, c, and d.', 'e, f.')",
    ]
    fv = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, flag_values=fv, lock_config=True, sys_argv=argv)
    fv(argv)
    assert fv.config.data.dir == "/data/shards/mafw_fold2"
    assert tuple(fv.config.model.class_cues) == ("a b, c, and d.", "e, f.")
