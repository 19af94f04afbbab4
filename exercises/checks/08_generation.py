"""The checks of exercise notebook 08 (generation): instant and hidden cases.

Every expected value comes from `llmkit.generate` (or PyTorch's softmax), computed before
the learner's function runs; while it runs, `llmkit.generate`'s finished pieces are off
limits (calling one costs the task). `torch.topk`, `torch.sort` and `torch.multinomial`
stay allowed: none of them does a whole task.

Two tasks have more than one right answer, so they are checked by their properties:

- top-p: when tokens tie at the edge of the nucleus, any of them may be the one kept. The
  answer must keep the original logits, set the rest to -inf, keep every token at least as
  likely as any dropped one, reach p, and be the smallest such set;
- sampling: any correct sampler may draw differently. The answer must have the right
  length, repeat for the same seed, never draw a token the filters removed, and match the
  filtered probabilities in a chi-square test (a correct sampler fails it about once in a
  billion runs).
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
    cases.append(_temperature_case(_logits(generator, 3, 12), 0, "temperature 0 (greedy)"))
    if hidden:
        cases += [
            _temperature_case(_logits(generator, 2, 20), 0.01,
                              "temperature 0.01 (logits / T reach the hundreds)"),
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


# --- 2. top-k ---------------------------------------------------------------------------

def _top_k_case(logits, k, note=""):
    return Case((logits, k), generate.top_k_filter(logits, k), note)


def _top_k_cases(generator, hidden):
    cases = []
    for _ in range(4 if hidden else 2):
        vocab = _int(generator, 3, 30)
        cases.append(_top_k_case(_logits(generator, _int(generator, 1, 5), vocab),
                                 _int(generator, 1, vocab)))
    ties = torch.tensor([[3.0, 1.0, 3.0, 2.0, 2.0, 0.0], [1.0, 1.0, 1.0, 5.0, 0.0, 1.0]])
    cases.append(_top_k_case(ties, 3, "ties with the k-th largest logit (they are kept)"))
    if hidden:
        cases += [
            _top_k_case(_logits(generator, 3, 10), 1, "k = 1"),
            _top_k_case(_logits(generator, 2, 7), 7, "k equal to the vocabulary size"),
            _top_k_case(_logits(generator, 2, 5), 9, "k larger than the vocabulary"),
            _top_k_case(_logits(generator, 2, 8) - 50.0, 3, "all logits negative"),
        ]
    return cases


def _compare_top_k(answer, case):
    problem = compare_tensors(answer, case.expected, name="the tensor of filtered logits",
                              any_float_dtype=True)
    if problem and isinstance(answer, torch.Tensor) and answer.shape == case.expected.shape:
        kept, expected_kept = torch.isfinite(answer), torch.isfinite(case.expected)
        if (kept != expected_kept).any():
            counts, expected_counts = kept.sum(-1).tolist(), expected_kept.sum(-1).tolist()
            problem += (f" Per row you keep {counts} tokens; the reference keeps "
                        f"{expected_counts} (ties with the k-th largest count as kept).")
        else:
            problem += " The kept tokens should keep their logits unchanged."
    return problem


# --- 3. top-p ---------------------------------------------------------------------------

def _top_p_case(logits, p, note=""):
    return Case((logits, p), generate.top_p_filter(logits, p), note)


def _top_p_cases(generator, hidden):
    cases = []
    for _ in range(4 if hidden else 2):
        cases.append(_top_p_case(_logits(generator, _int(generator, 1, 5), _int(generator, 5, 40)),
                                 round(_float(generator, 0.3, 0.95), 3)))
    # Probabilities 0.4 and three times 0.2 (in a shuffled order): p = 0.7 needs the 0.4 and
    # two of the three tied 0.2s, and either two will do.
    tied = torch.tensor([[0.2, 0.4, 0.2, 0.2]]).log()
    cases.append(_top_p_case(tied, 0.7, "tied tokens at the edge of the nucleus"))
    if hidden:
        peaked = _logits(generator, 2, 12)
        peaked[:, 5] = 20.0
        cases += [
            _top_p_case(peaked, 0.9, "one token above p on its own"),
            _top_p_case(_logits(generator, 2, 10), 1.0, "p = 1 (keep everything)"),
            _top_p_case(torch.zeros(2, 6), 0.5, "all logits equal (every token ties)"),
            _top_p_case(_logits(generator, 3, 30, scale=0.3), 0.9, "a flat distribution"),
            _top_p_case(_logits(generator, 1, 8) + 300.0, 0.8, "logits near 300"),
        ]
    return cases


def _compare_top_p(answer, case):
    logits, p = case.args
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
    for row in range(len(logits)):
        row_kept, row_probs = kept[row], probs[row]
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
        if mass - smallest >= p + 1e-6:
            return (f"row {row} keeps {int(row_kept.sum())} tokens, with probability "
                    f"{mass:.4f}; the set is not the smallest: without its least likely token "
                    f"it still reaches p = {p}.")
    return None


# --- 4. the repetition penalty ------------------------------------------------------------

def _penalty_case(logits, previous, penalty, note=""):
    expected = generate.apply_repetition_penalty(logits, previous, penalty)
    return Case((logits, previous, penalty), expected, note)


def _penalty_cases(generator, hidden):
    cases = []
    for _ in range(3 if hidden else 1):
        batch, vocab = _int(generator, 1, 4), _int(generator, 5, 25)
        previous = torch.randint(0, vocab, (batch, _int(generator, 1, 6)), generator=generator)
        cases.append(_penalty_case(_logits(generator, batch, vocab), previous,
                                   round(_float(generator, 1.1, 2.5), 2)))
    previous = torch.tensor([[2, 2, 2, 5, 2], [0, 1, 0, 1, 0]])
    cases.append(_penalty_case(_logits(generator, 2, 8), previous, 1.5,
                               "ids that appear several times in previous (penalised once)"))
    if hidden:
        logits = torch.tensor([[2.0, -2.0, 0.5, -0.5, 0.0, 3.0]])
        cases += [
            _penalty_case(logits, torch.tensor([[0, 1, 2, 3, 4]]), 2.0,
                          "positive, negative and zero logits"),
            _penalty_case(_logits(generator, 2, 10), torch.randint(0, 10, (2, 6),
                                                                  generator=generator),
                          0.8, "a penalty below 1 (it encourages repeats)"),
            _penalty_case(_logits(generator, 2, 10), torch.randint(0, 10, (2, 4),
                                                                  generator=generator),
                          1.0, "penalty 1 (no change)"),
            _penalty_case(_logits(generator, 3, 6), torch.randint(0, 6, (3, 40),
                                                                 generator=generator),
                          1.3, "a long history covering most of the vocabulary"),
        ]
    return cases


def _compare_penalty(answer, case):
    logits, previous, penalty = case.args
    problem = compare_tensors(answer, case.expected, name="the tensor of penalised logits",
                              any_float_dtype=True)
    if problem and isinstance(answer, torch.Tensor) and answer.shape == logits.shape:
        got, expected = answer.double(), case.expected.double()
        seen = torch.zeros_like(logits, dtype=torch.bool).scatter(-1, previous, True)
        if not torch.allclose(got[~seen], expected[~seen]):
            problem += " Tokens that are not in previous should keep their logits."
        elif (got.abs() < expected.abs() - 1e-6).any() and (logits < 0).any():
            problem += (" Check the negative logits: dividing one by the penalty would make "
                        "it more likely; multiply it instead.")
        else:
            problem += (" Is a token that appears several times in previous penalised more "
                        "than once? Each seen token is penalised exactly once.")
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
             hint="For T > 0: the softmax of logits / T along the last dimension. For T = 0: a "
                  "one-hot row with the 1 at the argmax (torch.nn.functional.one_hot helps)."),
    Exercise("generation.top_k", "top_k_filter", 2, "The top-k filter",
             _top_k_cases, _compare_top_k, forbidden=GENERATE,
             hint="Find each row's k-th largest logit (torch.topk or a descending sort, keepdim "
                  "shape (B, 1)), then set every logit strictly below it to -inf with "
                  "masked_fill. If k is at least the vocabulary size, keep everything."),
    Exercise("generation.top_p", "top_p_filter", 3, "The top-p (nucleus) filter",
             _top_p_cases, _compare_top_p, forbidden=GENERATE,
             hint="Sort each row descending and take the softmax of the sorted logits. A "
                  "token is dropped when the probability of the tokens ranked above it "
                  "(cumsum minus its own) already reaches p. Map the drop mask back to "
                  "vocabulary order (scatter with the sort's indices) before masking."),
    Exercise("generation.repetition_penalty", "repetition_penalty", 2,
             "The repetition penalty",
             _penalty_cases, _compare_penalty, forbidden=GENERATE,
             hint="Build a (B, V) mask of the ids seen in each row of previous (scatter True "
                  "into zeros). Where the mask is set: a positive logit / penalty, otherwise "
                  "logit * penalty (torch.where). Elsewhere the logit is unchanged."),
    Exercise("generation.sample", "sample_next", 3, "Stretch: sample with every filter",
             _sample_cases, _compare_sample, forbidden=GENERATE,
             hint="Turn the (V,) logits into probabilities once (temperature, then top-k, then "
                  "top-p, then softmax; temperature 0 is greedy), then draw n ids with "
                  "torch.multinomial(probs, n, replacement=True, generator=generator)."),
]

ASSIGNMENT = Assignment("08_generation", "Exercises 08: generation", SETUP, EXERCISES)
