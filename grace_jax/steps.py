"""The training core's steps: pure module-level functions of (state, batch), jitted by their callers.

`train_step` (one optimizer step, optionally over accumulated micro-batches) and `eval_step`
(confusion counts, loss and map figures of one batch) are what runs on the accelerators; the
trainer (grace_jax/train.py), `grace_jax.evaluate`, `grace_jax.doctor` and the benchmarks all jit
these same functions with their own shardings. Below them, host-side: `evaluate`, one pass of a
jitted `eval_step` over a loader, and `process_rows`, which rows of every global batch a process's
loader reads. Kept apart from the loop so that callers of the steps do not import the trainer.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from grace_jax import localization, losses, metrics, sharding
from grace_jax.data import device_transforms, input_pipeline
from grace_jax.infra import distributed
from grace_jax.models import motion as motion_lib
from grace_jax.state import TrainState


# ------------------------------------------------------------------------------------ pure steps
def forward(
    graphdef: nnx.GraphDef,
    params: nnx.State,
    frozen: nnx.State,
    rest: nnx.State,
    batch: dict,
    ot_probe: jax.Array | None = None,
    *,
    loss_cfg: dict,
    image_size: int | None = None,
    normalize: str = "clip",
) -> tuple[jax.Array, tuple[dict, jax.Array, dict]]:
    """(loss, (loss terms, logits [B,C], aux)) of the model `nnx.merge(graphdef, params, frozen, rest)`
    on a batch of uint8 frames; `ot_probe` is `accumulated_grads`'s probe (None outside training)."""
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
    skip_non_finite: bool = False,
):
    """One SGD step. Returns (new state, scalar metrics).

    `image_size` is the model input side, needed when the batch carries `crop_box`/`flip` (frames
    cropped and resized here, on the accelerator). `normalize`: config.data.normalize.
    `accum_steps` (config.optim.grad_accum_steps): the gradient is summed over that many micro-batches
    of the batch, one after the other (`accumulated_grads`), so only a micro-batch's activations are
    alive at once; the step is the one big step.
    `skip_non_finite` (config.train.max_nonfinite_steps > 0): a step whose loss or gradient norm is
    not finite applies no update (parameters and optimizer state stay as they were; the batch is
    used up) and says so in the metric `skipped` (1.0).
    """
    # The probe's gradient counts OT problems whose gradient came out non-finite and was zeroed.
    (terms, logits, aux), (grads, fallbacks) = accumulated_grads(
        lambda params, probe, b: forward(
            graphdef,
            params,
            state["frozen"],
            state["rest"],
            b,
            probe,
            loss_cfg=loss_cfg,
            image_size=image_size,
            normalize=normalize,
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
    if skip_non_finite:
        finite = jnp.isfinite(out["loss"]) & jnp.isfinite(out["grad_norm"])
        params, opt_state = jax.tree.map(
            lambda new, old: jnp.where(finite, new, old), (params, opt_state), (state["params"], state["opt_state"])
        )
        out["skipped"] = 1.0 - finite.astype(jnp.float32)
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
    prior = motion_lib.motion_weights(motion_lib.pixel_motion(video, patch), tau=0.1, alpha=0.1, normalize="clip_max")
    maps = {"motion_weights": aux["motion_weights"], "pixel_prior": prior}
    if "class_maps" in aux:
        maps["predicted_class_map"] = aux["ot_visual_mass"]
        maps["true_class_map"] = jnp.take_along_axis(aux["class_maps"], batch["label"][:, None, None, None], axis=1)[
            :, 0
        ]
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
_KEPT_AUX = ("ot_converged", "ot_iterations", "ot_epsilon", "ot_cost_std", "ot_mutual_information", "ot_visual_entropy")


def accumulated_grads(loss_fn, params, batch: dict, *, accum_steps: int = 1):
    """((terms, logits, aux), (grads, probe grad)) of `loss_fn(params, probe, batch) -> (loss,
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
    grad_fn = jax.value_and_grad(loss_fn, argnums=(0, 1), has_aux=True)
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


def eval_step(state: TrainState, batch: dict, *, graphdef, loss_cfg: dict, num_classes: int, normalize: str = "clip"):
    """Confusion-matrix counts [C,C], the summed loss of one batch (padding rows do not count) and
    extras: OT summaries and, when the batch carries ground truth, per-clip localization figures."""
    loss, (_, logits, aux) = forward(
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


# ------------------------------------------------------------------------------------ host side
def evaluate(
    eval_fn,
    state: TrainState,
    loader,
    mesh: jax.sharding.Mesh,
    num_classes: int,
    class_names: list[str] | None = None,
) -> tuple[np.ndarray, float, dict]:
    """One pass of `eval_fn` (a jitted `eval_step`) over `loader`: (confusion [C,C], mean loss,
    extras) where extras has "ot" (batch-averaged OT summaries, when OT is on) and "localization" (a
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


def process_rows(batch_sh: jax.sharding.NamedSharding, global_batch_size: int) -> dict:
    """The loaders' shard_index/shard_count: the block of every global batch this process's devices
    hold (input_pipeline.BatchSliceSampler), so batches do not depend on the number of processes."""
    index, count = distributed.batch_rows(batch_sh, global_batch_size)
    return dict(shard_index=index, shard_count=count)
