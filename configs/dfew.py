r"""DFEW (7 classes, 5-fold cross-validation), GRACE with CLIP ViT-B/16: DFER-CLIP's recipe.

Build each fold's shards once, then train one run per fold:

  python -m data_prep.build_dataset --dataset=dfew --root=/data/DFEW --fold=3 \
      --out=/data/shards/dfew_fold3
  python -m grace_jax.main --config=configs/dfew.py:fold=3 --workdir=runs/dfew3 \
      --config.model.clip.init=openai/clip-vit-base-patch16

`fold` (1..5) picks `data.dir = /data/shards/dfew_fold<fold>`; override --config.data.dir to read
elsewhere. Report the protocol as mean +- std over the five folds' UAR/WAR.
"""

from configs import base


def get_config(arg: str | None = None):
    fold = _fold(arg, "dfew")
    c = base.get_config()
    c.model.num_classes = 7
    c.data.fold = fold
    c.data.dir = f"/data/shards/dfew_fold{fold}"
    return c


def _fold(arg: str | None, name: str) -> int:
    """Parses 'fold=N' (N in 1..5); no argument means fold 1."""
    if not arg:
        return 1
    key, _, value = arg.partition("=")
    if key != "fold" or not value.isdigit() or not 1 <= int(value) <= 5:
        raise ValueError(f"configs/{name}.py takes 'fold=N' with N in 1..5, got {arg!r}.")
    return int(value)
