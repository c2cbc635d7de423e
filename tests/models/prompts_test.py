"""Class text tokens and learnable prompt contexts."""

import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

sys.path.insert(0, os.path.dirname(os.path.dirname(__file__)))
import clip_fixtures  # noqa: E402

from grace_jax.models import clip as clip_lib  # noqa: E402
from grace_jax.models import prompts  # noqa: E402
from grace_jax.text import class_cues  # noqa: E402
from grace_jax.text.tokenizer import Tokenizer  # noqa: E402


def test_insert_context_slots_and_valid_mask():
    ids = np.array([[5, 7, 8, 9, 0, 0, 0, 0, 0, 0, 0, 0]], np.int32)  # SOT=5, EOT=9
    out, eot = prompts.insert_context_slots(ids, np.array([3]), 4, placeholder=1)
    np.testing.assert_array_equal(out[0], [5, 1, 1, 1, 1, 7, 8, 9, 0, 0, 0, 0])
    assert eot.tolist() == [7]
    mask = prompts.valid_token_mask(9, jnp.array([7]))
    assert np.asarray(mask[0]).tolist() == [False] + [True] * 6 + [False, False]
    with_eot = prompts.valid_token_mask(9, jnp.array([7]), include_eot=True)
    assert bool(with_eot[0, 7]) and not bool(with_eot[0, 8])


@pytest.mark.slow
def test_tokenize_classes_and_prompt_learner(tmp_path):
    tok = Tokenizer.from_pretrained(clip_fixtures.write_tokenizer_dir(str(tmp_path)))
    cues = class_cues.class_cues(7)
    ct = prompts.tokenize_classes(tok, [c.name for c in cues], [c.cue for c in cues], n_ctx=8)
    assert ct.prompt_ids.shape == ct.cue_ids.shape == (7, 77)
    assert np.all(ct.prompt_ids[:, 0] == tok.sot_token_id)
    assert np.all(ct.prompt_ids[np.arange(7), ct.prompt_eot] == tok.eot_token_id)
    assert np.all(ct.cue_ids[np.arange(7), ct.cue_eot] == tok.eot_token_id)
    assert np.all(ct.prompt_ids[:, 1:9] == 0)  # the context slots

    clip = clip_lib.CLIP(clip_lib.clip_config("tiny"), rngs=nnx.Rngs(0))
    learner = prompts.PromptLearner(ct.prompt_ids, ct.prompt_eot, n_ctx=8, width=64,
                                    rngs=nnx.Rngs(1))  # fmt: skip
    # Sequences are cut after the longest prompt's EOT.
    assert learner.ids.shape == (7, int(ct.prompt_eot.max()) + 1)
    # The text tower runs jitted below, as in the model: op by op, each of its primitives was compiled
    # on its own for each pass (cut, full, backward), which took most of this test's time.
    emb, tokens, valid = nnx.jit(lambda lr, c: lr(c))(learner, clip)
    assert emb.shape == (7, 32) and tokens.shape[:2] == valid.shape == learner.ids.shape

    # Cutting is exact: the causal text tower gives the same EOT features on the full 77 tokens.
    @nnx.jit
    def full_prompts(c, ctx):
        full = c.embed_tokens(jnp.asarray(ct.prompt_ids))
        full = full.at[:, 1:9].set(ctx)
        return c.encode_text_embeddings(full, jnp.asarray(ct.prompt_eot))[0]

    ref = full_prompts(clip, learner.ctx[...])
    np.testing.assert_allclose(emb, ref, rtol=1e-5, atol=1e-5)
    # Only the contexts learn through the prompts (the token table is frozen).
    g = nnx.jit(nnx.grad(lambda lr, c: lr(c)[0].sum()))(learner, clip)
    assert float(jnp.abs(g.ctx[...]).max()) > 0
    shared = prompts.PromptLearner(ct.prompt_ids, ct.prompt_eot, n_ctx=8, width=64,
                                   class_specific=False, rngs=nnx.Rngs(1))  # fmt: skip
    assert shared.ctx.shape == (1, 8, 64)
    assert np.all(np.isfinite(np.asarray(jax.jit(lambda m: m(clip)[0])(shared))))


def _dferclip_ids(tok, texts, n_ctx):
    """What DFER-CLIP's PromptLearner tokenises: n_ctx "X" placeholder words, a space, the text."""
    placeholders = " ".join(["X"] * n_ctx)
    return tok([placeholders + " " + t for t in texts])


def _check_prompts(tok, ct, texts, n_ctx):
    ref = _dferclip_ids(tok, texts, n_ctx)
    x_id = tok(["X"]).ids[0, 1]
    assert np.all(ref.ids[:, 1 : 1 + n_ctx] == x_id)  # one token per placeholder
    # grace_jax's ids are DFER-CLIP's with the placeholder slots left empty; EOT at the same position, which
    # is where DFER-CLIP's argmax finds it.
    np.testing.assert_array_equal(ct.prompt_eot, ref.eot_index)
    np.testing.assert_array_equal(ct.prompt_eot, ref.ids.argmax(-1))
    assert np.all(ct.prompt_ids[:, 1 : 1 + n_ctx] == 0)
    for c in range(len(texts)):
        end = ct.prompt_eot[c] + 1
        np.testing.assert_array_equal(ct.prompt_ids[c, :1], ref.ids[c, :1])
        np.testing.assert_array_equal(ct.prompt_ids[c, 1 + n_ctx : end], ref.ids[c, 1 + n_ctx : end])


def test_prompt_text_modes_tokenise_like_dferclip():
    tok = Tokenizer.from_pretrained("builtin:tiny")
    names = ["happiness", "sadness", "neutral"]
    cues = ["a wide smile, lifted cheeks.", "a drooping mouth.", "a still face, level brows."]
    for n_ctx in (8, 4):
        name = prompts.tokenize_classes(tok, names, cues, n_ctx, prompt_text="name")
        _check_prompts(tok, name, ["happiness.", "sadness.", "neutral."], n_ctx)  # name + "."
        cue = prompts.tokenize_classes(tok, names, cues, n_ctx, prompt_text="cue")
        _check_prompts(tok, cue, cues, n_ctx)  # the sentence verbatim, its own period only
        # The fine text is the cue sentence in both modes.
        np.testing.assert_array_equal(name.cue_ids, cue.cue_ids)
        np.testing.assert_array_equal(cue.cue_ids, tok(cues).ids)
    assert prompts.prompt_texts(names, cues, "name") == ["happiness.", "sadness.", "neutral."]
    with pytest.raises(ValueError, match="prompt.text"):
        prompts.tokenize_classes(tok, names, cues, 8, prompt_text="class_descriptor")
    # A sentence that does not fit 77 positions behind the contexts is refused, not cut.
    with pytest.raises(ValueError, match="too long"):
        prompts.tokenize_classes(tok, names[:1], ["smile " * 70], 8, prompt_text="cue")


def test_config_overrides_work_in_both_modes():
    """model.class_names / model.class_cues reach the prompts in the mode that uses them; the
    built-in cue sentences fill the classes an override leaves empty."""
    from grace_jax.configs import base
    from grace_jax.models import grace

    tok = Tokenizer.from_pretrained("builtin:tiny")
    cfg = base.get_config().model
    cfg.num_classes = 7  # base's 0 (the data's count) is for training runs
    assert cfg.prompt.text == "name"  # full GRACE's default
    builtin = class_cues.class_cues(7)
    cfg.class_names = ("joy",) + ("",) * 6
    ct = grace.class_tokens_from_config(cfg, tok)
    _check_prompts(tok, ct, ["joy."] + [f"{c.name}." for c in builtin[1:]], 8)

    sentences = ("a wide smile.", "", "a still face.", "", "", "", "")
    cfg.prompt.text = "cue"
    cfg.class_cues = sentences
    ct = grace.class_tokens_from_config(cfg, tok)
    texts = [s or builtin[i].cue for i, s in enumerate(sentences)]
    # (The tiny vocabulary spells unseen words nearly letter by letter; the two classes overridden
    # here are the ones whose built-in sentence would not fit behind 8 contexts in it. With CLIP's
    # vocabulary every built-in sentence takes 21-35 tokens.)
    _check_prompts(tok, ct, texts, 8)
    np.testing.assert_array_equal(ct.cue_ids, tok(texts).ids)
