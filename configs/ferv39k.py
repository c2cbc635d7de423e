r"""FERV39k (7 classes, one train/test split), GRACE with CLIP ViT-B/16 from OpenAI's weights.

  python -m data_prep.build_dataset --dataset=ferv39k --root=/data/FERV39k --out=/data/shards/ferv39k
  python -m grace_jax.main --config=configs/ferv39k.py --workdir=gs://bucket/ferv39k

CLIP starts from openai/clip-vit-base-patch16 (the hub cache, or fetched); offline,
--config.model.clip.init=<folder or OpenAI .pt>. On devices with less memory:
--config.optim.grad_accum_steps=4 (the trainer names the value that fits before step 1).

What is DFER-CLIP's (its official main.py and train_*.sh; configs/dferclip.py is all of it)
and what is GRACE's own, with the reason for each difference (tests/recipe_table_test.py checks every row
against this config and the dferclip ablation):

| field | GRACE (here) | DFER-CLIP | why GRACE differs |
|---|---|---|---|
| model.clip.variant | ViT-B/16 | ViT-B/32 | token-level OT localizes on the patch grid: 14x14 tokens a frame, not 7x7 |
| model.clip.init | openai/clip-vit-base-patch16 | openai/clip-vit-base-patch32 | OpenAI's weights of that variant |
| data.normalize | clip | unit | CLIP was pretrained on mean/std-normalized input; DFER-CLIP feeds [0,1] |
| data.augment | grace | dferclip | train segments span the whole clip (DFER-CLIP's never reach its last n mod 16 frames); eval takes a centre square instead of stretching the frame |
| model.prompt.text | name | cue | CATE already brings the cue sentences in as the fine text |
| model.clip.dtype | auto | float32 | bf16 on GPU/TPU halves activation memory; float32 on CPU |
| model.motion.enabled | True | False | GRACE's model: motion weighting, CATE and OT |
| seed | 0 | 1 | none: PyTorch's random streams are not reproduced either way |
| data.brightness | 0.0 | 0.0 | same |
| data.rotation_degrees | 4.0 | 4.0 | same |
| optim.batch_size | 48 | 48 | same (optim.grad_accum_steps keeps it on small devices) |
| optim.num_epochs | 50 | 50 | same; SGD 0.9, wd 1e-4, lr 1e-5 / 1e-2 / 1e-3, x0.1 at 30 and 40 |
| model.num_frames | 16 | 16 | same |

Checkpoint selection: DFER-CLIP keeps the epoch with the best test WAR; the trainer keeps the best UAR
in checkpoints/best and records the best-WAR evaluation too (final_metrics.json); grace_jax.folds
reports both, and the last. Memory: batch 48 of 16 frames at ViT-B/16 needs ~41 GiB per device at 16
clips a device (README, "Performance"); before step 1 the trainer checks the step against the device
and names the optim.grad_accum_steps that fits (the same step in micro-batches).
"""

from grace_jax.configs import base


def get_config(arg: str | None = None):
    del arg
    c = base.get_config()
    c.model.num_classes = 7
    c.data.dir = "/data/shards/ferv39k"
    c.data.rotation_degrees = 4.0  # DFER-CLIP's FERV39k train transform: RandomRotation(4)
    return c
