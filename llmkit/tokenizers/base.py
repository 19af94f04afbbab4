"""The one interface every tokenizer of the course shares, and its file format.

A tokenizer turns text into a list of integer ids (`encode`) and back (`decode`). Every
kind (characters, byte-level BPE) also knows its special tokens (e.g. `<|endoftext|>`,
which marks where one document ends), shows each id as a printable piece for the token
widget (`token_pieces`), and saves itself as readable JSON:

    {"type": "bpe", "format_version": 1, ...what that kind needs...}

The "type" field lets `Tokenizer.load(path)` (and `llmkit.tokenizers.load`) build the right
class from a file without being told which one it holds.

Special tokens are cut out of the text before anything else looks at it, the way tiktoken
does: `allowed_special="all"` turns every special string into its id, `"none"` treats them
as ordinary text, and a set of strings allows just those.
"""

from __future__ import annotations

import json
import numbers
import re
from pathlib import Path
from typing import ClassVar

FORMAT_VERSION = 1


def special_tokens_pattern(specials) -> re.Pattern | None:
    """A regex whose `split` cuts text around the given special strings (None if none).

    Longer strings are tried first, so a special token that contains another one wins.
    """
    alternatives = sorted(specials, key=len, reverse=True)
    if not alternatives:
        return None
    return re.compile("(" + "|".join(map(re.escape, alternatives)) + ")")


class Tokenizer:
    """Base class: text <-> list of token ids, with special tokens and a JSON file format.

    Subclasses set `kind` (the "type" written to files) and implement `encode_ordinary`,
    `decode`, `token_pieces`, `to_dict`, `from_dict` and the `vocab_size` property.
    """

    kind: ClassVar[str] = ""
    registry: ClassVar[dict[str, type[Tokenizer]]] = {}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.kind:
            Tokenizer.registry[cls.kind] = cls

    def __init__(self, special_tokens: dict[str, int] | None = None):
        special_tokens = dict(special_tokens or {})
        for text, token_id in special_tokens.items():
            if not isinstance(text, str) or not text:
                raise ValueError(f"special tokens must be non-empty strings, got {text!r}.")
            if not isinstance(token_id, int) or token_id < 0:
                raise ValueError(
                    f"special token {text!r} needs a non-negative int id, got {token_id!r}."
                )
        self.special_tokens = special_tokens
        self.special_by_id = {token_id: text for text, token_id in special_tokens.items()}
        if len(self.special_by_id) != len(special_tokens):
            raise ValueError(f"special tokens must have distinct ids, got {special_tokens}.")
        self.special_pattern = special_tokens_pattern(special_tokens)

    # ----- what each kind provides -------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        """Number of ids this tokenizer can produce (ordinary tokens plus special tokens)."""
        raise NotImplementedError

    def encode_ordinary(self, text: str) -> list[int]:
        """Encode `text` with no special-token handling at all."""
        raise NotImplementedError

    def decode(self, ids) -> str:
        """Token ids (a list, or a 1-D tensor / array of ints) -> the text they stand for."""
        raise NotImplementedError

    def token_pieces(self, ids) -> list[str]:
        """One printable string per id, for showing tokens one by one."""
        raise NotImplementedError

    def to_dict(self) -> dict:
        """Everything needed to rebuild this tokenizer, as JSON-friendly values."""
        raise NotImplementedError

    @classmethod
    def from_dict(cls, data: dict) -> Tokenizer:
        """Rebuild a tokenizer from `to_dict()`'s output (raises ValueError if malformed)."""
        raise NotImplementedError

    # ----- shared behaviour ---------------------------------------------------------------

    def encode(self, text: str, allowed_special="all") -> list[int]:
        """Text -> list of token ids.

        allowed_special: "all" (every special token in the text becomes its id), "none"
        (special-token text is encoded like any other text), or a set of the special
        strings to recognise.
        """
        if not isinstance(text, str):
            raise TypeError(f"encode() takes a str, got {type(text).__name__}.")
        pattern = self._special_pattern_for(allowed_special)
        if pattern is None:
            return self.encode_ordinary(text)
        ids: list[int] = []
        # re.split with one capturing group alternates: ordinary, special, ordinary, ...
        for position, chunk in enumerate(pattern.split(text)):
            if position % 2 == 1:
                ids.append(self.special_tokens[chunk])
            elif chunk:
                ids.extend(self.encode_ordinary(chunk))
        return ids

    def _special_pattern_for(self, allowed_special):
        if isinstance(allowed_special, str):
            if allowed_special == "all":
                return self.special_pattern
            if allowed_special == "none":
                return None
            raise ValueError(
                f"allowed_special must be 'all', 'none' or a set of special tokens, "
                f"got {allowed_special!r}."
            )
        allowed = set(allowed_special)
        unknown = allowed - set(self.special_tokens)
        if unknown:
            raise ValueError(
                f"allowed_special names {sorted(unknown)}, which are not special tokens of "
                f"this tokenizer; its special tokens are {sorted(self.special_tokens)}."
            )
        return special_tokens_pattern(allowed)

    def check_ids(self, ids) -> list[int]:
        """`ids` as a list of Python ints, each checked to be a valid id of this tokenizer."""
        if hasattr(ids, "tolist"):  # a torch tensor or NumPy array
            ids = ids.tolist()
        ids = list(ids)
        bad = [i for i in ids if not isinstance(i, numbers.Integral) or not 0 <= i < self.vocab_size]
        if bad:
            raise ValueError(
                f"token ids must be ints in [0, {self.vocab_size}), got {bad[:5]}"
                f"{' ...' if len(bad) > 5 else ''}; were they made by another tokenizer?"
            )
        return [int(i) for i in ids]

    def save(self, path) -> Path:
        """Write the tokenizer to `path` as readable JSON; returns the path."""
        path = Path(path)
        data = {"type": self.kind, "format_version": FORMAT_VERSION, **self.to_dict()}
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, path) -> Tokenizer:
        """Read a tokenizer written by `save`. On the base class, the file's "type" picks
        the class; on a subclass, the file must hold that kind."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(
                f"no tokenizer file at {path}; check the path, or train one and call "
                ".save(path) first."
            )
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ValueError(
                f"{path} is not a tokenizer file (not valid JSON: {error}); it may be "
                "truncated or corrupt. Re-create it with tokenizer.save(path)."
            ) from error
        kind = data.get("type") if isinstance(data, dict) else None
        if kind not in Tokenizer.registry:
            raise ValueError(
                f"{path} has tokenizer type {kind!r}; expected one of "
                f"{sorted(Tokenizer.registry)}. Is it a file written by tokenizer.save()?"
            )
        if cls.kind and kind != cls.kind:
            raise ValueError(
                f"{path} holds a {kind!r} tokenizer, not a {cls.kind!r} one; load it with "
                f"llmkit.tokenizers.load(path) or {Tokenizer.registry[kind].__name__}.load(path)."
            )
        version = data.get("format_version")
        if version != FORMAT_VERSION:
            raise ValueError(
                f"{path} has format_version {version!r}; this llmkit reads version "
                f"{FORMAT_VERSION}. Re-save the tokenizer with this llmkit version."
            )
        try:
            return Tokenizer.registry[kind].from_dict(data)
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(
                f"{path} is a damaged {kind!r} tokenizer file ({error!r}); "
                "re-create it with tokenizer.save(path)."
            ) from error

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(vocab_size={self.vocab_size}, "
            f"special_tokens={self.special_tokens})"
        )
