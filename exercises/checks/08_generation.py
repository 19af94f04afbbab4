"""The checks of exercise notebook 08 (generation): instant and hidden cases.

Every expected value comes from `llmkit.generate` (or PyTorch's softmax), computed before
the learner's function runs; where a task goes past llmkit's version (a k per row, a
window over the history and padding), llmkit's function is applied row by row to what
that row should see. While the learner's function runs, `llmkit.generate`'s finished
pieces are off limits (calling one is reported as "forbidden"). `torch.topk`, `torch.sort`
and `torch.multinomial` stay allowed: none of them does a whole task.

Two tasks have more than one right answer, so they are checked by their properties:

- top-p: when tokens tie at the edge of the nucleus, any of them may be the one kept. The
  answer must keep the original logits, set the rest to -inf, keep every token at least as
  likely as any dropped one, reach p, keep at least min_keep tokens, and be the smallest
  such set;
- sampling: any correct sampler may draw differently. The answer must have the right
  length, repeat for the same seed, never draw a token the filters removed, and match the
  filtered probabilities in a chi-square test (a correct sampler fails it about once in a
  billion runs).

A task earns its points only when every hidden case passes, and the instant cases already
try every clause of each statement: temperature 0 and tiny temperatures, ties and k >= V
(k larger than V too), a nucleus smaller than min_keep, repeated ids, negative and zero
logits, a window and padded rows.
"""

from __future__ import annotations

import math

import torch

from llmkit import generate
from llmkit.grading.exercise import Assignment, Case, Exercise, compare_tensors, describe_type
from llmkit.grading.exercise import random_int as _int

SETUP = "import math\nimport torch\nfrom llmkit.grading import check\n"

GENERATE = ("llmkit.generate",) + tuple(f"llmkit.generate.{name}" for name in (
    "apply_temperature", "top_k_filter", "top_p_filter", "apply_repetition_penalty",
    "next_token_probs", "sample_tokens", "generate", "stream", "generate_text",
))


def _logits(generator, batch, vocab, scale=3.0) -> torch.Tensor:
    return torch.randn(batch, vocab, generator=generator) * scale


def _float(generator, low, high) -> float:
    return low + (high - low) * float(torch.rand(1, generator=generator))


# --- 1. temperature (and greedy) ------------------------------------------------------

def _temperature_case(logits, temperature, note=""):
    expected = generate.next_token_probs(logits, temperature=temperature)
    return Case((logits, temperature), expected, note)


def _temperature_cases(generator, hidden):
    cases = [_temperature_case(_logits(generator, _int(generator, 1, 5), _int(generator, 2, 30)),
                               round(_float(generator, 0.3, 2.0), 2))
             for _ in range(4 if hidden else 2)]
    cases += [_temperature_case(_logits(generator, 3, 12), 0, "temperature 0 (greedy)"),
              _temperature_case(_logits(generator, 2, 20), 0.01,
                                "temperature 0.01 (logits / T reach the hundreds)")]
    if hidden:
        cases += [
            _temperature_case(_logits(generator, 2, 20), 0.002,
                              "temperature 0.002 (logits / T reach the thousands)"),
            _temperature_case(_logits(generator, 2, 20), 100.0, "temperature 100 (nearly uniform)"),
            _temperature_case(_logits(generator, 1, 8) + 500.0, 1.0, "logits near 500"),
            _temperature_case(_logits(generator, 4, 1), 0.7, "a vocabulary of one"),
            _temperature_case(_logits(generator, 1, 50), 0, "temperature 0, one long row"),
        ]
    return cases


def _compare_temperature(answer, case):
    logits, temperature = case.args
    problem = compare_tensors(answer, case.expected, name="the tensor of probabilities",
                              any_float_dtype=True, atol=1e-5, rtol=1e-4)
    if problem and isinstance(answer, torch.Tensor) and answer.shape == logits.shape:
        if temperature == 0:
            problem += (" Temperature 0 means greedy: all the probability (1.0) on each row's "
                        "largest logit, 0 elsewhere.")
        elif torch.isnan(answer).any():
            problem += (" Some values are nan: exp of a large logit / T overflows; subtract "
                        "each row's largest value first, or use a stable softmax.")
        elif torch.allclose(answer.double(), (logits * temperature).softmax(-1).double(),
                            atol=1e-5):
            problem += " It looks as if you multiplied by the temperature; divide by it."
    return problem


# --- 2. top-k, a k per row -------------------------------------------------------------

def _top_k_case(logits, k, note=""):
    """k: a list, one int per row; llmkit's filter runs on each row with its own k."""
    expected = torch.cat([generate.top_k_filter(logits[row:row + 1], k[row])
                          for row in range(len(k))])
    return Case((logits, torch.tensor(k)), expected, note)


def _top_k_cases(generator, hidden):
    cases = []
    for _ in range(3 if hidden else 1):
        batch, vocab = _int(generator, 2, 6), _int(generator, 3, 30)
        k = [_int(generator, 1, vocab) for _ in range(batch)]
        cases.append(_top_k_case(_logits(generator, batch, vocab), k, "a different k per row"))
    ties = torch.tensor([[3.0, 1.0, 3.0, 2.0, 2.0, 0.0], [1.0, 1.0, 1.0, 5.0, 0.0, 1.0]])
    cases += [_top_k_case(ties, [3, 2], "ties with a row's k-th largest logit (they are kept)"),
              _top_k_case(_logits(generator, 3, 7), [2, 7, 12],
                          "k = 2, k equal to the vocabulary size, k larger than it")]
    if hidden:
        cases += [
            _top_k_case(_logits(generator, 3, 10), [1, 1, 1], "k = 1 in every row"),
            _top_k_case(_logits(generator, 2, 5), [9, 40], "every k larger than the vocabulary"),
            _top_k_case(_logits(generator, 3, 8) - 50.0, [3, 1, 5], "all logits negative"),
            _top_k_case(torch.zeros(2, 6), [2, 6], "a row where every logit ties"),
            _top_k_case(_logits(generator, 4, 9), [9, 3, 10, 4],
                        "k at, below and above the vocabulary size, mixed"),
        ]
    return cases


def _compare_top_k(answer, case):
    logits, k = case.args
    problem = compare_tensors(answer, case.expected, name="the tensor of filtered logits",
                              any_float_dtype=True)
    if problem and isinstance(answer, torch.Tensor) and answer.shape == case.expected.shape:
        kept, expected_kept = torch.isfinite(answer), torch.isfinite(case.expected)
        if (kept != expected_kept).any():
            counts, expected_counts = kept.sum(-1).tolist(), expected_kept.sum(-1).tolist()
            problem += (f" Per row you keep {counts} tokens; the reference keeps "
                        f"{expected_counts} for k = {k.tolist()} (each row has its own k, and "
                        "ties with a row's k-th largest are kept).")
        else:
            problem += " The kept tokens should keep their logits unchanged."
    return problem


# --- 3. top-p, keeping at least min_keep tokens ----------------------------------------

def _top_p_case(logits, p, min_keep, note=""):
    return Case((logits, p, min_keep), generate.top_p_filter(logits, p), note)


def _top_p_cases(generator, hidden):
    cases = []
    for _ in range(4 if hidden else 1):
        cases.append(_top_p_case(_logits(generator, _int(generator, 1, 5), _int(generator, 5, 40)),
                                 round(_float(generator, 0.3, 0.95), 3), 1))
    # Probabilities 0.4 and three times 0.2 (in a shuffled order): p = 0.7 needs the 0.4 and
    # two of the three tied 0.2s, and either two will do.
    tied = torch.tensor([[0.2, 0.4, 0.2, 0.2]]).log()
    peaked = _logits(generator, 2, 12)
    peaked[:, 5] = 20.0
    cases += [_top_p_case(tied, 0.7, 1, "tied tokens at the edge of the nucleus"),
              _top_p_case(peaked, 0.9, 3, "one token above p on its own, min_keep = 3"),
              _top_p_case(_logits(generator, 2, 15), 0.5, 2, "min_keep = 2")]
    if hidden:
        cases += [
            _top_p_case(_logits(generator, 2, 10), 1.0, 1, "p = 1 (keep everything)"),
            _top_p_case(torch.zeros(2, 6), 0.5, 1, "all logits equal (every token ties)"),
            _top_p_case(_logits(generator, 3, 30, scale=0.3), 0.9, 4, "a flat distribution"),
            _top_p_case(_logits(generator, 1, 8) + 300.0, 0.8, 2, "logits near 300"),
            _top_p_case(_logits(generator, 2, 5), 0.3, 9, "min_keep larger than the vocabulary"),
            _top_p_case(_logits(generator, 3, 20), 0.6, 5, "min_keep = 5"),
        ]
    return cases


def _compare_top_p(answer, case):
    logits, p, min_keep = case.args
    if not isinstance(answer, torch.Tensor):
        return f"top_p_filter should return a tensor, but it returned {describe_type(answer)}."
    if answer.shape != logits.shape:
        return f"the filtered logits have shape {tuple(answer.shape)}, expected {tuple(logits.shape)}."
    if not answer.is_floating_point():
        return f"the filtered logits have dtype {answer.dtype}; they should be floats."
    answer, logits = answer.double(), logits.double()
    kept = answer > float("-inf")
    if (answer[~kept] != float("-inf")).any() or torch.isnan(answer).any():
        return "the dropped tokens should be set to -inf (float('-inf')), and nothing to nan."
    if not torch.allclose(answer[kept], logits[kept], atol=1e-5, rtol=1e-5):
        return "the kept tokens should keep their logits unchanged."
    probs = logits.softmax(-1)
    least = min(min_keep, logits.shape[-1])
    for row in range(len(logits)):
        row_kept, row_probs = kept[row], probs[row]
        count = int(row_kept.sum())
        if not row_kept.any():
            return f"row {row} keeps no token at all; the most likely token is always kept."
        mass, smallest = float(row_probs[row_kept].sum()), float(row_probs[row_kept].min())
        if (~row_kept).any() and smallest < float(row_probs[~row_kept].max()) - 1e-12:
            return (f"row {row} drops a token that is more likely than one it keeps: keep the "
                    "most likely tokens, in order of probability (is the mask back in vocabulary "
                    "order?).")
        if mass < p - 1e-6:
            return (f"row {row} keeps tokens with probability {mass:.4f} in all, less than "
                    f"p = {p}: the token whose probability takes the sum past p belongs to the "
                    "set too.")
        if count < least:
            return (f"row {row} keeps {count} tokens, fewer than min_keep = {min_keep} (or the "
                    "whole vocabulary, if it is smaller): the nucleus alone is too small here.")
        if count > least and mass - smallest >= p + 1e-6:
            return (f"row {row} keeps {count} tokens, with probability {mass:.4f}; the set is "
                    f"not the smallest: without its least likely token it still reaches p = {p} "
                    f"and keeps at least min_keep = {min_keep}.")
    return None


# --- 4. the repetition penalty over a window, with padded rows ---------------------------

PAD = -1


def _penalty_expected(logits, previous, penalty, window):
    """llmkit's penalty on each row, over the ids that row sees (its window, padding out)."""
    rows = []
    for row in range(len(logits)):
        seen = previous[row] if window is None else previous[row, -window:]
        seen = seen[seen != PAD]
        rows.append(generate.apply_repetition_penalty(logits[row:row + 1], seen[None], penalty))
    return torch.cat(rows)


def _penalty_case(logits, previous, penalty, window, note=""):
    expected = _penalty_expected(logits, previous, penalty, window)
    return Case((logits, previous, penalty, window), expected, note)


def _history(generator, batch, length, vocab, pads=None, repeat=True):
    """(batch, length) ids, left-padded with PAD by pads[row]; each row repeats an id."""
    previous = torch.randint(0, vocab, (batch, length), generator=generator)
    if repeat and length >= 2:
        previous[:, -1] = previous[:, -2]         # the latest id also came just before
    for row, n in enumerate(pads or []):
        previous[row, :n] = PAD
    return previous


def _penalty_cases(generator, hidden):
    signs = torch.tensor([[2.0, -2.0, 0.5, -0.5, 0.0, 3.0], [1.0, -1.0, 0.0, 2.0, -3.0, 0.7]])
    cases = [
        _penalty_case(_logits(generator, 2, 8), torch.tensor([[2, 2, 2, 5, 2], [0, 1, 0, 1, 0]]),
                      1.5, None, "ids that appear several times (penalised once)"),
        _penalty_case(signs, torch.tensor([[0, 1, 2, 3, 4], [1, 2, 4, 4, 4]]), 2.0, None,
                      "positive, negative and zero logits"),
        _penalty_case(_logits(generator, 2, 10), torch.tensor([[3, 7, 1, 4, 4, 2],
                                                                [5, 5, 0, 9, 8, 6]]),
                      1.8, 3, "a window of the last 3 ids"),
        _penalty_case(_logits(generator, 3, 9), torch.tensor([[PAD, PAD, PAD, 4, 1],
                                                               [2, 6, 3, 3, 8],
                                                               [PAD, 7, 0, 0, 5]]),
                      1.4, None, "rows of different lengths, left-padded with -1"),
    ]
    if not hidden:
        return cases
    for _ in range(2):
        batch, vocab, length = _int(generator, 2, 5), _int(generator, 5, 25), _int(generator, 4, 12)
        pads = [_int(generator, 0, length) for _ in range(batch)]
        cases.append(_penalty_case(_logits(generator, batch, vocab),
                                   _history(generator, batch, length, vocab, pads),
                                   round(_float(generator, 1.1, 2.5), 2),
                                   _int(generator, 2, length),
                                   "a window, padded rows, repeats"))
    cases += [
        _penalty_case(_logits(generator, 2, 10), _history(generator, 2, 6, 10, [2, 0]),
                      0.8, 4, "a penalty below 1 (it encourages repeats)"),
        _penalty_case(_logits(generator, 2, 10), _history(generator, 2, 4, 10),
                      1.0, None, "penalty 1 (no change)"),
        _penalty_case(_logits(generator, 3, 6), _history(generator, 3, 40, 6, [5, 0, 30]),
                      1.3, None, "a long history covering most of the vocabulary"),
        _penalty_case(_logits(generator, 2, 7), _history(generator, 2, 5, 7, [5, 1]),
                      2.0, 3, "a row that is all padding (nothing to penalise)"),
        _penalty_case(_logits(generator, 2, 8), _history(generator, 2, 6, 8, [4, 0]),
                      1.6, 20, "a window longer than the history"),
    ]
    return cases


def _compare_penalty(answer, case):
    logits, previous, penalty, window = case.args
    problem = compare_tensors(answer, case.expected, name="the tensor of penalised logits",
                              any_float_dtype=True)
    if problem and isinstance(answer, torch.Tensor) and answer.shape == logits.shape:
        got, expected, plain = answer.double(), case.expected.double(), logits.double()
        history = previous if window is None else previous[:, -window:]
        counts = torch.stack([torch.bincount(row[row != PAD], minlength=logits.shape[1])
                              for row in history]).double()
        seen = counts > 0
        close = lambda other: torch.allclose(got, other, atol=1e-5, rtol=1e-4)
        if not torch.allclose(got[~seen], expected[~seen]):
            problem += (" A logit changed that should not: only the ids a row has in its window "
                        "are penalised; the padding (-1) is no id, and ids before the window "
                        "no longer count.")
        elif close(torch.where(seen, plain / penalty, plain)):
            problem += (" Check the negative logits: dividing one by the penalty would make "
                        "it more likely; multiply it instead.")
        elif close(torch.where(plain > 0, plain / penalty ** counts, plain * penalty ** counts)):
            problem += (" A token that appears several times was penalised once per "
                        "appearance; each seen token is penalised exactly once.")
    return problem


# --- 5. sampling with every filter ---------------------------------------------------------

def _sample_case(generator, logits, n, temperature, top_k, top_p, note=""):
    probs = generate.next_token_probs(logits[None], temperature=temperature, top_k=top_k,
                                      top_p=top_p)[0]
    seed = _int(generator, 0, 2**31 - 1)
    return Case((logits, n, temperature, top_k, top_p, torch.Generator().manual_seed(seed)),
                probs, note, calls=2)


def _sample_cases(generator, hidden):
    cases = []
    settings = [(1.0, None, None), (0.8, 5, None), (1.2, None, 0.8), (0.7, 8, 0.9)]
    for temperature, top_k, top_p in (settings if hidden else settings[1:3]):
        vocab = _int(generator, 10, 25)
        cases.append(_sample_case(generator, _logits(generator, 1, vocab, scale=1.5)[0], 3000,
                                  temperature, top_k, top_p))
    if hidden:
        cases += [
            _sample_case(generator, _logits(generator, 1, 12)[0], 20, 0, None, None,
                         "temperature 0 (every draw is the argmax)"),
            _sample_case(generator, _logits(generator, 1, 6)[0], 0, 1.0, None, None,
                         "n = 0"),
        ]
    return cases


def _compare_sample(answers, case):
    logits, n, temperature, top_k, top_p, _ = case.args
    probs = case.expected
    samples = []
    for answer in answers:
        if isinstance(answer, torch.Tensor) and answer.dim() == 1 and not answer.is_floating_point():
            answer = answer.tolist()
        if not isinstance(answer, list):
            return ("sample_next should return a list (or a 1-D integer tensor) of ids, but it "
                    f"returned {describe_type(answer)}.")
        if len(answer) != n:
            return f"asked for n = {n} ids, got {len(answer)}."
        if any(isinstance(i, bool) or not isinstance(i, int) for i in answer):
            return "every id should be an integer (use int(...) or .tolist())."
        samples.append(answer)
    if samples[0] != samples[1]:
        return ("two calls with generators seeded the same gave different ids: draw with the "
                "generator you are given (torch.multinomial(..., generator=generator)).")
    for token in samples[0]:
        if not 0 <= token < len(probs):
            return f"id {token} is outside the vocabulary [0, {len(probs)})."
        if probs[token] == 0:
            settings = f"temperature {temperature}, top_k {top_k}, top_p {top_p}"
            return (f"id {token} was drawn, but the filters ({settings}) give it probability "
                    "0. Apply temperature first, then top-k, then top-p, and draw from what "
                    "is left.")
    return _frequencies_mismatch(probs, samples[0])


def _frequencies_mismatch(probs, samples):
    """None when the counts of `samples` fit `probs` (chi-square test), else a message."""
    if len(samples) < 100:
        return None
    observed = torch.bincount(torch.tensor(samples), minlength=len(probs)).double()
    expected = probs.double() * len(samples)
    support = expected > 0
    dof = int(support.sum()) - 1
    if dof <= 0:
        return None
    statistic = float((((observed - expected) ** 2) / expected.clamp_min(1e-12))[support].sum())
    # Wilson-Hilferty: (X / dof)^(1/3) is close to normal; z > 6 happens ~1e-9 by chance.
    z = ((statistic / dof) ** (1 / 3) - (1 - 2 / (9 * dof))) / math.sqrt(2 / (9 * dof))
    if z > 6:
        worst = int(((observed - expected).abs() / expected.clamp_min(1e-12).sqrt())
                    .masked_fill(~support, 0).argmax())
        return (f"the ids do not follow the filtered probabilities: id {worst} came "
                f"{int(observed[worst])} times in {len(samples)} draws, about "
                f"{float(expected[worst]):.0f} expected. Is the temperature applied before "
                "top-p, and is the softmax taken over the filtered logits?")
    return None


EXERCISES = [
    Exercise("generation.temperature", "temperature_probs", 2,
             "Temperature (and greedy) probabilities",
             _temperature_cases, _compare_temperature, forbidden=GENERATE,
             hint="Dividing by the temperature comes before the softmax. Temperature 0 is the "
                  "limit of that: all the probability on each row's largest logit. A tiny "
                  "temperature makes the exponentials overflow unless the softmax is a stable one."),
    Exercise("generation.top_k", "top_k_filter", 2, "The top-k filter, a k per row",
             _top_k_cases, _compare_top_k, forbidden=GENERATE,
             hint="Each row has its own k, so each row has its own threshold: its k-th largest "
                  "logit. A row whose k reaches the vocabulary size has no threshold at all; "
                  "and a logit tied with the threshold stays."),
    Exercise("generation.top_p", "top_p_filter", 3, "The top-p filter, with a minimum",
             _top_p_cases, _compare_top_p, forbidden=GENERATE,
             hint="A token stays when the tokens ranked above it do not reach p yet (so the "
                  "one that crosses p stays), or when it is among the min_keep most likely. "
                  "Decide in sorted order, then map the decision back to the vocabulary's order."),
    Exercise("generation.repetition_penalty", "repetition_penalty", 2,
             "The repetition penalty over a window",
             _penalty_cases, _compare_penalty, forbidden=GENERATE,
             hint="First find, per row, the set of ids it has seen: only its last `window` "
                  "entries, never the padding. Then each of those ids is penalised once, the "
                  "way its logit's sign asks for: a penalty must make it less likely either way."),
    Exercise("generation.sample", "sample_next", 3, "Stretch: sample with every filter",
             _sample_cases, _compare_sample, forbidden=GENERATE,
             hint="Turn the (V,) logits into probabilities once, in the statement's order "
                  "(temperature 0 is greedy), then draw all n ids from them with the generator "
                  "you were given, with replacement."),
]

ASSIGNMENT = Assignment("08_generation", "Exercises 08: generation", SETUP, EXERCISES)
