r"""Converts DFER-CLIP's trained checkpoints into grace_jax run directories.

  python -m grace_jax.convert dferclip --checkpoint=DFEW-set1-model_best.pth \
      --workdir=runs/dferclip_dfew1
  python -m grace_jax.evaluate --workdir=runs/dferclip_dfew1 --data_dir=/data/shards/dfew_fold1
  python -m grace_jax.predict --workdir=runs/dferclip_dfew1 my_clip.mp4

DFER-CLIP (Zhao & Patras, BMVC 2023, github.com/zengqunzhao/DFER-CLIP) saves, from its main.py,
`torch.save({'epoch', 'state_dict', 'best_acc', 'optimizer', 'recorder'})` of its model wrapped in
`torch.nn.DataParallel` (every key starts with `module.`). The model holds:

- `clip_model_.*`: the whole OpenAI CLIP (ViT), and `image_encoder.*` / `text_encoder.*`, views of
  its visual and text towers under second names: each such tensor is read once and checked equal;
- `temporal_net.*`: the temporal transformer (class token, positions, pre-LN blocks);
- `prompt_learner.ctx`: the learned contexts, and the buffers `token_prefix` / `token_suffix`: rows of
  CLIP's frozen token-embedding table for the tokenized prompts. Matching every row against
  `token_embedding.weight` gives back the token ids, and with them the descriptor sentences it was
  trained with; the EOT position is the argmax of the ids, as DFER-CLIP takes it.

Every size is read from the tensors (ViT-B/32 as released, or any other): widths, depths, patch size,
vocabulary, frames, contexts. Head counts are not stored in a state dict; CLIP's follow OpenAI's rule
(width // 64, as DFER-CLIP's clip.load builds them) and the temporal model's DFER-CLIP's 8 heads
(`--temporal_heads`).

The run directory (written to a temporary name and renamed when complete; a failed conversion leaves
nothing) holds what `grace_jax.predict`, `grace_jax.evaluate` and training read: `config.json` (the
`dferclip` recipe, configs/ablations/dferclip.py, with the checkpoint's sizes, the recovered token ids
in `model.prompt.token_ids` so that no tokenizer is needed, and the decoded sentences in
`model.class_cues` where a CLIP tokenizer is at hand), `classes.json`, an orbax checkpoint at step 0
in `checkpoints/last`, and `conversion.json` (source file, its SHA-256, epoch, best accuracy, the
command). Fine-tune it with `python -m grace_jax.main --config=configs/run.py:<workdir>
--workdir=<workdir> --config.data.dir=...`.

Checkpoints come from file-sharing links, so reading one never runs code from it: the pickle is first
scanned for the globals it names, and a file that names anything beyond tensors, containers and the
training-curve recorder main.py saves beside them (e.g. `os.system`) is refused unread; the file is then
read with `torch.load(weights_only=True)`, the recorder and its numpy arrays replaced by inert
placeholders. PyTorch is needed for this one command only: `pip install -e '.[torch]'`.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import re
import shlex
import shutil
import sys
from collections.abc import Mapping

import numpy as np

from grace_jax.infra.errors import UserError

__all__ = [
    "ConversionError",
    "UnsafeCheckpointError",
    "convert_dferclip",
    "dferclip_keys",
    "read_torch_checkpoint",
    "recover_token_ids",
]

FORMATS = ("dferclip",)
CONVERSION_FILE = "conversion.json"

# Globals main.py's checkpoint names besides tensors: its RecorderMeter (training curves) and the
# numpy arrays inside it. They are rebuilt as inert placeholders, never as the named objects.
_INERT_GLOBALS = (
    "__main__.RecorderMeter",
    "numpy.core.multiarray._reconstruct",
    "numpy._core.multiarray._reconstruct",
    "numpy.core.multiarray.scalar",
    "numpy._core.multiarray.scalar",
    "numpy.ndarray",
    "numpy.dtype",
)
_INERT_PREFIXES = ("numpy.dtypes.",)  # numpy 2's dtype classes (Float32DType, ...)


class ConversionError(UserError, ValueError):
    """A checkpoint that cannot be converted; the message names the file and the key."""


class UnsafeCheckpointError(ConversionError):
    """A checkpoint whose pickle would construct arbitrary objects; it was not loaded."""


class _Inert:
    """Stands in for the recorder and numpy objects: built from anything, keeps nothing, runs nothing."""

    def __new__(cls, *args, **kwargs):
        return object.__new__(cls)

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        pass


def _is_inert(name: str) -> bool:
    return name in _INERT_GLOBALS or name.startswith(_INERT_PREFIXES)


def _import_torch(path: str):
    try:
        import torch
    except ImportError as e:
        raise ConversionError(
            f"{path}: reading a PyTorch checkpoint needs PyTorch, which grace_jax uses for this "
            "conversion only. Install it with: pip install -e '.[torch]'  (a CPU build is enough: "
            "pip install torch --index-url https://download.pytorch.org/whl/cpu)"
        ) from e
    return torch


def read_torch_checkpoint(path: str) -> tuple[dict[str, np.ndarray], dict]:
    """Reads a .pth without running code from it.

    Returns:
      (state dict as float32 numpy arrays keyed as saved, {"epoch", "best_acc"} where present).

    Raises:
      UnsafeCheckpointError: the pickle names a global beyond tensors and main.py's recorder.
      ConversionError: missing torch, an unreadable file, or no state dict in it.
    """
    if not os.path.isfile(path):
        raise ConversionError(f"{path}: file not found.")
    torch = _import_torch(path)
    import pickle

    try:
        # Static: lists the GLOBAL opcodes of the pickle without executing any of them.
        named = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # noqa: BLE001 -- not the zip format: torch.load's own allowlist decides.
        named = []
    refused = [g for g in named if not _is_inert(g)]
    if refused:
        raise UnsafeCheckpointError(
            f"{path}: refused: its pickle would construct {', '.join(sorted(refused))}, which a "
            "weights file never needs. It was not loaded, so nothing in it ran."
        )
    inert = [(_Inert, name) for name in {*_INERT_GLOBALS, *(g for g in named if _is_inert(g))}]
    try:
        with torch.serialization.safe_globals(inert):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        detail = re.search(r"WeightsUnpickler error:\s*(.*?)\s*(?:Check the documentation|$)", str(e), re.S)
        reason = " ".join((detail.group(1) if detail else str(e)).split()) or type(e).__name__
        raise UnsafeCheckpointError(
            f"{path}: refused by torch.load(weights_only=True), nothing in it ran: {reason}"
        ) from e
    except Exception as e:  # noqa: BLE001 -- torch raises many types for a bad file.
        raise ConversionError(f"{path}: not a readable PyTorch checkpoint ({e}).") from e

    meta: dict = {}
    if isinstance(obj, Mapping) and "state_dict" in obj:
        state = obj["state_dict"]
        for key in ("epoch", "best_acc"):
            value = obj.get(key)
            if isinstance(value, torch.Tensor) and value.numel() == 1:
                value = value.item()
            if isinstance(value, (int, float)):
                meta[key] = value
    elif isinstance(obj, Mapping) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        state = obj  # a bare model.state_dict()
    else:
        raise ConversionError(
            f"{path}: no 'state_dict' in it (DFER-CLIP's main.py saves {{'epoch', 'state_dict', "
            "'best_acc', 'optimizer', 'recorder'}})."
        )
    arrays = {}
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise ConversionError(f"{path}: state_dict entry {key!r} is not a tensor.")
        arrays[str(key)] = value.detach().to(torch.float32).numpy()
    return arrays, meta


# --------------------------------------------------------------------------- DFER-CLIP's key layout
_CLIP = "clip_model_."
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
# Temporal_Transformer_Cls block keys (after temporal_net.temporal_transformer.layers.N.) -> our
# leaf under temporal/blocks/N.
_TEMPORAL = {
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
_TEMPORAL_PREFIX = "temporal_net.temporal_transformer.layers."
_VIEWS = (  # second name -> the clip_model_ tensor it views (same object in DFER-CLIP's model)
    ("image_encoder.", _CLIP + "visual."),
    ("text_encoder.transformer.", _CLIP + "transformer."),
    ("text_encoder.ln_final.", _CLIP + "ln_final."),
    ("text_encoder.positional_embedding", _CLIP + "positional_embedding"),
    ("text_encoder.text_projection", _CLIP + "text_projection"),
)


def _num_layers(keys, prefix: str) -> int:
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    return 1 + max((int(m.group(1)) for k in keys if (m := pattern.match(k))), default=-1)


def dferclip_keys(vision_layers: int, text_layers: int, temporal_layers: int) -> list[str]:
    """Every key of DFER-CLIP's GenerateModel.state_dict() (ViT CLIP, no `module.` prefix)."""
    visual = list(_VISUAL) + [
        f"transformer.resblocks.{i}.{b}" for i in range(vision_layers) for b in _BLOCK
    ]
    text_blocks = [f"transformer.resblocks.{i}.{b}" for i in range(text_layers) for b in _BLOCK]
    clip = (
        [f"visual.{k}" for k in visual]
        + text_blocks
        + ["token_embedding.weight", "logit_scale", *_TEXT]
    )
    return (
        ["prompt_learner.ctx", "prompt_learner.token_prefix", "prompt_learner.token_suffix"]
        + [f"text_encoder.{k}" for k in (*text_blocks, *_TEXT)]
        + [f"image_encoder.{k}" for k in visual]
        + ["temporal_net.cls_token", "temporal_net.pos_embedding"]
        + [f"{_TEMPORAL_PREFIX}{i}.{k}" for i in range(temporal_layers) for k in _TEMPORAL]
        + [_CLIP + k for k in clip]
    )


def _listing(keys, limit: int = 8) -> str:
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


def _dataset_and_fold(path: str, num_classes: int, dataset: str | None, fold: int | None):
    """The recipe's dataset and fold: the flags, else DFER-CLIP's file names (`DFEW-...-set3-...`,
    `FER39K-...`, `MAFW-...-set2-...`), else the class count (11: MAFW, 7: DFEW)."""
    name = os.path.basename(path).lower()
    if not dataset:
        if "mafw" in name:
            dataset = "mafw"
        elif "fer39k" in name or "ferv39k" in name:
            dataset = "ferv39k"
        elif "dfew" in name:
            dataset = "dfew"
        else:
            dataset = "mafw" if num_classes == 11 else "dfew"
    if fold is None and dataset != "ferv39k":
        match = re.search(r"set[_-]?([1-5])(?!\d)", name)
        fold = int(match.group(1)) if match else None
    expected = 11 if dataset == "mafw" else 7
    if num_classes != expected:
        raise ConversionError(
            f"{path}: {num_classes} classes, but {dataset} has {expected}; pass --dataset."
        )
    return dataset, fold


def _tokenizer_for(source: str | None, vocab_size: int):
    """A CLIP tokenizer for decoding the recovered ids, or None when none is at hand."""
    from grace_jax.text.tokenizer import Tokenizer

    if source is None:
        source = "openai/clip-vit-base-patch32" if vocab_size == 49408 else ""
    if not source:
        return None, ""
    try:
        tokenizer = Tokenizer.from_pretrained(source)
    except Exception:  # noqa: BLE001 -- offline or missing: the texts stay undecoded.
        return None, source
    return (tokenizer if tokenizer.vocab_size == vocab_size else None), source


def _file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def convert_dferclip(
    checkpoint: str,
    workdir: str,
    *,
    dataset: str | None = None,
    fold: int | None = None,
    tokenizer: str | None = None,
    temporal_heads: int = 8,
    command: str | None = None,
) -> dict:
    """Converts one DFER-CLIP checkpoint into a run directory; returns what conversion.json holds.

    Args:
      checkpoint: a .pth saved by DFER-CLIP's main.py (or a bare state dict of its model).
      workdir: the run directory to create (local; must not exist yet).
      dataset, fold: the recipe (configs/ablations/dferclip.py) the config is written with; default
        from the file name or the class count. Only training reads dataset-specific settings.
      tokenizer: a CLIP tokenizer (directory or hub name) to decode the recovered sentences with;
        default openai/clip-vit-base-patch32 for CLIP's vocabulary, where available offline or online.
      temporal_heads: the temporal attention's head count (not stored in a state dict; DFER-CLIP: 8).
    """
    from grace_jax.infra import errors, paths

    if paths.is_uri(workdir):
        raise ConversionError(
            f"{workdir}: grace_jax.convert writes a local run directory; copy it to object storage "
            "afterwards (e.g. gcloud storage cp -r)."
        )
    workdir = paths.resolve(workdir)
    if os.path.exists(workdir) and (not os.path.isdir(workdir) or os.listdir(workdir)):
        raise ConversionError(f"{workdir}: already exists; choose a new --workdir.")

    raw, meta = read_torch_checkpoint(checkpoint)
    sd, saved = _strip_module(raw)

    if any(k.startswith(_CLIP + "visual.layer") for k in sd):
        raise ConversionError(
            f"{checkpoint}: a ResNet CLIP ('module.clip_model_.visual.layer1...'); only ViT CLIPs "
            "are supported (DFER-CLIP trains ViT-B/32)."
        )
    layers = (
        _num_layers(sd, _CLIP + "visual.transformer.resblocks."),
        _num_layers(sd, _CLIP + "transformer.resblocks."),
        _num_layers(sd, _TEMPORAL_PREFIX),
    )
    expected = set(dferclip_keys(*layers))
    missing = sorted(expected - set(sd))
    if missing:
        raise ConversionError(
            f"{checkpoint}: key {'module.' + missing[0]!r} is missing"
            + (f" ({len(missing) - 1} more: {_listing(['module.' + k for k in missing[1:]])})"
               if len(missing) > 1 else "")
            + "; not a complete DFER-CLIP model."
        )  # fmt: skip
    extra = sorted(set(sd) - expected)
    if extra:
        raise ConversionError(
            f"{checkpoint}: key {saved[extra[0]]!r} is not part of DFER-CLIP's model"
            + (f" ({len(extra) - 1} more: {_listing([saved[k] for k in extra[1:]])})"
               if len(extra) > 1 else "")
            + "; refusing to guess where it goes."
        )  # fmt: skip
    _views_checked(sd, saved)

    from grace_jax.models import clip_checkpoint

    clip_sd = {k[len(_CLIP) :]: v for k, v in sd.items() if k.startswith(_CLIP)}
    try:
        clip_config = clip_checkpoint.config_from_openai(clip_sd, checkpoint)
    except clip_checkpoint.CheckpointError as e:
        raise ConversionError(str(e)) from e
    for tower, cfg in (("vision", clip_config.vision), ("text", clip_config.text)):
        if cfg.heads < 1 or cfg.width % cfg.heads:
            raise ConversionError(
                f"{checkpoint}: CLIP {tower} width {cfg.width} gives no head count by OpenAI's rule "
                "(width // 64); head counts are not stored in a checkpoint."
            )

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
    token_rows, _ = recover_token_ids(
        prefix, suffix, sd[_CLIP + "token_embedding.weight"], source=checkpoint
    )

    cls_token = sd["temporal_net.cls_token"]
    dim, num_frames = cls_token.shape[-1], sd["temporal_net.pos_embedding"].shape[1] - 1
    inner = sd[_TEMPORAL_PREFIX + "0.0.fn.fn.to_qkv.weight"].shape[0] // 3
    mlp_dim = sd[_TEMPORAL_PREFIX + "0.1.fn.fn.net.0.weight"].shape[0]
    if dim != clip_config.projection_dim:
        raise ConversionError(
            f"{checkpoint}: the temporal model is {dim} wide but CLIP's joint space is "
            f"{clip_config.projection_dim}."
        )
    if inner % temporal_heads:
        raise ConversionError(
            f"{checkpoint}: temporal attention width {inner} is not divisible by "
            f"--temporal_heads={temporal_heads}."
        )

    dataset, fold = _dataset_and_fold(checkpoint, num_classes, dataset, fold)
    tok, tok_source = _tokenizer_for(tokenizer, clip_config.text.vocab_size)
    texts = [tok.decode(row) for row in token_rows] if tok is not None else None

    config = _config(
        dataset=dataset,
        fold=fold,
        clip_config=clip_config,
        num_classes=num_classes,
        n_ctx=n_ctx,
        class_specific=class_specific,
        num_frames=num_frames,
        temporal=dict(
            depth=layers[2], heads=temporal_heads, dim_head=inner // temporal_heads, mlp_dim=mlp_dim
        ),
        token_rows=token_rows,
        texts=texts,
        tokenizer=tok_source,
    )
    state, class_names = _converted_state(config, sd, clip_sd, checkpoint)

    info = {
        "format": "dferclip",
        "checkpoint": os.path.abspath(checkpoint),
        "sha256": _file_sha256(checkpoint),
        "epoch": meta.get("epoch"),
        # DFER-CLIP's best test accuracy (WAR, in %) over its epochs, as main.py recorded it.
        "best_acc": meta.get("best_acc"),
        "recipe": f"configs/ablations/dferclip.py:{_recipe_arg(dataset, fold)}",
        "texts": texts,
        "token_ids": token_rows,
        "command": command or shlex.join(["python", "-m", "grace_jax.convert", *sys.argv[1:]]),
        "converted_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    _write_run(workdir, config, class_names, state, info)
    return info


def _recipe_arg(dataset: str, fold: int | None) -> str:
    return dataset if fold is None or dataset == "ferv39k" else f"{dataset},fold={fold}"


def _config(*, dataset, fold, clip_config, num_classes, n_ctx, class_specific, num_frames, temporal,
            token_rows, texts, tokenizer):  # fmt: skip
    from configs.ablations import dferclip
    from grace_jax.models import clip as clip_lib

    c = dferclip.get_config(_recipe_arg(dataset, fold))
    m = c.model
    m.num_classes = num_classes
    m.clip.variant = clip_lib.variant_name(clip_config) or "custom"
    m.clip.architecture = clip_lib.config_to_dict(clip_config)
    m.clip.init = ""  # the weights are in the run's checkpoint
    m.clip.tokenizer = tokenizer
    m.num_frames = num_frames
    m.prompt.n_ctx = n_ctx
    m.prompt.class_specific = class_specific
    m.prompt.text = "cue"
    m.prompt.token_ids = token_rows
    m.class_names = ()
    m.class_cues = tuple(texts) if texts else ()  # for display: the ids above are what is used
    for key, value in temporal.items():
        m.temporal[key] = value
    c.data.image_size = clip_config.vision.image_size
    c.data.num_frames = num_frames
    c.data.dir = ""  # grace_jax.evaluate --data_dir=..., or --config.data.dir=... to fine-tune
    return c


def _converted_state(config, sd, clip_sd, source):
    """The training state of `config` with every parameter taken from the checkpoint."""
    import jax.numpy as jnp
    from flax import nnx

    from grace_jax import state as state_lib
    from grace_jax.text import class_cues
    from grace_jax.models import clip_checkpoint

    graphdef, state, tx = state_lib.create_state(config, None, steps_per_epoch=1)
    hf = clip_checkpoint.openai_to_hf(clip_sd)
    used: set[str] = set()

    def value_for(path: tuple) -> np.ndarray:
        if path[0] == "clip":
            key = clip_checkpoint.hf_key(path[1:])
            used.add(key)
            return clip_checkpoint._to_flax_layout(path[1:], hf[key])  # noqa: SLF001
        if path == ("prompts", "ctx"):
            ctx = sd["prompt_learner.ctx"]
            return ctx.reshape((-1,) + ctx.shape[-2:])  # a generic context is [n_ctx, W]
        if path[:2] == ("temporal", "blocks"):
            layer, leaf = path[2], tuple(path[3:])
            key = next(k for k, ours in _TEMPORAL.items() if ours == leaf)
            value = sd[f"{_TEMPORAL_PREFIX}{layer}.{key}"]
            return value.T if leaf[-1] == "kernel" else value
        if path in (("temporal", "cls_token"), ("temporal", "pos_embedding")):
            return sd[f"temporal_net.{path[1]}"]
        raise ConversionError(f"{source}: no tensor of the checkpoint for our parameter {path}.")

    def filled(part):
        leaves = []
        for path, variable in nnx.to_flat_state(part):
            path = tuple(path)
            value = np.asarray(value_for(path), np.float32)
            if value.shape != tuple(variable.shape):
                raise ConversionError(
                    f"{source}: the tensor for {'/'.join(map(str, path))} has shape {value.shape}, "
                    f"the model expects {tuple(variable.shape)}."
                )
            leaves.append((path, variable.replace(jnp.asarray(value, variable.dtype))))
        return nnx.from_flat_state(leaves)

    params, frozen = filled(state["params"]), filled(state["frozen"])
    unused = sorted(set(hf) - used)
    if unused:
        raise ConversionError(f"{source}: CLIP tensors without a place: {_listing(unused)}.")
    state = dict(state, params=params, frozen=frozen, opt_state=tx.init(params))
    names = [c.name for c in class_cues.class_cues(config.model.num_classes)]
    return state, names


def _write_run(workdir: str, config, class_names, state, info) -> None:
    from grace_jax.run import checkpointing

    parent = os.path.dirname(workdir)
    os.makedirs(parent, exist_ok=True)
    staging = os.path.join(parent, f".{os.path.basename(workdir)}.partial-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        os.makedirs(staging)
        ckpt = checkpointing.Checkpoints(os.path.join(staging, "checkpoints"))
        ckpt.save(0, state)
        ckpt.wait()
        ckpt.close()
        with open(os.path.join(staging, "classes.json"), "w") as f:
            json.dump(class_names, f)
        with open(os.path.join(staging, CONVERSION_FILE), "w") as f:
            json.dump(info, f, indent=2)
        with open(os.path.join(staging, "config.json"), "w") as f:
            f.write(config.to_json_best_effort(indent=2, sort_keys=True))
        if os.path.isdir(workdir):
            os.rmdir(workdir)  # empty (checked before): replaced by the complete directory
        os.replace(staging, workdir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def main(argv):
    from absl import app

    if len(argv) != 2 or argv[1] not in FORMATS:
        raise app.UsageError(
            f"Usage: python -m grace_jax.convert {{{'|'.join(FORMATS)}}} --checkpoint=PATH.pth "
            "--workdir=RUN"
        )
    if not _CHECKPOINT.value or not _WORKDIR.value:
        raise app.UsageError("--checkpoint and --workdir are required.")
    info = convert_dferclip(
        _CHECKPOINT.value,
        _WORKDIR.value,
        dataset=_DATASET.value or None,
        fold=_FOLD.value,
        tokenizer=_TOKENIZER.value,
        temporal_heads=_TEMPORAL_HEADS.value,
    )
    print(f"Converted {_CHECKPOINT.value} -> {_WORKDIR.value} ({info['recipe']}).")
    if info["epoch"] is not None:
        print(f"  DFER-CLIP epoch {info['epoch']}, best test accuracy {info['best_acc']}")
    if info["texts"]:
        for i, text in enumerate(info["texts"]):
            print(f"  class {i}: {text}")
    else:
        print("  prompt token ids recovered; no CLIP tokenizer at hand to show them as text "
              "(--tokenizer=DIR_OR_HUB_NAME)")  # fmt: skip


if __name__ == "__main__":
    from absl import flags

    from grace_jax.infra import cli, errors

    _CHECKPOINT = flags.DEFINE_string("checkpoint", None, "DFER-CLIP .pth file.")
    _WORKDIR = flags.DEFINE_string("workdir", None, "Run directory to create (must not exist).")
    _DATASET = flags.DEFINE_enum(
        "dataset", "", ["", "dfew", "ferv39k", "mafw"],
        "Recipe for fine-tuning; default from the file name or the class count.",
    )  # fmt: skip
    _FOLD = flags.DEFINE_integer("fold", None, "DFEW/MAFW fold; default from the file name.")
    _TOKENIZER = flags.DEFINE_string(
        "tokenizer", None,
        "CLIP tokenizer to show the recovered sentences with; default openai/clip-vit-base-patch32.",
    )  # fmt: skip
    _TEMPORAL_HEADS = flags.DEFINE_integer(
        "temporal_heads", 8, "Temporal attention heads (DFER-CLIP: 8; not stored in checkpoints)."
    )
    cli.run(main)
