"""The assembled GRACE model: DFER-CLIP equivalence, gradients, aux, jit over split state, shapes."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from grace_jax import losses
from grace_jax.configs import base
from grace_jax.models import clip as clip_lib
from grace_jax.models import grace, prompts

SOT, EOT = 1022, 1023  # the tiny CLIP's vocabulary ends with them, as OpenAI's does


def _tokens(num_classes=7, seed=0, n_ctx=8):
    """Hand-built class texts: names of 1-3 tokens, cues of 5-14 tokens, 77 positions."""
    rng = np.random.default_rng(seed)

    def rows(lo, hi):
        ids = np.zeros((num_classes, 77), np.int32)
        eot = np.zeros(num_classes, np.int32)
        for c in range(num_classes):
            n = int(rng.integers(lo, hi))
            ids[c, 0], ids[c, 1 : 1 + n], ids[c, 1 + n] = SOT, rng.integers(1, 1000, n), EOT
            eot[c] = 1 + n
        return ids, eot

    name_ids, name_eot = rows(1, 4)
    prompt_ids, prompt_eot = prompts.insert_context_slots(name_ids, name_eot, n_ctx)
    cue_ids, cue_eot = rows(5, 15)
    return prompts.ClassTokens(prompt_ids, prompt_eot, cue_ids, cue_eot)


def _cfg(motion=True, cate=True, ot=True, captions=False, num_frames=4):
    cfg = base.get_config().model
    cfg.num_classes = 7  # base's 0 (the data's count) is for training runs
    cfg.clip.variant = "tiny"
    cfg.num_frames = num_frames
    cfg.motion.enabled, cfg.cate.enabled, cfg.ot.enabled = motion, cate, ot
    cfg.cate.captions = captions
    cfg.cate.heads = 4
    return cfg


def _images(b, t, size=32, seed=0):
    return jnp.asarray(np.random.default_rng(seed).normal(size=(b, t, size, size, 3)), jnp.float32)


def _layer_norm(x, ln, eps=1e-5):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / jnp.sqrt(var + eps) * ln.scale[...] + ln.bias[...]


def _dferclip_logits(model, images, tokens: prompts.ClassTokens):
    """DFER-CLIP written out: per-frame CLIP CLS -> temporal transformer -> cosine with the prompts'
    EOT features (full 77-token prompts, contexts spliced in) / 0.01."""
    clip = model.clip
    b, t = images.shape[:2]
    cls, _ = clip.encode_image(images.reshape((b * t,) + images.shape[2:]))
    x = cls.reshape(b, t, -1)
    tm = model.temporal
    x = jnp.concatenate([jnp.broadcast_to(tm.cls_token[...], (b, 1, x.shape[-1])), x], axis=1)
    x = x + tm.pos_embedding[...][:, : t + 1]
    for blk in tm.blocks:
        h = _layer_norm(x, blk.norm1) @ blk.to_qkv.kernel[...]
        q, k, v = jnp.split(h.reshape(b, t + 1, 3 * 8, 64), 3, axis=2)  # 8 heads of 64
        a = jax.nn.softmax(jnp.einsum("bqhd,bkhd->bhqk", q, k) / 8.0, axis=-1)
        o = jnp.einsum("bhqk,bkhd->bqhd", a, v).reshape(b, t + 1, 512)
        x = x + o @ blk.to_out.kernel[...] + blk.to_out.bias[...]
        h = _layer_norm(x, blk.norm2) @ blk.fc1.kernel[...] + blk.fc1.bias[...]
        # DFER-CLIP's Temporal_Model.py defines its GELU as the tanh approximation.
        h = 0.5 * h * (1 + jnp.tanh(np.sqrt(2 / np.pi) * (h + 0.044715 * h**3)))
        x = x + h @ blk.fc2.kernel[...] + blk.fc2.bias[...]
    video = x[:, 0] / jnp.linalg.norm(x[:, 0], axis=-1, keepdims=True)
    emb = clip.embed_tokens(jnp.asarray(tokens.prompt_ids))
    emb = emb.at[:, 1:9].set(model.prompts.ctx[...])
    text, _ = clip.encode_text_embeddings(emb, jnp.asarray(tokens.prompt_eot))
    text = text / jnp.linalg.norm(text, axis=-1, keepdims=True)
    return video @ text.T / 0.01


@pytest.mark.slow
def test_all_components_off_is_exactly_dferclip():
    tokens = _tokens()
    model = grace.GRACE(_cfg(False, False, False), tokens, rngs=nnx.Rngs(0))
    images = _images(2, 4)
    logits, aux = nnx.jit(lambda m, x: m(x))(model, images)
    ref = nnx.jit(lambda m, x: _dferclip_logits(m, x, tokens))(model, images)
    assert logits.shape == (2, 7)
    np.testing.assert_allclose(logits, ref, rtol=1e-5, atol=1e-4)
    assert set(aux) == {"motion_weights", "global_logits"}  # nothing else was computed
    # No GRACE parameters exist in the baseline.
    assert model.cate is None and model.motion_gate is None


def _split_step(model, images, labels, captions=None):
    """The hot step's shape: a pure function over the split state under jax.jit."""
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    @jax.jit
    def step(params, rest, images, labels, captions):
        def loss_fn(p):
            logits, aux = nnx.merge(graphdef, p, rest)(images, captions=captions)
            loss, _ = losses.grace_loss(logits=logits, labels=labels, aux=aux)
            return loss, (logits, aux)

        return jax.value_and_grad(loss_fn, has_aux=True)(params)

    return step(params, rest, images, labels, captions)


@pytest.fixture(scope="module")
def full_step():
    """(((loss, (logits, aux)), grads), tokens): full GRACE (motion, CATE with captions, OT over the
    20 most moving visual tokens) through `_split_step` on 3 clips. One compiled program of the train
    step's shape serves the gradient test and the aux test (compiling it takes most of their time)."""
    tokens = _tokens()
    cfg = _cfg(captions=True)
    cfg.motion.top_k = 20
    model = grace.GRACE(cfg, tokens, rngs=nnx.Rngs(0))
    images = _images(3, 4)
    captions = np.zeros((3, 20), np.int32)
    captions[:, 0] = SOT
    captions[:, 1:6] = np.arange(15).reshape(3, 5) + 10
    captions[:, 6] = EOT
    return _split_step(model, images, jnp.array([0, 3, 6]), jnp.asarray(captions)), tokens


@pytest.mark.slow
def test_full_grace_gradients_finite_for_every_parameter_group(full_step):
    (loss, (logits, aux)), grads = full_step[0]
    assert np.isfinite(float(loss)) and logits.shape == (3, 7)
    assert aux["caption_scores"].shape == (3, 3)
    flat = {"/".join(map(str, k)): np.asarray(v[...]) for k, v in nnx.to_flat_state(grads)}
    for name, g in flat.items():
        assert np.all(np.isfinite(g)), name
    groups = {
        "clip/vision_model": 0.0,
        "clip/visual_projection": 0.0,
        "prompts/ctx": 0.0,
        "temporal/": 0.0,
        "motion_gate": 0.0,
        "motion_head/out": 0.0,
        "motion_head/gain": 0.0,
        "cate/gate": 0.0,
        "cate/score_out": 0.0,
    }
    for name, g in flat.items():
        for prefix in groups:
            if name.startswith(prefix):
                groups[prefix] = max(groups[prefix], float(np.abs(g).max()))
    for prefix, largest in groups.items():
        assert largest > 0.0, f"no gradient reaches {prefix}"


def test_aux_and_ot_outputs(full_step):
    (_, (logits, aux)), _ = full_step[0]
    tokens = full_step[1]
    b, t, p, c = 3, 4, 16, 7
    n = int(tokens.cue_eot.max()) + 1
    assert aux["motion_weights"].shape == (b, t, p)
    np.testing.assert_allclose(aux["motion_weights"].sum((1, 2)), 1.0, rtol=1e-5)
    maps = np.asarray(aux["class_maps"])
    assert maps.shape == (b, c, t, p)
    np.testing.assert_allclose(maps.sum((2, 3)), 1.0, rtol=1e-4)  # every class's map is a distribution
    assert int((maps > 0).sum(axis=(2, 3)).max()) <= 20  # top_k: 5 tokens of each of the 4 frames
    assert np.all((maps > 0).sum(axis=3) <= 5)
    pred = np.asarray(jnp.argmax(logits, -1))
    np.testing.assert_array_equal(aux["ot_visual_mass"], maps[np.arange(b), pred])
    for key in (
        "ot_converged",
        "ot_iterations",
        "ot_epsilon",
        "ot_cost_std",
        "ot_mutual_information",
        "ot_visual_entropy",
    ):
        assert aux[key].shape == (b, c), key
    assert aux["ot_converged"].dtype == jnp.bool_
    assert np.all(np.asarray(aux["ot_mutual_information"]) >= -1e-6)
    assert np.all(np.asarray(aux["ot_visual_entropy"]) <= np.log(20) + 1e-5)
    # Padding and special tokens of every cue carry no text mass, hence no transport.
    mass = np.asarray(aux["text_mass"])
    valid = np.asarray(prompts.valid_token_mask(n, jnp.asarray(tokens.cue_eot)))
    assert np.all(mass[~valid] == 0.0) and np.allclose(mass.sum(-1), 1.0, rtol=1e-5)
    fused = 0.5 * aux["global_logits"] + 0.5 * aux["ot_logits"]
    np.testing.assert_allclose(logits, fused, rtol=1e-5, atol=1e-4)


def _maps(cfg, images, seed=0):
    model = grace.GRACE(cfg, _tokens(), rngs=nnx.Rngs(seed))
    _, aux = nnx.jit(lambda m, x: m(x))(model, images)
    return np.asarray(aux["class_maps"]), np.asarray(aux["motion_weights"])


def _moving_images(b=2, t=4, size=32, seed=3):
    """Textured frames with one moving square, so the motion weights are far from uniform."""
    rng = np.random.default_rng(seed)
    x = np.repeat(rng.normal(size=(b, 1, size, size, 3)), t, axis=1)
    for i in range(t):
        x[:, i, 8:16, 16:24] += np.sin(i) * rng.normal(size=(b, 8, 8, 3))
    return jnp.asarray(x, jnp.float32)


@pytest.mark.slow
def test_balanced_ablation_maps_are_the_motion_weights_for_every_class():
    """The old model (fixed clip-max prior as a hard visual marginal): every class's map is the
    motion weights, so the transport says nothing about where a class is."""
    cfg = _cfg()
    cfg.motion.weighting, cfg.motion.normalize, cfg.ot.tau_visual = "fixed", "clip_max", 1.0
    cfg.motion.alpha = 0.1  # the old default
    cfg.ot.relative_epsilon, cfg.ot.epsilon, cfg.ot.threshold = False, 0.1, 1e-4
    cfg.ot.max_iterations = 1000
    images = _moving_images()
    maps, weights = _maps(cfg, images)
    for c in range(7):
        assert np.abs(maps[:, c] - weights).sum((1, 2)).max() < 2e-3
    # ... and those weights are the fixed prior of the old model, softmax(m / max(m) / tau).
    from grace_jax.models import motion

    prior = motion.motion_weights(motion.pixel_motion(images, 8), tau=0.1, alpha=0.1, normalize="clip_max")
    np.testing.assert_allclose(weights, prior, rtol=1e-5, atol=1e-7)


@pytest.mark.slow
def test_relaxed_maps_differ_between_classes_and_from_the_prior():
    cfg = _cfg()  # the defaults: learned weighting, semi-relaxed visual side
    maps, weights = _maps(cfg, _moving_images())
    between = [np.abs(maps[:, i] - maps[:, j]).sum((1, 2)).min() for i in range(7) for j in range(i)]
    assert min(between) > 0.05, min(between)
    assert np.abs(maps - weights[:, None]).sum((2, 3)).min() > 0.1


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["pixel", "feature"])
def test_motion_only_and_ot_only_ablations_run(mode):
    tokens = _tokens()
    cfg = _cfg(motion=True, cate=False, ot=True)
    cfg.motion.mode = mode
    model = grace.GRACE(cfg, tokens, rngs=nnx.Rngs(2))
    logits, aux = nnx.jit(lambda m, x: m(x))(model, _images(1, 4))
    assert logits.shape == (1, 7) and np.all(np.isfinite(np.asarray(logits)))
    # Without CATE the OT text side is the coarse prompt's words: uniform over 0 < p < EOT.
    mass = np.asarray(aux["text_mass"])
    eot = tokens.prompt_eot
    for c in range(7):
        np.testing.assert_allclose(mass[c, 1 : eot[c]], 1.0 / (eot[c] - 1), rtol=1e-6)
        assert np.all(mass[c, eot[c] :] == 0.0) and mass[c, 0] == 0.0


@pytest.mark.slow
def test_vit_b16_sixteen_frames_forward_shapes():
    """The paper's setting: ViT-B/16, T=16, 224 px; batch 1 to keep CPU time in check.

    Every size of it is kept (ViT-B/16's widths, heads, MLPs and patches, 16 frames of 224 px, 16 x
    196 visual tokens in OT, the base config's temporal model, CATE and prompts) except the depth of
    the CLIP towers: 2 layers each instead of 12. Each layer runs the same code, GRACE sees the towers
    only through their outputs, whose shapes at 12 layers clip_test checks (ViT-B/16 in
    test_shapes_and_names_match_hugging_face), and computing the other 10 layers was most of this
    test's CPU time.
    """
    cfg = base.get_config().model  # ViT-B/16, T=16, everything on
    cfg.num_classes = 7  # base's 0 (the data's count) is for training runs
    b16 = clip_lib.clip_config(cfg.clip.variant)
    assert b16 == clip_lib.clip_config("ViT-B/16")
    cfg.clip.architecture = clip_lib.config_to_dict(
        dataclasses.replace(
            b16,
            vision=dataclasses.replace(b16.vision, layers=2),
            text=dataclasses.replace(b16.text, layers=2),
        )
    )
    model = grace.GRACE(cfg, _tokens(), rngs=nnx.Rngs(0))
    images = jnp.zeros((1, 16, 224, 224, 3)) + jnp.linspace(0, 1, 16)[None, :, None, None, None]
    logits, aux = nnx.jit(lambda m, x: m(x))(model, images)
    assert logits.shape == (1, 7)
    assert aux["motion_weights"].shape == (1, 16, 196)
    assert aux["ot_visual_mass"].shape == (1, 16, 196)
    assert aux["class_maps"].shape == (1, 7, 16, 196)
    assert np.all(np.isfinite(np.asarray(logits)))


@pytest.mark.parametrize(
    "name, platform, expected",
    [("auto", "gpu", jnp.bfloat16), ("auto", "tpu", jnp.bfloat16), ("auto", "cpu", jnp.float32),
     ("float32", "gpu", jnp.float32), ("bfloat16", "cpu", jnp.bfloat16)],
)  # fmt: skip
def test_compute_dtype_auto_is_bf16_on_accelerators_fp32_on_cpu(name, platform, expected):
    assert grace.compute_dtype(name, platform) == expected


def test_base_config_builds_fp32_on_cpu_and_bf16_when_asked():
    assert base.get_config().model.clip.dtype == "auto"
    for name, expected in (("auto", jnp.float32), ("bfloat16", jnp.bfloat16)):
        cfg = _cfg()
        cfg.clip.dtype = name
        model = grace.GRACE(cfg, _tokens(), rngs=nnx.Rngs(0))
        assert model.clip.dtype == expected  # the tests' backend is CPU
        kernel = model.clip.vision_model.encoder.layers[0].mlp.fc1.kernel[...]
        assert kernel.dtype == jnp.float32  # parameters stay fp32 either way
    with pytest.raises(ValueError, match="model.clip.dtype='half'"):
        grace.compute_dtype("half")


@pytest.mark.slow
def test_caption_ot_is_bounded_and_a_clip_without_caption_does_not_slow_the_others():
    """Cutting captions to cate.caption_tokens changes nothing for captions shorter than the cut (the
    text tower is causal); a caption-less clip converges at once instead of running every problem of
    the batch to max_iterations."""
    tokens = _tokens()
    images = _images(3, 4)
    captions = np.zeros((3, 77), np.int32)
    captions[:, 0] = SOT
    captions[:2, 1:6] = np.arange(10).reshape(2, 5) + 10
    captions[:2, 6] = EOT
    captions[2, 1] = EOT  # clip 2: an empty caption, as the loader writes for a clip without one
    out = {}
    for length in (77, 12):
        cfg = _cfg(captions=True)
        cfg.cate.caption_tokens, cfg.cate.caption_top_k = length, 0
        cfg.ot.threshold, cfg.ot.max_iterations = 1e-3, 100
        model = grace.GRACE(cfg, tokens, rngs=nnx.Rngs(0))
        _, aux = nnx.jit(lambda m, x, c: m(x, captions=c))(model, images, jnp.asarray(captions))
        out[length] = aux
    # Real captions score the same cut or not (caption 2's stand-in is spread over the kept positions,
    # so it differs; the loss masks that column out).
    np.testing.assert_allclose(out[12]["caption_scores"][:, :2], out[77]["caption_scores"][:, :2], rtol=1e-4, atol=1e-5)
    iters = np.asarray(out[12]["caption_ot_iterations"])
    assert iters.shape == (3, 3) and iters.max() < 100, iters  # no problem ran to the budget
    # Bounded visual side: caption_top_k keeps that many tokens per clip (here 2 of each frame's 16).
    cfg = _cfg(captions=True)
    cfg.cate.caption_top_k = 8
    model = grace.GRACE(cfg, tokens, rngs=nnx.Rngs(0))
    _, aux = nnx.jit(lambda m, x, c: m(x, captions=c))(model, images, jnp.asarray(captions))
    assert aux["caption_scores"].shape == (3, 3) and np.all(np.isfinite(np.asarray(aux["caption_scores"])))
