"""Formats from and to other frameworks: PyTorch pickles, DFER-CLIP's checkpoints, Hugging Face folders."""
