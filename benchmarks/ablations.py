r"""GRACE's modules one by one on SynthFER: accuracy and localization against ground truth, over seeds.

  python benchmarks/ablations.py                                  # everything below, ~2 h on 2 cores
  python benchmarks/ablations.py --variants=hard --models=grace,all_off --seeds=0,1,2 --epochs=8

For each SynthFER variant (standard, hard) the dataset is built once (train and test with ground
truth, data_prep.build_dataset), then `configs/demo.py` trains every model below with each seed into
<out>/<variant>/<model>/seed<k> (a finished run is reused), and its last evaluation is read back:

  grace       everything on (learned motion weighting, CATE, semi-relaxed class OT)
  no_motion   motion weighting off (uniform visual prior, no motion pooling)
  no_cate     CATE off (OT's text side: the coarse prompt's words)
  no_ot       token-level OT off (no class maps: global logits only)
  all_off     motion, CATE and OT off: DFER-CLIP's architecture
  fixed_prior motion weighting fixed (pixel softmax, robust normalisation) instead of learned
  balanced    the earlier model: fixed clip-max prior (alpha 0.1, top 64 tokens) as the hard visual
              marginal, absolute epsilon 0.1

Printed per variant: UAR and WAR (mean +- sample std over seeds), and for models with class maps the
mass of the predicted class's map on expression tokens (share), its pointing game, the motion
weights' share, the fixed pixel prior's share and the expression tokens' own share (uniform), averaged
over non-neutral classes; then per class for `grace`; and the face-crop jump check: every test clip's
middle frame moved 2 px, the change of the class map's share (mean |after - before| over clips).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
from absl import app, flags

_VARIANTS = flags.DEFINE_list("variants", ["standard", "hard"], "SynthFER variants.")
_MODELS = flags.DEFINE_list(
    "models", ["grace", "no_motion", "no_cate", "no_ot", "all_off", "fixed_prior", "balanced"], "Models."
)
_SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], "Training seeds.")
_EPOCHS = flags.DEFINE_integer("epochs", 15, "Epochs per run (configs/demo.py: 15).")
_OUT = flags.DEFINE_string("out", "runs/ablations", "Output folder.")
_TRAIN = flags.DEFINE_integer("train_clips", 1400, "SynthFER train clips.")
_TEST = flags.DEFINE_integer("test_clips", 350, "SynthFER test clips.")

MODELS = {
    "grace": [],
    "no_motion": ["--config.model.motion.enabled=False", "--config.model.motion.top_k=0"],
    "no_cate": ["--config.model.cate.enabled=False"],
    "no_ot": ["--config.model.ot.enabled=False", "--config.model.loss.ot_weight=0"],
    "all_off": [
        "--config.model.motion.enabled=False",
        "--config.model.motion.top_k=0",
        "--config.model.cate.enabled=False",
        "--config.model.ot.enabled=False",
        "--config.model.loss.ot_weight=0",
    ],
    "fixed_prior": ["--config.model.motion.weighting=fixed"],
    "balanced": [
        "--config.model.motion.weighting=fixed",
        "--config.model.motion.normalize=clip_max",
        "--config.model.motion.alpha=0.1",
        "--config.model.motion.top_k=64",
        "--config.model.ot.tau_visual=1.0",
        "--config.model.ot.relative_epsilon=False",
        "--config.model.ot.epsilon=0.1",
    ],
}


def _build(variant: str, out: str) -> str:
    data = os.path.join(out, variant, "synthfer")
    if not os.path.exists(os.path.join(data, "manifest.json")):
        subprocess.run(
            [
                sys.executable,
                "-m",
                "data_prep.build_dataset",
                "--dataset=synth",
                f"--out={data}",
                f"--synth_train={_TRAIN.value}",
                f"--synth_test={_TEST.value}",
                "--synth_seed=0",
                "--frame_size=48",
                f"--synth_variant={variant}",
                f"--workers={os.cpu_count() or 1}",
            ],
            check=True,
        )
    return data


def _train(variant: str, model: str, seed: int, data: str, out: str) -> str:
    workdir = os.path.join(out, variant, model, f"seed{seed}")
    if not os.path.exists(os.path.join(workdir, "final_metrics.json")):
        epochs = _EPOCHS.value
        decay = f"({max(epochs * 2 // 3, 1)},{max(epochs * 13 // 15, 1)})"
        command = [
            sys.executable,
            "-m",
            "grace_jax.main",
            "--config=configs/demo.py",
            f"--workdir={workdir}",
            f"--config.data.dir={data}",
            f"--config.seed={seed}",
            f"--config.optim.num_epochs={epochs}",
            f"--config.optim.lr_decay_epochs={decay}",
            f"--config.train.eval_every_epochs={epochs}",
            *MODELS[model],
        ]
        start = time.perf_counter()
        os.makedirs(os.path.dirname(workdir), exist_ok=True)
        with open(workdir + ".log", "w") as log:
            subprocess.run(command, check=True, stdout=log, stderr=subprocess.STDOUT)
        print(f"  trained {variant}/{model}/seed{seed} in {time.perf_counter() - start:.0f} s", flush=True)
    return workdir


def _jump_effect(workdir: str, data: str, pixels: int = 2) -> float | None:
    """Mean over test clips with expression tokens of |share(jumped) - share(original)| for the
    predicted class's map, the middle frame moved `pixels` px (ground truth of the original clip)."""
    import functools

    import jax
    import jax.numpy as jnp
    from flax import nnx

    from grace_jax import localization
    from grace_jax.data import input_pipeline
    from grace_jax.run import runs

    run = runs.load(workdir, "last")
    config = run.config
    if not config.model.ot.enabled:
        return None
    model_patch = nnx.merge(run.graphdef, run.state["params"], run.state["frozen"], run.state["rest"]).patch_size

    @functools.partial(jax.jit, static_argnames="jump")
    def shares(state, batch, jump):
        model = nnx.merge(run.graphdef, state["params"], state["frozen"], state["rest"])
        video = batch["video"]
        if jump:
            video = localization.shift_frame(video.astype(jnp.float32), video.shape[1] // 2, pixels)
        _, aux = model(input_pipeline.normalize_on_device(video, config.data.normalize))
        mask = localization.expression_mask(
            expression=batch["gt_expression"], distractor=batch["gt_distractor"], patch_size=model_patch
        )
        r = localization.localization(maps=aux["ot_visual_mass"], mask=mask)
        return r["share"], r["valid"] & batch["mask"]

    loader = input_pipeline.make_eval_loader(
        data,
        config.data,
        split="test",
        global_batch_size=50,
        worker_count=0,
        normalize_on_host=False,
        ground_truth=True,
    )
    diffs = []
    for batch in loader:
        before, valid = shares(run.state, batch, False)
        after, _ = shares(run.state, batch, True)
        diffs.extend(np.abs(np.asarray(after) - np.asarray(before))[np.asarray(valid)].tolist())
    return float(np.mean(diffs))


def _stat(values) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    return f"{np.mean(values):.3f} +- {np.std(values, ddof=1) if len(values) > 1 else 0.0:.3f}"


def main(argv):
    del argv
    out = _OUT.value
    seeds = [int(s) for s in _SEEDS.value]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    results = {}
    for variant in _VARIANTS.value:
        data = _build(variant, out)
        for model in _MODELS.value:
            for seed in seeds:
                workdir = _train(variant, model, seed, data, out)
                final = json.load(open(os.path.join(workdir, "final_metrics.json")))["last"]
                loc = final.get("localization", {})
                jump = _jump_effect(workdir, data) if model in ("grace", "balanced", "fixed_prior") else None
                results.setdefault(variant, {}).setdefault(model, []).append(
                    {"uar": final["uar"], "war": final["war"], "loc": loc, "jump": jump}
                )
    json.dump(results, open(os.path.join(out, "results.json"), "w"), indent=1)

    print(
        f"\n# python benchmarks/ablations.py --variants={','.join(_VARIANTS.value)} "
        f"--models={','.join(_MODELS.value)} --seeds={_SEEDS.value and ','.join(_SEEDS.value)} "
        f"--epochs={_EPOCHS.value}  (commit {commit}, {time.strftime('%Y-%m-%d')}, {os.cpu_count()} CPU cores)"
    )
    for variant, models in results.items():
        print(
            f"\nSynthFER {variant}: mean +- sample std over {len(seeds)} seeds; shares = mass on expression "
            "tokens, mean over non-neutral classes"
        )
        print(
            "| model | seeds | UAR | WAR | class map share | pointing | weights share | pixel prior share | "
            "uniform | crop jump: share change |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|")
        for model, runs_ in models.items():

            def loc(name, key, runs_=runs_):
                return [r["loc"][name][key] for r in runs_ if name in r["loc"]]

            print(
                f"| {model} | {len(runs_)} | {_stat([r['uar'] for r in runs_])} | {_stat([r['war'] for r in runs_])} | "
                f"{_stat(loc('predicted_class_map', 'share'))} | {_stat(loc('predicted_class_map', 'pointing'))} | "
                f"{_stat(loc('motion_weights', 'share'))} | {_stat(loc('pixel_prior', 'share'))} | "
                f"{_stat(loc('pixel_prior', 'chance'))} | {_stat([r['jump'] for r in runs_])} |"
            )
        if "grace" in models:
            print(f"\n`grace` per class on {variant} (mean over seeds): class map share / pixel prior share / uniform")
            classes = models["grace"][0]["loc"].get("predicted_class_map", {}).get("per_class", {})
            print("| class | class map | pixel prior | uniform | class map / uniform |")
            print("|---|---|---|---|---|")
            for cls in classes:

                def per(name, key, cls=cls, grace_runs=models["grace"]):
                    return float(
                        np.mean(
                            [
                                r["loc"][name]["per_class"][cls][key]
                                for r in grace_runs
                                if cls in r["loc"][name]["per_class"]
                            ]
                        )
                    )

                share, chance = per("predicted_class_map", "share"), per("pixel_prior", "chance")
                print(
                    f"| {cls} | {share:.3f} | {per('pixel_prior', 'share'):.3f} | {chance:.3f} | "
                    f"{share / max(chance, 1e-9):.1f}x |"
                )


if __name__ == "__main__":
    app.run(main)
