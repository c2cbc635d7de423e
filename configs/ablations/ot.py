"""Ablation `ot` (+OT): DFER-CLIP + token-level OT between the coarse
prompt's words and all patch tokens, with uniform marginals.

Same training recipe as configs/base.py; only the GRACE switches differ. Run:
  python -m grace_jax.main --config=configs/ablations/ot.py --workdir=runs/ot \\
      --config.data.dir=/data/shards/dfew_fold1
"""

from __future__ import annotations

import ml_collections

from configs import base


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    config = base.get_config(arg)
    config.model.motion.enabled = False
    config.model.cate.enabled = False
    config.model.ot.enabled = True
    return config
