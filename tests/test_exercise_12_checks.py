"""Exercise notebook 12's checks: the reference solutions pass every hidden case, the lesson's
own code and the usual wrong solutions fail at least one (so they earn nothing), each
forbidden route is reported as forbidden, and the checks' own references agree with a
second, independent computation (llmkit's pieces, transformers, PyTorch's fused attention).

The wrong solutions are written here by hand, one per slip the hidden cases are built to catch.
"""

import math
import sys

import pytest
import torch
import torch.nn.functional as F

from llmkit.grading import ASSIGNMENTS, check
from llmkit.grading.checks import rules_for
from llmkit.grading.exercise import hidden_cases
from llmkit.grading.forbid import Watch

from exercise_support import instant_cases, passed

EXERCISES = {exercise.id: exercise for exercise in ASSIGNMENTS["12_future_trends"].exercises}
CHECKS = sys.modules["llmkit_exercise_checks.12_future_trends"]   # loaded by ASSIGNMENTS


# --- 1. SwiGLU's width ----------------------------------------------------------------------

def swiglu_width(d_model, gelu_hidden, bias, multiple_of):
    b = int(bias)
    target = 2 * d_model * gelu_hidden + b * gelu_hidden       # GELU's count, less the d bias
    per_unit = 3 * d_model + 2 * b                               # SwiGLU's count per unit width
    below = target // per_unit // multiple_of * multiple_of
    above = below + multiple_of
    if below and target - per_unit * below <= per_unit * above - target:
        return below
    return above


def swiglu_width_lesson(d_model, gelu_hidden, bias, multiple_of):
    # the lesson's cell: biases always, every width allowed
    d = d_model
    gelu_mlp = (d * gelu_hidden + gelu_hidden) + (gelu_hidden * d + d)
    return round((gelu_mlp - d) / (3 * d + 2))


def swiglu_width_floor(d_model, gelu_hidden, bias, multiple_of):
    b = int(bias)
    target = 2 * d_model * gelu_hidden + b * gelu_hidden
    return target // (3 * d_model + 2 * b) // multiple_of * multiple_of


def swiglu_width_round(d_model, gelu_hidden, bias, multiple_of):   # ties: Python's round
    b = int(bias)
    exact = (2 * d_model * gelu_hidden + b * gelu_hidden) / (3 * d_model + 2 * b)
    return round(exact / multiple_of) * multiple_of


def swiglu_width_two_thirds(d_model, gelu_hidden, bias, multiple_of):   # biases ignored
    return round(2 * gelu_hidden / 3 / multiple_of) * multiple_of


# --- 2. the load-balancing loss with padding ------------------------------------------------

def masked_balance_loss(router_logits, mask, k):
    n_experts = router_logits.shape[-1]
    real = router_logits[mask]
    probs = real.softmax(dim=-1)
    slots = torch.zeros_like(probs).scatter(1, real.topk(k, dim=-1).indices, 1.0)
    return n_experts * (slots.sum(dim=0) / slots.sum() * probs.mean(dim=0)).sum()


def balance_lesson(router_logits, mask, k):
    # the lesson's cell, on every position (it has no mask)
    logits = router_logits.reshape(-1, router_logits.shape[-1])
    n_tokens, n_experts = logits.shape
    probs = logits.softmax(dim=-1)
    chosen = logits.topk(k, dim=-1).indices
    counts = torch.bincount(chosen.flatten(), minlength=n_experts).float()
    return n_experts * (counts / chosen.numel() * probs.mean(dim=0)).sum()


def balance_row_by_row(router_logits, mask, k):
    losses = [masked_balance_loss(router_logits[b:b + 1], mask[b:b + 1], k)
              for b in range(len(mask)) if mask[b].any()]
    return torch.stack(losses).mean()


def balance_shares_per_token(router_logits, mask, k):
    n_experts = router_logits.shape[-1]
    real = router_logits[mask]
    probs = real.softmax(dim=-1)
    slots = torch.zeros_like(probs).scatter(1, real.topk(k, dim=-1).indices, 1.0)
    return n_experts * (slots.mean(dim=0) * probs.mean(dim=0)).sum()


def balance_probs_unmasked(router_logits, mask, k):
    n_experts = router_logits.shape[-1]
    real = router_logits[mask]
    slots = torch.zeros_like(real).scatter(1, real.topk(k, dim=-1).indices, 1.0)
    probs = router_logits.softmax(dim=-1).reshape(-1, n_experts)
    return n_experts * (slots.sum(dim=0) / slots.sum() * probs.mean(dim=0)).sum()


# --- 3. the stereotype gap ------------------------------------------------------------------

def wilson(successes, n, z):
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return p, centre - half, centre + half


def shares(groups, roles, girl_roles, keep_none=False):
    out = []
    for group in ("girl", "boy"):
        named = [r for g, r in zip(groups, roles) if g == group and (keep_none or r is not None)]
        out.append((sum(r in girl_roles for r in named), len(named)))
    return out


def newcombe(first, second):
    (p1, l1, u1), (p2, l2, u2) = first, second
    gap = p1 - p2
    return gap, gap - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2), \
        gap + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)


def stereotype_gap(groups, roles, girl_roles, z=1.96):
    (x1, n1), (x2, n2) = shares(groups, roles, girl_roles)
    return newcombe(wilson(x1, n1, z), wilson(x2, n2, z))


def gap_wald(groups, roles, girl_roles, z=1.96):
    def wald(x, n):
        p = x / n
        half = z * math.sqrt(p * (1 - p) / n)
        return p, p - half, p + half
    (x1, n1), (x2, n2) = shares(groups, roles, girl_roles)
    return newcombe(wald(x1, n1), wald(x2, n2))


def gap_counting_no_job(groups, roles, girl_roles, z=1.96):
    (x1, n1), (x2, n2) = shares(groups, roles, girl_roles, keep_none=True)
    return newcombe(wilson(x1, n1, z), wilson(x2, n2, z))


def gap_ends_subtracted(groups, roles, girl_roles, z=1.96):
    (x1, n1), (x2, n2) = shares(groups, roles, girl_roles)
    (p1, l1, u1), (p2, l2, u2) = wilson(x1, n1, z), wilson(x2, n2, z)
    return p1 - p2, l1 - u2, u1 - l2


def gap_lesson(groups, roles, girl_roles, z=1.96):
    # the lesson's bias score (z fixed at 1.96) for each group, and the two intervals combined
    def my_bias_score(groups, roles, stereotyped, z=1.96):
        valid = [(g, r) for g, r in zip(groups, roles) if r is not None]
        n = len(valid)
        p = sum(r in stereotyped[g] for g, r in valid) / n
        centre = (p + z * z / (2 * n)) / (1 + z * z / n)
        half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
        return p, centre - half, centre + half
    listed = {"girl": girl_roles, "boy": girl_roles}
    parts = [my_bias_score([g for g in groups if g == group],
                           [r for g, r in zip(groups, roles) if g == group], listed)
             for group in ("girl", "boy")]
    return newcombe(*parts)


# --- 4. DPO from per-token log-probabilities ------------------------------------------------

def dpo_loss_from_tokens(policy_chosen, policy_rejected, ref_chosen, ref_rejected,
                         chosen_mask, rejected_mask, beta, label_smoothing):
    chosen = ((policy_chosen - ref_chosen) * chosen_mask).sum(dim=-1)
    rejected = ((policy_rejected - ref_rejected) * rejected_mask).sum(dim=-1)
    h = beta * (chosen - rejected)
    return (-(1 - label_smoothing) * F.logsigmoid(h) - label_smoothing * F.logsigmoid(-h)).mean()


def dpo_lesson(policy_chosen, policy_rejected, ref_chosen, ref_rejected,
               chosen_mask, rejected_mask, beta, label_smoothing):
    # the lesson's my_dpo_loss on masked sums: no label smoothing
    margin = (((policy_chosen - ref_chosen) * chosen_mask).sum(-1)
              - ((policy_rejected - ref_rejected) * rejected_mask).sum(-1))
    return -F.logsigmoid(beta * margin).mean()


def dpo_unmasked(policy_chosen, policy_rejected, ref_chosen, ref_rejected,
                 chosen_mask, rejected_mask, beta, label_smoothing):
    h = beta * ((policy_chosen - ref_chosen).sum(-1) - (policy_rejected - ref_rejected).sum(-1))
    return (-(1 - label_smoothing) * F.logsigmoid(h) - label_smoothing * F.logsigmoid(-h)).mean()


def dpo_naive_log_sigmoid(policy_chosen, policy_rejected, ref_chosen, ref_rejected,
                          chosen_mask, rejected_mask, beta, label_smoothing):
    chosen = ((policy_chosen - ref_chosen) * chosen_mask).sum(dim=-1).double()
    rejected = ((policy_rejected - ref_rejected) * rejected_mask).sum(dim=-1).double()
    h = beta * (chosen - rejected)
    return (-(1 - label_smoothing) * torch.log(torch.sigmoid(h))
            - label_smoothing * torch.log(torch.sigmoid(-h))).mean()


def dpo_smoothing_sign(policy_chosen, policy_rejected, ref_chosen, ref_rejected,
                       chosen_mask, rejected_mask, beta, label_smoothing):
    chosen = ((policy_chosen - ref_chosen) * chosen_mask).sum(dim=-1)
    rejected = ((policy_rejected - ref_rejected) * rejected_mask).sum(dim=-1)
    h = beta * (chosen - rejected)
    return (-(1 - label_smoothing) * F.logsigmoid(h) + label_smoothing * F.logsigmoid(-h)).mean()


def dpo_per_token_mean(policy_chosen, policy_rejected, ref_chosen, ref_rejected,
                       chosen_mask, rejected_mask, beta, label_smoothing):
    chosen = ((policy_chosen - ref_chosen) * chosen_mask).sum(-1) / chosen_mask.sum(-1)
    rejected = ((policy_rejected - ref_rejected) * rejected_mask).sum(-1) / rejected_mask.sum(-1)
    h = beta * (chosen - rejected)
    return (-(1 - label_smoothing) * F.logsigmoid(h) - label_smoothing * F.logsigmoid(-h)).mean()


# --- 5. cached grouped-query attention with RoPE --------------------------------------------

def rope(x, start, base, adjacent=False):
    T, hd = x.shape[-2], x.shape[-1]
    frequencies = base ** (-torch.arange(0, hd, 2, dtype=torch.float64) / hd)
    angles = torch.arange(start, start + T, dtype=torch.float64)[:, None] * frequencies
    if adjacent:
        angles = angles.repeat_interleave(2, dim=-1)
        turned = torch.stack([-x[..., 1::2], x[..., 0::2]], dim=-1).flatten(-2)
    else:
        angles = torch.cat([angles, angles], dim=-1)
        x1, x2 = x.chunk(2, dim=-1)
        turned = torch.cat([-x2, x1], dim=-1)
    return x * angles.cos().to(x.dtype) + turned * angles.sin().to(x.dtype)


def attention(q, k, v, n_past, grouping="interleave", top_left=False):
    group = q.shape[1] // k.shape[1]
    if grouping == "interleave":
        k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
    else:
        k, v = k.repeat(1, group, 1, 1), v.repeat(1, group, 1, 1)
    T, S = q.shape[2], k.shape[2]
    rows = torch.arange(T)[:, None] + (0 if top_left else n_past)
    allowed = torch.arange(S)[None, :] <= rows
    scores = (q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])).masked_fill(~allowed, -math.inf)
    return scores.softmax(dim=-1) @ v


def cached_attention(q, k_new, v_new, k_cache, v_cache, base):
    n_past = k_cache.shape[2]
    k = torch.cat([k_cache, rope(k_new, n_past, base)], dim=2)
    v = torch.cat([v_cache, v_new], dim=2)
    return attention(rope(q, n_past, base), k, v, n_past)


def cached_without_offset(q, k_new, v_new, k_cache, v_cache, base):
    n_past = k_cache.shape[2]
    k = torch.cat([k_cache, rope(k_new, 0, base)], dim=2)
    return attention(rope(q, 0, base), k, torch.cat([v_cache, v_new], dim=2), n_past)


def cached_repeat(q, k_new, v_new, k_cache, v_cache, base):
    n_past = k_cache.shape[2]
    k = torch.cat([k_cache, rope(k_new, n_past, base)], dim=2)
    return attention(rope(q, n_past, base), k, torch.cat([v_cache, v_new], dim=2), n_past,
                     grouping="repeat")


def cached_top_left(q, k_new, v_new, k_cache, v_cache, base):
    n_past = k_cache.shape[2]
    k = torch.cat([k_cache, rope(k_new, n_past, base)], dim=2)
    return attention(rope(q, n_past, base), k, torch.cat([v_cache, v_new], dim=2), n_past,
                     top_left=True)


def cached_adjacent_pairs(q, k_new, v_new, k_cache, v_cache, base):
    n_past = k_cache.shape[2]
    k = torch.cat([k_cache, rope(k_new, n_past, base, adjacent=True)], dim=2)
    return attention(rope(q, n_past, base, adjacent=True), k,
                     torch.cat([v_cache, v_new], dim=2), n_past)


def cached_rotating_cache_again(q, k_new, v_new, k_cache, v_cache, base):
    n_past = k_cache.shape[2]
    k = rope(torch.cat([k_cache, k_new], dim=2), 0, base)
    return attention(rope(q, n_past, base), k, torch.cat([v_cache, v_new], dim=2), n_past)


RIGHT = {"future.swiglu_width": swiglu_width, "future.balance_loss": masked_balance_loss,
         "future.stereotype_gap": stereotype_gap, "future.dpo_tokens": dpo_loss_from_tokens,
         "future.cached_attention": cached_attention}
LESSON = {"future.swiglu_width": swiglu_width_lesson, "future.balance_loss": balance_lesson,
          "future.stereotype_gap": gap_lesson, "future.dpo_tokens": dpo_lesson}
WRONG = [("future.swiglu_width", swiglu_width_floor),
         ("future.swiglu_width", swiglu_width_round),
         ("future.swiglu_width", swiglu_width_two_thirds),
         ("future.balance_loss", balance_row_by_row),
         ("future.balance_loss", balance_shares_per_token),
         ("future.balance_loss", balance_probs_unmasked),
         ("future.stereotype_gap", gap_wald),
         ("future.stereotype_gap", gap_counting_no_job),
         ("future.stereotype_gap", gap_ends_subtracted),
         ("future.dpo_tokens", dpo_unmasked),
         ("future.dpo_tokens", dpo_naive_log_sigmoid),
         ("future.dpo_tokens", dpo_smoothing_sign),
         ("future.dpo_tokens", dpo_per_token_mean),
         ("future.cached_attention", cached_without_offset),
         ("future.cached_attention", cached_repeat),
         ("future.cached_attention", cached_top_left),
         ("future.cached_attention", cached_adjacent_pairs),
         ("future.cached_attention", cached_rotating_cache_again)]


def test_every_task_is_checked():
    assert set(EXERCISES) == set(RIGHT)
    assert sum(e.points for e in EXERCISES.values()) == 12


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("exercise_id", sorted(RIGHT))
def test_reference_solutions_pass_every_case(exercise_id, seed):
    exercise = EXERCISES[exercise_id]
    for cases in (instant_cases(EXERCISES[exercise_id], seed), hidden_cases(exercise, seed)):
        assert all(passed(exercise, RIGHT[exercise_id], cases)), exercise_id


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("exercise_id, wrong", WRONG + sorted(LESSON.items()),
                         ids=lambda v: getattr(v, "__name__", v))
def test_a_usual_slip_fails_a_hidden_case_and_the_instant_check(exercise_id, wrong, seed):
    exercise = EXERCISES[exercise_id]
    assert not all(passed(exercise, wrong, hidden_cases(exercise, seed)))
    assert not all(passed(exercise, wrong, instant_cases(EXERCISES[exercise_id], seed)))


@pytest.mark.parametrize("exercise_id, wrong, words", [
    ("future.swiglu_width", swiglu_width_floor, "one multiple above"),
    ("future.balance_loss", balance_row_by_row, "mean of each row's loss"),
    ("future.balance_loss", balance_shares_per_token, "k times too large"),
    ("future.balance_loss", balance_probs_unmasked, "probability includes the padding"),
    ("future.stereotype_gap", gap_wald, "Wald"),
    ("future.stereotype_gap", gap_counting_no_job, "named no job"),
    ("future.dpo_tokens", dpo_naive_log_sigmoid, "not finite"),
    ("future.dpo_tokens", dpo_unmasked, "were summed too"),
    ("future.cached_attention", cached_without_offset, "positions 0, 1"),
    ("future.cached_attention", cached_repeat, "round-robin"),
    ("future.cached_attention", cached_top_left, "top left"),
    ("future.cached_attention", cached_adjacent_pairs, "neighbours"),
])
def test_a_slip_gets_a_message_that_names_it(exercise_id, wrong, words):
    exercise = EXERCISES[exercise_id]
    messages = [exercise.compare(wrong(*case.args), case) for case in hidden_cases(exercise, 0)]
    assert any(m and words in m for m in messages), messages


# --- the checks' own references, against a second computation -------------------------------

def test_width_reference_agrees_with_llmkit_modules_and_llama():
    from llmkit.model import GPTConfig
    from llmkit.model.layers import MLP, SwiGLU
    count = lambda m: sum(p.numel() for p in m.parameters())
    for bias in (True, False):
        base = GPTConfig(d_model=64, n_head=4, bias=bias)
        width = CHECKS._swiglu_width(64, 256, bias, 1)
        gelu = count(MLP(base))
        swiglu = lambda h: count(SwiGLU(GPTConfig(d_model=64, n_head=4, bias=bias, mlp="swiglu",
                                                  mlp_hidden=h)))
        assert abs(swiglu(width) - gelu) <= min(abs(swiglu(width + 1) - gelu),
                                                 abs(swiglu(width - 1) - gelu))
    assert CHECKS._swiglu_width(4096, 16384, False, 256) == 11008   # LLaMA-7B's MLP width


def test_balance_reference_agrees_with_transformers_mixtral():
    from transformers.models.mixtral.modeling_mixtral import load_balancing_loss_func
    for case in hidden_cases(EXERCISES["future.balance_loss"], 0):
        logits, mask, k = case.args
        flat = logits.reshape(-1, logits.shape[-1])
        # Mixtral's shares are per token (they sum to k), so its loss is k times Switch's.
        theirs = load_balancing_loss_func((flat,), logits.shape[-1], k, mask.long()) / k
        torch.testing.assert_close(case.expected, theirs.float(), atol=1e-5, rtol=1e-5)


def test_wilson_by_bisection_agrees_with_llmkit_and_the_gap_with_a_simulation():
    from llmkit.bias import wilson_interval
    for successes, n, z in [(0, 7, 1.96), (3, 10, 1.96), (10, 10, 2.576), (17, 40, 1.645)]:
        low, high = CHECKS._wilson_by_bisection(successes, n, z)
        ref_low, ref_high = wilson_interval(successes, n, z)
        assert math.isclose(low, ref_low, abs_tol=1e-9) and math.isclose(high, ref_high,
                                                                         abs_tol=1e-9)
    # Newcombe's 95% interval covers the true gap about 95% of the time (it is slightly
    # conservative): simulated with p1 = 0.7, p2 = 0.4 and 40 and 30 heroes.
    generator = torch.Generator().manual_seed(0)
    covered = 0
    for _ in range(2000):
        x1 = int((torch.rand(40, generator=generator) < 0.7).sum())
        x2 = int((torch.rand(30, generator=generator) < 0.4).sum())
        _, low, high = newcombe(wilson(x1, 40, 1.96), wilson(x2, 30, 1.96))
        covered += low <= 0.3 <= high
    assert 0.93 <= covered / 2000 <= 0.98


def test_dpo_reference_agrees_with_llmkit_without_smoothing():
    from llmkit.preference import dpo_loss
    for case in hidden_cases(EXERCISES["future.dpo_tokens"], 0):
        pc, pr, rc, rr, mc, mr, beta, eps = case.args
        sums = [(t * m).double().sum(dim=-1) for t, m in ((pc, mc), (pr, mr), (rc, mc), (rr, mr))]
        plain = CHECKS._dpo_reference(pc, pr, rc, rr, mc, mr, beta, 0.0)
        torch.testing.assert_close(plain.double(), dpo_loss(*sums, beta=beta), atol=1e-4,
                                   rtol=1e-5)


def test_attention_reference_agrees_with_llmkit_rope_and_fused_attention():
    from llmkit.model.embeddings import RotaryEmbedding
    x = torch.randn(2, 3, 5, 8, dtype=torch.float64)
    torch.testing.assert_close(CHECKS._rotate(x, range(4, 9), 500.0),
                               RotaryEmbedding(8, 16, base=500.0).double()(x, start=4))
    for case in hidden_cases(EXERCISES["future.cached_attention"], 0):
        q, k_new, v_new, k_cache, v_cache, base = case.args
        n_past, n_new = k_cache.shape[2], q.shape[2]
        rotary = RotaryEmbedding(q.shape[-1], n_past + n_new, base=base)
        torch.testing.assert_close(k_cache, rotary(CHECKS._unrotate(k_cache, base)),
                                   atol=1e-5, rtol=1e-5)
        k = torch.cat([k_cache, rotary(k_new, n_past)], dim=2)
        v = torch.cat([v_cache, v_new], dim=2)
        allowed = torch.ones(n_new, n_past + n_new, dtype=torch.bool).tril(n_past)
        fused = F.scaled_dot_product_attention(rotary(q, n_past), k, v, attn_mask=allowed,
                                               enable_gqa=True)
        torch.testing.assert_close(case.expected, fused, atol=1e-5, rtol=1e-5)


# --- forbidden routes -----------------------------------------------------------------------

def seen_by_the_grader(exercise_id, function):
    """What the grader's watch records while `function` runs on one instant case."""
    exercise = EXERCISES[exercise_id]
    case = instant_cases(EXERCISES[exercise_id], 0)[0]
    with Watch(rules_for(exercise)) as watch:
        with watch.recording():
            function(*case.args)
    return watch.seen


def width_by_llmkit_modules(d_model, gelu_hidden, bias, multiple_of):
    from llmkit.model import GPTConfig
    from llmkit.model.layers import SwiGLU
    config = GPTConfig(d_model=d_model, n_head=1, bias=bias, mlp="swiglu",
                       mlp_hidden=multiple_of)
    SwiGLU(config)
    return swiglu_width(d_model, gelu_hidden, bias, multiple_of)


def balance_by_llmkit(router_logits, mask, k):
    from llmkit.load_balancing import load_balancing_loss
    return load_balancing_loss(router_logits[mask], k)


def balance_by_mixtral(router_logits, mask, k):
    from transformers.models.mixtral.modeling_mixtral import load_balancing_loss_func
    flat = router_logits.reshape(-1, router_logits.shape[-1])
    return load_balancing_loss_func((flat,), router_logits.shape[-1], k, mask.long()) / k


def gap_by_llmkit(groups, roles, girl_roles, z=1.96):
    from llmkit.bias import wilson_interval
    (x1, n1), (x2, n2) = shares(groups, roles, girl_roles)
    l1, u1 = wilson_interval(x1, n1, z)
    l2, u2 = wilson_interval(x2, n2, z)
    return newcombe((x1 / n1, l1, u1), (x2 / n2, l2, u2))


def dpo_by_llmkit(pc, pr, rc, rr, mc, mr, beta, eps):
    from llmkit.preference import dpo_loss
    return dpo_loss((pc * mc).sum(-1), (pr * mr).sum(-1), (rc * mc).sum(-1), (rr * mr).sum(-1),
                    beta=beta)


def attention_by_sdpa(q, k_new, v_new, k_cache, v_cache, base):
    n_past, n_new = k_cache.shape[2], q.shape[2]
    k = torch.cat([k_cache, rope(k_new, n_past, base)], dim=2)
    v = torch.cat([v_cache, v_new], dim=2)
    allowed = torch.arange(n_past + n_new)[None] <= torch.arange(n_past, n_past + n_new)[:, None]
    return F.scaled_dot_product_attention(rope(q, n_past, base), k, v, attn_mask=allowed,
                                          enable_gqa=True)


def attention_by_llmkit_rotary(q, k_new, v_new, k_cache, v_cache, base):
    from llmkit.model.embeddings import RotaryEmbedding
    n_past = k_cache.shape[2]
    rotary = RotaryEmbedding(q.shape[-1], n_past + q.shape[2], base)
    k = torch.cat([k_cache, rotary(k_new, n_past)], dim=2)
    return attention(rotary(q, n_past), k, torch.cat([v_cache, v_new], dim=2), n_past)


def attention_by_llama_helpers(q, k_new, v_new, k_cache, v_cache, base):
    from transformers.models.llama.modeling_llama import repeat_kv
    n_past = k_cache.shape[2]
    k = torch.cat([k_cache, rope(k_new, n_past, base)], dim=2)
    v = torch.cat([v_cache, v_new], dim=2)
    group = q.shape[1] // k.shape[1]
    return attention(rope(q, n_past, base), repeat_kv(k, group), repeat_kv(v, group), n_past)


def test_every_forbidden_name_resolves():
    # A name that no longer resolves would be skipped silently, and the piece allowed again.
    from llmkit.grading.forbid import resolve
    for exercise in EXERCISES.values():
        for name in exercise.forbidden:
            assert resolve(name) is not None, (exercise.id, name)


@pytest.mark.parametrize("exercise_id, route, what", [
    ("future.swiglu_width", width_by_llmkit_modules, "llmkit.model.layers"),
    ("future.balance_loss", balance_by_llmkit, "llmkit.load_balancing"),
    ("future.balance_loss", balance_by_mixtral, "load_balancing_loss_func"),
    ("future.stereotype_gap", gap_by_llmkit, "llmkit.bias"),
    ("future.dpo_tokens", dpo_by_llmkit, "llmkit.preference"),
    ("future.cached_attention", attention_by_sdpa, "scaled_dot_product"),
    ("future.cached_attention", attention_by_llmkit_rotary, "llmkit.model.embeddings"),
    ("future.cached_attention", attention_by_llama_helpers, "repeat_kv"),
], ids=lambda v: getattr(v, "__name__", None) or str(v))
def test_each_forbidden_route_is_reported(exercise_id, route, what):
    seen = seen_by_the_grader(exercise_id, route)
    assert any(what in s for s in seen), seen


def test_the_instant_check_calls_a_forbidden_route_forbidden_and_honest_work_passed():
    assert check("future.dpo_tokens", dpo_by_llmkit).status == "forbidden"
    assert check("future.dpo_tokens", dpo_loss_from_tokens).status == "passed"
    assert check("future.cached_attention", attention_by_sdpa).status == "forbidden"
    assert check("future.cached_attention", cached_attention).status == "passed"
