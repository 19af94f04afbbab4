"""The checks of exercise notebook 12 (future trends): instant and hidden cases.

Every expected value is computed before the learner's function runs, from llmkit's finished
pieces or from a plainer computation:

- SwiGLU's width: parameters counted from nn.Linear layers built on the meta device (no
  memory), the widths searched by bisection, not solved by a formula;
- the masked load-balancing loss: `llmkit.load_balancing.load_balancing_loss` on the real
  tokens alone (the padding cut out before it runs);
- the stereotype gap: each group's Wilson interval found as the two roots of the score
  statistic by bisection, then Newcombe's combination of the two intervals;
- DPO from per-token log-probabilities: a loop over pairs and tokens in Python floats,
  with a softplus that cannot overflow;
- cached grouped-query attention with RoPE: attention over the whole sequence at once (no
  cache), in float64, with positions applied as complex rotations and every key/value head
  picked by an explicit list; the new tokens' rows are the answer.

While the learner's function runs, llmkit's finished pieces (llmkit.load_balancing,
llmkit.bias, llmkit.preference, the model's layers) and the ready-made helpers in
transformers are off limits; the attention task also rules out the fused attention
kernels.

A task earns its points only when every hidden case passes, and each usual slip fails at
least one hidden case: every balancing case has padding that routes to one expert and rows
of different lengths, and most route each token to more than one expert; the gap cases
draw about a fifth of their completions without a job, and two use z other than 1.96;
every DPO case has prompt and padding positions that hold log-probabilities, and chosen
and rejected completions of their own lengths; all but two attention cases have a cache,
more than one new token and groups of query heads. tests/test_exercise_12_checks.py holds
the slips each case is built against.
"""

from __future__ import annotations

import cmath
import math

import torch
from torch import nn

from llmkit.grading.exercise import Assignment, Case, Exercise, compare_tensors, describe_type
from llmkit.grading.exercise import random_int as _int
from llmkit.grading.exercise import random_normal as _normal
from llmkit.load_balancing import load_balancing_loss

SETUP = "import math\nimport torch\nfrom llmkit.grading import check\n"

# llmkit's finished pieces of lesson 12, and the ready-made versions in transformers.
FINISHED = ("llmkit.load_balancing", "llmkit.bias", "llmkit.preference",
            "llmkit.model.layers", "llmkit.model.attention", "llmkit.model.embeddings",
            "llmkit.model.kv_cache", "llmkit.model.gpt")
TRANSFORMERS = (
    "transformers.models.mixtral.modeling_mixtral.load_balancing_loss_func",
    "transformers.models.switch_transformers.modeling_switch_transformers.load_balancing_loss_func",
    "transformers.models.llama.modeling_llama.apply_rotary_pos_emb",
    "transformers.models.llama.modeling_llama.rotate_half",
    "transformers.models.llama.modeling_llama.repeat_kv",
    "transformers.models.llama.modeling_llama.eager_attention_forward",
    "transformers.integrations.sdpa_attention.sdpa_attention_forward",
)
FUSED_ATTENTION = ("torch.nn.functional.scaled_dot_product_attention",
                   "torch._C._nn.scaled_dot_product_attention",
                   "torch.nn.MultiheadAttention",
                   "torch.nn.functional.multi_head_attention_forward")
# The fused attention kernels, whatever route reaches them.
ATTENTION_KERNELS = ("_scaled_dot_product_flash_attention_for_cpu",
                     "_scaled_dot_product_flash_attention", "_scaled_dot_product_efficient_attention",
                     "_scaled_dot_product_cudnn_attention", "_native_multi_head_attention")
OFF_LIMITS = FINISHED + TRANSFORMERS


def _as_number(value):
    """A Python number from a number or a one-element tensor, else None."""
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return value


# --- 1. SwiGLU's width at a GELU MLP's parameter count --------------------------------------

def _linear_params(n_in, n_out, bias):
    layer = nn.Linear(n_in, n_out, bias=bias, device="meta")   # counted, never allocated
    return sum(p.numel() for p in layer.parameters())


def _gelu_params(d, hidden, bias):
    return _linear_params(d, hidden, bias) + _linear_params(hidden, d, bias)


def _swiglu_params(d, hidden, bias):
    return 2 * _linear_params(d, hidden, bias) + _linear_params(hidden, d, bias)


def _swiglu_width(d, hidden, bias, multiple_of):
    """The multiple of multiple_of whose SwiGLU count is closest to the GELU count (ties:
    the smaller), by bisection on counted parameters."""
    budget = _gelu_params(d, hidden, bias)
    lo, hi = 0, 1                  # lo: multiples within budget (0 always is), hi: over it
    while _swiglu_params(d, hi * multiple_of, bias) <= budget:
        lo, hi = hi, hi * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _swiglu_params(d, mid * multiple_of, bias) <= budget:
            lo = mid
        else:
            hi = mid
    below = budget - _swiglu_params(d, lo * multiple_of, bias) if lo else None
    above = _swiglu_params(d, hi * multiple_of, bias) - budget
    best = lo if below is not None and below <= above else hi
    return best * multiple_of


def _width_case(d, hidden, bias, multiple_of, note=""):
    return Case((d, hidden, bias, multiple_of), _swiglu_width(d, hidden, bias, multiple_of), note)


def _tie_case(multiple_of, j, d, note):
    """No biases: the exact width is 2 hidden / 3; choose hidden so that it is
    (j + 1/2) multiples, halfway between two widths."""
    hidden = 3 * multiple_of * (2 * j + 1) // 4
    assert 4 * hidden == 3 * multiple_of * (2 * j + 1)
    return _width_case(d, hidden, False, multiple_of, note)


def _width_cases(generator, hidden):
    cases = [
        _width_case(64, 256, True, 1, "the lesson's MLP (d 64, width 256, biases)"),
        _width_case(4096, 16384, False, 256, "LLaMA-7B's shape (no biases, multiples of 256)"),
        _tie_case(64, 5, 128, "a tie: two widths equally close (the smaller wins)"),
    ]
    if not hidden:
        return cases
    cases = cases[1:]
    for _ in range(3):
        d = _int(generator, 2, 40) * 16
        bias = bool(_int(generator, 0, 2))
        multiple_of = [1, 8, 32, 64][_int(generator, 0, 4)]
        cases.append(_width_case(d, 4 * d, bias, multiple_of))
    cases += [
        _width_case(96, 200, True, 8, "a GELU width that is not 4 d, with biases"),
        _width_case(5120, 20480, False, 256, "LLaMA-13B's shape: the closest is below"),
        _tie_case(64, 4, 96, "a tie: two widths equally close (the smaller wins)"),
        _tie_case(8, 7, 40, "a tie: two widths equally close (the smaller wins)"),
    ]
    return cases


def _compare_width(answer, case):
    d, hidden, bias, multiple_of = case.args
    if isinstance(answer, torch.Tensor) and answer.numel() == 1 and not answer.is_floating_point():
        answer = answer.item()
    if isinstance(answer, bool) or not isinstance(answer, int):
        return f"swiglu_width should return an int, but it returned {describe_type(answer)}."
    if answer == case.expected:
        return None
    problem = f"the width is {answer}, expected {case.expected}."
    if answer % multiple_of:
        return problem + f" It is not a multiple of {multiple_of}."
    budget = _gelu_params(d, hidden, bias)
    step = multiple_of
    if answer == case.expected - step and _swiglu_params(d, case.expected, bias) > budget:
        problem += (" Yours is the widest within the budget; the closest count can be one "
                    "multiple above it.")
    elif answer == case.expected + step and (
            budget - _swiglu_params(d, case.expected, bias)
            == _swiglu_params(d, answer, bias) - budget):
        problem += " The two widths are equally close here, and a tie goes to the smaller."
    elif answer == _swiglu_width(d, hidden, not bias, multiple_of):
        problem += (" That is the width for the other bias setting: count the biases exactly "
                    "when there are some, and none when there are none.")
    return problem


# --- 2. the load-balancing loss with padding ------------------------------------------------

def _balance_case(generator, lengths, width, n_experts, k, note="", left=None):
    """Rows with lengths[b] real tokens; padding (on the right, or the left of rows in
    `left`) holds router logits that send it to expert 0."""
    rows = len(lengths)
    logits = _normal(generator, rows, width, n_experts) * 1.5
    mask = torch.zeros(rows, width, dtype=torch.bool)
    for row, n in enumerate(lengths):
        if left is not None and row in left:
            mask[row, width - n:] = True
        else:
            mask[row, :n] = True
    hot = _normal(generator, rows, width, n_experts) * 0.1
    hot[..., 0] += 8.0
    logits = torch.where(mask[..., None], logits, hot)
    expected = load_balancing_loss(logits[mask], k)      # the real tokens alone
    return Case((logits, mask, k), expected, note)


def _balance_cases(generator, hidden):
    cases = [
        _balance_case(generator, [6, 3], 6, 4, 1, "one expert per token, one padded row"),
        _balance_case(generator, [5, 0, 2], 5, 4, 2,
                      "two experts per token, a row of padding only, left padding", left={2}),
        _balance_case(generator, [4, 7], 7, 3, 3, "every expert for every token (k = n_experts)"),
    ]
    if not hidden:
        return cases
    cases = cases[1:]
    for _ in range(4):
        rows, n_experts = _int(generator, 2, 5), _int(generator, 3, 9)
        width = _int(generator, 5, 12)
        lengths = [width] + [_int(generator, 1, width) for _ in range(rows - 1)]
        k = _int(generator, 2, n_experts)
        cases.append(_balance_case(generator, lengths, width, n_experts, k,
                                   left=set(range(1, rows, 2))))
    cases.append(_balance_case(generator, [9, 1, 4, 2], 9, 8, 2,
                               "eight experts, rows of 9, 1, 4 and 2 real tokens"))
    return cases


def _balance_variants(logits, mask, k):
    """What the usual slips return (name -> value), for the feedback."""
    n_experts = logits.shape[-1]
    probs = logits.double().softmax(dim=-1)
    counts = lambda where: torch.zeros(n_experts, dtype=torch.float64).index_add_(
        0, logits[where].topk(k, dim=-1).indices.flatten(),
        torch.ones(int(where.sum()) * k, dtype=torch.float64))
    real = mask
    everything = torch.ones_like(mask)
    share_real, share_all = counts(real) / (real.sum() * k), counts(everything) / (mask.numel() * k)
    p_real, p_all = probs[real].mean(dim=0), probs.reshape(-1, n_experts).mean(dim=0)
    per_row = [load_balancing_loss(logits[row][mask[row]], k).double()
               for row in range(len(mask)) if mask[row].any()]
    return {
        "row by row": torch.stack(per_row).mean(),
        "padding counted": n_experts * (share_all * p_all).sum(),
        "padding counted in the probabilities": n_experts * (share_real * p_all).sum(),
        "padding counted in the shares": n_experts * (share_all * p_real).sum(),
        "shares per token": n_experts * (share_real * k * p_real).sum(),
    }


def _compare_balance(answer, case):
    problem = compare_tensors(answer, case.expected, name="the loss", any_float_dtype=True,
                              atol=1e-5, rtol=1e-4)
    if problem and isinstance(answer, torch.Tensor) and answer.numel() == 1:
        got = answer.double().reshape(())
        for slip, value in _balance_variants(*case.args).items():
            if torch.isclose(got, value, atol=1e-5, rtol=1e-4):
                return problem + {
                    "row by row": (" It looks like the mean of each row's loss; the shares "
                                   "and probabilities are pooled over the whole batch's real "
                                   "tokens."),
                    "padding counted": " The padding positions went into the loss.",
                    "padding counted in the probabilities":
                        " The mean router probability includes the padding positions.",
                    "padding counted in the shares":
                        " The shares of routing slots include the padding positions.",
                    "shares per token": (" It is k times too large: each token fills k slots, "
                                         "and the shares are over slots."),
                }[slip]
    return problem


# --- 3. a stereotype gap with Newcombe's interval -------------------------------------------

def _wilson_by_bisection(successes, n, z):
    """The two p with |successes/n - p| = z sqrt(p (1 - p) / n), found by bisection (the
    Wilson interval's definition); p-hat itself when it sits at 0 or 1."""
    p_hat = successes / n

    def root(lo, hi):          # f(lo) > 0 >= f(hi) or the other way round; 200 halvings
        f = lambda p: (p_hat - p) ** 2 - z * z * p * (1 - p) / n
        for _ in range(200):
            mid = (lo + hi) / 2
            if (f(mid) > 0) == (f(lo) > 0):
                lo = mid
            else:
                hi = mid
        return (lo + hi) / 2

    low = 0.0 if successes == 0 else root(0.0, p_hat)
    high = 1.0 if successes == n else root(p_hat, 1.0)
    return low, high


def _gap(groups, roles, girl_roles, z):
    girls = [r for g, r in zip(groups, roles) if g == "girl" and r is not None]
    boys = [r for g, r in zip(groups, roles) if g == "boy" and r is not None]
    x1, x2 = sum(r in girl_roles for r in girls), sum(r in girl_roles for r in boys)
    p1, p2 = x1 / len(girls), x2 / len(boys)
    l1, u1 = _wilson_by_bisection(x1, len(girls), z)
    l2, u2 = _wilson_by_bisection(x2, len(boys), z)
    gap = p1 - p2
    return (gap, gap - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2),
            gap + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2))


GIRL_ROLES = ["nurse", "teacher", "baker", "dancer", "singer"]
BOY_ROLES = ["doctor", "pilot", "farmer", "builder", "firefighter"]


def _gap_case(generator, n_girls, n_boys, lean, z, note="", girl_roles=GIRL_ROLES,
              roles=GIRL_ROLES + BOY_ROLES, none_share=0.2, girls_all=False):
    """lean: the chance a hero's job is drawn from the group's own list."""
    groups = ["girl"] * n_girls + ["boy"] * n_boys
    order = torch.randperm(len(groups), generator=generator).tolist()
    groups = [groups[i] for i in order]
    others = [r for r in roles if r not in girl_roles]
    picked = []
    for number, group in enumerate(groups):
        u = torch.rand(3, generator=generator).tolist()
        own = girl_roles if group == "girl" else others
        other = others if group == "girl" else girl_roles
        pool = own if (u[0] < lean or (girls_all and group == "girl")) else other
        role = pool[int(u[1] * len(pool))]
        picked.append(None if u[2] < none_share else role)
    for group in ("girl", "boy"):        # every group names at least one job
        first = groups.index(group)
        if all(r is None for g, r in zip(groups, picked) if g == group):
            picked[first] = girl_roles[0] if group == "girl" else others[0]
    return Case((groups, picked, list(girl_roles), z), _gap(groups, picked, girl_roles, z), note)


def _gap_cases(generator, hidden):
    cases = [
        _gap_case(generator, 30, 22, 0.8, 1.96, "30 girls, 22 boys, some without a job"),
        _gap_case(generator, 12, 15, 0.5, 2.576, "z = 2.576 (a 99% interval)"),
        _gap_case(generator, 9, 14, 0.9, 1.96, "every girl named a girl's job (a share of 1)",
                  girls_all=True),
    ]
    if not hidden:
        return cases
    for _ in range(3):
        cases.append(_gap_case(generator, _int(generator, 5, 60), _int(generator, 5, 60),
                               float(torch.rand(1, generator=generator)), 1.96))
    cases += [
        _gap_case(generator, 40, 8, 0.3, 1.645, "z = 1.645, few boys, leaning against the list"),
        _gap_case(generator, 25, 25, 0.7, 1.96, "another list of jobs (3 of 7)",
                  girl_roles=["cook", "pilot", "vet"],
                  roles=["cook", "pilot", "vet", "judge", "tailor", "miner", "poet"]),
        _gap_case(generator, 20, 20, 0.7, 1.96, "half of the completions named no job",
                  none_share=0.5),
    ]
    return cases


def _gap_variants(groups, roles, girl_roles, z):
    """What the usual slips return (message -> (gap, low, high))."""
    def shares(keep_none):
        out = []
        for group in ("girl", "boy"):
            mine = [r for g, r in zip(groups, roles) if g == group and (keep_none or r is not None)]
            out.append((sum(r in girl_roles for r in mine), len(mine)))
        return out

    def wald(x, n):
        p = x / n
        half = z * math.sqrt(p * (1 - p) / n)
        return p - half, p + half

    (x1, n1), (x2, n2) = shares(False)
    p1, p2 = x1 / n1, x2 / n2
    (l1, u1), (l2, u2) = _wilson_by_bisection(x1, n1, z), _wilson_by_bisection(x2, n2, z)
    (wl1, wu1), (wl2, wu2) = wald(x1, n1), wald(x2, n2)
    (a1, m1), (a2, m2) = shares(True)
    return {
        "The ends look like Wald intervals (p +- z sqrt(p(1-p)/n)); use Wilson's.":
            (p1 - p2, p1 - p2 - math.sqrt((p1 - wl1) ** 2 + (wu2 - p2) ** 2),
             p1 - p2 + math.sqrt((wu1 - p1) ** 2 + (p2 - wl2) ** 2)),
        "The ends look like one Wilson interval minus the other, end to end; that is wider "
        "than Newcombe's, which adds the two uncertainties in quadrature.":
            (p1 - p2, l1 - u2, u1 - l2),
        "Completions that named no job were counted; leave them out of both shares.":
            _gap_counting_none(a1, m1, a2, m2, z),
    }


def _gap_counting_none(x1, n1, x2, n2, z):
    p1, p2 = x1 / n1, x2 / n2
    (l1, u1), (l2, u2) = _wilson_by_bisection(x1, n1, z), _wilson_by_bisection(x2, n2, z)
    return (p1 - p2, p1 - p2 - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2),
            p1 - p2 + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2))


def _compare_gap(answer, case):
    if isinstance(answer, torch.Tensor) and answer.numel() == 3:
        answer = answer.tolist()
    if not isinstance(answer, (tuple, list)) or len(answer) != 3:
        return ("stereotype_gap should return three numbers (gap, low, high), but it returned "
                f"{describe_type(answer)}.")
    got = [_as_number(value) for value in answer]
    if any(value is None for value in got):
        return "each of (gap, low, high) should be a number."
    names = ("the gap", "the low end", "the high end")
    wrong = [i for i in range(3) if not math.isclose(got[i], case.expected[i], abs_tol=1e-6)]
    if not wrong:
        return None
    problem = "; ".join(f"{names[i]} is {got[i]:.6g}, expected {case.expected[i]:.6g}"
                        for i in wrong) + "."
    groups, roles, girl_roles, z = case.args
    for message, value in _gap_variants(groups, roles, girl_roles, z).items():
        if all(math.isclose(a, b, abs_tol=1e-6) for a, b in zip(got, value)):
            return f"{problem} {message}"
    if z != 1.96:
        plain = _gap(groups, roles, girl_roles, 1.96)
        if all(math.isclose(a, b, abs_tol=1e-6) for a, b in zip(got, plain)):
            return f"{problem} These are the ends for z = 1.96; this case gives z = {z}."
    return problem


# --- 4. DPO's loss from per-token log-probabilities -----------------------------------------

def _softplus(x):
    """log(1 + e^x), never overflowing."""
    return x + math.log1p(math.exp(-x)) if x > 0 else math.log1p(math.exp(x))


def _dpo_reference(pc, pr, rc, rr, mc, mr, beta, eps):
    total = 0.0
    for row in range(pc.shape[0]):
        chosen = math.fsum(float(pc[row, t]) - float(rc[row, t])
                           for t in range(pc.shape[1]) if mc[row, t])
        rejected = math.fsum(float(pr[row, t]) - float(rr[row, t])
                             for t in range(pr.shape[1]) if mr[row, t])
        h = beta * (chosen - rejected)
        # -log sigmoid(h) = softplus(-h); -log sigmoid(-h) = softplus(h)
        total += (1 - eps) * _softplus(-h) + eps * _softplus(h)
    return torch.tensor(total / pc.shape[0], dtype=torch.float32)


def _completion(generator, rows, width, lengths):
    """Per-token log-probabilities (rows, width) and a mask with lengths[b] completion
    tokens after a prompt; prompt and padding positions hold log-probabilities too."""
    policy = -torch.rand(rows, width, generator=generator) * 4
    reference = policy + _normal(generator, rows, width) * 0.7
    mask = torch.zeros(rows, width, dtype=torch.bool)
    for row, n in enumerate(lengths):
        start = _int(generator, 0, width - n + 1)
        mask[row, start:start + n] = True
    return policy, reference, mask


def _dpo_case(generator, chosen_lengths, rejected_lengths, beta, eps, note="", push=0.0):
    """push: added to every rejected completion token of the policy (a policy far from the
    reference, so that beta * margin is large)."""
    rows = len(chosen_lengths)
    wc = max(chosen_lengths) + _int(generator, 1, 4)
    wr = max(rejected_lengths) + _int(generator, 1, 4)
    pc, rc, mc = _completion(generator, rows, wc, chosen_lengths)
    pr, rr, mr = _completion(generator, rows, wr, rejected_lengths)
    pr = torch.where(mr, pr + push, pr)
    expected = _dpo_reference(pc, pr, rc, rr, mc, mr, beta, eps)
    return Case((pc, pr, rc, rr, mc, mr, beta, eps), expected, note)


def _dpo_cases(generator, hidden):
    cases = [
        _dpo_case(generator, [3, 5, 2], [4, 1, 6], 0.1, 0.0,
                  "three pairs, chosen and rejected of different lengths"),
        _dpo_case(generator, [4, 2], [3, 5], 0.5, 0.2, "label smoothing 0.2"),
        _dpo_case(generator, [6, 3], [5, 7], 1.0, 0.1,
                  "a policy far from the reference (beta * margin about -1000)", push=200.0),
    ]
    if not hidden:
        return cases
    for _ in range(3):
        rows = _int(generator, 2, 6)
        cases.append(_dpo_case(generator, [_int(generator, 1, 9) for _ in range(rows)],
                               [_int(generator, 1, 9) for _ in range(rows)],
                               [0.05, 0.1, 0.3, 1.0][_int(generator, 0, 4)],
                               [0.0, 0.1, 0.25][_int(generator, 0, 3)]))
    cases += [
        _dpo_case(generator, [8, 1, 5], [2, 6, 6], 0.2, 0.3, "label smoothing 0.3"),
        _dpo_case(generator, [3, 4], [5, 6], 1.0, 0.25,
                  "smoothing, and the policy far from the reference the other way "
                  "(beta * margin about +1000)", push=-200.0),
    ]
    return cases


def _dpo_variants(pc, pr, rc, rr, mc, mr, beta, eps):
    ones = lambda t: torch.ones_like(t, dtype=torch.bool)
    per_token = torch.stack([(pc - rc)[i][mc[i]].mean() - (pr - rr)[i][mr[i]].mean()
                             for i in range(pc.shape[0])]).double()
    h = beta * per_token
    return {
        "Positions outside the completion (prompt, padding) were summed too.":
            _dpo_reference(pc, pr, rc, rr, ones(mc), ones(mr), beta, eps),
        "The label smoothing looks ignored.": _dpo_reference(pc, pr, rc, rr, mc, mr, beta, 0.0),
        "The smoothing term has the wrong sign: with probability eps the preference is the "
        "other way round, so that term is -eps log sigmoid(-h).":
            _dpo_reference(pc, pr, rc, rr, mc, mr, beta, eps)
            - 2 * eps * torch.tensor(sum(_softplus(float(x)) for x in _margins(
                pc, pr, rc, rr, mc, mr, beta)) / pc.shape[0]),
        "It looks like a mean over tokens; DPO sums a completion's log-probabilities.":
            ((1 - eps) * torch.nn.functional.softplus(-h) + eps * torch.nn.functional.softplus(h)
             ).mean(),
    }


def _margins(pc, pr, rc, rr, mc, mr, beta):
    return [beta * (float(((pc - rc)[i] * mc[i]).double().sum())
                    - float(((pr - rr)[i] * mr[i]).double().sum())) for i in range(pc.shape[0])]


def _compare_dpo(answer, case):
    problem = compare_tensors(answer, case.expected, name="the loss", any_float_dtype=True,
                              atol=1e-4, rtol=1e-4)
    if not problem or not isinstance(answer, torch.Tensor) or answer.numel() != 1:
        return problem
    got = answer.double().reshape(())
    if not torch.isfinite(got):
        return problem + (" The loss is not finite: log(sigmoid(x)) underflows for a large "
                          "negative x; write -log sigmoid(x) in a form that cannot overflow.")
    for message, value in _dpo_variants(*case.args).items():
        if torch.isclose(got, value.double().reshape(()), atol=1e-4, rtol=1e-4):
            return f"{problem} {message}"
    return problem


# --- 5. stretch: one cached step of grouped-query attention with RoPE -----------------------

def _rotate(x, positions, base, pairs="half"):
    """x: (B, H, T, hd) float64 rotated at `positions` (T,), pair by pair as complex numbers:
    (x_i, x_{i+hd/2}) for pairs="half" (the lesson's), (x_2i, x_2i+1) for "adjacent"."""
    hd = x.shape[-1]
    if pairs == "half":
        first, second = x[..., : hd // 2], x[..., hd // 2:]
    else:
        first, second = x[..., 0::2], x[..., 1::2]
    out = torch.empty_like(x)
    for t, position in enumerate(positions):
        for i in range(hd // 2):
            turn = cmath.exp(1j * position * base ** (-2 * i / hd))
            z = torch.complex(first[..., t, i], second[..., t, i]) * turn
            if pairs == "half":
                out[..., t, i], out[..., t, hd // 2 + i] = z.real, z.imag
            else:
                out[..., t, 2 * i], out[..., t, 2 * i + 1] = z.real, z.imag
    return out


def _attend(q, k, v, visible):
    """q: (B, Hq, T, hd), k, v: (B, Hq, S, hd), visible(t, s) -> bool; plain softmax."""
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    T, S = scores.shape[-2:]
    allowed = torch.tensor([[visible(t, s) for s in range(S)] for t in range(T)])
    scores = scores.masked_fill(~allowed, float("-inf"))
    weights = (scores - scores.amax(dim=-1, keepdim=True)).exp()
    return (weights / weights.sum(dim=-1, keepdim=True)) @ v


def _cached_reference(q, k_raw, v, n_past, base, *, offset=True, grouping="consecutive",
                      mask="bottom-right", pairs="half", rotate_cache_again=False):
    """The new tokens' outputs over the whole sequence (no cache), in float64; the keyword
    arguments choose the usual slips instead (for the feedback).

    k_raw, v: (B, Hkv, n_past + T, hd) keys before rotation and values of every position."""
    q, k_raw, v = q.double(), k_raw.double(), v.double()
    T, S = q.shape[2], k_raw.shape[2]
    new_positions = range(n_past, S) if offset else range(T)
    q = _rotate(q, new_positions, base, pairs)
    past = _rotate(k_raw[:, :, :n_past], range(n_past), base, "half")
    if rotate_cache_again:
        past = _rotate(past, range(n_past), base, pairs)
    k = torch.cat([past, _rotate(k_raw[:, :, n_past:], new_positions, base, pairs)], dim=2)
    n_head, n_kv = q.shape[1], k.shape[1]
    group = n_head // n_kv
    serving = [h // group if grouping == "consecutive" else h % n_kv for h in range(n_head)]
    k, v = k[:, serving], v[:, serving]
    if mask == "bottom-right":
        visible = lambda t, s: s <= n_past + t
    else:
        visible = lambda t, s: s <= t
    return _attend(q, k, v, visible).float()


def _cache_case(generator, batch, n_head, n_kv, head_dim, n_past, n_new, base, note=""):
    q = _normal(generator, batch, n_head, n_new, head_dim)
    k_raw = _normal(generator, batch, n_kv, n_past + n_new, head_dim)
    v = _normal(generator, batch, n_kv, n_past + n_new, head_dim)
    k_cache = _rotate(k_raw[:, :, :n_past].double(), range(n_past), base).float()
    args = (q, k_raw[:, :, n_past:].clone(), v[:, :, n_past:].clone(), k_cache,
            v[:, :, :n_past].clone(), base)
    expected = _cached_reference(q, k_raw, v, n_past, base)
    return Case(args, expected, note)


def _cache_cases(generator, hidden):
    cases = [
        _cache_case(generator, 1, 4, 2, 8, 3, 2, 10000.0,
                    "4 query heads sharing 2 key/value heads, 3 cached positions, 2 new tokens"),
        _cache_case(generator, 2, 3, 1, 4, 0, 3, 10000.0, "an empty cache, one key/value head"),
        _cache_case(generator, 1, 2, 2, 6, 5, 1, 100.0,
                    "one new token, plain multi-head attention, base 100"),
    ]
    if not hidden:
        return cases
    cases = cases[:1]
    for _ in range(3):
        n_kv = _int(generator, 2, 4)
        cases.append(_cache_case(generator, _int(generator, 1, 3), n_kv * _int(generator, 2, 4),
                                 n_kv, 2 * _int(generator, 2, 5), _int(generator, 1, 7),
                                 _int(generator, 2, 5), 10000.0))
    cases += [
        _cache_case(generator, 1, 6, 3, 4, 4, 3, 500.0, "6 query heads in 3 groups, base 500"),
        _cache_case(generator, 2, 4, 1, 8, 6, 1, 10000.0,
                    "one new token after 6 cached, one key/value head"),
        _cache_case(generator, 1, 4, 4, 6, 0, 4, 50.0, "an empty cache, four new tokens"),
    ]
    return cases


_CACHE_SLIPS = {
    "The new tokens were rotated as if they stood at positions 0, 1, ...; they come after "
    "the cached ones.": {"offset": False},
    "Query heads were matched to key/value heads round-robin; each key/value head serves a "
    "block of consecutive query heads.": {"grouping": "round-robin"},
    "The causal mask looks aligned to the top left; the new tokens come after the cache, so "
    "each sees every cached position.": {"mask": "top-left"},
    "Channels were paired as neighbours (2i, 2i+1); the lesson pairs channel i with "
    "i + head_dim/2.": {"pairs": "adjacent"},
    "The cached keys were rotated again; they are stored already rotated.":
        {"rotate_cache_again": True},
}


def _compare_cache(answer, case):
    problem = compare_tensors(answer, case.expected, name="the output", any_float_dtype=True,
                              atol=1e-4, rtol=1e-4)
    if not problem or not isinstance(answer, torch.Tensor) or answer.shape != case.expected.shape:
        return problem
    q, k_new, v_new, k_cache, v_cache, base = case.args
    n_past = k_cache.shape[2]
    k_raw = torch.cat([_unrotate(k_cache, base), k_new], dim=2)
    v = torch.cat([v_cache, v_new], dim=2)
    for message, slip in _CACHE_SLIPS.items():
        if torch.allclose(answer.double(), _cached_reference(q, k_raw, v, n_past, base, **slip)
                          .double(), atol=1e-4, rtol=1e-4):
            return f"{problem} {message}"
    return problem


def _unrotate(k_cache, base):
    """The cached keys before their rotation (rotating back by the same angles)."""
    return _rotate(k_cache.double(), [-p for p in range(k_cache.shape[2])], base).float()


EXERCISES = [
    Exercise("future.swiglu_width", "swiglu_width", 2,
             "SwiGLU's width at a GELU MLP's parameter count",
             _width_cases, _compare_width, forbidden=OFF_LIMITS,
             hint="Count both layers' parameters as a function of the width (three matrices "
                  "against two, and the biases only when there are some); the count grows "
                  "by the same amount per unit of width, so compare the multiple just below "
                  "the exact width with the one just above."),
    Exercise("future.balance_loss", "masked_balance_loss", 2,
             "The load-balancing loss with padding",
             _balance_cases, _compare_balance, forbidden=OFF_LIMITS,
             hint="Both averages, the share of routing slots and the mean router probability, "
                  "run over the real tokens only, pooled across rows (not row by row); each "
                  "real token fills k slots."),
    Exercise("future.stereotype_gap", "stereotype_gap", 2,
             "A stereotype gap with Newcombe's interval",
             _gap_cases, _compare_gap, forbidden=OFF_LIMITS,
             hint="Two proportions, each over its own group's completions that named a job; "
                  "each gets Wilson's interval at the z you are given, and Newcombe's "
                  "interval combines how far each Wilson end lies from its own proportion."),
    Exercise("future.dpo_tokens", "dpo_loss_from_tokens", 3,
             "DPO's loss from per-token log-probabilities, with label smoothing",
             _dpo_cases, _compare_dpo, forbidden=OFF_LIMITS,
             hint="A completion's log-probability is the sum over its own tokens (its mask), "
                  "and chosen and rejected have masks of their own. Label smoothing mixes the "
                  "loss of the preference with the loss of the reversed preference. For large "
                  "margins, -log sigmoid(x) must be written so that nothing overflows."),
    Exercise("future.cached_attention", "cached_gqa_rope_attention", 3,
             "Stretch: one cached step of grouped-query attention with RoPE",
             _cache_cases, _compare_cache, forbidden=OFF_LIMITS + FUSED_ATTENTION,
             forbidden_ops=ATTENTION_KERNELS,
             hint="The new tokens sit after the cached ones, for their rotation and for the "
                  "causal mask alike; the cached keys are already rotated; and a key/value "
                  "head serves a block of consecutive query heads."),
]

ASSIGNMENT = Assignment("12_future_trends", "Exercises 12: future trends", SETUP, EXERCISES)
