"""Byte-level byte-pair encoding (BPE), the tokenizer of GPT-2 (lesson 02).

Text is UTF-8 bytes, so the 256 byte values are the first tokens and any text at all can
be encoded. Training then repeats one step: find the most frequent pair of adjacent
tokens and merge it into a new token, until the vocabulary has the size asked for.

As in GPT-2, the text is first cut into "words" by a regular expression (letters with
their leading space, numbers, punctuation runs, whitespace runs), and pairs are never
merged across two words, so " dog" and " dog." share the token " dog".

Two things make training fast in pure Python (1 MB of text to 1,024 tokens in seconds,
where recounting every pair after every merge takes minutes):

- each distinct word is stored once, with how often it occurs;
- pair counts are kept up to date: a merge touches only the words that contain the pair
  (an index from each pair to those words finds them), and a heap finds the next most
  frequent pair.

Ties between equally frequent pairs go to the smaller pair (compared as (left id, right
id)), so training is deterministic. Encoding applies the learned merges by rank, lowest
first, inside each word, exactly like GPT-2's `encoder.py`, Hugging Face's GPT2Tokenizer
and tiktoken; the tests check all three on the same files.

Lesson 02's reference helpers `get_pair_counts` and `merge_pair` are at the top.
"""

from __future__ import annotations

import heapq
import warnings
from collections import Counter, defaultdict

import regex

from llmkit.tokenizers.base import Tokenizer, special_tokens_pattern
from llmkit.tokenizers.gpt2_files import (
    bytes_to_printable,
    printable_to_bytes,
    read_gpt2_files,
    unicode_to_bytes,
    write_gpt2_files,
)

# GPT-2's pre-split: contractions, letters, numbers, other symbols (each with an optional
# leading space), then whitespace; `\s+(?!\S)` leaves the last space of a run to the word.
GPT2_SPLIT_PATTERN = (
    r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
)
ENDOFTEXT = "<|endoftext|>"


# ----- lesson 02's two helpers -------------------------------------------------------------


def get_pair_counts(ids) -> dict[tuple[int, int], int]:
    """Count adjacent pairs: [1, 2, 1, 2, 3] -> {(1, 2): 2, (2, 1): 1, (2, 3): 1}.

    ids: a sequence of token ids. Pairs appear in the order they first occur.
    """
    counts: dict[tuple[int, int], int] = {}
    for pair in zip(ids, ids[1:]):
        counts[pair] = counts.get(pair, 0) + 1
    return counts


def merge_pair(ids, pair: tuple[int, int], new_id: int) -> list[int]:
    """Replace each occurrence of `pair` in `ids` by `new_id`, scanning left to right.

    Occurrences do not overlap: merge_pair([5, 5, 5], (5, 5), 9) -> [9, 5].
    """
    first, second = pair
    merged = []
    i, n = 0, len(ids)
    while i < n:
        if i < n - 1 and ids[i] == first and ids[i + 1] == second:
            merged.append(new_id)
            i += 2
        else:
            merged.append(ids[i])
            i += 1
    return merged


# ----- training ----------------------------------------------------------------------------


def split_words(text: str, pattern: str = GPT2_SPLIT_PATTERN) -> list[str]:
    """GPT-2's pre-split: 'Hello world!!' -> ['Hello', ' world', '!!']."""
    return regex.findall(pattern, text)


def learn_merges(
    word_counts: dict[bytes, int], n_new_tokens: int
) -> tuple[dict[int, bytes], list[tuple[int, int]]]:
    """Learn BPE merges from distinct words and their counts.

    word_counts: {word as UTF-8 bytes: occurrences}. Ids 0..255 are the bytes.
    Returns (vocab {id: bytes}, merges [(left id, right id), ...] in rank order); merge r
    makes the token vocab[left] + vocab[right]. Stops early (with a warning) when no word
    has two tokens left to merge.
    """
    vocab = {b: bytes([b]) for b in range(256)}
    id_of = {token: i for i, token in vocab.items()}
    words = [list(word) for word in word_counts]
    counts = list(word_counts.values())

    pair_counts: dict[tuple[int, int], int] = defaultdict(int)
    words_with: dict[tuple[int, int], set[int]] = defaultdict(set)
    for w, ids in enumerate(words):
        for pair in zip(ids, ids[1:]):
            pair_counts[pair] += counts[w]
            words_with[pair].add(w)
    # A heap of (-count, pair): the most frequent pair on top, the smaller pair on ties.
    # Counts change all the time, so entries go stale; a popped entry is used only if its
    # count is still the pair's current count (the fresh entry was pushed when it changed).
    heap = [(-count, pair) for pair, count in pair_counts.items()]
    heapq.heapify(heap)

    merges: list[tuple[int, int]] = []
    done: set[tuple[int, int]] = set()
    while len(vocab) < 256 + n_new_tokens:
        while heap and (pair_counts.get(heap[0][1], 0) != -heap[0][0] or heap[0][1] in done):
            heapq.heappop(heap)
        if not heap:
            warnings.warn(
                f"BPE training ran out of pairs to merge after {len(merges)} merges: every "
                "word is a single token. The vocabulary is smaller than asked for; use "
                "more (or more varied) training text.",
                stacklevel=3,
            )
            break
        pair = heapq.heappop(heap)[1]
        token = vocab[pair[0]] + vocab[pair[1]]
        # Two different merges could spell the same bytes (("ab", "c") and ("a", "bc")). We
        # have not seen it happen on real text, but if it does the token keeps its first
        # id, so that every token string appears once, as GPT-2's files require.
        new_id = id_of.get(token)
        if new_id is None:
            new_id = len(vocab)
            vocab[new_id], id_of[token] = token, new_id
        merges.append(pair)
        done.add(pair)

        touched = set()
        for w in words_with.pop(pair):
            ids, count = words[w], counts[w]
            new_ids = merge_pair(ids, pair, new_id)
            if len(new_ids) == len(ids):  # an index entry left over from an earlier merge
                continue
            for old_pair in zip(ids, ids[1:]):
                pair_counts[old_pair] -= count
                touched.add(old_pair)
            for new_pair in zip(new_ids, new_ids[1:]):
                pair_counts[new_pair] += count
                words_with[new_pair].add(w)
                touched.add(new_pair)
            words[w] = new_ids
        for changed in touched:
            count = pair_counts[changed]
            if count > 0:
                heapq.heappush(heap, (-count, changed))
            else:
                del pair_counts[changed]
    return vocab, merges


# ----- the tokenizer -----------------------------------------------------------------------


class BPETokenizer(Tokenizer):
    """Byte-level BPE: bytes are the base tokens, learned merges build longer ones.

    vocab: {id: bytes} with all 256 single bytes and each merge's result;
    merges: [(left id, right id), ...] in rank order (the first merges first);
    special_tokens: {string: id}, ids outside `vocab`; pattern: the pre-split regex.
    """

    kind = "bpe"

    def __init__(
        self,
        vocab: dict[int, bytes],
        merges,
        special_tokens: dict[str, int] | None = None,
        pattern: str = GPT2_SPLIT_PATTERN,
    ):
        super().__init__(special_tokens)
        self.vocab = {int(i): bytes(token) for i, token in vocab.items()}
        self.id_of = {token: i for i, token in self.vocab.items()}
        if len(self.id_of) != len(self.vocab):
            raise ValueError("two token ids in vocab have the same bytes; each must be unique.")
        missing = [b for b in range(256) if bytes([b]) not in self.id_of]
        if missing:
            raise ValueError(
                f"a byte-level vocab needs all 256 single bytes; missing {missing[:5]}."
            )
        clashes = set(self.special_by_id) & set(self.vocab)
        if clashes:
            raise ValueError(f"special token ids {sorted(clashes)} are also ordinary token ids.")
        self.byte_ids = [self.id_of[bytes([b])] for b in range(256)]

        self.merges = [(int(left), int(right)) for left, right in merges]
        self.merge_rank: dict[tuple[int, int], int] = {}
        self.merge_result: dict[tuple[int, int], int] = {}
        for rank, pair in enumerate(self.merges):
            if pair in self.merge_rank:
                raise ValueError(f"merge {pair} appears twice (ranks {self.merge_rank[pair]}, {rank}).")
            if pair[0] not in self.vocab or pair[1] not in self.vocab:
                raise ValueError(f"merge {rank} uses ids {pair} that are not in vocab.")
            token = self.vocab[pair[0]] + self.vocab[pair[1]]
            if token not in self.id_of:
                raise ValueError(f"merge {rank} makes {token!r}, which is not in vocab.")
            self.merge_rank[pair] = rank
            self.merge_result[pair] = self.id_of[token]

        self.pattern = pattern
        try:
            self.compiled_pattern = regex.compile(pattern)
        except (regex.error, TypeError) as error:
            raise ValueError(f"pattern {pattern!r:.80} is not a valid regular expression "
                             f"({error}); GPT2_SPLIT_PATTERN is the usual one.") from None
        self.cache: dict[str, list[int]] = {}

    @classmethod
    def train(
        cls,
        text: str,
        vocab_size: int,
        special_tokens=(ENDOFTEXT,),
        pattern: str = GPT2_SPLIT_PATTERN,
    ) -> BPETokenizer:
        """Learn a vocabulary of `vocab_size` ids (256 bytes + merges + special tokens).

        Special-token strings in `text` separate documents: they are cut out before
        counting, so no merge spans them. Special tokens take the last ids.
        """
        if not isinstance(text, str):
            raise TypeError(f"train() takes the training text as a str, got {type(text).__name__}.")
        special_tokens = list(dict.fromkeys(special_tokens))
        if not isinstance(vocab_size, int) or vocab_size < 256 + len(special_tokens):
            raise ValueError(
                f"vocab_size must be at least 256 (one token per byte) + "
                f"{len(special_tokens)} special token(s) = {256 + len(special_tokens)}, "
                f"got {vocab_size!r}."
            )
        splitter = special_tokens_pattern(special_tokens)
        documents = splitter.split(text)[::2] if splitter else [text]
        word_counts = Counter()
        for document in documents:
            word_counts.update(split_words(document, pattern))
        if not word_counts:
            raise ValueError(
                "the training text is empty (apart from special tokens); BPE needs text to "
                "count pairs in."
            )
        n_new = vocab_size - 256 - len(special_tokens)
        vocab, merges = learn_merges(
            {word.encode("utf-8"): n for word, n in word_counts.items()}, n_new
        )
        specials = {special: len(vocab) + i for i, special in enumerate(special_tokens)}
        return cls(vocab, merges, specials, pattern)

    def count_ids(self) -> int:
        """Number of ids: ordinary tokens plus special tokens (the largest id + 1)."""
        return max([*self.vocab, *self.special_tokens.values()]) + 1

    # ----- encoding and decoding -----------------------------------------------------------

    def encode_word(self, word: str) -> list[int]:
        """One pre-split word -> ids: start from its bytes, apply merges lowest rank first."""
        ids = [self.byte_ids[b] for b in word.encode("utf-8")]
        rank = self.merge_rank
        while len(ids) >= 2:
            pair = min(zip(ids, ids[1:]), key=lambda p: rank.get(p, float("inf")))
            if pair not in rank:
                break
            ids = merge_pair(ids, pair, self.merge_result[pair])
        return ids

    def encode_ordinary(self, text: str) -> list[int]:
        """Text -> ids, with no special-token handling ("<|endoftext|>" is plain text here)."""
        ids: list[int] = []
        cache = self.cache
        if len(cache) > 200_000:  # bound the memory a long, varied corpus can take
            cache.clear()
        for word in self.compiled_pattern.findall(text):
            word_ids = cache.get(word)
            if word_ids is None:
                word_ids = cache[word] = self.encode_word(word)
            ids.extend(word_ids)
        return ids

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes one id stands for (a special token's UTF-8 text for special ids)."""
        if token_id in self.special_by_id:
            return self.special_by_id[token_id].encode("utf-8")
        return self.vocab[token_id]

    def check_ids(self, ids) -> list[int]:
        """`ids` as a list of ints, each an ordinary or special id of this tokenizer."""
        ids = super().check_ids(ids)
        gaps = [i for i in ids if i not in self.vocab and i not in self.special_by_id]
        if gaps:
            raise ValueError(f"token ids {gaps[:5]} belong to no token of this tokenizer.")
        return ids

    def decode(self, ids) -> str:
        """Ids -> text. Bytes that are not valid UTF-8 (a cut-off character) become U+FFFD."""
        joined = b"".join(self.token_bytes(i) for i in self.check_ids(ids))
        return joined.decode("utf-8", errors="replace")

    def token_pieces(self, ids) -> list[str]:
        """The text of each id on its own. A token holding part of a multi-byte character
        shows its bytes as escapes, e.g. '\\xe2\\x82' for the first two bytes of '€'."""
        return [
            self.token_bytes(i).decode("utf-8", errors="backslashreplace")
            for i in self.check_ids(ids)
        ]

    # ----- files ---------------------------------------------------------------------------

    def to_dict(self) -> dict:
        """The vocabulary and merges written as in GPT-2's files (a space is 'Ġ')."""
        return {
            "pattern": self.pattern,
            "vocab": {bytes_to_printable(token): i for i, token in sorted(self.vocab.items())},
            "merges": [
                f"{bytes_to_printable(self.vocab[a])} {bytes_to_printable(self.vocab[b])}"
                for a, b in self.merges
            ],
            "special_tokens": self.special_tokens,
        }

    @classmethod
    def from_dict(cls, data: dict) -> BPETokenizer:
        """Rebuild from `to_dict()`'s output; a damaged part raises a ValueError naming it."""
        encoder, lines, pattern = data["vocab"], data["merges"], data["pattern"]
        if not isinstance(encoder, dict) or not all(
            isinstance(piece, str) and isinstance(i, int) and not isinstance(i, bool)
            for piece, i in encoder.items()
        ):
            raise ValueError(
                f'"vocab" must map token strings to int ids, got {type(encoder).__name__}'
                + (f" with an entry {next(iter(encoder.items()))!r}" if isinstance(encoder, dict)
                   and encoder else "")
            )
        if not isinstance(lines, list) or not all(isinstance(line, str) for line in lines):
            raise ValueError(f'"merges" must be a list of "left right" strings, got {lines!r:.80}')
        if not isinstance(pattern, str):
            raise ValueError(f'"pattern" must be a regular expression string, got {pattern!r}')
        try:
            regex.compile(pattern)
        except regex.error as error:
            raise ValueError(f'"pattern" {pattern!r:.80} is not a valid regular expression '
                             f"({error})") from None
        vocab = {i: printable_to_bytes(piece) for piece, i in encoder.items()}
        merges = []
        for rank, line in enumerate(lines):
            pair = line.split(" ")
            if len(pair) != 2:
                raise ValueError(f"merge {rank} is {line!r}; each merge must be two tokens "
                                 "separated by one space")
            unknown = [piece for piece in pair if piece not in encoder]
            if unknown:
                raise ValueError(f"merge {rank} ({line!r}) names {unknown}, which "
                                 '"vocab" does not contain')
            merges.append((encoder[pair[0]], encoder[pair[1]]))
        return cls(vocab, merges, data.get("special_tokens", {}), pattern)

    @classmethod
    def from_gpt2_files(cls, encoder_json_path, vocab_bpe_path) -> BPETokenizer:
        """Load GPT-2's `encoder.json` and `vocab.bpe` (OpenAI's or our own).

        Tokens that are neither a single byte nor the result of a merge (such as
        "<|endoftext|>") become special tokens.
        """
        encoder, merge_lines = read_gpt2_files(encoder_json_path, vocab_bpe_path)
        made = {left + right for left, right in merge_lines}
        byte_chars = unicode_to_bytes()
        vocab, specials = {}, {}
        for piece, token_id in encoder.items():
            if piece in made or (len(piece) == 1 and piece in byte_chars):
                vocab[token_id] = printable_to_bytes(piece)
            else:
                specials[piece] = token_id
        missing = [(left, right) for left, right in merge_lines if left not in encoder or right not in encoder]
        if missing:
            raise ValueError(
                f"vocab.bpe merges tokens missing from encoder.json, e.g. {missing[0]}; "
                "are the two files from the same tokenizer?"
            )
        merges = [(encoder[left], encoder[right]) for left, right in merge_lines]
        return cls(vocab, merges, specials, GPT2_SPLIT_PATTERN)

    def save_gpt2_files(self, folder):
        """Write `encoder.json` and `vocab.bpe` into `folder`; returns their two paths.

        Hugging Face's GPT2Tokenizer(vocab_file, merges_file) and `from_gpt2_files` read them.
        """
        if self.pattern != GPT2_SPLIT_PATTERN:
            raise ValueError(
                "GPT-2's files have no place for a pre-split pattern and imply GPT-2's; this "
                "tokenizer uses another one, so save it with .save(path) instead."
            )
        encoder = {bytes_to_printable(token): i for i, token in sorted(self.vocab.items())}
        clashes = set(encoder) & set(self.special_tokens)
        if clashes:
            raise ValueError(f"special tokens {sorted(clashes)} are spelled like ordinary tokens.")
        encoder.update(self.special_tokens)
        merges = [
            (bytes_to_printable(self.vocab[a]), bytes_to_printable(self.vocab[b]))
            for a, b in self.merges
        ]
        return write_gpt2_files(folder, encoder, merges)
