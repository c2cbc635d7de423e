"""Ablation `grace`: full GRACE, with motion weighting, CATE and token-level OT all on.

Same training recipe as configs/base.py; only the GRACE switches differ. Run:
  python -m grace_jax.main --config=configs/ablations/grace.py --workdir=runs/grace \\
      --config.data.dir=/data/shards/dfew_fold1
"""

from __future__ import annotations

import ml_collections

from configs import base


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    config = base.get_config(arg)
    config.model.motion.enabled = True
    config.model.cate.enabled = True
    config.model.ot.enabled = True
    return config
