"""What a command prints besides its own lines: third-party INFO logs off, no accelerator probing on CPU.

`cli.run` applies both to every absl command (grace_jax.main, predict, evaluate, folds, convert, export,
data_prep.build_dataset):

- Logging. orbax logs dozens of INFO lines per checkpoint save and restore (the demo printed ~450 of
  them around ~70 lines of progress and evaluation), jax logs which backends it could not start. By
  default INFO records reach the console only when they come from this project's own code
  (`grace_jax`, `data_prep`, `launch`, `configs`); warnings and errors from anyone always do.
  `--verbosity=0` (or `-v 0`, or any explicit `--verbosity`) restores absl's plain behaviour: every
  library's records at that level.
- Platforms. With no accelerator plugin installed (no `libtpu`, no `jax_plugins` such as the CUDA or
  ROCm plugins), jax would still try to start a TPU backend on every run and log "Unable to initialize
  backend 'tpu'". `JAX_PLATFORMS=cpu` is then set, for this process and the processes it starts (grain
  workers). An explicit `JAX_PLATFORMS` (or `--jax_platforms`) is never touched, and a machine with a
  GPU or TPU plugin installed keeps jax's own choice.

No jax import here unless the command already imported it (cli.py starts in a second without it).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging as std_logging
import os
import pkgutil
import sys

OWN_PACKAGES = ("grace_jax", "data_prep", "launch", "configs")

# What `prefer_cpu()` did, for tests and logs: "set", "user-set", "accelerator", "backend started".
platform_status = "not applied"


def own_directories() -> tuple[str, ...]:
    """The folders of this project's packages (where an INFO record must come from to be shown)."""
    found = []
    for name in OWN_PACKAGES:
        spec = importlib.util.find_spec(name)
        for location in (spec.submodule_search_locations or []) if spec else []:
            found.append(os.path.join(os.path.realpath(location), ""))
    return tuple(found)


class OwnInfoOnly(std_logging.Filter):
    """Passes warnings and worse from anyone, and lower records only from files under `directories`."""

    def __init__(self, directories: tuple[str, ...]):
        super().__init__()
        self.directories = directories
        self._cache: dict[str, bool] = {}

    def filter(self, record: std_logging.LogRecord) -> bool:
        if record.levelno >= std_logging.WARNING:
            return True
        path = record.pathname
        ours = self._cache.get(path)
        if ours is None:
            ours = self._cache[path] = os.path.realpath(path).startswith(self.directories)
        return ours


def quiet_third_party_info() -> None:
    """Unless `--verbosity` was given: INFO from this project only (absl's handler filters the rest).

    Call after absl parsed the flags (in the command's main).
    """
    from absl import flags, logging

    if flags.FLAGS["verbosity"].present:
        return
    # transformers' "advice" warnings (e.g. "PyTorch was not found ... only tokenizers ..." on every
    # import without torch, which is how grace_jax uses it) are not problems of the run.
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    handler = logging.get_absl_handler()
    if not any(isinstance(f, OwnInfoOnly) for f in handler.filters):
        handler.addFilter(OwnInfoOnly(own_directories()))
    # grace_jax's own INFO lines (e.g. "Generating SynthFER into ...") are meant to be seen: absl's default
    # verbosity (WARNING) would drop them before the filter.
    logging.set_verbosity(logging.INFO)


def accelerator_installed() -> bool:
    """Whether jax could find a GPU or TPU runtime: libtpu, or any PJRT plugin (CUDA, ROCm, ...)."""
    if importlib.util.find_spec("libtpu") is not None:
        return True
    try:
        if importlib.metadata.entry_points(group="jax_plugins"):
            return True
    except Exception:  # noqa: BLE001 -- a broken distribution's metadata: look at the namespace too
        pass
    spec = importlib.util.find_spec("jax_plugins")
    if spec is not None and spec.submodule_search_locations:
        return any(True for _ in pkgutil.iter_modules(list(spec.submodule_search_locations)))
    return False


def prefer_cpu(environ=None) -> str:
    """Sets JAX_PLATFORMS=cpu where no accelerator is installed and nobody chose platforms; returns
    what it did (also kept in `platform_status` when `environ` is os.environ)."""
    global platform_status
    own = environ is None or environ is os.environ
    environ = os.environ if environ is None else environ
    jax = sys.modules.get("jax") if own else None
    chosen = environ.get("JAX_PLATFORMS", "").strip()
    if jax is not None and not chosen:
        chosen = (jax.config.jax_platforms or "").strip()  # --jax_platforms, or set in code
    if chosen:
        result = "user-set"
    elif accelerator_installed():
        result = "accelerator"
    else:
        environ["JAX_PLATFORMS"] = "cpu"
        result = "set"
        if jax is not None:
            # jax read the environment when it was imported: tell its config too, unless a backend
            # already started (then it is too late for this process; its children still get it).
            from jax._src import xla_bridge

            if xla_bridge.backends_are_initialized():
                result = "backend started"
            else:
                jax.config.update("jax_platforms", "cpu")
    if own:
        platform_status = result
    return result
