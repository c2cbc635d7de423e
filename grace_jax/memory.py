"""Does the compiled train step fit the device memory? Asked once, before step 1.

A recipe's batch (48 clips of 16 frames at ViT-B/16: ~41 GiB per device at 16 clips a device, README
"Performance") does not fit a 16-32 GB GPU; without this check the first step runs out of memory deep
inside XLA. The trainer compiles its step, reads XLA's `memory_analysis()` of the compiled program
(arguments + outputs - donated aliases + temporaries: what one device holds at the peak, the same sum
as benchmarks/memory.py) and compares it with the device's allocator limit (`memory_stats()
["bytes_limit"]`: on GPU the share jax preallocates, on TPU the HBM; CPU reports none, so nothing is
checked there unless `train.device_memory_gib` names a size).

When it does not fit, the step is compiled again with more gradient-accumulation micro-batches
(`optim.grad_accum_steps`: the same optimizer step, a fraction of the activations) until one fits,
and the error names that setting, checked by compiling it, not estimated. When even one clip per
device at a time does not fit, it names the settings that shrink the rest (remat, bf16, more devices).
`train_step_check` is the hook the trainer hands to its compiled step (distributed.CompiledTogether).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import ml_collections

from grace_jax import config_checks, sharding
from grace_jax.infra import errors

GIB = 1024**3
# At most this many extra compiles to find a setting that fits (an L/14 step takes minutes to compile).
MAX_TRIES = 4


def step_bytes(compiled) -> int:
    """Peak bytes per device of a compiled step: arguments + outputs - donated aliases + temporaries."""
    mem = compiled.memory_analysis()
    return int(mem.argument_size_in_bytes + mem.output_size_in_bytes - mem.alias_size_in_bytes + mem.temp_size_in_bytes)


def size(num_bytes: int) -> str:
    """Bytes for people: GiB from 1 GiB up, MiB below (small models, tests)."""
    if num_bytes >= GIB:
        return f"{num_bytes / GIB:.2f} GiB"
    return f"{num_bytes / 2**20:.1f} MiB"


def device_limit(override_gib: float = 0.0, device=None) -> tuple[int | None, str]:
    """(bytes one device may use, what that is) : train.device_memory_gib when > 0, else the device's
    allocator limit; (None, reason) where the device reports none (CPU)."""
    if override_gib > 0:
        return int(override_gib * GIB), f"train.device_memory_gib={override_gib:g}"
    device = device or jax.local_devices()[0]
    try:
        stats = device.memory_stats() or {}
    except Exception:  # noqa: BLE001 -- backends without memory statistics raise various errors
        stats = {}
    limit = stats.get("bytes_limit")
    if not limit:
        return None, f"{device.platform} reports no memory limit"
    return int(limit), f"{device.device_kind} ({device.platform})"


def accum_candidates(batch_size: int, parallel: int, accum_steps: int) -> list[int]:
    """Accumulation step counts above `accum_steps` whose micro-batches split evenly over `parallel`
    devices, ascending."""
    return [k for k in range(accum_steps + 1, batch_size // parallel + 1) if batch_size % (k * parallel) == 0]


def check_fits(
    needed: int,
    limit: int,
    where: str,
    *,
    batch_size: int,
    parallel: int,
    accum_steps: int,
    bytes_with: Callable[[int], int],
    dtype: str = "auto",
    remat: bool = False,
) -> None:
    """Raises errors.ConfigError, one line naming a setting that fits, when `needed` > `limit` bytes.

    `bytes_with(k)`: the peak bytes of the step compiled with optim.grad_accum_steps=k.
    """
    if needed <= limit:
        return
    per_device = batch_size // parallel

    def at_once(k: int) -> str:
        return f"{per_device // k} clip{'s' if per_device // k != 1 else ''} per device at once"

    said = (
        f"the train step needs {size(needed)} per device (optim.batch_size={batch_size} over "
        f"{parallel} device{'s' if parallel != 1 else ''}, optim.grad_accum_steps={accum_steps}: "
        f"{at_once(accum_steps)}) but {where} gives {size(limit)}"
    )
    candidates = accum_candidates(batch_size, parallel, accum_steps)
    # Activations grow about linearly with the micro-batch: start near the first k that would fit by
    # that estimate (one below it, as the estimate counts the batch-independent temporaries as
    # activations too), then compile upwards.
    estimate = [k for k in candidates if needed * accum_steps / k <= limit]
    start = candidates.index(estimate[0]) - 1 if estimate else len(candidates) - MAX_TRIES
    tried = []
    for k in candidates[max(start, 0) :][:MAX_TRIES]:
        got = bytes_with(k)
        tried.append((k, got))
        if got <= limit:
            raise errors.ConfigError(
                f"{said}. --config.optim.grad_accum_steps={k} ({at_once(k)}, the same optimizer step) needs "
                f"{size(got)} and fits."
            )
    smaller = []
    if not remat:
        smaller.append("--config.model.clip.remat=True")
    if dtype != "bfloat16":
        smaller.append("--config.model.clip.dtype=bfloat16")
    smallest = (
        ("; " + ", ".join(f"--config.optim.grad_accum_steps={k} ({at_once(k)}) needs {size(got)}" for k, got in tried))
        if tried
        else ""
    )
    raise errors.ConfigError(
        f"{said}{smallest}. Shrink the rest: {', '.join(smaller + ['a smaller model.clip.variant'])}, or run "
        "on more devices (optim.batch_size is split over them)."
    )


def train_step_check(
    config: ml_collections.ConfigDict, jit_with: Callable[[int], Any]
) -> Callable[[Any, tuple], None] | None:
    """`distributed.CompiledTogether`'s `check` for the trainer's step: refuses, before step 1, a step
    that does not fit the device memory, naming the setting that does (`check_fits`); None when
    nothing is to be checked (train.memory_check off, or a device without a memory limit, as CPUs).

    `jit_with(k)`: the jitted train step with optim.grad_accum_steps=k, compiled for the other
    accumulations `check_fits` tries."""
    if not config.train.memory_check:
        return None
    limit, where = device_limit(config.train.device_memory_gib)
    if limit is None:
        return None
    shape = dict(zip(sharding.AXES, config_checks.check_mesh(config)))

    def check(compiled, args: tuple) -> None:
        abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), args)
        needed = step_bytes(compiled)
        if jax.process_index() == 0:
            print(f"Train step: {size(needed)} per device of {size(limit)} ({where}).", flush=True)
        check_fits(
            needed,
            limit,
            where,
            batch_size=config.optim.batch_size,
            parallel=shape["data"] * shape["fsdp"],
            accum_steps=config.optim.grad_accum_steps,
            bytes_with=lambda k: step_bytes(jit_with(k).lower(*abstract).compile()),
            dtype=config.model.clip.dtype,
            remat=config.model.clip.remat,
        )

    return check
