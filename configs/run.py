r"""The config a run was made with: `<run>/config.json` (a training run, or one written by
grace_jax.convert), as a config file.

Fine-tune a converted DFER-CLIP checkpoint, or continue any run with its own settings:

  python -m grace_jax.main --config=configs/run.py:runs/dferclip_dfew1 --workdir=runs/dferclip_dfew1 \
      --config.data.dir=/data/shards/dfew_fold1 --config.optim.num_epochs=10

The argument is the run directory (local or gs://). Overrides work as with any config. With the
run's own directory as --workdir, training continues from its latest checkpoint (step 0 for a
converted run); with another one it starts from scratch with the same settings.
"""

from __future__ import annotations

import json

import ml_collections


def _tuples(value):
    """JSON lists back to the tuples configs are written with, so --config overrides type-check."""
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    if isinstance(value, dict):
        return {k: _tuples(v) for k, v in value.items()}
    return value


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    from grace_jax.infra import config_upgrade, errors, paths

    if not arg:
        raise errors.UsageError("configs/run.py needs the run directory: --config=configs/run.py:<workdir>")
    path = paths.join(paths.resolve(arg), "config.json")
    if not paths.exists(path):
        raise errors.NotFoundError(f"{path}: not found; configs/run.py:<dir> needs a grace_jax run.")
    # A run made before some of the current fields: the values it used (grace_jax/infra/config_upgrade.py).
    return ml_collections.ConfigDict(_tuples(config_upgrade.upgrade(json.loads(paths.read_text(path)))))
