"""Training-step cost of each ablation: compile time and median step time, ratio to DFER-CLIP.

  python benchmarks/train_step.py                                  # ViT-B/16 and B/32, all ablations
  python benchmarks/train_step.py --variants=ViT-B/32 --configs=dferclip,grace --steps=5
  python benchmarks/train_step.py --variants=tiny --batch=8        # seconds, for a smoke run

A step is the trainer's own `grace_jax.train.train_step` on the state of `train.create_state`:
forward, loss, backward, SGD with momentum and weight decay per parameter group (the frozen text tower
is split off so it gets no gradient), under jax.jit with the train state donated. Random CLIP weights, random frames, the
real class cue sentences tokenised with the built-in tiny vocabulary (its subword pieces make the
cues somewhat longer than CLIP's own tokenizer would: a pessimistic case for CATE and OT).

Each configuration is compiled first; timed steps then go round-robin over the configurations, so
background load on a shared machine hits all of them alike. Prints one table per run.
"""

from __future__ import annotations

import os
import statistics
import time

from absl import app, flags

_VARIANTS = flags.DEFINE_list("variants", ["ViT-B/16", "ViT-B/32"], "CLIP variants.")
_CONFIGS = flags.DEFINE_list(
    "configs", ["dferclip", "motion", "cate", "ot", "grace"], "configs/ablations/ names."
)
_BATCH = flags.DEFINE_integer("batch", 2, "Clips per step.")
_FRAMES = flags.DEFINE_integer("frames", 16, "Frames per clip.")
_STEPS = flags.DEFINE_integer("steps", 3, "Timed steps per configuration (median reported).")
_WARMUP = flags.DEFINE_integer("warmup", 1, "Untimed steps per configuration after compiling.")


def _build(name: str, variant: str, frames: int, tokenizer):
    """The trainer's own state and jitted `train.train_step` for one ablation config."""
    import functools
    import importlib

    import jax

    from grace_jax import train

    config = importlib.import_module(f"configs.ablations.{name}").get_config()
    config.model.clip.variant = variant
    config.model.num_frames = frames
    config.model.num_classes = 7  # DFEW's; the ablations' 0 takes the data's count in training
    if variant == "tiny":
        config.model.cate.heads = 4
    # A long epoch keeps the step-decay boundaries out of the few timed steps.
    graphdef, state, tx = train.create_state(config, tokenizer, steps_per_epoch=1000)
    step = functools.partial(
        train.train_step, graphdef=graphdef, tx=tx, loss_cfg=dict(config.model.loss)
    )
    fn = jax.jit(step, donate_argnums=0)
    n_trainable = sum(x.size for x in jax.tree_util.tree_leaves(state["params"]))
    return fn, state, n_trainable


def main(argv):
    del argv
    import jax
    import numpy as np

    from grace_jax.text.tokenizer import Tokenizer

    tokenizer = Tokenizer.from_pretrained("builtin:tiny")
    load = os.getloadavg()
    print(
        f"jax {jax.__version__} on {jax.devices()[0].platform} ({os.cpu_count()} CPUs), "
        f"batch {_BATCH.value} x {_FRAMES.value} frames, median of {_STEPS.value} steps; "
        f"load average at start {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}",
        flush=True,
    )
    rows = []
    for variant in _VARIANTS.value:
        size = 32 if variant == "tiny" else 224
        rng = np.random.default_rng(0)
        batch = {  # uint8 frames, normalized inside the step, as the trainer feeds them.
            "video": rng.integers(0, 256, (_BATCH.value, _FRAMES.value, size, size, 3), np.uint8),
            "label": rng.integers(0, 7, _BATCH.value).astype(np.int32),
            "mask": np.ones(_BATCH.value, bool),
        }
        runs = {}
        for name in _CONFIGS.value:
            fn, state, n_trainable = _build(name, variant, _FRAMES.value, tokenizer)
            args = [state, jax.device_put(batch)]
            t0 = time.perf_counter()
            compiled = fn.lower(*args).compile()
            compile_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            for _ in range(_WARMUP.value):
                out = compiled(*args)
                jax.block_until_ready(out)
                args[0] = out[0]
            warm_s = time.perf_counter() - t0
            runs[name] = dict(fn=compiled, args=args, compile=compile_s, times=[], n=n_trainable)
            print(f"  {variant} {name}: compiled in {compile_s:.1f}s, warm-up {warm_s:.1f}s",
                  flush=True)  # fmt: skip
        for i in range(_STEPS.value):
            for name, r in runs.items():
                t0 = time.perf_counter()
                out = r["fn"](*r["args"])
                jax.block_until_ready(out)
                r["times"].append(time.perf_counter() - t0)
                print(f"  {variant} {name}: step {i + 1} {r['times'][-1]:.2f}s", flush=True)
                r["args"][0] = out[0]
                r["loss"] = float(out[1]["loss"])
        base = statistics.median(runs["dferclip"]["times"]) if "dferclip" in runs else None
        # Minimum over steps is the least load-sensitive figure on a shared machine: report both.
        base_lo = min(runs["dferclip"]["times"]) if base else None
        for name, r in runs.items():
            med = statistics.median(r["times"])
            lo = min(r["times"])
            ratio = med / base if base else float("nan")
            ratio_lo = lo / base_lo if base else float("nan")
            rows.append((variant, name, r["n"], r["compile"], med, lo, ratio, ratio_lo, r["loss"]))
        del runs
    load = os.getloadavg()
    header = ("variant", "config", "trainable", "compile s", "step s (median)", "step s (min)",
              "x dferclip (median)", "x dferclip (min)", "loss")  # fmt: skip
    print()
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for v, n, p, c, med, lo, ratio, ratio_lo, loss in rows:
        print(f"| {v} | {n} | {p / 1e6:.1f}M | {c:.1f} | {med:.2f} | {lo:.2f} | {ratio:.2f} | "
              f"{ratio_lo:.2f} | {loss:.3f} |")  # fmt: skip
    print(f"\nload average at end {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}")


if __name__ == "__main__":
    app.run(main)
