r"""Trains and evaluates GRACE.

  python -m grace_jax.main --config=configs/demo.py --workdir=runs/demo
  python -m grace_jax.main --config=configs/dfew.py:fold=3 --workdir=runs/dfew3 \
      --config.data.dir=/data/shards/dfew3 --config.model.clip.init=openai/clip-vit-base-patch16

Every config field can be overridden on the command line as --config.a.b=value. Re-running with the
same --workdir resumes from its latest checkpoint.
"""

from absl import app, flags
from ml_collections import config_flags

from grace_jax import train
from grace_jax.infra import cli

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where checkpoints, metrics and plots go.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    train.train_and_evaluate(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
    cli.run(main)
