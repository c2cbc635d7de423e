"""GRACE for dynamic facial expression recognition, in JAX/Flax."""

# Before anything starts jax's backend: XLA:CPU's ynn fusion off (jaxlib 0.10.2 miscompiles it);
# opt out with GRACE_JAX_KEEP_YNN_FUSION=1. See grace_jax/infra/cpu_numerics.py.
from grace_jax.infra import cpu_numerics as _cpu_numerics

_cpu_numerics.apply()


def __getattr__(name: str):
    # `grace_jax.Predictor` without importing jax for commands that never use it (data_prep, folds).
    if name == "Predictor":
        from grace_jax.inference.predictor import Predictor

        return Predictor
    raise AttributeError(f"module 'grace_jax' has no attribute {name!r}")
