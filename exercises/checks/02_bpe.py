"""The checks of exercise notebook 02 (byte-pair encoding): instant and hidden cases.

The exercise follows lesson 02's conventions, the ones `llmkit.tokenizers.BPETokenizer`
uses: the text is cut into words with GPT-2's pattern (`GPT2_SPLIT_PATTERN`) and no merge
crosses two words; among equally frequent pairs the smaller `(left, right)` pair wins;
merges are applied in the order they were learned (lowest new id first). Merges are a dict
`{(left id, right id): new id}` in the order learned, new ids 256, 257, ...

Lesson 02 wrote `get_pair_counts`, `merge_pair`, a naive training loop, `bpe_encode` and
`bpe_decode`. The exercise asks for the next step of each (the merge step, task 2, is the
one warm-up that is the lesson's own code):

1. pair counts of a word table {word: how often it occurs} (the fast trainer's first idea);
3. training that also stops when the best pair is rarer than `min_count`;
4. decoding ids that include special tokens;
5. encoding with any pre-split pattern, or none;
6. (stretch) special tokens in the text, with the `allowed_special` rule of lesson 02.

Every expected value is computed before the learner's function runs, by the plain
references below (built on `llmkit.tokenizers.bpe`'s `get_pair_counts` and `merge_pair`);
the tests check them against `BPETokenizer` itself. While the learner's function runs,
`llmkit.tokenizers.bpe` and `llmkit.tokenizers.base` (every function and class in them,
`BPETokenizer` included) are off limits.

A task earns its points only when every hidden case passes, so the hidden cases are built
for the usual slips: every training run has ties; every encoding pattern case has merges
that the wrong split would apply; every decoding case with a broken character has it split
across two tokens.
"""

from __future__ import annotations

from collections import Counter

import regex
import torch

from llmkit.grading.exercise import (Assignment, Case, Exercise, compare_dicts, compare_sequences,
                                     describe_type)
from llmkit.grading.exercise import random_int as _int
from llmkit.tokenizers.bpe import GPT2_SPLIT_PATTERN, get_pair_counts, merge_pair

SETUP = ("import regex\nfrom llmkit.grading import check\n"
         "from llmkit.tokenizers import GPT2_SPLIT_PATTERN\n")

# Every function and class of the tokenizer modules, recognised by their code.
FORBIDDEN = ("llmkit.tokenizers.bpe", "llmkit.tokenizers.base")
NO_SPLIT = r"[^\n]+|\n+"   # lesson 02's other pattern: each line is one chunk


# --- the references: plain byte-level BPE on llmkit's two helpers ---------------------------

def chunks_of(text: str, pattern: str | None) -> list[str]:
    """The pieces the pattern cuts the text into; None: the whole text is one piece."""
    if pattern is None:
        return [text] if text else []
    return regex.findall(pattern, text)


def word_pair_counts(words: dict) -> dict[tuple[int, int], int]:
    """{word (tuple of ids): how often} -> {pair: count}, pairs inside words only."""
    counts: dict[tuple[int, int], int] = {}
    for word, n in words.items():
        for pair, k in get_pair_counts(list(word)).items():
            counts[pair] = counts.get(pair, 0) + k * n
    return counts


def train_reference(text: str, num_merges: int, min_count: int = 1,
                    pattern: str | None = GPT2_SPLIT_PATTERN) -> dict[tuple[int, int], int]:
    """Up to num_merges merges: most frequent pair first, the smaller pair on ties; stop
    when no pair is left or the best one occurs fewer than min_count times."""
    words = dict(Counter(tuple(chunk.encode("utf-8")) for chunk in chunks_of(text, pattern)))
    merges = {}
    for new_id in range(256, 256 + num_merges):
        counts = word_pair_counts(words)
        if not counts:
            break
        best = min(counts, key=lambda pair: (-counts[pair], pair))
        if counts[best] < min_count:
            break
        words = {tuple(merge_pair(list(word), best, new_id)): n for word, n in words.items()}
        merges[best] = new_id
    return merges


def _token_bytes(merges) -> dict[int, bytes]:
    vocab = {i: bytes([i]) for i in range(256)}
    for (left, right), new_id in merges.items():
        vocab[new_id] = vocab[left] + vocab[right]
    return vocab


def decode_reference(ids, merges, special_tokens=None) -> str:
    """ids -> text: every id's bytes joined, then decoded (errors='replace')."""
    vocab = _token_bytes(merges)
    for name, special_id in (special_tokens or {}).items():
        vocab[special_id] = name.encode("utf-8")
    return b"".join(vocab[i] for i in ids).decode("utf-8", errors="replace")


def encode_reference(text: str, merges, pattern: str | None = GPT2_SPLIT_PATTERN) -> list[int]:
    """text -> ids: each chunk from its bytes, the lowest new id present merged first."""
    ids = []
    for chunk in chunks_of(text, pattern):
        chunk_ids = list(chunk.encode("utf-8"))
        while len(chunk_ids) >= 2:
            pair = min(zip(chunk_ids, chunk_ids[1:]),
                       key=lambda p: merges.get(p, float("inf")))
            if pair not in merges:
                break
            chunk_ids = merge_pair(chunk_ids, pair, merges[pair])
        ids += chunk_ids
    return ids


def special_reference(text, merges, special_tokens, allowed_special="all") -> list[int]:
    """Allowed special strings ("all", "none" or a list of them) become their ids, longest
    first; the rest is text. (Lists, not sets: the grader's messages carry no sets.)"""
    if allowed_special == "all":
        allowed = set(special_tokens)
    elif allowed_special == "none":
        allowed = set()
    else:
        allowed = set(allowed_special)
    if not allowed:
        return encode_reference(text, merges)
    names = sorted(allowed, key=len, reverse=True)
    parts = regex.split("(" + "|".join(regex.escape(name) for name in names) + ")", text)
    ids = []
    for position, part in enumerate(parts):
        ids += [special_tokens[part]] if position % 2 else encode_reference(part, merges)
    return ids


# --- random texts ---------------------------------------------------------------------------

WORDS = ["the", "cat", "sat", "on", "a", "mat", "then", "that", "hat", "café", "über",
         "naïve", "日本", "ok", "🙂", "aaa", "tea", "eat", "it's", "42", "hat.", "mat,"]


def _text(generator, n_words, lines=False) -> str:
    picks = torch.randint(0, len(WORDS), (n_words,), generator=generator).tolist()
    text = " ".join(WORDS[i] for i in picks)
    if lines:  # a few line breaks, for the one-chunk-per-line pattern
        words = text.split(" ")
        text = "".join(word + ("\n" if i % 5 == 4 else " ") for i, word in enumerate(words))
    return text


def _ids(generator, length) -> list[int]:
    # A small alphabet (plus ids above 255, as after merges) makes pairs repeat.
    alphabet = [97, 98, 99, 32, 256, 300]
    return [alphabet[i] for i in torch.randint(0, len(alphabet), (length,),
                                               generator=generator).tolist()]


# --- 1. pair counts of a word table ---------------------------------------------------------

def _words(generator, n_words) -> dict:
    words = {}
    while len(words) < n_words:
        words[tuple(_ids(generator, _int(generator, 1, 8)))] = _int(generator, 1, 6)
    return words


def _pair_cases(generator, hidden):
    if not hidden:
        return [Case(({(1, 2, 1, 2): 3, (2, 3): 1, (1, 2): 2},),
                     word_pair_counts({(1, 2, 1, 2): 3, (2, 3): 1, (1, 2): 2}),
                     "three words, one of them 3 times"),
                Case((_words(generator, 5),), None, "five random words")]
    cases = [Case((_words(generator, _int(generator, 3, 12)),), None) for _ in range(4)]
    for words, note in (({}, "no words"), ({(7,): 4, (8,): 1}, "words of a single id"),
                        ({(5, 5, 5): 3}, "a run, 3 times: [5, 5, 5] holds (5, 5) twice"),
                        ({(1, 2): 1, (3, 1): 2, (2, 3): 5}, "pairs that only form across words")):
        cases.append(Case((words,), None, note))
    return cases


def _with_expected(cases):
    for case in cases:
        if case.expected is None:
            case.expected = word_pair_counts(case.args[0])
    return cases


def _compare_pairs(answer, case):
    problem = compare_dicts(answer, case.expected, name="the pair counts")
    if problem and isinstance(answer, dict):
        words = case.args[0]
        if answer == word_pair_counts({word: 1 for word in words}):
            problem += " Each word was counted once; a word that occurs n times holds its pairs n times."
        elif any(pair not in case.expected for pair in answer):
            problem += " Some pairs are made of the end of one word and the start of another."
    return problem


# --- 2. the merge step (the warm-up) --------------------------------------------------------

def _merge_cases(generator, hidden):
    cases = []
    for _ in range(5 if hidden else 2):
        ids = _ids(generator, _int(generator, 5, 60))
        pair = (ids[0], ids[1])
        cases.append(Case((ids, pair, 400), merge_pair(ids, pair, 400)))
    edge = [([5, 5, 5], (5, 5), 9, "an overlapping run: [5, 5, 5] -> [9, 5]")]
    if hidden:
        edge += [([5, 5, 5, 5, 5], (5, 5), 9, "a run of five"),
                 ([1, 2, 3], (3, 1), 9, "a pair that does not occur"),
                 ([1, 2, 1, 2], (1, 2), 9, "the pair at the very end"), ([], (1, 2), 9, "no ids")]
    cases += [Case((ids, pair, new), merge_pair(ids, pair, new), note)
              for ids, pair, new, note in edge]
    return cases


def _compare_merge(answer, case):
    return compare_sequences(answer, case.expected, name="the merged ids")


# --- 3. training ----------------------------------------------------------------------------

def _train_case(text, num_merges, min_count, note=""):
    return Case((text, num_merges, min_count), train_reference(text, num_merges, min_count), note)


def _train_cases(generator, hidden):
    if not hidden:
        return [_train_case(_text(generator, 30), 15, 1, "GPT-2's pre-split"),
                _train_case("zz aa", 2, 1, "three pairs that occur once each (a tie)"),
                _train_case(_text(generator, 25), 40, 2, "min_count = 2")]
    cases = [_train_case(_text(generator, _int(generator, 15, 40)), _int(generator, 5, 25), 1)
             for _ in range(2)]
    cases += [_train_case(_text(generator, _int(generator, 15, 40)), 50, k, f"min_count = {k}")
              for k in (2, 3)]
    cases += [
        _train_case("ab ab cd cd", 6, 1, "ties at every step"),
        _train_case("the cat sat. the hat sat.", 30, 2, "min_count = 2"),
        _train_case("hello", 0, 1, "num_merges = 0"),
        _train_case("ab", 5, 1, "more merges asked than pairs exist (stop early)"),
        _train_case("aaaaaa", 3, 1, "a run of one letter"),
    ]
    return cases


def _compare_train(answer, case):
    text, num_merges, min_count = case.args
    if isinstance(answer, dict) and list(answer.values()) != list(case.expected.values()):
        if sorted(answer.values()) == sorted(case.expected.values()) and answer.keys() == \
                case.expected.keys():
            return "the merges are right but not in the order they were learned."
    problem = compare_dicts(answer, case.expected, name="the merges")
    if problem and isinstance(answer, dict):
        if answer == train_reference(text, num_merges, min_count, pattern=None):
            problem += (" Pairs were counted across words: cut the text with GPT-2's pattern "
                        "first, as the lesson does.")
        elif len(answer) < len(case.expected) and min_count > 1:
            problem += (f" It stopped too early: a pair that occurs exactly {min_count} times "
                        "(min_count) is still merged.")
        elif len(answer) > len(case.expected) and min_count > 1:
            problem += " It learned merges of pairs rarer than min_count."
        else:
            problem += (" When several pairs are equally frequent, the lesson (and llmkit) "
                        "takes the smaller (left, right) pair.")
    return problem


# --- 4. decode with special tokens ----------------------------------------------------------

SPECIAL = {"<|endoftext|>": 1000, "<|user|>": 1001}


def _merges_and_texts(generator, n_texts, pattern=GPT2_SPLIT_PATTERN):
    corpus = _text(generator, 60, lines=pattern == NO_SPLIT)
    merges = train_reference(corpus, _int(generator, 15, 40), 1, pattern)
    texts = [_text(generator, _int(generator, 2, 12), lines=pattern == NO_SPLIT)
             for _ in range(n_texts)]
    return merges, texts


def _decode_case(ids, merges, special, note=""):
    return Case((ids, merges, special), decode_reference(ids, merges, special), note)


def _decode_cases(generator, hidden):
    merges, texts = _merges_and_texts(generator, 4 if hidden else 1)
    eot, user = SPECIAL["<|endoftext|>"], SPECIAL["<|user|>"]
    split_char = list("café".encode("utf-8"))          # é as two byte tokens
    cut = list("é".encode("utf-8"))[:1]                # half a character
    cases = [_decode_case(encode_reference(texts[0], merges), merges, None,
                          "no special tokens (special_tokens=None)"),
             _decode_case(split_char + [eot] + cut + encode_reference(" ok", merges), merges,
                          SPECIAL, "é split across two tokens, a special token, half a character")]
    if not hidden:
        return cases
    for a, b in zip(texts[1:], texts[2:] + texts[:1]):
        cases.append(_decode_case([user] + encode_reference(a, merges) + [eot]
                                  + encode_reference(b, merges), merges, SPECIAL,
                                  "special tokens between texts"))
    cases += [_decode_case([], merges, SPECIAL, "no ids"),
              _decode_case([eot, eot], merges, SPECIAL, "only special tokens"),
              _decode_case(list("日".encode("utf-8")) + [user], merges, SPECIAL,
                           "a three-byte character as three tokens")]
    return cases


def _compare_decode(answer, case):
    if not isinstance(answer, str):
        return f"decode should return a str, but it returned {describe_type(answer)}."
    if answer != case.expected:
        problem = f"decoded {answer[:60]!r}, expected {case.expected[:60]!r}."
        if "\ufffd" in answer and answer.count("\ufffd") > case.expected.count("\ufffd"):
            problem += (" A character split across tokens came out broken: join the bytes "
                        "first, then decode them.")
        return problem
    return None


# --- 5. encode with any pre-split pattern ---------------------------------------------------

CROSSING = {(101, 32): 256, (256, 99): 257}            # "e " and "e c": pairs across words


def _encode_case(generator, pattern, note):
    """Merges trained with `pattern`, and a text where splitting another way changes ids."""
    for _ in range(40):
        merges, texts = _merges_and_texts(generator, 1, pattern)
        text = texts[0]
        expected = encode_reference(text, merges, pattern)
        # The slip this case is for: GPT-2's cut whatever the pattern says. (The opposite
        # slip, no cut at all, changes nothing here: merges learned inside GPT-2's words
        # never join two of them. The CROSSING case catches it.)
        if pattern == GPT2_SPLIT_PATTERN or expected != encode_reference(text, merges):
            return Case((text, merges, pattern), expected, note)
    raise RuntimeError("no text told the patterns apart; widen the search")


def _crossing_case():
    return Case(("the cat", CROSSING, GPT2_SPLIT_PATTERN),
                encode_reference("the cat", CROSSING, GPT2_SPLIT_PATTERN),
                "merges that would join two of GPT-2's words")


def _order_case():
    # Learned first: "bc"; then "ab", a smaller pair. "abc" must become a + "bc".
    merges = {(98, 99): 256, (97, 98): 257, (257, 99): 258}
    return Case((" abc bc", merges, GPT2_SPLIT_PATTERN), encode_reference(" abc bc", merges),
                "a merge learned later whose pair is smaller")


def _encode_cases(generator, hidden):
    cases = [_encode_case(generator, GPT2_SPLIT_PATTERN, "GPT-2's pattern"),
             _encode_case(generator, None, "pattern=None (the whole text is one chunk)"),
             _encode_case(generator, NO_SPLIT, "one chunk per line (another pattern)"),
             _crossing_case(), _order_case()]
    if not hidden:
        return cases
    cases += [_encode_case(generator, GPT2_SPLIT_PATTERN, "GPT-2's pattern"),
              _encode_case(generator, None, "pattern=None")]
    merges = train_reference(_text(generator, 50), 30)
    cases += [
        Case(("", merges, GPT2_SPLIT_PATTERN), [], "an empty text"),
        Case(("zzz qqq 🐢", merges, GPT2_SPLIT_PATTERN),
             encode_reference("zzz qqq 🐢", merges), "characters the merges never saw"),
    ]
    return cases


def _compare_encode(answer, case):
    text, merges = case.args[0], case.args[1]
    problem = compare_sequences(answer, case.expected, name="the ids")
    if problem and isinstance(answer, list) and all(
            isinstance(i, int) and 0 <= i < 256 + len(merges) for i in answer):
        if decode_reference(answer, merges) == text:
            if len(case.args) > 2 and any(answer == encode_reference(text, merges, other)
                                          for other in (GPT2_SPLIT_PATTERN, None)):
                problem += " Your ids decode back to the text, but the text was cut another way."
            else:
                problem += (" Your ids do decode back to the text, but the merges were not "
                            "applied in the order they were learned (lowest new id first).")
    return problem


# --- 6. special tokens, with allowed_special ------------------------------------------------

def _special_case(text, merges, special, allowed, note=""):
    return Case((text, merges, special, allowed), special_reference(text, merges, special,
                                                                    allowed), note)


TRICKY = {"<|end|>": 2000, "<|end|>\n": 2001, "<|user|>": 2002, "<|endoftext|>": 2003}


def _special_cases(generator, hidden):
    merges, texts = _merges_and_texts(generator, 4 if hidden else 2)
    a, b = texts[0], texts[1]
    cases = [
        _special_case(f"{a}<|end|>\n{b}<|end|>", merges, TRICKY, "all",
                      "'<|end|>' is the start of '<|end|>\\n'"),
        _special_case(f"<|user|>{a}<|end|>\n", merges, TRICKY, ["<|user|>"],
                      "allowed_special=['<|user|>']: the others stay text"),
        _special_case(f"{a}<|endoftext|>", merges, TRICKY, "none",
                      "allowed_special='none': special strings are plain text"),
    ]
    if not hidden:
        return cases
    c, d = texts[2], texts[3]
    cases += [
        _special_case(f"<|user|>{c}<|endoftext|><|endoftext|>", merges, SPECIAL, "all",
                      "special tokens side by side"),
        _special_case(f"{d} no special here", merges, SPECIAL, "all", "no special token in the text"),
        _special_case(f"<|end|>\n{c}<|end|>{d}", merges, TRICKY, ["<|end|>"],
                      "only the shorter one allowed: its id, then the newline as text"),
        _special_case(f"{c}<|end|>\n<|end|>", merges, TRICKY, ["<|end|>", "<|end|>\n"],
                      "both allowed, the shorter listed first: the longer still wins"),
        _special_case(f"<|user|>{d}", merges, TRICKY, "none", "allowed_special='none'"),
        _special_case("", merges, SPECIAL, "all", "an empty text"),
    ]
    return cases


def _compare_special(answer, case):
    problem = compare_sequences(answer, case.expected, name="the ids")
    text, merges, special, allowed = case.args
    if problem and isinstance(answer, list):
        if answer == special_reference(text, merges, special, "all") and allowed != "all":
            problem += (" Special strings that are not allowed were turned into their ids: "
                        "they stay ordinary text.")
        elif any(i in special.values() for i in answer) and allowed == "none":
            problem += " With allowed_special='none' no special id may appear."
        elif answer == _shortest_first(text, merges, special, allowed):
            problem += (" A shorter special string won where a longer one starts at the same "
                        "place: try the longer ones first.")
    return problem


def _shortest_first(text, merges, special_tokens, allowed_special):
    """The slip: special strings tried shortest first."""
    names = {"all": list(special_tokens), "none": []}.get(
        allowed_special if isinstance(allowed_special, str) else "", allowed_special)
    if not names:
        return encode_reference(text, merges)
    pattern = "(" + "|".join(regex.escape(name) for name in sorted(names, key=len)) + ")"
    return [i for position, part in enumerate(regex.split(pattern, text))
            for i in ([special_tokens[part]] if position % 2 else encode_reference(part, merges))]


EXERCISES = [
    Exercise("bpe.pair_counts", "get_pair_counts", 1, "Pair counts of a word table",
             lambda generator, hidden: _with_expected(_pair_cases(generator, hidden)),
             _compare_pairs, forbidden=FORBIDDEN,
             hint="A word's pairs stay inside the word, and a word that occurs n times "
                  "contributes each of its pairs n times."),
    Exercise("bpe.merge", "merge_pair", 2, "Warm-up: the merge step",
             _merge_cases, _compare_merge, forbidden=FORBIDDEN,
             hint="Once a position is merged it is used up: in a run, the next occurrence can "
                  "start only after it."),
    Exercise("bpe.train", "train_bpe", 3, "Learn the merges, with a minimum count",
             _train_cases, _compare_train, forbidden=FORBIDDEN,
             hint="Three rules decide each merge: pairs are counted inside GPT-2's words only, "
                  "equally frequent pairs go to the smaller (left, right), and a best pair "
                  "rarer than min_count ends training."),
    Exercise("bpe.decode", "decode", 2, "Decode, special tokens included",
             _decode_cases, _compare_decode, forbidden=FORBIDDEN,
             hint="A special id stands for its string; every other id for bytes. One "
                  "character's bytes may be spread over several tokens, so decode the bytes "
                  "of the whole text, not each token on its own."),
    Exercise("bpe.encode", "encode", 3, "Encode with any pre-split",
             _encode_cases, _compare_encode, forbidden=FORBIDDEN,
             hint="Encode with the same cut the merges were learned with: cut the text with "
                  "the pattern (None: no cut), then merge inside each piece, the merge learned "
                  "first before later ones."),
    Exercise("bpe.special", "encode_with_special", 3, "Stretch: special tokens, when allowed",
             _special_cases, _compare_special, forbidden=FORBIDDEN,
             hint="Only the allowed special strings are cut out; where one is the start of "
                  "another, the longer must be tried first; everything else, special-looking "
                  "or not, is ordinary text for your encode."),
]

ASSIGNMENT = Assignment("02_bpe", "Exercises 02: byte-pair encoding", SETUP, EXERCISES)
