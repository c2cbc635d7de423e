"""Per-device memory of the compiled training step, and which batch fits which accelerator.

  python benchmarks/memory.py                       # B/32, B/16, L/14 x batch 1..64 x fp32/bf16 x remat
  python benchmarks/memory.py --variants=ViT-B/32 --batches=8 --remat=False      # quick (see below)
  python benchmarks/memory.py --variants=ViT-B/16 --batches=8 --dtypes=bfloat16 --remat=False --captions
      # MAFW's clip-caption OT; --caption_tokens=77 --caption_top_k=0 gives the unbounded problem

For each CLIP variant, compute dtype and remat setting, the trainer's `steps.train_step` (full GRACE,
`configs/ablation.py:grace`, unless --config says otherwise) is lowered and compiled for one device
at each per-device batch of 16-frame 224 px clips, and never run: XLA's `memory_analysis()` of the
compiled step gives the argument, output, alias and temporary bytes, and the peak is arguments +
outputs - aliased (the donated train state) + temporaries. `cost_analysis()` gives the FLOPs, shown
per clip. One device holding the whole train state is the data-parallel case (mesh `data`=-1); FSDP
(mesh `fsdp`) divides the parameter and optimizer part by its size.

The figures are XLA:CPU's buffer assignment (no accelerator was lent when this was written); GPU and
TPU compilers fuse differently, so read them as estimates of the accelerator's to within its
fusion differences, and leave headroom (the table's "fits" uses 90% of each memory size).

Quick setting: `--variants=ViT-B/32 --batches=8 --remat=False` (2 compiles). On this project's idle
2-core machine a compile takes about 20 s (B/32, B/16 and L/14 alike): `--variants=ViT-B/32,ViT-B/16
--batches=1,4,16,64 --dtypes=bfloat16 --remat=False` took 171 s; under other sessions' load (7-15) one
compile took 1-5 min.
"""

from __future__ import annotations

import functools
import os
import sys
import time

from absl import app, flags

_VARIANTS = flags.DEFINE_list("variants", ["ViT-B/32", "ViT-B/16", "ViT-L/14"], "CLIP variants.")
_BATCHES = flags.DEFINE_list("batches", ["1", "2", "4", "8", "16", "32", "64"], "Per-device batches.")
_DTYPES = flags.DEFINE_list("dtypes", ["float32", "bfloat16"], "model.clip.dtype values.")
_REMAT = flags.DEFINE_list("remat", ["False", "True"], "model.clip.remat values.")
_CONFIG = flags.DEFINE_string(
    "config",
    "grace",
    "A configs/ablation.py variant (grace, motion, cate, ot), or dferclip (configs/dferclip.py).",
)
_FRAMES = flags.DEFINE_integer("frames", 16, "Frames per clip.")
_CAPTIONS = flags.DEFINE_bool(
    "captions", False, "Per-clip captions on (MAFW): adds the B x B clip-caption OT of cate.captions."
)
_CAPTION_TOKENS = flags.DEFINE_integer("caption_tokens", -1, "model.cate.caption_tokens (-1: config's).")
_CAPTION_TOP_K = flags.DEFINE_integer("caption_top_k", -1, "model.cate.caption_top_k (-1: config's).")
_MEMORIES_GB = (16, 32, 80, 141)  # V100-16/T4-ish, V100-32, A100/H100-80, H200-141
_USABLE = 0.9  # headroom for the runtime, fragmentation and the compiler's differences


def _step(variant: str, dtype: str, remat: bool, tokenizer):
    import jax

    from grace_jax import state as state_lib
    from grace_jax import steps
    from grace_jax.configs import ablation, dferclip

    name = _CONFIG.value
    config = dferclip.get_config() if name == "dferclip" else ablation.get_config(name)

    config.model.clip.init = "random"  # sizes and time only: no pretrained weights needed
    config.model.clip.variant = variant
    config.model.clip.dtype = dtype
    config.model.clip.remat = remat
    config.model.num_frames = _FRAMES.value
    config.model.num_classes = 7  # DFEW's; the ablations' 0 takes the data's count in training
    config.model.cate.captions = _CAPTIONS.value
    if _CAPTION_TOKENS.value >= 0:
        config.model.cate.caption_tokens = _CAPTION_TOKENS.value
    if _CAPTION_TOP_K.value >= 0:
        config.model.cate.caption_top_k = _CAPTION_TOP_K.value
    if config.model.prompt.text == "cue":  # dferclip: descriptor prompts that fit 77 positions
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        import torch_reference

        config.model.class_cues = torch_reference.SENTENCES
    graphdef, state, tx = state_lib.create_state(config, tokenizer, steps_per_epoch=1000)
    fn = jax.jit(
        functools.partial(
            steps.train_step, graphdef=graphdef, tx=tx, loss_cfg=dict(config.model.loss),
            normalize=config.data.normalize,
        ),
        donate_argnums=0,
    )  # fmt: skip
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), state)
    return fn, abstract


def _measure(fn, abstract_state, batch: int) -> dict:
    import jax
    import jax.numpy as jnp

    frames = _FRAMES.value
    batch_spec = {
        "video": jax.ShapeDtypeStruct((batch, frames, 224, 224, 3), jnp.uint8),
        "label": jax.ShapeDtypeStruct((batch,), jnp.int32),
        "mask": jax.ShapeDtypeStruct((batch,), jnp.bool_),
    }
    if _CAPTIONS.value:  # 77-position caption ids, as the loader's tokenizer pads them
        batch_spec.update(
            caption_ids=jax.ShapeDtypeStruct((batch, 77), jnp.int32),
            caption_eot=jax.ShapeDtypeStruct((batch,), jnp.int32),
            has_caption=jax.ShapeDtypeStruct((batch,), jnp.bool_),
        )
    t0 = time.perf_counter()
    compiled = fn.lower(abstract_state, batch_spec).compile()
    seconds = time.perf_counter() - t0
    mem = compiled.memory_analysis()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    args, out = mem.argument_size_in_bytes, mem.output_size_in_bytes
    alias, temp = mem.alias_size_in_bytes, mem.temp_size_in_bytes
    return dict(
        args=args, out=out, alias=alias, temp=temp, peak=args + out - alias + temp,
        flops=float(cost.get("flops", float("nan"))), compile_s=seconds,
    )  # fmt: skip


def main(argv):
    del argv
    import jax

    from grace_jax.text.tokenizer import Tokenizer

    tokenizer = Tokenizer.from_pretrained("builtin:tiny")
    start = time.perf_counter()
    command = "python benchmarks/" + " ".join([os.path.basename(sys.argv[0])] + sys.argv[1:])
    load = os.getloadavg()
    head = (f"{command}\njax {jax.__version__}, compiled for {jax.devices()[0].platform} (never run), "
            f"config {_CONFIG.value}, T={_FRAMES.value}, 224 px, captions {_CAPTIONS.value}; load average at start "
            f"{load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}")  # fmt: skip
    print(head, flush=True)
    rows, fits = [], []
    for variant in _VARIANTS.value:
        for dtype in _DTYPES.value:
            for remat in (r.lower() == "true" for r in _REMAT.value):
                fn, abstract = _step(variant, dtype, remat, tokenizer)
                peaks = {}
                for b in (int(x) for x in _BATCHES.value):
                    r = _measure(fn, abstract, b)
                    peaks[b] = r["peak"]
                    rows.append((variant, dtype, remat, b, r))
                    print(f"  {variant} {dtype} remat={remat} batch {b}: peak {r['peak'] / 2**30:.2f} "
                          f"GiB (temp {r['temp'] / 2**30:.2f}), {r['flops'] / b / 1e9:.0f} GFLOP/clip, "
                          f"compiled in {r['compile_s']:.0f} s", flush=True)  # fmt: skip
                largest = []
                for gb in _MEMORIES_GB:
                    ok = [b for b, p in peaks.items() if p <= _USABLE * gb * 1e9]
                    # Only measured batches count: ">= 64" when the largest one measured fits,
                    # "< 1" when not even the smallest does.
                    if not ok:
                        largest.append(f"< {min(peaks)}")
                    else:
                        largest.append(f">= {max(ok)}" if max(ok) == max(peaks) else str(max(ok)))
                fits.append((variant, dtype, remat, largest, rows[-1][4]["flops"] / max(peaks)))
    print("\n" + head)
    print("\n| variant | dtype | remat | batch/device | state+batch GiB | temp GiB | peak GiB | GFLOP/clip |")
    print("|---|---|---|---|---|---|---|---|")
    for variant, dtype, remat, b, r in rows:
        print(f"| {variant} | {dtype} | {remat} | {b} | {(r['args']) / 2**30:.2f} | "
              f"{r['temp'] / 2**30:.2f} | {r['peak'] / 2**30:.2f} | {r['flops'] / b / 1e9:.0f} |")  # fmt: skip
    print(f"\nLargest measured per-device batch whose peak is <= {_USABLE:.0%} of the memory:\n")
    print("| variant | dtype | remat | " + " | ".join(f"{g} GB" for g in _MEMORIES_GB) + " | GFLOP/clip |")
    print("|---|---|---|" + "---|" * (len(_MEMORIES_GB) + 1))
    for variant, dtype, remat, largest, flops in fits:
        print(f"| {variant} | {dtype} | {remat} | " + " | ".join(largest) + f" | {flops / 1e9:.0f} |")
    load = os.getloadavg()
    print(f"\nload average at end {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}; "
          f"wall time {time.perf_counter() - start:.0f} s")  # fmt: skip


if __name__ == "__main__":
    app.run(main)
