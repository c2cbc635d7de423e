r"""DFER-CLIP's trained checkpoints as grace_jax run directories (the library of `grace_jax.convert`).

DFER-CLIP (Zhao & Patras, BMVC 2023, github.com/zengqunzhao/DFER-CLIP) saves, from its main.py,
`torch.save({'epoch', 'state_dict', 'best_acc', 'optimizer', 'recorder'})` of its model wrapped in
`torch.nn.DataParallel` (every key starts with `module.`). The model holds:

- `clip_model_.*`: the whole OpenAI CLIP (ViT), and `image_encoder.*` / `text_encoder.*`, views of
  its visual and text towers under second names: each such tensor is read once and checked equal;
- `temporal_net.*`: the temporal transformer (class token, positions, pre-LN blocks);
- `prompt_learner.ctx`: the learned contexts, and the buffers `token_prefix` / `token_suffix`, from
  which the prompts' token ids are recovered (`grace_jax.interop.dferclip_layout` reads all of it).

Every size is read from the tensors (ViT-B/32 as released, or any other): widths, depths, patch size,
vocabulary, frames, contexts. Head counts are not stored in a state dict; CLIP's follow OpenAI's rule
(width // 64, as DFER-CLIP's clip.load builds them) and the temporal model's DFER-CLIP's 8 heads
(`--temporal_heads`).

The run directory (written to a temporary name and renamed when complete; a failed conversion leaves
nothing) holds what `grace_jax.predict`, `grace_jax.evaluate` and training read: `config.json` (the
`dferclip` recipe, configs/dferclip.py, with the checkpoint's sizes, the recovered token ids
in `model.prompt.token_ids` so that no tokenizer is needed, and the decoded sentences in
`model.class_cues` where a CLIP tokenizer is at hand), `classes.json`, an orbax checkpoint at step 0
in `checkpoints/last`, and `conversion.json` (source file, its SHA-256, epoch, best accuracy, the
command). `grace_jax.run.runs.load` opens it as it opens a training run. The .pth is read by
`grace_jax.interop.torch_pickle`, which never runs code from it.
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

import numpy as np

from grace_jax.interop import dferclip_layout as layout
from grace_jax.interop.dferclip_layout import CLIP_PREFIX, TEMPORAL, TEMPORAL_PREFIX
from grace_jax.interop.torch_pickle import ConversionError, UnsafeCheckpointError, read_torch_checkpoint

__all__ = ["CONVERSION_FILE", "ConversionError", "UnsafeCheckpointError", "convert_dferclip"]

CONVERSION_FILE = "conversion.json"


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
        raise ConversionError(f"{path}: {num_classes} classes, but {dataset} has {expected}; pass --dataset.")
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
      dataset, fold: the recipe (configs/dferclip.py) the config is written with; default
        from the file name or the class count. Only training reads dataset-specific settings.
      tokenizer: a CLIP tokenizer (directory or hub name) to decode the recovered sentences with;
        default openai/clip-vit-base-patch32 for CLIP's vocabulary, where available offline or online.
      temporal_heads: the temporal attention's head count (not stored in a state dict; DFER-CLIP: 8).
    """
    from grace_jax.infra import paths

    if paths.is_uri(workdir):
        raise ConversionError(
            f"{workdir}: grace_jax.convert writes a local run directory; copy it to object storage "
            "afterwards (e.g. gcloud storage cp -r)."
        )
    workdir = paths.resolve(workdir)
    if os.path.exists(workdir) and (not os.path.isdir(workdir) or os.listdir(workdir)):
        raise ConversionError(f"{workdir}: already exists; choose a new --workdir.")

    raw, meta = read_torch_checkpoint(checkpoint)
    sd, layers = layout.checked_layout(raw, checkpoint)
    clip_sd = {k[len(CLIP_PREFIX) :]: v for k, v in sd.items() if k.startswith(CLIP_PREFIX)}
    clip_config = _clip_config(clip_sd, checkpoint)
    prompt = layout.prompt(sd, clip_config, checkpoint)
    num_frames, temporal = layout.temporal(sd, clip_config, layers[2], temporal_heads, checkpoint)

    dataset, fold = _dataset_and_fold(checkpoint, prompt["num_classes"], dataset, fold)
    tok, tok_source = _tokenizer_for(tokenizer, clip_config.text.vocab_size)
    token_rows = prompt.pop("token_rows")
    texts = [tok.decode(row) for row in token_rows] if tok is not None else None

    config = _config(
        dataset=dataset, fold=fold, clip_config=clip_config, num_frames=num_frames, temporal=temporal,
        token_rows=token_rows, texts=texts, tokenizer=tok_source, **prompt,
    )  # fmt: skip
    state, class_names = _converted_state(config, sd, clip_sd, checkpoint)

    info = {
        "format": "dferclip",
        "checkpoint": os.path.abspath(checkpoint),
        "sha256": _file_sha256(checkpoint),
        "epoch": meta.get("epoch"),
        # DFER-CLIP's best test accuracy (WAR, in %) over its epochs, as main.py recorded it.
        "best_acc": meta.get("best_acc"),
        "recipe": f"configs/dferclip.py:{_recipe_arg(dataset, fold)}",
        "texts": texts,
        "token_ids": token_rows,
        "command": command or shlex.join(["python", "-m", "grace_jax.convert", *sys.argv[1:]]),
        "converted_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    _write_run(workdir, config, class_names, state, info)
    return info


def _clip_config(clip_sd: dict[str, np.ndarray], checkpoint: str):
    from grace_jax.models import clip_checkpoint

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
    return clip_config


def _recipe_arg(dataset: str, fold: int | None) -> str:
    return dataset if fold is None or dataset == "ferv39k" else f"{dataset},fold={fold}"


def _config(*, dataset, fold, clip_config, num_classes, n_ctx, class_specific, num_frames, temporal,
            token_rows, texts, tokenizer):  # fmt: skip
    from grace_jax.configs import dferclip
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
    from grace_jax.models import clip_checkpoint
    from grace_jax.text import class_cues

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
            key = next(k for k, ours in TEMPORAL.items() if ours == leaf)
            value = sd[f"{TEMPORAL_PREFIX}{layer}.{key}"]
            return value.T if leaf[-1] == "kernel" else value
        if path in (("temporal", "cls_token"), ("temporal", "pos_embedding")):
            return sd[f"temporal_net.{path[1]}"]
        raise ConversionError(f"{source}: no tensor of the checkpoint for grace_jax's parameter {path}.")

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
        raise ConversionError(f"{source}: CLIP tensors without a place: {layout.listing(unused)}.")
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
