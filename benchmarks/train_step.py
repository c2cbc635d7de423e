"""Training-step cost of each ablation, and of DFER-CLIP's own PyTorch step beside ours.

  python benchmarks/train_step.py --reference=pytorch                      # B/16 and B/32, all ablations
  python benchmarks/train_step.py --reference=pytorch --configs=dferclip,grace
  python benchmarks/train_step.py --variants=ViT-B/32 --configs=dferclip,grace --reference=pytorch \
      --steps=3                                                             # quicker: see below
  python benchmarks/train_step.py --variants=tiny --batch=8                 # seconds, a smoke run

A step is the trainer's own `grace_jax.steps.train_step` on the state of `state.create_state`:
forward, loss, backward, SGD with momentum and weight decay per parameter group (the frozen text tower
is split off so it gets no gradient), under jax.jit with the train state donated. Random CLIP weights,
random frames, the real class cue sentences tokenised with the built-in tiny vocabulary (its subword
pieces make the cues somewhat longer than CLIP's own tokenizer would: a pessimistic case for CATE and
OT).

`--reference=pytorch` adds DFER-CLIP's PyTorch step at the same sizes (benchmarks/torch_reference.py:
tests/dferclip_torch.py's model with main.py's SGD groups; the same frames, as [0,1] floats; the
same descriptor sentences, through the same tiny vocabulary: torch_reference.SENTENCES, which grace_jax's
dferclip step also uses as its class cues), the FLOPs XLA's cost analysis counts in
grace_jax's compiled step, the GFLOP/s that makes at the minimum step time, and fp32 matmul peaks of XLA and
PyTorch measured in the same run ([2048,768] x [768,3072], DFER-CLIP's MLP shape).

Each step is compiled (or, for PyTorch, run once) first; timed steps then go round-robin over all of
them, starting one further each round, so background load on a shared machine hits every one alike
and none always runs right after PyTorch's step (which slowed the step after it by up to 20%). Prints one table per run, headed
by the command and the load average, so the output stands on its own.

The quicker setting above took 92 s (ViT-B/32) and 244 s (ViT-B/16) of wall time on this project's
idle 2-core machine (AMD EPYC); about a third of that is compiling. Under load the PyTorch side
suffers most: compare quiet runs only.
"""

from __future__ import annotations

import os
import statistics
import sys
import time

from absl import app, flags

_VARIANTS = flags.DEFINE_list("variants", ["ViT-B/16", "ViT-B/32"], "CLIP variants.")
_CONFIGS = flags.DEFINE_list(
    "configs",
    ["dferclip", "motion", "cate", "ot", "grace"],
    "configs/ablation.py variants, and dferclip (configs/dferclip.py).",
)
_REFERENCE = flags.DEFINE_enum("reference", "", ["", "pytorch"], "Also time DFER-CLIP's PyTorch step (needs torch).")
BATCH = flags.DEFINE_integer("batch", 2, "Clips per step.")
FRAMES = flags.DEFINE_integer("frames", 16, "Frames per clip.")
STEPS = flags.DEFINE_integer("steps", 3, "Timed steps per configuration (median and min reported).")
_WARMUP = flags.DEFINE_integer("warmup", 1, "Untimed steps per configuration after compiling.")

MATMUL = (2048, 768, 3072)
TORCH = "pytorch dferclip"


def build_step(name: str, variant: str, frames: int, tokenizer):
    """The trainer's own state and jitted `steps.train_step` for one ablation config."""
    import functools

    import jax
    import torch_reference

    from grace_jax import state as state_lib
    from grace_jax import steps
    from grace_jax.configs import ablation, dferclip

    config = dferclip.get_config() if name == "dferclip" else ablation.get_config(name)

    config.model.clip.init = "random"  # sizes and time only: no pretrained weights needed
    config.model.clip.variant = variant
    config.model.num_frames = frames
    config.model.num_classes = 7  # DFEW's; the ablations' 0 takes the data's count in training
    if variant == "tiny":
        config.model.cate.heads = 4
    if config.model.prompt.text == "cue":  # dferclip: its descriptor prompts, as the PyTorch step's
        config.model.class_cues = torch_reference.SENTENCES
    # A long epoch keeps the step-decay boundaries out of the few timed steps.
    graphdef, state, tx = state_lib.create_state(config, tokenizer, steps_per_epoch=1000)
    step = functools.partial(
        steps.train_step,
        graphdef=graphdef,
        tx=tx,
        loss_cfg=dict(config.model.loss),
        normalize=config.data.normalize,
    )
    fn = jax.jit(step, donate_argnums=0)
    n_trainable = sum(x.size for x in jax.tree_util.tree_leaves(state["params"]))
    return fn, state, n_trainable


def step_flops(compiled) -> float:
    cost = compiled.cost_analysis()
    if isinstance(cost, (list, tuple)):  # older jax: one dict per computation
        cost = cost[0]
    return float(cost.get("flops", float("nan")))


class _JaxRun:
    def __init__(self, compiled, state, batch):
        self.compiled, self.state, self.batch = compiled, state, batch

    def step(self) -> float:
        import jax

        self.state, out = self.compiled(self.state, self.batch)
        jax.block_until_ready(out)
        return float(out["loss"])


def main(argv):
    del argv
    import jax
    import numpy as np

    from grace_jax.text import tiny_vocab
    from grace_jax.text.tokenizer import Tokenizer

    tokenizer = Tokenizer.from_pretrained("builtin:tiny")
    use_torch = _REFERENCE.value == "pytorch"
    if use_torch:
        import torch
        import torch_reference
        import transformers

        hf_tok = transformers.CLIPTokenizer.from_pretrained(tiny_vocab.cached_tiny_vocab())
    start = time.perf_counter()
    load = os.getloadavg()
    command = "python benchmarks/" + " ".join([os.path.basename(sys.argv[0])] + sys.argv[1:])
    threads = f", torch {torch.__version__} with {torch.get_num_threads()} threads" if use_torch else ""
    head = (
        f"{command}\njax {jax.__version__} on {jax.devices()[0].platform} ({os.cpu_count()} CPUs)"
        f"{threads}, XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}\nbatch {BATCH.value} x "
        f"{FRAMES.value} frames, {STEPS.value} timed steps each, alternated; load average at start "
        f"{load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}"
    )
    print(head, flush=True)
    peaks = {}
    if use_torch:
        peaks["xla"] = torch_reference.xla_matmul_gflops(*MATMUL)
        peaks["torch"] = torch_reference.torch_matmul_gflops(*MATMUL)
        print(f"  fp32 matmul {MATMUL}: XLA {peaks['xla']:.0f} GFLOP/s, "
              f"PyTorch {peaks['torch']:.0f} GFLOP/s", flush=True)  # fmt: skip
    rows = []
    for variant in _VARIANTS.value:
        size = 32 if variant == "tiny" else 224
        rng = np.random.default_rng(0)
        batch = {  # uint8 frames, normalized inside the step, as the trainer feeds them.
            "video": rng.integers(0, 256, (BATCH.value, FRAMES.value, size, size, 3), np.uint8),
            "label": rng.integers(0, 7, BATCH.value).astype(np.int32),
            "mask": np.ones(BATCH.value, bool),
        }
        runs = {}
        for name in _CONFIGS.value:
            fn, state, n_trainable = build_step(name, variant, FRAMES.value, tokenizer)
            dev_batch = jax.device_put(batch)
            t0 = time.perf_counter()
            compiled = fn.lower(state, dev_batch).compile()
            compile_s = time.perf_counter() - t0
            run = _JaxRun(compiled, state, dev_batch)
            t0 = time.perf_counter()
            for _ in range(_WARMUP.value):
                run.step()
            warm_s = time.perf_counter() - t0
            runs[name] = dict(run=run, compile=compile_s, times=[], n=n_trainable,
                              flops=step_flops(compiled))  # fmt: skip
            print(f"  {variant} {name}: compiled in {compile_s:.1f}s, warm-up {warm_s:.1f}s, "
                  f"{runs[name]['flops'] / 1e9:.0f} GFLOP per step", flush=True)  # fmt: skip
        if use_torch:
            run = torch_reference.TorchStep(variant, list(torch_reference.SENTENCES), hf_tok, batch)
            t0 = time.perf_counter()
            for _ in range(_WARMUP.value):
                run.step()
            print(f"  {variant} {TORCH}: warm-up {time.perf_counter() - t0:.1f}s", flush=True)
            runs[TORCH] = dict(run=run, compile=float("nan"), times=[], n=run.n_trainable,
                               flops=float("nan"))  # fmt: skip
        names = list(runs)
        for i in range(STEPS.value):
            # The order turns each round: the step that runs right after PyTorch's shares the cores
            # with its OpenMP threads winding down, so no configuration may always take that place.
            for name in names[i % len(names) :] + names[: i % len(names)]:
                r = runs[name]
                t0 = time.perf_counter()
                r["loss"] = r["run"].step()
                r["times"].append(time.perf_counter() - t0)
                print(f"  {variant} {name}: step {i + 1} {r['times'][-1]:.2f}s", flush=True)
        base = runs.get("dferclip")
        for name, r in runs.items():
            med, lo = statistics.median(r["times"]), min(r["times"])

            def vs(other, med=med, lo=lo, r=r):
                if other and other is not r:
                    return med / statistics.median(other["times"]), lo / min(other["times"])
                return float("nan"), float("nan")

            rows.append(dict(
                variant=variant, name=name, n=r["n"], compile=r["compile"], med=med, lo=lo,
                x_dfc=vs(base) if name != TORCH else (float("nan"),) * 2,
                x_torch=vs(runs.get(TORCH)) if name == "dferclip" else (float("nan"),) * 2,
                flops=r["flops"], loss=r["loss"],
            ))  # fmt: skip
        del runs
    load = os.getloadavg()
    header = ["variant", "step", "trainable", "compile s", "step s (median)", "step s (min)",
              "x grace_jax dferclip (median / min)", "x PyTorch DFER-CLIP (median / min)",
              "GFLOP", "GFLOP/s at min", "loss"]  # fmt: skip

    def fmt(pair):
        return "" if np.isnan(pair[0]) else f"{pair[0]:.2f} / {pair[1]:.2f}"

    print("\n" + head)
    if peaks:
        print(f"fp32 matmul peak {MATMUL}: XLA {peaks['xla']:.0f} GFLOP/s, PyTorch "
              f"{peaks['torch']:.0f} GFLOP/s")  # fmt: skip
    print("\n| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in rows:
        flops = "" if np.isnan(r["flops"]) else f"{r['flops'] / 1e9:.0f}"
        rate = "" if np.isnan(r["flops"]) else f"{r['flops'] / 1e9 / r['lo']:.0f}"
        comp = "" if np.isnan(r["compile"]) else f"{r['compile']:.1f}"
        print(f"| {r['variant']} | {r['name']} | {r['n'] / 1e6:.1f}M | {comp} | {r['med']:.2f} | "
              f"{r['lo']:.2f} | {fmt(r['x_dfc'])} | {fmt(r['x_torch'])} | {flops} | {rate} | "
              f"{r['loss']:.3f} |")  # fmt: skip
    print(f"\nload average at end {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}; "
          f"wall time {time.perf_counter() - start:.0f} s")  # fmt: skip


if __name__ == "__main__":
    app.run(main)
