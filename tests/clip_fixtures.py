"""Builds what the CLIP tests need without a download: a small BPE vocabulary and random
Hugging Face CLIP checkpoints written by transformers itself."""

from __future__ import annotations

from grace_jax.models import clip as clip_lib
from grace_jax.text import tiny_vocab


def write_tokenizer_dir(directory: str, vocab_size: int = 1024) -> str:
    """A tiny CLIP vocabulary (see grace_jax.text.tiny_vocab) in `directory`."""
    return tiny_vocab.write_tiny_vocab(directory, vocab_size)


def hf_config(config: clip_lib.CLIPConfig):
    """grace_jax's architecture as a transformers `CLIPConfig`."""
    import transformers

    v, t = config.vision, config.text
    return transformers.CLIPConfig(
        vision_config=dict(
            hidden_size=v.width,
            intermediate_size=v.mlp_dim,
            num_hidden_layers=v.layers,
            num_attention_heads=v.heads,
            image_size=v.image_size,
            patch_size=v.patch_size,
        ),
        text_config=dict(
            vocab_size=t.vocab_size,
            hidden_size=t.width,
            intermediate_size=t.mlp_dim,
            num_hidden_layers=t.layers,
            num_attention_heads=t.heads,
            max_position_embeddings=t.context_length,
            eos_token_id=t.eos_token_id,
            bos_token_id=t.vocab_size - 2,
            pad_token_id=t.eos_token_id,
        ),
        projection_dim=config.projection_dim,
    )


def write_hf_clip(directory: str, config: clip_lib.CLIPConfig, seed: int = 0):
    """Saves a randomly initialised PyTorch `CLIPModel` with `save_pretrained`; returns it (eval).

    transformers initialises LayerNorms to identity and biases to zero; those are randomised too so
    a parity test cannot pass by ignoring them.
    """
    import torch
    import transformers

    torch.manual_seed(seed)
    model = transformers.CLIPModel(hf_config(config)).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("bias") or "norm" in name:
                param.add_(0.1 * torch.randn_like(param))
    model.save_pretrained(directory)
    return model
