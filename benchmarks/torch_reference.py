"""The PyTorch side of benchmarks/train_step.py: DFER-CLIP's training step and matmul peaks.

The model is tests/dferclip_torch.py (written from DFER-CLIP's official code: OpenAI-layout CLIP,
Temporal_Transformer_Cls, the prompt learner, main.py's requires_grad rules and its three SGD groups),
at the widths of ViT-B/32 or ViT-B/16, random weights. One step is what main.py's train loop does per
batch: forward on [0,1] frames, cross-entropy, `optimizer.zero_grad()`, `backward()`,
`optimizer.step()`.
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))


def _descriptor_sentences() -> tuple[str, ...]:
    import dferclip_torch as dt

    return dt.DESCRIPTOR_SENTENCES


# DFER-CLIP-style descriptors (tests/dferclip_torch.py): grace_jax's dferclip step and the PyTorch one both put
# them after the 8 contexts.
SENTENCES = _descriptor_sentences()


def clip_size(variant: str):
    """tests/dferclip_torch.py's ClipSize for a grace_jax variant name."""
    import dferclip_torch as dt

    patches = {"ViT-B/32": 32, "ViT-B/16": 16}
    if variant not in patches:
        raise ValueError(f"the PyTorch reference has ViT-B/32 and ViT-B/16, not {variant!r}")
    return dt.B32.replace(vision_patch_size=patches[variant])


class TorchStep:
    """DFER-CLIP's model, optimizer and one batch; `step()` runs one training step and returns the
    loss."""

    def __init__(self, variant: str, sentences: list[str], hf_tokenizer, batch: dict, seed: int = 0):
        import dferclip_torch as dt
        import torch

        torch.manual_seed(seed)
        tokenize = dt.make_tokenize(
            lambda s: hf_tokenizer(s, add_special_tokens=False)["input_ids"],
            hf_tokenizer.bos_token_id,
            hf_tokenizer.eos_token_id,
        )
        self.model = dt.GenerateModel(sentences, dt.CLIP(clip_size(variant)), tokenize)
        dt.set_trainable(self.model)
        self.model.train()
        self.optimizer = dt.make_optimizer(self.model)
        self.loss_fn = torch.nn.CrossEntropyLoss()
        # What DFER-CLIP's loader hands the model: float [B,T,3,H,W] in [0,1] (made before timing, as
        # a DataLoader's workers would).
        video = np.asarray(batch["video"], np.float32).transpose(0, 1, 4, 2, 3) / 255.0
        self.video = torch.from_numpy(np.ascontiguousarray(video))
        self.label = torch.from_numpy(np.asarray(batch["label"], np.int64))
        self.n_trainable = sum(p.numel() for p in self.model.parameters() if p.requires_grad)

    def step(self) -> float:
        logits = self.model(self.video)
        loss = self.loss_fn(logits, self.label)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return float(loss.detach())


def torch_matmul_gflops(m: int, k: int, n: int, repeats: int = 10) -> float:
    """Best GFLOP/s of an fp32 [m,k] x [k,n] matmul in PyTorch (minimum time of `repeats`)."""
    import torch

    a, b = torch.randn(m, k), torch.randn(k, n)
    a @ b  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * m * k * n / best / 1e9


def xla_matmul_gflops(m: int, k: int, n: int, repeats: int = 10) -> float:
    """Best GFLOP/s of the same matmul jitted by XLA (same flags as the trainer's step)."""
    import jax
    import jax.numpy as jnp

    a = jax.random.normal(jax.random.key(0), (m, k), jnp.float32)
    b = jax.random.normal(jax.random.key(1), (k, n), jnp.float32)
    f = jax.jit(jnp.matmul)
    f(a, b).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        f(a, b).block_until_ready()
        best = min(best, time.perf_counter() - t0)
    return 2 * m * k * n / best / 1e9
