"""Exercise notebook 02's checks: the reference solutions pass every case; the lesson's own
code, pasted as the answer, fails a hidden case of every task it could be pasted into but the
warm-up (the merge step); the usual slips fail a hidden case and the instant check; calling
llmkit's tokenizer is reported as forbidden; and the check file's plain references agree
with `llmkit.tokenizers.BPETokenizer` (the independent, heap-based trainer and its encoder).

The solutions, the lesson's code (copied from lessons/02_tokenization.ipynb, adapted only to
the task's signature) and the slips are written here by hand.
"""

import sys
import warnings

import pytest
import regex

from llmkit.grading import ASSIGNMENTS, check
from llmkit.grading.exercise import hidden_cases
from llmkit.tokenizers import GPT2_SPLIT_PATTERN, BPETokenizer
from llmkit.tokenizers import get_pair_counts as llmkit_pair_counts
from llmkit.tokenizers import merge_pair as llmkit_merge_pair

from exercise_support import instant_cases, passed

ASSIGNMENT = ASSIGNMENTS["02_bpe"]
EXERCISES = {exercise.id: exercise for exercise in ASSIGNMENT.exercises}
CHECKS = sys.modules["llmkit_exercise_checks.02_bpe"]


# --- the reference solutions ----------------------------------------------------------------

def get_pair_counts(words):
    counts = {}
    for word, n in words.items():
        for pair in zip(word, word[1:]):
            counts[pair] = counts.get(pair, 0) + n
    return counts


def merge_pair(ids, pair, new_id):
    merged, i = [], 0
    while i < len(ids):
        if i + 1 < len(ids) and (ids[i], ids[i + 1]) == tuple(pair):
            merged.append(new_id)
            i += 2
        else:
            merged.append(ids[i])
            i += 1
    return merged


def word_table(text, pattern=GPT2_SPLIT_PATTERN):
    words = {}
    for word in (regex.findall(pattern, text) if pattern else [text] if text else []):
        key = tuple(word.encode("utf-8"))
        words[key] = words.get(key, 0) + 1
    return words


def train(text, num_merges, min_count=1, pattern=GPT2_SPLIT_PATTERN, pick=None, stop=None):
    """The reference trainer; `pick` and `stop` swap in a slip's tie rule or stopping rule."""
    pick = pick or (lambda counts: min(counts, key=lambda pair: (-counts[pair], pair)))
    stop = stop or (lambda count: count < min_count)
    words, merges = word_table(text, pattern), {}
    for new_id in range(256, 256 + num_merges):
        counts = get_pair_counts(words)
        if not counts:
            break
        best = pick(counts)
        if stop(counts[best]):
            break
        words = {tuple(merge_pair(list(w), best, new_id)): n for w, n in words.items()}
        merges[best] = new_id
    return merges


def train_bpe(text, num_merges, min_count=1):
    return train(text, num_merges, min_count)


def decode(ids, merges, special_tokens=None):
    vocab = {i: bytes([i]) for i in range(256)}
    for (left, right), new_id in merges.items():
        vocab[new_id] = vocab[left] + vocab[right]
    for name, special_id in (special_tokens or {}).items():
        vocab[special_id] = name.encode("utf-8")
    return b"".join(vocab[i] for i in ids).decode("utf-8", errors="replace")


def encode(text, merges, pattern=GPT2_SPLIT_PATTERN):
    ids = []
    for chunk in (regex.findall(pattern, text) if pattern is not None else [text]):
        chunk_ids = list(chunk.encode("utf-8"))
        for pair, new_id in merges.items():   # each merge once, in the order learned
            chunk_ids = merge_pair(chunk_ids, pair, new_id)
        ids += chunk_ids
    return ids


def encode_with_special(text, merges, special_tokens, allowed_special="all"):
    allowed = {"all": list(special_tokens), "none": []}.get(
        allowed_special if isinstance(allowed_special, str) else "", allowed_special)
    if not allowed:
        return encode(text, merges)
    ids, position = [], 0
    while position <= len(text):   # a plain scan: at each position, the longest allowed match
        found = max((name for name in allowed if text.startswith(name, position)), key=len,
                    default=None)
        nxt = min((i for i in (text.find(name, position) for name in allowed) if i >= 0),
                  default=len(text))
        if found is not None:
            ids.append(special_tokens[found])
            position += len(found)
            continue
        ids += encode(text[position:nxt], merges)
        position = nxt if nxt > position else len(text) + 1
    return ids


RIGHT = {"bpe.pair_counts": get_pair_counts, "bpe.merge": merge_pair, "bpe.train": train_bpe,
         "bpe.decode": decode, "bpe.encode": encode, "bpe.special": encode_with_special}


# --- the lesson's own code, adapted only to each task's signature ---------------------------

def lesson_get_pair_counts(ids):
    counts = {}
    for pair in zip(ids, ids[1:]):
        counts[pair] = counts.get(pair, 0) + 1
    return counts


def lesson_merge_pair(ids, pair, new_id):
    merged, i = [], 0
    while i < len(ids):
        if i + 1 < len(ids) and (ids[i], ids[i + 1]) == pair:
            merged.append(new_id)
            i += 2
        else:
            merged.append(ids[i])
            i += 1
    return merged


def lesson_train_bpe(text, num_merges, min_count=1):
    # train_bpe_naive, with vocab_size = 256 + num_merges and the merges as a dict.
    words = regex.findall(GPT2_SPLIT_PATTERN, text)
    chunks = [list(word.encode("utf-8")) for word in words]
    merges = {}
    for new_id in range(256, 256 + num_merges):
        counts = {}
        for chunk in chunks:
            for pair, n in lesson_get_pair_counts(chunk).items():
                counts[pair] = counts.get(pair, 0) + n
        if not counts:
            break
        best = min(counts, key=lambda pair: (-counts[pair], pair))
        chunks = [lesson_merge_pair(chunk, best, new_id) for chunk in chunks]
        merges[best] = new_id
    return merges


def lesson_decode(ids, merges, special_tokens=None):
    vocab = {b: bytes([b]) for b in range(256)}      # as train_bpe_naive builds it
    for (left, right), new_id in merges.items():
        vocab[new_id] = vocab[left] + vocab[right]
    return b"".join(vocab[i] for i in ids).decode("utf-8", errors="replace")


def lesson_encode(text, merges, pattern=GPT2_SPLIT_PATTERN):
    rank = {pair: r for r, pair in enumerate(merges)}
    ids = []
    for word in regex.findall(GPT2_SPLIT_PATTERN, text):
        word_ids = list(word.encode("utf-8"))
        while len(word_ids) >= 2:
            pair = min(zip(word_ids, word_ids[1:]), key=lambda p: rank.get(p, float("inf")))
            if pair not in rank:
                break
            word_ids = lesson_merge_pair(word_ids, pair, 256 + rank[pair])
        ids.extend(word_ids)
    return ids


# The lesson writes no code for special tokens (llmkit does it), so task 6 has no paste.
LESSON = {"bpe.pair_counts": lesson_get_pair_counts, "bpe.train": lesson_train_bpe,
          "bpe.decode": lesson_decode, "bpe.encode": lesson_encode}
WARM_UP = ("bpe.merge", lesson_merge_pair)


# --- the usual slips --------------------------------------------------------------------------

def pairs_each_word_once(words):
    return get_pair_counts({word: 1 for word in words})


def pairs_across_words(words):
    joined = [i for word, n in words.items() for _ in range(n) for i in word]
    return lesson_get_pair_counts(joined)


def train_first_pair_on_ties(text, num_merges, min_count=1):
    return train(text, num_merges, min_count, pick=lambda counts: max(counts, key=counts.get))


def train_without_pre_split(text, num_merges, min_count=1):
    return train(text, num_merges, min_count, pattern=None)


def train_stops_at_min_count(text, num_merges, min_count=1):
    return train(text, num_merges, min_count, stop=lambda count: count <= min_count)


def decode_each_token(ids, merges, special_tokens=None):
    vocab = {i: bytes([i]) for i in range(256)}
    for (left, right), new_id in merges.items():
        vocab[new_id] = vocab[left] + vocab[right]
    names = {i: name for name, i in (special_tokens or {}).items()}
    return "".join(names[i] if i in names else vocab[i].decode("utf-8", errors="replace")
                   for i in ids)


def encode_without_cut(text, merges, pattern=GPT2_SPLIT_PATTERN):
    return encode(text, merges, None)


def encode_gpt2_unless_none(text, merges, pattern=GPT2_SPLIT_PATTERN):
    return encode(text, merges, None if pattern is None else GPT2_SPLIT_PATTERN)


def encode_smallest_pair_first(text, merges, pattern=GPT2_SPLIT_PATTERN):
    ids = []
    for chunk in (regex.findall(pattern, text) if pattern is not None else [text]):
        chunk_ids = list(chunk.encode("utf-8"))
        while True:
            present = [p for p in zip(chunk_ids, chunk_ids[1:]) if p in merges]
            if not present:
                break
            pair = min(present)
            chunk_ids = merge_pair(chunk_ids, pair, merges[pair])
        ids += chunk_ids
    return ids


def special_in_the_order_given(text, merges, special_tokens, allowed_special="all"):
    allowed = {"all": list(special_tokens), "none": []}.get(
        allowed_special if isinstance(allowed_special, str) else "", allowed_special)
    if not allowed:
        return encode(text, merges)
    pattern = "(" + "|".join(regex.escape(name) for name in allowed) + ")"
    parts = regex.split(pattern, text)
    return [i for k, part in enumerate(parts)
            for i in ([special_tokens[part]] if k % 2 else encode(part, merges))]


def special_always_all(text, merges, special_tokens, allowed_special="all"):
    return encode_with_special(text, merges, special_tokens, "all")


WRONG = [("bpe.pair_counts", pairs_each_word_once),
         ("bpe.pair_counts", pairs_across_words),
         ("bpe.train", train_first_pair_on_ties),
         ("bpe.train", train_without_pre_split),
         ("bpe.train", train_stops_at_min_count),
         ("bpe.decode", decode_each_token),
         ("bpe.encode", encode_without_cut),
         ("bpe.encode", encode_gpt2_unless_none),
         ("bpe.encode", encode_smallest_pair_first),
         ("bpe.special", special_in_the_order_given),
         ("bpe.special", special_always_all)]


def test_every_task_is_covered_and_the_points_stay():
    assert set(EXERCISES) == set(RIGHT) == set(LESSON) | {WARM_UP[0], "bpe.special"}
    assert ASSIGNMENT.max_points == 14
    points = {e.id: e.points for e in ASSIGNMENT.exercises}
    assert points["bpe.pair_counts"] == 1 and points["bpe.decode"] == 2
    assert points["bpe.special"] == 3


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("exercise_id", sorted(RIGHT))
def test_reference_solutions_pass_every_case(exercise_id, seed):
    exercise = EXERCISES[exercise_id]
    for cases in (instant_cases(exercise, seed), hidden_cases(exercise, seed)):
        results = passed(exercise, RIGHT[exercise_id], cases)
        assert all(results), [c.note for c, ok in zip(cases, results) if not ok]


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("exercise_id", sorted(LESSON))
def test_the_lessons_own_code_fails_a_hidden_case_and_the_instant_check(exercise_id, seed):
    exercise = EXERCISES[exercise_id]
    assert not all(passed(exercise, LESSON[exercise_id], hidden_cases(exercise, seed)))
    assert not all(passed(exercise, LESSON[exercise_id], instant_cases(exercise, seed)))


def test_the_warm_up_is_the_lessons_own_code():
    exercise_id, lesson_code = WARM_UP
    exercise = EXERCISES[exercise_id]
    assert "Warm-up" in exercise.title
    assert all(passed(exercise, lesson_code, hidden_cases(exercise, 0)))


def test_the_lessons_training_passes_when_min_count_is_1():
    """The exercise keeps the lesson's conventions (pre-split, smaller pair on ties): the
    lesson's loop fails only the minimum-count clause, which is new."""
    exercise = EXERCISES["bpe.train"]
    for seed in range(3):
        cases = [c for c in hidden_cases(exercise, seed) if c.args[2] == 1]
        assert cases and all(passed(exercise, lesson_train_bpe, cases))


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("exercise_id, wrong", WRONG, ids=lambda v: getattr(v, "__name__", v))
def test_a_usual_slip_fails_a_hidden_case_and_the_instant_check(exercise_id, wrong, seed):
    exercise = EXERCISES[exercise_id]
    assert not all(passed(exercise, wrong, hidden_cases(exercise, seed)))
    assert not all(passed(exercise, wrong, instant_cases(exercise, seed)))


def test_slips_get_a_message_that_names_them():
    exercise = EXERCISES["bpe.train"]
    tie = instant_cases(exercise, 0)[1]
    assert "smaller (left, right)" in exercise.compare(train_first_pair_on_ties(*tie.args), tie)
    minimum = instant_cases(exercise, 0)[2]
    assert "exactly 2 times" in exercise.compare(train_stops_at_min_count(*minimum.args), minimum)
    exercise = EXERCISES["bpe.decode"]
    case = instant_cases(exercise, 0)[1]
    assert "join the bytes" in exercise.compare(decode_each_token(*case.args), case)
    exercise = EXERCISES["bpe.special"]
    case = instant_cases(exercise, 0)[2]
    assert "stay ordinary text" in exercise.compare(special_always_all(*case.args), case)
    case = instant_cases(exercise, 0)[0]
    assert "longer ones first" in exercise.compare(special_in_the_order_given(*case.args), case)
    exercise = EXERCISES["bpe.pair_counts"]
    case = instant_cases(exercise, 0)[0]
    assert "n times" in exercise.compare(pairs_each_word_once(*case.args), case)


# --- what each task rules out -----------------------------------------------------------------

def uses_llmkit_pair_counts(words):
    counts = {}
    for word, n in words.items():
        for pair, k in llmkit_pair_counts(list(word)).items():
            counts[pair] = counts.get(pair, 0) + k * n
    return counts


def uses_llmkit_merge(ids, pair, new_id):
    return llmkit_merge_pair(ids, pair, new_id)


def uses_bpe_tokenizer_train(text, num_merges, min_count=1):
    tokenizer = BPETokenizer.train(text, 256 + num_merges, special_tokens=())
    return {pair: 256 + rank for rank, pair in enumerate(tokenizer.merges)}


def tokenizer_of(merges, special_tokens=None, pattern=GPT2_SPLIT_PATTERN):
    vocab = {i: bytes([i]) for i in range(256)}
    for (left, right), new_id in merges.items():
        vocab[new_id] = vocab[left] + vocab[right]
    return BPETokenizer(vocab, list(merges), special_tokens or {}, pattern or r"(?s).+")


def uses_bpe_tokenizer_decode(ids, merges, special_tokens=None):
    return tokenizer_of(merges, special_tokens).decode(ids)


def uses_bpe_tokenizer_encode(text, merges, pattern=GPT2_SPLIT_PATTERN):
    return tokenizer_of(merges, None, pattern).encode_ordinary(text)


def uses_tokenizer_encode_with_special(text, merges, special_tokens, allowed_special="all"):
    allowed = allowed_special if isinstance(allowed_special, str) else set(allowed_special)
    return tokenizer_of(merges, special_tokens).encode(text, allowed_special=allowed)


@pytest.mark.parametrize("exercise_id, route, named", [
    ("bpe.pair_counts", uses_llmkit_pair_counts, "llmkit.tokenizers.bpe.get_pair_counts"),
    ("bpe.merge", uses_llmkit_merge, "llmkit.tokenizers.bpe.merge_pair"),
    ("bpe.train", uses_bpe_tokenizer_train, "llmkit.tokenizers.bpe.BPETokenizer"),
    ("bpe.decode", uses_bpe_tokenizer_decode, "llmkit.tokenizers.bpe.BPETokenizer"),
    ("bpe.encode", uses_bpe_tokenizer_encode, "llmkit.tokenizers.bpe.BPETokenizer"),
    ("bpe.special", uses_tokenizer_encode_with_special, "llmkit.tokenizers.base.Tokenizer"),
])
def test_a_forbidden_route_is_reported_as_forbidden(exercise_id, route, named):
    result = check(exercise_id, route)
    assert result.status == "forbidden" and named in result.message, str(result)


# --- the check file's plain references against llmkit's BPETokenizer ------------------------

TEXTS = ["the cat sat on the mat. then the cat saw the hat, and the cat sat on the hat. " * 3,
         "Mia's dog ran 3 times!! Then it    slept.\n\nThe end. café über 日本 🙂 🙂",
         "aaaaaa bbb aaaaaa ab ab ba"]


@pytest.mark.parametrize("text", TEXTS)
def test_the_reference_trainer_learns_llmkits_merges(text):
    for num_merges in (1, 5, 40):
        ours = CHECKS.train_reference(text, num_merges)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")   # a short text runs out of pairs: expected here
            theirs = BPETokenizer.train(text, 256 + num_merges, special_tokens=()).merges
        assert list(ours) == theirs[:len(ours)] and len(ours) == len(theirs)
        assert list(ours.values()) == list(range(256, 256 + len(ours)))


@pytest.mark.parametrize("text", TEXTS)
def test_the_reference_encoder_and_decoder_agree_with_llmkit(text):
    probe = text[::-1] + " zebra <|endoftext|> ok"
    for pattern in (GPT2_SPLIT_PATTERN, CHECKS.NO_SPLIT, None):
        merges = CHECKS.train_reference(text, 30, 1, pattern)
        tokenizer = tokenizer_of(merges, {"<|endoftext|>": 1000, "<|end|>": 1001,
                                          "<|end|>\n": 1002}, pattern)
        ids = CHECKS.encode_reference(probe, merges, pattern)
        assert ids == tokenizer.encode_ordinary(probe)
        assert CHECKS.decode_reference(ids + [1000, 195], merges, tokenizer.special_tokens) == \
            tokenizer.decode(ids + [1000, 195])
    special = {"<|endoftext|>": 1000, "<|end|>": 1001, "<|end|>\n": 1002}
    merges = CHECKS.train_reference(text, 30)
    tokenizer = tokenizer_of(merges, special)
    for allowed in ("all", "none", ["<|end|>"], ["<|end|>", "<|end|>\n"]):
        text_with = f"a<|end|>\nb<|endoftext|>c<|end|>{text[:20]}"
        wanted = tokenizer.encode(text_with, allowed_special=allowed if isinstance(
            allowed, str) else set(allowed))
        assert CHECKS.special_reference(text_with, merges, special, allowed) == wanted


def test_hidden_pair_counts_match_llmkits_on_each_word():
    exercise = EXERCISES["bpe.pair_counts"]
    for case in hidden_cases(exercise, 0):
        expected = {}
        for word, n in case.args[0].items():
            for pair, k in llmkit_pair_counts(list(word)).items():
                expected[pair] = expected.get(pair, 0) + k * n
        assert case.expected == expected
