"""GRACE for dynamic facial expression recognition, in JAX/Flax."""

# Before anything starts jax's backend: XLA:CPU's ynn fusion off (jaxlib 0.10.2 miscompiles it);
# opt out with GRACE_JAX_KEEP_YNN_FUSION=1. See grace_jax/infra/cpu_numerics.py.
from grace_jax.infra import cpu_numerics as _cpu_numerics

_cpu_numerics.apply()

