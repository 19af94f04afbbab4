"""The checks of exercise notebook 01 (bigram model): instant and hidden cases.

Every expected value comes from `llmkit.bigram`, computed before the learner's function
runs; while it runs, `llmkit.bigram` itself is off limits (calling it costs the task).
The sampling task cannot be compared number by number (any correct sampler may draw
differently), so it is checked by its properties: the length, only possible transitions,
the same output for the same seed, and transition frequencies that match the
probabilities (a chi-square test so strict that a correct sampler fails about once in a
billion runs).
"""

from __future__ import annotations

import math

import torch

from llmkit import bigram
from llmkit.grading.exercise import (Assignment, Case, Exercise, compare_numbers, compare_tensors,
                       describe_type)
from llmkit.grading.exercise import random_int as _int

SETUP = "import math\nimport torch\nfrom llmkit.grading import check\n"

# The whole reference module: every function and class in it, recognised by its code.
FORBIDDEN = ("llmkit.bigram",)


def _ids(generator, vocab_size, length) -> torch.Tensor:
    return torch.randint(0, vocab_size, (length,), generator=generator)


def _probs(generator, vocab_size, sparse=False) -> torch.Tensor:
    """A random (V, V) bigram table; with sparse, about half of each row is zero."""
    counts = torch.randint(0, 20, (vocab_size, vocab_size), generator=generator)
    if sparse:
        keep = torch.rand(vocab_size, vocab_size, generator=generator) < 0.5
        keep[torch.arange(vocab_size), torch.randint(0, vocab_size, (vocab_size,),
                                                     generator=generator)] = True
        counts = (counts + 1) * keep
        return bigram.bigram_probs(counts, smoothing=0.0)
    return bigram.bigram_probs(counts, smoothing=1.0)


# --- 1. counting ----------------------------------------------------------------------

def _count_cases(generator, hidden):
    cases = []
    for _ in range(6 if hidden else 2):
        vocab_size = _int(generator, 3, 12)
        ids = _ids(generator, vocab_size, _int(generator, 10, 200))
        cases.append(Case((ids, vocab_size), bigram.count_bigrams(ids, vocab_size)))
    if hidden:
        edge = [
            (torch.tensor([2]), 4, "a single id (no pairs at all)"),
            (torch.tensor([1, 1, 1, 1]), 3, "the same id repeated"),
            (torch.tensor([0, 1, 2, 0, 1]), 7, "a vocabulary larger than the ids used"),
        ]
        cases += [Case((ids, size), bigram.count_bigrams(ids, size), note)
                  for ids, size, note in edge]
    return cases


def _compare_counts(answer, case):
    return compare_tensors(answer, case.expected, name="counts")


# --- 2. probabilities -----------------------------------------------------------------

def _probs_cases(generator, hidden):
    cases = []
    for smoothing in ((1.0, 0.5, 0.1, 0.0, 2.0) if hidden else (1.0, 0.5)):
        vocab_size = _int(generator, 3, 10)
        # Every row gets at least one count, so smoothing 0 still gives a distribution.
        counts = torch.randint(0, 15, (vocab_size, vocab_size), generator=generator)
        counts[:, 0] += 1
        note = "smoothing = 0 (plain counts)" if smoothing == 0 else ""
        cases.append(Case((counts, smoothing), bigram.bigram_probs(counts, smoothing), note))
    if hidden:
        counts = torch.zeros(4, 4, dtype=torch.long)
        counts[1, 2] = 5
        cases.append(Case((counts, 1.0), bigram.bigram_probs(counts, 1.0),
                          "rows with no counts at all (smoothing must fill them)"))
    return cases


def _compare_probs(answer, case):
    return compare_tensors(answer, case.expected, name="probs", any_float_dtype=True,
                           atol=1e-6, rtol=1e-5)


# --- 3. sampling ----------------------------------------------------------------------

def _sample_cases(generator, hidden):
    cases = []
    for n_tokens in ((3000, 2000, 0) if hidden else (2000,)):
        vocab_size = _int(generator, 3, 8)
        probs = _probs(generator, vocab_size, sparse=True)
        start = _int(generator, 0, vocab_size)
        seed = _int(generator, 0, 2**31 - 1)
        note = "n_tokens = 0" if n_tokens == 0 else ""
        cases.append(Case((probs, start, n_tokens, torch.Generator().manual_seed(seed)),
                          probs, note, calls=2))
    # A table with one certain next id per row: the walk is fully determined.
    vocab_size = 5
    order = torch.randperm(vocab_size, generator=generator)
    probs = torch.zeros(vocab_size, vocab_size)
    probs[torch.arange(vocab_size), order] = 1.0
    cases.append(Case((probs, 0, 12, torch.Generator().manual_seed(1)), probs,
                      "every row has one certain next id", calls=2))
    return cases


def _compare_sample(answers, case):
    probs, start, n_tokens, _ = case.args
    samples = []
    for answer in answers:
        if isinstance(answer, torch.Tensor) and answer.dim() == 1:
            answer = answer.tolist()
        if not isinstance(answer, list):
            return f"sample should return a list of ids, but it returned {describe_type(answer)}."
        if len(answer) != n_tokens:
            return (f"asked for {n_tokens} new ids, got {len(answer)} "
                    "(the start id is not part of the result).")
        if any(isinstance(i, bool) or not isinstance(i, int) for i in answer):
            return "every id in the sample should be a Python int (use int(...) or .item())."
        samples.append(answer)
    if samples[0] != samples[1]:
        return ("two calls with generators seeded the same gave different samples: draw "
                "with the generator you are given (torch.multinomial(..., generator=...)).")
    walk = [start] + samples[0]
    vocab_size = probs.shape[0]
    for previous, current in zip(walk, walk[1:]):
        if not 0 <= current < vocab_size:
            return f"id {current} is outside the vocabulary [0, {vocab_size})."
        if probs[previous, current] == 0:
            return (f"the sample goes from id {previous} to id {current}, which has "
                    "probability 0: draw each id from the row of the id before it.")
    return _transition_frequencies_mismatch(probs, walk)


def _transition_frequencies_mismatch(probs, walk):
    """None when the transition counts fit `probs` (chi-square test), else a message."""
    vocab_size = probs.shape[0]
    observed = bigram.count_bigrams(torch.tensor(walk), vocab_size).double()
    visits = observed.sum(dim=1, keepdim=True)
    expected = visits * probs.double()
    support = (probs > 0) & (visits > 0)
    if support.sum() == 0:
        return None
    statistic = float((((observed - expected) ** 2) / expected.clamp_min(1e-12))[support].sum())
    dof = int(support.sum()) - int((visits.squeeze(1) > 0).sum())
    if dof <= 0:
        return None
    # Wilson-Hilferty: (X / dof)^(1/3) is close to normal; z > 6 happens ~1e-9 by chance.
    z = ((statistic / dof) ** (1 / 3) - (1 - 2 / (9 * dof))) / math.sqrt(2 / (9 * dof))
    if z > 6:
        return ("the ids do not follow the probabilities: some transitions come far more "
                "often than their probability says. Draw from the whole row with "
                "torch.multinomial(probs[current], 1, ...) rather than picking the largest.")
    return None


# --- 4. cross-entropy, 5. perplexity and bits -----------------------------------------

def _loss_inputs(generator, hidden):
    inputs = []
    for _ in range(5 if hidden else 2):
        vocab_size = _int(generator, 3, 12)
        inputs.append((_probs(generator, vocab_size), _ids(generator, vocab_size,
                                                           _int(generator, 2, 300)), ""))
    if hidden:
        probs = _probs(generator, 4)
        inputs.append((probs, torch.tensor([3, 1]), "just two ids (one prediction)"))
        # (No case with a probability-0 pair: its infinite loss would reward any function
        # that returns inf.)
    return inputs


def _cross_entropy_cases(generator, hidden):
    return [Case((probs, ids), bigram.cross_entropy(probs, ids), note)
            for probs, ids, note in _loss_inputs(generator, hidden)]


def _compare_cross_entropy(answer, case):
    return compare_numbers(answer, case.expected, name="the cross-entropy")


def _perplexity_cases(generator, hidden):
    return [Case((probs, ids), (bigram.perplexity(probs, ids), bigram.bits_per_char(probs, ids)),
                 note) for probs, ids, note in _loss_inputs(generator, hidden)]


def _compare_perplexity(answer, case):
    if not isinstance(answer, tuple) or len(answer) != 2:
        return ("perplexity_and_bits should return a tuple (perplexity, bits_per_char), "
                f"but it returned {describe_type(answer)}.")
    return (compare_numbers(answer[0], case.expected[0], name="the perplexity")
            or compare_numbers(answer[1], case.expected[1], name="the bits per character"))


# --- 6. choosing the smoothing on held-out text ---------------------------------------

def _smoothing_cases(generator, hidden):
    cases = []
    for _ in range(4 if hidden else 2):
        vocab_size = _int(generator, 4, 10)
        # A peaked table makes real structure to learn, so the best smoothing is small.
        source = _probs(generator, vocab_size, sparse=True) * 0.9 + 0.1 / vocab_size
        walk = bigram.sample(source, 0, _int(generator, 200, 600), generator)
        split = len(walk) * 3 // 4
        train, val = torch.tensor(walk[:split]), torch.tensor(walk[split:])
        candidates = [0.01, 0.1, 0.5, 1.0, 3.0, 10.0]
        counts = bigram.count_bigrams(train, vocab_size)
        losses = {k: bigram.cross_entropy(bigram.bigram_probs(counts, k), val)
                  for k in candidates}
        expected = bigram.best_smoothing(train, val, vocab_size, candidates)
        cases.append(Case((train, val, vocab_size, candidates), (expected, losses)))
    return cases


def _compare_smoothing(answer, case):
    best, losses = case.expected
    if answer not in losses:
        return (f"best_smoothing should return one of the candidates {list(losses)}, "
                f"got {answer!r}.")
    # A candidate within rounding of the best is as good (float32 vs float64 sums).
    if math.isclose(losses[answer], losses[best], rel_tol=1e-6):
        return None
    return (f"chose smoothing {answer}, whose validation cross-entropy is "
            f"{losses[answer]:.4f}; {best} gives {losses[best]:.4f}.")


EXERCISES = [
    Exercise("bigram.counts", "count_bigrams", 2, "Count the bigrams",
             _count_cases, _compare_counts, forbidden=FORBIDDEN,
             hint="Make a (V, V) int64 table of zeros (torch.zeros(..., dtype=torch.long)) "
                  "and add 1 at [a, b] for each neighbouring pair (a, b) = ids[t], ids[t+1]."),
    Exercise("bigram.probs", "bigram_probs", 2, "Counts to probabilities",
             _probs_cases, _compare_probs, forbidden=FORBIDDEN,
             hint="Add the smoothing to every count, convert to float, then divide each row "
                  "by its own sum (sum over dim=1 with keepdim=True)."),
    Exercise("bigram.sample", "sample", 2, "Sample text",
             _sample_cases, _compare_sample, forbidden=FORBIDDEN,
             hint="Loop n_tokens times: draw the next id from the row of the current id with "
                  "torch.multinomial(row, 1, generator=generator), then move to it."),
    Exercise("bigram.cross_entropy", "cross_entropy", 2, "Cross-entropy",
             _cross_entropy_cases, _compare_cross_entropy, forbidden=FORBIDDEN,
             hint="Look up the probability of each actual next id given the id before it, "
                  "take the natural log, average over the n - 1 predictions, flip the sign."),
    Exercise("bigram.perplexity", "perplexity_and_bits", 1, "Perplexity and bits per char",
             _perplexity_cases, _compare_perplexity, forbidden=FORBIDDEN,
             hint="Both come from the cross-entropy H in nats: perplexity = e^H, and bits "
                  "use log base 2 instead of base e (divide by ln 2)."),
    Exercise("bigram.smoothing", "best_smoothing", 3, "Stretch: choose the smoothing",
             _smoothing_cases, _compare_smoothing, forbidden=FORBIDDEN,
             hint="Count on train_ids only; for each candidate build the probabilities and "
                  "measure the cross-entropy on val_ids; return the candidate with the lowest "
                  "(the first one on ties)."),
]

ASSIGNMENT = Assignment("01_bigrams", "Exercises 01: a bigram language model", SETUP, EXERCISES)
