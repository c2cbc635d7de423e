"""CLIP tokenization to fixed-length id arrays, with the end-of-text position of every row."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from grace_jax.infra import hub
from grace_jax.infra.errors import UserError

# Names the tiny vocabulary built on the fly (grace_jax.text.tiny_vocab): no files, no download.
BUILTIN_TINY = "builtin:tiny"


class TokenizerError(UserError, ValueError):
    """A tokenizer folder or name that cannot give a CLIP tokenizer (the message names it)."""


class TokenizedText(NamedTuple):
    ids: np.ndarray  # [N, context_length] int32
    eot_index: np.ndarray  # [N] int32, where <|endoftext|> sits; padding follows it.


class Tokenizer:
    """Wraps transformers' `CLIPTokenizer` into `[N, 77]` int32 ids plus EOT indices.

    Build it with `Tokenizer.from_pretrained(dir_or_hub_name)`: transformers 5's `CLIPTokenizer`
    constructor given file paths silently builds a two-token vocabulary, `from_pretrained` does not.
    Over-long texts are truncated so that <|endoftext|> stays the last token.
    """

    def __init__(self, hf_tokenizer, context_length: int = 77, source: str = "tokenizer"):
        if len(hf_tokenizer) < 3:
            raise ValueError(f"{source}: the tokenizer vocabulary has {len(hf_tokenizer)} entries.")
        self._tok = hf_tokenizer
        self.context_length = context_length
        self.sot_token_id = int(hf_tokenizer.bos_token_id)
        self.eot_token_id = int(hf_tokenizer.eos_token_id)

    @classmethod
    def from_pretrained(cls, path_or_name: str, context_length: int = 77) -> Tokenizer:
        """A tokenizer directory, a hub name, or `builtin:tiny` (the tiny CLIP's vocabulary)."""
        import transformers

        if path_or_name == BUILTIN_TINY:
            from grace_jax.text import tiny_vocab

            path_or_name = tiny_vocab.cached_tiny_vocab()
        elif hub.is_hub_name(path_or_name):
            # Through the hub cache: transformers alone retries an unreachable hub for minutes.
            try:
                path_or_name = hub.snapshot(path_or_name, "model.clip.tokenizer", hub.TOKENIZER_FILES)
            except hub.HubError as e:
                raise TokenizerError(str(e)) from None
        if os.path.isdir(path_or_name):
            files = set(os.listdir(path_or_name))
            if "tokenizer.json" not in files and not {"vocab.json", "merges.txt"} <= files:
                raise TokenizerError(
                    f"{path_or_name}: no CLIP tokenizer files (vocab.json + merges.txt, or tokenizer.json)."
                )
        try:
            hf = transformers.CLIPTokenizer.from_pretrained(path_or_name)
        except (OSError, ValueError) as e:
            raise TokenizerError(f"{path_or_name}: cannot load a CLIP tokenizer ({e}).") from e
        return cls(hf, context_length, source=path_or_name)

    @property
    def vocab_size(self) -> int:
        return len(self._tok)

    def decode(self, ids: Sequence[int]) -> str:
        """Token ids -> text without the special tokens, as CLIP decodes (lower case; its BPE does
        not keep the spacing around punctuation)."""
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=True).strip()

    def __call__(self, texts: Sequence[str]) -> TokenizedText:
        if isinstance(texts, str):
            raise TypeError("Pass a list of strings, not a single string.")
        encoded = self._tok(
            list(texts),
            padding="max_length",
            truncation=True,
            max_length=self.context_length,
            return_attention_mask=False,
        )["input_ids"]
        ids = np.asarray(encoded, np.int32).reshape(len(texts), self.context_length)
        # First EOT, since the padding token may be EOT as well (it is for OpenAI's vocabulary).
        is_eot = ids == self.eot_token_id
        if not is_eot.any(axis=1).all():
            raise ValueError("Tokenizer produced a row without <|endoftext|>.")
        return TokenizedText(ids, is_eot.argmax(axis=1).astype(np.int32))
