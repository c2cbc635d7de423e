r"""Trains and evaluates GRACE.

  python -m grace_jax.main --config=configs/demo.py --workdir=runs/demo
  python -m grace_jax.main --config=configs/dfew.py:fold=3 --workdir=runs/dfew3 \
      --config.data.dir=/data/shards/dfew3 --config.model.clip.init=openai/clip-vit-base-patch16

Every config field can be overridden on the command line as --config.a.b=value. Re-running with the
same --workdir resumes from its latest checkpoint.

Exit status: 0 when training ends or is preempted (SIGTERM: the step reached is saved); 130 after
Ctrl-C (the step reached saved too); 1 for an error. Each stop ends with one line saying which step
is saved and that the same command resumes from it (grace_jax/run/stops.py).
"""

import signal

from absl import app, flags
from ml_collections import config_flags

from grace_jax import train
from grace_jax.infra import cli, paths
from grace_jax.run import stops

# Imported as "__mp_main__" in the data loader's worker processes (multiprocessing spawns them and
# imports the main module first): a terminal's Ctrl-C reaches the whole process group, and stopping
# the workers is the trainer's part (it closes its loaders), not a KeyboardInterrupt traceback each.
if __name__ == "__mp_main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where checkpoints, metrics and plots go.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    try:
        train.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
    except KeyboardInterrupt as e:  # Ctrl-C: not a failure, no traceback
        if not isinstance(e, stops.Interrupted):  # before the trainer watched for it, or a second one
            ckpt_dir = paths.join(paths.resolve(_WORKDIR.value), "checkpoints")
            notes = getattr(e, "__notes__", None) or [
                "Interrupted (Ctrl-C): " + stops.where_it_resumes(ckpt_dir, stops.saved_step(ckpt_dir))
            ]
            print(notes[-1], flush=True)
        return stops.EXIT_CODES["SIGINT"]
    return 0


if __name__ == "__main__":
    cli.run(main)
