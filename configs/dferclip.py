r"""DFER-CLIP (Zhao & Liu, BMVC 2023) as its official code trains it: the `dferclip` recipe.

Motion weighting, CATE and OT are off, and every setting follows DFER-CLIP's main.py and its
train_DFEW.sh / train_FERV39k.sh / train_MAFW.sh (read from the official code, not from the paper):

- CLIP ViT-B/32 (main.py loads "ViT-B/32"), float32;
- prompts: 8 class-specific learnable contexts, then a descriptive sentence per class
  (``--text-type class_descriptor``): ``model.prompt.text="cue"``; grace_jax's own sentences from
  grace_jax/text/class_cues.py unless ``model.class_cues`` gives others (e.g. DFER-CLIP's own, verbatim);
- one temporal layer, 8 heads x 64, MLP 1024, tanh GELU; logits = cos / 0.01;
- SGD momentum 0.9, weight decay 1e-4 on every trained parameter; lr 1e-2 for the temporal model,
  1e-5 for the image tower, 1e-3 for the contexts; text tower frozen; batch 48; 50 epochs; x0.1 at
  epochs 30 and 40; seed 1 (its scripts' --seed; the random streams differ from PyTorch's anyway);
- input in [0,1] without CLIP's mean/std; DFER-CLIP's own crop and flip and, at evaluation, a resize
  of the whole frame to 224x224; brightness jitter 0.5 for DFEW, rotation up to 4 degrees for
  FERV39k, neither for MAFW (dataloader/video_dataloader.py).

The argument picks the dataset (and fold) as configs/dfew.py, ferv39k.py and mafw.py do:

  python -m grace_jax.main --config=configs/dferclip.py:dfew,fold=3 --workdir=runs/dfc_dfew3
  python -m grace_jax.main --config=configs/dferclip.py:ferv39k --workdir=runs/dfc_ferv39k
  python -m grace_jax.main --config=configs/dferclip.py:mafw,fold=2 --workdir=runs/dfc_mafw2

No argument means DFEW fold 1; CLIP starts from openai/clip-vit-base-patch32 (the Hugging Face copy of
what DFER-CLIP's clip.load("ViT-B/32") downloads). DFER-CLIP itself keeps the checkpoint with the best
test accuracy (WAR) and reports that checkpoint's UAR and WAR; grace_jax's trainer keeps the best by UAR and
records the best-WAR evaluation beside it (final_metrics.json "best_war"; grace_jax.folds reports both).
All five folds in one command: python -m grace_jax.kfold --config=configs/dferclip.py:dfew
--workdir=runs/dfc_dfew.
"""

from __future__ import annotations

import ml_collections

from grace_jax.configs import base, dfew, ferv39k, mafw

_DATASETS = {"dfew": dfew, "ferv39k": ferv39k, "mafw": mafw}
# Per-dataset train transforms of DFER-CLIP's train_data_loader: (brightness, rotation degrees).
_JITTER = {"dfew": (0.5, 0.0), "ferv39k": (0.0, 4.0), "mafw": (0.0, 0.0)}


def _parse(arg: str | None) -> tuple[str, str | None]:
    """'dfew[,fold=N]' | 'ferv39k' | 'mafw[,fold=N]' -> (dataset, the dataset config's argument)."""
    if not arg:
        return "dfew", None
    dataset, _, rest = arg.partition(",")
    if dataset not in _DATASETS:
        raise ValueError(f"configs/dferclip.py takes 'dfew[,fold=N]', 'ferv39k' or 'mafw[,fold=N]', got {arg!r}.")
    if rest and dataset == "ferv39k":
        raise ValueError(f"FERV39k has one split and takes no fold, got {arg!r}.")
    return dataset, rest or None


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    dataset, dataset_arg = _parse(arg)
    c = _DATASETS[dataset].get_config(dataset_arg)

    m = c.model
    m.clip.variant = "ViT-B/32"
    m.clip.init = base.OPENAI_CLIP["ViT-B/32"]  # what DFER-CLIP's clip.load("ViT-B/32") downloads
    m.clip.dtype = "float32"
    m.motion.enabled = False
    m.cate.enabled = False
    m.cate.captions = False  # DFER-CLIP reads no per-clip text (mafw.py turns captions on)
    m.ot.enabled = False
    m.loss.ce_weight = 1.0  # nn.CrossEntropyLoss, nothing else
    m.loss.ot_weight = 0.0
    m.loss.motion_weight = 0.0
    m.loss.align_weight = 0.0
    m.loss.label_smoothing = 0.0
    m.logit_scale = 100.0
    m.num_frames = 16
    m.prompt.text = "cue"
    m.prompt.n_ctx = 8
    m.prompt.class_specific = True
    m.prompt.init_std = 0.02
    m.temporal.depth = 1
    m.temporal.heads = 8
    m.temporal.dim_head = 64
    m.temporal.mlp_dim = 1024

    d = c.data
    d.image_size = 224
    d.normalize = "unit"
    d.augment = "dferclip"
    d.crop_scale = (0.08, 1.0)
    d.flip_probability = 0.5
    d.brightness, d.rotation_degrees = _JITTER[dataset]

    o = c.optim
    o.optimizer = "sgd"
    o.momentum = 0.9
    o.weight_decay = 1e-4
    o.batch_size = 48
    o.num_epochs = 50
    o.num_train_steps = -1
    o.lr_decay_epochs = (30, 40)
    o.lr_decay = 0.1
    o.warmup_steps = 0
    # main.py's three SGD groups; everything else (the text tower, CLIP's unused logit_scale) is
    # frozen there by requires_grad=False, here by lr 0. The catch-all holds only the temporal model
    # in this ablation (it would also take GRACE's modules if one is switched back on).
    o.groups = (
        ("clip/text_model/.*|clip/text_projection/.*|clip/logit_scale", 0.0),
        ("clip/vision_model/.*|clip/visual_projection/.*", 1e-5),
        ("prompts/.*", 1e-3),
        (".*", 1e-2),
    )
    c.seed = 1
    return c
