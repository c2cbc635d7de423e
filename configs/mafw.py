r"""MAFW (11 classes, 5-fold cross-validation, per-clip English descriptions), full GRACE.

  python -m data_prep.build_dataset --dataset=mafw --root=/data/MAFW --fold=1 \
      --captions=/data/MAFW/captions.tsv --out=/data/shards/mafw_fold1
  python -m grace_jax.main --config=configs/mafw.py:fold=1 --workdir=runs/mafw1 \
      --config.model.clip.init=openai/clip-vit-base-patch16

MAFW ships a description per clip, so CATE's clip-caption alignment is on here
(`model.cate.captions=True`).
"""

from configs import base, dfew


def get_config(arg: str | None = None):
    fold = dfew._fold(arg, "mafw")  # noqa: SLF001 -- one parser for both k-fold configs
    c = base.get_config()
    c.model.num_classes = 11
    c.model.cate.captions = True
    c.data.fold = fold
    c.data.dir = f"/data/shards/mafw_fold{fold}"
    return c
