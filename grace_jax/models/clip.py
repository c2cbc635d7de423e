"""CLIP image and text towers in Flax NNX, returning every token, not only the pooled one.

The module tree mirrors Hugging Face's `CLIPModel` (`vision_model.encoder.layers.3.self_attn.q_proj`,
...), so a Hugging Face checkpoint maps onto it by renaming leaves (see `clip_checkpoint.py`).

GRACE needs dense features: the projected CLS token and the projected patch tokens of every frame, and
the projected feature of every text token. Patch tokens go through `post_layernorm` and
`visual_projection` exactly like CLS does (as in MaskCLIP / PLOT), so both live in the joint space.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from grace_jax.models import position_interpolation

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class VisionConfig:
    image_size: int = 224
    patch_size: int = 16
    width: int = 768
    layers: int = 12
    heads: int = 12
    mlp_dim: int = 3072
    hidden_act: str = "quick_gelu"
    layer_norm_eps: float = 1e-5

    @property
    def grid_size(self) -> int:
        return self.image_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid_size**2


@dataclasses.dataclass(frozen=True)
class TextConfig:
    vocab_size: int = 49408
    context_length: int = 77
    width: int = 512
    layers: int = 12
    heads: int = 8
    mlp_dim: int = 2048
    eos_token_id: int = 49407
    hidden_act: str = "quick_gelu"
    layer_norm_eps: float = 1e-5


@dataclasses.dataclass(frozen=True)
class CLIPConfig:
    vision: VisionConfig
    text: TextConfig
    projection_dim: int = 512


_TEXT_B = TextConfig()
_VARIANTS = {
    "ViT-B/32": CLIPConfig(VisionConfig(patch_size=32), _TEXT_B, 512),
    "ViT-B/16": CLIPConfig(VisionConfig(patch_size=16), _TEXT_B, 512),
    "ViT-L/14": CLIPConfig(
        VisionConfig(patch_size=14, width=1024, layers=24, heads=16, mlp_dim=4096),
        TextConfig(width=768, heads=12, mlp_dim=3072),
        768,
    ),
    # Small enough to run a whole clip through on CPU in milliseconds; tests and the demo use it.
    "tiny": CLIPConfig(
        VisionConfig(image_size=32, patch_size=8, width=64, layers=2, heads=4, mlp_dim=128),
        TextConfig(vocab_size=1024, width=64, layers=2, heads=4, mlp_dim=128, eos_token_id=1023),
        32,
    ),
}

VARIANTS = tuple(_VARIANTS)  # the names model.clip.variant takes


def clip_config(variant: str) -> CLIPConfig:
    """Returns the architecture of a named CLIP variant: tiny, ViT-B/32, ViT-B/16 or ViT-L/14."""
    if variant not in _VARIANTS:
        raise ValueError(f"Unknown CLIP variant {variant!r}; choose one of {sorted(_VARIANTS)}.")
    return _VARIANTS[variant]


def config_to_dict(config: CLIPConfig) -> dict:
    """The architecture as plain data, `{"vision": {...}, "text": {...}, "projection_dim": D}`: what
    `model.clip.architecture` holds in runs whose CLIP sizes are not a named variant (converted or
    exported models)."""
    return dataclasses.asdict(config)


def config_from_dict(d) -> CLIPConfig:
    """Inverse of `config_to_dict`; a mapping (dict or ConfigDict) with every field given."""
    d = dict(d)
    fields = {f.name for f in dataclasses.fields(CLIPConfig)}
    if set(d) != fields:
        raise ValueError(f"a CLIP architecture needs exactly the keys {sorted(fields)}, got {sorted(d)}")
    return CLIPConfig(VisionConfig(**dict(d["vision"])), TextConfig(**dict(d["text"])), int(d["projection_dim"]))


def variant_name(config: CLIPConfig) -> str | None:
    """The named variant with exactly this architecture, or None."""
    return next((name for name, c in _VARIANTS.items() if c == config), None)


def config_for(clip_cfg) -> CLIPConfig:
    """The architecture a `model.clip` config section asks for: `architecture` when it is set (it
    wins over `variant`), else the named `variant`."""
    architecture = clip_cfg.architecture
    if architecture:
        return config_from_dict(architecture)
    return clip_config(clip_cfg.variant)


def _activation(name: str):
    if name == "quick_gelu":
        return lambda x: x * jax.nn.sigmoid(1.702 * x)
    if name in ("gelu", "gelu_new"):
        return functools.partial(jax.nn.gelu, approximate=name == "gelu_new")
    raise ValueError(f"Unsupported CLIP activation {name!r}.")


class CLIPAttention(nnx.Module):
    """Multi-head self-attention with Hugging Face's q/k/v/out projection names."""

    def __init__(self, width: int, heads: int, *, dtype, rngs: nnx.Rngs):
        if width % heads:
            raise ValueError(f"width {width} is not divisible by heads {heads}.")
        self.heads = heads
        linear = functools.partial(nnx.Linear, width, width, dtype=dtype, rngs=rngs)
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (
            linear(),
            linear(),
            linear(),
            linear(),
        )

    def __call__(self, x: Array, *, causal: bool) -> Array:
        n, length, width = x.shape

        def split(t):
            return t.reshape(n, length, self.heads, width // self.heads)

        q, k, v = split(self.q_proj(x)), split(self.k_proj(x)), split(self.v_proj(x))  # [N,L,H,Dh]
        # jax 0.10's default implementation is XLA's softmax(QK^T)V on every platform (cuDNN's fused
        # attention only when asked for by name; grace_jax.doctor reports whether it compiles on a GPU).
        out = jax.nn.dot_product_attention(q, k, v, is_causal=causal)  # [N,L,H,Dh]
        return self.out_proj(out.reshape(n, length, width))


class CLIPMLP(nnx.Module):
    def __init__(self, width: int, mlp_dim: int, act: str, *, dtype, rngs: nnx.Rngs):
        self.act = _activation(act)
        self.fc1 = nnx.Linear(width, mlp_dim, dtype=dtype, rngs=rngs)
        self.fc2 = nnx.Linear(mlp_dim, width, dtype=dtype, rngs=rngs)

    def __call__(self, x: Array) -> Array:
        return self.fc2(self.act(self.fc1(x)))


class CLIPEncoderLayer(nnx.Module):
    """Pre-LN residual block: x + attn(ln1(x)), then x + mlp(ln2(x))."""

    def __init__(self, width, heads, mlp_dim, act, eps, *, dtype, rngs: nnx.Rngs):
        norm = functools.partial(nnx.LayerNorm, width, epsilon=eps, dtype=dtype, rngs=rngs)
        self.layer_norm1 = norm()
        self.self_attn = CLIPAttention(width, heads, dtype=dtype, rngs=rngs)
        self.layer_norm2 = norm()
        self.mlp = CLIPMLP(width, mlp_dim, act, dtype=dtype, rngs=rngs)

    def __call__(self, x: Array, *, causal: bool) -> Array:
        x = x + self.self_attn(self.layer_norm1(x), causal=causal)
        return x + self.mlp(self.layer_norm2(x))


def _run_layer_remat(layer: CLIPEncoderLayer, x: Array, causal: bool) -> Array:
    """Rematerialised block: one extra forward per block instead of keeping its activations, which
    is what lets ViT-B/16 x 16 frames x large batches fit on an accelerator.

    jax.checkpoint over the block's split state rather than nnx.remat: under the trainer's
    jax.value_and_grad over part of the parameters (the text tower frozen, so its Params are tracers
    of the outer jit while the prompt contexts are tracers of the grad), nnx.remat's write-back of the
    block's variables fails with "Cannot mutate Param from a different trace level". A block is a
    pure function of its state, so nothing needs writing back.
    """
    graphdef, state = nnx.split(layer)
    run = lambda s, h: nnx.merge(graphdef, s)(h, causal=causal)  # noqa: E731
    return jax.checkpoint(run)(state, x)


class CLIPEncoder(nnx.Module):
    def __init__(self, width, layers, heads, mlp_dim, act, eps, *, dtype, remat: bool, rngs: nnx.Rngs):
        self.remat = remat
        self.layers = nnx.List(
            [CLIPEncoderLayer(width, heads, mlp_dim, act, eps, dtype=dtype, rngs=rngs) for _ in range(layers)]
        )

    def __call__(self, x: Array, *, causal: bool) -> Array:
        for layer in self.layers:
            x = _run_layer_remat(layer, x, causal) if self.remat else layer(x, causal=causal)
        return x


class CLIPVisionEmbeddings(nnx.Module):
    def __init__(self, cfg: VisionConfig, *, dtype, rngs: nnx.Rngs):
        self.cfg = cfg
        self.dtype = dtype
        scale = cfg.width**-0.5
        self.class_embedding = nnx.Param(scale * jax.random.normal(rngs.params(), (cfg.width,)))
        self.patch_embedding = nnx.Conv(
            3,
            cfg.width,
            kernel_size=(cfg.patch_size, cfg.patch_size),
            strides=(cfg.patch_size, cfg.patch_size),
            padding="VALID",
            use_bias=False,
            dtype=dtype,
            rngs=rngs,
        )
        self.position_embedding = nnx.Embed(cfg.num_patches + 1, cfg.width, rngs=rngs)

    def __call__(self, images: Array) -> Array:
        n, height, width, _ = images.shape
        p = self.cfg.patch_size
        if height % p or width % p:
            raise ValueError(f"Image size {height}x{width} is not a multiple of the patch size {p}.")
        patches = self.patch_embedding(images.astype(self.dtype))  # [N,H/p,W/p,D]
        patches = patches.reshape(n, -1, self.cfg.width)  # [N,P,D]
        cls = jnp.broadcast_to(self.class_embedding[...].astype(patches.dtype), (n, 1, self.cfg.width))
        pos = self.position_embedding.embedding[...]  # [1+G*G, D]
        grid = (height // p, width // p)
        if grid != (self.cfg.grid_size, self.cfg.grid_size):
            pos = position_interpolation.resize_position_embedding(pos, grid)
        return jnp.concatenate([cls, patches], axis=1) + pos.astype(patches.dtype)  # [N,1+P,D]


class CLIPVisionTransformer(nnx.Module):
    def __init__(self, cfg: VisionConfig, *, dtype, remat: bool, rngs: nnx.Rngs):
        norm = functools.partial(nnx.LayerNorm, cfg.width, epsilon=cfg.layer_norm_eps, dtype=dtype, rngs=rngs)
        self.embeddings = CLIPVisionEmbeddings(cfg, dtype=dtype, rngs=rngs)
        self.pre_layrnorm = norm()  # Hugging Face's spelling, kept so checkpoint names map 1:1.
        self.encoder = CLIPEncoder(
            cfg.width,
            cfg.layers,
            cfg.heads,
            cfg.mlp_dim,
            cfg.hidden_act,
            cfg.layer_norm_eps,
            dtype=dtype,
            remat=remat,
            rngs=rngs,
        )
        self.post_layernorm = norm()

    def __call__(self, images: Array) -> Array:
        """[N,H,W,3] -> every token after post_layernorm, [N,1+P,W]."""
        x = self.pre_layrnorm(self.embeddings(images))
        x = self.encoder(x, causal=False)
        return self.post_layernorm(x)


class CLIPTextEmbeddings(nnx.Module):
    def __init__(self, cfg: TextConfig, *, rngs: nnx.Rngs):
        self.token_embedding = nnx.Embed(cfg.vocab_size, cfg.width, rngs=rngs)
        self.position_embedding = nnx.Embed(cfg.context_length, cfg.width, rngs=rngs)


class CLIPTextTransformer(nnx.Module):
    def __init__(self, cfg: TextConfig, *, dtype, remat: bool, rngs: nnx.Rngs):
        self.embeddings = CLIPTextEmbeddings(cfg, rngs=rngs)
        self.encoder = CLIPEncoder(
            cfg.width,
            cfg.layers,
            cfg.heads,
            cfg.mlp_dim,
            cfg.hidden_act,
            cfg.layer_norm_eps,
            dtype=dtype,
            remat=remat,
            rngs=rngs,
        )
        self.final_layer_norm = nnx.LayerNorm(cfg.width, epsilon=cfg.layer_norm_eps, dtype=dtype, rngs=rngs)

    def __call__(self, embeds: Array) -> Array:
        """Token embeddings [N,L,W] -> every token after final_layer_norm, [N,L,W]."""
        length = embeds.shape[1]
        pos = self.embeddings.position_embedding.embedding[...][:length]  # [L,W]
        x = self.encoder(embeds + pos.astype(embeds.dtype), causal=True)
        return self.final_layer_norm(x)


class CLIP(nnx.Module):
    """Both CLIP towers with their projections into the joint space."""

    def __init__(self, config: CLIPConfig, *, rngs: nnx.Rngs, dtype=jnp.float32, remat: bool = False):
        self.config = config
        self.dtype = dtype
        self.vision_model = CLIPVisionTransformer(config.vision, dtype=dtype, remat=remat, rngs=rngs)
        self.text_model = CLIPTextTransformer(config.text, dtype=dtype, remat=remat, rngs=rngs)
        self.visual_projection = nnx.Linear(
            config.vision.width, config.projection_dim, use_bias=False, dtype=dtype, rngs=rngs
        )
        self.text_projection = nnx.Linear(
            config.text.width, config.projection_dim, use_bias=False, dtype=dtype, rngs=rngs
        )
        self.logit_scale = nnx.Param(jnp.asarray(np.log(1 / 0.07), jnp.float32))

    def encode_image(self, images: Array) -> tuple[Array, Array]:
        """Encodes normalized images.

        Args:
            images: [N,H,W,3] float, already normalized with CLIP's mean and std.

        Returns:
            (cls [N,D], patches [N,P,D]), both after post_layernorm and the visual projection.
        """
        tokens = self.visual_projection(self.vision_model(images))  # [N,1+P,D]
        return tokens[:, 0], tokens[:, 1:]

    def embed_tokens(self, token_ids: Array) -> Array:
        """[N,L] int32 -> token embeddings [N,L,W_text] (no positions): where prompt contexts go in."""
        return self.text_model.embeddings.token_embedding(token_ids).astype(self.dtype)

    def encode_text_embeddings(self, embeds: Array, eot_index: Array) -> tuple[Array, Array]:
        """Runs the text tower on token embeddings.

        Args:
            embeds: [N,L,W_text] token embeddings (from `embed_tokens`, possibly with learned contexts).
            eot_index: [N] int, position of the end-of-text token in each row.

        Returns:
            (eot [N,D], tokens [N,L,D]): the projected EOT feature and every projected token feature.
        """
        tokens = self.text_projection(self.text_model(embeds))  # [N,L,D]
        eot = jnp.take_along_axis(tokens, eot_index[:, None, None].astype(jnp.int32), axis=1)[:, 0]
        return eot, tokens

    def encode_text(self, token_ids: Array, eot_index: Array | None = None) -> tuple[Array, Array]:
        """Encodes token ids [N,L] int32 -> (eot [N,D], tokens [N,L,D]).

        Without `eot_index`, the EOT position is found the way Hugging Face does: the first occurrence of
        `eos_token_id`, or the largest id when a legacy config says eos_token_id == 2.
        """
        if eot_index is None:
            eot_index = find_eot(token_ids, self.config.text.eos_token_id)
        return self.encode_text_embeddings(self.embed_tokens(token_ids), eot_index)


def find_eot(token_ids: Array, eos_token_id: int) -> Array:
    """[N,L] int -> [N] int32 position of the end-of-text token."""
    if eos_token_id == 2:  # Configs older than transformers PR 24773 carry this placeholder id.
        return jnp.argmax(token_ids, axis=-1).astype(jnp.int32)
    return jnp.argmax(token_ids == eos_token_id, axis=-1).astype(jnp.int32)
