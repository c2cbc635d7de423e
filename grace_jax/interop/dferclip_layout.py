"""DFER-CLIP's state-dict layout: every key its model saves, the second names that view CLIP's
tensors, the sizes the tensors give, and the prompts' token ids recovered from the prompt learner's
buffers (`grace_jax.interop.dferclip` turns what is read here into a run directory).

`prompt_learner.token_prefix` / `token_suffix` are rows of CLIP's frozen token-embedding table for the
tokenized prompts: matching every row against `token_embedding.weight` gives back the token ids, and
with them the descriptor sentences the model was trained with; the EOT position is the argmax of the
ids, as DFER-CLIP takes it. Every key is given without DataParallel's `module.` prefix.
"""

from __future__ import annotations

import re

import numpy as np

from grace_jax.interop.torch_pickle import ConversionError

__all__ = [
    "CLIP_PREFIX",
    "TEMPORAL",
    "TEMPORAL_PREFIX",
    "checked_layout",
    "dferclip_keys",
    "listing",
    "prompt",
    "recover_token_ids",
    "temporal",
]

CLIP_PREFIX = "clip_model_."
_BLOCK = (  # one OpenAI ResidualAttentionBlock
    "attn.in_proj_weight", "attn.in_proj_bias", "attn.out_proj.weight", "attn.out_proj.bias",
    "ln_1.weight", "ln_1.bias", "mlp.c_fc.weight", "mlp.c_fc.bias", "mlp.c_proj.weight",
    "mlp.c_proj.bias", "ln_2.weight", "ln_2.bias",
)  # fmt: skip
_VISUAL = (
    "class_embedding", "positional_embedding", "proj", "conv1.weight", "ln_pre.weight",
    "ln_pre.bias", "ln_post.weight", "ln_post.bias",
)  # fmt: skip
_TEXT = ("positional_embedding", "text_projection", "ln_final.weight", "ln_final.bias")
# Temporal_Transformer_Cls block keys (after temporal_net.temporal_transformer.layers.N.) -> grace_jax's
# leaf under temporal/blocks/N.
TEMPORAL = {
    "0.fn.norm.weight": ("norm1", "scale"),
    "0.fn.norm.bias": ("norm1", "bias"),
    "0.fn.fn.to_qkv.weight": ("to_qkv", "kernel"),
    "0.fn.fn.to_out.0.weight": ("to_out", "kernel"),
    "0.fn.fn.to_out.0.bias": ("to_out", "bias"),
    "1.fn.norm.weight": ("norm2", "scale"),
    "1.fn.norm.bias": ("norm2", "bias"),
    "1.fn.fn.net.0.weight": ("fc1", "kernel"),
    "1.fn.fn.net.0.bias": ("fc1", "bias"),
    "1.fn.fn.net.3.weight": ("fc2", "kernel"),
    "1.fn.fn.net.3.bias": ("fc2", "bias"),
}
TEMPORAL_PREFIX = "temporal_net.temporal_transformer.layers."
_VIEWS = (  # second name -> the clip_model_ tensor it views (same object in DFER-CLIP's model)
    ("image_encoder.", CLIP_PREFIX + "visual."),
    ("text_encoder.transformer.", CLIP_PREFIX + "transformer."),
    ("text_encoder.ln_final.", CLIP_PREFIX + "ln_final."),
    ("text_encoder.positional_embedding", CLIP_PREFIX + "positional_embedding"),
    ("text_encoder.text_projection", CLIP_PREFIX + "text_projection"),
)


def _num_layers(keys, prefix: str) -> int:
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    return 1 + max((int(m.group(1)) for k in keys if (m := pattern.match(k))), default=-1)


def dferclip_keys(vision_layers: int, text_layers: int, temporal_layers: int) -> list[str]:
    """Every key of DFER-CLIP's GenerateModel.state_dict() (ViT CLIP, no `module.` prefix)."""
    visual = list(_VISUAL) + [f"transformer.resblocks.{i}.{b}" for i in range(vision_layers) for b in _BLOCK]
    text_blocks = [f"transformer.resblocks.{i}.{b}" for i in range(text_layers) for b in _BLOCK]
    clip = [f"visual.{k}" for k in visual] + text_blocks + ["token_embedding.weight", "logit_scale", *_TEXT]
    return (
        ["prompt_learner.ctx", "prompt_learner.token_prefix", "prompt_learner.token_suffix"]
        + [f"text_encoder.{k}" for k in (*text_blocks, *_TEXT)]
        + [f"image_encoder.{k}" for k in visual]
        + ["temporal_net.cls_token", "temporal_net.pos_embedding"]
        + [f"{TEMPORAL_PREFIX}{i}.{k}" for i in range(temporal_layers) for k in TEMPORAL]
        + [CLIP_PREFIX + k for k in clip]
    )


def listing(keys, limit: int = 8) -> str:
    """The first `limit` keys, sorted and quoted, for an error message."""
    keys = sorted(keys)
    more = f" (and {len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(repr(k) for k in keys[:limit]) + more


def _strip_module(state: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Drops DataParallel's `module.` prefix; returns (state, {stripped key: key as saved})."""
    out, saved = {}, {}
    for key, value in state.items():
        short = key[len("module.") :] if key.startswith("module.") else key
        if short in out:
            raise ConversionError(f"keys {saved[short]!r} and {key!r} name the same tensor.")
        out[short], saved[short] = value, key
    return out, saved


def recover_token_ids(
    prefix: np.ndarray, suffix: np.ndarray, embedding: np.ndarray, *, source: str = "checkpoint"
) -> tuple[list[list[int]], np.ndarray]:
    """Token ids of DFER-CLIP's prompts from its `token_prefix` / `token_suffix` buffers.

    Args:
      prefix: [C,1,W] the SOT row of each prompt; suffix: [C,S,W] the rows after the contexts (text,
        EOT, padding); embedding: [V,W] CLIP's `token_embedding.weight`.

    Returns:
      (per class the ids of the text after the contexts, `[SOT] w.. [EOT]`, and the [C,1+S] ids of
      every row). EOT is the argmax of the ids, as DFER-CLIP finds it.
    """
    rows = np.concatenate([prefix, suffix], axis=1).astype(np.float32)  # [C,1+S,W]
    c, length, width = rows.shape
    flat = rows.reshape(-1, width)
    table = embedding.astype(np.float32)
    ids = np.empty(len(flat), np.int64)
    # Nearest row by squared distance, in chunks of the vocabulary (ViT-B/32: 49408 x 512).
    best = np.full(len(flat), np.inf)
    sq_rows = (flat**2).sum(-1)
    for start in range(0, len(table), 8192):
        part = table[start : start + 8192]
        dist = sq_rows[:, None] - 2.0 * flat @ part.T + (part**2).sum(-1)[None, :]
        arg = dist.argmin(axis=1)
        value = dist[np.arange(len(flat)), arg]
        better = value < best
        best[better], ids[better] = value[better], arg[better] + start
    error = np.abs(table[ids] - flat).max(axis=-1)
    scale = np.maximum(np.abs(flat).max(axis=-1), 1e-12)
    bad = np.flatnonzero(error > 1e-5 * scale)
    if bad.size:
        cls, pos = divmod(int(bad[0]), length)
        where = "token_prefix" if pos == 0 else f"token_suffix position {pos - 1}"
        raise ConversionError(
            f"{source}: prompt_learner.{where} of class {cls} is no row of "
            f"clip_model_.token_embedding.weight (off by {error[bad[0]]:.3g}); the buffers do not "
            "come from this CLIP's vocabulary."
        )
    ids = ids.reshape(c, length)
    texts = []
    for row in ids:
        eot = int(row.argmax())  # DFER-CLIP: tokenized_prompts.argmax(-1); the prefix is position 0
        if eot == 0:
            raise ConversionError(f"{source}: a prompt has no end-of-text token after its SOT.")
        texts.append([int(t) for t in row[: eot + 1]])
    return texts, ids


def _views_checked(sd: dict[str, np.ndarray], saved: dict[str, str]) -> None:
    for key in sd:
        for second, first in _VIEWS:
            if key.startswith(second):
                source = first + key[len(second) :]
                a, b = sd[key], sd[source]
                if a.shape != b.shape or not np.array_equal(a, b):
                    raise ConversionError(
                        f"{saved[key]!r} should be the same tensor as {saved[source]!r} (DFER-CLIP's "
                        "image_encoder/text_encoder are views of clip_model_), but they differ."
                    )


def checked_layout(raw: dict[str, np.ndarray], checkpoint: str):
    """(state dict without `module.`, (vision, text, temporal) depths): every key of DFER-CLIP's
    model present, none beyond it, the second names equal to the tensors they view."""
    sd, saved = _strip_module(raw)
    if any(k.startswith(CLIP_PREFIX + "visual.layer") for k in sd):
        raise ConversionError(
            f"{checkpoint}: a ResNet CLIP ('module.clip_model_.visual.layer1...'); only ViT CLIPs "
            "are supported (DFER-CLIP trains ViT-B/32)."
        )
    layers = (
        _num_layers(sd, CLIP_PREFIX + "visual.transformer.resblocks."),
        _num_layers(sd, CLIP_PREFIX + "transformer.resblocks."),
        _num_layers(sd, TEMPORAL_PREFIX),
    )
    expected = set(dferclip_keys(*layers))
    missing = sorted(expected - set(sd))
    if missing:
        raise ConversionError(
            f"{checkpoint}: key {'module.' + missing[0]!r} is missing"
            + (f" ({len(missing) - 1} more: {listing(['module.' + k for k in missing[1:]])})"
               if len(missing) > 1 else "")
            + "; not a complete DFER-CLIP model."
        )  # fmt: skip
    extra = sorted(set(sd) - expected)
    if extra:
        raise ConversionError(
            f"{checkpoint}: key {saved[extra[0]]!r} is not part of DFER-CLIP's model"
            + (f" ({len(extra) - 1} more: {listing([saved[k] for k in extra[1:]])})"
               if len(extra) > 1 else "")
            + "; refusing to guess where it goes."
        )  # fmt: skip
    _views_checked(sd, saved)
    return sd, layers


def prompt(sd: dict[str, np.ndarray], clip_config, checkpoint: str) -> dict:
    """{num_classes, n_ctx, class_specific, token_rows} of the prompt learner."""
    ctx = sd["prompt_learner.ctx"]
    prefix, suffix = sd["prompt_learner.token_prefix"], sd["prompt_learner.token_suffix"]
    num_classes, n_ctx = prefix.shape[0], ctx.shape[-2]
    class_specific = ctx.ndim == 3
    if suffix.shape[0] != num_classes or (class_specific and ctx.shape[0] != num_classes):
        raise ConversionError(
            f"{checkpoint}: prompt_learner.ctx {ctx.shape}, token_prefix {prefix.shape} and "
            f"token_suffix {suffix.shape} disagree on the number of classes."
        )
    if 1 + n_ctx + suffix.shape[1] != clip_config.text.context_length:
        raise ConversionError(
            f"{checkpoint}: 1 + {n_ctx} contexts + {suffix.shape[1]} suffix rows is not CLIP's "
            f"{clip_config.text.context_length} text positions."
        )
    token_rows, _ = recover_token_ids(prefix, suffix, sd[CLIP_PREFIX + "token_embedding.weight"], source=checkpoint)
    return dict(num_classes=num_classes, n_ctx=n_ctx, class_specific=class_specific, token_rows=token_rows)


def temporal(sd: dict[str, np.ndarray], clip_config, depth: int, heads: int, checkpoint: str):
    """(frames, the temporal model's {depth, heads, dim_head, mlp_dim}) read from its tensors."""
    cls_token = sd["temporal_net.cls_token"]
    dim, num_frames = cls_token.shape[-1], sd["temporal_net.pos_embedding"].shape[1] - 1
    inner = sd[TEMPORAL_PREFIX + "0.0.fn.fn.to_qkv.weight"].shape[0] // 3
    mlp_dim = sd[TEMPORAL_PREFIX + "0.1.fn.fn.net.0.weight"].shape[0]
    if dim != clip_config.projection_dim:
        raise ConversionError(
            f"{checkpoint}: the temporal model is {dim} wide but CLIP's joint space is {clip_config.projection_dim}."
        )
    if inner % heads:
        raise ConversionError(
            f"{checkpoint}: temporal attention width {inner} is not divisible by --temporal_heads={heads}."
        )
    return num_frames, dict(depth=depth, heads=heads, dim_head=inner // heads, mlp_dim=mlp_dim)
