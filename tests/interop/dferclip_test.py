"""grace_jax.interop.dferclip: a checkpoint saved exactly as DFER-CLIP's main.py saves it becomes a run.

The PyTorch DFER-CLIP is tests/dferclip_torch.py (written from DFER-CLIP's official code, with its
state_dict key layout) at tiny sizes with random weights, one SGD step of main.py's optimizer off its
initialisation, wrapped in DataParallel and saved with main.py's dict (epoch, state_dict, best_acc,
optimizer, recorder: an object of a class living in __main__, as main.py's RecorderMeter does).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
import torch
from flax import nnx
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import dferclip_torch as dt  # noqa: E402

from grace_jax import predict  # noqa: E402
from grace_jax.data import input_pipeline  # noqa: E402
from grace_jax.interop import dferclip  # noqa: E402
from grace_jax.run import runs  # noqa: E402
from grace_jax.text import tiny_vocab  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SENTENCES = (  # descriptor-style sentences of grace_jax's own, within the tiny vocabulary's words
    "cheeks raised, lip corners pulled up.",
    "brows drawn together, mouth corners down.",
    "a calm face, the person looks neutral.",
    "brows lowered and drawn together, lips tense.",
    "eyes widened, jaw dropped.",
    "nose wrinkled, upper lip raised.",
    "eyes widened, brows raised, lips tense.",
)
FRAMES = 8
SIZE = dt.TINY  # ViT 32 px / patch 8 / width 64, text width 64, joint 32, vocabulary 1024


class RecorderMeter:
    """Stands for main.py's RecorderMeter: training curves in numpy arrays, pickled by reference to
    a class in __main__."""

    def __init__(self, total_epoch):
        self.total_epoch, self.current_epoch = total_epoch, 3
        self.epoch_losses = np.zeros((total_epoch, 2), np.float32)
        self.epoch_accuracy = np.ones((total_epoch, 2), np.float32)


RecorderMeter.__module__ = "__main__"


def _torch_model():
    import transformers

    hf = transformers.CLIPTokenizer.from_pretrained(tiny_vocab.cached_tiny_vocab())
    tokenize = dt.make_tokenize(
        lambda s: hf(s, add_special_tokens=False)["input_ids"], hf.bos_token_id, hf.eos_token_id
    )
    torch.manual_seed(0)
    clip = dt.CLIP(SIZE).randomize_norms_and_biases()
    model = dt.GenerateModel(SENTENCES, clip, tokenize, num_frames=FRAMES, temporal_dim_head=16, temporal_mlp_dim=64)
    dt.set_trainable(model)
    optimizer = dt.make_optimizer(model, lr=0.1, lr_image_encoder=0.01, lr_prompt_learner=0.1)
    video = torch.rand(2, FRAMES, 3, SIZE.image_resolution, SIZE.image_resolution)
    loss = torch.nn.functional.cross_entropy(model(video), torch.tensor([0, 3]))
    loss.backward()
    optimizer.step()  # off the initialisation, momentum buffers in the optimizer state
    return model.eval(), optimizer


def _save_as_main_py(path, model, optimizer) -> dict:
    """torch.save as main.py does; returns what was saved but the recorder."""
    saved = {
        "epoch": 7,
        "state_dict": torch.nn.DataParallel(model).state_dict(),
        "best_acc": torch.tensor([61.25])[0],
        "optimizer": optimizer.state_dict(),
    }
    main = sys.modules["__main__"]
    had = hasattr(main, "RecorderMeter")
    main.RecorderMeter = RecorderMeter
    try:
        torch.save({**saved, "recorder": RecorderMeter(50)}, path)
    finally:
        if not had:
            del main.RecorderMeter
    return saved


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    """(the .pth path, the torch model, what was saved but the recorder) of a DFER-CLIP run on
    DFEW fold 2, named as main.py names its checkpoints."""
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    model, optimizer = _torch_model()
    path = str(tmp_path_factory.mktemp("dferclip") / "DFEW-2309051200-set2-model_best.pth")
    saved = _save_as_main_py(path, model, optimizer)
    yield path, model, saved
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def converted(official, tmp_path_factory):
    """The run directory the command line (grace_jax.convert) makes of it, and the printed output."""
    path = official[0]
    workdir = str(tmp_path_factory.mktemp("runs") / "dferclip_dfew2")
    cmd = [sys.executable, "-m", "grace_jax.convert", "dferclip", f"--checkpoint={path}",
           f"--workdir={workdir}", f"--tokenizer={tiny_vocab.cached_tiny_vocab()}"]  # fmt: skip
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return workdir, done.stdout


def _clips(seed=1, batch=2):
    rng = np.random.default_rng(seed)
    side = SIZE.image_resolution
    return rng.integers(0, 256, (batch, FRAMES, side, side, 3), dtype=np.uint8)


def _torch_logits(model, video_uint8):
    with torch.no_grad():
        frames = torch.from_numpy(video_uint8).permute(0, 1, 4, 2, 3).float().div(255)
        return model(frames).numpy()


@pytest.mark.slow
def test_converted_logits_equal_pytorch(official, converted):
    model_t = official[1]
    run = runs.load(converted[0])
    assert run.checkpoint == "last" and run.step == 0
    model = nnx.merge(run.graphdef, run.state["params"], run.state["frozen"], run.state["rest"])
    video = _clips()
    normalize = run.config.data.normalize
    assert normalize == "unit" and run.config.data.augment == "dferclip"
    logits, _ = jax.jit(lambda v: model(input_pipeline.normalize_on_device(v, normalize)))(video)
    expected = _torch_logits(model_t, video)
    np.testing.assert_allclose(np.asarray(logits), expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())


@pytest.mark.slow
def test_predict_on_frame_folders_equals_pytorch_softmax(official, converted, tmp_path):
    model_t = official[1]
    video = _clips(seed=2, batch=1)
    folder = tmp_path / "clip_0001"
    folder.mkdir()
    for i, frame in enumerate(video[0]):  # lossless, at the model's size: the frames as they are
        Image.fromarray(frame).save(folder / f"{i + 1:05d}.png")
    results, errors = predict.run(converted[0], [str(folder)], str(tmp_path / "out"), pictures=False, face_crop="none")
    assert errors == []
    logits = _torch_logits(model_t, video)[0]
    softmax = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    got = np.array(list(results[0]["probabilities"].values()))
    np.testing.assert_allclose(got, softmax, atol=2e-6)  # predictions.json rounds to 6 decimals


def test_recovered_token_ids_are_the_ones_the_model_was_built_with(official, converted):
    model_t = official[1]
    workdir, stdout = converted
    n_ctx = model_t.prompt_learner.n_ctx
    built = model_t.tokenized_prompts.numpy()
    eot = built.argmax(-1)
    expected = [[int(row[0])] + [int(t) for t in row[1 + n_ctx : e + 1]] for row, e in zip(built, eot)]
    config = json.load(open(os.path.join(workdir, "config.json")))
    assert config["model"]["prompt"]["token_ids"] == expected
    info = json.load(open(os.path.join(workdir, dferclip.CONVERSION_FILE)))
    assert info["token_ids"] == expected
    # The ids decoded with the vocabulary they came from are the sentences (CLIP's decoding puts
    # spaces before punctuation).
    assert [t.replace(" ,", ",").replace(" .", ".") for t in info["texts"]] == list(SENTENCES)
    assert config["model"]["class_cues"] == info["texts"]
    assert (info["epoch"], info["best_acc"]) == (7, pytest.approx(61.25))
    assert info["recipe"] == "configs/dferclip.py:dfew,fold=2"
    assert json.load(open(os.path.join(workdir, "classes.json")))[:3] == ["happiness", "sadness", "neutral"]
    assert "class 0: cheeks raised" in stdout
    # The model holds DFER-CLIP's EOT positions and its sizes, read from the tensors.
    run = runs.load(workdir)
    np.testing.assert_array_equal(np.asarray(run.state["rest"]["prompts"]["eot"][...]), eot)
    m = run.config.model
    assert (m.num_frames, m.prompt.n_ctx, m.temporal.heads, m.temporal.dim_head, m.temporal.mlp_dim) == (
        FRAMES, 8, 8, 16, 64)  # fmt: skip
    assert m.clip.architecture.vision.heads == 1 and m.clip.architecture.text.vocab_size == 1024


@pytest.mark.parametrize(
    "change,key",
    [
        ("remove", "module.temporal_net.temporal_transformer.layers.0.1.fn.fn.net.3.bias"),
        ("remove", "module.image_encoder.ln_pre.bias"),  # a view: still part of the layout
        ("add", "module.temporal_net.extra.weight"),
    ],
)
def test_missing_or_unknown_key_fails_naming_it_and_writes_nothing(official, tmp_path, change, key):
    saved = dict(official[2], state_dict=dict(official[2]["state_dict"]))
    if change == "remove":
        del saved["state_dict"][key]
    else:
        saved["state_dict"][key] = torch.zeros(3)
    broken = str(tmp_path / "broken.pth")
    torch.save(saved, broken)
    workdir = tmp_path / "runs" / "x"
    with pytest.raises(dferclip.ConversionError, match=key.replace(".", r"\.")):
        dferclip.convert_dferclip(broken, str(workdir))
    assert not workdir.exists()
    assert not (tmp_path / "runs").exists() or os.listdir(tmp_path / "runs") == []


def test_views_must_equal_the_tensors_they_view(official, tmp_path):
    sd = dict(official[2]["state_dict"])
    sd["module.image_encoder.proj"] = sd["module.image_encoder.proj"].clone() + 1.0
    broken = str(tmp_path / "diverged.pth")
    torch.save({"state_dict": sd}, broken)
    with pytest.raises(dferclip.ConversionError, match="image_encoder.proj.*clip_model_.visual.proj"):
        dferclip.convert_dferclip(broken, str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()


class _Payload:
    def __reduce__(self):
        return (os.system, ("true",))


def test_a_refused_checkpoint_writes_nothing(official, tmp_path):
    evil = str(tmp_path / "evil.pth")
    torch.save({"state_dict": official[2]["state_dict"], "epoch": _Payload()}, evil)
    with pytest.raises(dferclip.UnsafeCheckpointError, match="refused"):
        dferclip.convert_dferclip(evil, str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()


def test_existing_workdir_is_refused(official, converted):
    with pytest.raises(dferclip.ConversionError, match="already exists"):
        dferclip.convert_dferclip(official[0], converted[0])


@pytest.mark.slow
def test_converted_run_fine_tunes_and_evaluates(converted, synthfer_dir, tmp_path):
    """Training continues from the converted weights (step 0) with the run's own config."""
    import shutil

    from grace_jax import train
    from grace_jax.configs import run as run_config

    workdir = str(tmp_path / "finetune")
    shutil.copytree(converted[0], workdir)
    config = run_config.get_config(workdir)
    assert isinstance(config.optim.groups, tuple) and config.model.prompt.token_ids
    config.data.dir = synthfer_dir  # SynthFER: 7 classes, 32 px frames, as the tiny model takes
    config.data.num_workers = 0
    config.optim.batch_size = 8
    config.optim.num_train_steps = 2
    config.train.log_every_steps = 1
    config.train.eval_every_steps = 1000
    before = runs.load(workdir).state
    summary = train.train_and_evaluate(config, workdir)
    assert summary["step"] == 2 and summary["num_examples"] == 20
    after = runs.load(workdir, "last").state
    text = ("clip", "text_model", "final_layer_norm", "scale")
    vision = ("clip", "vision_model", "post_layernorm", "scale")

    def leaf(state, part, path):
        node = state[part]
        for p in path:
            node = node[p]
        return np.asarray(node[...])

    # The frozen text tower is the converted one exactly; the trained parts moved a little from it.
    np.testing.assert_array_equal(leaf(after, "frozen", text), leaf(before, "frozen", text))
    moved = np.abs(leaf(after, "params", vision) - leaf(before, "params", vision)).max()
    assert 0 < moved < 1e-2
    assert np.isfinite(summary["loss"])  # its evaluation ran with DFER-CLIP's protocol (the config's)
