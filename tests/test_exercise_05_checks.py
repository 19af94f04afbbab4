"""Exercise notebook 05's checks: the reference solutions pass every case; the lesson's own
code, pasted as the answer, and the usual wrong solutions each fail a hidden case (so, graded
all-or-nothing, they earn nothing for the task) and, where the task statement names the
clause they get wrong, an instant case too; every forbidden route is reported.

The wrong solutions are written here by hand, one per slip the hidden cases are built to catch.
"""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from llmkit.grading import ASSIGNMENTS
from llmkit.grading.exercise import hidden_cases
from llmkit.grading.forbid import Rules, Watch
from llmkit.model import GPTConfig
from llmkit.model.attention import CausalSelfAttention, causal_mask as llmkit_causal_mask

from exercise_support import instant_cases, passed

EXERCISES = {exercise.id: exercise for exercise in ASSIGNMENTS["05_attention"].exercises}
SEEDS = [0, 1, 2]


# --- the reference solutions (as in exercises/source/05_attention.ipynb) ------------------

def attention_weights(q, k):
    return torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1)


def causal_mask(n_queries, n_keys, window=None):
    query_positions = torch.arange(n_keys - n_queries, n_keys)[:, None]
    key_positions = torch.arange(n_keys)[None, :]
    allowed = key_positions <= query_positions
    if window is not None:
        allowed = allowed & (key_positions > query_positions - window)
    return allowed


def causal_attention(q, k, v):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    scores = scores.masked_fill(~causal_mask(q.shape[-2], k.shape[-2]), float("-inf"))
    return torch.softmax(scores, dim=-1) @ v


def split_qkv(qkv, n_head, n_kv_head):
    B, T, width = qkv.shape
    head_dim = width // (n_head + 2 * n_kv_head)
    heads = qkv.view(B, T, n_head + 2 * n_kv_head, head_dim).transpose(1, 2)
    return heads.split([n_head, n_kv_head, n_kv_head], dim=1)


def multi_head_attention(x, qkv_weight, qkv_bias, proj_weight, proj_bias, n_head, past_k, past_v):
    B, T, d_model = x.shape
    q, k, v = split_qkv(x @ qkv_weight.T + qkv_bias, n_head, n_head)
    k, v = torch.cat([past_k, k], dim=2), torch.cat([past_v, v], dim=2)
    merged = causal_attention(q, k, v).transpose(1, 2).reshape(B, T, d_model)
    return merged @ proj_weight.T + proj_bias


def attention_entropy(weights):
    terms = torch.where(weights > 0, -weights * torch.log(weights), torch.zeros_like(weights))
    return terms.sum(dim=-1).mean(dim=(0, 2))


RIGHT = {"attention.weights": attention_weights, "attention.causal_mask": causal_mask,
         "attention.causal": causal_attention, "attention.split_qkv": split_qkv,
         "attention.multi_head": multi_head_attention, "attention.entropy": attention_entropy}


# --- the lesson's own code, given the task's signature ------------------------------------

def lesson_mask(n_queries, n_keys, window=None):       # my_causal_mask(T), T the queries
    positions = torch.arange(n_queries)
    return positions[:, None] >= positions[None, :]


def lesson_causal_attention(q, k, v):                   # my_causal_attention, output only
    T = q.shape[-2]
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    scores = scores.masked_fill(~lesson_mask(T, T), float("-inf"))
    return torch.softmax(scores, dim=-1) @ v


def lesson_split(qkv, n_head, n_kv_head):               # cut in three, then split_heads
    B, T, width = qkv.shape
    d_model = width // 3
    return tuple(t.reshape(B, T, n_head, d_model // n_head).transpose(1, 2)
                 for t in qkv.split(d_model, dim=-1))


def lesson_multi_head(x, qkv_weight, qkv_bias, proj_weight, proj_bias, n_head, past_k, past_v):
    B, T, d_model = x.shape                             # CausalMultiHeadAttention.forward
    q, k, v = lesson_split(x @ qkv_weight.T + qkv_bias, n_head, n_head)
    heads = lesson_causal_attention(q, k, v)
    return heads.transpose(1, 2).reshape(B, T, d_model) @ proj_weight.T + proj_bias


LESSON = {"attention.causal_mask": lesson_mask, "attention.causal": lesson_causal_attention,
          "attention.split_qkv": lesson_split, "attention.multi_head": lesson_multi_head}
WARM_UP = "attention.weights"       # the lesson's formula, on purpose
NOT_IN_LESSON = {"attention.entropy"}   # the lesson shows nothing that could be pasted


# --- the usual slips ----------------------------------------------------------------------

def weights_unscaled(q, k):
    return torch.softmax(q @ k.transpose(-2, -1), dim=-1)


def mask_top_left(n_queries, n_keys, window=None):
    rows, cols = torch.arange(n_queries)[:, None], torch.arange(n_keys)[None, :]
    allowed = cols <= rows
    return allowed & (cols > rows - window) if window is not None else allowed


def mask_window_one_too_wide(n_queries, n_keys, window=None):
    query_positions = torch.arange(n_keys - n_queries, n_keys)[:, None]
    key_positions = torch.arange(n_keys)[None, :]
    allowed = key_positions <= query_positions
    if window is not None:
        allowed = allowed & (key_positions >= query_positions - window)
    return allowed


def mask_without_window(n_queries, n_keys, window=None):
    return causal_mask(n_queries, n_keys)


def attention_masked_after_softmax(q, k, v):
    weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1)
    return weights * causal_mask(q.shape[-2], k.shape[-2]) @ v


def attention_top_left(q, k, v):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    scores = scores.masked_fill(~mask_top_left(q.shape[-2], k.shape[-2]), float("-inf"))
    return torch.softmax(scores, dim=-1) @ v


def split_without_transpose(qkv, n_head, n_kv_head):
    B, T, width = qkv.shape
    heads = qkv.view(B, T, n_head + 2 * n_kv_head, -1)
    return heads.split([n_head, n_kv_head, n_kv_head], dim=2)


def split_reshaped_straight(qkv, n_head, n_kv_head):
    B, T, width = qkv.shape
    heads = qkv.reshape(B, n_head + 2 * n_kv_head, T, -1)
    return heads.split([n_head, n_kv_head, n_kv_head], dim=1)


def split_interleaved(qkv, n_head, n_kv_head):   # q, k, v of one group side by side
    B, T, width = qkv.shape
    group = n_head // n_kv_head
    heads = qkv.view(B, T, n_kv_head, group + 2, -1).transpose(1, 2)   # (B, kv, T, g+2, hd)
    q = heads[:, :, :, :group].permute(0, 1, 3, 2, 4).reshape(B, n_head, T, -1)
    return q, heads[:, :, :, group], heads[:, :, :, group + 1]


def multi_head_past_after(x, qkv_weight, qkv_bias, proj_weight, proj_bias, n_head, past_k,
                          past_v):
    B, T, d_model = x.shape
    q, k, v = split_qkv(x @ qkv_weight.T + qkv_bias, n_head, n_head)
    k, v = torch.cat([k, past_k], dim=2), torch.cat([v, past_v], dim=2)
    merged = causal_attention(q, k, v).transpose(1, 2).reshape(B, T, d_model)
    return merged @ proj_weight.T + proj_bias


def multi_head_top_left(x, qkv_weight, qkv_bias, proj_weight, proj_bias, n_head, past_k, past_v):
    B, T, d_model = x.shape
    q, k, v = split_qkv(x @ qkv_weight.T + qkv_bias, n_head, n_head)
    k, v = torch.cat([past_k, k], dim=2), torch.cat([past_v, v], dim=2)
    merged = attention_top_left(q, k, v).transpose(1, 2).reshape(B, T, d_model)
    return merged @ proj_weight.T + proj_bias


def entropy_nan(weights):
    return (-weights * torch.log(weights)).sum(dim=-1).mean(dim=(0, 2))


def entropy_bits(weights):
    terms = torch.where(weights > 0, -weights * torch.log2(weights), torch.zeros_like(weights))
    return terms.sum(dim=-1).mean(dim=(0, 2))


def entropy_summed(weights):
    return attention_entropy(weights) * weights.shape[0] * weights.shape[2]


# (task, wrong function, whether the instant check must already catch it)
WRONG = [("attention.weights", weights_unscaled, True),
         ("attention.causal_mask", mask_top_left, True),
         ("attention.causal_mask", mask_window_one_too_wide, True),
         ("attention.causal_mask", mask_without_window, True),
         ("attention.causal", attention_masked_after_softmax, True),
         ("attention.causal", attention_top_left, True),
         ("attention.split_qkv", split_without_transpose, True),
         ("attention.split_qkv", split_reshaped_straight, True),
         ("attention.split_qkv", split_interleaved, True),
         ("attention.multi_head", multi_head_past_after, True),
         ("attention.multi_head", multi_head_top_left, True),
         ("attention.entropy", entropy_nan, True),
         ("attention.entropy", entropy_bits, True),
         ("attention.entropy", entropy_summed, True)]


def test_every_task_is_checked():
    assert set(EXERCISES) == set(RIGHT)
    assert sum(e.points for e in EXERCISES.values()) == 13


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("exercise_id", sorted(RIGHT))
def test_reference_solutions_pass_every_case(exercise_id, seed):
    exercise = EXERCISES[exercise_id]
    for cases in (instant_cases(exercise, seed), hidden_cases(exercise, seed)):
        assert all(passed(exercise, RIGHT[exercise_id], cases)), (
            exercise_id, [c.note for c, ok in zip(cases, passed(exercise, RIGHT[exercise_id],
                                                                cases)) if not ok])


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("exercise_id", sorted(LESSON))
def test_the_lessons_code_fails_a_hidden_case(exercise_id, seed):
    exercise = EXERCISES[exercise_id]
    assert not all(passed(exercise, LESSON[exercise_id], hidden_cases(exercise, seed)))
    assert not all(passed(exercise, LESSON[exercise_id], instant_cases(exercise, seed)))


def test_only_the_warm_up_is_the_lessons_code():
    assert set(LESSON) | {WARM_UP} | NOT_IN_LESSON == set(RIGHT)
    assert EXERCISES[WARM_UP].title.startswith("Warm-up")


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("exercise_id, wrong, instant", WRONG,
                         ids=lambda v: getattr(v, "__name__", str(v)))
def test_a_usual_slip_fails_a_hidden_case_and_the_instant_check(exercise_id, wrong, instant,
                                                                 seed):
    exercise = EXERCISES[exercise_id]
    assert not all(passed(exercise, wrong, hidden_cases(exercise, seed)))
    if instant:
        assert not all(passed(exercise, wrong, instant_cases(exercise, seed)))


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("wrong", [split_without_transpose, split_reshaped_straight])
def test_every_split_case_catches_heads_left_after_the_positions(wrong, seed):
    exercise = EXERCISES["attention.split_qkv"]
    for cases in (hidden_cases(exercise, seed), instant_cases(exercise, seed)):
        assert not any(passed(exercise, wrong, cases))


@pytest.mark.parametrize("seed", SEEDS)
def test_every_windowed_and_offset_mask_case_catches_the_top_left_mask(seed):
    exercise = EXERCISES["attention.causal_mask"]
    for case in hidden_cases(exercise, seed):
        n_queries, n_keys, window = case.args
        if n_queries < n_keys:
            assert exercise.compare(mask_top_left(*case.args), case) is not None, case.note


def test_slips_get_a_message_that_names_them():
    exercise = EXERCISES["attention.causal_mask"]
    case = instant_cases(exercise, 0)[1]
    assert "top left" in exercise.compare(mask_top_left(*case.args), case)
    case = instant_cases(exercise, 0)[2]
    assert "itself included" in exercise.compare(mask_window_one_too_wide(*case.args), case)
    exercise = EXERCISES["attention.multi_head"]
    case = instant_cases(exercise, 0)[1]
    assert "new tokens alone" in exercise.compare(lesson_multi_head(*case.args), case)
    exercise = EXERCISES["attention.split_qkv"]
    case = instant_cases(exercise, 0)[0]
    assert "heads go before the positions" in exercise.compare(
        split_without_transpose(*case.args), case)


def test_the_reference_mask_is_llmkits_without_a_window():
    exercise = EXERCISES["attention.causal_mask"]
    for case in hidden_cases(exercise, 0):
        n_queries, n_keys, window = case.args
        if window is None:
            assert torch.equal(case.expected, llmkit_causal_mask(n_queries, n_keys))


# --- forbidden routes: each does the task's work and is reported ---------------------------

def caught(exercise, fn, args):
    """(what the watch saw, whether the answer was right) while `fn` ran on `args`."""
    with Watch(Rules(exercise.forbidden, exercise.forbidden_ops)) as watch:
        with watch.recording():
            answer = fn(*args)
    return watch.seen, answer


def weights_by_sdpa(q, k):           # attention of the identity values is the weight matrix
    return F.scaled_dot_product_attention(q, k, torch.eye(k.shape[-2], dtype=q.dtype))


def weights_by_private_binding(q, k):
    return torch._C._nn.scaled_dot_product_attention(q, k, torch.eye(k.shape[-2], dtype=q.dtype))


def mask_by_tril_method(n_queries, n_keys, window=None):
    mask = torch.ones(n_queries, n_keys, dtype=torch.bool).tril(diagonal=n_keys - n_queries)
    if window is not None:
        mask = mask & ~torch.ones_like(mask).tril(diagonal=n_keys - n_queries - window)
    return mask


def mask_by_torch_triu(n_queries, n_keys, window=None):
    mask = ~torch.triu(torch.ones(n_queries, n_keys, dtype=torch.bool),
                       diagonal=n_keys - n_queries + 1)
    if window is not None:
        mask = mask & torch.triu(torch.ones_like(mask), diagonal=n_keys - n_queries - window + 1)
    return mask


def mask_by_llmkit(n_queries, n_keys, window=None):
    return llmkit_causal_mask(n_queries, n_keys)


def causal_by_sdpa(q, k, v):
    return F.scaled_dot_product_attention(q, k, v, attn_mask=causal_mask(q.shape[-2], k.shape[-2]))


def split_by_llmkit(qkv, n_head, n_kv_head):
    head_dim = qkv.shape[-1] // (n_head + 2 * n_kv_head)
    layer = CausalSelfAttention(GPTConfig(n_head=n_head, n_kv_head=n_kv_head,
                                          d_model=n_head * head_dim))
    layer.qkv = nn.Identity()                            # its split, on the given channels
    return layer.project(qkv)


def multi_head_by_sdpa(x, qkv_weight, qkv_bias, proj_weight, proj_bias, n_head, past_k, past_v):
    B, T, d_model = x.shape
    q, k, v = split_qkv(x @ qkv_weight.T + qkv_bias, n_head, n_head)
    k, v = torch.cat([past_k, k], dim=2), torch.cat([past_v, v], dim=2)
    heads = F.scaled_dot_product_attention(q, k, v, attn_mask=causal_mask(T, k.shape[2]))
    return heads.transpose(1, 2).reshape(B, T, d_model) @ proj_weight.T + proj_bias


def entropy_by_entr(weights):
    return torch.special.entr(weights).sum(-1).mean(dim=(0, 2))


def entropy_by_xlogy(weights):
    return -torch.xlogy(weights, weights).sum(-1).mean(dim=(0, 2))


def entropy_by_categorical(weights):
    return torch.distributions.Categorical(probs=weights).entropy().mean(dim=(0, 2))


# (task, route, what the report names, which instant case it runs on)
FORBIDDEN = [("attention.weights", weights_by_sdpa, "scaled_dot_product", 0),
             ("attention.weights", weights_by_private_binding, "scaled_dot_product", 1),
             ("attention.causal_mask", mask_by_tril_method, "aten.tril", 2),
             ("attention.causal_mask", mask_by_torch_triu, "triu", 2),
             ("attention.causal_mask", mask_by_llmkit, "causal_mask", 1),
             ("attention.causal", causal_by_sdpa, "scaled_dot_product", 1),
             ("attention.split_qkv", split_by_llmkit, "CausalSelfAttention", 1),
             ("attention.multi_head", multi_head_by_sdpa, "scaled_dot_product", 1),
             ("attention.entropy", entropy_by_entr, "entr", 0),
             ("attention.entropy", entropy_by_xlogy, "xlogy", 0),
             ("attention.entropy", entropy_by_categorical, "Categorical", 0)]


@pytest.mark.parametrize("exercise_id, route, what, index", FORBIDDEN,
                         ids=lambda v: getattr(v, "__name__", str(v)))
def test_a_forbidden_route_is_reported(exercise_id, route, what, index):
    exercise = EXERCISES[exercise_id]
    case = instant_cases(exercise, 0)[index]
    seen, answer = caught(exercise, route, case.args)
    assert exercise.compare(answer, case) is None     # the route does the task's work
    assert any(what in s for s in seen), seen


def test_the_old_square_tril_is_reported_too():
    exercise = EXERCISES["attention.causal_mask"]
    seen, _ = caught(exercise, lambda n: torch.ones(n, n, dtype=torch.bool).tril(), (5,))
    assert any("aten.tril" in s for s in seen), seen


def test_honest_work_is_not_flagged():
    for exercise_id, function in RIGHT.items():
        exercise = EXERCISES[exercise_id]
        for case in instant_cases(exercise, 0):
            seen, _ = caught(exercise, function, case.args)
            assert seen == [], (exercise_id, seen)
