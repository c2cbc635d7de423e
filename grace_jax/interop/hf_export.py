r"""A trained (or converted) run as a Hugging Face style model folder, written and read back.

The folder holds:

- `model.safetensors`: every variable of the model (parameters in float32 and the class texts' token
  ids), keyed by its path in the model ("clip/vision_model/.../kernel"), no optimizer state; no pickle
  anywhere in the folder;
- `config.json`: the run's grace_jax config, made self-contained: `model.clip.architecture` gives the
  CLIP sizes, `model.clip.init` is empty (the weights are here) and `model.prompt.token_ids` (plus
  `model.cate.token_ids` for CATE's cues) holds the class texts' token ids, so loading needs no
  download and no tokenizer;
- `classes.json`: the class names, in label order;
- `README.md`: a model card (what the model is, its classes, the data and the metrics the run
  recorded, how it was made, the recipe's sources).

`export_run` writes one from a loaded run; `grace_jax.run.runs.load` reads one back (from the Hugging
Face hub cache for a hub name: `resolve_model`), with `read_weights` here, and its probabilities equal
those of the run itself. The command line is `grace_jax.export`.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
from typing import Any, Protocol

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from grace_jax import sharding
from grace_jax.infra import errors, paths
from grace_jax.interop.dferclip import CONVERSION_FILE
from grace_jax.models import clip as clip_lib
from grace_jax.models import prompts

__all__ = [
    "ExportError",
    "FILES",
    "WEIGHTS",
    "check_folder",
    "check_out_dir",
    "export_run",
    "model_card",
    "read_weights",
    "resolve_model",
    "self_contained_config",
    "weights_metadata",
]

WEIGHTS = "model.safetensors"
FILES = (WEIGHTS, "config.json", "classes.json", "README.md")
_FORMAT = "grace_jax"


class ExportError(errors.UserError, ValueError):
    """A model folder that cannot be written or read; the message names the file and the key."""


class Exportable(Protocol):
    """What exporting needs of a loaded model: `grace_jax.run.runs.Run` has it."""

    config: ml_collections.ConfigDict
    class_names: list[str]
    checkpoint: str
    step: int | None
    directory: str  # the run's folder: its recorded metrics and commands go into the model card

    @property
    def model(self) -> Any: ...


# ------------------------------------------------------------------------------------ export
def self_contained_config(config: ml_collections.ConfigDict, model: Any) -> ml_collections.ConfigDict:
    """The run's config with what loading would otherwise fetch written into it (see the module
    docstring)."""
    c = ml_collections.ConfigDict(json.loads(config.to_json_best_effort()))
    m = c.model
    m.clip.architecture = clip_lib.config_to_dict(model.clip.config)
    m.clip.variant = clip_lib.variant_name(model.clip.config) or m.clip.variant
    m.clip.init = ""
    m.prompt.token_ids = prompts.rows_from_ids(
        np.asarray(model.prompts.ids[...]), np.asarray(model.prompts.eot[...]), model.prompts.n_ctx
    )
    if model.cue_ids is not None:
        m.cate.token_ids = prompts.rows_from_ids(np.asarray(model.cue_ids[...]), np.asarray(model.cue_eot[...]))
    return c


def _flat_variables(model) -> dict[str, np.ndarray]:
    out = {}
    for path, variable in nnx.to_flat_state(nnx.state(model)):
        # np.array(order="C"), not np.ascontiguousarray: that one turns scalars into [1] arrays.
        out["/".join(map(str, path))] = np.array(jax.device_get(variable[...]), order="C")
    return out


def _read_json(path: str):
    try:
        return json.loads(paths.read_text(path)) if paths.exists(path) else None
    except (OSError, ValueError):
        return None


def _evaluations(workdir: str) -> list[dict]:
    folder = paths.join(workdir, "evaluation")
    if not paths.isdir(folder):
        return []
    found = []
    for name in paths.listdir(folder):
        if name.endswith(".json") and (result := _read_json(paths.join(folder, name))):
            found.append(result)
    return found


def _clip_name(clip_cfg) -> str:
    if clip_cfg.variant != "custom" or not clip_cfg.get("architecture"):
        return clip_cfg.variant
    v = clip_cfg.architecture.vision
    return f"ViT (width {v.width}, {v.layers} layers, patch {v.patch_size})"


def _fmt(x) -> str:
    return "-" if x is None else f"{100 * x:.2f}"


def _is_dferclip(config) -> bool:
    m = config.model
    return not (m.motion.enabled or m.cate.enabled or m.ot.enabled)


def model_card(
    class_names: list[str], workdir: str, config, *, name: str, license_id: str, command_line: str = ""
) -> str:
    """The README.md of an exported model (Hugging Face model card with YAML metadata); `workdir` is
    the run whose recorded metrics and commands the card reports."""
    conversion = _read_json(paths.join(workdir, CONVERSION_FILE))
    lines = _card_head(config, class_names, name, license_id)
    lines += _card_data_and_metrics(workdir, config, conversion)
    lines += _card_provenance(workdir, config, conversion, command_line)
    return "\n".join(lines)


def _card_head(config, class_names: list[str], name: str, license_id: str) -> list[str]:
    """The card's metadata, description, use and classes, up to the data section's heading."""
    m, d = config.model, config.data
    kind = (
        "DFER-CLIP (Zhao & Patras, BMVC 2023), as grace_jax's `dferclip` configuration"
        if _is_dferclip(config)
        else "GRACE (granular representation alignment for cross-modal emotion recognition, "
        "arXiv 2507.11892) as reconstructed by grace_jax"
    )
    lines = [
        "---",
        f"library_name: {_FORMAT}",
        f"license: {license_id}",
        "pipeline_tag: video-classification",
        "tags:",
        *(f"- {t}" for t in ("dynamic-facial-expression-recognition", "emotion-recognition",
                              "clip", "jax", "flax", _FORMAT)),
        "---",
        "",
        f"# {name}",
        "",
        f"{kind}: a dynamic facial expression recognition model that classifies a face video into "
        f"{m.num_classes} emotions. CLIP {_clip_name(m.clip)} image tower on {d.num_frames} frames of "
        f"{d.image_size}x{d.image_size} px, a temporal transformer, and learned text prompts "
        f"({m.prompt.n_ctx} context tokens followed by the class {'description' if m.prompt.text == 'cue' else 'name'})."
        + ("" if _is_dferclip(config) else " Motion weighting, CATE and token-level optimal transport: "
           f"{'on' if m.motion.enabled else 'off'} / {'on' if m.cate.enabled else 'off'} / "
           f"{'on' if m.ot.enabled else 'off'}."),
        "",
        "## Use",
        "",
        "```",
        "pip install grace_jax   # or: pip install -e . in a clone of the grace_jax repository",
        f"python -m grace_jax.predict --model={name} my_clip.mp4 /data/faces/clip_0042/",
        "```",
        "",
        "Inputs are face videos or folders of face-crop frames; per-class probabilities go to "
        "predictions.json / predictions.csv. The model was trained on face crops, so crop faces the "
        "same way first.",
        "",
        "## Classes",
        "",
        "| label | class |",
        "|---|---|",
        *(f"| {i} | {n} |" for i, n in enumerate(class_names)),
        "",
        "## Data",
        "",
    ]  # fmt: skip
    return lines


def _card_data_and_metrics(workdir: str, config, conversion: dict | None) -> list[str]:
    """Where the data came from, and every metric the run recorded (training, grace_jax.evaluate,
    DFER-CLIP's own log for a converted run)."""
    d = config.data
    final = _read_json(paths.join(workdir, "final_metrics.json"))
    evaluations = _evaluations(workdir)
    manifest = _read_json(paths.join(d.dir, "manifest.json")) if d.get("dir") else None
    lines: list[str] = []
    if conversion:
        recipe = str(conversion.get("recipe", "")).partition(":")[2] or "?"
        lines.append(
            f"Trained with DFER-CLIP's official code ({recipe.replace(',fold=', ' fold ')}); its "
            "checkpoint converted with `grace_jax.convert` (recipe: "
            f"`{conversion.get('recipe')}`)."
        )
    if manifest:
        splits = ", ".join(f"{s}: {v.get('num_clips')} clips" for s, v in manifest.get("splits", {}).items())
        lines.append(f"Dataset `{manifest.get('dataset')}` ({splits}), built with `{manifest.get('command')}`.")
    elif d.get("dir"):
        lines.append(f"Shards: `{d.dir}` (fold {d.get('fold', '-')}).")
    lines += [
        "DFEW, FERV39k and MAFW are licence-gated research datasets: check their terms before any "
        "use of a model trained on them.",
        "",
        "## Metrics",
        "",
        "UAR: mean per-class recall; WAR: accuracy (%).",
        "",
        "| evaluation | UAR | WAR | clips |",
        "|---|---|---|---|",
    ]
    if final:
        for which in ("best", "last"):
            r = final.get(which) or {}
            if "uar" in r:
                lines.append(f"| training, {which} (step {r.get('step')}) | {_fmt(r['uar'])} | "
                             f"{_fmt(r['war'])} | {r.get('num_examples', '-')} |")  # fmt: skip
    for r in evaluations:
        lines.append(f"| grace_jax.evaluate: {r.get('dataset') or r.get('data_dir')} {r.get('split')}, "
                     f"{r.get('checkpoint')} | {_fmt(r.get('uar'))} | {_fmt(r.get('war'))} | "
                     f"{r.get('num_examples', '-')} |")  # fmt: skip
    if conversion and conversion.get("best_acc") is not None:
        lines.append(f"| DFER-CLIP's main.py, best epoch ({conversion.get('epoch')}) | - | "
                     f"{float(conversion['best_acc']):.2f} | - |")  # fmt: skip
    return lines


def _card_provenance(workdir: str, config, conversion: dict | None, command_line: str) -> list[str]:
    """How the model was made, the recipe's sources and the folder's files."""
    command = _read_json(paths.join(workdir, "command.json"))
    lines: list[str] = []
    lines += ["", "## How it was made", ""]
    if conversion:
        lines.append(f"`{conversion.get('command')}` (source SHA-256 `{conversion.get('sha256')}`).")
    if command and command.get("commands"):
        lines += ["Trained with:", "", "```", *command["commands"], "```"]
    if command_line:
        lines.append(f"Exported with `{command_line}`.")
    lines += [
        "",
        "The full configuration is `config.json` (grace_jax's config format; "
        "`python -m grace_jax.main --config=configs/run.py:<a run with this config.json>` trains with it).",
        "",
        "## Sources",
        "",
        "- CLIP: Radford et al., ICML 2021 (OpenAI), the image and text towers.",
        "- DFER-CLIP: Zhao & Patras, BMVC 2023; code github.com/zengqunzhao/DFER-CLIP (MIT licence): "
        "the video pipeline, the learned class-specific prompts and the training recipe.",
    ]  # fmt: skip
    if not _is_dferclip(config):
        lines.append("- GRACE: arXiv 2507.11892 (2025); its code is not public, so numbers the paper "
                     "does not state are grace_jax's config defaults. PLOT (ICLR 2023) for token-level "
                     "Sinkhorn.")  # fmt: skip
    lines += ["", "## Files", "",
              "`model.safetensors` (weights and token ids, no pickle), `config.json`, `classes.json`, "
              "this `README.md`.", ""]  # fmt: skip
    return lines


def check_out_dir(out_dir: str) -> str:
    """The absolute local folder to write, refused (ExportError) if it is a URI or already holds files."""
    if paths.is_uri(out_dir):
        raise ExportError(f"{out_dir}: export writes a local folder (upload it with huggingface-cli).")
    out_dir = paths.resolve(out_dir)
    if os.path.exists(out_dir) and (not os.path.isdir(out_dir) or os.listdir(out_dir)):
        raise ExportError(f"{out_dir}: already exists; choose a new --out.")
    return out_dir


def export_run(
    run: Exportable, out_dir: str, *, name: str | None = None, license_id: str = "other",
    command: str = "",
) -> dict:  # fmt: skip
    """Writes the model folder `out_dir` (local, must not exist) of `run` (`runs.load(workdir, which)`).

    Returns {"out", "checkpoint", "step", "tensors"}.
    """
    from safetensors.numpy import save_file

    out_dir = check_out_dir(out_dir)
    model = run.model
    config = self_contained_config(run.config, model)
    tensors = _flat_variables(model)
    name = name or os.path.basename(out_dir)
    card = model_card(run.class_names, run.directory, config, name=name, license_id=license_id, command_line=command)

    parent = os.path.dirname(out_dir)
    os.makedirs(parent, exist_ok=True)
    staging = os.path.join(parent, f".{os.path.basename(out_dir)}.partial-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        os.makedirs(staging)
        save_file(
            tensors,
            os.path.join(staging, WEIGHTS),
            metadata={
                "format": _FORMAT,
                "checkpoint": run.checkpoint,
                "step": str(run.step),
                "exported_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            },
        )
        os.chmod(os.path.join(staging, WEIGHTS), 0o644)  # safetensors writes it owner-only
        with open(os.path.join(staging, "config.json"), "w") as f:
            f.write(config.to_json_best_effort(indent=2, sort_keys=True))
        with open(os.path.join(staging, "classes.json"), "w") as f:
            json.dump(run.class_names, f)
        with open(os.path.join(staging, "README.md"), "w") as f:
            f.write(card)
        if os.path.isdir(out_dir):
            os.rmdir(out_dir)
        os.replace(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return {"out": out_dir, "checkpoint": run.checkpoint, "step": run.step, "tensors": len(tensors)}


# ------------------------------------------------------------------------------------ reading
def resolve_model(name_or_dir: str, *, cache_dir: str | None = None) -> str:
    """A local model folder: the directory itself, or a hub name's snapshot in the hub cache."""
    if os.path.isdir(name_or_dir):
        return os.path.abspath(name_or_dir)
    from grace_jax.infra import hub

    if not hub.HUB_NAME.fullmatch(name_or_dir):
        raise ExportError(f"{name_or_dir}: no such folder, and not a hub name (owner/name).")
    try:
        return hub.snapshot(name_or_dir, "--model", FILES, cache_dir=cache_dir)
    except hub.HubError as e:
        raise ExportError(str(e)) from None


def check_folder(folder: str) -> None:
    """Raises ExportError naming the file when the local `folder` is not a model folder."""
    for needed in (WEIGHTS, "config.json"):
        if not os.path.isfile(os.path.join(folder, needed)):
            run = os.path.isfile(os.path.join(folder, "config.json")) and os.path.isdir(
                os.path.join(folder, "checkpoints")
            )
            hint = " (it is a training run: give it as --workdir)" if run else ""
            raise ExportError(f"{os.path.join(folder, needed)}: not found; not a grace_jax model folder{hint}.")


def weights_metadata(folder: str) -> dict:
    """What export_run recorded in the weights file: {"format", "checkpoint", "step", "exported_utc"}."""
    with _open_weights(os.path.join(folder, WEIGHTS)) as f:
        return dict(f.metadata() or {})


def _open_weights(path: str):
    """safe_open(path), with a damaged file (cut short by an interrupted copy or download) named in an
    ExportError: safetensors' own message ("incomplete metadata") names no file."""
    from safetensors import SafetensorError, safe_open

    try:
        return safe_open(path, framework="np")
    except SafetensorError as e:
        raise ExportError(
            f"{path}: cannot be read, the file is damaged or cut short ({e}); export the run again "
            "(python -m grace_jax.export) or copy or download the folder again."
        ) from None


def read_weights(folder: str, parts: list, mesh: jax.sharding.Mesh | None = None) -> list:
    """`parts` (abstract nnx states of the model of the folder's config.json) with every variable read
    from the folder's weights file; each tensor must have a place, and each place a tensor.

    Without `mesh` the arrays are on the default device; with it, every array is placed as training
    shards it (`sharding.state_shardings`), in a way that works with several processes too (each
    places its own devices' parts).
    """
    path = os.path.join(folder, WEIGHTS)
    with _open_weights(path) as f:
        available = set(f.keys())
        used = set()

        def filled(part):
            leaves = []
            for var_path, variable in nnx.to_flat_state(part):
                key = "/".join(map(str, var_path))
                if key not in available:
                    raise ExportError(f"{path}: tensor {key!r} is missing.")
                value = f.get_tensor(key)
                if value.shape != tuple(variable.shape):
                    raise ExportError(
                        f"{path}: tensor {key!r} has shape {value.shape}, the model expects {tuple(variable.shape)}."
                    )
                used.add(key)
                if mesh is None:
                    array = jnp.asarray(value, variable.dtype)
                else:
                    value = np.asarray(value, variable.dtype)
                    placed = sharding.state_shardings(mesh, value)
                    array = jax.make_array_from_callback(value.shape, placed, lambda i, v=value: v[i])
                leaves.append((var_path, variable.replace(array)))
            return nnx.from_flat_state(leaves)

        filled_parts = [filled(p) for p in parts]
    extra = sorted(available - used)
    if extra:
        raise ExportError(f"{path}: tensor {extra[0]!r} has no place in the model of config.json.")
    return filled_parts
