"""The checks of exercise notebook 05 (attention): instant and hidden cases.

Every expected value comes from PyTorch's own ops (softmax, scaled_dot_product_attention)
or from `llmkit.model.attention.CausalSelfAttention`, computed before the learner's function
runs. While it runs, llmkit's attention code, PyTorch's fused attention and
`nn.MultiheadAttention` are off limits (calling one costs the task); for the causal mask,
so are `torch.tril` and `torch.triu`. Tensor methods (`x.tril()`) cannot be replaced by
stand-ins, so the notebook asks for them in words instead.

The hidden cases include the inputs where a near-miss shows: wide heads (where a missing
1/sqrt(d) scale changes the answer a lot), one-token sequences, more keys than queries,
float64 inputs, and attention rows with exact zeros (for the entropy, 0 * log 0).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from llmkit.model.attention import CausalSelfAttention
from llmkit.model.config import GPTConfig
from llmkit.grading.exercise import Assignment, Case, Exercise, compare_tensors
from llmkit.grading.exercise import random_int as _int, random_normal as _randn

SETUP = "import math\nimport torch\nfrom llmkit.grading import check\n"

LLMKIT_ATTENTION = tuple(f"llmkit.model.attention.{name}" for name in (
    "masked_attention", "causal_mask", "CausalSelfAttention",
))
FUSED_ATTENTION = ("torch.nn.functional.scaled_dot_product_attention",
                   "torch._C._nn.scaled_dot_product_attention",
                   "torch.nn.MultiheadAttention",
                   "torch.nn.functional.multi_head_attention_forward")
TRIANGLES = ("torch.tril", "torch.triu", "torch.tril_indices", "torch.triu_indices")
ENTROPY_OPS = ("torch.special.entr", "torch.distributions.Categorical",
               "torch.distributions.categorical.Categorical")
OFF_LIMITS = LLMKIT_ATTENTION + FUSED_ATTENTION
# The fused attention kernels, whatever route reaches them (the CPU one is the first).
ATTENTION_KERNELS = ("_scaled_dot_product_flash_attention_for_cpu",
                     "_scaled_dot_product_flash_attention", "_scaled_dot_product_efficient_attention",
                     "_scaled_dot_product_cudnn_attention", "_native_multi_head_attention")
TRIANGLE_KERNELS = ("tril", "triu", "tril_indices", "triu_indices")


def _batch(generator) -> tuple[int, ...]:
    """Leading dimensions: none, (B,) or (B, H)."""
    return tuple(_int(generator, 1, 4) for _ in range(_int(generator, 0, 3)))


def _reference_mask(n: int) -> torch.Tensor:
    return torch.ones(n, n, dtype=torch.bool).tril()


def _allclose(answer, other, atol=1e-5, rtol=1e-4) -> bool:
    return (isinstance(answer, torch.Tensor) and answer.shape == other.shape
            and answer.is_floating_point()
            and torch.allclose(answer.double(), other.double(), atol=atol, rtol=rtol))


# --- 1. attention weights ----------------------------------------------------------------

def _weights(q, k):
    return torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1)


def _weights_case(generator, lead, t, s, d, note="", dtype=torch.float32):
    q, k = _randn(generator, *lead, t, d, dtype=dtype), _randn(generator, *lead, s, d, dtype=dtype)
    return Case((q, k), _weights(q, k), note)


def _weights_cases(generator, hidden):
    cases = []
    for _ in range(4 if hidden else 2):
        t = _int(generator, 1, 8)
        cases.append(_weights_case(generator, _batch(generator), t, t, _int(generator, 2, 17)))
    cases.append(_weights_case(generator, (2,), 5, 5, 64, "heads 64 wide"))
    if hidden:
        cases += [
            _weights_case(generator, (2, 3), 3, 7, 8, "more keys (7) than queries (3)"),
            _weights_case(generator, (), 1, 1, 4, "a single token"),
            _weights_case(generator, (2,), 4, 4, 256, "heads 256 wide"),
            _weights_case(generator, (3,), 5, 5, 6, "a float64 input", torch.float64),
        ]
    return cases


def _compare_weights(answer, case):
    problem = compare_tensors(answer, case.expected, name="the weight matrix",
                              any_float_dtype=True, atol=1e-5, rtol=1e-4)
    if problem is None or not isinstance(answer, torch.Tensor):
        return problem
    q, k = case.args
    scores = q @ k.transpose(-2, -1)
    if _allclose(answer, torch.softmax(scores, dim=-1)):
        problem += " They match softmax(q k^T) without the 1/sqrt(d) scale."
    elif _allclose(answer, torch.softmax(scores / q.shape[-1], dim=-1)):
        problem += " They match a scale of 1/d; the scale is 1/sqrt(d)."
    elif answer.shape == case.expected.shape and answer.shape[-1] > 1 and not torch.allclose(
            answer.double().sum(-1), torch.ones(answer.shape[:-1], dtype=torch.float64),
            atol=1e-4):
        problem += " Each row (one query's weights over the keys) should sum to 1."
    return problem


# --- 2. the causal mask --------------------------------------------------------------------

def _mask_cases(generator, hidden):
    sizes = [_int(generator, 2, 9) for _ in range(3 if hidden else 2)] + [4]
    if hidden:
        sizes += [1, 2, 16]
    return [Case((n,), _reference_mask(n), f"n = {n}") for n in sizes]


def _compare_mask(answer, case):
    problem = compare_tensors(answer, case.expected, name="the mask")
    if problem is None or not isinstance(answer, torch.Tensor):
        return problem
    if answer.shape == case.expected.shape and answer.dtype != torch.bool:
        return problem + " Comparisons such as a >= b give a bool tensor."
    if answer.shape == case.expected.shape and answer.dtype == torch.bool:
        if torch.equal(answer, case.expected.T):
            problem += (" It looks transposed: row i is the query at position i, and it may "
                        "look at the keys in columns 0..i.")
        elif torch.equal(answer, case.expected & ~torch.eye(len(answer), dtype=torch.bool)):
            problem += " The diagonal is False: a position may look at itself."
    return problem


# --- 3. causal single-head attention -------------------------------------------------------

def _causal_case(generator, lead, t, d, d_v=None, note="", dtype=torch.float32):
    q = _randn(generator, *lead, t, d, dtype=dtype)
    k = _randn(generator, *lead, t, d, dtype=dtype)
    v = _randn(generator, *lead, t, d if d_v is None else d_v, dtype=dtype)
    return Case((q, k, v), F.scaled_dot_product_attention(q, k, v, is_causal=True), note)


def _causal_cases(generator, hidden):
    cases = [_causal_case(generator, _batch(generator), _int(generator, 2, 9),
                          _int(generator, 2, 17)) for _ in range(4 if hidden else 2)]
    cases.append(_causal_case(generator, (2,), 6, 4, 3, "values narrower (3) than keys (4)"))
    if hidden:
        cases += [
            _causal_case(generator, (), 1, 5, note="a single token"),
            _causal_case(generator, (2, 2), 7, 64, note="heads 64 wide"),
            _causal_case(generator, (1,), 5, 8, note="a float64 input", dtype=torch.float64),
        ]
    return cases


def _compare_causal(answer, case):
    problem = compare_tensors(answer, case.expected, name="the attention output",
                              any_float_dtype=True, atol=1e-5, rtol=1e-4)
    if problem is None or not isinstance(answer, torch.Tensor):
        return problem
    q, k, v = case.args
    if _allclose(answer, F.scaled_dot_product_attention(q, k, v)):
        problem += (" It matches attention without a mask: every position sees the future. "
                    "Mask the scores before the softmax.")
    elif answer.shape == case.expected.shape:
        weights = _weights(q, k) * _reference_mask(q.shape[-2])
        if _allclose(answer, weights @ v):
            problem += (" It looks like the weights were masked after the softmax, so the "
                        "rows no longer sum to 1: set the scores to -inf before it.")
    if answer.shape == case.expected.shape and torch.isnan(answer).any():
        problem += " Some values are nan: does some row have every score at -inf?"
    return problem


# --- 4. split into heads -------------------------------------------------------------------

def _split(x, n_head):
    batch, seq, width = x.shape
    return x.view(batch, seq, n_head, width // n_head).transpose(1, 2)


def _split_cases(generator, hidden):
    shapes = [(_int(generator, 1, 4), _int(generator, 1, 7), 2 * _int(generator, 1, 4),
               _int(generator, 1, 5)) for _ in range(3 if hidden else 2)]
    shapes.append((2, 5, 4, 3))
    if hidden:
        shapes += [(1, 4, 6, 1), (2, 3, 1, 8), (1, 1, 4, 4)]
    cases = []
    for batch, seq, n_head, head_dim in shapes:
        x = _randn(generator, batch, seq, n_head * head_dim)
        note = f"x of shape {(batch, seq, n_head * head_dim)} and n_head = {n_head}"
        cases.append(Case((x, n_head), _split(x, n_head), note))
    return cases


def _compare_split(answer, case):
    problem = compare_tensors(answer, case.expected, name="the split tensor", exact=True)
    if problem is None or not isinstance(answer, torch.Tensor):
        return problem
    x, n_head = case.args
    batch, seq, width = x.shape
    if answer.shape == case.expected.shape and torch.equal(
            answer, x.reshape(batch, n_head, seq, width // n_head)):
        problem += (" Reshaping straight to (B, n_head, T, head_dim) mixes positions into "
                    "heads: cut the width into heads first, then swap two dimensions.")
    return problem


# --- 5. multi-head causal attention --------------------------------------------------------

def _multi_head_case(generator, batch, seq, d_model, n_head, bias=True, note=""):
    config = GPTConfig(vocab_size=8, context_length=max(seq, 1), n_layer=1, n_head=n_head,
                       d_model=d_model, bias=bias)
    layer = CausalSelfAttention(config)
    weights = {name: _randn(generator, *p.shape) * 0.5 for name, p in layer.state_dict().items()}
    layer.load_state_dict(weights)
    layer.eval()
    x = _randn(generator, batch, seq, d_model)
    with torch.no_grad():
        expected = layer(x)
    zeros = torch.zeros
    args = (x, weights["qkv.weight"], weights.get("qkv.bias", zeros(3 * d_model)),
            weights["proj.weight"], weights.get("proj.bias", zeros(d_model)), n_head)
    return Case(args, expected, note)


def _multi_head_cases(generator, hidden):
    cases = [_multi_head_case(generator, _int(generator, 1, 3), _int(generator, 2, 8),
                              4 * _int(generator, 1, 5), 2 * _int(generator, 1, 3))
             for _ in range(3 if hidden else 1)]
    cases.append(_multi_head_case(generator, 2, 5, 12, 3, note="3 heads of width 4"))
    if hidden:
        cases += [
            _multi_head_case(generator, 1, 6, 8, 1, note="a single head"),
            _multi_head_case(generator, 2, 1, 8, 4, note="a single token"),
            _multi_head_case(generator, 1, 7, 16, 8, note="8 heads of width 2"),
            _multi_head_case(generator, 2, 4, 8, 2, bias=False, note="zero biases"),
        ]
    return cases


def _multi_head(args, causal=True, project=True):
    """The layer written with plain ops (for diagnosing near-misses only)."""
    x, qkv_weight, qkv_bias, proj_weight, proj_bias, n_head = args
    batch, seq, width = x.shape
    q, k, v = (_split(t, n_head) for t in (x @ qkv_weight.T + qkv_bias).split(width, dim=-1))
    heads = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    merged = heads.transpose(1, 2).reshape(batch, seq, width)
    return merged @ proj_weight.T + proj_bias if project else merged


def _compare_multi_head(answer, case):
    problem = compare_tensors(answer, case.expected, name="the layer's output",
                              any_float_dtype=True, atol=1e-4, rtol=1e-4)
    if problem is None or not isinstance(answer, torch.Tensor):
        return problem
    if answer.shape == case.expected.shape and torch.isnan(answer).any():
        problem += " Some values are nan."
    elif _allclose(answer, _multi_head(case.args, causal=False), atol=1e-4):
        problem += " It matches the layer without the causal mask: the future leaks in."
    elif _allclose(answer, _multi_head(case.args, project=False), atol=1e-4):
        problem += " It matches the merged heads before the output projection."
    return problem


# --- 6. attention entropy per head ---------------------------------------------------------

def _entropy(weights):
    return torch.special.entr(weights.double()).sum(-1).mean(dim=(0, 2)).to(weights.dtype)


def _entropy_case(generator, batch, heads, seq, sharpness=1.0, causal=True, note=""):
    scores = _randn(generator, batch, heads, seq, seq) * sharpness
    if causal:
        scores = scores.masked_fill(~_reference_mask(seq), float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    return Case((weights,), _entropy(weights), note)


def _entropy_cases(generator, hidden):
    cases = [_entropy_case(generator, _int(generator, 1, 4), _int(generator, 1, 5),
                           _int(generator, 2, 9)) for _ in range(3 if hidden else 1)]
    cases.append(_entropy_case(generator, 2, 3, 6, note="causal weights (exact zeros)"))
    if hidden:
        uniform = torch.full((1, 2, 4, 4), 0.25)
        cases += [
            _entropy_case(generator, 2, 2, 5, causal=False, note="no mask"),
            _entropy_case(generator, 1, 4, 6, sharpness=30.0, note="very peaked weights"),
            Case((uniform,), _entropy(uniform), "uniform weights over 4 keys (ln 4 each)"),
            _entropy_case(generator, 3, 2, 1, note="a single token (entropy 0)"),
        ]
    return cases


def _compare_entropy(answer, case):
    problem = compare_tensors(answer, case.expected, name="the entropy tensor",
                              any_float_dtype=True, atol=1e-5, rtol=1e-4)
    if problem is None or not isinstance(answer, torch.Tensor):
        return problem
    weights = case.args[0]
    if answer.shape == case.expected.shape and torch.isnan(answer).any():
        problem += (" Some values are nan: a masked key has weight exactly 0, and 0 * log 0 "
                    "is nan in floating point, while the entropy counts it as 0.")
    elif answer.shape == case.expected.shape and _allclose(answer, case.expected / math.log(2)):
        problem += " Those are bits (log base 2); the task asks for nats (natural log)."
    elif answer.shape == case.expected.shape and _allclose(
            answer, torch.special.entr(weights.double()).sum(-1).sum(dim=(0, 2))):
        problem += " That is a sum over the batch and the queries; the task asks for the mean."
    elif answer.shape != case.expected.shape:
        problem += (" Average over the batch and over the queries, keeping one number per "
                    f"head; the weights came shaped {tuple(weights.shape)}.")
    return problem


EXERCISES = [
    Exercise("attention.weights", "attention_weights", 2, "Attention weights",
             _weights_cases, _compare_weights, forbidden=OFF_LIMITS,
             forbidden_ops=ATTENTION_KERNELS,
             hint="Scores are q @ k.transpose(-2, -1): one row per query, one column per key. "
                  "Divide by sqrt(d), the width of q, then softmax along the last dimension."),
    Exercise("attention.causal_mask", "causal_mask", 2, "The causal mask",
             _mask_cases, _compare_mask, forbidden=OFF_LIMITS + TRIANGLES,
             forbidden_ops=ATTENTION_KERNELS + TRIANGLE_KERNELS,
             hint="Query i may look at key j exactly when j <= i. Compare a column of "
                  "positions with a row of positions (torch.arange and broadcasting)."),
    Exercise("attention.causal", "causal_attention", 2, "Causal single-head attention",
             _causal_cases, _compare_causal, forbidden=OFF_LIMITS,
             forbidden_ops=ATTENTION_KERNELS,
             hint="Scores q @ k^T / sqrt(d); scores.masked_fill(~mask, float('-inf')) where the "
                  "mask is False; softmax along the keys; then the weights @ v."),
    Exercise("attention.split_heads", "split_heads", 2, "Split the width into heads",
             _split_cases, _compare_split, forbidden=OFF_LIMITS,
             hint="view (B, T, d_model) as (B, T, n_head, head_dim): each position's vector "
                  "cut into n_head slices; then transpose dimensions 1 and 2."),
    Exercise("attention.multi_head", "multi_head_attention", 3,
             "Multi-head causal attention from weight matrices",
             _multi_head_cases, _compare_multi_head, forbidden=OFF_LIMITS,
             forbidden_ops=ATTENTION_KERNELS,
             hint="qkv = x @ qkv_weight.T + qkv_bias is (B, T, 3 * d_model); cut it into q, k, v "
                  "along the last dimension (d_model each); split each into heads; causal "
                  "attention per head; put the heads back side by side (transpose, then "
                  "reshape to (B, T, d_model)); then the output projection."),
    Exercise("attention.entropy", "attention_entropy", 2, "Stretch: attention entropy per head",
             _entropy_cases, _compare_entropy, forbidden=OFF_LIMITS + ENTROPY_OPS,
             forbidden_ops=("special_entr",),
             hint="Per row: H = -sum_j w_j ln w_j, where a term with w_j = 0 counts as 0 "
                  "(choose 0 instead of the product there). Then average over the batch "
                  "and the queries, so that one number per head is left."),
]

ASSIGNMENT = Assignment("05_attention", "Exercises 05: attention", SETUP, EXERCISES)
