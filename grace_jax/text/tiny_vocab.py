"""A small CLIP-style BPE vocabulary built on the fly, for the demo and the tests.

Real CLIP vocabularies come with pretrained checkpoints, which cannot be downloaded everywhere; the
`tiny` CLIP variant with random weights needs a tokenizer all the same. This one has the format of
OpenAI's (`vocab.json` + `merges.txt`, byte-level symbols, `</w>` word ends, <|startoftext|> and
<|endoftext|> last), merges learned from emotion and facial-action words, and exactly `vocab_size`
entries, so `transformers.CLIPTokenizer.from_pretrained` reads it like any CLIP tokenizer.
"""

from __future__ import annotations

import collections
import json
import os

_CORPUS = (
    "a photo of a face showing happiness sadness neutral anger surprise disgust fear contempt "
    "anxiety helplessness disappointment cheeks raised lip corners pulled up brows lowered drawn "
    "together eyes widened jaw dropped nose wrinkled upper lip raised mouth corners down tense lids "
    "the person looks happy sad angry surprised disgusted afraid calm"
)


def _byte_alphabet() -> list[str]:
    """The 256 printable stand-ins byte-level BPE uses for raw bytes, in byte order."""
    keep = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    extra = iter(range(256, 512))
    return [chr(b) if b in keep else chr(next(extra)) for b in range(256)]


def _learn_merges(words: list[str], count: int) -> list[tuple[str, str]]:
    """Greedy BPE on a word list, symbols ending in '</w>' at word ends."""
    vocab = collections.Counter(tuple(w[:-1]) + (w[-1] + "</w>",) for w in words)
    merges = []
    while len(merges) < count:
        pairs = collections.Counter()
        for symbols, n in vocab.items():
            for pair in zip(symbols, symbols[1:]):
                pairs[pair] += n
        if not pairs:
            break
        best = max(pairs, key=lambda p: (pairs[p], p))
        merges.append(best)
        merged = collections.Counter()
        for symbols, n in vocab.items():
            out, i = [], 0
            while i < len(symbols):
                if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == best:
                    out.append(symbols[i] + symbols[i + 1])
                    i += 2
                else:
                    out.append(symbols[i])
                    i += 1
            merged[tuple(out)] += n
        vocab = merged
    return merges


def write_tiny_vocab(directory: str, vocab_size: int = 1024) -> str:
    """Writes vocab.json + merges.txt for `CLIPTokenizer.from_pretrained(directory)`.

    The vocabulary has exactly `vocab_size` entries with <|startoftext|> and <|endoftext|> last, as in
    OpenAI's, so the tiny CLIP's eos_token_id (vocab_size - 1) is the tokenizer's.
    """
    alphabet = _byte_alphabet()
    tokens = alphabet + [c + "</w>" for c in alphabet]
    merges = _learn_merges(_CORPUS.split(), 200)
    seen = set(tokens)
    for a, b in merges:
        seen.add(a + b)
        tokens.append(a + b)
    letters = "abcdefghijklmnopqrstuvwxyz"
    fillers = ((a, b) for a in letters for b in letters)
    while len(tokens) < vocab_size - 2:  # Filler merges pad the vocabulary to its exact size.
        a, b = next(fillers)
        if a + b not in seen:
            seen.add(a + b)
            merges.append((a, b))
            tokens.append(a + b)
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "vocab.json"), "w") as f:
        json.dump({t: i for i, t in enumerate(tokens)}, f)
    with open(os.path.join(directory, "merges.txt"), "w") as f:
        f.write("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    return directory


def cached_tiny_vocab(vocab_size: int = 1024) -> str:
    """The tiny vocabulary in one shared temp folder, written once and atomically.

    The vocabulary is deterministic, so every process can share it; a process writes a private copy
    and renames it into place, so a reader never sees a half-written folder.
    """
    import tempfile

    final = os.path.join(tempfile.gettempdir(), f"grace_jax_tiny_vocab_{vocab_size}")
    if os.path.exists(os.path.join(final, "merges.txt")):
        return final
    staging = tempfile.mkdtemp(prefix=f"grace_jax_tiny_vocab_{vocab_size}.")
    write_tiny_vocab(staging, vocab_size)
    try:
        os.rename(staging, final)
    except OSError:  # Another process got there first; its copy is identical.
        import shutil

        shutil.rmtree(staging, ignore_errors=True)
    return final
