"""The checks of exercise notebook 02 (byte-pair encoding): instant and hidden cases.

The exercise builds the plain byte-level BPE of the lesson (no pre-splitting into words):

    merges = train_bpe(text, num_merges)       # {(left id, right id): new id}, ids 256, 257...
    ids = encode(text, merges); decode(ids, merges) == text

The pair counting and merge step are compared with `llmkit.tokenizers.bpe`'s
`get_pair_counts` and `merge_pair`; training, encoding and decoding with the small
reference functions below, which are built on those two. While the learner's function
runs, all of these (and `BPETokenizer`) are off limits.

Tie rule for training, stated in the notebook: the most frequent pair wins, and among
equally frequent pairs the one that appears first in the ids, which is what
`max(counts, key=counts.get)` picks when `counts` lists pairs in order of first appearance.
"""

from __future__ import annotations

import regex
import torch

from llmkit.tokenizers.bpe import get_pair_counts, merge_pair
from llmkit.grading.exercise import (Assignment, Case, Exercise, compare_dicts, compare_sequences,
                       describe_type)
from llmkit.grading.exercise import random_int as _int

SETUP = "from llmkit.grading import check\n"

# Every function and class of the BPE reference module, recognised by its code.
FORBIDDEN = ("llmkit.tokenizers.bpe",) + tuple(f"llmkit.tokenizers.bpe.{name}" for name in (
    "get_pair_counts", "merge_pair", "learn_merges", "BPETokenizer")) + tuple(
    f"llmkit.tokenizers.{name}" for name in ("get_pair_counts", "merge_pair", "BPETokenizer")
) + tuple(f"llmkit.grading.exercises_02.{name}" for name in (
    "train_reference", "encode_reference", "decode_reference", "encode_special_reference"))


# --- the reference: plain byte-level BPE built on llmkit's two helpers -----------------

def train_reference(text: str, num_merges: int) -> dict[tuple[int, int], int]:
    """text -> merges {(a, b): new id} with new ids 256, 257, ...; stops when no pair is left."""
    ids = list(text.encode("utf-8"))
    merges = {}
    for new_id in range(256, 256 + num_merges):
        counts = get_pair_counts(ids)
        if not counts:
            break
        pair = max(counts, key=counts.get)
        ids = merge_pair(ids, pair, new_id)
        merges[pair] = new_id
    return merges


def decode_reference(ids: list[int], merges: dict[tuple[int, int], int]) -> str:
    """ids -> text; bytes that are not valid UTF-8 become U+FFFD (errors='replace')."""
    vocab = {i: bytes([i]) for i in range(256)}
    for (left, right), new_id in merges.items():
        vocab[new_id] = vocab[left] + vocab[right]
    return b"".join(vocab[i] for i in ids).decode("utf-8", errors="replace")


def encode_reference(text: str, merges: dict[tuple[int, int], int]) -> list[int]:
    """text -> ids, applying the earliest-learned merge present until none applies."""
    ids = list(text.encode("utf-8"))
    while len(ids) >= 2:
        counts = get_pair_counts(ids)
        pair = min(counts, key=lambda p: merges.get(p, float("inf")))
        if pair not in merges:
            break
        ids = merge_pair(ids, pair, merges[pair])
    return ids


def encode_special_reference(text: str, merges, special_tokens: dict[str, int]) -> list[int]:
    """Like encode_reference, but each special token string becomes its single id."""
    if not special_tokens:
        return encode_reference(text, merges)
    # Longest first, so "<|end|>" cannot steal the start of "<|endoftext|>".
    names = sorted(special_tokens, key=len, reverse=True)
    pattern = "(" + "|".join(regex.escape(name) for name in names) + ")"
    ids = []
    for part in regex.split(pattern, text):
        ids += [special_tokens[part]] if part in special_tokens else encode_reference(part,
                                                                                      merges)
    return ids


# --- random texts ---------------------------------------------------------------------

WORDS = ["the", "cat", "sat", "on", "a", "mat", "then", "that", "hat", "café", "über",
         "naïve", "日本", "ok", "🙂", "aaa", "tea", "eat"]


def _text(generator, n_words) -> str:
    picks = torch.randint(0, len(WORDS), (n_words,), generator=generator).tolist()
    return " ".join(WORDS[i] for i in picks)


def _ids(generator, length, high=6) -> list[int]:
    # A small alphabet (plus ids above 255, as after merges) makes pairs repeat.
    alphabet = [97, 98, 99, 32, 256, 300][:high]
    return [alphabet[i] for i in torch.randint(0, len(alphabet), (length,),
                                               generator=generator).tolist()]


# --- 1. pair counts, 2. merge ---------------------------------------------------------

def _pair_cases(generator, hidden):
    cases = [Case((ids,), get_pair_counts(ids)) for ids in
             (_ids(generator, _int(generator, 5, 60)) for _ in range(5 if hidden else 2))]
    if hidden:
        for ids, note in (([], "no ids"), ([7], "a single id"), ([4, 4, 4, 4], "a run")):
            cases.append(Case((ids,), get_pair_counts(ids), note))
    return cases


def _compare_pairs(answer, case):
    return compare_dicts(answer, case.expected, name="the pair counts")


def _merge_cases(generator, hidden):
    cases = []
    for _ in range(5 if hidden else 2):
        ids = _ids(generator, _int(generator, 5, 60))
        pair = (ids[0], ids[1])
        cases.append(Case((ids, pair, 400), merge_pair(ids, pair, 400)))
    if hidden:
        edge = [([5, 5, 5], (5, 5), 9, "an overlapping run: [5, 5, 5] -> [9, 5]"),
                ([1, 2, 3], (3, 1), 9, "a pair that does not occur"),
                ([1, 2, 1, 2], (1, 2), 9, "the pair at the very end"), ([], (1, 2), 9, "no ids")]
        cases += [Case((ids, pair, new), merge_pair(ids, pair, new), note)
                  for ids, pair, new, note in edge]
    return cases


def _compare_merge(answer, case):
    return compare_sequences(answer, case.expected, name="the merged ids")


# --- 3. training ----------------------------------------------------------------------

def _train_cases(generator, hidden):
    cases = []
    for _ in range(4 if hidden else 2):
        text, n = _text(generator, _int(generator, 8, 40)), _int(generator, 3, 20)
        cases.append(Case((text, n), train_reference(text, n)))
    if hidden:
        for text, n, note in (("hello", 0, "num_merges = 0"),
                              ("ab", 5, "more merges asked than pairs exist (stop early)"),
                              ("aaaaaa", 3, "a run of one letter")):
            cases.append(Case((text, n), train_reference(text, n), note))
    return cases


def _compare_train(answer, case):
    if isinstance(answer, dict) and list(answer.values()) != list(case.expected.values()):
        if sorted(answer.values()) == sorted(case.expected.values()):
            return "the merges are right but not in the order they were learned."
    return compare_dicts(answer, case.expected, name="the merges")


# --- 4. decode, 5. encode, 6. special tokens ------------------------------------------

def _merges_and_texts(generator, hidden, n_texts):
    corpus = _text(generator, 60)
    merges = train_reference(corpus, _int(generator, 10, 40))
    texts = [_text(generator, _int(generator, 1, 12)) for _ in range(n_texts)]
    return merges, texts


def _decode_cases(generator, hidden):
    merges, texts = _merges_and_texts(generator, hidden, 5 if hidden else 2)
    cases = [Case((encode_reference(text, merges), merges), text) for text in texts]
    if hidden:
        cases.append(Case(([], merges), "", "no ids"))
        cut = list("é".encode("utf-8"))[:1] + list(b"ok")
        cases.append(Case((cut, merges), decode_reference(cut, merges),
                          "bytes that are not valid UTF-8 (decode with errors='replace')"))
    return cases


def _compare_decode(answer, case):
    if not isinstance(answer, str):
        return f"decode should return a str, but it returned {describe_type(answer)}."
    if answer != case.expected:
        return f"decoded {answer[:60]!r}, expected {case.expected[:60]!r}."
    return None


def _encode_cases(generator, hidden):
    merges, texts = _merges_and_texts(generator, hidden, 6 if hidden else 2)
    if hidden:
        texts += ["", "zzz qqq"]
    return [Case((text, merges), encode_reference(text, merges)) for text in texts]


def _compare_encode(answer, case):
    problem = compare_sequences(answer, case.expected, name="the ids")
    if problem and isinstance(answer, list) and all(isinstance(i, int) and 0 <= i < 256
                                                    + len(case.args[1]) for i in answer):
        if decode_reference(answer, case.args[1]) == case.args[0]:
            problem += (" Your ids do decode back to the text, but the merges were not "
                        "applied in the order they were learned (lowest new id first).")
    return problem


def _special_cases(generator, hidden):
    merges, texts = _merges_and_texts(generator, hidden, 4 if hidden else 2)
    special = {"<|endoftext|>": 1000, "<|user|>": 1001}
    cases = [Case((f"{a}<|endoftext|>{b}", merges, special),
                  encode_special_reference(f"{a}<|endoftext|>{b}", merges, special))
             for a, b in zip(texts, texts[1:] + texts[:1])]
    if hidden:
        tricky = {"<|end|>": 2000, "<|endoftext|>": 2001}
        for text, tokens, note in (
            ("<|user|>hi<|endoftext|><|endoftext|>", special, "special tokens side by side"),
            ("the cat", special, "no special token in the text"),
            ("a<|endoftext|>b<|end|>", tricky, "one special token is the start of another"),
        ):
            cases.append(Case((text, merges, tokens),
                              encode_special_reference(text, merges, tokens), note))
    return cases


EXERCISES = [
    Exercise("bpe.pair_counts", "get_pair_counts", 1, "Count neighbouring pairs",
             _pair_cases, _compare_pairs, forbidden=FORBIDDEN,
             hint="Walk over zip(ids, ids[1:]) and add 1 to counts[pair] for each pair."),
    Exercise("bpe.merge", "merge_pair", 2, "The merge step",
             _merge_cases, _compare_merge, forbidden=FORBIDDEN,
             hint="Scan left to right with an index i: when ids[i], ids[i+1] is the pair, "
                  "emit new_id and jump 2; otherwise emit ids[i] and step 1."),
    Exercise("bpe.train", "train_bpe", 3, "Learn the merges",
             _train_cases, _compare_train, forbidden=FORBIDDEN,
             hint="Start from list(text.encode('utf-8')); for each new id 256, 257, ...: count "
                  "pairs, take the most frequent (max(counts, key=counts.get)), merge it, "
                  "record it; stop early when there are no pairs."),
    Exercise("bpe.decode", "decode", 2, "Decode",
             _decode_cases, _compare_decode, forbidden=FORBIDDEN,
             hint="Build a table id -> bytes (bytes([i]) for i < 256, then the two parts "
                  "joined for each merge in order), join the bytes of all ids, and decode "
                  "with .decode('utf-8', errors='replace')."),
    Exercise("bpe.encode", "encode", 3, "Encode",
             _encode_cases, _compare_encode, forbidden=FORBIDDEN,
             hint="Start from the UTF-8 bytes; repeatedly find, among the pairs present, the "
                  "one with the lowest merge id, and merge it; stop when no pair present has "
                  "a merge."),
    Exercise("bpe.special", "encode_with_special", 3, "Stretch: special tokens",
             _special_cases, _compare_encode, forbidden=FORBIDDEN,
             hint="Split the text on the special strings (regex alternation, longest first, "
                  "in a capturing group so the specials are kept), then give each special "
                  "its id and encode the pieces in between."),
]

ASSIGNMENT = Assignment("02_bpe", "Exercises 02: byte-pair encoding", SETUP, EXERCISES)
