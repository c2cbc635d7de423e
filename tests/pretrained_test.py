"""Every dataset config starts from OpenAI's pretrained CLIP by hub name; random weights only by name.

The hub is stood in for by a tiny random CLIP written in the Hugging Face cache layout under the real
hub name (tests never touch the network)."""

import os
import subprocess
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from grace_jax import config_checks
from grace_jax.configs import base, dferclip, dfew, ferv39k, mafw
from grace_jax.infra import errors
from grace_jax.models import clip as clip_lib
from grace_jax.models import clip_checkpoint

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL = "openai/clip-vit-base-patch16"
# Sizes only: the CLIP fields (variant, init, tokenizer) stay as configs/ferv39k.py prints them.
SMALL = [
    "--config.model.num_frames=4",
    "--config.data.image_size=32",
    "--config.data.num_workers=0",
    "--config.optim.batch_size=8",
    "--config.optim.num_train_steps=1",
    "--config.model.prompt.n_ctx=4",
    "--config.model.temporal.heads=4",
    "--config.model.temporal.dim_head=8",
    "--config.model.temporal.mlp_dim=64",
    "--config.model.cate.heads=4",
    "--config.train.log_every_steps=1",
]


def _hub_cache(home, name: str):
    """`hf download`'s layout under HF_HOME/hub, holding a tiny random CLIP and its tokenizer."""
    from clip_fixtures import write_hf_clip, write_tokenizer_dir

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = home / "hub" / ("models--" + name.replace("/", "--"))
    snap = repo / "snapshots" / commit
    snap.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    write_hf_clip(str(snap), clip_lib.clip_config("tiny"))
    write_tokenizer_dir(str(snap))
    return snap


def _main(args, home, **env):
    env = dict(os.environ, HF_HOME=str(home), HF_HUB_OFFLINE="1", PYTHONPATH=REPO, **env)
    return subprocess.run(
        [sys.executable, "-m", "grace_jax.main", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=900
    )


@pytest.mark.slow
def test_ferv39k_as_printed_starts_from_the_hub_cache_weights(synthfer_dir, tmp_path):
    home = tmp_path / "hf"
    snap = _hub_cache(home, MODEL)
    workdir = tmp_path / "ferv39k"
    done = _main(
        ["--config=configs/ferv39k.py", f"--workdir={workdir}", f"--config.data.dir={synthfer_dir}", *SMALL], home
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert f"CLIP starts from pretrained weights: {MODEL} (hub cache: {snap})." in done.stdout, done.stdout
    # The text tower is frozen (lr 0), so after a step the checkpoint holds the cache's weights exactly.
    with ocp.CheckpointManager(str(workdir / "checkpoints" / "last")) as manager:
        state = manager.restore(manager.latest_step(), args=ocp.args.Composite(state=ocp.args.StandardRestore()))[
            "state"
        ]
    frozen = [np.asarray(x) for x in jax.tree.leaves(state["frozen"])]
    from flax import nnx

    cached = clip_checkpoint.load_pretrained(str(snap))
    text = [np.asarray(x) for x in jax.tree.leaves(nnx.state(cached.text_model, nnx.Param))]
    assert len(text) > 10
    for want in text:
        assert any(got.shape == want.shape and np.array_equal(got, want) for got in frozen)


@pytest.mark.slow
def test_ferv39k_as_printed_offline_without_a_cache_stops_in_one_line(tmp_path):
    done = _main(["--config=configs/ferv39k.py", f"--workdir={tmp_path / 'run'}"], tmp_path / "empty_hf")
    assert done.returncode == 1, done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if ": error: " in line]
    assert len(errors) == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]
    line = errors[0]
    assert line.startswith(f"grace_jax.main: error: --config.model.clip.init={MODEL}: ")
    assert "HF_HUB_OFFLINE is set" in line and f"hf download {MODEL}" in line
    assert "--config.model.clip.init=<folder> (or an OpenAI .pt file" in line
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "config, variant",
    [
        (dfew.get_config("fold=2"), "ViT-B/16"),
        (ferv39k.get_config(), "ViT-B/16"),
        (mafw.get_config("fold=5"), "ViT-B/16"),
        (dferclip.get_config("dfew,fold=1"), "ViT-B/32"),
        (dferclip.get_config("ferv39k"), "ViT-B/32"),
        (base.get_config(), "ViT-B/16"),
    ],
)
def test_every_dataset_config_names_openai_weights_of_its_variant(config, variant):
    assert config.model.clip.variant == variant
    assert (
        config.model.clip.init
        == base.OPENAI_CLIP[variant]
        == {"ViT-B/16": "openai/clip-vit-base-patch16", "ViT-B/32": "openai/clip-vit-base-patch32"}[variant]
    )


def test_random_weights_only_by_name(tiny_config):
    config = tiny_config("unused", 1)
    assert config.model.clip.init == "random"
    assert "random weights" in config_checks.describe_clip_init(config.model.clip)
    config.model.clip.init = ""
    with pytest.raises(errors.ConfigError, match=r"model.clip.init is empty: .*--config.model.clip.init=random"):
        config_checks.check_clip(config.model)
    b16 = base.get_config()
    b16.model.clip.init = ""
    with pytest.raises(
        errors.ConfigError, match=r"OpenAI's ViT-B/16: --config.model.clip.init=openai/clip-vit-base-patch16"
    ):
        config_checks.check_clip(b16.model)
    # A variant changed without its weights: the weights of the other variant are refused by name.
    l14 = base.get_config()
    l14.model.clip.variant = "ViT-L/14"
    with pytest.raises(errors.ConfigError, match=r"holds OpenAI's ViT-B/16.*init=openai/clip-vit-large-patch14"):
        config_checks.check_clip(l14.model)
    # random without a tokenizer: a clear error, not a silent fallback.
    config.model.clip.init, config.model.clip.tokenizer = "random", ""
    with pytest.raises(errors.ConfigError, match="gives no tokenizer"):
        config_checks.check_clip(config.model)
