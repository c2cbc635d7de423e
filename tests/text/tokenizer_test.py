"""Tokenizer: fixed-length ids, EOT positions, truncation, and agreement with CLIPTokenizer."""

import os
import sys

import numpy as np
import pytest
import transformers

sys.path.insert(0, os.path.dirname(os.path.dirname(__file__)))
import clip_fixtures  # noqa: E402

from grace_jax.text import tokenizer as tokenizer_lib  # noqa: E402


@pytest.fixture(scope="module")
def vocab_dir(tmp_path_factory):
    return clip_fixtures.write_tokenizer_dir(str(tmp_path_factory.mktemp("vocab")))


def test_ids_and_eot(vocab_dir):
    tok = tokenizer_lib.Tokenizer.from_pretrained(vocab_dir)
    assert tok.vocab_size == 1024 and tok.eot_token_id == 1023 and tok.sot_token_id == 1022
    out = tok(["a photo of a face showing happiness", "", "the person looks sad"])
    assert out.ids.shape == (3, 77) and out.ids.dtype == np.int32
    assert out.eot_index.dtype == np.int32
    assert (out.ids[:, 0] == tok.sot_token_id).all()
    for row, eot in zip(out.ids, out.eot_index):
        assert row[eot] == tok.eot_token_id
        assert (row[1:eot] != tok.eot_token_id).all()
    assert out.eot_index[1] == 1  # Empty text: SOT then EOT.
    hf = transformers.CLIPTokenizer.from_pretrained(vocab_dir)
    expected = hf("the person looks sad")["input_ids"]
    np.testing.assert_array_equal(out.ids[2, : len(expected)], expected)
    assert len(expected) < 10  # Merges were learned: words are not spelled letter by letter.


def test_truncation_keeps_eot_last(vocab_dir):
    tok = tokenizer_lib.Tokenizer.from_pretrained(vocab_dir)
    out = tok(["happiness " * 100])
    assert out.eot_index[0] == 76 and out.ids[0, 76] == tok.eot_token_id


def test_bad_inputs(vocab_dir, tmp_path):
    tok = tokenizer_lib.Tokenizer.from_pretrained(vocab_dir)
    with pytest.raises(TypeError):
        tok("a single string")
    with pytest.raises(ValueError, match=str(tmp_path)):
        tokenizer_lib.Tokenizer.from_pretrained(str(tmp_path))


def test_builtin_tiny_matches_the_tiny_clip():
    from grace_jax.models import clip

    tok = tokenizer_lib.Tokenizer.from_pretrained(tokenizer_lib.BUILTIN_TINY)
    tiny = clip.clip_config("tiny").text
    assert tok.vocab_size == tiny.vocab_size and tok.eot_token_id == tiny.eos_token_id
    assert tok(["a face showing fear"]).eot_index[0] < 10
