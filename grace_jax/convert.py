r"""Converts DFER-CLIP's trained checkpoints into grace_jax run directories.

  python -m grace_jax.convert dferclip --checkpoint=DFEW-set1-model_best.pth \
      --workdir=runs/dferclip_dfew1
  python -m grace_jax.evaluate --workdir=runs/dferclip_dfew1 --data_dir=/data/shards/dfew_fold1
  python -m grace_jax.predict --workdir=runs/dferclip_dfew1 my_clip.mp4

The .pth (saved by DFER-CLIP's main.py, github.com/zengqunzhao/DFER-CLIP) is read without running code
from it (`grace_jax.interop.torch_pickle`: a pickle naming anything beyond tensors, containers and
main.py's training-curve recorder is refused unread). Every size comes from the tensors, and the
prompts' token ids from the prompt learner's buffers (`grace_jax.interop.dferclip_layout`). The run
directory (`grace_jax.interop.dferclip`) holds `config.json` (the `dferclip` recipe,
configs/dferclip.py, with the checkpoint's sizes), `classes.json`, an orbax checkpoint at
step 0 in `checkpoints/last` and `conversion.json` (source, SHA-256, epoch, best accuracy, command).
Fine-tune it with `python -m grace_jax.main --config=configs/run.py:<workdir> --workdir=<workdir>
--config.data.dir=...`. PyTorch is needed for this one command only: `pip install -e '.[torch]'`.
"""

from __future__ import annotations

from grace_jax.interop import dferclip

FORMATS = ("dferclip",)


def main(argv):
    from absl import app

    if len(argv) != 2 or argv[1] not in FORMATS:
        raise app.UsageError(
            f"Usage: python -m grace_jax.convert {{{'|'.join(FORMATS)}}} --checkpoint=PATH.pth --workdir=RUN"
        )
    if not _CHECKPOINT.value or not _WORKDIR.value:
        raise app.UsageError("--checkpoint and --workdir are required.")
    info = dferclip.convert_dferclip(
        _CHECKPOINT.value,
        _WORKDIR.value,
        dataset=_DATASET.value or None,
        fold=_FOLD.value,
        tokenizer=_TOKENIZER.value,
        temporal_heads=_TEMPORAL_HEADS.value,
    )
    print(f"Converted {_CHECKPOINT.value} -> {_WORKDIR.value} ({info['recipe']}).")
    if info["epoch"] is not None:
        print(f"  DFER-CLIP epoch {info['epoch']}, best test accuracy {info['best_acc']}")
    if info["texts"]:
        for i, text in enumerate(info["texts"]):
            print(f"  class {i}: {text}")
    else:
        print("  prompt token ids recovered; no CLIP tokenizer at hand to show them as text "
              "(--tokenizer=DIR_OR_HUB_NAME)")  # fmt: skip


if __name__ == "__main__":
    from absl import flags

    from grace_jax.infra import cli

    _CHECKPOINT = flags.DEFINE_string("checkpoint", None, "DFER-CLIP .pth file.")
    _WORKDIR = flags.DEFINE_string("workdir", None, "Run directory to create (must not exist).")
    _DATASET = flags.DEFINE_enum(
        "dataset", "", ["", "dfew", "ferv39k", "mafw"],
        "Recipe for fine-tuning; default from the file name or the class count.",
    )  # fmt: skip
    _FOLD = flags.DEFINE_integer("fold", None, "DFEW/MAFW fold; default from the file name.")
    _TOKENIZER = flags.DEFINE_string(
        "tokenizer", None,
        "CLIP tokenizer to show the recovered sentences with; default openai/clip-vit-base-patch32.",
    )  # fmt: skip
    _TEMPORAL_HEADS = flags.DEFINE_integer(
        "temporal_heads", 8, "Temporal attention heads (DFER-CLIP: 8; not stored in checkpoints)."
    )
    cli.run(main)
