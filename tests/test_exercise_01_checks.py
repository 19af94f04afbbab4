"""Exercise notebook 01's checks: the reference solutions pass every case; the lesson's own
code, pasted as the answer, fails a hidden case of every task but the warm-up (sampling);
the usual slips fail a hidden case and the instant check; what a task rules out is reported
as forbidden.

The solutions, the lesson's code (copied from lessons/01_rules_to_data.ipynb) and the slips
are written here by hand. The plain references of the check file are compared with
`llmkit.bigram` on bigrams, and with PyTorch's own cross-entropy.
"""

import math

import pytest
import torch
import torch.nn.functional as F

import llmkit.bigram
from llmkit.grading import ASSIGNMENTS, check
from llmkit.grading.exercise import hidden_cases

from exercise_support import instant_cases, passed

ASSIGNMENT = ASSIGNMENTS["01_bigrams"]
EXERCISES = {exercise.id: exercise for exercise in ASSIGNMENT.exercises}
CHECKS = __import__("sys").modules["llmkit_exercise_checks.01_bigrams"]


# --- the reference solutions ----------------------------------------------------------------

def count_bigrams(ids, vocab_size):
    rows = ids if ids.dim() == 2 else ids[None]
    counts = torch.zeros(vocab_size, vocab_size, dtype=torch.long)
    for row in rows.tolist():
        for a, b in zip(row, row[1:]):
            counts[a, b] += 1
    return counts


def bigram_probs(counts, smoothing=1.0):
    smoothed = counts.double() + smoothing
    totals = smoothed.sum(dim=-1, keepdim=True)
    uniform = torch.full_like(smoothed, 1.0 / counts.shape[-1])
    return torch.where(totals > 0, smoothed / totals.clamp_min(1e-300), uniform)


def sample(probs, start_id, n_tokens, generator=None):
    out, current = [], start_id
    for _ in range(n_tokens):
        current = int(torch.multinomial(probs[current], 1, generator=generator))
        out.append(current)
    return out


def cross_entropy(probs, ids):
    order = probs.dim()
    ids = ids.tolist()
    surprise = [-math.log(float(probs[tuple(ids[t - order + 1:t + 1])]))
                for t in range(order - 1, len(ids))]
    return sum(surprise) / len(surprise)


def perplexity_and_bits(probs, ids, token_lengths=None):
    order = probs.dim()
    loss, n = cross_entropy(probs, ids), len(ids) - order + 1
    chars = n if token_lengths is None else int(token_lengths[ids[order - 1:]].sum())
    return math.exp(loss), loss * n / math.log(2) / chars


def count_ngrams(ids, vocab_size, order):
    counts = torch.zeros((vocab_size,) * order, dtype=torch.long)
    for t in range(order - 1, len(ids)):
        counts[tuple(ids[t - order + 1:t + 1].tolist())] += 1
    return counts


def best_smoothing(train_ids, val_ids, vocab_size, candidates, order=2):
    counts = count_ngrams(train_ids, vocab_size, order)
    losses = [cross_entropy(bigram_probs(counts, k), val_ids) for k in candidates]
    return candidates[losses.index(min(losses))]


RIGHT = {"bigram.counts": count_bigrams, "bigram.probs": bigram_probs, "bigram.sample": sample,
         "bigram.cross_entropy": cross_entropy, "bigram.perplexity": perplexity_and_bits,
         "bigram.smoothing": best_smoothing}


# --- the lesson's own code, as a learner would paste it ------------------------------------

def lesson_count_pairs(ids, vocab_size):
    counts = [[0] * vocab_size for _ in range(vocab_size)]
    id_list = ids.tolist()
    for a, b in zip(id_list, id_list[1:]):
        counts[a][b] += 1
    return torch.tensor(counts)


def lesson_to_probs(counts, k):
    smoothed = counts.double() + k
    return (smoothed / smoothed.sum(dim=1, keepdim=True)).float()


def lesson_sample_ids(probs, start_id, n_chars, generator):
    out, current = [], start_id
    for _ in range(n_chars):
        current = int(torch.multinomial(probs[current], 1, generator=generator))
        out.append(current)
    return out


def lesson_cross_entropy(probs, ids):
    p_next = probs[ids[:-1], ids[1:]]
    return float(-p_next.double().log().mean())


def lesson_perplexity_and_bits(probs, ids, token_lengths=None):
    val_loss = lesson_cross_entropy(probs, ids)
    return math.exp(val_loss), val_loss / math.log(2)


def lesson_best_smoothing(train_ids, val_ids, vocab_size, candidates, order=2):
    # The lesson's loop (cell 31), with the learner's own (right) counting and probabilities.
    table = count_bigrams(train_ids, vocab_size)
    curve = [cross_entropy(bigram_probs(table, k), val_ids) for k in candidates]
    return candidates[curve.index(min(curve))]


LESSON = {"bigram.counts": lesson_count_pairs, "bigram.probs": lesson_to_probs,
          "bigram.cross_entropy": lesson_cross_entropy,
          "bigram.perplexity": lesson_perplexity_and_bits,
          "bigram.smoothing": lesson_best_smoothing}
WARM_UP = ("bigram.sample", lesson_sample_ids)


# --- the usual slips --------------------------------------------------------------------------

def counts_rows_joined(ids, vocab_size):
    return count_bigrams(ids.reshape(-1), vocab_size)


def probs_nan_for_unseen(counts, smoothing=1.0):
    smoothed = counts.double() + smoothing
    return smoothed / smoothed.sum(dim=-1, keepdim=True)


def probs_over_dim_1(counts, smoothing=1.0):
    smoothed = counts.double() + smoothing
    totals = smoothed.sum(dim=1, keepdim=True)
    return torch.where(totals > 0, smoothed / totals, 1.0 / counts.shape[-1])


def cross_entropy_over_n_minus_1(probs, ids):
    order = probs.dim()
    n = len(ids) - order + 1
    return cross_entropy(probs, ids) * n / (len(ids) - 1)


def bits_per_token(probs, ids, token_lengths=None):
    loss = cross_entropy(probs, ids)
    return math.exp(loss), loss / math.log(2)


def bits_counting_every_token(probs, ids, token_lengths=None):
    order = probs.dim()
    loss, n = cross_entropy(probs, ids), len(ids) - order + 1
    chars = len(ids) if token_lengths is None else int(token_lengths[ids].sum())
    return math.exp(loss), loss * n / math.log(2) / chars


def smoothing_chosen_on_training_text(train_ids, val_ids, vocab_size, candidates, order=2):
    return best_smoothing(train_ids, train_ids, vocab_size, candidates, order)


WRONG = [("bigram.counts", counts_rows_joined),
         ("bigram.probs", probs_nan_for_unseen),
         ("bigram.probs", probs_over_dim_1),
         ("bigram.cross_entropy", cross_entropy_over_n_minus_1),
         ("bigram.perplexity", bits_per_token),
         ("bigram.perplexity", bits_counting_every_token),
         ("bigram.smoothing", smoothing_chosen_on_training_text)]


def test_every_task_is_covered_and_the_points_stay():
    assert set(EXERCISES) == set(RIGHT) == set(LESSON) | {WARM_UP[0]}
    assert ASSIGNMENT.max_points == 12
    assert {e.id for e in ASSIGNMENT.exercises} >= {"bigram.counts", "bigram.probs"}


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("exercise_id", sorted(RIGHT))
def test_reference_solutions_pass_every_case(exercise_id, seed):
    exercise = EXERCISES[exercise_id]
    for cases in (instant_cases(exercise, seed), hidden_cases(exercise, seed)):
        assert all(passed(exercise, RIGHT[exercise_id], cases)), exercise_id


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("exercise_id", sorted(LESSON))
def test_the_lessons_own_code_fails_a_hidden_case(exercise_id, seed):
    exercise = EXERCISES[exercise_id]
    assert not all(passed(exercise, LESSON[exercise_id], hidden_cases(exercise, seed)))
    # ... and the instant check already says so.
    assert not all(passed(exercise, LESSON[exercise_id], instant_cases(exercise, seed)))


def test_the_warm_up_is_the_lessons_own_code():
    exercise_id, lesson_code = WARM_UP
    exercise = EXERCISES[exercise_id]
    assert "Warm-up" in exercise.title
    assert all(passed(exercise, lesson_code, hidden_cases(exercise, 0)))


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("exercise_id, wrong", WRONG, ids=lambda v: getattr(v, "__name__", v))
def test_a_usual_slip_fails_a_hidden_case_and_the_instant_check(exercise_id, wrong, seed):
    exercise = EXERCISES[exercise_id]
    assert not all(passed(exercise, wrong, hidden_cases(exercise, seed)))
    assert not all(passed(exercise, wrong, instant_cases(exercise, seed)))


def test_slips_get_a_message_that_names_them():
    exercise = EXERCISES["bigram.counts"]
    case = instant_cases(exercise, 0)[1]
    assert "joined end to end" in exercise.compare(counts_rows_joined(*case.args), case)
    exercise = EXERCISES["bigram.probs"]
    case = instant_cases(exercise, 0)[1]
    assert "uniform" in exercise.compare(probs_nan_for_unseen(*case.args), case)
    exercise = EXERCISES["bigram.perplexity"]
    case = instant_cases(exercise, 0)[1]
    assert "bits per token" in exercise.compare(bits_per_token(*case.args), case)
    assert "first token" in exercise.compare(bits_counting_every_token(*case.args), case)
    exercise = EXERCISES["bigram.cross_entropy"]
    case = instant_cases(exercise, 0)[1]
    message = exercise.compare(cross_entropy_over_n_minus_1(*case.args), case)
    assert "the cross-entropy is" in message and "predictions" in message


# --- what each task rules out -----------------------------------------------------------------

def uses_llmkit_counts(ids, vocab_size):
    rows = ids if ids.dim() == 2 else ids[None]
    return sum(llmkit.bigram.count_bigrams(row, vocab_size) for row in rows)


def uses_normalize(counts, smoothing=1.0):
    return F.normalize(counts.double() + smoothing, p=1, dim=-1)


def uses_nll_loss(probs, ids):
    if probs.dim() != 2:
        return cross_entropy(probs, ids)
    return F.nll_loss(probs.log()[ids[:-1]], ids[1:]).item()


def uses_torch_cross_entropy(probs, ids, token_lengths=None):
    loss = F.cross_entropy(probs.double().log().reshape(-1, probs.shape[-1])[:1],
                           torch.zeros(1, dtype=torch.long)).item()
    return perplexity_and_bits(probs, ids, token_lengths) if loss >= 0 else (0.0, 0.0)


def uses_llmkit_best_smoothing(train_ids, val_ids, vocab_size, candidates, order=2):
    return llmkit.bigram.best_smoothing(train_ids, val_ids, vocab_size, candidates)


def uses_llmkit_sample(probs, start_id, n_tokens, generator=None):
    return llmkit.bigram.sample(probs, start_id, n_tokens, generator)


@pytest.mark.parametrize("exercise_id, route, named", [
    ("bigram.counts", uses_llmkit_counts, "llmkit.bigram.count_bigrams"),
    ("bigram.probs", uses_normalize, "torch.nn.functional.normalize"),
    ("bigram.sample", uses_llmkit_sample, "llmkit.bigram.sample"),
    ("bigram.cross_entropy", uses_nll_loss, "nll_loss"),
    ("bigram.perplexity", uses_torch_cross_entropy, "nll_loss"),
    ("bigram.smoothing", uses_llmkit_best_smoothing, "llmkit.bigram.best_smoothing"),
])
def test_a_forbidden_route_is_reported_as_forbidden(exercise_id, route, named):
    result = check(exercise_id, route)
    assert result.status == "forbidden" and named in result.message, str(result)


# --- the check file's own references against independent ones ------------------------------

def test_plain_references_agree_with_llmkit_and_pytorch():
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 6, (300,), generator=generator)
    counts = CHECKS._ngram_counts(ids, 6, 2)
    torch.testing.assert_close(counts, llmkit.bigram.count_bigrams(ids, 6))
    probs = CHECKS._plain_probs(counts, 0.5)
    torch.testing.assert_close(probs.float(), llmkit.bigram.bigram_probs(counts, 0.5))
    total, n = CHECKS._plain_nats(probs, ids)
    assert total / n == pytest.approx(llmkit.bigram.cross_entropy(probs, ids), rel=1e-9)
    # A trigram's loss, from PyTorch's own cross-entropy on the rows of the right contexts.
    trigram = CHECKS._plain_probs(CHECKS._ngram_counts(ids, 6, 3), 0.3)
    rows = trigram[ids[:-2], ids[1:-1]]
    torch_loss = F.cross_entropy(rows.log(), ids[2:]).item()
    total, n = CHECKS._plain_nats(trigram, ids)
    assert n == len(ids) - 2 and total / n == pytest.approx(torch_loss, rel=1e-9)
    assert torch.equal(CHECKS._ngram_counts(ids, 6, 3).sum(), torch.tensor(len(ids) - 2))
