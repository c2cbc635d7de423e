"""Step-time cost of turning XLA:CPU's ynn fusion off (grace_jax/infra/cpu_numerics.py), on CPU.

  python benchmarks/cpu_numerics.py                                   # demo config and ViT-B/32
  python benchmarks/cpu_numerics.py --models=demo --rounds=3 --steps=5
  python benchmarks/cpu_numerics.py --models=vit-b32 --batch=2 --frames=16

A step is the trainer's own `grace_jax.steps.train_step` on the state of `state.create_state`
(forward, loss, backward, optimizer update; under jax.jit with the state donated), as in
benchmarks/train_step.py. Models:
  demo     configs/demo.py as the README's demo trains it: tiny CLIP, batch 32 x 8 frames, 48 px.
  vit-b32  configs/ablation.py:grace (motion, CATE, OT on) on a random ViT-B/32, --batch x
           --frames frames of 224 px, the built-in tiny vocabulary for the class cues.

XLA reads XLA_FLAGS once per process, so every measurement is its own subprocess: fusion `on`
(XLA's default, GRACE_JAX_KEEP_YNN_FUSION=1) or `off` (grace_jax's default). The two alternate,
on/off then off/on, for --rounds rounds, so background load on a shared machine hits both alike.
Each subprocess compiles, runs --warmup untimed steps, then --steps timed ones; the table gives,
per setting, the median over all timed steps of all rounds and the minimum (the least
load-sensitive figure), the ratio of each to `on`, and how many ynn fusions the compiled step
holds (0 confirms `off` took effect). --settings=on,off,noreduce adds XLA's narrower switch,
--xla_cpu_experimental_ynn_fusion_type=-reduce (reductions kept out of ynn, dots left in it).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time

from absl import app, flags

_MODELS = flags.DEFINE_list("models", ["demo", "vit-b32"], "demo | vit-b32.")
_BATCH = flags.DEFINE_integer("batch", 1, "Clips per step for vit-b32.")
_FRAMES = flags.DEFINE_integer("frames", 8, "Frames per clip for vit-b32.")
_ROUNDS = flags.DEFINE_integer("rounds", 3, "Subprocesses per setting (alternated).")
_STEPS = flags.DEFINE_integer("steps", 3, "Timed steps per subprocess.")
_WARMUP = flags.DEFINE_integer("warmup", 1, "Untimed steps per subprocess after compiling.")
_SETTINGS = flags.DEFINE_list(
    "settings", ["on", "off"], "on | off | noreduce (--xla_cpu_experimental_ynn_fusion_type=-reduce)."
)
_CHILD = flags.DEFINE_string("child", "", "Internal: run one measurement of this model and exit.")

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_OFF_FLAG = "--xla_cpu_experimental_ynn_fusion_type="


def _config(model: str):
    if model == "demo":
        from grace_jax.configs import demo

        c = demo.get_config()
        return c, c.optim.batch_size, c.model.num_frames, c.data.image_size
    if model == "vit-b32":
        from grace_jax.configs import ablation

        c = ablation.get_config("grace")
        c.model.clip.variant = "ViT-B/32"
        c.model.clip.init = "random"
        c.model.clip.tokenizer = "builtin:tiny"
        c.model.num_frames = _FRAMES.value
        c.model.num_classes = 7  # DFEW's; the ablation's 0 takes the data's count in training
        return c, _BATCH.value, _FRAMES.value, 224
    raise app.UsageError(f"unknown model {model!r}")


def _child(model: str) -> None:
    """One measurement in this process; prints one JSON line."""
    import functools

    import jax
    import numpy as np

    from grace_jax import state as state_lib
    from grace_jax import steps
    from grace_jax.infra import cpu_numerics

    config, batch_size, frames, size = _config(model)
    tokenizer = state_lib.load_tokenizer(config.model)
    # A long epoch keeps the step-decay boundaries out of the few timed steps.
    graphdef, state, tx = state_lib.create_state(config, tokenizer, steps_per_epoch=1000)
    step = functools.partial(steps.train_step, graphdef=graphdef, tx=tx, loss_cfg=dict(config.model.loss))
    rng = np.random.default_rng(0)
    batch = {  # uint8 frames, normalised inside the step, as the trainer feeds them
        "video": rng.integers(0, 256, (batch_size, frames, size, size, 3), np.uint8),
        "label": rng.integers(0, config.model.num_classes, batch_size).astype(np.int32),
        "mask": np.ones(batch_size, bool),
    }
    args = [state, jax.device_put(batch)]
    t0 = time.perf_counter()
    compiled = jax.jit(step, donate_argnums=0).lower(*args).compile()
    compile_s = time.perf_counter() - t0
    n_ynn = compiled.as_text().count('"__ynn_fusion"')
    times, loss = [], None
    for i in range(_WARMUP.value + _STEPS.value):
        t0 = time.perf_counter()
        out = compiled(*args)
        jax.block_until_ready(out)
        if i >= _WARMUP.value:
            times.append(time.perf_counter() - t0)
        args[0] = out[0]
        loss = float(out[1]["loss"])
    print(json.dumps(dict(
        compile_s=compile_s, times=times, loss=loss, ynn_fusions=n_ynn,
        status=cpu_numerics.status, shape=[batch_size, frames, size],
    )), flush=True)  # fmt: skip


def _run(model: str, setting: str) -> dict:
    env = dict(os.environ)
    kept = [t for t in env.get("XLA_FLAGS", "").split() if _OFF_FLAG.rstrip("=") not in t]
    env.pop("GRACE_JAX_KEEP_YNN_FUSION", None)
    if setting == "on":
        env["GRACE_JAX_KEEP_YNN_FUSION"] = "1"
    elif setting == "off":
        kept.append(_OFF_FLAG)
    elif setting == "noreduce":
        kept.append(_OFF_FLAG + "-reduce")
    else:
        raise app.UsageError(f"unknown setting {setting!r}")
    env["XLA_FLAGS"] = " ".join(kept)
    env.setdefault("JAX_PLATFORMS", "cpu")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [_REPO, env.get("PYTHONPATH")]))
    argv = [sys.executable, os.path.abspath(__file__), f"--child={model}",
            f"--batch={_BATCH.value}", f"--frames={_FRAMES.value}",
            f"--steps={_STEPS.value}", f"--warmup={_WARMUP.value}"]  # fmt: skip
    proc = subprocess.run(argv, check=False, env=env, capture_output=True, text=True, cwd=_REPO)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{model}/{setting}: exit {proc.returncode}\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1])


def main(argv):
    del argv
    if _CHILD.value:
        _child(_CHILD.value)
        return
    import jax
    import jaxlib

    load = os.getloadavg()
    print(
        f"jax {jax.__version__} / jaxlib {jaxlib.__version__}, {os.cpu_count()} CPUs, "
        f"{_ROUNDS.value} rounds x {_STEPS.value} steps per setting; "
        f"load average at start {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}",
        flush=True,
    )
    rows = []
    for model in _MODELS.value:
        settings = _SETTINGS.value
        res = {setting: [] for setting in settings}
        for r in range(_ROUNDS.value):
            for setting in settings if r % 2 == 0 else settings[::-1]:
                out = _run(model, setting)
                res[setting].append(out)
                print(f"  {model} {setting}: compile {out['compile_s']:.1f}s, steps "
                      + " ".join(f"{t:.3f}" for t in out["times"])
                      + f"s, {out['ynn_fusions']} ynn fusions, loss {out['loss']:.4f}",
                      flush=True)  # fmt: skip
        stats = {}
        for setting, outs in res.items():
            times = [t for o in outs for t in o["times"]]
            stats[setting] = dict(
                med=statistics.median(times), lo=min(times),
                compile=statistics.median(o["compile_s"] for o in outs),
                ynn=outs[0]["ynn_fusions"], loss=outs[0]["loss"], shape=outs[0]["shape"],
            )  # fmt: skip
        rows.append((model, stats))
    load = os.getloadavg()
    header = ("model", "batch x frames x px", "ynn fusion", "ynn fusions", "compile s",
              "step s (median)", "step s (min)", "x on (median)", "x on (min)", "loss")  # fmt: skip
    print()
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for model, s in rows:
        shape = "x".join(map(str, next(iter(s.values()))["shape"]))
        base = s.get("on")
        for setting, x in s.items():
            ratio = (f"{x['med'] / base['med']:.2f} | {x['lo'] / base['lo']:.2f}"
                     if base is not None and setting != "on" else " | ")  # fmt: skip
            print(f"| {model} | {shape} | {setting} | {x['ynn']} | {x['compile']:.1f} | "
                  f"{x['med']:.3f} | {x['lo']:.3f} | {ratio} | {x['loss']:.4f} |")  # fmt: skip
    print(f"\nload average at end {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}")


if __name__ == "__main__":
    app.run(main)
