r"""Shares a trained (or converted) run as a Hugging Face style model folder.

  python -m grace_jax.export --workdir=runs/dfew3 --out=exports/grace-dfew3
  huggingface-cli upload your-name/grace-dfew3 exports/grace-dfew3
  python -m grace_jax.predict --model=your-name/grace-dfew3 clip.mp4

The folder holds `model.safetensors` (every variable of the model, no optimizer state, no pickle),
a self-contained `config.json` (loading needs no download and no tokenizer), `classes.json` and a
model card `README.md`; `grace_jax.interop.hf_export` describes it. `grace_jax.predict --model` and
`grace_jax.evaluate --model` read it back, from a folder or from the hub cache for a hub name.
"""

from __future__ import annotations

import shlex
import sys

from grace_jax.infra import cli
from grace_jax.interop import hf_export
from grace_jax.run import runs


def main(argv: list[str]) -> None:
    from absl import app

    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    out = hf_export.check_out_dir(_OUT.value)  # before loading: a taken --out is refused at once
    run = runs.load(_WORKDIR.value, _CHECKPOINT.value, kind="run")
    info = hf_export.export_run(
        run, out, name=_NAME.value, license_id=_LICENSE.value,
        command=shlex.join(["python", "-m", "grace_jax.export", *sys.argv[1:]]),
    )  # fmt: skip
    print(
        f"Wrote {info['out']} ({info['tensors']} tensors from the {info['checkpoint']} checkpoint, "
        f"step {info['step']}). Share it with:\n  huggingface-cli upload <you>/<model-name> "
        f"{info['out']}"
    )


if __name__ == "__main__":
    # Flags live here, not at import, so that other commands and tests can import this module.
    from absl import flags

    _WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (config.json, checkpoints).")
    _OUT = flags.DEFINE_string("out", None, "Model folder to write (must not exist).")
    _CHECKPOINT = flags.DEFINE_enum("checkpoint", "best", ["best", "last"], "Which checkpoint.")
    _NAME = flags.DEFINE_string("name", None, "Name in the model card; default the folder name.")
    _LICENSE = flags.DEFINE_string("license", "other", "Licence id for the model card metadata.")
    flags.mark_flags_as_required(["workdir", "out"])
    cli.run(main)
