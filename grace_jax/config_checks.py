"""The trainer's config, checked before any work starts: each problem is one `errors.ConfigError`
naming the config field (as `--config.<field>` spells it) and what to do.

`check_train_config` runs at the top of `train.train_and_evaluate`, after `jax.distributed` starts
(the device count is needed) and before anything is written: the mesh against the devices, the batch
against the mesh, the CLIP variant and checkpoint, the tokenizer (a hub name must be in the hub cache
or the hub reachable: `grace_jax.infra.hub`), the data folder (manifest, splits, shards, class count against
`model.num_classes`: `grace_jax.text.class_set`), the choices with a fixed set of values and the intervals.
Whether the workdir can be written is learnt by taking its lock (`workdir_lock`), the first thing
written there.
"""

from __future__ import annotations

import os

import jax
import ml_collections

from grace_jax import optim, sharding
from grace_jax.data import clip_transforms, input_pipeline, schema, tfds_source
from grace_jax.infra import errors, hub, paths
from grace_jax.text import class_set


def check_train_config(config: ml_collections.ConfigDict, workdir: str) -> dict | None:
    """Raises errors.ConfigError for the first problem found; returns the data.dir manifest (None for
    SynthFER, which is generated later)."""
    check_mesh(config)
    check_batch(config.optim.batch_size, "optim.batch_size", config)
    check_accumulation(config)
    if config.data.eval_batch_size:
        check_batch(config.data.eval_batch_size, "data.eval_batch_size", config)
    _check_choices(config)
    _check_intervals(config.train)
    # A workdir that already holds a checkpoint (a resumed run, a converted DFER-CLIP checkpoint to
    # fine-tune) takes its weights from there: no starting CLIP weights need naming.
    check_clip(config.model, has_checkpoint=paths.exists(paths.join(workdir, "checkpoints", "last")))
    _check_workdir(workdir)
    manifest = check_data(config)
    # The class count against the data's, and the class texts for the model's prompts and cues
    # against the count (model.num_classes=0: the data's; grace_jax.text.class_set).
    class_set.resolve(config, manifest)
    return manifest


# ------------------------------------------------------------------------------------ devices
def _mesh_sizes(config) -> dict[str, int]:
    axes, shape = tuple(config.mesh.axes), tuple(config.mesh.shape)
    unknown = [a for a in axes if a not in sharding.AXES]
    if unknown or len(set(axes)) != len(axes):
        raise errors.ConfigError(
            f"mesh.axes={axes}: the axes are named {sharding.AXES} (each at most once); got {unknown or axes}."
        )
    if len(axes) != len(shape):
        raise errors.ConfigError(f"mesh.shape={shape} has {len(shape)} sizes for the {len(axes)} mesh.axes {axes}.")
    return dict(zip(axes, shape))


def check_mesh(config) -> tuple[int, ...]:
    """The mesh's concrete (data, fsdp, model) sizes on this job's devices."""
    sizes = _mesh_sizes(config)
    try:
        return sharding.mesh_shape(sizes, jax.device_count())
    except ValueError as e:
        raise errors.ConfigError(
            f"mesh.shape={tuple(config.mesh.shape)} does not fit the {jax.device_count()} devices of this "
            f"job ({e}); the sizes must multiply to the device count, with -1 for the rest."
        ) from None


def check_batch(batch_size: int, field: str, config) -> None:
    """`batch_size` (named `field` in messages) splits evenly over the batch axes 'data' x 'fsdp'."""
    if batch_size <= 0:
        raise errors.ConfigError(f"{field}={batch_size}: a batch needs at least one clip.")
    shape = dict(zip(sharding.AXES, check_mesh(config)))
    parallel = shape["data"] * shape["fsdp"]
    if batch_size % parallel:
        where = (
            f"the {parallel} devices of mesh axis 'data'"
            if shape["fsdp"] == 1
            else f"the {parallel} devices of mesh axes 'data' x 'fsdp' ({shape['data']} x {shape['fsdp']})"
        )
        multiples = sorted({max(parallel, batch_size // parallel * parallel), (batch_size // parallel + 1) * parallel})
        raise errors.ConfigError(
            f"{field}={batch_size} is not divisible by {where}: use a multiple of {parallel} "
            f"(e.g. {' or '.join(map(str, multiples))}), or a mesh.shape with fewer batch-parallel devices."
        )


def check_accumulation(config) -> None:
    """optim.grad_accum_steps cuts optim.batch_size into micro-batches that split over the devices."""
    accum, batch = config.optim.grad_accum_steps, config.optim.batch_size
    if accum < 1:
        raise errors.ConfigError(f"optim.grad_accum_steps={accum} must be >= 1 (1: no accumulation).")
    if accum == 1:
        return
    shape = dict(zip(sharding.AXES, check_mesh(config)))
    parallel = shape["data"] * shape["fsdp"]
    if batch % (accum * parallel):
        fits = [k for k in range(1, batch // parallel + 1) if batch % (k * parallel) == 0]
        raise errors.ConfigError(
            f"optim.grad_accum_steps={accum}: optim.batch_size={batch} does not split into {accum} "
            f"micro-batches of equal size over the {parallel} batch-parallel devices; with this batch and "
            f"mesh choose one of {', '.join(map(str, fits))}."
        )


# ------------------------------------------------------------------------------------ fields
def _one_of(field: str, value, allowed) -> None:
    if value not in allowed:
        raise errors.ConfigError(f"{field}={value!r}: choose one of {', '.join(map(repr, allowed))}.")


def _check_choices(config) -> None:
    _one_of("optim.optimizer", config.optim.optimizer, optim.OPTIMIZERS)
    _one_of("data.normalize", config.data.normalize, clip_transforms.NORMALIZE_MODES)
    _one_of("data.augment", config.data.augment, clip_transforms.AUGMENT_MODES)
    _one_of("model.clip.dtype", config.model.clip.dtype, ("auto", "float32", "bfloat16"))
    _check_alignment(config.model)


def _check_alignment(model_cfg) -> None:
    """Motion weighting and OT fields whose bad values would only fail inside the first step."""
    m, ot = model_cfg.motion, model_cfg.ot
    _one_of("model.motion.weighting", m.weighting, ("learned", "fixed"))
    _one_of("model.motion.normalize", m.normalize, ("robust", "clip_max"))
    _one_of("model.motion.mode", m.mode, ("pixel", "feature"))
    if m.top_k and not m.enabled:
        raise errors.ConfigError(
            f"model.motion.top_k={m.top_k} needs model.motion.enabled=True: without motion every token "
            "weighs the same and there is nothing to choose the top k by; set top_k=0 (all tokens)."
        )
    if not 0.0 < ot.tau_visual <= 1.0:
        raise errors.ConfigError(
            f"model.ot.tau_visual={ot.tau_visual} must be in (0, 1]: 1 is balanced transport, smaller "
            "lets each class move visual mass away from the motion prior."
        )
    if not ot.epsilon > 0:
        raise errors.ConfigError(f"model.ot.epsilon={ot.epsilon} must be > 0.")


def _check_intervals(train_cfg) -> None:
    for field in ("log_every_steps", "ckpt_every_steps", "max_checkpoints"):
        if train_cfg[field] <= 0:
            raise errors.ConfigError(f"train.{field}={train_cfg[field]} must be > 0.")
    if train_cfg.eval_every_epochs < 0:
        raise errors.ConfigError(f"train.eval_every_epochs={train_cfg.eval_every_epochs} must be >= 0 (0: at the end).")


RANDOM_INIT = "random"  # configs/base.py's spelling of "start CLIP from random weights"


def tokenizer_source(clip_cfg) -> str:
    """Where the tokenizer comes from: model.clip.tokenizer, else a model.clip.init that names weights
    ("" when neither does: init "random" or "" has no tokenizer)."""
    init = "" if clip_cfg.init == RANDOM_INIT else clip_cfg.init
    return clip_cfg.tokenizer or init


def _openai_variant(name: str) -> str | None:
    """The variant whose OpenAI weights the hub name `name` holds (configs/base.py OPENAI_CLIP)."""
    from grace_jax.configs import base

    return {v: k for k, v in base.OPENAI_CLIP.items()}.get(name)


def check_clip(model_cfg, *, has_checkpoint: bool = False) -> None:
    """The CLIP variant, the weights of model.clip.init (a hub name must be in the hub cache or the
    hub reachable), the tokenizer's source. `has_checkpoint`: the run restores its weights, so an
    empty model.clip.init is fine."""
    from grace_jax.models import clip as clip_lib
    from grace_jax.models import clip_checkpoint, grace

    clip_cfg = model_cfg.clip
    if clip_cfg.architecture is None:
        try:
            clip_lib.clip_config(clip_cfg.variant)
        except ValueError:
            raise errors.ConfigError(
                f"model.clip.variant={clip_cfg.variant!r} is not a CLIP variant; choose one of "
                f"{', '.join(repr(v) for v in clip_lib.VARIANTS)}."
            ) from None
    if not clip_cfg.init and not has_checkpoint:
        # Before: "" meant random weights, and a dataset config without an init trained a DFER model
        # from a random CLIP without a word.
        from grace_jax.configs import base

        named = base.OPENAI_CLIP.get(clip_cfg.variant)
        raise errors.ConfigError(
            "model.clip.init is empty: name the CLIP weights to start from"
            + (f" (OpenAI's {clip_cfg.variant}: --config.model.clip.init={named})" if named else "")
            + ", a Hugging Face CLIP folder or an OpenAI .pt file; or --config.model.clip.init=random "
            "for random weights."
        )
    if clip_cfg.init != RANDOM_INIT:
        try:
            clip_checkpoint.check_source(clip_cfg.init)
        except clip_checkpoint.CheckpointError as e:
            raise errors.ConfigError(
                f"model.clip.init={clip_cfg.init}: {e} Give a Hugging Face CLIP folder, an OpenAI .pt "
                "file or a hub name (owner/name), or 'random' for random weights."
            ) from None
        weights_of = _openai_variant(clip_cfg.init)
        if weights_of and clip_cfg.architecture is None and weights_of != clip_cfg.variant:
            raise errors.ConfigError(
                f"model.clip.init={clip_cfg.init} holds OpenAI's {weights_of}, but model.clip.variant="
                f"{clip_cfg.variant}: also set --config.model.clip.init="
                f"{configs_openai_name(clip_cfg.variant)}."
            )
        if hub.is_hub_name(clip_cfg.init):  # in the hub cache, or the hub answers: else fail now
            hub.check(clip_cfg.init, "model.clip.init", hub.CLIP_FILES)
    if grace.needs_tokenizer(model_cfg) or model_cfg.cate.captions:
        source = tokenizer_source(clip_cfg)
        if not source:
            raise errors.ConfigError(
                f"model.clip.init={clip_cfg.init} gives no tokenizer and "
                "model.clip.tokenizer is empty: name a CLIP tokenizer (a folder or hub name), or "
                "'builtin:tiny' for the tiny random CLIP."
            )
        field = "model.clip.tokenizer" if clip_cfg.tokenizer else "model.clip.init"
        if (
            source != "builtin:tiny"
            and os.path.sep in source
            and not os.path.exists(source)
            and not hub.HUB_NAME.fullmatch(source)
        ):
            raise errors.ConfigError(f"{field}={source}: no such folder for the tokenizer.")
        if source != "builtin:tiny" and hub.is_hub_name(source):
            hub.check(source, field, hub.TOKENIZER_FILES)


def configs_openai_name(variant: str) -> str:
    """OpenAI's hub name for `variant`, or a placeholder saying there is none."""
    from grace_jax.configs import base

    return base.OPENAI_CLIP.get(variant, "<CLIP weights of that variant>")


# ------------------------------------------------------------------------------------ paths
def _check_workdir(workdir: str) -> None:
    if paths.is_uri(workdir):
        if not paths.is_gcs(workdir):
            raise errors.ConfigError(f"--workdir={workdir}: a workdir is a local folder or gs://bucket/folder.")
        return  # whether the bucket takes writes shows when the lock is written
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise errors.ConfigError(f"--workdir={workdir} is a file, not a folder.")
    parent = workdir
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise errors.ConfigError(f"--workdir={workdir} cannot be created: {parent} is a file, not a folder.")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise errors.ConfigError(f"--workdir={workdir} cannot be written: {parent} is not writable by you.")


def check_data(config) -> dict | None:
    """data.dir's manifest, splits and shards, and the class count; None for SynthFER (generated
    under the workdir), whose class count is checked here against the one it will have."""
    data = config.data
    if data.tfds:
        manifest = tfds_source.check_config(config)
        class_set.check_count(config, manifest)
        return manifest
    if not data.dir:
        if not data.synth_train_clips:
            raise errors.ConfigError(
                "data.dir is empty: set --config.data.dir to a folder of shards written by "
                "python -m data_prep.build_dataset."
            )
        class_set.check_count(config, None)
        return None
    data_dir = paths.resolve(data.dir)
    if paths.is_uri(data_dir) and not paths.is_gcs(data_dir):
        raise errors.ConfigError(
            f"data.dir={data.dir}: shards are read from a local folder or gs://bucket/folder only; copy "
            "them to local disk or mount the bucket."
        )
    if not paths.exists(paths.join(data_dir, schema.MANIFEST_NAME)):
        what = "no such folder" if not paths.exists(data_dir) else f"no {schema.MANIFEST_NAME} in it"
        raise errors.ConfigError(
            f"data.dir={data.dir}: {what}; point it at a folder written by python -m data_prep.build_dataset."
        )
    manifest = input_pipeline.read_manifest(data_dir)
    splits = manifest.get("splits", {})
    for field in ("train_split", "eval_split"):
        if data[field] not in splits:
            raise errors.ConfigError(
                f"data.{field}={data[field]!r}: {data.dir} has no such split; it holds {sorted(splits)}."
            )
        if not splits[data[field]].get("num_clips"):
            raise errors.ConfigError(f"data.{field}={data[field]!r}: {data.dir} holds no clips of that split.")
        try:
            input_pipeline.shard_paths(data_dir, data[field])
        except errors.UserError as e:
            raise errors.ConfigError(f"data.dir={data.dir}: {e}; rebuild it with data_prep.build_dataset.") from None
    check_classes(config, manifest, data_dir)
    return manifest


def check_classes(config, manifest: dict, data_dir: str) -> list[str]:
    """The class names of the data (manifest), checked against model.num_classes (0: the data's)."""
    count = class_set.check_count(config, manifest, data_dir)
    return class_set.data_class_names(manifest) or [str(i) for i in range(count)]


def describe_clip_init(clip_cfg: ml_collections.ConfigDict) -> str:
    """Where CLIP's starting weights come from, for the log."""
    if clip_cfg.init == RANDOM_INIT:
        return (
            "CLIP starts from random weights (model.clip.init=random): not pretrained, as the "
            "config asks; model.clip.init=<OpenAI hub name or folder> starts from pretrained ones."
        )
    where = clip_cfg.init
    if hub.is_hub_name(clip_cfg.init):
        folder = hub.cached(clip_cfg.init, hub.CLIP_FILES)
        where += f" (hub cache: {folder})" if folder else " (from the hub)"
    return f"CLIP starts from pretrained weights: {where}."
