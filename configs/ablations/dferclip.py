"""Ablation `dferclip`: the DFER-CLIP baseline (BMVC 2023), with motion weighting, CATE and OT all off.

Same training recipe as configs/base.py; only the GRACE switches differ. Run:
  python -m grace_jax.main --config=configs/ablations/dferclip.py --workdir=runs/dferclip \\
      --config.data.dir=/data/shards/dfew_fold1
"""

from __future__ import annotations

import ml_collections

from configs import base


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    config = base.get_config(arg)
    config.model.motion.enabled = False
    config.model.cate.enabled = False
    config.model.ot.enabled = False
    return config
