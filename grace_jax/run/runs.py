"""Opening a trained model, whatever made it: its config, class names and variables, as one `Run`.

`load` is the one loader; `grace_jax.predict`, `grace_jax.evaluate`, `grace_jax.export` and the
benchmarks use it. A model lives in one of three kinds of folder:

- a training run (`grace_jax.main`): `config.json` (the resolved config), `classes.json` and orbax
  checkpoints under `checkpoints/{best,last}`; local or gs://;
- a converted DFER-CLIP checkpoint (`grace_jax.convert`): the same layout, its one checkpoint at
  step 0 in `checkpoints/last`;
- an exported model folder (`grace_jax.export`: `model.safetensors` and a self-contained
  `config.json`, read by `grace_jax.interop.hf_export`), or its hub name (owner/name), read from the
  Hugging Face hub cache (downloaded once, then offline; `HF_HUB_OFFLINE=1` uses the cache only).

No command-line flags are defined here, so every command can import it.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import jax
import ml_collections
from flax import nnx

from grace_jax import sharding
from grace_jax import state as state_lib
from grace_jax.infra import config_upgrade, errors, hub, paths
from grace_jax.interop import hf_export
from grace_jax.models import grace
from grace_jax.run import checkpointing

__all__ = ["Run", "load", "read_class_names", "read_config", "read_json"]


@dataclasses.dataclass(frozen=True)
class Run:
    """A loaded model and where it came from."""

    config: ml_collections.ConfigDict
    class_names: list[str]
    graphdef: Any
    state: dict  # {"params", "frozen", "rest"}; a run's checkpoint adds "opt_state" and "step"
    step: int | None  # the checkpoint's training step (None: an export that does not record it)
    checkpoint: str  # "best" or "last": the one restored, or the one an export was made from
    directory: str  # the run directory or model folder (a hub name's snapshot in the hub cache)
    exported: bool  # read from an exported model folder rather than a run's checkpoint

    @property
    def model(self) -> nnx.Module:
        """The model with the loaded variables (a view: no copy of the arrays)."""
        state = self.state
        return nnx.merge(self.graphdef, state["params"], state["frozen"], state["rest"])


def read_config(workdir: str) -> ml_collections.ConfigDict:
    path = paths.join(workdir, "config.json")
    if not paths.exists(path):
        raise errors.NotFoundError(
            f"{path}: not found; --workdir must be a grace_jax run (a folder written by grace_jax.main "
            "or grace_jax.convert)."
        )
    return ml_collections.ConfigDict(config_upgrade.upgrade(read_json(path)))


def read_json(path: str) -> Any:
    """The JSON of a run's or an export's file; a damaged one (cut short by a copy) is a UserError
    naming it rather than a JSONDecodeError that names no file."""
    try:
        return json.loads(paths.read_text(path))
    except ValueError as e:  # JSONDecodeError, or bytes that are not UTF-8
        raise errors.UserError(
            f"{path}: damaged, not readable as JSON ({e}); copy the folder again from where it was made."
        ) from None


def read_class_names(directory: str, num_classes: int) -> list[str]:
    path = paths.join(directory, "classes.json")
    if not paths.exists(path):
        return [str(i) for i in range(num_classes)]
    names = read_json(path)
    if len(names) != num_classes:
        raise ValueError(f"{path}: {len(names)} class names but the config has {num_classes} classes.")
    return [str(n) for n in names]


def load(
    source: str,
    which: str = "best",
    *,
    mesh: jax.sharding.Mesh | None = None,
    kind: str | None = None,
    cache_dir: str | None = None,
) -> Run:
    """Loads the model of a run directory, a converted run, an exported folder or a hub name.

    Args:
      source: the folder (a run may be a gs:// URI), or an exported model's hub name.
      which: "best" or "last". A run's `best` falls back to `last` where it has no best checkpoint (a
        converted run, or one stopped before its first evaluation). An export holds the one
        checkpoint it was made from: "last" from an export of "best" is a ConfigError.
      mesh: None places every array on the first local device (what predicting one clip needs; a run
        and its export then give the same numbers); a mesh places them as training shards them.
      kind: "run" (errors then speak of --workdir), "export" (of --model), or None to tell from
        `source`: an export where the folder holds model.safetensors, or where `source` is a hub
        name and no local path; a run otherwise.
      cache_dir: the Hugging Face hub cache for a hub name (default: huggingface_hub's).
    """
    if which not in ("best", "last"):
        raise ValueError(f"checkpoint must be 'best' or 'last', got {which!r}")
    kind = kind or _kind_of(source)
    if kind == "export":
        return _load_exported(source, which, mesh, cache_dir)
    if kind == "run":
        return _load_run(paths.resolve(source), which, mesh)
    raise ValueError(f"kind must be 'run', 'export' or None, got {kind!r}")


def _kind_of(source: str) -> str:
    if paths.is_uri(source):
        return "run"  # exports are read from local folders and the hub cache only
    if os.path.isfile(os.path.join(source, hf_export.WEIGHTS)):
        return "export"
    return "export" if not os.path.exists(source) and hub.HUB_NAME.fullmatch(source) else "run"


def _abstract_state(config: ml_collections.ConfigDict) -> tuple[Any, dict]:
    """(graphdef, the shapes and dtypes of the training state `state.create_state` builds), without
    spending a random initialisation on it."""
    # Inference reads no captions: a tokenizer is needed only to build the class texts.
    tokenizer = state_lib.load_tokenizer(config.model) if grace.needs_tokenizer(config.model) else None
    built = {}

    def state_only():
        built["graphdef"], state, _ = state_lib.create_state(config, tokenizer, steps_per_epoch=1)
        return state

    abstract = jax.eval_shape(state_only)
    return built["graphdef"], abstract


def _load_run(workdir: str, which: str, mesh: jax.sharding.Mesh | None) -> Run:
    config = read_config(workdir)
    graphdef, abstract = _abstract_state(config)
    if mesh is None:
        # One device, whatever mesh the run was saved from: what predicting one clip needs, and the
        # same placement (so the same numbers) as an exported model loaded without a mesh.
        device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        shardings = jax.tree.map(lambda _: device, abstract)
    else:
        shardings = sharding.state_shardings(mesh, abstract)
    abstract = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), abstract, shardings)
    ckpt = checkpointing.Checkpoints(paths.join(workdir, "checkpoints"))
    try:
        use_best = which == "best" and ckpt.best.latest_step() is not None
        # A damaged step is a one-line error naming it: reading a model never moves a run's files.
        step, state = ckpt.restore(abstract, best=use_best, on_damage="raise")
    finally:
        ckpt.close()
    names = read_class_names(workdir, config.model.num_classes)
    return Run(config, names, graphdef, state, int(step), "best" if use_best else "last", workdir, False)


def _load_exported(source: str, which: str, mesh: jax.sharding.Mesh | None, cache_dir: str | None) -> Run:
    folder = hf_export.resolve_model(source, cache_dir=cache_dir)
    hf_export.check_folder(folder)
    info = hf_export.weights_metadata(folder)
    if which == "last" and info.get("checkpoint") == "best":
        raise errors.ConfigError(
            f"{source} holds the run's best checkpoint only; export its last one "
            "(python -m grace_jax.export --checkpoint=last) to use that."
        )
    config = read_config(folder)
    if grace.needs_tokenizer(config.model):
        raise hf_export.ExportError(
            f"{folder}/config.json: no model.prompt.token_ids; not written by grace_jax.export."
        )
    names = read_class_names(folder, config.model.num_classes)
    graphdef, abstract = _abstract_state(config)
    params, frozen, rest = hf_export.read_weights(
        folder, [abstract["params"], abstract["frozen"], abstract["rest"]], mesh
    )
    step = info.get("step", "")
    return Run(
        config, names, graphdef, {"params": params, "frozen": frozen, "rest": rest},
        int(step) if step.isdigit() else None, info.get("checkpoint") or "exported", folder, True,
    )  # fmt: skip
