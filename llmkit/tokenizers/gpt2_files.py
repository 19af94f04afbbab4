"""GPT-2's tokenizer file format: `encoder.json` + `vocab.bpe`, and its byte alphabet.

GPT-2 (OpenAI's `encoder.py`, and Hugging Face's `GPT2Tokenizer`) stores a byte-level BPE
vocabulary as two text files:

- `encoder.json`: {token string: id}, for every token including `<|endoftext|>`;
- `vocab.bpe`: a "#version: 0.2" line, then one merge per line, "left right", in rank
  order (the first line merges first).

Tokens are byte strings, but JSON and text files want printable text, so each of the 256
byte values is written as one printable Unicode character: printable Latin-1 bytes stand
for themselves and the others (space, newline, control bytes...) are moved up to
U+0100 and beyond. That is why a space shows as "Ġ" and a newline as "Ċ" in GPT-2's files.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

VERSION_LINE = "#version: 0.2"


@lru_cache(maxsize=None)
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's printable stand-in for each byte value: {0..255: one-character str}.

    Bytes that are printable in Latin-1 ('!'..'~', '¡'..'¬', '®'..'ÿ') keep their own
    character; the remaining 68 take U+0100, U+0101, ... in byte order.
    """
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    mapping = {b: chr(b) for b in printable}
    next_free = 256
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(next_free)
            next_free += 1
    return mapping


@lru_cache(maxsize=None)
def unicode_to_bytes() -> dict[str, int]:
    """The inverse of `bytes_to_unicode`: {printable character: byte value}."""
    return {char: b for b, char in bytes_to_unicode().items()}


def bytes_to_printable(token: bytes) -> str:
    """b' the' -> 'Ġthe' (GPT-2's way of writing a token in its files)."""
    table = bytes_to_unicode()
    return "".join(table[b] for b in token)


def printable_to_bytes(piece: str) -> bytes:
    """'Ġthe' -> b' the'; raises ValueError on characters outside GPT-2's byte alphabet."""
    table = unicode_to_bytes()
    try:
        return bytes(table[char] for char in piece)
    except KeyError as error:
        raise ValueError(
            f"{piece!r} contains {error.args[0]!r}, which is not one of GPT-2's 256 byte "
            "characters."
        ) from None


def read_gpt2_files(encoder_json_path, vocab_bpe_path) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Read GPT-2's two files -> (encoder {token string: id}, merges [(left, right), ...]).

    Strings stay in GPT-2's printable alphabet; merges come in rank order.
    """
    encoder_json_path, vocab_bpe_path = Path(encoder_json_path), Path(vocab_bpe_path)
    for path in (encoder_json_path, vocab_bpe_path):
        if not path.is_file():
            raise FileNotFoundError(
                f"no file at {path}; GPT-2's tokenizer needs both encoder.json and vocab.bpe."
            )
    try:
        encoder = json.loads(encoder_json_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(
            f"{encoder_json_path} is not valid JSON ({error}); expected GPT-2's encoder.json."
        ) from error
    if not isinstance(encoder, dict) or not all(
        isinstance(k, str) and isinstance(v, int) for k, v in encoder.items()
    ):
        raise ValueError(
            f"{encoder_json_path} should map token strings to int ids, like GPT-2's encoder.json."
        )
    merges = []
    lines = vocab_bpe_path.read_text(encoding="utf-8").split("\n")
    for number, line in enumerate(lines, start=1):
        if not line or (number == 1 and line.startswith("#version")):
            continue
        parts = line.split(" ")
        if len(parts) != 2 or not all(parts):
            raise ValueError(
                f"{vocab_bpe_path}, line {number}: expected 'left right' (two tokens and one "
                f"space), got {line!r}."
            )
        merges.append((parts[0], parts[1]))
    return encoder, merges


def write_gpt2_files(folder, encoder: dict[str, int], merges) -> tuple[Path, Path]:
    """Write encoder.json and vocab.bpe into `folder` (created if needed); returns both paths.

    encoder: {token string: id} in GPT-2's printable alphabet; merges: [(left, right), ...]
    in rank order.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    encoder_path, merges_path = folder / "encoder.json", folder / "vocab.bpe"
    encoder_path.write_text(json.dumps(encoder, ensure_ascii=False), encoding="utf-8")
    lines = [VERSION_LINE] + [f"{left} {right}" for left, right in merges]
    merges_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return encoder_path, merges_path
