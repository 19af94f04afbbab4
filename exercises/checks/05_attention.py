"""The checks of exercise notebook 05 (attention): instant and hidden cases.

Every expected value is computed before the learner's function runs, from PyTorch's own ops
or from a plainer computation:

- attention weights: torch.softmax of the scaled scores;
- the causal mask: a double loop over (query, key) pairs, each query at its absolute position;
- causal attention: F.scaled_dot_product_attention with that mask passed in;
- the grouped split of a fused qkv output: plain slicing, one head at a time;
- multi-head attention with earlier keys and values: `llmkit.model.attention.CausalSelfAttention`
  run on the whole sequence (earlier tokens and new ones), keeping the new tokens' rows;
- the entropy: torch.special.entr.

While the learner's function runs, llmkit's attention code, PyTorch's fused attention (through
any route: the kernels are watched) and `nn.MultiheadAttention` are off limits; for the mask,
so are the triangle operators (`torch.tril`, `x.tril()`, ...); for the entropy, `entr`, `xlogy`
and `Categorical`.

A task earns its points only when every hidden case passes, so the hidden cases are built to
catch the usual slips: a top-left mask (as in the lesson, where queries and keys were the same
positions) fails every case with fewer queries than keys; a sliding window one key too wide or
too narrow fails every windowed case; heads split without moving them before the positions
fail every split case (each has two or more positions and heads, and their numbers differ);
forgetting the earlier keys fails every case that has some.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from llmkit.grading.exercise import Assignment, Case, Exercise, compare_tensors, describe_type
from llmkit.grading.exercise import random_int as _int, random_normal as _randn
from llmkit.model.attention import CausalSelfAttention
from llmkit.model.config import GPTConfig

SETUP = "import math\nimport torch\nfrom llmkit.grading import check\n"

LLMKIT_ATTENTION = tuple(f"llmkit.model.attention.{name}" for name in (
    "masked_attention", "causal_mask", "CausalSelfAttention",
))
FUSED_ATTENTION = ("torch.nn.functional.scaled_dot_product_attention",
                   "torch._C._nn.scaled_dot_product_attention",
                   "torch.nn.MultiheadAttention",
                   "torch.nn.functional.multi_head_attention_forward")
TRIANGLES = ("torch.tril", "torch.triu", "torch.tril_indices", "torch.triu_indices")
ENTROPY_PIECES = ("torch.special.entr", "torch.xlogy", "torch.special.xlogy",
                  "torch.distributions.Categorical",
                  "torch.distributions.categorical.Categorical")
OFF_LIMITS = LLMKIT_ATTENTION + FUSED_ATTENTION
# The fused attention kernels, whatever route reaches them (the CPU one is the first).
ATTENTION_KERNELS = ("_scaled_dot_product_flash_attention_for_cpu",
                     "_scaled_dot_product_flash_attention",
                     "_scaled_dot_product_efficient_attention",
                     "_scaled_dot_product_cudnn_attention", "_native_multi_head_attention")
TRIANGLE_KERNELS = ("tril", "triu", "tril_indices", "triu_indices")
ENTROPY_KERNELS = ("special_entr", "xlogy", "special_xlogy")


def _batch(generator) -> tuple[int, ...]:
    """Leading dimensions: none, (B,) or (B, H)."""
    return tuple(_int(generator, 1, 4) for _ in range(_int(generator, 0, 3)))


def _allclose(answer, other, atol=1e-5, rtol=1e-4) -> bool:
    return (isinstance(answer, torch.Tensor) and isinstance(other, torch.Tensor)
            and answer.shape == other.shape and answer.is_floating_point()
            and torch.allclose(answer.double(), other.double(), atol=atol, rtol=rtol))


# --- 1. attention weights (the warm-up: the lesson's formula) -----------------------------

def _weights(q, k):
    return torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1)


def _weights_case(generator, lead, t, s, d, note="", dtype=torch.float32):
    q, k = _randn(generator, *lead, t, d, dtype=dtype), _randn(generator, *lead, s, d, dtype=dtype)
    return Case((q, k), _weights(q, k), note)


def _weights_cases(generator, hidden):
    cases = [_weights_case(generator, (2, 3), 3, 7, 8, "more keys (7) than queries (3)"),
             _weights_case(generator, (2,), 5, 5, 64, "heads 64 wide")]
    if hidden:
        for _ in range(3):
            t = _int(generator, 2, 8)
            cases.append(_weights_case(generator, _batch(generator), t, t + _int(generator, 0, 4),
                                       _int(generator, 4, 17)))
        cases += [
            _weights_case(generator, (2,), 4, 4, 256, "heads 256 wide"),
            _weights_case(generator, (3,), 5, 6, 6, "a float64 input", torch.float64),
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
    elif _allclose(answer, torch.softmax(scores / math.sqrt(q.shape[-1]), dim=-2)):
        problem += " Each column sums to 1: the softmax runs over the keys, the last dimension."
    return problem


# --- 2. the causal mask, with queries at the end and an optional sliding window ------------

def _reference_mask(n_queries: int, n_keys: int, window: int | None = None) -> torch.Tensor:
    """Query i sits at position n_keys - n_queries + i; it sees key j at j <= that position,
    and with a window only the `window` latest such keys (itself included)."""
    offset = n_keys - n_queries
    rows = []
    for i in range(n_queries):
        position = offset + i
        rows.append([j <= position and (window is None or j > position - window)
                     for j in range(n_keys)])
    return torch.tensor(rows, dtype=torch.bool).reshape(n_queries, n_keys)


def _mask_case(n_queries, n_keys, window=None, note=""):
    text = f"n_queries = {n_queries}, n_keys = {n_keys}, window = {window}"
    return Case((n_queries, n_keys, window), _reference_mask(n_queries, n_keys, window),
                f"{text} ({note})" if note else text)


def _mask_cases(generator, hidden):
    cases = [_mask_case(4, 4, note="as many queries as keys"),
             _mask_case(2, 5, note="2 new queries after 3 earlier positions"),
             _mask_case(5, 7, 3, note="a window of 3 keys")]
    if not hidden:
        return cases
    for _ in range(2):
        t = _int(generator, 2, 7)
        cases.append(_mask_case(t, t + _int(generator, 1, 6)))
    t = _int(generator, 3, 8)
    s = t + _int(generator, 1, 5)
    cases += [
        _mask_case(t, s, _int(generator, 2, t), "a window"),
        _mask_case(1, 6, note="one new query: it sees every key"),
        _mask_case(1, 6, 2, "one new query, a window of 2"),
        _mask_case(6, 9, 1, "a window of 1: each query sees only itself"),
        _mask_case(3, 5, 9, "a window wider than every row"),
        _mask_case(16, 16, 5, "16 positions, a window of 5"),
    ]
    return cases


def _compare_mask(answer, case):
    problem = compare_tensors(answer, case.expected, name="the mask")
    if problem is None or not isinstance(answer, torch.Tensor):
        return problem
    n_queries, n_keys, window = case.args
    if answer.shape == case.expected.shape and answer.dtype != torch.bool:
        return problem + " Comparisons such as a >= b give a bool tensor."
    if answer.shape != case.expected.shape or answer.dtype != torch.bool:
        return problem
    top_left = torch.tensor([[j <= i and (window is None or j > i - window)
                              for j in range(n_keys)] for i in range(n_queries)],
                            dtype=torch.bool).reshape(n_queries, n_keys)
    if torch.equal(answer, top_left):
        problem += (" It is aligned at the top left, as if the queries were the first "
                    f"{n_queries} positions; they are the last {n_queries} of the {n_keys}.")
    elif window is not None and torch.equal(answer, _reference_mask(n_queries, n_keys, window + 1)):
        problem += (f" Each query sees {window + 1} keys; the window holds {window}, itself "
                    "included.")
    elif window is not None and window > 1 and torch.equal(
            answer, _reference_mask(n_queries, n_keys, window - 1)):
        problem += (f" Each query sees {window - 1} keys; the window holds {window}, itself "
                    "included.")
    elif window is not None and torch.equal(answer, _reference_mask(n_queries, n_keys)):
        problem += " The window is missing: a query sees only its `window` latest keys."
    elif n_queries == n_keys and torch.equal(answer, case.expected.T):
        problem += (" It looks transposed: row i is the query at position i, and it may "
                    "look at the keys in columns 0..i.")
    return problem


# --- 3. causal single-head attention, the queries after earlier positions ------------------

def _causal_case(generator, lead, t, s, d, d_v=None, note="", dtype=torch.float32):
    q = _randn(generator, *lead, t, d, dtype=dtype)
    k = _randn(generator, *lead, s, d, dtype=dtype)
    v = _randn(generator, *lead, s, d if d_v is None else d_v, dtype=dtype)
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=_reference_mask(t, s))
    return Case((q, k, v), expected, note or f"{t} queries, {s} keys")


def _causal_cases(generator, hidden):
    cases = [_causal_case(generator, (2,), 6, 6, 4, 3, "6 queries and keys, values narrower (3)"),
             _causal_case(generator, (2, 2), 3, 7, 8, note="3 new queries after 4 earlier keys")]
    if hidden:
        for _ in range(3):
            t = _int(generator, 2, 8)
            cases.append(_causal_case(generator, _batch(generator), t, t + _int(generator, 1, 6),
                                      _int(generator, 2, 17)))
        cases += [
            _causal_case(generator, (), 1, 5, 6, note="one new query after 4 keys"),
            _causal_case(generator, (2, 2), 5, 9, 64, note="heads 64 wide, 4 earlier keys"),
            _causal_case(generator, (1,), 5, 5, 8, note="a float64 input", dtype=torch.float64),
        ]
    return cases


def _compare_causal(answer, case):
    problem = compare_tensors(answer, case.expected, name="the attention output",
                              any_float_dtype=True, atol=1e-5, rtol=1e-4)
    if problem is None or not isinstance(answer, torch.Tensor):
        return problem
    q, k, v = case.args
    t, s = q.shape[-2], k.shape[-2]
    if answer.shape == case.expected.shape and torch.isnan(answer).any():
        return problem + " Some values are nan: does some row have every score at -inf?"
    top_left = torch.ones(t, s, dtype=torch.bool).tril()
    if t < s and _allclose(answer, F.scaled_dot_product_attention(q, k, v, attn_mask=top_left)):
        problem += (" It matches a mask aligned at the top left: the queries are the last "
                    f"{t} of the {s} positions, so query i sits at position {s - t} + i.")
    elif _allclose(answer, F.scaled_dot_product_attention(q, k, v)):
        problem += (" It matches attention without a mask: every position sees the future. "
                    "Mask the scores before the softmax.")
    elif answer.shape == case.expected.shape:
        weights = _weights(q, k) * _reference_mask(t, s)
        if _allclose(answer, weights @ v):
            problem += (" It looks like the weights were masked after the softmax, so the "
                        "rows no longer sum to 1: set the scores to -inf before it.")
    return problem


# --- 4. the fused qkv output, split into heads (grouped-query layout) ----------------------

def _split_reference(qkv, n_head, n_kv_head):
    """Head by head: slice the channels of each head and stack the heads before T."""
    head_dim = qkv.shape[-1] // (n_head + 2 * n_kv_head)
    heads = [qkv[:, :, h * head_dim:(h + 1) * head_dim]
             for h in range(n_head + 2 * n_kv_head)]
    q = torch.stack(heads[:n_head], dim=1)
    k = torch.stack(heads[n_head:n_head + n_kv_head], dim=1)
    v = torch.stack(heads[n_head + n_kv_head:], dim=1)
    return q, k, v


def _split_case(generator, batch, seq, n_head, n_kv_head, head_dim, note=""):
    qkv = _randn(generator, batch, seq, (n_head + 2 * n_kv_head) * head_dim)
    text = (f"qkv of shape {tuple(qkv.shape)}, n_head = {n_head}, n_kv_head = {n_kv_head}"
            + (f" ({note})" if note else ""))
    return Case((qkv, n_head, n_kv_head), _split_reference(qkv, n_head, n_kv_head), text)


def _split_cases(generator, hidden):
    # Every case has two or more positions and heads, and as many positions as no head
    # count, so splitting without moving the heads before the positions fails each one.
    cases = [_split_case(generator, 2, 5, 4, 4, 3, "as many key/value heads as query heads"),
             _split_case(generator, 1, 3, 4, 2, 2, "2 key/value heads for 4 query heads")]
    if not hidden:
        return cases
    for _ in range(3):
        n_kv = _int(generator, 1, 4)
        n_head = n_kv * _int(generator, 2, 4)
        seq = n_head + _int(generator, 1, 4)
        cases.append(_split_case(generator, _int(generator, 1, 4), seq, n_head, n_kv,
                                 _int(generator, 2, 6)))
    cases += [
        _split_case(generator, 2, 7, 6, 1, 4, "one key/value head shared by all 6"),
        _split_case(generator, 1, 2, 3, 3, 5, "two positions, three heads"),
        _split_case(generator, 3, 6, 2, 2, 8, "two heads of width 8"),
    ]
    return cases


def _compare_split(answer, case):
    if not isinstance(answer, (tuple, list)) or len(answer) != 3:
        return ("split_qkv should return three tensors (q, k, v), but it returned "
                f"{describe_type(answer)}.")
    qkv, n_head, n_kv_head = case.args
    for name, got, expected in zip("qkv", answer, case.expected):
        problem = compare_tensors(got, expected, name=name, exact=True)
        if problem is None:
            continue
        if isinstance(got, torch.Tensor):
            batch, seq, _ = qkv.shape
            if got.shape == (batch, seq) + expected.shape[1:2] + expected.shape[3:]:
                problem += (" That is (B, T, heads, head_dim): the heads go before the "
                            "positions, (B, heads, T, head_dim).")
            elif got.shape == expected.shape:
                problem += (" Reshaping straight to (B, heads, T, head_dim) mixes positions "
                            "into heads: cut each position's channels into heads first.")
        return problem
    return None


# --- 5. multi-head causal attention after earlier tokens -----------------------------------

def _multi_head_case(generator, batch, past, seq, d_model, n_head, bias=True, note=""):
    config = GPTConfig(vocab_size=8, context_length=past + seq, n_layer=1, n_head=n_head,
                       d_model=d_model, bias=bias)
    layer = CausalSelfAttention(config)
    weights = {name: _randn(generator, *p.shape) * 0.5 for name, p in layer.state_dict().items()}
    layer.load_state_dict(weights)
    layer.eval()
    earlier, x = _randn(generator, batch, past, d_model), _randn(generator, batch, seq, d_model)
    with torch.no_grad():
        expected = layer(torch.cat([earlier, x], dim=1))[:, past:]
    qkv_bias = weights.get("qkv.bias", torch.zeros(3 * d_model))
    head_dim = d_model // n_head
    fused = earlier @ weights["qkv.weight"].T + qkv_bias
    past_k, past_v = (part.reshape(batch, past, n_head, head_dim).permute(0, 2, 1, 3).contiguous()
                      for part in fused.split(d_model, dim=-1)[1:])
    args = (x, weights["qkv.weight"], qkv_bias, weights["proj.weight"],
            weights.get("proj.bias", torch.zeros(d_model)), n_head, past_k, past_v)
    text = f"{past} earlier tokens, {seq} new, {n_head} heads" + (f", {note}" if note else "")
    return Case(args, expected, text)


def _multi_head_cases(generator, hidden):
    cases = [_multi_head_case(generator, 2, 0, 5, 12, 3, note="no earlier tokens"),
             _multi_head_case(generator, 1, 4, 3, 8, 2)]
    if hidden:
        for _ in range(2):
            n_head = _int(generator, 2, 5)
            cases.append(_multi_head_case(generator, _int(generator, 1, 3), _int(generator, 2, 7),
                                          _int(generator, 2, 6), n_head * _int(generator, 2, 5),
                                          n_head))
        cases += [
            _multi_head_case(generator, 2, 6, 1, 8, 4, note="one new token"),
            _multi_head_case(generator, 1, 3, 7, 16, 8, note="heads of width 2"),
            _multi_head_case(generator, 2, 5, 4, 8, 2, bias=False, note="zero biases"),
        ]
    return cases


def _multi_head_variant(args, *, causal=True, top_left=False, with_past=True, project=True,
                        past_after=False):
    """The layer written with plain ops, with one of the usual slips switched on (for
    diagnosing near-misses only)."""
    x, qkv_weight, qkv_bias, proj_weight, proj_bias, n_head, past_k, past_v = args
    batch, seq, width = x.shape
    q, k, v = ((x @ qkv_weight.T + qkv_bias).split(width, dim=-1))
    q, k, v = (t.reshape(batch, seq, n_head, -1).transpose(1, 2) for t in (q, k, v))
    if with_past:
        pair = ((k, past_k), (v, past_v)) if past_after else ((past_k, k), (past_v, v))
        k, v = (torch.cat(p, dim=2) for p in pair)
    s = k.shape[2]
    mask = (torch.ones(seq, s, dtype=torch.bool).tril() if top_left else
            _reference_mask(seq, s) if causal else torch.ones(seq, s, dtype=torch.bool))
    heads = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    merged = heads.transpose(1, 2).reshape(batch, seq, width)
    return merged @ proj_weight.T + proj_bias if project else merged


def _compare_multi_head(answer, case):
    problem = compare_tensors(answer, case.expected, name="the layer's output",
                              any_float_dtype=True, atol=1e-4, rtol=1e-4)
    if problem is None or not isinstance(answer, torch.Tensor):
        return problem
    if answer.shape == case.expected.shape and torch.isnan(answer).any():
        return problem + " Some values are nan."
    slips = [(dict(with_past=False), " It matches attention over the new tokens alone: the "
              "earlier keys and values belong in front of the new ones."),
             (dict(top_left=True), " It matches a mask aligned at the top left: the new "
              "queries are the last positions of the sequence."),
             (dict(past_after=True), " It matches the earlier keys placed after the new "
              "ones; they come first (positions 0, 1, ... in order)."),
             (dict(causal=False), " It matches the layer without the causal mask: the "
              "future leaks in."),
             (dict(project=False), " It matches the merged heads before the output "
              "projection.")]
    for options, message in slips:
        if _allclose(answer, _multi_head_variant(case.args, **options), atol=1e-4):
            return problem + message
    return problem


# --- 6. attention entropy per head ---------------------------------------------------------

def _entropy(weights):
    return torch.special.entr(weights.double()).sum(-1).mean(dim=(0, 2)).to(weights.dtype)


def _entropy_case(generator, batch, heads, seq, sharpness=1.0, causal=True, note=""):
    scores = _randn(generator, batch, heads, seq, seq) * sharpness
    if causal:
        scores = scores.masked_fill(~_reference_mask(seq, seq), float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    return Case((weights,), _entropy(weights), note)


def _entropy_cases(generator, hidden):
    cases = [_entropy_case(generator, 2, 3, 6, note="causal weights (exact zeros)"),
             _entropy_case(generator, 3, 2, 4, causal=False, note="no mask, batch of 3")]
    if hidden:
        uniform = torch.full((1, 2, 4, 4), 0.25)
        cases += [_entropy_case(generator, _int(generator, 2, 4), _int(generator, 2, 5),
                                _int(generator, 2, 9)) for _ in range(2)]
        cases += [
            _entropy_case(generator, 1, 4, 6, sharpness=30.0, note="very peaked weights"),
            Case((uniform,), _entropy(uniform), "uniform weights over 4 keys (ln 4 each)"),
            _entropy_case(generator, 3, 2, 5, note="causal weights, batch of 3"),
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
    Exercise("attention.weights", "attention_weights", 2, "Warm-up: attention weights",
             _weights_cases, _compare_weights, forbidden=OFF_LIMITS,
             forbidden_ops=ATTENTION_KERNELS,
             hint="One score per (query, key) pair, shrunk by the square root of the width "
                  "so that wide heads do not saturate the softmax; each query's weights are "
                  "spread over the keys."),
    Exercise("attention.causal_mask", "causal_mask", 2,
             "The causal mask, after earlier positions and with a window",
             _mask_cases, _compare_mask, forbidden=OFF_LIMITS + TRIANGLES,
             forbidden_ops=ATTENTION_KERNELS + TRIANGLE_KERNELS,
             hint="Work with absolute positions: the keys are positions 0 .. n_keys - 1 and the "
                  "queries the last n_queries of them. A query sees a key at or before its own "
                  "position; with a window, it sees exactly `window` keys at most, its own "
                  "position being one of them."),
    Exercise("attention.causal", "causal_attention", 2,
             "Causal single-head attention after earlier positions",
             _causal_cases, _compare_causal, forbidden=OFF_LIMITS,
             forbidden_ops=ATTENTION_KERNELS,
             hint="The mask has one row per query and one column per key, and the queries are "
                  "the last positions, not the first. Masked scores must be excluded before "
                  "the softmax, so that each row's weights still sum to 1."),
    Exercise("attention.split_qkv", "split_qkv", 2,
             "A fused qkv output, split into grouped heads",
             _split_cases, _compare_split, forbidden=OFF_LIMITS,
             hint="Every head, query or key or value, is head_dim consecutive channels; "
                  "there are n_head + 2 * n_kv_head of them. Cut each position's channels into "
                  "heads first, then bring the head dimension before the positions (only then "
                  "is row t of a head position t)."),
    Exercise("attention.multi_head", "multi_head_attention", 3,
             "Multi-head causal attention after earlier tokens",
             _multi_head_cases, _compare_multi_head, forbidden=OFF_LIMITS,
             forbidden_ops=ATTENTION_KERNELS,
             hint="The new tokens' keys and values join the earlier ones, after them, before "
                  "anyone attends; the new queries are then the last positions of the "
                  "sequence, and the mask must say so. With no earlier tokens this is the "
                  "lesson's layer."),
    Exercise("attention.entropy", "attention_entropy", 2, "Stretch: attention entropy per head",
             _entropy_cases, _compare_entropy, forbidden=OFF_LIMITS + ENTROPY_PIECES,
             forbidden_ops=ENTROPY_KERNELS,
             hint="A term with weight exactly 0 counts as 0, but computing it as 0 * log 0 "
                  "gives nan: decide per entry before multiplying. Then one number per head: "
                  "the mean over the batch and the queries, in nats."),
]

ASSIGNMENT = Assignment("05_attention", "Exercises 05: attention", SETUP, EXERCISES)
