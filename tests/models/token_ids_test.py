"""Class texts from stored token ids (model.prompt.token_ids / model.cate.token_ids) instead of a
tokenizer, and CLIP sizes from model.clip.architecture: what converted and exported runs rely on."""

from __future__ import annotations

import numpy as np
import pytest

from grace_jax import state as state_lib
from grace_jax.configs import demo
from grace_jax.models import clip as clip_lib
from grace_jax.models import grace, prompts
from grace_jax.text.tokenizer import BUILTIN_TINY, Tokenizer


def test_stored_ids_give_the_tokenizers_arrays():
    tok = Tokenizer.from_pretrained(BUILTIN_TINY)
    names = ["happiness", "sadness"]
    cues = ["cheeks raised, lip corners pulled up.", "brows drawn together."]
    built = prompts.tokenize_classes(tok, names, cues, n_ctx=4, prompt_text="cue")
    rows = prompts.rows_from_ids(built.prompt_ids, built.prompt_eot, n_ctx=4)
    cue_rows = prompts.rows_from_ids(built.cue_ids, built.cue_eot)
    assert rows == cue_rows  # prompt.text="cue": the prompt texts are the cues
    assert all(r[0] == tok.sot_token_id and r[-1] == tok.eot_token_id for r in rows)
    stored = prompts.tokens_from_ids(rows, cue_rows, n_ctx=4)
    np.testing.assert_array_equal(stored.prompt_eot, built.prompt_eot)
    np.testing.assert_array_equal(stored.cue_eot, built.cue_eot)
    # Equal up to each row's EOT, padding aside (the causal text tower never reads past it).
    for got, want, eot in ((stored.prompt_ids, built.prompt_ids, built.prompt_eot),
                           (stored.cue_ids, built.cue_ids, built.cue_eot)):  # fmt: skip
        assert got.shape[1] >= int(eot.max()) + 1
        for g, w, e in zip(got, want, eot):
            np.testing.assert_array_equal(g[: e + 1], w[: e + 1])
    with pytest.raises(ValueError, match="at least"):
        prompts.ids_from_rows([[5]], 10)


def test_a_config_with_token_ids_and_architecture_builds_without_a_tokenizer():
    c = demo.get_config()
    c.model.motion.enabled = c.model.cate.enabled = c.model.ot.enabled = False
    tok = Tokenizer.from_pretrained(BUILTIN_TINY)
    reference = grace.class_tokens_from_config(c.model, tok)
    assert grace.needs_tokenizer(c.model)
    c.model.prompt.token_ids = prompts.rows_from_ids(reference.prompt_ids, reference.prompt_eot, c.model.prompt.n_ctx)
    c.model.clip.tokenizer = ""  # nothing to load a tokenizer from
    size = clip_lib.config_to_dict(clip_lib.clip_config("tiny"))
    size["vision"]["heads"] = 2  # not a named variant any more
    c.model.clip.architecture = size
    c.model.clip.variant = "custom"
    assert not grace.needs_tokenizer(c.model) and state_lib.load_tokenizer(c.model) is None
    from flax import nnx

    model = grace.build_model(c.model, rngs=nnx.Rngs(0), tokenizer=None)
    assert model.clip.config == clip_lib.config_from_dict(size)
    assert clip_lib.variant_name(model.clip.config) is None
    assert clip_lib.variant_name(clip_lib.clip_config("ViT-B/32")) == "ViT-B/32"
    ids = np.asarray(model.prompts.ids[...])
    for row, want, eot in zip(ids, reference.prompt_ids, reference.prompt_eot):
        np.testing.assert_array_equal(row[: eot + 1], want[: eot + 1])
    # CATE on with prompts of class names: the cue ids must be stored too (or tokenised).
    c.model.cate.enabled = True
    c.model.prompt.text = "name"
    assert grace.needs_tokenizer(c.model)
    c.model.cate.token_ids = prompts.rows_from_ids(reference.cue_ids, reference.cue_eot)
    assert not grace.needs_tokenizer(c.model)
    with pytest.raises(ValueError, match="num_classes"):
        c.model.cate.token_ids = c.model.cate.token_ids[:3]
        grace.class_tokens_from_config(c.model, None)
