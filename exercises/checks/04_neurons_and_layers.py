"""The checks of exercise notebook 04 (neurons and layers): instant and hidden cases.

Every expected value comes from PyTorch's own op (F.gelu, F.softmax, F.cross_entropy,
F.layer_norm, autograd) or from `llmkit.mlp_lm`, computed before the learner's function
runs. While it runs, `llmkit.mlp_lm` and the ready-made op that does the whole task are
off limits (calling one costs the task). Tensor methods such as `x.softmax(-1)` cannot be
replaced by stand-ins, so the notebook asks for the formula in words instead.

The hidden cases include the inputs where a naive formula breaks: logits in the hundreds
(exp overflows; the log of a probability that underflowed to 0 is -inf), a constant row
for layer norm (variance 0, so eps matters), and one-element dimensions.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from llmkit import mlp_lm
from llmkit.grading.exercise import (Assignment, Case, Exercise, compare_numbers, compare_tensors,
                       describe_type)
from llmkit.grading.exercise import random_int as _int, random_normal as _randn

SETUP = "import math\nimport torch\nfrom llmkit.grading import check\n"

MLP_LM = ("llmkit.mlp_lm",)  # the lesson's reference module, every function in it
# The ATen kernels behind each finished op, caught whatever Python route reached them
# (`x.softmax()`, `F.softmin(-x)`, `torch._C._nn...`).
SOFTMAX_KERNELS = ("_softmax", "_log_softmax", "logsumexp")
CROSS_ENTROPY_KERNELS = ("_log_softmax", "logsumexp", "nll_loss_forward", "nll_loss2d_forward")
LAYER_NORM_KERNELS = ("native_layer_norm", "native_group_norm", "_fused_rms_norm")

GELU_OPS = ("torch.nn.functional.gelu", "torch.nn.GELU")
SOFTMAX_OPS = ("torch.nn.functional.softmax", "torch.softmax", "torch.special.softmax",
               "torch.nn.Softmax", "torch.nn.functional.log_softmax", "torch.log_softmax",
               "torch.special.log_softmax", "torch.logsumexp", "torch.special.logsumexp")
CROSS_ENTROPY_OPS = ("torch.nn.functional.cross_entropy", "torch.nn.functional.nll_loss",
                     "torch.nn.CrossEntropyLoss", "torch.nn.NLLLoss",
                     "torch.nn.functional.log_softmax", "torch.log_softmax",
                     "torch.special.log_softmax", "torch.logsumexp", "torch.special.logsumexp")
LAYER_NORM_OPS = ("torch.nn.functional.layer_norm", "torch.layer_norm",
                  "torch.native_layer_norm", "torch.nn.LayerNorm",
                  "torch.nn.functional.group_norm", "torch.nn.functional.rms_norm",
                  "llmkit.model.layers.RMSNorm")
AUTOGRAD_OPS = ("torch.autograd.grad", "torch.autograd.backward",
                "torch.autograd.functional.vjp", "torch.autograd.functional.jacobian",
                "torch.func.vjp", "torch.func.grad", "torch.func.jacrev")


def _shape(generator) -> tuple[int, ...]:
    """A random (N, d) or (B, T, d) shape, small enough to print."""
    if _int(generator, 0, 2):
        return (_int(generator, 1, 6), _int(generator, 2, 12))
    return (_int(generator, 1, 4), _int(generator, 1, 5), _int(generator, 2, 10))


# --- 1. GELU --------------------------------------------------------------------------

def _gelu_cases(generator, hidden):
    inputs = [(_randn(generator, *_shape(generator)) * 3, "") for _ in range(4 if hidden else 2)]
    inputs.append((torch.linspace(-6, 6, 25), "inputs from -6 to 6"))
    if hidden:
        inputs += [
            (torch.tensor([-30.0, -10.0, 0.0, 10.0, 30.0]), "large inputs (tanh saturates)"),
            (torch.zeros(3, 4), "all zeros"),
            (_randn(generator, 6, dtype=torch.float64), "a float64 input"),
        ]
    return [Case((x,), F.gelu(x, approximate="tanh"), note) for x, note in inputs]


def _compare_gelu(answer, case):
    problem = compare_tensors(answer, case.expected, name="GELU(x)", any_float_dtype=True,
                              atol=1e-5, rtol=1e-4)
    if problem and isinstance(answer, torch.Tensor) and answer.shape == case.expected.shape:
        exact = F.gelu(case.args[0])  # the erf form, not the tanh approximation
        if torch.allclose(answer.double(), exact.double(), atol=1e-5, rtol=1e-4):
            problem += (" Your values match the exact (erf) GELU; this task asks for the "
                        "tanh approximation.")
    return problem


# --- 2. softmax -------------------------------------------------------------------------

def _softmax_cases(generator, hidden):
    inputs = [(_randn(generator, *_shape(generator)) * 2, "") for _ in range(3 if hidden else 1)]
    inputs.append((_randn(generator, 3, 6) * 300, "logits in the hundreds"))
    if hidden:
        inputs += [
            (torch.full((2, 5), 1000.0), "every logit equal to 1000"),
            (_randn(generator, 4, 7) - 2000.0, "logits all near -2000"),
            (_randn(generator, 3, 1), "a vocabulary of one"),
            (_randn(generator, 2, 3, 8, dtype=torch.float64) * 50, "a float64 input"),
        ]
    return [Case((z,), F.softmax(z, dim=-1), note) for z, note in inputs]


def _compare_softmax(answer, case):
    problem = compare_tensors(answer, case.expected, name="softmax(logits)",
                              any_float_dtype=True, atol=1e-6, rtol=1e-4)
    if problem and isinstance(answer, torch.Tensor) and torch.isnan(answer).any():
        problem += " Some values are nan: exp of a large logit overflows to inf (inf / inf)."
    return problem


# --- 3. cross-entropy -------------------------------------------------------------------

def _ce_case(logits, targets, note=""):
    expected = F.cross_entropy(logits.double(), targets).item()
    return Case((logits, targets), expected, note)


def _cross_entropy_cases(generator, hidden):
    cases = []
    for _ in range(4 if hidden else 2):
        n, vocab_size = _int(generator, 1, 20), _int(generator, 2, 15)
        cases.append(_ce_case(_randn(generator, n, vocab_size) * 2,
                              torch.randint(0, vocab_size, (n,), generator=generator)))
    logits = _randn(generator, 5, 6) * 100
    targets = logits.argmin(dim=1)  # the least likely class: its probability underflows
    cases.append(_ce_case(logits, targets, "logits in the hundreds and unlikely targets"))
    if hidden:
        cases += [
            _ce_case(torch.tensor([[500.0, -500.0, 0.0]]), torch.tensor([1]),
                     "one very confident, very wrong prediction"),
            _ce_case(torch.full((3, 4), 7.0), torch.tensor([0, 3, 3]),
                     "all logits equal (the loss is ln V)"),
            _ce_case(_randn(generator, 1, 2), torch.tensor([1]), "one example, two classes"),
        ]
    return cases


def _compare_cross_entropy(answer, case):
    if isinstance(answer, torch.Tensor) and answer.numel() != 1:
        return (f"cross_entropy should return one number (the mean over the examples), but "
                f"it returned {describe_type(answer)}.")
    problem = compare_numbers(answer, case.expected, name="the cross-entropy")
    n_examples = len(case.args[1])
    if problem and n_examples > 1 and compare_numbers(answer, case.expected * n_examples) is None:
        problem += " That is the sum over the examples; the task asks for the mean."
    return problem


# --- 4. layer norm ----------------------------------------------------------------------

def _ln_case(x, weight, bias, eps, note=""):
    return Case((x, weight, bias, eps), F.layer_norm(x, x.shape[-1:], weight, bias, eps), note)


def _layer_norm_cases(generator, hidden):
    cases = []
    for eps in ((1e-5, 1e-5, 1e-3, 1e-5) if hidden else (1e-5, 1e-5)):
        shape = _shape(generator)
        d = shape[-1]
        x = _randn(generator, *shape) * _int(generator, 1, 6) + _int(generator, -3, 4)
        cases.append(_ln_case(x, _randn(generator, d), _randn(generator, d), eps))
    x = _randn(generator, 3, 4)
    cases.append(_ln_case(x, torch.ones(4), torch.zeros(4), 0.5, "a large eps (0.5)"))
    if hidden:
        cases += [
            _ln_case(torch.full((2, 5), 3.0), _randn(generator, 5), _randn(generator, 5), 1e-5,
                     "constant rows (variance 0)"),
            _ln_case(_randn(generator, 4, 2) * 10, torch.ones(2), torch.zeros(2), 1e-5,
                     "vectors of only 2 features"),
            _ln_case(_randn(generator, 3, 1), _randn(generator, 1), _randn(generator, 1), 1e-5,
                     "vectors of 1 feature"),
        ]
    return cases


def _compare_layer_norm(answer, case):
    problem = compare_tensors(answer, case.expected, name="the normalised x",
                              any_float_dtype=True, atol=1e-4, rtol=1e-4)
    x, weight, bias, eps = case.args
    if (problem and isinstance(answer, torch.Tensor) and answer.shape == case.expected.shape
            and x.shape[-1] > 1):
        unbiased = (x - x.mean(-1, keepdim=True)) / torch.sqrt(
            x.var(-1, keepdim=True, unbiased=True) + eps) * weight + bias
        if torch.allclose(answer.double(), unbiased.double(), atol=1e-4, rtol=1e-4):
            problem += " Your variance divides by d - 1; layer norm's divides by d."
    return problem


# --- 5. context windows -----------------------------------------------------------------

def _windows_cases(generator, hidden):
    cases = []
    for _ in range(4 if hidden else 2):
        vocab_size, block_size = _int(generator, 3, 30), _int(generator, 1, 9)
        ids = torch.randint(0, vocab_size, (_int(generator, block_size + 1, 120),),
                            generator=generator)
        cases.append(Case((ids, block_size), mlp_lm.context_windows(ids, block_size)))
    if hidden:
        ids = torch.randint(0, 10, (9,), generator=generator)
        cases += [Case((ids, 8), mlp_lm.context_windows(ids, 8),
                       "exactly one window (n = block_size + 1)"),
                  Case((ids, 1), mlp_lm.context_windows(ids, 1), "block_size = 1")]
    return cases


def _compare_windows(answer, case):
    if not isinstance(answer, (tuple, list)) or len(answer) != 2:
        return ("context_windows should return a pair (X, Y), but it returned "
                f"{describe_type(answer)}.")
    expected_x, expected_y = case.expected
    return (compare_tensors(answer[0], expected_x, name="X")
            or compare_tensors(answer[1], expected_y, name="Y"))


# --- 6. the backward pass of a linear layer ----------------------------------------------

def _backward_case(generator, n, d_in, d_out, note=""):
    x = _randn(generator, n, d_in, dtype=torch.float64).requires_grad_()
    weight = _randn(generator, d_out, d_in, dtype=torch.float64).requires_grad_()
    bias = _randn(generator, d_out, dtype=torch.float64).requires_grad_()
    dout = _randn(generator, n, d_out, dtype=torch.float64)
    F.linear(x, weight, bias).backward(dout)  # autograd is the reference
    return Case((x.detach(), weight.detach(), dout),
                (x.grad, weight.grad, bias.grad), note)


def _backward_cases(generator, hidden):
    cases = [_backward_case(generator, _int(generator, 2, 9), _int(generator, 2, 7),
                            _int(generator, 2, 7)) for _ in range(4 if hidden else 2)]
    if hidden:
        cases += [_backward_case(generator, 1, 3, 4, "a batch of one"),
                  _backward_case(generator, 5, 4, 1, "a single output neuron")]
    return cases


def _compare_backward(answer, case):
    if not isinstance(answer, (tuple, list)) or len(answer) != 3:
        return ("linear_backward should return three tensors (dx, dweight, dbias), but it "
                f"returned {describe_type(answer)}.")
    for got, expected, name in zip(answer, case.expected, ("dx", "dweight", "dbias")):
        problem = compare_tensors(got, expected, name=name, any_float_dtype=True,
                                  atol=1e-6, rtol=1e-5)
        if problem:
            if isinstance(got, torch.Tensor) and got.shape == expected.T.shape != expected.shape:
                problem += " It looks transposed."
            return problem
    return None


EXERCISES = [
    Exercise("neurons.gelu", "gelu_tanh", 2, "GELU, tanh approximation",
             _gelu_cases, _compare_gelu, forbidden=GELU_OPS + MLP_LM, forbidden_ops=("gelu",),
             hint="Write the formula elementwise with torch.tanh: 0.5 * x * (1 + tanh(c * (x + "
                  "0.044715 * x**3))) with c = sqrt(2 / pi)."),
    Exercise("neurons.softmax", "softmax", 2, "A stable softmax",
             _softmax_cases, _compare_softmax, forbidden=SOFTMAX_OPS + MLP_LM,
             forbidden_ops=SOFTMAX_KERNELS,
             hint="Subtract each row's largest logit (amax over the last dim, keepdim=True) "
                  "before exp; it cancels in the ratio, so the answer is unchanged, but the "
                  "largest exp is now exp(0) = 1."),
    Exercise("neurons.cross_entropy", "cross_entropy", 2, "Cross-entropy from logits",
             _cross_entropy_cases, _compare_cross_entropy,
             forbidden=CROSS_ENTROPY_OPS + MLP_LM, forbidden_ops=CROSS_ENTROPY_KERNELS,
             hint="Work with log-probabilities, never probabilities: log p = (z - max) - "
                  "log(sum(exp(z - max))) per row. Pick each row's target entry with "
                  "[torch.arange(N), targets], average, and flip the sign."),
    Exercise("neurons.layer_norm", "layer_norm", 2, "Layer norm",
             _layer_norm_cases, _compare_layer_norm, forbidden=LAYER_NORM_OPS + MLP_LM,
             forbidden_ops=LAYER_NORM_KERNELS,
             hint="Mean and variance over the last dimension (keepdim=True); the variance "
                  "divides by d; eps goes inside the square root; then * weight + bias."),
    Exercise("neurons.windows", "context_windows", 2, "Context windows",
             _windows_cases, _compare_windows, forbidden=MLP_LM,
             hint="Window i is ids[i : i + block_size] and its target is ids[i + block_size], "
                  "for every i from 0 to n - block_size - 1; stack the windows into one "
                  "tensor."),
    Exercise("neurons.linear_backward", "linear_backward", 3,
             "Stretch: the backward pass of a linear layer",
             _backward_cases, _compare_backward, forbidden=AUTOGRAD_OPS + MLP_LM,
             hint="out[n, j] = sum_k x[n, k] * weight[j, k] + bias[j]. Differentiate with "
                  "respect to each variable and add up over every place it is used: the "
                  "weights and biases are used once per example of the batch."),
]

ASSIGNMENT = Assignment("04_neurons_and_layers", "Exercises 04: neurons and layers", SETUP,
                        EXERCISES)
