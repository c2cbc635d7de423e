r"""How sharp the transport plan is at each epsilon, on CLIP-scale costs and on a trained model.

  python benchmarks/epsilon_sweep.py                                   # part A only, ~1 min
  python benchmarks/epsilon_sweep.py --workdir=runs/ablations/hard/grace/seed0 \
      --data_dir=runs/ablations/hard/synthfer                          # and part B on that run

Part A: 30 text tokens against 3136 visual tokens (ViT-B/16 x 16 frames), uniform text mass, a
motion-like visual prior, cosines 0.2 + s * N(0, 1) for spreads s of CLIP's patch-word cosines. For
each epsilon setting: the plan's mutual information (KL to the independent coupling of its marginals,
nats; 0 = every word spreads its mass over the tokens alike, so the OT score is a pooled cosine), the
entropy of the visual mass (nats; log 3136 = 8.05 is uniform) and the OT score minus the independent
coupling's score. An absolute epsilon sharpens with the spread; a relative one (in units of the
cost's standard deviation) keeps the plan equally sharp at any scale of the cosines.

Part B: the trained run evaluated on the test split of `--data_dir` (SynthFER with ground truth) with
each epsilon setting in place of its own (nothing retrained): UAR, mutual information, and the
predicted class map's share of mass on expression tokens.
"""

from __future__ import annotations

import copy
import functools
import subprocess
import time

import numpy as np
from absl import app, flags

_WORKDIR = flags.DEFINE_string("workdir", None, "A trained run for part B (optional).")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "Its SynthFER shards with ground truth.")
_RELATIVE = (0.125, 0.25, 0.5, 1.0, 2.0)
_ABSOLUTE = (0.05, 0.1)


def _settings():
    return [("absolute", e) for e in _ABSOLUTE] + [("relative", e) for e in _RELATIVE]


def part_a() -> None:
    import jax
    import jax.numpy as jnp

    from grace_jax.models import alignment

    rng = np.random.default_rng(0)
    n, k = 30, 3136
    a = jnp.full((n,), 1 / n, jnp.float32)
    b = jax.nn.softmax(jnp.asarray(rng.normal(size=k) * 1.5, jnp.float32))
    print("\nPart A: 30 x 3136 tokens, cos = 0.2 + s N(0,1); balanced (tau_visual 1) and semi-relaxed (0.5)")
    print(
        "| cos spread s | epsilon | tau_visual | mutual information (nats) | visual entropy (nats) | "
        "OT - independent score |"
    )
    print("|---|---|---|---|---|---|")
    for s in (0.03, 0.05, 0.1, 0.3):
        cos = jnp.asarray(0.2 + s * rng.normal(size=(n, k)), jnp.float32)
        independent = float(jnp.sum(a[:, None] * b[None] * cos))
        for kind, eps in _settings():
            for tau in (1.0, 0.5):
                res = jax.jit(
                    functools.partial(
                        alignment.solve_ot,
                        epsilon=eps,
                        relative_epsilon=kind == "relative",
                        tau_b=tau,
                        max_iterations=2000,
                        threshold=1e-4,
                    )
                )(1.0 - cos, a, b)
                stats = alignment.plan_statistics(plan=res.plan)
                score = float(jnp.sum(res.plan * cos))
                print(
                    f"| {s} | {eps} {kind} (= {float(res.epsilon):.3g}) | {tau} | "
                    f"{float(stats['mutual_information']):.3f} | {float(stats['visual_entropy']):.2f} | "
                    f"{score - independent:+.4f} |"
                )


def part_b(workdir: str, data_dir: str) -> None:
    import jax

    from grace_jax import localization, metrics, sharding, steps
    from grace_jax import state as state_lib
    from grace_jax.data import input_pipeline
    from grace_jax.run import runs

    run = runs.load(workdir, "last")
    mesh = sharding.make_mesh({"data": -1})
    print(f"\nPart B: {workdir} (step {run.step}) on {data_dir} test, epsilon replaced at evaluation")
    print("| epsilon | UAR | mutual information (nats) | class map share on expression tokens | uniform |")
    print("|---|---|---|---|---|")
    for kind, eps in _settings() + [("run's own", None)]:
        config = copy.deepcopy(run.config)
        if eps is not None:
            config.model.ot.epsilon = eps
            config.model.ot.relative_epsilon = kind == "relative"
        graphdef, _, _ = state_lib.create_state(config, state_lib.load_tokenizer(config.model), steps_per_epoch=1)
        eval_fn = jax.jit(
            functools.partial(
                steps.eval_step,
                graphdef=graphdef,
                loss_cfg=dict(config.model.loss),
                num_classes=config.model.num_classes,
                normalize=config.data.normalize,
            )
        )
        loader = input_pipeline.make_eval_loader(
            data_dir,
            config.data,
            split="test",
            global_batch_size=50,
            worker_count=0,
            normalize_on_host=False,
            ground_truth=True,
        )
        confusion, _, extras = steps.evaluate(
            eval_fn, run.state, loader, mesh, config.model.num_classes, run.class_names
        )
        uar = metrics.summarize(confusion=confusion, class_names=run.class_names)["uar"]
        loc = extras.get("localization", {}).get("predicted_class_map", {})
        label = f"{eps} {kind}" if eps is not None else f"{config.model.ot.epsilon} (run's own)"
        print(
            f"| {label} | {uar:.3f} | {extras['ot'].get('ot_mutual_information', float('nan')):.3f} | "
            f"{loc.get('share', float('nan')):.3f} | {loc.get('chance', float('nan')):.3f} |"
        )
    del localization


def main(argv):
    del argv
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    print(f"# python benchmarks/epsilon_sweep.py (commit {commit}, {time.strftime('%Y-%m-%d')})")
    part_a()
    if _WORKDIR.value:
        part_b(_WORKDIR.value, _DATA_DIR.value)


if __name__ == "__main__":
    app.run(main)
