"""Exercise notebook 04's checks: the reference solutions pass every case; lesson 04's own code,
pasted as the answer, fails a hidden case of every task it fits (or is reported forbidden); the
usual wrong solutions fail a hidden case and the instant check; and each route the notebook
rules out is reported as forbidden.

The solutions, the lesson's code and the slips are written here by hand.
"""

import math

import pytest
import torch
import torch.nn.functional as F

from llmkit.grading import ASSIGNMENTS, check
from llmkit.grading.exercise import hidden_cases

from exercise_support import instant_cases, passed

EXERCISES = {exercise.id: exercise for exercise in ASSIGNMENTS["04_neurons_and_layers"].exercises}
SEEDS = [0, 1, 2]


# --- the reference solutions ------------------------------------------------------------------

def softmax(logits, dim=-1):
    exps = torch.exp(logits - logits.amax(dim=dim, keepdim=True))
    return exps / exps.sum(dim=dim, keepdim=True)


def layer_norm(x, weight, bias=None, eps=1e-5):
    dims = tuple(range(x.dim() - weight.dim(), x.dim()))
    mean = x.mean(dim=dims, keepdim=True)
    variance = ((x - mean) ** 2).mean(dim=dims, keepdim=True)
    out = (x - mean) / torch.sqrt(variance + eps) * weight
    return out if bias is None else out + bias


def context_windows(documents, block_size, pad_id):
    rows, targets = [], []
    for document in documents:
        padded = torch.cat([torch.full((block_size,), pad_id), document])
        for t in range(len(document)):
            rows.append(padded[t:t + block_size])
            targets.append(document[t])
    if not rows:
        return torch.zeros(0, block_size, dtype=torch.long), torch.zeros(0, dtype=torch.long)
    return torch.stack(rows), torch.stack(targets)


def cross_entropy(logits, targets):
    shifted = logits - logits.amax(dim=-1, keepdim=True)
    log_probs = shifted - torch.log(torch.exp(shifted).sum(dim=-1, keepdim=True))
    counted = targets != -100
    picked = log_probs.gather(-1, targets.clamp_min(0)[..., None])[..., 0]
    return -(picked * counted).sum() / counted.sum()


def gelu_backward(x, dout):
    c = math.sqrt(2 / math.pi)
    t = torch.tanh(c * (x + 0.044715 * x ** 3))
    slope = 0.5 * (1 + t) + 0.5 * x * (1 - t ** 2) * c * (1 + 3 * 0.044715 * x ** 2)
    return dout * slope


def layer_norm_backward(x, weight, dout, eps=1e-5):
    mean = x.mean(dim=-1, keepdim=True)
    std = torch.sqrt(((x - mean) ** 2).mean(dim=-1, keepdim=True) + eps)
    x_hat = (x - mean) / std
    d_hat = dout * weight
    dx = (d_hat - d_hat.mean(-1, keepdim=True)
          - x_hat * (d_hat * x_hat).mean(-1, keepdim=True)) / std
    leading = tuple(range(x.dim() - 1))
    return dx, (dout * x_hat).sum(dim=leading), dout.sum(dim=leading)


RIGHT = {"neurons.softmax": softmax, "neurons.layer_norm": layer_norm,
         "neurons.windows": context_windows, "neurons.cross_entropy": cross_entropy,
         "neurons.gelu": gelu_backward, "neurons.layer_norm_backward": layer_norm_backward}


# --- lesson 04's own code, pasted into each task it fits --------------------------------------

def lesson_softmax(logits, dim=-1):                      # the lesson calls torch's softmax
    return torch.softmax(logits, dim=dim)


def lesson_layer_norm(x, weight, bias, eps=1e-5):
    mean = x.mean(dim=-1, keepdim=True)
    variance = ((x - mean) ** 2).mean(dim=-1, keepdim=True)
    return (x - mean) / torch.sqrt(variance + eps) * weight + bias


def lesson_windows(ids, block_size):
    X = torch.stack([ids[i: i + block_size] for i in range(len(ids) - block_size)])
    return X, ids[block_size:]


def lesson_windows_adapted(documents, block_size, pad_id):      # the documents joined
    return lesson_windows(torch.cat(documents), block_size)


def lesson_cross_entropy(logits, targets):
    rows = torch.arange(len(targets))
    return -torch.log(torch.softmax(logits, dim=-1)[rows, targets]).mean()


def lesson_gelu(z):
    return 0.5 * z * (1 + torch.tanh(math.sqrt(2 / math.pi) * (z + 0.044715 * z ** 3)))


def lesson_gelu_adapted(x, dout):
    return lesson_gelu(x) * dout


def lesson_backward_by_autograd(x, weight, dout, eps=1e-5):    # how the lesson gets gradients
    x, weight = x.clone().requires_grad_(), weight.clone().requires_grad_()
    bias = torch.zeros_like(weight, requires_grad=True)
    mean = x.mean(dim=-1, keepdim=True)
    variance = ((x - mean) ** 2).mean(dim=-1, keepdim=True)
    ((x - mean) / torch.sqrt(variance + eps) * weight + bias).backward(dout)
    return x.grad, weight.grad, bias.grad


LESSON = [("neurons.layer_norm", lesson_layer_norm),
          ("neurons.windows", lesson_windows), ("neurons.windows", lesson_windows_adapted),
          ("neurons.gelu", lesson_gelu), ("neurons.gelu", lesson_gelu_adapted)]
LESSON_FORBIDDEN = [("neurons.softmax", lesson_softmax, "_softmax"),
                    ("neurons.cross_entropy", lesson_cross_entropy, "_softmax"),
                    ("neurons.layer_norm_backward", lesson_backward_by_autograd,
                     "torch.autograd.backward")]


# --- the usual slips ------------------------------------------------------------------------

def softmax_naive(logits, dim=-1):
    exps = torch.exp(logits)
    return exps / exps.sum(dim=dim, keepdim=True)


def softmax_one_max(logits, dim=-1):                      # one maximum for the whole tensor
    exps = torch.exp(logits - logits.max())
    return exps / exps.sum(dim=dim, keepdim=True)


def softmax_last_dim(logits, dim=-1):                     # the dim argument ignored
    return softmax(logits, -1)


def layer_norm_unbiased(x, weight, bias=None, eps=1e-5):
    dims = tuple(range(x.dim() - weight.dim(), x.dim()))
    mean = x.mean(dim=dims, keepdim=True)
    variance = x.var(dim=dims, keepdim=True, unbiased=True)
    out = (x - mean) / torch.sqrt(variance + eps) * weight
    return out if bias is None else out + bias


def layer_norm_last_dim(x, weight, bias=None, eps=1e-5):
    mean = x.mean(dim=-1, keepdim=True)
    variance = ((x - mean) ** 2).mean(dim=-1, keepdim=True)
    out = (x - mean) / torch.sqrt(variance + eps) * weight
    return out if bias is None else out + bias


def windows_across_documents(documents, block_size, pad_id):
    return context_windows([torch.cat(documents)], block_size, pad_id)


def windows_holding_the_target(documents, block_size, pad_id):
    X, Y = context_windows(documents, block_size, pad_id)
    return torch.cat([X[:, 1:], Y[:, None]], dim=1), Y


def cross_entropy_mean_over_all(logits, targets):
    shifted = logits - logits.amax(dim=-1, keepdim=True)
    log_probs = shifted - torch.log(torch.exp(shifted).sum(dim=-1, keepdim=True))
    counted = targets != -100
    picked = log_probs.gather(-1, targets.clamp_min(0)[..., None])[..., 0]
    return -(picked * counted).sum() / targets.numel()


def cross_entropy_through_probabilities(logits, targets):
    probs = softmax(logits)
    counted = targets != -100
    picked = probs.gather(-1, targets.clamp_min(0)[..., None])[..., 0]
    return -(torch.log(picked) * counted).sum() / counted.sum()


def gelu_backward_half_product_rule(x, dout):
    t = torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3))
    return dout * 0.5 * (1 + t)


def gelu_backward_without_cubic(x, dout):         # the cubic's own derivative forgotten
    c = math.sqrt(2 / math.pi)
    t = torch.tanh(c * (x + 0.044715 * x ** 3))
    return dout * (0.5 * (1 + t) + 0.5 * x * (1 - t ** 2) * c)


def gelu_backward_exact(x, dout):                  # the erf GELU's slope
    cdf = 0.5 * (1 + torch.erf(x / math.sqrt(2)))
    pdf = torch.exp(-x ** 2 / 2) / math.sqrt(2 * math.pi)
    return dout * (cdf + x * pdf)


def ln_backward_constant_statistics(x, weight, dout, eps=1e-5):
    _, dweight, dbias = layer_norm_backward(x, weight, dout, eps)
    std = torch.sqrt(x.var(-1, unbiased=False, keepdim=True) + eps)
    return dout * weight / std, dweight, dbias


def ln_backward_first_dim_only(x, weight, dout, eps=1e-5):
    dx, _, _ = layer_norm_backward(x, weight, dout, eps)
    std = torch.sqrt(x.var(-1, unbiased=False, keepdim=True) + eps)
    x_hat = (x - x.mean(-1, keepdim=True)) / std
    return dx, (dout * x_hat).sum(dim=0), dout.sum(dim=0)


SLIPS = [("neurons.softmax", softmax_naive), ("neurons.softmax", softmax_one_max),
         ("neurons.softmax", softmax_last_dim),
         ("neurons.layer_norm", layer_norm_unbiased), ("neurons.layer_norm", layer_norm_last_dim),
         ("neurons.windows", windows_across_documents),
         ("neurons.windows", windows_holding_the_target),
         ("neurons.cross_entropy", cross_entropy_mean_over_all),
         ("neurons.cross_entropy", cross_entropy_through_probabilities),
         ("neurons.gelu", gelu_backward_half_product_rule),
         ("neurons.gelu", gelu_backward_without_cubic), ("neurons.gelu", gelu_backward_exact),
         ("neurons.layer_norm_backward", ln_backward_constant_statistics),
         ("neurons.layer_norm_backward", ln_backward_first_dim_only)]


def test_every_task_is_checked():
    assert set(EXERCISES) == set(RIGHT)
    assert ASSIGNMENTS["04_neurons_and_layers"].max_points == 13


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("exercise_id", sorted(RIGHT))
def test_reference_solutions_pass_every_case(exercise_id, seed):
    exercise = EXERCISES[exercise_id]
    for cases in (instant_cases(exercise, seed),
                  hidden_cases(exercise, seed)):
        results = passed(exercise, RIGHT[exercise_id], cases)
        assert all(results), [case.note for case, ok in zip(cases, results) if not ok]


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("exercise_id, pasted", LESSON, ids=lambda v: getattr(v, "__name__", v))
def test_the_lessons_code_fails_a_hidden_case(exercise_id, pasted, seed):
    exercise = EXERCISES[exercise_id]
    assert not all(passed(exercise, pasted, hidden_cases(exercise, seed)))


@pytest.mark.parametrize("exercise_id, pasted, named", LESSON_FORBIDDEN,
                         ids=lambda v: getattr(v, "__name__", v))
def test_the_lessons_code_is_forbidden_where_it_calls_the_finished_op(exercise_id, pasted, named):
    result = check(exercise_id, pasted)
    assert result.status == "forbidden", str(result)
    assert named in result.message


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("exercise_id, slip", SLIPS, ids=lambda v: getattr(v, "__name__", v))
def test_a_usual_slip_fails_the_instant_check_and_a_hidden_case(exercise_id, slip, seed):
    exercise = EXERCISES[exercise_id]
    assert not all(passed(exercise, slip, hidden_cases(exercise, seed)))
    instant = instant_cases(exercise, seed)
    assert not all(passed(exercise, slip, instant))


def test_a_slip_gets_a_message_that_names_it():
    def message(exercise_id, function, index=0):
        exercise = EXERCISES[exercise_id]
        case = instant_cases(exercise, 0)[index]
        args = [[d.clone() for d in a] if isinstance(a, list) else a for a in case.args]
        return exercise.compare(function(*args), case)

    assert "nan" in message("neurons.softmax", softmax_naive)
    assert "dim=0" in message("neurons.softmax", softmax_last_dim, 1)
    assert "last 2 dimensions" in message("neurons.layer_norm", layer_norm_last_dim, 1)
    assert "n - 1" in message("neurons.layer_norm", layer_norm_unbiased)
    assert "next" in message("neurons.windows", windows_across_documents)
    assert "own target" in message("neurons.windows", windows_holding_the_target)
    assert "ignored ones" in message("neurons.cross_entropy", cross_entropy_mean_over_all)
    assert "product rule" in message("neurons.gelu", gelu_backward_half_product_rule)
    assert "erf" in message("neurons.gelu", gelu_backward_exact)
    assert "constants" in message("neurons.layer_norm_backward", ln_backward_constant_statistics)


# --- what each task rules out is reported as forbidden ----------------------------------------

def gelu_backward_by_autograd_grad(x, dout):
    leaf = x.clone().requires_grad_()
    return torch.autograd.grad(lesson_gelu(leaf), leaf, dout)[0]


def ln_backward_by_the_kernel(x, weight, dout, eps=1e-5):
    d = x.shape[-1]
    _, mean, rstd = torch.ops.aten.native_layer_norm(x, (d,), weight, None, eps)
    return torch.ops.aten.native_layer_norm_backward(dout, x, (d,), mean, rstd, weight,
                                                     torch.zeros_like(weight),
                                                     [True, True, True])


FORBIDDEN = [
    ("neurons.softmax", lambda z, dim=-1: z.softmax(dim), "aten._softmax"),
    ("neurons.softmax", lambda z, dim=-1: z.log_softmax(dim).exp(), "aten._log_softmax"),
    ("neurons.softmax", lambda z, dim=-1: (z - z.logsumexp(dim, keepdim=True)).exp(),
     "aten.logsumexp"),
    ("neurons.softmax", lambda z, dim=-1: F.softmin(-z, dim=dim), "softmin"),
    ("neurons.cross_entropy",
     lambda z, t: -(z.log_softmax(-1).gather(-1, t.clamp_min(0)[..., None])[..., 0]
                    * (t != -100)).sum() / (t != -100).sum(), "aten._log_softmax"),
    ("neurons.cross_entropy",
     lambda z, t: -((z - z.logsumexp(-1, keepdim=True)).gather(-1, t.clamp_min(0)[..., None])[
         ..., 0] * (t != -100)).sum() / (t != -100).sum(), "aten.logsumexp"),
    ("neurons.cross_entropy",
     lambda z, t: F.cross_entropy(z.reshape(-1, z.shape[-1]), t.reshape(-1)), "cross_entropy"),
    ("neurons.layer_norm",
     lambda x, w, b=None, eps=1e-5: F.layer_norm(x, w.shape, w, b, eps), "layer_norm"),
    ("neurons.layer_norm",
     lambda x, w, b=None, eps=1e-5: torch.ops.aten.native_layer_norm(x, w.shape, w, b, eps)[0],
     "aten.native_layer_norm"),
    ("neurons.windows",
     lambda docs, block_size, pad_id: __import__("llmkit.mlp_lm").mlp_lm.context_windows(
         torch.cat([torch.full((block_size,), pad_id)] + docs), block_size), "llmkit.mlp_lm"),
    ("neurons.gelu",
     lambda x, dout: torch.ops.aten.gelu_backward(dout, x, approximate="tanh"), "gelu_backward"),
    ("neurons.gelu", gelu_backward_by_autograd_grad, "torch.autograd.grad"),
    ("neurons.gelu", lambda x, dout: torch.func.vjp(lesson_gelu, x)[1](dout)[0], "torch.func"),
    ("neurons.layer_norm_backward", lesson_backward_by_autograd, "torch.autograd.backward"),
    ("neurons.layer_norm_backward", ln_backward_by_the_kernel, "aten.native_layer_norm"),
]


@pytest.mark.parametrize("exercise_id, route, named", FORBIDDEN,
                         ids=[f"{e}-{n}" for e, _, n in FORBIDDEN])
def test_a_ruled_out_route_is_reported_forbidden(exercise_id, route, named):
    result = check(exercise_id, route)
    assert result.status == "forbidden", str(result)
    assert named in result.message, result.message


@pytest.mark.parametrize("exercise_id", sorted(RIGHT))
def test_the_reference_solutions_pass_the_check_itself(exercise_id):
    """Through `check`, with the watch on: exp, log, amax, gather, var and tanh stay allowed."""
    result = check(exercise_id, RIGHT[exercise_id])
    assert result.status == "passed", str(result)
