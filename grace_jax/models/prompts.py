"""Class text: tokenisation of names and cues, and DFER-CLIP's learnable prompt contexts.

The coarse prompt of class c is ``[SOT] ctx_1 .. ctx_n <text> [EOT]`` where the ctx are learned word
embeddings, class-specific by default (CoOp's class-specific context as DFER-CLIP uses it, 8 tokens),
and ``<text>`` is chosen by ``config.model.prompt.text``:

- ``"name"``: the class name followed by a period ("happiness."), DFER-CLIP's ``--text-type
  class_names`` form; GRACE's default, since CATE brings the descriptive cue in as the fine text;
- ``"cue"``: the class's cue sentence verbatim (``grace_jax.text.class_cues``, or ``model.class_cues``),
  the form of DFER-CLIP's ``--text-type class_descriptor`` that all its training scripts use.

DFER-CLIP tokenises ``"X X .. X " + text`` (n_ctx placeholder words) and swaps the placeholders'
embeddings for the contexts; CLIP's BPE splits words independently, so that is ``text``'s own tokens
with n_ctx slots opened after SOT, which is what is built here (the slot ids are never embedded for real).
The EOT position (DFER-CLIP: the argmax of the ids) is kept explicitly.

Token ids of all class texts are fixed at construction. Sequences are cut to the longest text's EOT + 1
(a static length): CLIP's text encoder is causal, so the features of the kept positions do not change,
and the encoder, the CATE attention and the OT all run on ~20 instead of 77 positions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

__all__ = [
    "ClassTokens",
    "PROMPT_TEXTS",
    "TokenIds",
    "ids_from_rows",
    "insert_context_slots",
    "prompt_texts",
    "rows_from_ids",
    "tokenize_classes",
    "tokens_from_ids",
    "trim",
    "valid_token_mask",
    "PromptLearner",
]


class TokenIds(nnx.Variable):
    """Fixed int32 token ids carried in the model state (never optimised)."""


class ClassTokens(NamedTuple):
    """Token ids of the class texts (numpy int32).

    prompt_ids: [C,L] coarse prompts with ``n_ctx`` placeholder slots after SOT; prompt_eot: [C].
    cue_ids: [C,L] fine cue descriptions; cue_eot: [C].
    """

    prompt_ids: np.ndarray
    prompt_eot: np.ndarray
    cue_ids: np.ndarray
    cue_eot: np.ndarray


def insert_context_slots(
    ids: np.ndarray, eot: np.ndarray, n_ctx: int, placeholder: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """[SOT] w.. [EOT] pad -> [SOT] x*n_ctx w.. [EOT] pad, keeping the length (numpy).

    Args:
      ids: [N,L] int token ids from the tokenizer; eot: [N] EOT positions.
      n_ctx: context slots to open after SOT.

    Returns:
      (ids [N,L], eot [N] shifted by n_ctx). Raises if a text no longer fits.
    """
    ids = np.asarray(ids)
    eot = np.asarray(eot)
    n, length = ids.shape
    if (eot + n_ctx >= length).any():
        raise ValueError(f"class text too long for {n_ctx} context tokens in {length} positions")
    out = np.zeros_like(ids)
    for i in range(n):
        row = np.concatenate([ids[i, :1], np.full(n_ctx, placeholder, ids.dtype), ids[i, 1:]])
        out[i] = row[:length]
    return out, (eot + n_ctx).astype(np.int32)


PROMPT_TEXTS = ("name", "cue")


def prompt_texts(names: Sequence[str], cues: Sequence[str], mode: str = "name") -> list[str]:
    """The text that follows the contexts in each class's coarse prompt (``model.prompt.text``)."""
    if mode == "name":
        return [f"{n}." for n in names]
    if mode == "cue":
        return list(cues)
    raise ValueError(f"model.prompt.text must be one of {PROMPT_TEXTS}, got {mode!r}")


def tokenize_classes(
    tokenizer, names: Sequence[str], cues: Sequence[str], n_ctx: int, prompt_text: str = "name"
) -> ClassTokens:
    """Builds :class:`ClassTokens` with a ``grace_jax.text.tokenizer.Tokenizer``.

    The coarse text behind the ``n_ctx`` context slots is ``prompt_texts(names, cues, prompt_text)``;
    the fine text is the cue sentences either way.
    """
    prompt_tok = tokenizer(prompt_texts(names, cues, prompt_text))
    # Raises when a text and the contexts do not fit the positions (DFER-CLIP's tokenizer refuses
    # such a prompt too).
    prompt_ids, prompt_eot = insert_context_slots(prompt_tok.ids, prompt_tok.eot_index, n_ctx)
    cue_tok = tokenizer(list(cues))
    return ClassTokens(prompt_ids.astype(np.int32), prompt_eot, cue_tok.ids.astype(np.int32), cue_tok.eot_index)


def ids_from_rows(rows: Sequence[Sequence[int]], length: int) -> tuple[np.ndarray, np.ndarray]:
    """Token id lists, one per text, each ``[SOT] w.. [EOT]`` (as ``model.prompt.token_ids`` stores
    them) -> ([N,length] int32 ids padded with 0, [N] int32 EOT positions = the last of each list)."""
    if not rows or any(len(r) < 2 for r in rows):
        raise ValueError("token id lists must each hold at least [SOT] and [EOT]")
    longest = max(len(r) for r in rows)
    if longest > length:
        raise ValueError(f"a token id list has {longest} ids, more than the {length} positions")
    ids = np.zeros((len(rows), length), np.int32)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = [int(t) for t in row]
    return ids, np.asarray([len(r) - 1 for r in rows], np.int32)


def rows_from_ids(ids: np.ndarray, eot: np.ndarray, n_ctx: int = 0) -> list[list[int]]:
    """Inverse of ``ids_from_rows`` (after ``insert_context_slots`` when ``n_ctx`` > 0): each row's ids
    up to its EOT, the ``n_ctx`` context slots after SOT left out."""
    ids, eot = np.asarray(ids), np.asarray(eot)
    return [[int(row[0])] + [int(t) for t in row[1 + n_ctx : e + 1]] for row, e in zip(ids, eot)]


def tokens_from_ids(prompt_rows: Sequence[Sequence[int]], cue_rows: Sequence[Sequence[int]], n_ctx: int) -> ClassTokens:
    """:class:`ClassTokens` from stored token ids instead of a tokenizer (``model.prompt.token_ids``,
    ``model.cate.token_ids``): the same arrays ``tokenize_classes`` gives for texts with these ids, up
    to padding after each EOT, which no feature used here depends on (the text tower is causal)."""
    prompt_ids, prompt_eot = ids_from_rows(prompt_rows, max(len(r) for r in prompt_rows) + n_ctx)
    prompt_ids, prompt_eot = insert_context_slots(prompt_ids, prompt_eot, n_ctx)
    cue_ids, cue_eot = ids_from_rows(cue_rows, max(len(r) for r in cue_rows))
    return ClassTokens(prompt_ids, prompt_eot, cue_ids, cue_eot)


def trim(ids: np.ndarray, eot: np.ndarray) -> np.ndarray:
    """Cuts [N,L] ids after the longest row's EOT (static, numpy)."""
    return np.asarray(ids)[:, : int(np.max(eot)) + 1]


def valid_token_mask(length: int, eot: jax.Array, *, include_eot: bool = False) -> jax.Array:
    """[N] EOT positions -> [N,length] bool: real word tokens, 0 < p < eot (or <= eot)."""
    pos = jnp.arange(length)[None, :]
    end = eot[:, None]
    return (pos > 0) & ((pos <= end) if include_eot else (pos < end))


class PromptLearner(nnx.Module):
    """Learnable context vectors spliced into each class's prompt embeddings."""

    def __init__(
        self,
        prompt_ids: np.ndarray,
        prompt_eot: np.ndarray,
        *,
        n_ctx: int,
        width: int,
        class_specific: bool = True,
        init_std: float = 0.02,
        rngs: nnx.Rngs,
    ):
        num_classes = prompt_ids.shape[0]
        self.n_ctx = n_ctx
        self.ids = TokenIds(jnp.asarray(trim(prompt_ids, prompt_eot), jnp.int32))  # [C,Lp]
        self.eot = TokenIds(jnp.asarray(prompt_eot, jnp.int32))  # [C]
        shape = (num_classes if class_specific else 1, n_ctx, width)
        self.ctx = nnx.Param(init_std * jax.random.normal(rngs.params(), shape))

    def embeddings(self, clip) -> jax.Array:
        """[C,Lp,W_text] prompt embeddings with the contexts in slots 1..n_ctx."""
        # The token embedding table is frozen text-encoder weight: only the contexts learn here.
        embeds = jax.lax.stop_gradient(clip.embed_tokens(self.ids[...]))  # [C,Lp,W]
        c = embeds.shape[0]
        ctx = jnp.broadcast_to(self.ctx[...], (c,) + self.ctx.shape[1:]).astype(embeds.dtype)
        return jnp.concatenate([embeds[:, :1], ctx, embeds[:, 1 + self.n_ctx :]], axis=1)

    def __call__(self, clip) -> tuple[jax.Array, jax.Array, jax.Array]:
        """Encodes the prompts with ``clip``'s text tower.

        Returns:
          (eot [C,D] class embeddings, tokens [C,Lp,D], valid [C,Lp] word-token mask 0<p<eot).
        """
        eot = self.eot[...]
        cls_emb, tokens = clip.encode_text_embeddings(self.embeddings(clip), eot)
        return cls_emb, tokens, valid_token_mask(tokens.shape[1], eot)
