"""Resizing ViT position embeddings to a new patch grid.

Matches PyTorch's `interpolate(mode="bicubic", align_corners=False)` (cubic convolution with a=-0.75,
borders clamped), which is what Hugging Face's `interpolate_pos_encoding` uses, so features at a new
input size agree with the PyTorch reference. `jax.image.resize` uses a=-0.5 and would not.
"""

import jax
import jax.numpy as jnp
import numpy as np

_A = -0.75


def bicubic_matrix(in_size: int, out_size: int) -> np.ndarray:
    """[out_size, in_size] matrix M with resized = M @ signal, PyTorch's bicubic weights."""
    matrix = np.zeros((out_size, in_size), np.float64)
    scale = in_size / out_size
    for i in range(out_size):
        src = (i + 0.5) * scale - 0.5
        x0 = int(np.floor(src))
        t = src - x0
        weights = (
            ((_A * (t + 1) - 5 * _A) * (t + 1) + 8 * _A) * (t + 1) - 4 * _A,
            ((_A + 2) * t - (_A + 3)) * t * t + 1,
            ((_A + 2) * (1 - t) - (_A + 3)) * (1 - t) * (1 - t) + 1,
        )
        weights = weights + (1.0 - sum(weights),)
        for offset, w in zip(range(-1, 3), weights):
            matrix[i, min(max(x0 + offset, 0), in_size - 1)] += w
    return matrix


def resize_position_embedding(pos: jax.Array, grid: tuple[int, int]) -> jax.Array:
    """Resizes [1+G*G, D] CLIP position embeddings (CLS first) to [1+gh*gw, D]."""
    num_patches, dim = pos.shape[0] - 1, pos.shape[1]
    side = int(round(num_patches**0.5))
    if side * side != num_patches:
        raise ValueError(f"Position embeddings hold {num_patches} patches, not a square grid.")
    rows = jnp.asarray(bicubic_matrix(side, grid[0]), pos.dtype)  # [gh,G]
    cols = jnp.asarray(bicubic_matrix(side, grid[1]), pos.dtype)  # [gw,G]
    patch_pos = pos[1:].reshape(side, side, dim)  # [G,G,D]
    resized = jnp.einsum("ai,bj,ijd->abd", rows, cols, patch_pos).reshape(-1, dim)  # [gh*gw,D]
    return jnp.concatenate([pos[:1], resized], axis=0)
