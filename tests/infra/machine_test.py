"""grace_jax.infra.machine: the chips' peak table lookup and the MFU arithmetic grace_jax.doctor reports."""

from __future__ import annotations

import pytest

from grace_jax.infra import machine


@pytest.mark.parametrize(
    "kind, dtype, peak",
    [
        ("NVIDIA H100 80GB HBM3", "bfloat16", 989.0),  # SXM
        ("NVIDIA H100 PCIe", "bfloat16", 756.0),
        ("NVIDIA H100 PCIe", "float32", 378.0),  # TF32
        ("NVIDIA H200", "bfloat16", 989.0),
        ("NVIDIA A100-SXM4-80GB", "float32", 156.0),
        ("NVIDIA A10G", "bfloat16", 70.0),  # not A100's
        ("NVIDIA L40S", "bfloat16", 362.0),  # not L4's
        ("NVIDIA L4", "bfloat16", 121.0),
        ("Tesla V100-SXM2-16GB", "float32", 15.7),
        ("Tesla V100-SXM2-16GB", "bfloat16", None),  # no bf16 tensor cores
        ("Tesla T4", "bfloat16", None),
        ("TPU v4", "bfloat16", 275.0),
        ("TPU v5 lite", "bfloat16", 197.0),  # v5e
        ("TPU v5", "bfloat16", 459.0),  # v5p
        ("TPU v6 lite", "bfloat16", 918.0),  # v6e
        ("TPU v5 lite", "float32", None),
        ("cpu", "float32", None),
    ],
)
def test_peak_table_lookup(kind, dtype, peak):
    assert machine.peak_tflops(kind, dtype) == peak


def test_mfu_arithmetic():
    # 3458 GFLOP in 13.88 s is 249.1 GFLOP/s; against 989 TFLOP/s that is 2.519e-4.
    assert machine.mfu(3458e9, 13.88, 989.0) == pytest.approx(3458e9 / 13.88 / 989e12)
    assert machine.mfu(3458e9, 13.88, 989.0) == pytest.approx(2.519e-4, rel=1e-3)
    assert machine.mfu(1e12, 0.5, 4.0) == pytest.approx(0.5)  # 2 TFLOP/s of 4
    assert machine.mfu(1e12, 0.5, None) is None  # unknown chip
    assert machine.mfu(0.0, 0.5, 4.0) is None  # no FLOP count: no MFU rather than 0%
