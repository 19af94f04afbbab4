"""The checks of exercise notebook 04 (neurons and layers): instant and hidden cases.

Each task asks for a step past lesson 04's code. Every expected value is computed before the
learner's function runs, from PyTorch's own ops or a plainer computation:

    softmax (any dim, -inf allowed)     torch.nn.functional.softmax
    layer_norm (trailing dims, bias?)   torch.nn.functional.layer_norm with normalized_shape
    context_windows (documents, pads)   a plain Python loop over each document
    cross_entropy (..., V), ignored     torch.nn.functional.cross_entropy on the flattened
                                        positions, ignore_index=-100, in float64
    gelu_backward                       autograd through F.gelu(approximate="tanh"), float64
    layer_norm_backward (stretch)       autograd through F.layer_norm, float64

A task earns its points only when every hidden case passes, so the hidden cases hold the
inputs where a near-miss shows: logits in the thousands, and rows whose scales differ so much
that one maximum for the whole tensor underflows some rows; a softmax over a dimension other
than the last; layer norm over two or three trailing dimensions and with no bias; documents
shorter than the context and an empty one; targets marked -100 in every cross-entropy case
but one; inputs where the tanh saturates; vectors inside (B, T, d) batches.

While a task runs, `llmkit.mlp_lm` and the ready-made op that does the task are off limits.
They are caught at the operator, whatever Python route reached them (`x.softmax(-1)`,
`z.log_softmax(-1)`, `z.logsumexp(-1)`, `F.layer_norm`, `F.gelu`), and autograd is off limits
in the two backward tasks.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from llmkit.grading.exercise import (Assignment, Case, Exercise, compare_numbers,
                                     compare_tensors, describe_type)
from llmkit.grading.exercise import random_int as _int, random_normal as _randn

SETUP = "import math\nimport torch\nfrom llmkit.grading import check\n"

MLP_LM = ("llmkit.mlp_lm",)  # the lesson's reference module, every function in it
# The ATen kernels behind each finished op, caught whatever Python route reached them.
SOFTMAX_KERNELS = ("_softmax", "_log_softmax", "logsumexp", "_safe_softmax")
CROSS_ENTROPY_KERNELS = SOFTMAX_KERNELS + ("nll_loss_forward", "nll_loss2d_forward")
LAYER_NORM_KERNELS = ("native_layer_norm", "native_layer_norm_backward", "native_group_norm",
                      "_fused_rms_norm", "native_batch_norm", "_native_batch_norm_legit",
                      "_native_batch_norm_legit_no_training")
GELU_KERNELS = ("gelu", "gelu_backward")

SOFTMAX_OPS = ("torch.nn.functional.softmax", "torch.softmax", "torch.special.softmax",
               "torch.nn.Softmax", "torch.nn.functional.softmin", "torch.nn.Softmin",
               "torch.nn.functional.log_softmax", "torch.log_softmax",
               "torch.special.log_softmax", "torch.logsumexp", "torch.special.logsumexp")
CROSS_ENTROPY_OPS = SOFTMAX_OPS + ("torch.nn.functional.cross_entropy",
                                   "torch.nn.functional.nll_loss", "torch.nn.CrossEntropyLoss",
                                   "torch.nn.NLLLoss")
LAYER_NORM_OPS = ("torch.nn.functional.layer_norm", "torch.layer_norm",
                  "torch.native_layer_norm", "torch.nn.LayerNorm",
                  "torch.nn.functional.group_norm", "torch.nn.functional.rms_norm",
                  "llmkit.model.layers.RMSNorm")
GELU_OPS = ("torch.nn.functional.gelu", "torch.nn.GELU")
AUTOGRAD_OPS = ("torch.autograd.grad", "torch.autograd.backward",
                "torch.autograd.functional", "torch.func", "torch.autograd.forward_ad")

IGNORE = -100


def _shape(generator) -> tuple[int, ...]:
    """A random (N, d) or (B, T, d) shape, small enough to print."""
    if _int(generator, 0, 2):
        return (_int(generator, 2, 6), _int(generator, 2, 12))
    return (_int(generator, 1, 4), _int(generator, 2, 5), _int(generator, 2, 10))


# --- 1. a stable softmax over any dimension ------------------------------------------------

def _softmax_case(logits, dim, note=""):
    return Case((logits, dim), F.softmax(logits, dim=dim), note)


def _masked(generator, logits, dim):
    """logits with about a third of the entries set to -inf, never a whole slice along dim."""
    drop = torch.rand(logits.shape, generator=generator) < 0.35
    scores = torch.rand(logits.shape, generator=generator)
    keep = scores == scores.amax(dim=dim, keepdim=True)       # one finite logit per slice
    return logits.masked_fill(drop & ~keep, -float("inf"))


def _softmax_cases(generator, hidden):
    far_apart = _randn(generator, 4, 6) * 3 + torch.tensor([[1000.0], [0.0], [-1000.0], [40.0]])
    cases = [_softmax_case(_randn(generator, 3, 6) * 300, -1, "logits in the hundreds"),
             _softmax_case(far_apart.T.contiguous(), 0,
                           "dim=0: each column is one distribution, at very different scales"),
             _softmax_case(_masked(generator, _randn(generator, 2, 3, 5), 1), 1,
                           "dim=1 of a (B, T, V) tensor, some logits -inf")]
    if not hidden:
        return cases
    for _ in range(2):
        shape = _shape(generator)
        dim = _int(generator, -len(shape), len(shape))
        cases.append(_softmax_case(_masked(generator, _randn(generator, *shape) * 4, dim), dim))
    cases += [
        _softmax_case(far_apart, -1, "rows at very different scales (about +1000, 0, -1000)"),
        _softmax_case(torch.full((2, 5), 1000.0), 1, "every logit equal to 1000"),
        _softmax_case(_randn(generator, 4, 7) - 2000.0, -1, "logits all near -2000"),
        _softmax_case(torch.tensor([[0.0, -math.inf, -math.inf], [3.0, 1.0, -math.inf]]), -1,
                      "a row with one finite logit"),
        _softmax_case(_randn(generator, 2, 3, 8, dtype=torch.float64) * 50, 0,
                      "a float64 input, dim=0"),
    ]
    return cases


def _compare_softmax(answer, case):
    logits, dim = case.args
    problem = compare_tensors(answer, case.expected, name="softmax(logits)",
                              any_float_dtype=True, atol=1e-6, rtol=1e-4)
    if problem and isinstance(answer, torch.Tensor) and answer.shape == case.expected.shape:
        if torch.isnan(answer).any():
            problem += (" Some values are nan: an exp overflowed to inf, or every exp of a "
                        "slice underflowed to 0 (0 / 0).")
        elif logits.dim() > 1 and dim not in (-1, logits.dim() - 1) and torch.allclose(
                answer.double(), F.softmax(logits.double(), dim=-1), atol=1e-6):
            problem += f" That is a softmax over the last dimension; this case asks for dim={dim}."
    return problem


# --- 2. layer norm over several trailing dimensions, bias optional ------------------------

def _ln_case(generator, shape, n_normed, eps=1e-5, bias=True, note="", x=None):
    if x is None:
        x = _randn(generator, *shape) * _int(generator, 1, 6) + _int(generator, -3, 4)
    normed = x.shape[len(x.shape) - n_normed:]
    weight = _randn(generator, *normed)
    b = _randn(generator, *normed) if bias else None
    expected = F.layer_norm(x, normed, weight, b, eps)
    return Case((x, weight, b, eps), expected, note)


def _layer_norm_cases(generator, hidden):
    cases = [_ln_case(generator, (3, 6), 1, note="(3, 6) over the last dimension"),
             _ln_case(generator, (2, 3, 4), 2, note="(2, 3, 4) over the last two dimensions"),
             _ln_case(generator, (4, 5), 1, 0.5, bias=False, note="no bias, a large eps (0.5)")]
    if not hidden:
        return cases
    for _ in range(2):
        shape = (_int(generator, 1, 4), _int(generator, 2, 5), _int(generator, 2, 6))
        cases.append(_ln_case(generator, shape, _int(generator, 2, 4)))
    cases += [
        _ln_case(generator, (2, 3, 5), 1, bias=False, note="no bias, (B, T, d)"),
        _ln_case(generator, None, 2, note="constant slices (variance 0)",
                 x=torch.full((2, 3, 4), 3.0)),
        _ln_case(generator, (4, 2), 1, note="vectors of only 2 features"),
        _ln_case(generator, (3, 2, 2, 3), 3, 1e-3, note="over the last three dimensions"),
    ]
    return cases


def _compare_layer_norm(answer, case):
    x, weight, bias, eps = case.args
    problem = compare_tensors(answer, case.expected, name="the normalised x",
                              any_float_dtype=True, atol=1e-4, rtol=1e-4)
    if problem and isinstance(answer, torch.Tensor) and answer.shape == case.expected.shape:
        dims = tuple(range(x.dim() - weight.dim(), x.dim()))
        shift = 0 if bias is None else bias
        if weight.dim() > 1:
            last = F.layer_norm(x, x.shape[-1:], None, None, eps) * weight + shift
            if torch.allclose(answer.double(), last.double(), atol=1e-4, rtol=1e-4):
                return problem + (f" Each vector was normalised along the last dimension "
                                  f"alone; this case normalises over the last {weight.dim()} "
                                  "dimensions together (the shape of weight).")
        mean = x.mean(dim=dims, keepdim=True)
        count = weight.numel()
        if count > 1:
            unbiased = ((x - mean) ** 2).sum(dim=dims, keepdim=True) / (count - 1)
            slip = (x - mean) / torch.sqrt(unbiased + eps) * weight + shift
            if torch.allclose(answer.double(), slip.double(), atol=1e-4, rtol=1e-4):
                return problem + " Your variance divides by n - 1; layer norm's divides by n."
    return problem


# --- 3. context windows within documents, padded at the start -------------------------------

def _windows_reference(documents, block_size, pad_id):
    rows, targets = [], []
    for document in documents:
        context = [pad_id] * block_size
        for token in document.tolist():
            rows.append(list(context))
            targets.append(token)
            context = context[1:] + [token]
    return (torch.tensor(rows, dtype=torch.long).reshape(len(rows), block_size),
            torch.tensor(targets, dtype=torch.long))


def _windows_case(generator, lengths, block_size, pad_id, note=""):
    documents = [torch.randint(1, 30, (n,), generator=generator) for n in lengths]
    return Case((documents, block_size, pad_id),
                _windows_reference(documents, block_size, pad_id), note)


def _windows_cases(generator, hidden):
    cases = [_windows_case(generator, [6, 0, 2], 3, 0, "three documents, one empty, one "
                                                       "shorter than block_size"),
             _windows_case(generator, [4], 2, 30, "one document, pad_id 30")]
    if not hidden:
        return cases
    for _ in range(3):
        lengths = [_int(generator, 1, 15) for _ in range(_int(generator, 2, 5))]
        cases.append(_windows_case(generator, lengths, _int(generator, 2, 6), 0))
    cases += [
        _windows_case(generator, [5, 0, 3], 2, 0, "an empty document between two others"),
        _windows_case(generator, [7, 4], 1, 0, "block_size 1"),
        _windows_case(generator, [1, 1, 9], 4, 31, "documents of one token"),
    ]
    return cases


def _compare_windows(answer, case):
    documents, block_size, pad_id = case.args
    if not isinstance(answer, (tuple, list)) or len(answer) != 2:
        return ("context_windows should return a pair (X, Y), but it returned "
                f"{describe_type(answer)}.")
    expected_x, expected_y = case.expected
    problem = compare_tensors(answer[1], expected_y, name="Y")
    if problem:
        if isinstance(answer[1], torch.Tensor) and answer[1].dim() == 1:
            total = sum(len(d) for d in documents)
            if len(answer[1]) == total - sum(min(len(d), block_size) for d in documents):
                problem += (" Every id of a document is a target, the first ones too: their "
                            "context is padded with pad_id.")
        return problem
    problem = compare_tensors(answer[0], expected_x, name="X")
    if problem and isinstance(answer[0], torch.Tensor) and answer[0].shape == expected_x.shape:
        x = answer[0]
        if block_size > 1 and torch.equal(x[:, -1], expected_y):
            problem += " Each window holds its own target; it should end just before it."
        else:
            whole = torch.cat(documents)
            flat_x, _ = _windows_reference([whole], block_size, pad_id)
            if torch.equal(x, flat_x):
                problem += (" The windows run across the end of a document into the next; "
                            "each document starts again from padding.")
    return problem


# --- 4. cross-entropy over (..., V) logits, with ignored targets ----------------------------

def _ce_case(logits, targets, note=""):
    expected = F.cross_entropy(logits.double().reshape(-1, logits.shape[-1]), targets.reshape(-1),
                               ignore_index=IGNORE).item()
    return Case((logits, targets), expected, note)


def _with_ignored(generator, targets, share=0.3):
    ignored = torch.rand(targets.shape, generator=generator) < share
    ignored.view(-1)[0] = False                       # at least one counted target
    ignored.view(-1)[-1] = targets.numel() > 1        # and at least one ignored
    return targets.masked_fill(ignored, IGNORE)


def _ce_cases(generator, hidden):
    logits = _randn(generator, 5, 6) * 100
    cases = [
        _ce_case(_randn(generator, 2, 4, 7) * 2,
                 _with_ignored(generator, torch.randint(0, 7, (2, 4), generator=generator)),
                 "(B, T, V) logits, some targets -100"),
        _ce_case(logits, _with_ignored(generator, logits.argmin(dim=1)),
                 "logits in the hundreds and unlikely targets, one of them -100"),
    ]
    if not hidden:
        return cases
    for _ in range(3):
        vocab_size = _int(generator, 2, 15)
        shape = (_int(generator, 2, 20),) if _int(generator, 0, 2) else (
            _int(generator, 1, 4), _int(generator, 2, 6))
        cases.append(_ce_case(_randn(generator, *shape, vocab_size) * 3, _with_ignored(
            generator, torch.randint(0, vocab_size, shape, generator=generator), 0.4)))
    wide = _randn(generator, 3, 5, 120)
    cases += [
        _ce_case(torch.tensor([[500.0, -500.0, 0.0], [1.0, 2.0, 3.0]]), torch.tensor([1, IGNORE]),
                 "one very confident, very wrong prediction, and an ignored row"),
        _ce_case(wide, _with_ignored(generator, torch.randint(0, 120, (3, 5), generator=generator),
                                     0.5), "a vocabulary of 120, half the targets -100"),
        _ce_case(torch.full((3, 4), 7.0), torch.tensor([0, 3, 3]),
                 "all logits equal, no target ignored (the loss is ln V)"),
    ]
    return cases


def _compare_cross_entropy(answer, case):
    logits, targets = case.args
    if isinstance(answer, torch.Tensor) and answer.numel() != 1:
        return (f"cross_entropy should return one number (the mean over the counted targets), "
                f"but it returned {describe_type(answer)}.")
    problem = compare_numbers(answer, case.expected, name="the cross-entropy")
    if not problem:
        return None
    counted = int((targets != IGNORE).sum())
    if counted < targets.numel() and compare_numbers(
            answer, case.expected * counted / targets.numel()) is None:
        problem += (" That is the sum over the counted targets divided by every position; "
                    "the ignored ones do not count in the mean either.")
    elif counted > 1 and compare_numbers(answer, case.expected * counted) is None:
        problem += " That is the sum over the targets; the task asks for the mean."
    return problem


# --- 5. the backward pass of GELU (tanh approximation) ------------------------------------

def _gelu_case(x, note=""):
    leaf = x.detach().clone().double().requires_grad_()
    dout = torch.linspace(-2.0, 3.0, x.numel(), dtype=torch.float64).reshape(x.shape)
    F.gelu(leaf, approximate="tanh").backward(dout)          # autograd is the reference
    return Case((x, dout.to(x.dtype)), leaf.grad.to(x.dtype), note)


def _gelu_cases(generator, hidden):
    cases = [_gelu_case(torch.linspace(-4, 4, 17), "inputs from -4 to 4"),
             _gelu_case(_randn(generator, 2, 3, 4) * 2, "a (2, 3, 4) input")]
    if not hidden:
        return cases
    cases += [_gelu_case(_randn(generator, *_shape(generator)) * 3) for _ in range(3)]
    cases += [
        _gelu_case(torch.tensor([-30.0, -6.0, 0.0, 6.0, 30.0]), "large inputs (tanh saturates)"),
        _gelu_case(_randn(generator, 6, dtype=torch.float64) * 2, "a float64 input"),
        _gelu_case(torch.linspace(-1.5, 1.5, 31).reshape(31, 1), "inputs near 0, one column"),
    ]
    return cases


def _compare_gelu(answer, case):
    x, dout = case.args
    problem = compare_tensors(answer, case.expected, name="dx", any_float_dtype=True,
                              atol=1e-5, rtol=1e-4)
    if problem and isinstance(answer, torch.Tensor) and answer.shape == case.expected.shape:
        got, xd, dd = answer.double(), x.double(), dout.double()
        leaf = xd.detach().clone().requires_grad_()
        F.gelu(leaf).backward(dd)                               # the exact (erf) GELU
        inner = (2 / torch.pi) ** 0.5 * (xd + 0.044715 * xd ** 3)
        if torch.allclose(got, leaf.grad, atol=1e-5, rtol=1e-4):
            problem += (" That is the slope of the exact (erf) GELU; this task asks for the "
                        "tanh approximation's.")
        elif torch.allclose(got, dd * 0.5 * (1 + torch.tanh(inner)), atol=1e-5, rtol=1e-4):
            problem += (" Only the first half of the product rule is there: x also appears "
                        "inside the tanh.")
        elif torch.allclose(got, case.expected.double() / dd.where(dd != 0, 1.0), atol=1e-5,
                            rtol=1e-4):
            problem += " That is GELU's slope alone; multiply it by the gradient that arrives."
    return problem


# --- 6. the backward pass of layer norm (stretch) ------------------------------------------

def _ln_backward_case(generator, shape, eps=1e-5, note=""):
    d = shape[-1]
    x = _randn(generator, *shape, dtype=torch.float64) * 2 + 1
    weight = _randn(generator, d, dtype=torch.float64)
    dout = _randn(generator, *shape, dtype=torch.float64)
    leaves = [t.clone().requires_grad_() for t in (x, weight, torch.zeros(d, dtype=torch.float64))]
    F.layer_norm(leaves[0], (d,), leaves[1], leaves[2], eps).backward(dout)
    return Case((x, weight, dout, eps), tuple(leaf.grad for leaf in leaves), note)


def _ln_backward_cases(generator, hidden):
    cases = [_ln_backward_case(generator, (4, 5), note="(4, 5)"),
             _ln_backward_case(generator, (2, 3, 6), note="a (2, 3, 6) batch")]
    if not hidden:
        return cases
    cases += [_ln_backward_case(generator, _shape(generator)) for _ in range(3)]
    cases += [_ln_backward_case(generator, (3, 4), 0.5, "a large eps (0.5)"),
              _ln_backward_case(generator, (2, 2, 2, 3), note="two batch dimensions")]
    return cases


def _compare_ln_backward(answer, case):
    x, weight, dout, eps = case.args
    if not isinstance(answer, (tuple, list)) or len(answer) != 3:
        return ("layer_norm_backward should return three tensors (dx, dweight, dbias), but it "
                f"returned {describe_type(answer)}.")
    for got, expected, name in zip(answer, case.expected, ("dx", "dweight", "dbias")):
        problem = compare_tensors(got, expected, name=name, any_float_dtype=True,
                                  atol=1e-6, rtol=1e-5)
        if not problem:
            continue
        if name == "dx" and isinstance(got, torch.Tensor) and got.shape == expected.shape:
            std = torch.sqrt(x.var(-1, unbiased=False, keepdim=True) + eps)
            if torch.allclose(got.double(), dout * weight / std, atol=1e-6, rtol=1e-5):
                problem += (" That treats the mean and the variance as constants; both depend "
                            "on every entry of the vector.")
        if name != "dx" and isinstance(got, torch.Tensor) and got.shape != expected.shape:
            problem += " It is summed over the whole batch: every leading dimension."
        return problem
    return None


EXERCISES = [
    Exercise("neurons.softmax", "softmax", 2, "A stable softmax over any dimension",
             _softmax_cases, _compare_softmax, forbidden=SOFTMAX_OPS + MLP_LM,
             forbidden_ops=SOFTMAX_KERNELS,
             hint="Subtracting a constant from every logit of one distribution changes nothing "
                  "in the result but can keep every exp finite and one of them at least 1. The "
                  "constant must be the same along `dim` (one per distribution, not one for the "
                  "whole tensor), and a -inf logit must come out as probability 0."),
    Exercise("neurons.layer_norm", "layer_norm", 2, "Layer norm over trailing dimensions",
             _layer_norm_cases, _compare_layer_norm, forbidden=LAYER_NORM_OPS + MLP_LM,
             forbidden_ops=LAYER_NORM_KERNELS,
             hint="The shape of weight says which dimensions form one vector: the last "
                  "weight.dim() of x. The mean and variance are taken over all of them at once "
                  "(the variance divides by their count, not count - 1); eps goes inside the "
                  "square root; no bias means no shift."),
    Exercise("neurons.windows", "context_windows", 2, "Context windows within documents",
             _windows_cases, _compare_windows, forbidden=MLP_LM,
             hint="Every id of every document is one target, the first ones too. A window is "
                  "the block_size ids just before its target, in the same document; what is "
                  "missing before the start of the document is pad_id. A window never reaches "
                  "into the previous document, and never holds its own target."),
    Exercise("neurons.cross_entropy", "cross_entropy", 2, "Cross-entropy with ignored targets",
             _ce_cases, _compare_cross_entropy,
             forbidden=CROSS_ENTROPY_OPS + MLP_LM, forbidden_ops=CROSS_ENTROPY_KERNELS,
             hint="Work with log-probabilities throughout: a probability that rounds to 0 "
                  "has no finite log. Take the targets -100 out before you use them as "
                  "indices, and out of the mean as well: it averages over the counted targets "
                  "only."),
    Exercise("neurons.gelu", "gelu_backward", 2, "The backward pass of GELU",
             _gelu_cases, _compare_gelu, forbidden=GELU_OPS + AUTOGRAD_OPS + MLP_LM,
             forbidden_ops=GELU_KERNELS,
             hint="GELU is x times something that depends on x: use the product rule, then the "
                  "chain rule through the tanh (tanh' = 1 - tanh^2) and through the cubic inside "
                  "it. The gradient that arrives multiplies the slope, entry by entry."),
    Exercise("neurons.layer_norm_backward", "layer_norm_backward", 3,
             "Stretch: the backward pass of layer norm",
             _ln_backward_cases, _compare_ln_backward,
             forbidden=LAYER_NORM_OPS + AUTOGRAD_OPS + MLP_LM, forbidden_ops=LAYER_NORM_KERNELS,
             hint="Every output of a vector depends on every input of it, through the mean and "
                  "the variance as well as directly: treating those two as constants is the "
                  "usual slip. Go backwards one step of the forward pass at a time, and sum "
                  "dweight and dbias over every vector of the batch."),
]

ASSIGNMENT = Assignment("04_neurons_and_layers", "Exercises 04: neurons and layers", SETUP,
                        EXERCISES)
