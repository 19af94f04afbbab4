"""The one interface every tokenizer of the course shares, and its file format.

A tokenizer turns text into a list of integer ids (`encode`) and back (`decode`). Every
kind (characters, byte-level BPE) also knows its special tokens (e.g. `<|endoftext|>`,
which marks where one document ends), shows each id as a printable piece for the token
widget (`token_pieces`), and saves itself as readable JSON:

    {"type": "bpe", "format_version": 1, ...what that kind needs...}

The "type" field lets `Tokenizer.load(path)` (and `llmkit.tokenizers.load`) build the right
class from a file without being told which one it holds.

Special tokens are cut out of the text before anything else looks at it, the way tiktoken
does, but only when the caller says so: by default (`allowed_special="none"`) a special
string in the text is encoded as ordinary text, so a user who types `<|end|>` into a chat
cannot end the assistant's turn. A trusted corpus opts in with `allowed_special="all"`, or
with a set of the special strings to recognise.

`add_special_tokens` gives a trained tokenizer new control tokens (chat roles, end of turn,
a pad token) with the next free ids; `llmkit.finetune.resize_token_embedding` grows a
model's embedding to match. `stream_decoder()` turns ids into text one at a time, holding
back a character whose bytes are split over two tokens.
"""

from __future__ import annotations

import codecs
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
    `decode`, `token_pieces`, `to_dict`, `from_dict` and `count_ids` (the vocabulary size,
    which `vocab_size` keeps so that checking an id costs O(1)).
    """

    kind: ClassVar[str] = ""
    registry: ClassVar[dict[str, type[Tokenizer]]] = {}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.kind:
            Tokenizer.registry[cls.kind] = cls

    def __init__(self, special_tokens: dict[str, int] | None = None):
        if not isinstance(special_tokens, (dict, type(None))):
            raise ValueError(
                f"special_tokens must be a dict {{string: id}}, got {type(special_tokens).__name__}."
            )
        special_tokens = dict(special_tokens or {})
        for text, token_id in special_tokens.items():
            if not isinstance(text, str) or not text:
                raise ValueError(f"special tokens must be non-empty strings, got {text!r}.")
            if not isinstance(token_id, int) or isinstance(token_id, bool) or token_id < 0:
                raise ValueError(
                    f"special token {text!r} needs a non-negative int id, got {token_id!r}."
                )
        self.special_tokens = special_tokens
        self.special_by_id = {token_id: text for text, token_id in special_tokens.items()}
        if len(self.special_by_id) != len(special_tokens):
            raise ValueError(f"special tokens must have distinct ids, got {special_tokens}.")
        self.special_pattern = special_tokens_pattern(special_tokens)
        self.cached_vocab_size: int | None = None

    @property
    def vocab_size(self) -> int:
        """Number of ids this tokenizer can produce (ordinary tokens plus special tokens).

        Counted once (by `count_ids`) and kept: decoding checks every id against it, and
        counting walks the whole vocabulary (50,257 tokens for GPT-2).
        """
        if self.cached_vocab_size is None:
            self.cached_vocab_size = self.count_ids()
        return self.cached_vocab_size

    # ----- what each kind provides -------------------------------------------------------

    def count_ids(self) -> int:
        """The vocabulary size worked out from scratch: the largest id + 1."""
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

    def token_bytes(self, token_id: int) -> bytes:
        """The UTF-8 bytes one id stands for (`stream_decoder` joins these)."""
        return self.token_pieces([token_id])[0].encode("utf-8")

    # ----- shared behaviour ---------------------------------------------------------------

    def encode(self, text: str, allowed_special="none") -> list[int]:
        """Text -> list of token ids.

        allowed_special: "none" (the default: special-token text is encoded like any other
        text, so typed text can never become a control token), "all" (every special token
        in the text becomes its id: for trusted text, such as a corpus with
        <|endoftext|> between documents), or a set of the special strings to recognise.
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
        size = self.vocab_size
        bad = [i for i in ids if not isinstance(i, numbers.Integral) or isinstance(i, bool)
               or not 0 <= i < size]
        if bad:
            raise ValueError(
                f"token ids must be ints in [0, {size}), got {bad[:5]}"
                f"{' ...' if len(bad) > 5 else ''}; were they made by another tokenizer?"
            )
        return [int(i) for i in ids]

    def add_special_tokens(self, names) -> dict[str, int]:
        """Give this (trained) tokenizer new special tokens, with the next free ids.

        names: strings such as ["<|user|>", "<|assistant|>", "<|end|>", "<|pad|>"].
        Returns {name: new id}. The ids come after every existing id, so the ids of a model
        trained with this tokenizer keep their meaning; grow the model's embedding to the
        new `vocab_size` (llmkit.finetune.resize_token_embedding). A name that is already
        a special token raises a ValueError (look it up in `special_tokens` instead).
        """
        if isinstance(names, str):
            names = [names]
        names = list(names)
        for name in names:
            if not isinstance(name, str) or not name:
                raise ValueError(f"special tokens must be non-empty strings, got {name!r}.")
        existing = [name for name in names if name in self.special_tokens]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if existing or repeated:
            clash = existing or repeated
            where = ("already a special token of this tokenizer, with id "
                     f"{[self.special_tokens[n] for n in existing]}") if existing else \
                "named twice in this call"
            raise ValueError(
                f"{clash} is {where}; add only new names (the existing ids are in "
                "tokenizer.special_tokens)."
            )
        start = self.vocab_size
        added = {name: start + i for i, name in enumerate(names)}
        self.special_tokens = {**self.special_tokens, **added}
        self.special_by_id = {token_id: text for text, token_id in self.special_tokens.items()}
        self.special_pattern = special_tokens_pattern(self.special_tokens)
        self.cached_vocab_size = self.count_ids()
        return added

    def stream_decoder(self) -> StreamDecoder:
        """A decoder for ids that arrive one at a time (see `StreamDecoder`)."""
        return StreamDecoder(self)

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
        except KeyError as error:
            problem = f"it has no {error.args[0]!r} field"
        except (TypeError, ValueError, AttributeError) as error:
            problem = str(error).rstrip(".")
        raise ValueError(
            f"{path} is a damaged {kind!r} tokenizer file: {problem}. Re-create it with "
            "tokenizer.save(path)."
        )

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(vocab_size={self.vocab_size}, "
            f"special_tokens={self.special_tokens})"
        )


class StreamDecoder:
    """Turns token ids into text one id at a time, in O(1) per id.

        decoder = tokenizer.stream_decoder()
        for token_id in ids:
            print(decoder.push(token_id), end="")
        print(decoder.flush())

    `push` returns the new text the id completes. A byte-level token can end in the middle
    of a multi-byte character ('€' is three bytes, possibly in two tokens); those bytes are
    held back until the character is whole. `flush` returns what is still held (a cut-off
    character becomes U+FFFD). The pieces joined equal `tokenizer.decode(ids)`; the tests
    check that on random byte splits.
    """

    def __init__(self, tokenizer: Tokenizer):
        self.tokenizer = tokenizer
        self.utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, token_id) -> str:
        """One id -> the text it completes ('' while a character is still incomplete)."""
        (token_id,) = self.tokenizer.check_ids([token_id])
        return self.utf8.decode(self.tokenizer.token_bytes(token_id))

    def flush(self) -> str:
        """The text still held back (a cut-off character as U+FFFD); resets the decoder."""
        text = self.utf8.decode(b"", final=True)
        self.utf8.reset()
        return text
