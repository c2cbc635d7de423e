"""jax's persistent compilation cache for a training run (config field train.compilation_cache)."""

from __future__ import annotations

import jax

from grace_jax.infra import paths


def configure(setting: str, workdir: str) -> str | None:
    """Turns on jax's persistent compilation cache per `setting`; returns its folder (None: off).

    "auto": <workdir>/jax_cache on GPU and TPU, where an L/14 step takes minutes to compile and a
    restart after a preemption would compile it again; off on CPU, where resumed multi-process runs
    from the cache hung (docs/clusters.md). "" turns it off; any other value is the folder. A cache
    the environment already set (JAX_COMPILATION_CACHE_DIR) is left as it is."""
    if not setting or jax.config.jax_compilation_cache_dir:
        return jax.config.jax_compilation_cache_dir or None
    if setting == "auto":
        if jax.default_backend() == "cpu":
            return None
        setting = paths.join(workdir, "jax_cache")
    jax.config.update("jax_compilation_cache_dir", setting)
    return setting
