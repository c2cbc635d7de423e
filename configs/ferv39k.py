r"""FERV39k (7 classes, one train/test split), GRACE with CLIP ViT-B/16.

  python -m data_prep.build_dataset --dataset=ferv39k --root=/data/FERV39k --out=/data/shards/ferv39k
  python -m grace_jax.main --config=configs/ferv39k.py --workdir=gs://bucket/ferv39k \
      --config.model.clip.init=openai/clip-vit-base-patch16 --config.optim.batch_size=64
"""

from configs import base


def get_config(arg: str | None = None):
    del arg
    c = base.get_config()
    c.model.num_classes = 7
    c.data.dir = "/data/shards/ferv39k"
    return c
