"""CLIP towers: shapes, parameter names, parity with transformers' PyTorch CLIP, compilation."""

import dataclasses
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from flax import nnx

sys.path.insert(0, os.path.dirname(os.path.dirname(__file__)))
import clip_fixtures  # noqa: E402

from grace_jax.models import clip as clip_lib  # noqa: E402
from grace_jax.models import clip_checkpoint  # noqa: E402

VARIANTS = ["tiny", "ViT-B/32", "ViT-B/16", "ViT-L/14"]


@pytest.mark.slow
@pytest.mark.parametrize("variant", VARIANTS)
def test_shapes_and_names_match_hugging_face(variant):
    config = clip_lib.clip_config(variant)
    model = nnx.eval_shape(lambda: clip_lib.CLIP(config, rngs=nnx.Rngs(0)))
    n, v, t = 3, config.vision, config.text
    images = jax.ShapeDtypeStruct((n, v.image_size, v.image_size, 3), jnp.float32)
    cls, patches = nnx.eval_shape(lambda m, x: m.encode_image(x), model, images)
    assert cls.shape == (n, config.projection_dim)
    assert patches.shape == (n, v.num_patches, config.projection_dim)
    ids = jax.ShapeDtypeStruct((n, t.context_length), jnp.int32)
    eot, tokens = nnx.eval_shape(lambda m, x: m.encode_text(x), model, ids)
    assert eot.shape == (n, config.projection_dim)
    assert tokens.shape == (n, t.context_length, config.projection_dim)

    with torch.device("meta"):  # Names and shapes only: nothing is allocated, even for ViT-L.
        reference = transformers.CLIPModel(clip_fixtures.hf_config(config))
    expected = {k: tuple(p.shape) for k, p in reference.state_dict().items() if "position_ids" not in k}
    ours = {}
    for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param)):
        shape = tuple(var.shape)
        if path[-1] == "kernel":  # Back to PyTorch's layout for the comparison.
            shape = shape[::-1] if len(shape) == 2 else (shape[3], shape[2], shape[0], shape[1])
        ours[clip_checkpoint.hf_key(path)] = shape
    assert ours == expected


def _two_layers(config: clip_lib.CLIPConfig) -> clip_lib.CLIPConfig:
    """`config` cut to 2 layers per tower; widths, heads, MLP sizes, patch size, image size and context
    length stay the variant's."""
    return dataclasses.replace(
        config,
        vision=dataclasses.replace(config.vision, layers=2),
        text=dataclasses.replace(config.text, layers=2),
    )


# Random weights at realistic sizes: ViT-B/16's widths, heads, patch size, 224 px and 77 tokens. Every
# encoder layer runs the same code, so two per tower (what tiny has) cover it, the hand-over between
# layers included; the 12 layers' names and shapes are test_shapes_and_names_match_hugging_face's.
@pytest.mark.parametrize("variant", ["tiny", "ViT-B/16"])
def test_parity_with_transformers(variant, tmp_path):
    config = _two_layers(clip_lib.clip_config(variant))
    reference = clip_fixtures.write_hf_clip(str(tmp_path), config, seed=1)
    model = clip_checkpoint.load_pretrained(str(tmp_path))
    assert model.config == config  # the checkpoint's sizes, the depth included
    rng = np.random.RandomState(0)
    size = config.vision.image_size
    images = rng.randn(2, size, size, 3).astype(np.float32)
    ids = rng.randint(1, config.text.vocab_size - 2, size=(2, config.text.context_length))
    ids[0, 9], ids[0, 10:] = config.text.eos_token_id, 0
    ids[1, 30:] = config.text.eos_token_id  # Padding with EOT, as OpenAI's tokenizer does.

    with torch.no_grad():
        vision = reference.vision_model(pixel_values=torch.from_numpy(images.transpose(0, 3, 1, 2)))
        cls_ref = reference.visual_projection(vision.pooler_output).numpy()
        hidden = reference.vision_model.post_layernorm(vision.last_hidden_state[:, 1:])
        patches_ref = reference.visual_projection(hidden).numpy()
        text = reference.text_model(input_ids=torch.from_numpy(ids))
        eot_ref = reference.text_projection(text.pooler_output).numpy()
        tokens_ref = reference.text_projection(text.last_hidden_state).numpy()

    cls, patches = jax.jit(lambda m, x: m.encode_image(x))(model, jnp.asarray(images))
    eot, tokens = jax.jit(lambda m, x: m.encode_text(x))(model, jnp.asarray(ids, jnp.int32))
    for ours, ref in [(cls, cls_ref), (patches, patches_ref), (eot, eot_ref), (tokens, tokens_ref)]:
        assert ours.shape == ref.shape
        np.testing.assert_allclose(np.asarray(ours), ref, atol=1e-4, rtol=0)
    assert float(jnp.abs(cls).max()) > 0.1  # Not trivially zero.


def test_position_interpolation_matches_transformers(tmp_path):
    config = clip_lib.clip_config("tiny")
    reference = clip_fixtures.write_hf_clip(str(tmp_path), config, seed=2)
    model = clip_checkpoint.load_pretrained(str(tmp_path))
    images = np.random.RandomState(1).randn(2, 56, 40, 3).astype(np.float32)  # 7x5 patch grid
    with torch.no_grad():
        out = reference.vision_model(
            pixel_values=torch.from_numpy(images.transpose(0, 3, 1, 2)),
            interpolate_pos_encoding=True,
        )
        hidden = reference.vision_model.post_layernorm(out.last_hidden_state)
        ref = reference.visual_projection(hidden).numpy()
    cls, patches = jax.jit(lambda m, x: m.encode_image(x))(model, jnp.asarray(images))
    assert patches.shape == (2, 35, config.projection_dim)
    np.testing.assert_allclose(np.asarray(cls), ref[:, 0], atol=1e-4, rtol=0)
    np.testing.assert_allclose(np.asarray(patches), ref[:, 1:], atol=1e-4, rtol=0)


def test_jitted_forward_compiles_once():
    model = clip_lib.CLIP(clip_lib.clip_config("tiny"), rngs=nnx.Rngs(0))
    graphdef, state = nnx.split(model)
    traces = []

    @jax.jit
    def forward(state, images):
        traces.append(1)
        return nnx.merge(graphdef, state).encode_image(images)

    for seed in range(3):
        images = jax.random.normal(jax.random.key(seed), (4, 32, 32, 3))
        forward(state, images)
    assert len(traces) == 1


@pytest.mark.slow
def test_remat_and_bf16_agree_with_default():
    config = clip_lib.clip_config("tiny")
    plain = clip_lib.CLIP(config, rngs=nnx.Rngs(3))
    remat = clip_lib.CLIP(config, rngs=nnx.Rngs(3), remat=True)
    half = clip_lib.CLIP(config, rngs=nnx.Rngs(3), dtype=jnp.bfloat16)
    images = jax.random.normal(jax.random.key(0), (2, 32, 32, 3))

    def loss(m):
        cls, patches = m.encode_image(images)
        return jnp.sum(cls**2) + jnp.sum(patches.astype(jnp.float32) ** 2)

    # Jitted, as training runs them (eagerly, compiling every primitive of the backward pass one by
    # one took most of this test's time). `remat` is part of the graph definition: the plain and the
    # rematerialised model are two programs, compiled separately, as are float32 and bfloat16.
    def primitives(m):
        graphdef, state = nnx.split(m)
        jaxpr = jax.make_jaxpr(lambda s: loss(nnx.merge(graphdef, s)))(state).jaxpr
        return {eqn.primitive.name for eqn in jaxpr.eqns}

    # jax.checkpoint's primitive ("remat2" in jax 0.10) wraps each block in the remat model only.
    is_remat = lambda name: name.startswith(("remat", "checkpoint"))  # noqa: E731
    assert any(map(is_remat, primitives(remat))) and not any(map(is_remat, primitives(plain)))
    grad = nnx.jit(nnx.grad(loss))
    grads_plain = grad(plain)
    grads_remat = grad(remat)
    for a, b in zip(jax.tree.leaves(grads_plain), jax.tree.leaves(grads_remat)):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)
    encode = nnx.jit(lambda m: m.encode_image(images))
    cls_half, _ = encode(half)
    cls_plain, _ = encode(plain)
    assert cls_half.dtype == jnp.bfloat16
    assert jax.tree.leaves(nnx.state(half, nnx.Param))[0].dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(cls_half, np.float32), cls_plain, atol=0.1)


def test_encode_text_embeddings_is_encode_text():
    model = clip_lib.CLIP(clip_lib.clip_config("tiny"), rngs=nnx.Rngs(0))
    ids = jnp.array([[1022, 5, 6, 1023, 1023], [1022, 7, 1023, 1023, 1023]], jnp.int32)
    eot, tokens = model.encode_text(ids)
    eot2, tokens2 = model.encode_text_embeddings(model.embed_tokens(ids), jnp.array([3, 2]))
    np.testing.assert_array_equal(eot, eot2)
    np.testing.assert_array_equal(tokens, tokens2)
    np.testing.assert_array_equal(eot[1], tokens[1, 2])


def test_unknown_variant_is_a_clear_error():
    with pytest.raises(ValueError, match="ViT-B/16"):
        clip_lib.clip_config("ViT-H/14")
