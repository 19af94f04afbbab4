"""The checks of exercise notebook 01 (bigram model): instant and hidden cases.

Lesson 01 wrote the bigram model for one text: count the pairs of a 1-D id tensor, add-k
smoothing on a (V, V) table, sampling, the cross-entropy of a bigram table, and its
perplexity and bits per character. The exercise asks for the next step of each (sampling,
task 3, is the one warm-up that is the lesson's own code):

1. counts of a batch of separate sequences (B, T): no pair crosses from one row to the next;
2. probabilities of an n-gram table of any order (normalise over the last dimension), with
   a context never seen getting the uniform distribution when the smoothing is 0 (the
   lesson's code gives 0 / 0 = nan there);
4. the cross-entropy of an n-gram table: the order is the table's number of dimensions;
5. bits per character when a token stands for several characters (the lesson's H / ln 2
   holds only for one character per token);
6. the smoothing chosen on held-out text for a bigram or a trigram model.

Every expected value is computed before the learner's function runs, from `llmkit.bigram`
where it covers the case (a 1-D sequence, a (V, V) table) and otherwise from the plain loops
below (`_ngram_counts`, `_plain_probs`, `_plain_nats`), which the tests check against
`llmkit.bigram` on bigrams. While the learner's function runs, `llmkit.bigram` is off
limits (calling it costs the task), and so are PyTorch's finished pieces that do a whole
task: `F.normalize` (task 2) and the negative log-likelihood kernel behind
`F.cross_entropy` / `F.nll_loss` (tasks 4 to 6).

The sampling task cannot be compared number by number (any correct sampler may draw
differently), so it is checked by its properties: the length, only possible transitions,
the same output for the same seed, and transition frequencies that match the
probabilities (a chi-square test so strict that a correct sampler fails about once in a
billion runs).

A task earns its points only when every hidden case passes, so the hidden cases are built
for the usual slips: every batch of counts has two or more rows; every order above 2 comes
with a table whose dims are not all alike in meaning (summing over dim 1 is wrong); every
bits-per-character case has tokens of different lengths; every trigram smoothing case is
one where the bigram's choice is worse.
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
# The kernel behind F.cross_entropy and F.nll_loss: it averages the log-likelihood for you.
NLL_OPS = ("nll_loss_forward", "nll_loss2d_forward")


# --- plain references, for what llmkit.bigram does not cover ------------------------------

def _ngram_counts(ids, vocab_size: int, order: int) -> torch.Tensor:
    """ids: (n,) -> (V,) * order int64 table: counts[a, b, c] = times (a, b, c) occurs."""
    counts = torch.zeros((vocab_size,) * order, dtype=torch.long)
    ids = ids.tolist()
    for t in range(order - 1, len(ids)):
        counts[tuple(ids[t - order + 1:t + 1])] += 1
    return counts


def _plain_probs(counts: torch.Tensor, smoothing: float) -> torch.Tensor:
    """Add-k over the last dimension; a context with no counts at all (only possible with
    smoothing 0) gets the uniform distribution. Float64."""
    smoothed = counts.double() + smoothing
    totals = smoothed.sum(dim=-1, keepdim=True)
    uniform = torch.full_like(smoothed, 1.0 / counts.shape[-1])
    return torch.where(totals > 0, smoothed / totals.clamp_min(1e-300), uniform)


def _plain_nats(probs: torch.Tensor, ids) -> tuple[float, int]:
    """(total -ln p over the predictions, number of predictions) of an n-gram table; the
    order is probs.dim(): each id from position order - 1 on is predicted from the
    order - 1 ids before it."""
    order, ids = probs.dim(), ids.tolist()
    total = 0.0
    for t in range(order - 1, len(ids)):
        total -= math.log(float(probs[tuple(ids[t - order + 1:t + 1])]))
    return total, len(ids) - order + 1


def _ids(generator, vocab_size, length) -> torch.Tensor:
    return torch.randint(0, vocab_size, (length,), generator=generator)


def _probs(generator, vocab_size, sparse=False, order=2) -> torch.Tensor:
    """A random (V,) * order table; with sparse, about half of each row is zero."""
    shape = (vocab_size,) * order
    counts = torch.randint(0, 20, shape, generator=generator)
    if sparse:
        keep = torch.rand(shape, generator=generator) < 0.5
        rows = keep.reshape(-1, vocab_size)
        rows[torch.arange(rows.shape[0]), torch.randint(0, vocab_size, (rows.shape[0],),
                                                        generator=generator)] = True
        counts = (counts + 1) * keep
        return _plain_probs(counts, 0.0).float()
    return _plain_probs(counts, 1.0).float()


# --- 1. counting a batch of sequences ---------------------------------------------------------

def _batch_counts(ids, vocab_size) -> torch.Tensor:
    rows = ids if ids.dim() == 2 else ids[None]
    total = torch.zeros(vocab_size, vocab_size, dtype=torch.long)
    for row in rows:
        total += bigram.count_bigrams(row, vocab_size)
    return total


def _count_case(ids, vocab_size, note=""):
    return Case((ids, vocab_size), _batch_counts(ids, vocab_size), note)


def _count_cases(generator, hidden):
    def batch(rows, length, vocab_size, note=""):
        return _count_case(torch.randint(0, vocab_size, (rows, length), generator=generator),
                           vocab_size, note)

    if not hidden:
        return [_count_case(_ids(generator, 5, 30), 5, "one sequence (n,)"),
                batch(3, 8, 4, "a batch of 3 sequences (3, 8)")]
    cases = [_count_case(_ids(generator, _int(generator, 3, 12), _int(generator, 10, 200)),
                         12, "one sequence, a vocabulary larger than the ids used")]
    for _ in range(3):
        cases.append(batch(_int(generator, 2, 6), _int(generator, 2, 40), _int(generator, 3, 10)))
    cases += [
        batch(4, 1, 5, "rows of one id each (no pairs at all)"),
        batch(2, 2, 3, "two rows of two ids"),
        _count_case(torch.tensor([2]), 4, "a single id (no pairs at all)"),
        _count_case(torch.tensor([[1, 1, 1], [1, 1, 0]]), 3, "the same id repeated in each row"),
    ]
    return cases


def _compare_counts(answer, case):
    ids, vocab_size = case.args
    problem = compare_tensors(answer, case.expected, name="counts")
    if problem and ids.dim() == 2 and isinstance(answer, torch.Tensor) \
            and answer.shape == case.expected.shape:
        joined = bigram.count_bigrams(ids.reshape(-1), vocab_size)
        if torch.equal(answer.long(), joined):
            problem += (" That is the count of the rows joined end to end: the last id of one "
                        "row and the first of the next are not neighbours.")
        elif torch.equal(answer.long(), case.expected.T):
            problem += " The table is transposed: the row is the id that comes first."
    return problem


# --- 2. probabilities of an n-gram table ------------------------------------------------------

def _probs_case(counts, smoothing, note=""):
    return Case((counts, smoothing), _plain_probs(counts, smoothing), note)


def _counts(generator, vocab_size, order, empty_rows=0):
    counts = torch.randint(0, 15, (vocab_size,) * order, generator=generator)
    rows = counts.reshape(-1, vocab_size)
    for row in torch.randperm(rows.shape[0], generator=generator)[:empty_rows].tolist():
        rows[row] = 0
    return counts


def _probs_cases(generator, hidden):
    if not hidden:
        return [_probs_case(_counts(generator, 5, 2), 0.5, "a bigram table, smoothing 0.5"),
                _probs_case(_counts(generator, 4, 3, empty_rows=2), 0.0,
                            "a trigram table (4, 4, 4), smoothing 0, two contexts never seen")]
    cases = [
        _probs_case(_counts(generator, _int(generator, 3, 10), 2), 1.0),
        _probs_case(_counts(generator, _int(generator, 3, 10), 2), 0.1),
        _probs_case(_counts(generator, _int(generator, 3, 7), 3), 0.5, "a trigram table"),
        _probs_case(_counts(generator, _int(generator, 3, 7), 3), 2.0, "a trigram table"),
        _probs_case(_counts(generator, 3, 4), 0.2, "a 4-gram table (3, 3, 3, 3)"),
        _probs_case(_counts(generator, 6, 2, empty_rows=2), 0.0,
                    "smoothing 0 and a row with no counts (uniform)"),
        _probs_case(_counts(generator, 5, 3, empty_rows=6), 0.0,
                    "a trigram table, smoothing 0, contexts never seen (uniform)"),
        _probs_case(_counts(generator, 4, 2, empty_rows=1), 1.0,
                    "a row with no counts (smoothing fills it)"),
    ]
    return cases


def _compare_probs(answer, case):
    counts, smoothing = case.args
    problem = compare_tensors(answer, case.expected, name="probs", any_float_dtype=True,
                              atol=1e-6, rtol=1e-5)
    if problem and isinstance(answer, torch.Tensor) and answer.shape == case.expected.shape:
        if torch.isnan(answer).any():
            problem += (" Some values are nan: a context with no counts and smoothing 0 divides "
                        "0 by 0; the task asks for the uniform distribution there.")
        elif counts.dim() > 2:
            sums = answer.double().sum(dim=-1)
            if not torch.allclose(sums, torch.ones_like(sums), atol=1e-4):
                problem += (" The distributions over the next id (the last dimension) do not "
                            "sum to 1.")
    return problem


# --- 3. sampling (the warm-up) ----------------------------------------------------------------

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
                "with the generator you are given.")
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
                "often than their probability says. Draw from the whole row rather than "
                "picking the largest.")
    return None


# --- 4. cross-entropy of an n-gram table, 5. perplexity and bits per character --------------

def _loss_inputs(generator, hidden):
    """(probs, ids, note) with probs of order 2 or 3 (and one 4-gram among the hidden)."""
    if not hidden:
        return [(_probs(generator, 6), _ids(generator, 6, 40), "a bigram table"),
                (_probs(generator, 4, order=3), _ids(generator, 4, 30), "a trigram table")]
    inputs = []
    for order in (2, 2, 3, 3, 3):
        vocab_size = _int(generator, 3, 9)
        inputs.append((_probs(generator, vocab_size, order=order),
                       _ids(generator, vocab_size, _int(generator, 5, 200)),
                       "a trigram table" if order == 3 else ""))
    inputs += [
        (_probs(generator, 3, order=4), _ids(generator, 3, 50), "a 4-gram table"),
        (_probs(generator, 4), torch.tensor([3, 1]), "a bigram table, two ids (one prediction)"),
        (_probs(generator, 4, order=3), torch.tensor([0, 3, 1]),
         "a trigram table, three ids (one prediction)"),
    ]
    # (No case with a probability-0 pair: its infinite loss would reward any function that
    # returns inf.)
    return inputs


def _cross_entropy_cases(generator, hidden):
    cases = []
    for probs, ids, note in _loss_inputs(generator, hidden):
        total, n = _plain_nats(probs, ids)
        cases.append(Case((probs, ids), total / n, note))
    return cases


def _compare_cross_entropy(answer, case):
    probs, ids = case.args
    problem = compare_numbers(answer, case.expected, name="the cross-entropy")
    if problem and probs.dim() > 2 and isinstance(answer, (int, float)):
        total, n = _plain_nats(probs, ids)
        if math.isclose(answer, total / (len(ids) - 1), rel_tol=1e-4):
            problem += (f" That is the right total divided by {len(ids) - 1}; a table of "
                        f"order {probs.dim()} makes {n} predictions.")
    return problem


def _lengths(generator, vocab_size):
    """Characters per token id, 1 to 5, never all equal."""
    lengths = torch.randint(1, 6, (vocab_size,), generator=generator)
    lengths[0], lengths[1] = 1, 4
    return lengths


def _perplexity_cases(generator, hidden):
    cases = []
    for number, (probs, ids, note) in enumerate(_loss_inputs(generator, hidden)):
        lengths = None if number == 0 else _lengths(generator, probs.shape[0])
        total, n = _plain_nats(probs, ids)
        chars = n if lengths is None else int(lengths[ids[probs.dim() - 1:]].sum())
        expected = (math.exp(total / n), total / math.log(2) / chars)
        note = ", ".join(part for part in (note, "one character per token" if lengths is None
                                           else "tokens of 1 to 5 characters") if part)
        cases.append(Case((probs, ids, lengths), expected, note))
    return cases


def _compare_perplexity(answer, case):
    if not isinstance(answer, tuple) or len(answer) != 2:
        return ("perplexity_and_bits should return a tuple (perplexity, bits_per_char), "
                f"but it returned {describe_type(answer)}.")
    problem = (compare_numbers(answer[0], case.expected[0], name="the perplexity")
               or compare_numbers(answer[1], case.expected[1], name="the bits per character"))
    probs, ids, lengths = case.args
    if problem and lengths is not None and isinstance(answer[1], (int, float)):
        total, n = _plain_nats(probs, ids)
        if math.isclose(answer[1], total / n / math.log(2), rel_tol=1e-4):
            problem += (" That is bits per token: here a token stands for several "
                        "characters.")
        elif math.isclose(answer[1], total / math.log(2) / int(lengths[ids].sum()), rel_tol=1e-4):
            problem += (" The characters of the first token(s) were counted too, but nothing "
                        "predicted them.")
    return problem


# --- 6. choosing the smoothing on held-out text, for a bigram or a trigram -------------------

CANDIDATES = [0.001, 0.01, 0.1, 0.5, 1.0, 3.0, 10.0]


def _val_losses(train, val, vocab_size, order, candidates):
    counts = _ngram_counts(train, vocab_size, order)
    losses = {}
    for k in candidates:
        total, n = _plain_nats(_plain_probs(counts, k), val)
        losses[k] = total / n
    return losses


def _best(losses):
    best = min(losses.values())
    return next(k for k, loss in losses.items() if loss == best)


def _smoothing_case(generator, order, note="", tries=40):
    """A train / validation split of a walk on a peaked table; for a trigram, one where the
    bigram's choice (and the training text's choice) loses on validation."""
    for _ in range(tries):
        vocab_size = _int(generator, 4, 8)
        source = _probs(generator, vocab_size, sparse=True, order=order) * 0.9 + 0.1 / vocab_size
        walk = _walk(source, _int(generator, 150, 500), generator)
        split = len(walk) * 3 // 4
        train, val = torch.tensor(walk[:split]), torch.tensor(walk[split:])
        losses = _val_losses(train, val, vocab_size, order, CANDIDATES)
        best = _best(losses)
        others = [_best(_val_losses(train, val, vocab_size, 2, CANDIDATES)),
                  _best(_val_losses(train, train, vocab_size, order, CANDIDATES))]
        if order == 2 or all(losses[k] > losses[best] * (1 + 1e-4) for k in others):
            return Case((train, val, vocab_size, list(CANDIDATES), order), (best, losses), note)
    raise RuntimeError("no trigram case separated the slips; widen the search")


def _walk(probs, length, generator):
    """Ids drawn from an n-gram table (order = probs.dim()), starting from random context."""
    order, vocab_size = probs.dim(), probs.shape[0]
    walk = torch.randint(0, vocab_size, (order - 1,), generator=generator).tolist()
    while len(walk) < length:
        row = probs[tuple(walk[len(walk) - order + 1:])]
        walk.append(int(torch.multinomial(row, 1, generator=generator)))
    return walk


def _smoothing_cases(generator, hidden):
    if not hidden:
        return [_smoothing_case(generator, 2, "a bigram model"),
                _smoothing_case(generator, 3, "a trigram model")]
    return [_smoothing_case(generator, order, "a trigram model" if order == 3 else "")
            for order in (2, 2, 3, 3, 3)]


def _compare_smoothing(answer, case):
    best, losses = case.expected
    if isinstance(answer, bool) or answer not in losses:
        return (f"best_smoothing should return one of the candidates {list(losses)}, "
                f"got {answer!r}.")
    # A candidate within rounding of the best is as good (float32 vs float64 sums).
    if math.isclose(losses[answer], losses[best], rel_tol=1e-6):
        return None
    order = case.args[4]
    return (f"chose smoothing {answer}, whose validation cross-entropy for the order-{order} "
            f"model is {losses[answer]:.4f}; {best} gives {losses[best]:.4f}.")


EXERCISES = [
    Exercise("bigram.counts", "count_bigrams", 2, "Count the bigrams of a batch",
             _count_cases, _compare_counts, forbidden=FORBIDDEN,
             hint="Each row of a batch is a text of its own: its last id and the next row's "
                  "first id were never neighbours. A 1-D tensor is a batch of one row."),
    Exercise("bigram.probs", "bigram_probs", 2, "Probabilities of an n-gram table",
             _probs_cases, _compare_probs, forbidden=FORBIDDEN + (
                 "torch.nn.functional.normalize",),
             hint="Whatever the table's order, the next id is its last dimension, so each "
                  "distribution runs along that dimension. A context with no counts and no "
                  "smoothing has nothing to divide: it gets 1 / V for every next id."),
    Exercise("bigram.sample", "sample", 2, "Warm-up: sample text",
             _sample_cases, _compare_sample, forbidden=FORBIDDEN,
             hint="Each new id is drawn from the row of the id drawn just before it (not always "
                  "from the start's row), with the generator you are given."),
    Exercise("bigram.cross_entropy", "cross_entropy", 2, "Cross-entropy of an n-gram table",
             _cross_entropy_cases, _compare_cross_entropy, forbidden=FORBIDDEN,
             forbidden_ops=NLL_OPS,
             hint="The table's number of dimensions is the order: a trigram table predicts "
                  "each id from the two ids before it, so the first id it can predict is the "
                  "third one, and there are fewer predictions than n - 1. Use the natural log."),
    Exercise("bigram.perplexity", "perplexity_and_bits", 1,
             "Perplexity, and bits per character for longer tokens",
             _perplexity_cases, _compare_perplexity, forbidden=FORBIDDEN,
             forbidden_ops=NLL_OPS,
             hint="Perplexity is per prediction. Bits per character share the same total "
                  "surprise among characters, not tokens: only the tokens that were predicted "
                  "count, each with its number of characters."),
    Exercise("bigram.smoothing", "best_smoothing", 3,
             "Stretch: choose the smoothing of a bigram or a trigram",
             _smoothing_cases, _compare_smoothing, forbidden=FORBIDDEN, forbidden_ops=NLL_OPS,
             hint="Count n-grams of the order asked for, on the training ids only; score each "
                  "candidate on the validation ids; keep the lowest (the first one on ties). "
                  "The smoothing a trigram needs is rarely the bigram's."),
]

ASSIGNMENT = Assignment("01_bigrams", "Exercises 01: a bigram language model", SETUP, EXERCISES)
