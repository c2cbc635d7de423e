"""What this machine is: versions, devices and the settings that change numerics or memory; its
chips' vendor peak throughput, and model FLOP utilization against it.

`grace_jax.doctor` reports these: the environment first, a timed step's MFU last (a chip missing from
the table gets its achieved FLOP/s only).
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
from typing import Any

import jax

from grace_jax.infra import cpu_numerics

__all__ = ["PEAK_TFLOPS", "environment", "mfu", "peak_tflops"]

# The environment variables that change numerics, memory or which devices jax sees.
_ENV = ("JAX_PLATFORMS", "XLA_FLAGS", "XLA_PYTHON_CLIENT_PREALLOCATE", "XLA_PYTHON_CLIENT_MEM_FRACTION",
        "XLA_PYTHON_CLIENT_ALLOCATOR", "JAX_COMPILATION_CACHE_DIR", "CUDA_VISIBLE_DEVICES",
        "LIBTPU_INIT_ARGS", "TPU_VISIBLE_CHIPS")  # fmt: skip
_PACKAGES = ("grace_jax", "jax", "jaxlib", "jax-cuda12-plugin", "libtpu", "flax", "optax", "ott-jax")

# Vendor peak dense (no sparsity) TFLOP/s per jax device, (bf16, fp32), from NVIDIA's and Google's
# data sheets. The fp32 column is what XLA's default precision runs fp32 matmuls at: TF32 tensor
# cores on A100 and later, plain FP32 on V100/T4. None where there is no such figure: V100 and T4
# have no bf16 tensor cores; a TPU's fp32 matmul takes 1-6 bf16 passes depending on the precision.
# Matched as case-insensitive substrings of `device.device_kind`, most specific first.
PEAK_TFLOPS: tuple[tuple[str, tuple[float | None, float | None]], ...] = (
    ("H100 PCIe", (756.0, 378.0)),
    ("H100 NVL", (835.0, 418.0)),
    ("H100", (989.0, 495.0)),  # SXM5
    ("H200", (989.0, 495.0)),  # SXM
    ("A100", (312.0, 156.0)),  # SXM4 and PCIe alike
    ("A10G", (70.0, 35.0)),  # AWS's A10 variant: no NVIDIA data sheet, the commonly quoted figures
    ("L40S", (362.0, 183.0)),
    ("L4", (121.0, 60.0)),
    ("V100", (None, 15.7)),  # SXM2
    ("T4", (None, 8.1)),
    ("TPU v4", (275.0, None)),
    ("TPU v5 lite", (197.0, None)), ("TPU v5e", (197.0, None)),
    ("TPU v5p", (459.0, None)), ("TPU v5", (459.0, None)),
    ("TPU v6 lite", (918.0, None)), ("TPU v6e", (918.0, None)),
)  # fmt: skip


def peak_tflops(device_kind: str, dtype: str) -> float | None:
    """The vendor peak dense TFLOP/s of `device_kind` in `dtype` (PEAK_TFLOPS), None when unknown."""
    for key, (bf16, fp32) in PEAK_TFLOPS:
        if key.lower() in device_kind.lower():
            return bf16 if dtype == "bfloat16" else fp32
    return None


def mfu(flops_per_step: float, step_s: float, peak: float | None) -> float | None:
    """Model FLOP utilization: one device's achieved FLOP/s over its `peak` TFLOP/s; None if unknown."""
    if not peak or step_s <= 0 or flops_per_step <= 0:
        return None
    return flops_per_step / step_s / (peak * 1e12)


def environment() -> dict[str, Any]:
    """Versions, devices and the settings that matter, as plain data."""
    versions = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass  # not installed (the accelerator plugins): simply not listed
    devices = jax.local_devices()
    first = devices[0]
    return dict(
        versions=versions,
        backend=jax.default_backend(),
        device_kind=first.device_kind,
        platform=first.platform,
        local_devices=len(devices),
        global_devices=jax.device_count(),
        process=f"{jax.process_index()} of {jax.process_count()}",
        compute_capability=getattr(first, "compute_capability", None),
        env={k: os.environ[k] for k in _ENV if k in os.environ},
        jax_enable_x64=bool(jax.config.jax_enable_x64),
        default_matmul_precision=jax.config.jax_default_matmul_precision,
        cpu_numerics=cpu_numerics.describe(),
    )
