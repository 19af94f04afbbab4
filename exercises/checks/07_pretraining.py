"""The checks of exercise notebook 07 (pretraining): instant and hidden cases.

Every expected value is computed before the learner's function runs, from llmkit's finished
pieces or from PyTorch itself:

- random batches: `llmkit.data.get_batch` with a generator seeded the same;
- warmup, hold, cosine: `llmkit.optim.learning_rate` for the warmup and (shifted to start at
  the end of the hold) for the cosine; the hold is max_lr;
- which parameters decay: `llmkit.optim.decay_parameter_names` on real GPT models, some of
  whose parameters are frozen;
- unscaling and clipping: `torch.isfinite` for the overflow, then
  `torch.nn.utils.clip_grad_norm_` on the gradients divided by the loss scale;
- gradient accumulation: autograd on the whole batch at once (F.cross_entropy, which leaves
  out targets equal to -100);
- one AdamW step: `torch.optim.AdamW` itself.

While the learner's function runs, those finished pieces are off limits (calling one is
reported as "forbidden").

A task earns its points only when every hidden case passes, so each usual slip fails at
least one hidden case, and the instant cases already try every clause of the statement: the
first warmup step, a hold, steps past the end, a model with frozen parameters, an overflow
(inf and nan) and a loss scale, micro-batches of different sizes and ignored targets, and
AdamW's first step.
"""

from __future__ import annotations

from types import SimpleNamespace

import torch
import torch.nn.functional as F

from llmkit.data.batches import get_batch as reference_get_batch
from llmkit.grading.exercise import (Assignment, Case, Exercise, compare_numbers, compare_tensors,
                                     describe_type)
from llmkit.grading.exercise import random_int as _int
from llmkit.grading.exercise import random_normal as _randn
from llmkit.model import GPT, GPTConfig
from llmkit.optim import decay_parameter_names
from llmkit.optim import learning_rate as reference_learning_rate

SETUP = "import math\nimport torch\nimport torch.nn.functional as F\nfrom llmkit.grading import check\n"

TRAIN = ("llmkit.optim",) + tuple(f"llmkit.train.{name}" for name in (
    "learning_rate", "decay_parameter_names", "make_optimizer", "Trainer", "stream_loss",
))
BATCH_OPS = ("llmkit.data.get_batch", "llmkit.data.batches.get_batch")
SCHEDULE_OPS = ("torch.optim.lr_scheduler",)
CLIP_OPS = ("torch.nn.utils.clip_grad_norm_", "torch.nn.utils.clip_grad.clip_grad_norm_",
            "torch.nn.utils.clip_grad_norm", "torch.nn.utils.clip_grads_with_norm_",
            "torch.nn.utils.get_total_norm", "torch.amp.GradScaler",
            "torch._amp_foreach_non_finite_check_and_unscale_")
ADAM_OPS = ("torch.optim.adam", "torch.optim.adamw", "torch.optim._functional",
            "torch.optim.AdamW", "torch.optim.Adam", "torch.optim.adamw.AdamW",
            "torch.optim.adam.Adam", "torch.optim.adamw.adamw", "torch.optim.adam.adam",
            "torch.optim._functional.adamw", "torch.optim._functional.adam")


# --- 1. warm-up: random batches ----------------------------------------------------------

def _batch_case(generator, n, batch_size, context_length, note=""):
    ids = torch.randint(0, 50, (n,), generator=generator)
    seed = _int(generator, 0, 10_000)
    expected = reference_get_batch(ids, batch_size, context_length,
                                   generator=torch.Generator().manual_seed(seed))
    return Case((ids, batch_size, context_length, torch.Generator().manual_seed(seed)),
                expected, note)


def _batch_cases(generator, hidden):
    cases = [_batch_case(generator, _int(generator, 40, 300), _int(generator, 2, 9),
                         _int(generator, 2, 17)) for _ in range(4 if hidden else 2)]
    cases.append(_batch_case(generator, 9, 5, 8, "a stream of exactly context_length + 1 ids"))
    if hidden:
        cases.append(_batch_case(generator, 30, 1, 1, "batch_size 1 and context_length 1"))
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


# --- 2. warmup, hold, then a cosine -----------------------------------------------------------

def _schedule_value(step, max_lr, min_lr, warmup, decay_start, decay_end):
    """From llmkit's warmup + cosine: its warmup, a hold at max_lr, then its cosine shifted
    to start at decay_start."""
    if step < warmup:
        config = SimpleNamespace(lr=max_lr, min_lr=min_lr, warmup_steps=warmup,
                                 decay_steps=decay_end)
        return reference_learning_rate(step, config)
    if step < decay_start:
        return max_lr
    config = SimpleNamespace(lr=max_lr, min_lr=min_lr, warmup_steps=0,
                             decay_steps=decay_end - decay_start)
    return reference_learning_rate(step - decay_start, config)


def _schedule_setting(generator, setting, all_steps=False):
    max_lr, min_lr, warmup, decay_start, decay_end = setting
    if all_steps:
        steps = set(range(decay_end + 3))
    else:
        steps = {0, max(warmup - 1, 0), warmup, (warmup + decay_start) // 2,
                 max(decay_start - 1, 0), decay_start, (decay_start + decay_end) // 2,
                 max(decay_end - 1, 0), decay_end, decay_end + 7, _int(generator, 0, decay_end + 1)}
    note = (f"max_lr={max_lr}, min_lr={min_lr}, warmup_steps={warmup}, "
            f"decay_start={decay_start}, decay_steps={decay_end}")
    return [Case((step, max_lr, min_lr, warmup, decay_start, decay_end),
                 _schedule_value(step, max_lr, min_lr, warmup, decay_start, decay_end),
                 f"{note}, step={step}") for step in sorted(steps)]


def _schedule_cases(generator, hidden):
    if not hidden:
        return (_schedule_setting(generator, (1e-3, 1e-4, 4, 10, 20), all_steps=True)
                + _schedule_setting(generator, (0.5, 0.05, 0, 3, 8), all_steps=True))
    settings = [(1e-3, 1e-4, 10, 60, 100), (6e-4, 6e-5, 5, 5, 40), (2e-3, 0.0, 100, 800, 1000),
                (1.0, 0.5, 0, 10, 20), (3e-3, 3e-4, 20, 30, 30), (1e-2, 1e-3, 1, 3, 9)]
    cases = []
    for setting in settings:
        cases += _schedule_setting(generator, setting)
    return cases


def _compare_schedule(answer, case):
    problem = compare_numbers(answer, case.expected, name="the learning rate", rel=1e-6, abs_=1e-12)
    if problem:
        step, max_lr, min_lr, warmup, decay_start, decay_end = case.args
        if step < warmup:
            problem += (f" Step {step} is in the warmup, which reaches max_lr at step "
                        f"{warmup - 1}, its last step, and never gives 0.")
        elif step < decay_start:
            problem += " This step is in the hold, between the warmup and the decay."
        elif step < decay_end:
            problem += " This step is in the cosine, which starts at decay_start."
    return problem


# --- 3. which parameters decay, with some frozen --------------------------------------------

_MODELS = [
    dict(vocab_size=30, context_length=16, n_layer=1, n_head=2, d_model=8),
    dict(vocab_size=20, context_length=8, n_layer=2, n_head=2, d_model=8, bias=False),
    dict(vocab_size=25, context_length=8, n_layer=1, n_head=2, d_model=8, tie_weights=False,
         norm="rmsnorm"),
    dict(vocab_size=12, context_length=8, n_layer=2, n_head=4, d_model=16, position="sinusoidal",
         mlp="swiglu"),
]


def _freeze(model, rule):
    """Freeze the parameters whose names `rule` picks (as fine-tuning does)."""
    for name, param in model.named_parameters():
        if rule(name):
            param.requires_grad_(False)
    return model


def _params_case(model, note):
    params = {name: (tuple(p.shape), p.requires_grad) for name, p in model.named_parameters()}
    return Case((params,), decay_parameter_names(model), note)


def _decay_cases(generator, hidden):
    everything = _params_case(GPT(GPTConfig(**_MODELS[0])), "a GPT, every parameter trainable")
    blocks_frozen = _params_case(_freeze(GPT(GPTConfig(**_MODELS[1])), lambda n: "blocks." in n),
                                 "a GPT whose blocks are frozen")
    if not hidden:
        return [everything, blocks_frozen]
    cases = [everything, blocks_frozen,
             _params_case(_freeze(GPT(GPTConfig(**_MODELS[2])), lambda n: "embedding" in n),
                          "untied embeddings frozen, RMSNorm"),
             _params_case(_freeze(GPT(GPTConfig(**_MODELS[3])),
                                  lambda n: n.endswith("bias") or "norm" in n),
                          "every vector frozen, the matrices trainable")]
    params = {"conv.weight": ((4, 3, 3, 3), True), "conv.bias": ((4,), True),
              "scale": ((1,), True), "table": ((10, 2), False), "gain": ((7,), False),
              "head.weight": ((5, 7), True)}
    cases.append(Case((params,), (["conv.weight", "head.weight"], ["conv.bias", "scale"]),
                      "a 4-D weight, 1-element parameters, a frozen matrix and a frozen vector"))
    return cases


def _compare_decay(answer, case):
    if not isinstance(answer, (tuple, list)) or len(answer) != 2:
        return ("decay_split should return two lists (decay, no_decay), but it returned "
                f"{describe_type(answer)}.")
    decay, no_decay = (list(part) if isinstance(part, (list, tuple)) else part for part in answer)
    if not isinstance(decay, list) or not isinstance(no_decay, list):
        return "both parts of the answer should be lists of parameter names."
    params = case.args[0]
    expected_decay, expected_no_decay = case.expected
    for name, (shape, trainable) in params.items():
        where = ("decay" if name in decay else "") + ("no_decay" if name in no_decay else "")
        wanted = ("decay" if name in expected_decay else
                  "no_decay" if name in expected_no_decay else "")
        if where == "decayno_decay":
            return f"{name!r} (shape {shape}) is in both lists; put it in one."
        if where == wanted:
            continue
        if not trainable:
            return (f"{name!r} (shape {shape}) is frozen, but it is in {where}: a frozen "
                    "parameter goes to no optimizer group at all.")
        if where == "":
            return (f"{name!r} (shape {shape}) is trainable but in neither list; every "
                    "trainable parameter goes in one.")
        return f"{name!r} (shape {shape}) is in {where}, but belongs in {wanted}."
    extra = [name for name in decay + no_decay if name not in params]
    if extra:
        return f"{extra[0]!r} is not a parameter of this model."
    if decay != expected_decay or no_decay != expected_no_decay:
        return "each list should keep the parameters in the order the dict gives them."
    return None


# --- 4. unscale, check for overflow, clip -------------------------------------------------

def _clip_case(grads, max_norm, loss_scale, note=""):
    if not all(torch.isfinite(g).all() for g in grads):
        expected = (None, None)                      # an overflow: the step is skipped
    else:
        params = [torch.nn.Parameter(torch.zeros_like(g)) for g in grads]
        for param, grad in zip(params, grads):
            param.grad = grad / loss_scale
        norm = torch.nn.utils.clip_grad_norm_(params, max_norm).item()
        expected = ([p.grad for p in params], norm)
    return Case(([g.clone() for g in grads], max_norm, loss_scale), expected, note)


def _some_grads(generator, scale, dtype=torch.float32):
    return [_randn(generator, *shape, dtype=dtype) * scale for shape in
            [(_int(generator, 2, 6), _int(generator, 2, 6)), (_int(generator, 2, 8),)]]


def _overflowed(generator, bad, scale):
    grads = _some_grads(generator, scale)
    grads[1][_int(generator, 0, len(grads[1]))] = bad
    return grads


def _clip_cases(generator, hidden):
    cases = [_clip_case(_some_grads(generator, 3.0 * 1024), 1.0, 1024.0,
                        "loss scale 1024, a true norm above max_norm"),
             _clip_case(_some_grads(generator, 0.01 * 2.0**16), 1.0, 2.0**16,
                        "loss scale 65536, a true norm below max_norm (the scaled one is above)"),
             _clip_case(_overflowed(generator, float("inf"), 512.0), 1.0, 512.0,
                        "an inf in one gradient (an overflow)"),
             _clip_case(_overflowed(generator, float("nan"), 512.0), 1.0, 512.0,
                        "a nan in one gradient")]
    if not hidden:
        return cases
    cases += [
        _clip_case(_some_grads(generator, 10.0 * 4096), 0.5, 4096.0),
        _clip_case([_randn(generator, 3, 4, 5) * 300.0], 2.0, 256.0, "a single 3-D gradient"),
        _clip_case([torch.full((4,), 3.0 * 128), torch.full((2, 2), 4.0 * 128)], 5.0, 128.0,
                   "gradients whose own norms are both below max_norm, together above"),
        _clip_case([_randn(generator, 6, dtype=torch.float64) * 5], 1.0, 1.0,
                   "a float64 gradient, loss scale 1"),
        _clip_case(_overflowed(generator, float("-inf"), 2.0**16), 1.0, 2.0**16, "a -inf"),
    ]
    return cases


def _compare_clip(answer, case):
    grads, max_norm, loss_scale = case.args
    if not isinstance(answer, (tuple, list)) or len(answer) != 2:
        return ("clip_gradients should return a pair (clipped gradients, norm), but it "
                f"returned {describe_type(answer)}.")
    clipped, norm = answer
    expected_grads, expected_norm = case.expected
    if expected_grads is None:
        if clipped is None and norm is None:
            return None
        return ("a gradient holds inf or nan here (an overflow of the scaled loss): the step "
                "must be skipped, so return (None, None).")
    if clipped is None:
        return "every gradient is finite here, so the step is not skipped."
    problem = compare_numbers(norm, expected_norm, name="the norm before clipping")
    if problem:
        scaled = sum(float(g.double().square().sum()) for g in grads) ** 0.5
        separate = max(float(g.double().norm()) for g in grads) / loss_scale
        if loss_scale != 1 and compare_numbers(norm, scaled) is None:
            problem += (" That is the norm of the scaled gradients; unscale first: max_norm "
                        "is about the true gradients.")
        elif len(grads) > 1 and compare_numbers(norm, separate) is None:
            problem += " That is one tensor's norm; the global norm covers every tensor together."
        return problem
    if not isinstance(clipped, (list, tuple)) or len(clipped) != len(expected_grads):
        return (f"the clipped gradients should be a list of {len(expected_grads)} tensors, "
                f"but they are {describe_type(clipped)}.")
    for index, (got, expected) in enumerate(zip(clipped, expected_grads)):
        problem = compare_tensors(got, expected, name=f"clipped gradient [{index}]",
                                  any_float_dtype=True, atol=1e-6, rtol=1e-4)
        if problem:
            scaled = sum(float(g.double().square().sum()) for g in grads) ** 0.5
            too_early = grads[index].double() / loss_scale * min(1.0, max_norm / (scaled + 1e-6))
            if (isinstance(got, torch.Tensor) and got.shape == too_early.shape
                    and torch.allclose(got.double(), too_early, atol=1e-6, rtol=1e-4)):
                problem += (" They were clipped against the norm of the scaled gradients; "
                            "unscale first: max_norm is about the true gradients.")
            elif expected_norm < max_norm:
                problem += (" The true norm is below max_norm here, so the gradients are only "
                            "unscaled.")
            return problem
    return None


# --- 5. gradient accumulation over unequal micro-batches -------------------------------------

def _accumulation_case(generator, sizes, n_features, n_classes, ignored=(), note=""):
    """sizes[i] examples in micro-batch i; ignored[i] of its targets are -100 (never all)."""
    weight = _randn(generator, n_classes, n_features, dtype=torch.float64) * 0.5
    batches = []
    for index, size in enumerate(sizes):
        x = _randn(generator, size, n_features, dtype=torch.float64)
        targets = torch.randint(0, n_classes, (size,), generator=generator)
        skip = ignored[index] if index < len(ignored) else 0
        if skip:
            targets[torch.randperm(size, generator=generator)[:skip]] = -100
        batches.append((x, targets))
    leaf = weight.clone().requires_grad_()
    x = torch.cat([b[0] for b in batches])
    targets = torch.cat([b[1] for b in batches])
    F.cross_entropy(x @ leaf.T, targets).backward()   # the whole batch at once is the reference
    return Case((weight, batches), leaf.grad, note)


def _accumulation_cases(generator, hidden):
    cases = [_accumulation_case(generator, [6, 2], 5, 4, note="micro-batches of 6 and 2"),
             _accumulation_case(generator, [4, 4], 3, 6, ignored=[3, 0],
                                note="two micro-batches of 4, three targets of the first ignored")]
    if not hidden:
        return cases
    cases += [
        _accumulation_case(generator, [3, 7, 1], 6, 2, note="micro-batches of 3, 7 and 1"),
        _accumulation_case(generator, [5], 2, 5, ignored=[2], note="a single micro-batch"),
        _accumulation_case(generator, [8, 8, 8], 4, 3, ignored=[0, 6, 2],
                           note="three micro-batches of 8, with 0, 6 and 2 targets ignored"),
        _accumulation_case(generator, [10, 3], 3, 4, ignored=[4, 0],
                           note="micro-batches of 10 and 3, four targets of the first ignored"),
        _accumulation_case(generator, [2, 9, 5, 4], 5, 3,
                           note="four micro-batches of different sizes"),
    ]
    return cases


def _compare_accumulation(answer, case):
    problem = compare_tensors(answer, case.expected, name="the gradient", any_float_dtype=True,
                              atol=1e-6, rtol=1e-4)
    if problem and isinstance(answer, torch.Tensor) and answer.shape == case.expected.shape:
        weight, batches = case.args
        parts = []
        for x, targets in batches:
            leaf = weight.clone().requires_grad_()
            F.cross_entropy(x @ leaf.T, targets).backward()
            parts.append(leaf.grad)
        got = answer.double()
        close = lambda other: torch.allclose(got, other, atol=1e-6, rtol=1e-4)
        rows = sum(len(t) for _, t in batches)
        if close(sum(parts)):
            problem += (" It is the sum of the micro-batches' gradients: the gradients add up "
                        "in .grad, so scale each micro-batch's loss.")
        elif (any((t == -100).any() for _, t in batches)
              and close(sum(g * len(t) / rows for g, (_, t) in zip(parts, batches)))):
            problem += (" The micro-batches are weighted by their number of rows; targets equal "
                        "to -100 do not count, so weight by the counted targets.")
        elif close(sum(parts) / len(parts)):
            problem += (" Each micro-batch counted the same, whatever its size: an example "
                        "(a counted target) should count the same, whichever micro-batch it is in.")
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
             _adamw_case(generator, (5,), 10, 1e-3, (0.9, 0.99), 1e-8, 0.1, "step 10"),
             _adamw_case(generator, (4,), 5, 0.1, (0.9, 0.99), 1e-8, 0.5,
                         "lr 0.1 and weight decay 0.5")]
    if hidden:
        cases += [_adamw_case(generator, (2, 3), 3, 3e-3, (0.8, 0.95), 1e-6, 0.0, "no weight decay"),
                  _adamw_case(generator, (4, 2), 1000, 1e-3, (0.9, 0.999), 1e-8, 0.5,
                              "step 1000 and strong weight decay"),
                  _adamw_case(generator, (6,), 2, 0.1, (0.5, 0.5), 1e-1, 0.01, "a large eps"),
                  _adamw_case(generator, (3, 3), 1, 0.2, (0.9, 0.999), 1e-8, 0.3,
                              "the first step, lr 0.2, weight decay 0.3")]
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
                            "the step number), where eps goes (outside the square root) and "
                            "which param the weight decay shrinks (the old one).")
            return problem
    return None


EXERCISES = [
    Exercise("pretrain.get_batch", "get_batch", 1, "Warm-up: random batches, targets shifted by one",
             _batch_cases, _compare_batch, forbidden=BATCH_OPS + TRAIN,
             hint="The target of x[b, t] is the token right after it in the stream. Draw all "
                  "the starts at once, exactly as the statement says, so the generator gives "
                  "the reference's batch."),
    Exercise("pretrain.learning_rate", "learning_rate", 2, "Warmup, hold, then a cosine",
             _schedule_cases, _compare_schedule, forbidden=TRAIN + SCHEDULE_OPS,
             hint="Four phases, each on its own range of steps. The warmup counts from 0 and "
                  "reaches max_lr on its last step; the cosine's progress is 0 at decay_start "
                  "(not at the end of the warmup) and 1 at decay_steps."),
    Exercise("pretrain.decay_split", "decay_split", 2, "Which parameters decay, some frozen",
             _decay_cases, _compare_decay, forbidden=TRAIN,
             hint="The optimizer only gets the trainable parameters; among those, the number "
                  "of dimensions decides: matrices and up decay, vectors do not."),
    Exercise("pretrain.clip", "clip_gradients", 2, "Unscale, skip on overflow, clip",
             _clip_cases, _compare_clip, forbidden=CLIP_OPS + TRAIN,
             forbidden_ops=("_foreach_norm", "_amp_foreach_non_finite_check_and_unscale_"),
             hint="max_norm is about the true gradients, which the scaled ones are loss_scale "
                  "times too large; and a single inf or nan anywhere means the step is skipped "
                  "before anything is clipped."),
    Exercise("pretrain.accumulate", "accumulated_gradient", 3,
             "Gradient accumulation over unequal micro-batches",
             _accumulation_cases, _compare_accumulation, forbidden=TRAIN,
             hint="The whole batch's loss is a mean over every counted target. Dividing by the "
                  "number of micro-batches is right only when each holds the same number of "
                  "counted targets: weight each micro-batch's mean loss by its share of them."),
    Exercise("pretrain.adamw", "adamw_step", 3, "Stretch: one AdamW step by hand",
             _adamw_cases, _compare_adamw, forbidden=ADAM_OPS + TRAIN,
             forbidden_ops=("_fused_adam_", "_fused_adamw_"),
             hint="Weight decay is decoupled: it shrinks the old parameter on its own, apart "
                  "from the gradient's moments. Both moments start at zero, so each is divided "
                  "by a bias correction that depends on the step; eps keeps the division safe."),
]

ASSIGNMENT = Assignment("07_pretraining", "Exercises 07: pretraining", SETUP, EXERCISES)
