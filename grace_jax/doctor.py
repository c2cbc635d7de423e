r"""Self-check of a machine: does the install work, are the numbers right on this chip, which batch fits?

  python -m grace_jax.doctor --quick       # tiny model, 4 frames, 32 px: 1-2 minutes on 2 CPU cores (CI)
  python -m grace_jax.doctor               # ViT-B/16, T=16, 224 px, per-device batch auto (4 on GPU/TPU)
  python -m grace_jax.doctor --variant=ViT-L/14 --batch=2 --dtype=bfloat16 --max_batch_search

In order, one table row each (one screen in all), and the same in a JSON report (--out, default doctor.json):

1. versions, devices, platform and the flags that change numerics or memory;
2. a tiny GRACE train step (random weights, the trainer's own `steps.train_step`) on the first device and
   on the host CPU with the same weights and inputs: loss and gradient norm in float32 and in bfloat16
   (fp32 parameters) against the CPU's float32, within each dtype's tolerance; the bf16 step must keep
   parameters, optimizer state and loss in float32. On a CPU-only machine both sides are the CPU (said so);
3. attention: what `jax.nn.dot_product_attention` (the model's call, implementation=None) compiles to,
   and on GPU whether its cuDNN implementation compiles and agrees; the OT (Sinkhorn) solve on the
   device against the CPU, in float32, the dtype the model solves it in (it casts bf16 features up);
4. the chosen variant's step over all local devices (mesh `data`, per-device batch x devices clips):
   compile time, step time, clips/s, the compiled step's FLOPs (XLA's cost analysis, per device),
   MFU against the chip's vendor peak (grace_jax/infra/machine.py; unknown chips: achieved FLOP/s
   only), the measured peak memory (`memory_stats()`) beside the compiled estimate, remat's effect on
   both, and with --max_batch_search the largest per-device batch whose compiled estimate fits 90% of
   the device limit.

Weights are random (`model.clip.init=random`, builtin tiny tokenizer): nothing is downloaded. Exit 0
when every check passed, 1 (after writing the report) naming the failed ones.
"""

from __future__ import annotations

import functools
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags

from grace_jax import memory, sharding, steps
from grace_jax import state as state_lib
from grace_jax.infra import cli, errors, machine
from grace_jax.models import alignment, grace
from grace_jax.models import clip as clip_lib
from grace_jax.text.tokenizer import Tokenizer

# Relative tolerance of the accelerator's loss and gradient norm against the CPU's float32: fp32 leaves
# room for TF32 matmuls (10-bit mantissa) on GPUs; bf16 (8-bit mantissa) for its rounding.
TOLERANCE = {"float32": 1e-2, "bfloat16": 5e-2}
USABLE = 0.9  # of the device's limit, as grace_jax.memory and benchmarks/memory.py count it


def _say(line: str) -> None:
    print(line, flush=True)


def _rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-12)


def _mib(num_bytes: float | None) -> str:
    return "n/a" if num_bytes is None else memory.size(int(num_bytes))


# ------------------------------------------------------------------------------ model and steps
def _config(variant: str, frames: int, dtype: str, remat: bool, image_size: int):
    """Full GRACE with random CLIP weights; the tiny variant takes the demo's small heads."""
    from grace_jax.configs import ablation, demo

    config = demo.get_config() if variant == "tiny" else ablation.get_config("grace")
    config.model.clip.init = "random"  # never download: the doctor checks machines, not weights
    config.model.clip.tokenizer = "builtin:tiny"
    config.model.clip.variant = variant
    config.model.clip.dtype = dtype
    config.model.clip.remat = remat
    config.model.num_frames = config.data.num_frames = frames
    config.model.num_classes = 7
    config.data.image_size = image_size
    return config


def _build(config):
    """(train state on the host CPU, the trainer's step as a function of (state, batch))."""
    # Built on the host: one copy to put on any device, and nothing left on the accelerator to
    # inflate its peak-memory reading.
    with jax.default_device(jax.devices("cpu")[0]):
        tokenizer = Tokenizer.from_pretrained("builtin:tiny")
        graphdef, state, tx = state_lib.create_state(config, tokenizer, steps_per_epoch=1000)
    step = functools.partial(
        steps.train_step, graphdef=graphdef, tx=tx, loss_cfg=dict(config.model.loss),
        normalize=config.data.normalize,
    )  # fmt: skip
    return state, step


def _batch(batch: int, frames: int, size: int) -> dict:
    rng = np.random.default_rng(0)
    return dict(
        video=rng.integers(0, 256, (batch, frames, size, size, 3), dtype=np.uint8),
        label=np.arange(batch, dtype=np.int32) % 7,
        mask=np.ones((batch,), bool),
    )


# ------------------------------------------------------------------------------ 2. numerics
def compare_devices(device, cpu) -> dict[str, Any]:
    """The tiny step on `device` (fp32 and bf16) against the same step on `cpu` in fp32."""
    batch = _batch(2, 4, 32)
    out: dict[str, Any] = dict(device=str(device), cpu=str(cpu), same_device=device == cpu, rows=[])
    ref = None
    for dtype in ("float32", "bfloat16"):
        state, step = _build(_config("tiny", 4, dtype, False, 32))
        fn = jax.jit(step)  # no donation: the host state is reused
        if ref is None:
            _, m = fn(jax.device_put(state, cpu), jax.device_put(batch, cpu))  # committed: runs there
            ref = {k: float(m[k]) for k in ("loss", "grad_norm")}
        new_state, m = fn(jax.device_put(state, device), jax.device_put(batch, device))
        got = {k: float(m[k]) for k in ("loss", "grad_norm")}
        rel = {k: _rel(got[k], ref[k]) for k in got}
        ok = all(v <= TOLERANCE[dtype] for v in rel.values()) and all(map(math.isfinite, got.values()))
        row = dict(dtype=dtype, device=got, cpu_float32=ref, rel=rel, tolerance=TOLERANCE[dtype], ok=ok)
        if dtype == "bfloat16":  # bf16 compute only: parameters, optimizer state and losses stay fp32
            floats = [x.dtype for x in jax.tree.leaves((new_state["params"], new_state["opt_state"]))
                      if jnp.issubdtype(x.dtype, jnp.floating)]  # fmt: skip
            row["fp32_state_and_loss"] = all(d == jnp.float32 for d in floats + [m["loss"].dtype])
            row["ok"] = row["ok"] and row["fp32_state_and_loss"]
        out["rows"].append(row)
    out["ok"] = all(r["ok"] for r in out["rows"])
    return out


# ------------------------------------------------------------------------------ 3. attention and OT
def attention_check(device) -> dict[str, Any]:
    """What the model's attention call compiles to on `device`, and whether cuDNN's works (GPU)."""
    shape = (2, 197, 12, 64)  # ViT-B/16's 197 tokens x 12 heads of 64
    rng = np.random.default_rng(0)
    q, k, v = (jax.device_put(jnp.asarray(rng.normal(size=shape), jnp.bfloat16), device) for _ in range(3))
    compiled = jax.jit(jax.nn.dot_product_attention).lower(q, k, v).compile()
    # implementation=None is jax's XLA path (jax 0.10.2's source: "defaults to XLA for now"); XLA could
    # still rewrite it into cuDNN's fused attention, which would show as a __cudnn$fmha custom call.
    out = {"model_call": "cudnn" if "cudnn$fmha" in compiled.as_text() else "xla", "ok": True}
    if device.platform != "gpu":
        out["cudnn"] = f"not tried ({device.platform})"
        return out
    try:
        xla = jax.nn.dot_product_attention(q, k, v, implementation="xla").astype(jnp.float32)
        cud = jax.nn.dot_product_attention(q, k, v, implementation="cudnn").astype(jnp.float32)
        out["cudnn"] = f"works, max |diff| vs xla {float(jnp.abs(xla - cud).max()):.1e} (bf16)"
    except Exception as e:  # noqa: BLE001 -- any failure is the finding, reported in one line
        out["cudnn"] = f"unavailable: {str(e).splitlines()[0][:120]}"
    return out


def ot_check(device, cpu) -> dict[str, Any]:
    """The Sinkhorn solve on `device` against `cpu`, in float32 (the model casts its OT inputs up)."""
    cost = np.random.default_rng(0).uniform(0, 2, (4, 16, 64)).astype(np.float32)  # 4 problems, 16 x 64
    a, b = np.full((16,), 1 / 16, np.float32), np.full((64,), 1 / 64, np.float32)
    solve = jax.jit(functools.partial(alignment.solve_ot, epsilon=0.05, max_iterations=200, threshold=1e-3))
    got, ref = (solve(*jax.device_put((cost, a, b), d)) for d in (device, cpu))
    diff = float(jnp.abs(jnp.asarray(np.asarray(got.plan)) - np.asarray(ref.plan)).max())
    converged = bool(np.asarray(got.converged).all())
    # Plans sum to 1 over 1024 entries (~1e-3 each): 1e-5 is 1% of an entry.
    return dict(dtype="float32", max_plan_diff=diff, converged=converged, ok=converged and diff < 1e-5)


# ------------------------------------------------------------------------------ 4. the timed step
def _compile(step, state_spec, batch_spec, shardings):
    """Lowers and compiles `step` (state donated, kept in `shardings`); returns (compiled, seconds)."""
    t0 = time.perf_counter()
    # The new state keeps the input's shardings, so the remat and plain steps can take turns on it.
    fn = jax.jit(step, donate_argnums=0, out_shardings=(shardings, None))
    return fn.lower(state_spec, batch_spec).compile(), time.perf_counter() - t0


def _specs(state, per_device: int, frames: int, size: int, mesh):
    """Abstract state and batch (per-device batch x devices clips, split over the mesh), and the
    state's shardings: what the step is compiled for, before any array exists."""
    shardings = sharding.state_shardings(mesh, state)
    spec = lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s)  # noqa: E731
    state_spec = jax.tree.map(spec, state, shardings)
    n, bsh = mesh.size, sharding.batch_sharding(mesh)
    batch_spec = {
        "video": jax.ShapeDtypeStruct((per_device * n, frames, size, size, 3), jnp.uint8, sharding=bsh),
        "label": jax.ShapeDtypeStruct((per_device * n,), jnp.int32, sharding=bsh),
        "mask": jax.ShapeDtypeStruct((per_device * n,), jnp.bool_, sharding=bsh),
    }
    return state_spec, batch_spec, shardings


def _peak(device) -> int | None:
    try:
        return (device.memory_stats() or {}).get("peak_bytes_in_use")
    except Exception:  # noqa: BLE001 -- platforms without statistics raise various errors
        return None


def benchmark(opts: dict, device, mesh) -> dict[str, Any]:
    """Compile, run and time the chosen variant's step; remat's effect; the largest batch that fits."""
    limit, where = memory.device_limit(device=device)
    size, frames, dtype, remat = opts["image_size"], opts["frames"], opts["dtype"], opts["remat"]
    state, plain = _build(_config(opts["variant"], frames, dtype, False, size))
    steps = {False: plain, True: _build(_config(opts["variant"], frames, dtype, True, size))[1]}  # remat
    out: dict[str, Any] = dict(
        variant=opts["variant"],
        frames=frames,
        image_size=size,
        dtype=dtype,
        remat=remat,
        devices=mesh.size,
        memory_limit=limit,
        memory_limit_source=where,
    )
    per_device = opts["batch"]
    while True:  # halved until the compiled estimate fits: an OOM in the first step would tell less
        specs = _specs(state, per_device, frames, size, mesh)
        compiled, compile_s = _compile(steps[remat], *specs)
        estimate = memory.step_bytes(compiled)
        if limit is None or estimate <= USABLE * limit or per_device == 1:
            break
        out.setdefault("batch_halved_from", per_device)
        per_device //= 2
    cost = compiled.cost_analysis()
    flops = float((cost[0] if isinstance(cost, (list, tuple)) else cost).get("flops", 0.0))
    out.update(per_device_batch=per_device, global_batch=per_device * mesh.size, compile_s=compile_s,
               estimate_bytes=estimate, flops_per_step=flops)  # fmt: skip
    batch = sharding.global_batch(_batch(per_device * mesh.size, frames, size), mesh)
    live, times, runs = jax.device_put(state, specs[2]), [], {}
    try:
        # The allocator's peak is a high-water mark, so the step expected to need less (remat) runs
        # first; each runs once, the timed one `steps` more times.
        for r in (True, False):
            fn = compiled if r == remat else _compile(steps[r], *specs)[0]
            live, m = fn(live, batch)
            jax.block_until_ready(m)
            runs[r] = dict(estimate_bytes=memory.step_bytes(fn), peak_bytes=_peak(device))
            for _ in range(opts["steps"] if r == remat else 0):
                t0 = time.perf_counter()
                live, m = fn(live, batch)
                jax.block_until_ready(m)
                times.append(time.perf_counter() - t0)
        out["ok"] = math.isfinite(float(m["loss"]))
    except Exception as e:  # noqa: BLE001 -- out of memory and the like: reported with what was measured
        out.update(ok=False, error=f"{type(e).__name__}: {str(e).strip().splitlines()[0][:200]}")
    if times:
        step_s, peak = statistics.median(times), machine.peak_tflops(device.device_kind, dtype)
        out.update(step_s=step_s, step_min_s=min(times), clips_per_s=per_device * mesh.size / step_s,
                   achieved_tflops=flops / step_s / 1e12, peak_tflops=peak, mfu=machine.mfu(flops, step_s, peak),
                   measured_peak_bytes=runs[remat]["peak_bytes"])  # fmt: skip
        if peak is None:
            out["mfu_note"] = f"no {dtype} peak figure for {device.device_kind!r}: achieved FLOP/s only"
    if len(runs) == 2:
        out["remat_check"] = {str(k).lower(): v for k, v in runs.items()}
    if opts["max_batch_search"] and limit is None:
        out["largest_batch"] = {"note": f"not searched: {where}"}
    elif opts["max_batch_search"]:

        def at(b):
            return memory.step_bytes(_compile(steps[remat], *_specs(state, b, frames, size, mesh))[0])

        out["largest_batch"] = found = largest_batch(at, limit, opts["max_batch"])
        found["note"] = f"compiled estimate <= {USABLE:.0%} of {memory.size(limit)} ({where}), doubling"
    return out


def largest_batch(estimate: Callable[[int], int], limit: int, max_batch: int) -> dict[str, Any]:
    """Per-device batches 1, 2, 4, ... up to `max_batch`, until `estimate(batch)` (bytes) exceeds
    USABLE x `limit`: {"estimates": {batch: bytes}, "largest": the largest that fit or None, "capped"}."""
    estimates, b = {}, 1
    while b <= max_batch:
        estimates[b] = estimate(b)
        if estimates[b] > USABLE * limit:
            break
        b *= 2
    ok = [k for k, v in estimates.items() if v <= USABLE * limit]
    return dict(estimates=estimates, largest=max(ok) if ok else None, capped=b > max_batch)


# ------------------------------------------------------------------------------ the command
def _define_flags() -> None:
    """The command's flags; defined when run, not at import (grace_jax.predict and others that a test
    process imports beside this module have --out too)."""
    flags.DEFINE_string("variant", "ViT-B/16", "Timed step's CLIP: tiny, ViT-B/32, ViT-B/16, ViT-L/14.")
    flags.DEFINE_integer("frames", 16, "Frames per clip of the timed step.")
    flags.DEFINE_integer("batch", 0, "Per-device batch; 0: 1 on CPU, 4 on GPU/TPU (halved until it fits).")
    flags.DEFINE_enum("dtype", "auto", ["auto", "float32", "bfloat16"], "auto: bf16 on GPU/TPU, else fp32.")
    flags.DEFINE_integer("steps", 5, "Timed steps (after one warm-up step).")
    flags.DEFINE_string("out", "doctor.json", "Where the JSON report goes.")
    flags.DEFINE_bool("max_batch_search", False, "Find the largest per-device batch that fits (compiles).")
    flags.DEFINE_integer("max_batch", 256, "Largest per-device batch --max_batch_search tries.")
    flags.DEFINE_bool("remat", False, "Rematerialize ViT blocks in the timed step.")
    flags.DEFINE_bool("quick", False, "Tiny variant, 4 frames, 32 px, batch 2, 3 steps (what CI runs).")


def _options() -> dict:
    """The run's settings from the flags; one-line errors for values that cannot work."""
    f = flags.FLAGS
    variant = "tiny" if f.quick else f.variant
    if variant not in clip_lib.VARIANTS:
        raise errors.UsageError(f"--variant={variant}: choose one of {', '.join(clip_lib.VARIANTS)}")
    for name, low in (("frames", 1), ("batch", 0), ("steps", 1), ("max_batch", 1)):
        if f[name].value < low:
            raise errors.UsageError(f"--{name}={f[name].value}: must be >= {low}")
    folder = os.path.dirname(os.path.abspath(f.out))
    if not os.path.isdir(folder):
        raise errors.UsageError(f"--out={f.out}: the folder {folder} does not exist")
    accel = jax.default_backend() in ("gpu", "tpu")
    return dict(
        variant=variant, frames=4 if f.quick else f.frames, image_size=32 if f.quick else 224,
        batch=f.batch or (2 if f.quick else 4 if accel else 1),
        dtype=jnp.dtype(grace.compute_dtype(f.dtype)).name,  # auto: by the default backend
        steps=3 if f.quick and not f["steps"].present else f.steps, remat=f.remat,
        max_batch_search=f.max_batch_search, max_batch=f.max_batch, out=f.out,
    )  # fmt: skip


def _section(report: dict, name: str, fn: Callable[[], dict]) -> dict:
    """Runs one part; an exception becomes that part's failure (with its first line), and the rest
    still runs: a doctor that dies on the first problem shows one problem."""
    t0 = time.perf_counter()
    try:
        out = fn()
    except Exception as e:  # noqa: BLE001 -- reported in the output and the JSON, not a traceback
        out = {"ok": False, "error": f"{type(e).__name__}: {str(e).strip().splitlines()[0][:200]}"}
        _row(name, out["error"], False)
    out["seconds"] = time.perf_counter() - t0
    report[name] = out
    return out


def _row(name: str, text: str, ok: bool | None = None) -> None:
    """One line of the two-column table; a check's verdict at its end."""
    _say(f"{name:<16}{text}" + ("" if ok is None else "  ok" if ok else "  FAILED"))


def _print_env(env: dict) -> None:
    _row("versions", ", ".join(f"{k} {x}" for k, x in env["versions"].items()))
    cc = f", compute capability {env['compute_capability']}" if env["compute_capability"] else ""
    _row("devices", f"{env['local_devices']} x {env['device_kind']} ({env['platform']}{cc}); "
                    f"{env['global_devices']} in all, process {env['process']}")  # fmt: skip
    _row("env", "; ".join(f"{k}={x}" for k, x in env["env"].items()) or "no JAX/XLA/CUDA/TPU variable set")
    precision = env["default_matmul_precision"] or "default"
    _row("jax", f"x64 {env['jax_enable_x64']}, matmul precision {precision}; {env['cpu_numerics']}")


def _print_numerics(num: dict, device) -> None:
    same = " (no accelerator: both sides are the CPU)" if num["same_device"] else ""
    _row("numerics", f"tiny GRACE train step, {device.platform}:{device.id} vs the CPU's float32{same}")
    for r in num["rows"]:
        d, c = r["device"], r["cpu_float32"]
        _row(f"  {r['dtype']}", f"loss {d['loss']:.5f} vs {c['loss']:.5f}, grad norm {d['grad_norm']:.5g} "
                                f"vs {c['grad_norm']:.5g}: rel {max(r['rel'].values()):.1e} <= "
                                f"{r['tolerance']:.0e}", r["ok"])  # fmt: skip
        if "fp32_state_and_loss" in r:
            ok = r["fp32_state_and_loss"]
            _row("  bf16 state", "parameters, optimizer state and loss stay float32", ok)


def _print_step(b: dict, steps: int) -> None:
    if "batch_halved_from" in b:
        _row("  batch", f"{b['batch_halved_from']}/device does not fit: halved to {b['per_device_batch']}")
    _row("  compile", f"{b['compile_s']:.1f} s")
    if "step_s" in b:
        ms = f"{b['step_s'] * 1e3:.1f} ms median of {steps} (min {b['step_min_s'] * 1e3:.1f})"
        _row("  step time", f"{ms}, {b['clips_per_s']:.1f} clips/s", b["ok"])
    achieved = f", {b['achieved_tflops'] * 1e3:.4g} GFLOP/s achieved" if "step_s" in b else ""
    _row("  FLOPs", f"{b['flops_per_step'] / 1e9:.4g} GFLOP/step per device (XLA cost analysis){achieved}")
    if "step_s" in b:
        _row("  MFU", f"{b['mfu']:.1%} of {b['peak_tflops']:g} TFLOP/s (vendor peak, dense)"
             if b["mfu"] is not None else f"n/a: {b['mfu_note']}")  # fmt: skip
    peak, limit = b.get("measured_peak_bytes"), b["memory_limit"]
    _row("  memory", f"compiled estimate {_mib(b['estimate_bytes'])} per device, measured peak "
                     f"{_mib(peak) if peak else 'not reported by this platform'}, limit "
                     f"{_mib(limit) if limit else 'none reported'}")  # fmt: skip
    if "error" in b:
        _row("  error", b["error"], False)
    if "remat_check" in b:
        on, off = b["remat_check"]["true"], b["remat_check"]["false"]
        measured = (f"measured peak {_mib(on['peak_bytes'])} -> {_mib(off['peak_bytes'])} (high-water marks, "
                    "remat ran first)" if on["peak_bytes"] else "measured: not reported")  # fmt: skip
        _row(
            "  remat",
            f"estimate {_mib(on['estimate_bytes'])} with, {_mib(off['estimate_bytes'])} without "
            f"(saves {1 - on['estimate_bytes'] / max(off['estimate_bytes'], 1):.0%}); {measured}",
        )
    if "largest_batch" in b:
        lb = b["largest_batch"]
        found = f"{lb['largest']}{' (cap reached)' if lb['capped'] else ''}: " if "largest" in lb else ""
        _row("  largest batch", f"{found}{lb['note']}")


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise errors.UsageError(f"unexpected arguments {argv[1:]}: every setting is a --flag")
    opts = _options()
    start = time.perf_counter()
    device, cpu = jax.local_devices()[0], jax.devices("cpu")[0]
    command = " ".join(["python -m grace_jax.doctor"] + sys.argv[1:])
    report: dict[str, Any] = dict(command=command, options=opts)
    report["environment"] = env = machine.environment()
    _print_env(env)
    num = _section(report, "numerics", lambda: compare_devices(device, cpu))
    if "rows" in num:
        _print_numerics(num, device)
    att = _section(report, "attention", lambda: attention_check(device))
    if "model_call" in att:
        _row("attention", f"the model's jax.nn.dot_product_attention compiles to {att['model_call']}; "
                          f"cuDNN: {att['cudnn']}", att["ok"])  # fmt: skip
    ot = _section(report, "ot", lambda: ot_check(device, cpu))
    if "max_plan_diff" in ot:
        _row("OT solve", f"Sinkhorn in float32 (as the model runs it): plan max |diff| vs CPU "
                         f"{ot['max_plan_diff']:.1e}, converged {ot['converged']}", ot["ok"])  # fmt: skip
    mesh = sharding.make_mesh({"data": -1, "fsdp": 1, "model": 1}, jax.local_devices())
    devices = f"{mesh.size} device{'s' * (mesh.size > 1)}"
    _row(
        "step",
        f"{opts['variant']} T={opts['frames']} {opts['image_size']} px {opts['dtype']}, remat "
        f"{opts['remat']}, batch {opts['batch']}/device x {devices} (compiling)",
    )
    b = _section(report, "step", lambda: benchmark(opts, device, mesh))
    if "compile_s" in b:
        _print_step(b, opts["steps"])
    parts = ("numerics", "attention", "ot", "step")
    checks = report["checks"] = {k: bool(report[k].get("ok")) for k in parts}
    report["wall_s"] = time.perf_counter() - start
    tmp = opts["out"] + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:  # written whole, then renamed: never half a report
        json.dump(report, f, indent=1, default=str)
    os.replace(tmp, opts["out"])
    failed = [k for k, ok in checks.items() if not ok]
    _row("report", f"{opts['out']}: {len(checks) - len(failed)} of {len(checks)} checks passed in "
                   f"{report['wall_s']:.0f} s")  # fmt: skip
    if failed:
        raise errors.UserError(f"checks failed: {', '.join(failed)} (details in {opts['out']})")


if __name__ == "__main__":
    _define_flags()
    cli.run(main)
