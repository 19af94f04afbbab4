"""Tokenizers (lesson 02): text <-> token ids, all with one interface.

    from llmkit.tokenizers import BPETokenizer, CharTokenizer, load
    tok = BPETokenizer.train(text, vocab_size=1024)
    ids = tok.encode("Once upon a time")         # special-token text stays text by default
    ids = tok.encode("The end.<|endoftext|>", allowed_special="all")   # trusted text only
    tok.decode(ids); tok.token_pieces(ids); tok.save("tok.json")
    tok = load("tok.json")                       # picks the class from the file
    tok.add_special_tokens(["<|user|>"])         # new control tokens take the next ids
    decoder = tok.stream_decoder(); decoder.push(ids[0])   # text as ids arrive, one by one

- `CharTokenizer`: one token per character (nanoGPT's Shakespeare tokenizer).
- `BPETokenizer`: GPT-2's byte-level BPE; reads and writes GPT-2's own files.
- `llmkit.tokenizers.bpe.get_pair_counts` / `merge_pair`: lesson 02's building blocks.
"""

from __future__ import annotations

from llmkit.tokenizers.base import Tokenizer
from llmkit.tokenizers.bpe import (
    ENDOFTEXT,
    GPT2_SPLIT_PATTERN,
    BPETokenizer,
    get_pair_counts,
    merge_pair,
)
from llmkit.tokenizers.char import CharTokenizer


def load(path) -> Tokenizer:
    """Read any tokenizer written by `.save(path)`; the file's "type" picks the class."""
    return Tokenizer.load(path)


__all__ = [
    "ENDOFTEXT",
    "GPT2_SPLIT_PATTERN",
    "BPETokenizer",
    "CharTokenizer",
    "Tokenizer",
    "get_pair_counts",
    "load",
    "merge_pair",
]
