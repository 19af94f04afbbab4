"""The character tokenizer: one token per character of the training text (lesson 02).

The vocabulary is the sorted set of characters seen in training, so ids follow Unicode
order ("\\n" < " " < "A" < "a"); special tokens come after them. This is the tokenizer of
nanoGPT's Shakespeare-by-character model: tiny vocabulary, long sequences, and any
character it never saw cannot be encoded at all (byte-level BPE fixes that).

Fine-tuning data may need characters the pretraining text never had ('?' in a question):
`add_chars` gives them the next free ids, after every existing id, as `add_special_tokens`
does for control tokens, so the ids a model was trained on keep their meaning.
"""

from __future__ import annotations

from llmkit.tokenizers.base import Tokenizer


class CharTokenizer(Tokenizer):
    """Maps each known character to an id: chars[i] <-> i, then the special tokens."""

    kind = "char"

    def __init__(self, chars, special_tokens: dict[str, int] | None = None,
                 added_chars: dict[str, int] | None = None):
        chars = list(chars)
        if any(not isinstance(c, str) or len(c) != 1 for c in chars):
            raise ValueError("chars must be single characters, e.g. sorted(set(text)).")
        if len(set(chars)) != len(chars):
            raise ValueError("chars must not repeat a character.")
        super().__init__(special_tokens)
        taken = set(range(len(chars)))
        for text, token_id in self.special_tokens.items():
            if token_id in taken:
                raise ValueError(
                    f"special token {text!r} has id {token_id}, which is already taken; "
                    f"special ids start at {len(chars)} (after the characters)."
                )
            taken.add(token_id)
        self.chars = chars
        self.char_to_id = {c: i for i, c in enumerate(chars)}
        self.added_by_id: dict[int, str] = {}
        if added_chars:
            self.add_chars_with_ids(dict(added_chars))

    def add_chars_with_ids(self, added: dict[str, int]) -> None:
        """Register characters added after training, {char: id} (see `add_chars`)."""
        for char, token_id in added.items():
            if not isinstance(char, str) or len(char) != 1 or char in self.char_to_id:
                raise ValueError(f"an added character must be one new character, got {char!r}.")
            if (not isinstance(token_id, int) or token_id < len(self.chars)
                    or token_id in self.special_by_id or token_id in self.added_by_id):
                raise ValueError(f"added character {char!r} has id {token_id!r}, which is "
                                 "taken or not an id after the trained characters.")
            self.char_to_id[char] = token_id
            self.added_by_id[token_id] = char
        self.cached_vocab_size = None

    def add_chars(self, text: str) -> dict[str, int]:
        """Give the characters of `text` this tokenizer does not know the next free ids.

        Returns {new char: id} (empty if every character is known), in sorted order. Grow
        the model's embedding to the new vocab_size (llmkit.finetune.resize_token_embedding).
        """
        if not isinstance(text, str):
            raise TypeError(f"add_chars() takes a str, got {type(text).__name__}.")
        new = sorted(set(text) - set(self.char_to_id))
        added = {char: self.vocab_size + i for i, char in enumerate(new)}
        self.add_chars_with_ids(added)
        return added

    @classmethod
    def train(cls, text: str, special_tokens=()) -> CharTokenizer:
        """Build the vocabulary from the distinct characters of `text` (sorted).

        Special-token strings inside `text` are not counted as characters.
        special_tokens: strings such as "<|endoftext|>", given ids after the characters.
        """
        if not isinstance(text, str):
            raise TypeError(f"train() takes the training text as a str, got {type(text).__name__}.")
        special_tokens = list(dict.fromkeys(special_tokens))
        for special in special_tokens:
            if not isinstance(special, str) or not special:
                raise ValueError(f"special tokens must be non-empty strings, got {special!r}.")
            text = text.replace(special, "")
        if not text:
            raise ValueError(
                "the training text is empty (apart from special tokens); a character "
                "tokenizer needs text to take its characters from."
            )
        chars = sorted(set(text))
        specials = {special: len(chars) + i for i, special in enumerate(special_tokens)}
        return cls(chars, specials)

    def count_ids(self) -> int:
        """Number of characters plus special tokens (the largest id + 1)."""
        return max([len(self.chars) - 1, *self.special_tokens.values(), *self.added_by_id]) + 1

    def encode_ordinary(self, text: str) -> list[int]:
        """Text -> one id per character; characters not seen in training raise ValueError."""
        try:
            return [self.char_to_id[c] for c in text]
        except KeyError:
            unknown = sorted(set(text) - set(self.char_to_id))
            shown = ", ".join(repr(c) for c in unknown[:10])
            more = f" and {len(unknown) - 10} more" if len(unknown) > 10 else ""
            raise ValueError(
                f"this character tokenizer never saw {shown}{more} in training, so it has "
                "no id for them. Add them with tokenizer.add_chars(text) (then grow the "
                "model's embedding: llmkit.finetune.resize_token_embedding), retrain on text "
                "that contains them, or remove them from the input (a byte-level "
                "BPETokenizer can encode any text)."
            ) from None

    def decode(self, ids) -> str:
        """Ids -> text: the characters (and special-token strings) joined."""
        return "".join(self.token_pieces(ids))

    def token_pieces(self, ids) -> list[str]:
        """The character (or special-token string) of each id."""
        n_chars = len(self.chars)
        return [
            self.chars[i] if i < n_chars else self.special_by_id.get(i) or self.added_by_id[i]
            for i in self.check_ids(ids)
        ]

    def check_ids(self, ids) -> list[int]:
        """`ids` as a list of ints, each a character's or a special token's id."""
        ids = super().check_ids(ids)
        gaps = [i for i in ids if i >= len(self.chars) and i not in self.special_by_id
                and i not in self.added_by_id]
        if gaps:
            raise ValueError(f"token ids {gaps[:5]} belong to no character or special token.")
        return ids

    def to_dict(self) -> dict:
        """{"chars": [...], "special_tokens": {...}, "added_chars": {...} if any} (the "type"
        is added by save)."""
        data = {"chars": self.chars, "special_tokens": self.special_tokens}
        if self.added_by_id:
            data["added_chars"] = {char: i for i, char in self.added_by_id.items()}
        return data

    @classmethod
    def from_dict(cls, data: dict) -> CharTokenizer:
        """Rebuild from `to_dict()`'s output; a damaged part raises a ValueError naming it."""
        chars = data["chars"]
        if not isinstance(chars, list):
            raise ValueError(f'"chars" must be a list of single characters, got '
                             f"{type(chars).__name__}")
        added = data.get("added_chars", {})
        if not isinstance(added, dict):
            raise ValueError(f'"added_chars" must map characters to ids, got {type(added).__name__}')
        return cls(chars, data.get("special_tokens", {}), added)
