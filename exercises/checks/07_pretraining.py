"""The checks of exercise notebook 07 (pretraining): instant and hidden cases.

Every expected value comes from the llmkit reference (`llmkit.data.get_batch`,
`llmkit.train.learning_rate`, `llmkit.train.decay_parameter_names` on real GPT models) or
from PyTorch itself (`torch.nn.utils.clip_grad_norm_`, autograd on the whole batch,
`torch.optim.AdamW`), computed before the learner's function runs. While it runs, those
finished pieces are off limits (calling one costs the task).

The hidden cases include the edges: a window that just fits the stream, the first and last
warmup steps and steps past the end of the cosine, a model without biases, gradients whose
norm is already below the limit, micro-batches of different sizes, and AdamW's first step
(where the bias correction matters most).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from llmkit.data.batches import get_batch as reference_get_batch
from llmkit.model import GPT, GPTConfig
from llmkit.train import TrainConfig, decay_parameter_names
from llmkit.train import learning_rate as reference_learning_rate
from llmkit.grading.exercise import (Assignment, Case, Exercise, compare_numbers, compare_tensors,
                       describe_type)
from llmkit.grading.exercise import random_int as _int, random_normal as _randn

SETUP = "import math\nimport torch\nimport torch.nn.functional as F\nfrom llmkit.grading import check\n"

TRAIN = tuple(f"llmkit.train.{name}" for name in (
    "learning_rate", "decay_parameter_names", "make_optimizer", "Trainer", "stream_loss",
))
BATCH_OPS = ("llmkit.data.get_batch", "llmkit.data.batches.get_batch")
SCHEDULE_OPS = ("torch.optim.lr_scheduler.CosineAnnealingLR",
                "torch.optim.lr_scheduler.LinearLR", "torch.optim.lr_scheduler.SequentialLR",
                "torch.optim.lr_scheduler.OneCycleLR", "torch.optim.lr_scheduler.LambdaLR")
CLIP_OPS = ("torch.nn.utils.clip_grad_norm_", "torch.nn.utils.clip_grad.clip_grad_norm_",
            "torch.nn.utils.clip_grad_norm", "torch.nn.utils.clip_grads_with_norm_",
            "torch.nn.utils.get_total_norm", "torch.nn.utils.clip_grad.get_total_norm",
            "torch.nn.utils.clip_grad.clip_grads_with_norm_", "torch._foreach_norm")
ADAM_OPS = ("torch.optim.adam", "torch.optim.adamw", "torch.optim._functional",
            "torch.optim.AdamW", "torch.optim.Adam", "torch.optim.adamw.AdamW",
            "torch.optim.adam.Adam", "torch.optim.adamw.adamw", "torch.optim.adam.adam",
            "torch.optim._functional.adamw", "torch.optim._functional.adam")


# --- 1. random batches -----------------------------------------------------------------

def _batch_case(generator, n, batch_size, context_length, note=""):
    ids = torch.randint(0, 50, (n,), generator=generator)
    seed = _int(generator, 0, 10_000)
    expected = reference_get_batch(ids, batch_size, context_length,
                                   generator=torch.Generator().manual_seed(seed))
    return Case((ids, batch_size, context_length, torch.Generator().manual_seed(seed)),
                expected, note)


def _batch_cases(generator, hidden):
    cases = [_batch_case(generator, _int(generator, 40, 300), _int(generator, 1, 9),
                         _int(generator, 2, 17)) for _ in range(4 if hidden else 2)]
    if hidden:
        cases += [_batch_case(generator, 9, 5, 8, "a stream of exactly context_length + 1 ids"),
                  _batch_case(generator, 30, 1, 1, "batch_size 1 and context_length 1")]
    return cases


def _compare_batch(answer, case):
    if not isinstance(answer, (tuple, list)) or len(answer) != 2:
        return f"get_batch should return a pair (x, y), but it returned {describe_type(answer)}."
    (x, y), (expected_x, expected_y) = answer, case.expected
    problem = compare_tensors(x, expected_x, name="x") or compare_tensors(y, expected_y, name="y")
    if problem and all(isinstance(t, torch.Tensor) for t in (x, y)) and x.shape == y.shape:
        if x.dim() == 2 and x.shape[1] > 1 and torch.equal(x, y):
            problem += " y equals x; the targets are the same windows shifted one token on."
        elif x.dim() == 2 and not torch.equal(x, expected_x) and torch.equal(x[:, 1:], y[:, :-1]):
            problem += (" Your y is x shifted correctly, but the windows start elsewhere: draw "
                        "the starts exactly as the task says, in one call with the generator.")
    return problem


# --- 2. the learning-rate schedule ------------------------------------------------------

def _schedule_cases(generator, hidden):
    settings = [(1e-3, 1e-4, 10, 100), (6e-4, 6e-5, 5, 40)]
    if hidden:
        settings += [(2e-3, 0.0, 100, 1000), (1.0, 0.5, 0, 20), (3e-3, 3e-4, 20, 20)]
    cases = []
    for max_lr, min_lr, warmup, decay in settings:
        config = TrainConfig(max_steps=decay, lr=max_lr, min_lr=min_lr, warmup_steps=warmup)
        steps = {0, max(warmup - 1, 0), warmup, (warmup + decay) // 2, decay - 1, decay,
                 decay + 7, _int(generator, 0, decay + 1)}
        note = f"max_lr={max_lr}, min_lr={min_lr}, warmup_steps={warmup}, decay_steps={decay}"
        for step in sorted(steps):
            cases.append(Case((step, max_lr, min_lr, warmup, decay),
                              reference_learning_rate(step, config), f"{note}, step={step}"))
    return cases


def _compare_schedule(answer, case):
    return compare_numbers(answer, case.expected, name="the learning rate", rel=1e-6, abs_=1e-12)


# --- 3. which parameters decay ----------------------------------------------------------

_MODELS = [
    dict(vocab_size=30, context_length=16, n_layer=1, n_head=2, d_model=8),
    dict(vocab_size=20, context_length=8, n_layer=2, n_head=2, d_model=8, bias=False),
    dict(vocab_size=25, context_length=8, n_layer=1, n_head=2, d_model=8, tie_weights=False,
         norm="rmsnorm"),
    dict(vocab_size=12, context_length=8, n_layer=2, n_head=4, d_model=16, position="sinusoidal",
         mlp="swiglu"),
]


def _shapes_case(model, note):
    shapes = {name: tuple(p.shape) for name, p in model.named_parameters()}
    return Case((shapes,), decay_parameter_names(model), note)


def _decay_cases(generator, hidden):
    cases = []
    for index, settings in enumerate(_MODELS[: 4 if hidden else 2]):
        changes = ", ".join(f"{k}={v}" for k, v in settings.items()
                            if k not in ("vocab_size", "context_length", "n_head"))
        cases.append(_shapes_case(GPT(GPTConfig(**settings)), f"a GPT with {changes}"))
    if hidden:
        shapes = {"conv.weight": (4, 3, 3, 3), "conv.bias": (4,), "scale": (1,),
                  "table": (10, 2), "gain": (7,)}
        cases.append(Case((shapes,), (["conv.weight", "table"], ["conv.bias", "scale", "gain"]),
                          "a 4-D convolution weight and 1-element parameters"))
    return cases


def _compare_decay(answer, case):
    if not isinstance(answer, (tuple, list)) or len(answer) != 2:
        return ("decay_split should return two lists (decay, no_decay), but it returned "
                f"{describe_type(answer)}.")
    decay, no_decay = (list(part) if isinstance(part, (list, tuple)) else part for part in answer)
    if not isinstance(decay, list) or not isinstance(no_decay, list):
        return "both parts of the answer should be lists of parameter names."
    shapes = case.args[0]
    expected_decay, expected_no_decay = case.expected
    for name in shapes:
        where = ("decay" if name in decay else "") + ("no_decay" if name in no_decay else "")
        wanted = "decay" if name in expected_decay else "no_decay"
        if where == "":
            return f"{name!r} (shape {shapes[name]}) is in neither list; every parameter goes in one."
        if where == "decayno_decay":
            return f"{name!r} (shape {shapes[name]}) is in both lists; put it in one."
        if where != wanted:
            return (f"{name!r} (shape {shapes[name]}) is in {where}, but belongs in {wanted}.")
    extra = [name for name in decay + no_decay if name not in shapes]
    if extra:
        return f"{extra[0]!r} is not a parameter of this model."
    if decay != expected_decay or no_decay != expected_no_decay:
        return "each list should keep the parameters in the order the dict gives them."
    return None


# --- 4. global gradient-norm clipping -------------------------------------------------------

def _clip_case(grads, max_norm, note=""):
    params = [torch.nn.Parameter(torch.zeros_like(g)) for g in grads]
    for param, grad in zip(params, grads):
        param.grad = grad.clone()
    norm = torch.nn.utils.clip_grad_norm_(params, max_norm).item()
    return Case(([g.clone() for g in grads], max_norm), ([p.grad for p in params], norm), note)


def _clip_cases(generator, hidden):
    def some_grads(scale):
        return [_randn(generator, *shape) * scale for shape in
                [(_int(generator, 1, 6), _int(generator, 1, 6)), (_int(generator, 1, 8),)]]

    cases = [_clip_case(some_grads(3.0), 1.0, "a norm above max_norm"),
             _clip_case(some_grads(0.01), 1.0, "a norm below max_norm")]
    if hidden:
        cases += [_clip_case(some_grads(10.0), 0.5),
                  _clip_case([_randn(generator, 3, 4, 5)], 2.0, "a single 3-D gradient"),
                  _clip_case([torch.full((4,), 3.0), torch.full((2, 2), 4.0)], 5.0,
                             "gradients whose own norms are both below max_norm"),
                  _clip_case([_randn(generator, 6, dtype=torch.float64) * 5], 1.0,
                             "a float64 gradient")]
    return cases


def _compare_clip(answer, case):
    if not isinstance(answer, (tuple, list)) or len(answer) != 2:
        return ("clip_gradients should return a pair (clipped gradients, norm), but it "
                f"returned {describe_type(answer)}.")
    clipped, norm = answer
    expected_grads, expected_norm = case.expected
    problem = compare_numbers(norm, expected_norm, name="the norm before clipping")
    if problem:
        grads = case.args[0]
        separate = max(g.double().norm().item() for g in grads)
        if len(grads) > 1 and compare_numbers(norm, separate) is None:
            problem += " That is one tensor's norm; the global norm covers every tensor together."
        return problem
    if not isinstance(clipped, (list, tuple)) or len(clipped) != len(expected_grads):
        return (f"the clipped gradients should be a list of {len(expected_grads)} tensors, "
                f"but they are {describe_type(clipped)}.")
    for index, (got, expected) in enumerate(zip(clipped, expected_grads)):
        problem = compare_tensors(got, expected, name=f"clipped gradient [{index}]",
                                  any_float_dtype=True, atol=1e-6, rtol=1e-4)
        if problem:
            if case.expected[1] < case.args[1]:
                problem += " The norm is below max_norm here, so nothing should change."
            return problem
    return None


# --- 5. gradient accumulation ---------------------------------------------------------------

def _accumulation_case(generator, sizes, n_features, n_classes, note=""):
    weight = _randn(generator, n_classes, n_features, dtype=torch.float64) * 0.5
    batches = [(_randn(generator, size, n_features, dtype=torch.float64),
                torch.randint(0, n_classes, (size,), generator=generator)) for size in sizes]
    leaf = weight.clone().requires_grad_()
    x = torch.cat([b[0] for b in batches])
    targets = torch.cat([b[1] for b in batches])
    F.cross_entropy(x @ leaf.T, targets).backward()   # the whole batch at once is the reference
    return Case((weight, batches), leaf.grad, note)


def _accumulation_cases(generator, hidden):
    cases = [_accumulation_case(generator, [8, 8], 5, 4, "two micro-batches of 8"),
             _accumulation_case(generator, [4, 4, 4, 4], 3, 6, "four micro-batches of 4")]
    if hidden:
        cases += [_accumulation_case(generator, [6, 2], 4, 3, "micro-batches of 6 and 2"),
                  _accumulation_case(generator, [5], 2, 5, "a single micro-batch"),
                  _accumulation_case(generator, [3, 7, 1], 6, 2, "micro-batches of 3, 7 and 1")]
    return cases


def _compare_accumulation(answer, case):
    problem = compare_tensors(answer, case.expected, name="the gradient", any_float_dtype=True,
                              atol=1e-6, rtol=1e-4)
    if problem and isinstance(answer, torch.Tensor) and answer.shape == case.expected.shape:
        weight, batches = case.args
        summed = len(batches) * case.expected
        if len(batches) > 1 and torch.allclose(answer.double(), summed, atol=1e-6, rtol=1e-4):
            problem += (" It is as many times too large as there are micro-batches: the "
                        "gradients add up, so scale each micro-batch's loss.")
        elif len({len(x) for x, _ in batches}) > 1:
            problem += (" The micro-batches differ in size here: each example should count "
                        "the same, whichever micro-batch it is in.")
    return problem


# --- 6. one AdamW step ---------------------------------------------------------------------

def _adamw_case(generator, shape, step, lr, betas, eps, weight_decay, note=""):
    param = _randn(generator, *shape)
    grad = _randn(generator, *shape)
    if step == 1:
        exp_avg, exp_avg_sq = torch.zeros(shape), torch.zeros(shape)
    else:
        exp_avg = _randn(generator, *shape) * 0.1
        exp_avg_sq = _randn(generator, *shape).square() * 0.01
    leaf = torch.nn.Parameter(param.clone())
    optimizer = torch.optim.AdamW([leaf], lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                  foreach=False)
    if step > 1:
        optimizer.state[leaf] = {"step": torch.tensor(float(step - 1)),
                                 "exp_avg": exp_avg.clone(), "exp_avg_sq": exp_avg_sq.clone()}
    leaf.grad = grad.clone()
    optimizer.step()
    state = optimizer.state[leaf]
    expected = (leaf.detach().clone(), state["exp_avg"].clone(), state["exp_avg_sq"].clone())
    args = (param, grad, exp_avg, exp_avg_sq, step, lr, betas[0], betas[1], eps, weight_decay)
    return Case(args, expected, note)


def _adamw_cases(generator, hidden):
    cases = [_adamw_case(generator, (3, 4), 1, 1e-2, (0.9, 0.99), 1e-8, 0.1, "the first step"),
             _adamw_case(generator, (5,), 10, 1e-3, (0.9, 0.99), 1e-8, 0.1, "step 10")]
    if hidden:
        cases += [_adamw_case(generator, (2, 3), 3, 3e-3, (0.8, 0.95), 1e-6, 0.0, "no weight decay"),
                  _adamw_case(generator, (4, 2), 1000, 1e-3, (0.9, 0.999), 1e-8, 0.5,
                              "step 1000 and strong weight decay"),
                  _adamw_case(generator, (6,), 2, 0.1, (0.5, 0.5), 1e-3, 0.01, "a large eps")]
    return cases


def _compare_adamw(answer, case):
    if not isinstance(answer, (tuple, list)) or len(answer) != 3:
        return ("adamw_step should return three tensors (param, exp_avg, exp_avg_sq), but it "
                f"returned {describe_type(answer)}.")
    order = (1, 2, 0)   # the moments first: a wrong moment explains a wrong parameter
    names = ("the new param", "the new exp_avg", "the new exp_avg_sq")
    for index in order:
        problem = compare_tensors(answer[index], case.expected[index], name=names[index],
                                  any_float_dtype=True, atol=1e-6, rtol=1e-4)
        if problem:
            if index == 0:
                problem += (" The moments are right; look at the bias correction (it uses "
                            "the step number), eps (added after the square root) and the "
                            "weight decay (lr * weight_decay * param, from the old param).")
            return problem
    return None


EXERCISES = [
    Exercise("pretrain.get_batch", "get_batch", 2, "Random batches, targets shifted by one",
             _batch_cases, _compare_batch, forbidden=BATCH_OPS + TRAIN,
             hint="starts = torch.randint(0, len(ids) - context_length, (batch_size,), "
                  "generator=generator); window i is ids[s : s + context_length] and its "
                  "targets are the same slice one position later."),
    Exercise("pretrain.learning_rate", "learning_rate", 2, "Warmup, then a cosine",
             _schedule_cases, _compare_schedule, forbidden=TRAIN + SCHEDULE_OPS,
             hint="Three cases: step < warmup_steps (linear, reaching max_lr at step "
                  "warmup_steps - 1), step >= decay_steps (min_lr), and the cosine in between, "
                  "whose progress runs from 0 at warmup_steps to 1 at decay_steps."),
    Exercise("pretrain.decay_split", "decay_split", 2, "Which parameters decay",
             _decay_cases, _compare_decay, forbidden=TRAIN,
             hint="Decide by the number of dimensions of each shape: matrices (and anything "
                  "with more dimensions) decay; vectors do not."),
    Exercise("pretrain.clip", "clip_gradients", 2, "Global gradient-norm clipping",
             _clip_cases, _compare_clip, forbidden=CLIP_OPS + TRAIN, forbidden_ops=("_foreach_norm",),
             hint="The global norm is the square root of the sum of the squares of every "
                  "number in every gradient. Scale all gradients by one factor, "
                  "max_norm / (norm + 1e-6), and only when that factor is below 1."),
    Exercise("pretrain.accumulate", "accumulated_gradient", 2, "Gradient accumulation",
             _accumulation_cases, _compare_accumulation, forbidden=TRAIN,
             hint="Call backward once per micro-batch on a leaf copy of the weight, so the "
                  "gradients add up in .grad; weight each micro-batch's mean loss by its "
                  "share of all the examples."),
    Exercise("pretrain.adamw", "adamw_step", 3, "Stretch: one AdamW step by hand",
             _adamw_cases, _compare_adamw, forbidden=ADAM_OPS + TRAIN,
             forbidden_ops=("_fused_adam_", "_fused_adamw_"),
             hint="Decay the parameter first (param * (1 - lr * weight_decay)), update the two "
                  "running averages, divide each by its bias correction 1 - beta**step, then "
                  "step by lr * m_hat / (sqrt(v_hat) + eps)."),
]

ASSIGNMENT = Assignment("07_pretraining", "Exercises 07: pretraining", SETUP, EXERCISES)
