"""Training and evaluation loop: `train_and_evaluate(config, workdir)`.

The hot path is two pure module-level functions, `train_step` and `eval_step`, jitted once each with
explicit input/output shardings over the mesh (and the train state donated). Everything else is
host-side bookkeeping: data, checkpoints (model, optimizer, step and the grain iterator, so a
restarted run continues exactly where it stopped), metrics, plots.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from flax import nnx

from grace_jax import localization, losses, memory, metrics, optim, sharding
from grace_jax.data import input_pipeline, prefetch
from grace_jax.infra import config_checks, distributed, errors, paths
from grace_jax.run import checkpointing, metric_writers, plots, resume, workdir_lock
from grace_jax.text import class_set
from grace_jax.data import device_transforms, tfds_source
from grace_jax.models import grace
from grace_jax.models import motion as motion_lib
from grace_jax.text import tokenizer as tokenizer_lib

TrainState = dict[str, Any]  # {"params", "frozen", "rest", "opt_state", "step"}


# ------------------------------------------------------------------------------------ pure steps
def _forward(
    graphdef, params, frozen, rest, batch, ot_probe=None, *, loss_cfg, image_size=None, normalize="clip"
):
    model = nnx.merge(graphdef, params, frozen, rest)
    video = batch["video"]  # uint8 [B,T,H,W,3]
    if "crop_box" in batch:  # train batches with augment_on_device: frames at their stored size
        # rotation, brightness (when drawn), crop, resize, flip
        video = device_transforms.augment(batch, size=image_size)  # f32 [B,T,image_size,image_size,3]
    video = input_pipeline.normalize_on_device(video, normalize)  # f32 [B,T,H,W,3]
    logits, aux = model(
        video,
        captions=batch.get("caption_ids"),
        caption_eot=batch.get("caption_eot"),
        ot_probe=ot_probe,
    )
    loss, terms = losses.grace_loss(
        logits=logits,
        labels=batch["label"],
        aux=aux,
        mask=batch["mask"],
        caption_mask=batch.get("has_caption"),
        **loss_cfg,
    )
    return loss, (terms, logits, aux)


def train_step(
    state: TrainState,
    batch: dict,
    *,
    graphdef,
    tx,
    loss_cfg: dict,
    image_size: int | None = None,
    normalize: str = "clip",
    accum_steps: int = 1,
):
    """One SGD step. Returns (new state, scalar metrics).

    `image_size` is the model input side, needed when the batch carries `crop_box`/`flip` (frames
    cropped and resized here, on the accelerator). `normalize`: config.data.normalize.
    `accum_steps` (config.optim.grad_accum_steps): the gradient is summed over that many micro-batches
    of the batch, one after the other (`accumulated_grads`), so only a micro-batch's activations are
    alive at once; the step is the one big step.
    """
    # The probe's gradient counts OT problems whose gradient came out non-finite and was zeroed.
    (terms, logits, aux), (grads, fallbacks) = accumulated_grads(
        lambda params, probe, b: _forward(
            graphdef, params, state["frozen"], state["rest"], b, probe, loss_cfg=loss_cfg,
            image_size=image_size, normalize=normalize,
        ),
        state["params"],
        batch,
        accum_steps=accum_steps,
    )
    updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
    params = optax.apply_updates(state["params"], updates)
    mask = batch["mask"].astype(jnp.float32)
    correct = (jnp.argmax(logits, -1) == batch["label"]).astype(jnp.float32)
    out = dict(
        terms,
        accuracy=(correct * mask).sum() / jnp.maximum(mask.sum(), 1.0),
        grad_norm=optax.tree.norm(grads),
    )
    out.update(ot_summaries(aux))
    if "ot_converged" in aux:
        out["ot_fallbacks"] = fallbacks
    new_state = dict(state, params=params, opt_state=opt_state, step=state["step"] + 1)
    return new_state, out


def ot_summaries(aux: dict) -> dict:
    """Batch means of the OT problems' convergence and sharpness (empty when OT is off)."""
    if "ot_converged" not in aux:
        return {}
    out = {"ot_converged": aux["ot_converged"].astype(jnp.float32).mean()}
    for key in ("ot_iterations", "ot_epsilon", "ot_cost_std", "ot_mutual_information", "ot_visual_entropy"):
        out[key] = aux[key].astype(jnp.float32).mean()
    return out


def _map_differences(aux: dict, mask: jax.Array) -> dict:
    """How class-dependent the maps are, averaged over a batch's real clips: the L1 distance (0..2)
    between two different classes' maps of a clip, and between the predicted class's map and the
    motion weights (balanced transport gives 0 for both)."""
    maps = aux["class_maps"].astype(jnp.float32)  # [B,C,T,P]
    b, c = maps.shape[:2]
    flat = maps.reshape(b, c, -1)
    pairwise = jnp.abs(flat[:, :, None] - flat[:, None]).sum(-1)  # [B,C,C]
    between = pairwise.sum((1, 2)) / max(c * (c - 1), 1)  # [B], the diagonal is 0
    prior = jnp.abs(aux["ot_visual_mass"] - aux["motion_weights"]).sum((1, 2))  # [B]
    w = mask.astype(jnp.float32)
    n = jnp.maximum(w.sum(), 1.0)
    return {"class_map_l1": (between * w).sum() / n, "class_map_prior_l1": (prior * w).sum() / n}


def _localization(patch: int, batch: dict, aux: dict, normalize: str) -> dict:
    """Per-clip localization of the model's maps against the batch's ground truth (SynthFER)."""
    mask = localization.expression_mask(
        expression=batch["gt_expression"], distractor=batch["gt_distractor"], patch_size=patch
    )  # [B,T,P]
    mask = mask & batch["has_ground_truth"][:, None, None]
    # The fixed pixel prior as the model had it before motion learned (softmax of the clip-max
    # normalised motion, tau = alpha = 0.1), computed from the same input: the baseline to beat.
    video = input_pipeline.normalize_on_device(batch["video"], normalize)
    prior = motion_lib.motion_weights(
        motion_lib.pixel_motion(video, patch), tau=0.1, alpha=0.1, normalize="clip_max"
    )
    maps = {"motion_weights": aux["motion_weights"], "pixel_prior": prior}
    if "class_maps" in aux:
        maps["predicted_class_map"] = aux["ot_visual_mass"]
        maps["true_class_map"] = jnp.take_along_axis(
            aux["class_maps"], batch["label"][:, None, None, None], axis=1
        )[:, 0]
    return {name: localization.localization(maps=m, mask=mask) for name, m in maps.items()}


def _micro_batches(tree, accum_steps: int):
    """[B, ...] leaves -> [accum_steps, B / accum_steps, ...]; micro-batch j holds rows j, j + k, ...

    Strided rather than contiguous: the batch is split over the devices in contiguous blocks of rows,
    and rows i * k + j keep every micro-batch spread over all devices (no data moves between them)."""
    def split(x):
        x = x.reshape((x.shape[0] // accum_steps, accum_steps) + x.shape[1:])
        return jnp.swapaxes(x, 0, 1)

    return jax.tree.map(split, tree)


# What `accumulated_grads` keeps of `aux`, stacked per micro-batch: the OT summaries' inputs.
_KEPT_AUX = ("ot_converged", "ot_iterations", "ot_epsilon", "ot_cost_std", "ot_mutual_information",
             "ot_visual_entropy")


def accumulated_grads(forward, params, batch: dict, *, accum_steps: int = 1):
    """((terms, logits, aux), (grads, probe grad)) of `forward(params, probe, batch) -> (loss,
    (terms, logits, aux))`, differentiated with respect to `params` and a float32 scalar `probe`
    (zero; its gradient counts zeroed OT gradients, summed over micro-batches).

    With accum_steps > 1 the batch (every leaf [B, ...], B divisible by accum_steps) is cut into
    micro-batches run one after the other under `lax.scan`; each micro-batch's gradient and loss terms
    are weighted by its share of the real (mask) clips, so for losses that are masked means over clips
    (the CE terms) the result equals the one big batch's, padding included. The clip-caption
    contrastive term (model.loss.align_weight) takes its negatives from the micro-batch only, so there
    it is an approximation. `logits` come back [B, C] in batch order; `aux` holds only the OT
    convergence and sharpness statistics (`_KEPT_AUX`), stacked per micro-batch.
    """
    grad_fn = jax.value_and_grad(forward, argnums=(0, 1), has_aux=True)
    probe = jnp.zeros((), jnp.float32)
    if accum_steps == 1:
        (_, (terms, logits, aux)), grads = grad_fn(params, probe, batch)
        return (terms, logits, {k: aux[k] for k in _KEPT_AUX if k in aux}), grads
    micro = _micro_batches(batch, accum_steps)
    mask = batch["mask"].astype(jnp.float32)
    total = jnp.maximum(mask.sum(), 1.0)

    def one(acc, b):
        (_, (terms, logits, aux)), (g, fallbacks) = grad_fn(params, probe, b)
        weight = b["mask"].astype(jnp.float32).sum() / total
        acc_g, acc_f = acc
        acc_g = jax.tree.map(lambda a, x: a + weight * x.astype(a.dtype), acc_g, g)
        kept = {k: aux[k] for k in _KEPT_AUX if k in aux}
        return (acc_g, acc_f + fallbacks), (jax.tree.map(lambda t: weight * t, terms), logits, kept)

    zeros = jax.tree.map(jnp.zeros_like, params)
    grads, (terms, logits, aux) = jax.lax.scan(one, (zeros, probe), micro)
    terms = jax.tree.map(lambda t: t.sum(0), terms)
    logits = jnp.swapaxes(logits, 0, 1).reshape((-1,) + logits.shape[2:])  # back to batch order
    return (terms, logits, aux), grads


def eval_step(
    state: TrainState, batch: dict, *, graphdef, loss_cfg: dict, num_classes: int, normalize: str = "clip"
):
    """Confusion-matrix counts [C,C], the summed loss of one batch (padding rows do not count) and
    extras: OT summaries and, when the batch carries ground truth, per-clip localization figures."""
    loss, (_, logits, aux) = _forward(
        graphdef,
        state["params"],
        state["frozen"],
        state["rest"],
        batch,
        loss_cfg=loss_cfg,
        normalize=normalize,
    )
    confusion = metrics.confusion_matrix(
        predictions=jnp.argmax(logits, -1),
        labels=batch["label"],
        mask=batch["mask"],
        num_classes=num_classes,
    )
    extras = {"ot": ot_summaries(aux)}
    if "class_maps" in aux:
        extras["ot"].update(_map_differences(aux, batch["mask"]))
    if "gt_expression" in batch:
        # Merged only to read the patch size, a constant of the module (no computation is traced).
        patch = nnx.merge(graphdef, state["params"], state["frozen"], state["rest"]).patch_size
        extras["localization"] = _localization(patch, batch, aux, normalize)
        # Replicated with the figures, so every process can read them (the batch is sharded).
        extras["label"], extras["mask"] = batch["label"], batch["mask"]
    return confusion, loss * batch["mask"].sum(), extras


# ------------------------------------------------------------------------------------ set-up
def load_tokenizer(model_cfg) -> tokenizer_lib.Tokenizer | None:
    """The CLIP tokenizer of the config; None when nothing needs one (the config stores its class
    texts' token ids, as converted and exported runs do, and reads no captions)."""
    if not grace.needs_tokenizer(model_cfg) and not model_cfg.cate.captions:
        return None
    source = config_checks.tokenizer_source(model_cfg.clip)
    if not source:
        raise errors.ConfigError(
            "config.model.clip.tokenizer (or model.clip.init) must name a CLIP "
            "tokenizer; use 'builtin:tiny' for the tiny random CLIP."
        )
    return tokenizer_lib.Tokenizer.from_pretrained(source)


def _groups(optim_cfg) -> list[optim.Group]:
    return [
        optim.Group(f"group{i}", pattern, lr) for i, (pattern, lr) in enumerate(optim_cfg.groups)
    ]


def _trainable(groups: list[optim.Group]):
    """NNX filter: parameters whose deciding group has lr > 0 (lr-0 groups get no gradient at all)."""

    def trainable(path, value):
        if not isinstance(value, nnx.Param):
            return False
        group = optim.first_match(optim.path_str(path), groups)
        return group is None or group.lr != 0

    return trainable


def _prepare_data(config, workdir: str) -> str | tfds_source.TfdsDataset:
    """The shard directory (or data.tfds's dataset); for SynthFER configs it is generated once under
    the workdir."""
    if config.data.tfds:  # a TFDS dataset instead of shards (grace_jax.data.tfds_source)
        return tfds_source.TfdsDataset.from_config(config.data)
    if config.data.dir:
        return paths.resolve(config.data.dir)
    out = paths.join(workdir, "synthfer")  # config_checks: data.dir empty means SynthFER
    manifest_path = paths.join(out, "manifest.json")
    if paths.exists(manifest_path):
        built = (json.loads(paths.read_text(manifest_path)).get("synth") or {}).get("variant", "standard")
        wanted = config.data.synth_variant
        if built != wanted:
            raise errors.ConfigError(
                f"data.synth_variant={wanted!r}, but {out} holds SynthFER's {built!r} variant from an "
                "earlier run in this workdir: use another --workdir (or remove that folder)."
            )
    if not paths.exists(manifest_path):
        if jax.process_index() == 0:
            print(f"Generating SynthFER into {out} (once: later runs in this workdir reuse it).", flush=True)
            # ArrayRecord writes local files only: for a gs:// workdir, build in a local temporary
            # folder and upload it, manifest last (its presence means "complete").
            local = tempfile.mkdtemp(prefix="synthfer-") if paths.is_uri(out) else None
            try:
                _build_synthfer(config, os.path.join(local, "synthfer") if local else out)
                if local:
                    paths.upload_tree(os.path.join(local, "synthfer"), out, last=["manifest.json"])
            finally:
                if local:
                    shutil.rmtree(local, ignore_errors=True)
        if jax.process_count() > 1:  # The others wait until process 0 has written it.
            distributed.barrier("synthfer ready")
    return out


def _build_synthfer(config, out: str) -> None:
    # The offline job's own command line (data_prep sits above grace_jax: it imports the runtime's
    # record schema and readers, never the other way round).
    command = [
        sys.executable, "-m", "data_prep.build_dataset", "--dataset=synth", f"--out={out}",
        f"--synth_train={config.data.synth_train_clips}", f"--synth_test={config.data.synth_test_clips}",
        f"--synth_seed={config.seed}", f"--frame_size={config.data.image_size}",
        f"--workers={os.cpu_count() or 1}",
        f"--synth_variant={config.data.synth_variant}",
    ]
    if config.data.image_size % 2 == 0:  # H.264 4:2:0 needs even sides
        # One test clip per class as mp4, for the README's predict command after the demo.
        command.append("--synth_examples=1")
    if subprocess.run(command).returncode != 0:
        raise RuntimeError(f"generating SynthFER into {out} failed (see the lines above): {' '.join(command)}")


def _abstract(tree, shardings):
    return jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings
    )


def create_state(config, tokenizer, steps_per_epoch: int):
    """Builds the model and optimizer; returns (graphdef, state, tx).

    `state` is {"params": trained parameters, "frozen": parameters of lr-0 groups (never
    differentiated), "rest": other model variables, "opt_state", "step"}.
    """
    model = grace.build_model(config.model, rngs=nnx.Rngs(config.seed), tokenizer=tokenizer)
    groups = _groups(config.optim)
    graphdef, params, frozen_params, rest = nnx.split(model, _trainable(groups), nnx.Param, ...)
    tx = optim.make_optimizer(
        params,
        groups=[g for g in groups if g.lr > 0] or groups,
        momentum=config.optim.momentum,
        weight_decay=config.optim.weight_decay,
        decay_steps=[e * steps_per_epoch for e in config.optim.lr_decay_epochs],
        decay_factor=config.optim.lr_decay,
        warmup_steps=config.optim.warmup_steps,
        name=config.optim.optimizer,
    )
    state = {
        "params": params,
        "frozen": frozen_params,
        "rest": rest,
        "opt_state": tx.init(params),
        "step": jnp.zeros((), jnp.int32),
    }
    return graphdef, state, tx


# ------------------------------------------------------------------------------------ the loop
def evaluate(
    eval_fn, state, loader, mesh, num_classes: int, class_names: list[str] | None = None
) -> tuple[np.ndarray, float, dict]:
    """One pass of `eval_fn` over `loader`: (confusion [C,C], mean loss, extras) where extras has
    "ot" (batch-averaged OT summaries, when OT is on) and "localization" (a
    `localization.Accumulator` summary, when the data carries ground truth)."""
    confusion = np.zeros((num_classes, num_classes), np.int64)
    loss_sum = 0.0
    ot_sums: dict[str, float] = {}
    batches = 0
    names = list(class_names) if class_names else [str(i) for i in range(num_classes)]
    located = localization.Accumulator(names)
    for batch in loader:
        cm, loss, extras = eval_fn(state, sharding.global_batch(batch, mesh))
        confusion += np.asarray(jax.device_get(cm))
        loss_sum += float(loss)
        batches += 1
        for key, value in extras["ot"].items():
            ot_sums[key] = ot_sums.get(key, 0.0) + float(value)
        if "localization" in extras:
            located.add(*jax.device_get((extras["localization"], extras["label"], extras["mask"])))
    out: dict = {"ot": {k: v / max(batches, 1) for k, v in ot_sums.items()}}
    if located.sums:
        out["localization"] = located.summary()
    return confusion, loss_sum / max(int(confusion.sum()), 1), out


def _best_war_so_far(workdir: str) -> dict:
    """The highest-WAR evaluation in metrics.jsonl before a resume (without its confusion matrix,
    which only final_metrics.json and the evaluation that follows keep)."""
    best = {"war": -1.0}
    for record in metric_writers.read_metrics(workdir):
        if record.get("split") == "eval" and record.get("war", -1.0) > best["war"]:
            best = {k: v for k, v in record.items() if k != "split"}
    return best


def _memory_check(config, train_jit, mesh):
    """CompiledTogether's `check` for the train step: refuses, before step 1, a step that does not fit
    the device memory, naming the setting that does (grace_jax/memory.py); None when nothing is to
    be checked (train.memory_check off, or a device without a memory limit, as CPUs)."""
    if not config.train.memory_check:
        return None
    limit, where = memory.device_limit(config.train.device_memory_gib)
    if limit is None:
        return None
    shape = dict(zip(sharding.AXES, config_checks.check_mesh(config)))

    def check(compiled, args):
        abstract = jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), args
        )
        needed = memory.step_bytes(compiled)
        if jax.process_index() == 0:
            print(f"Train step: {memory.size(needed)} per device of {memory.size(limit)} ({where}).",
                  flush=True)
        memory.check_fits(
            needed, limit, where,
            batch_size=config.optim.batch_size,
            parallel=shape["data"] * shape["fsdp"],
            accum_steps=config.optim.grad_accum_steps,
            bytes_with=lambda k: memory.step_bytes(train_jit(k).lower(*abstract).compile()),
            dtype=config.model.clip.dtype,
            remat=config.model.clip.remat,
        )

    return check


def _process_rows(batch_sh, global_batch_size: int) -> dict:
    """The loaders' shard_index/shard_count: the block of every global batch this process's devices
    hold (input_pipeline.BatchSliceSampler), so batches do not depend on the number of processes."""
    index, count = distributed.batch_rows(batch_sh, global_batch_size)
    return dict(shard_index=index, shard_count=count)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Trains with periodic evaluation; returns the final evaluation summary.

    On SIGTERM (a preemption notice) it finishes the current step, saves a checkpoint of it (every
    process at the same step; grace_jax.infra.distributed) and returns {"preempted": True, "step": step}
    without the final evaluation; called again with the same workdir, it resumes from there.

    Before any work: the config is checked (grace_jax.infra.config_checks), the workdir's lock taken
    (grace_jax.run.workdir_lock: one trainer per workdir; released however this returns or raises) and,
    when the workdir holds a checkpoint, the config compared with the one it was made with
    (grace_jax.run.resume). Their problems raise errors.UserError with the field or file named, and leave
    the workdir as it was.
    """
    # First: jax.distributed must start before anything starts jax's backend.
    distributed.initialize(config.get("distributed"))
    workdir = paths.resolve(workdir)
    manifest = config_checks.check_train_config(config, workdir)
    config = class_set.resolve(config, manifest)  # model.num_classes=0 and custom names: the data's
    lock = distributed.on_process_0("workdir lock", lambda: workdir_lock.acquire(workdir))
    try:
        return _train_and_evaluate(config, workdir)
    finally:
        if lock is not None:
            lock.release()


def _compilation_cache(config, workdir: str) -> str | None:
    """Turns on jax's persistent compilation cache per train.compilation_cache; returns its folder.

    "auto": <workdir>/jax_cache on GPU and TPU, where an L/14 step takes minutes to compile and a
    restart after a preemption would compile it again; off on CPU, where resumed multi-process runs
    from the cache hung (README, "Cloud TPU and clusters"). A cache the environment already set
    (JAX_COMPILATION_CACHE_DIR) is left as it is."""
    setting = config.train.compilation_cache
    if not setting or jax.config.jax_compilation_cache_dir:
        return jax.config.jax_compilation_cache_dir or None
    if setting == "auto":
        if jax.default_backend() == "cpu":
            return None
        setting = paths.join(workdir, "jax_cache")
    jax.config.update("jax_compilation_cache_dir", setting)
    return setting


def _clip_origin(clip_cfg) -> str:
    """Where CLIP's starting weights come from, for the log."""
    if clip_cfg.init == config_checks.RANDOM_INIT:
        return ("CLIP starts from random weights (model.clip.init=random): not pretrained, as the "
                "config asks; model.clip.init=<OpenAI hub name or folder> starts from pretrained ones.")
    from grace_jax.infra import errors, hub

    where = clip_cfg.init
    if hub.is_hub_name(clip_cfg.init):
        folder = hub.cached(clip_cfg.init, hub.CLIP_FILES)
        where += f" (hub cache: {folder})" if folder else " (from the hub)"
    return f"CLIP starts from pretrained weights: {where}."


def _train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
    is_main = jax.process_index() == 0
    cache = _compilation_cache(config, workdir)
    if cache and is_main:
        logging.info("jax compilation cache: %s", cache)
    taken = resume.check(config, workdir, jax.process_count())
    if is_main:
        if taken:
            print("Resuming with these fields from this command (config.json had others): "
                  + "; ".join(taken), flush=True)
        paths.write_text(
            paths.join(workdir, "config.json"), config.to_json_best_effort(indent=2, sort_keys=True)
        )

    data_dir = _prepare_data(config, workdir)
    manifest = input_pipeline.read_manifest(data_dir)
    class_names = config_checks.check_classes(config, manifest, data_dir)
    if is_main:  # What grace_jax.predict labels its outputs with.
        paths.write_text(paths.join(workdir, "classes.json"), json.dumps(class_names))
    num_classes = config.model.num_classes
    batch_size = config.optim.batch_size
    train_clips = int(manifest["splits"][config.data.train_split]["num_clips"])
    steps_per_epoch = max(train_clips // batch_size, 1)
    total_steps = config.optim.num_epochs * steps_per_epoch
    if config.optim.num_train_steps > 0:
        total_steps = config.optim.num_train_steps

    mesh = sharding.make_mesh(dict(zip(config.mesh.axes, config.mesh.shape)))
    tokenizer = load_tokenizer(config.model)
    graphdef, state, tx = create_state(config, tokenizer, steps_per_epoch)
    state_sh = sharding.state_shardings(mesh, state)
    state = jax.device_put(state, state_sh)
    batch_sh = sharding.batch_sharding(mesh)
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())

    loss_cfg = dict(config.model.loss)
    normalize = config.data.normalize
    accum_steps = config.optim.grad_accum_steps

    def train_jit(accum: int):
        return jax.jit(
            functools.partial(
                train_step,
                graphdef=graphdef,
                tx=tx,
                loss_cfg=loss_cfg,
                image_size=config.data.image_size,
                normalize=normalize,
                accum_steps=accum,
            ),
            in_shardings=(state_sh, batch_sh),
            out_shardings=(state_sh, replicated),
            donate_argnums=0,
        )

    # CompiledTogether: with several processes, the first step runs once every process compiled it;
    # the memory check sees the compiled step before it runs.
    train_fn = distributed.CompiledTogether(
        train_jit(accum_steps), "train_step", check=_memory_check(config, train_jit, mesh)
    )
    eval_fn = distributed.CompiledTogether(jax.jit(
        functools.partial(
            eval_step,
            graphdef=graphdef,
            loss_cfg=loss_cfg,
            num_classes=num_classes,
            normalize=normalize,
        ),
        in_shardings=(state_sh, batch_sh),
        out_shardings=(replicated, replicated, replicated),
    ), "eval_step")

    caption_tok = tokenizer if config.model.cate.captions else None
    # Host batches go onto the devices one step ahead, in a thread (grace_jax/data/prefetch.py); its
    # get_state() is the state after the batches the loop consumed, which is what checkpoints hold.
    host_iter = iter(
        input_pipeline.make_train_loader(
            data_dir,
            config.data,
            global_batch_size=batch_size,
            seed=config.seed,
            tokenizer=caption_tok,
            normalize_on_host=False,
            **_process_rows(batch_sh, batch_size),
        )
    )
    train_iter = prefetch.DevicePrefetcher(host_iter, lambda b: sharding.global_batch(b, mesh))

    # SynthFER's test split carries where the expression is: the eval then measures localization.
    ground_truth = localization.has_ground_truth(manifest, config.data.eval_split)
    # Evaluation holds no gradients, but by default takes the training micro-batch: a size whose
    # activations the memory check has seen fit.
    eval_batch = config.data.eval_batch_size or batch_size // accum_steps

    def eval_loader():
        return input_pipeline.make_eval_loader(
            data_dir,
            config.data,
            ground_truth=ground_truth,
            global_batch_size=eval_batch,
            tokenizer=caption_tok,
            normalize_on_host=False,
            **_process_rows(batch_sh, eval_batch),
        )

    ckpt = checkpointing.Checkpoints(
        paths.join(workdir, "checkpoints"), max_to_keep=config.train.max_checkpoints
    )
    step = 0
    if ckpt.latest_step() is not None:
        step, state = ckpt.restore(_abstract(state, state_sh), data_iterator=train_iter)
        if is_main:
            print(f"Resumed from {workdir}/checkpoints at step {step}.", flush=True)
        else:  # process 0 said it on the console; the others' logs say it once too
            logging.info("Resumed from step %d", step)
    best = ckpt.best_metrics() or {"uar": -1.0}
    if step == 0 and is_main:
        print(_clip_origin(config.model.clip), flush=True)
    # DFER-CLIP's selection (best test accuracy, WAR), reported beside ours (best UAR, the checkpoint
    # kept in checkpoints/best); grace_jax.folds reports both. Rebuilt from metrics.jsonl on resume.
    best_war = _best_war_so_far(workdir) if step else {"war": -1.0}

    writer = metric_writers.MetricWriter(workdir, enabled=is_main, resume_step=step)
    progress = metric_writers.Progress(total_steps, batch_size, enabled=is_main)
    eval_every = config.train.eval_every_epochs * steps_per_epoch
    if config.train.eval_every_steps > 0:
        eval_every = config.train.eval_every_steps
    if eval_every <= 0:  # eval_every_epochs=0: evaluate once, at the end.
        eval_every = total_steps
    summary: dict = {}
    progress.start(step)
    reported_wait = train_iter.wait_s
    pending = []
    preempted = False
    with distributed.PreemptionWatcher() as preemption:
        while step < total_steps:
            state, step_metrics = train_fn(state, next(train_iter))
            step += 1
            pending.append(step_metrics)
            if step % config.train.log_every_steps == 0 or step == total_steps:
                averaged = {k: float(np.mean([float(m[k]) for m in pending])) for k in pending[0]}
                pending = []
                waited, reported_wait = train_iter.wait_s - reported_wait, train_iter.wait_s
                averaged["clips_per_s"] = progress.report(step, averaged, data_wait_s=waited)
                averaged["data_wait_s"] = waited
                averaged["epoch"] = step / steps_per_epoch
                writer.write(step, "train", averaged)
                if not np.isfinite(averaged["loss"]):
                    raise FloatingPointError(f"Training loss is {averaged['loss']} at step {step}.")
            # SIGTERM (preemption): every process asks at every step and all agree on this step.
            if step < total_steps and preemption.reached(step):
                ckpt.save(step, state, data_iterator=train_iter)
                preempted = True
                break
            last = step == total_steps
            if step % eval_every == 0 or last:
                start = time.perf_counter()
                confusion, eval_loss, extras = evaluate(
                    eval_fn, state, eval_loader(), mesh, num_classes, class_names
                )
                summary = metrics.summarize(confusion=confusion, class_names=class_names)
                summary.update(step=step, loss=eval_loss, confusion=confusion.tolist(), **extras)
                writer.write(
                    step,
                    "eval",
                    {
                        "uar": summary["uar"],
                        "war": summary["war"],
                        "loss": eval_loss,
                        **{f"recall/{k}": v for k, v in summary["per_class_recall"].items()},
                        **extras["ot"],
                        **localization.flat_metrics(extras.get("localization")),
                    },
                )
                if is_main:
                    print(
                        f"eval step {step}: UAR {summary['uar']:.4f} WAR {summary['war']:.4f} "
                        f"({summary['num_examples']} clips, {time.perf_counter() - start:.1f} s)"
                        + localization.one_line(extras.get("localization")),
                        flush=True,
                    )
                if summary["uar"] > best["uar"]:
                    best = dict(summary)
                    ckpt.save(step, state, metrics=best, best=True)
                if summary["war"] > best_war["war"]:
                    best_war = dict(summary)
            if step % config.train.ckpt_every_steps == 0 or last:
                ckpt.save(step, state, data_iterator=train_iter)

    train_iter.close()
    ckpt.wait()
    ckpt.close()
    writer.close()
    if preempted:
        if is_main:
            print(
                f"Preempted (SIGTERM): saved the checkpoint of step {step} to {ckpt.directory}; "
                "run the same command again to resume.",
                flush=True,
            )
        else:
            logging.info("Preempted: saved the checkpoint of step %d", step)
        return {"preempted": True, "step": step}
    if is_main and summary:
        plots.save_confusion_matrix(
            paths.join(workdir, "confusion_matrix.png"),
            np.asarray(summary["confusion"]),
            class_names,
            f"step {summary['step']}: UAR {summary['uar']:.3f}",
        )
        plots.save_learning_curves(
            paths.join(workdir, "learning_curves.png"), metric_writers.read_metrics(workdir)
        )
        paths.write_text(
            paths.join(workdir, "final_metrics.json"),
            json.dumps({"last": summary, "best": best, "best_war": best_war,
                        "selection": {"best": "highest UAR (checkpoints/best)",
                                      "best_war": "highest WAR (DFER-CLIP's rule; no checkpoint kept)"}},
                       indent=2),
        )
    return summary
