"""grace_jax.interop.dferclip_layout: the prompts' token ids come back from the prompt learner's
buffers, and rows from another vocabulary are named. The whole layout is tested on a checkpoint saved
as DFER-CLIP saves it in dferclip_test.py."""

from __future__ import annotations

import numpy as np
import pytest

from grace_jax.interop import dferclip_layout
from grace_jax.interop.torch_pickle import ConversionError


def test_recover_token_ids_rejects_rows_from_another_vocabulary():
    rng = np.random.default_rng(0)
    table = rng.normal(size=(50, 4)).astype(np.float32)
    prefix, suffix = table[[48]][None], table[[3, 7, 49, 0, 0]][None]
    rows, ids = dferclip_layout.recover_token_ids(prefix, suffix, table)
    assert rows == [[48, 3, 7, 49]] and ids.tolist() == [[48, 3, 7, 49, 0, 0]]
    with pytest.raises(ConversionError, match="token_suffix position 1 of class 0"):
        dferclip_layout.recover_token_ids(prefix, suffix + np.array([0, 0.5, 0, 0, 0])[None, :, None], table)


def test_the_key_list_counts_every_block_of_every_tower():
    keys = dferclip_layout.dferclip_keys(vision_layers=2, text_layers=3, temporal_layers=1)
    assert len(keys) == len(set(keys))
    assert "clip_model_.visual.transformer.resblocks.1.mlp.c_proj.bias" in keys
    assert "clip_model_.visual.transformer.resblocks.2.ln_1.weight" not in keys
    assert "text_encoder.transformer.resblocks.2.attn.in_proj_weight" in keys  # a view, listed too
    assert sum(k.startswith(dferclip_layout.TEMPORAL_PREFIX) for k in keys) == len(dferclip_layout.TEMPORAL)
