r"""The module ablations: configs/base.py's recipe with GRACE's three switches set by the argument.

  python -m grace_jax.main --config=configs/ablation.py:ot --workdir=runs/ot \
      --config.data.dir=/data/shards/dfew_fold1

| variant | motion | CATE | OT | what it is |
|---|---|---|---|---|
| grace | on | on | on | full GRACE (the default without an argument) |
| motion | on | off | off | DFER-CLIP + motion-difference weighting, pooled into the frame features |
| cate | off | on | off | DFER-CLIP + CATE: FACS cue tokens refined by the coarse prompts, in the class embedding |
| ot | off | off | on | DFER-CLIP + token-level OT between the prompt's words and all patch tokens, uniform marginals |

Everything else is configs/base.py's; every field can still be overridden on the command line.
DFER-CLIP's whole official recipe (ViT-B/32, its transforms and input scale) is configs/dferclip.py.
"""

from __future__ import annotations

import ml_collections

from grace_jax.configs import base

# variant -> (model.motion.enabled, model.cate.enabled, model.ot.enabled)
VARIANTS = {
    "grace": (True, True, True),
    "motion": (True, False, False),
    "cate": (False, True, False),
    "ot": (False, False, True),
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    variant = arg or "grace"
    if variant not in VARIANTS:
        raise ValueError(
            f"configs/ablation.py takes one of {', '.join(VARIANTS)} (e.g. --config=configs/ablation.py:ot), "
            f"got {arg!r}."
        )
    config = base.get_config()
    m = config.model
    m.motion.enabled, m.cate.enabled, m.ot.enabled = VARIANTS[variant]
    return config
