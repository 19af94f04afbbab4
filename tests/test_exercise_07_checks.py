"""Exercise notebook 07's checks: the reference solutions pass every hidden case; the lesson's
own code, pasted as the answer, fails a hidden case of every task but the warm-up; the usual
wrong solutions fail a hidden case (and, where the statement names the clause they get wrong,
an instant case too); and every finished piece a task rules out is reported as forbidden.

The solutions, the lesson's code and the slips are written here by hand.
"""

import math

import pytest
import torch
import torch.nn.functional as F

from llmkit.grading import ASSIGNMENTS, check
from llmkit.grading.exercise import hidden_cases

from exercise_support import instant_cases, passed

EXERCISES = {exercise.id: exercise for exercise in ASSIGNMENTS["07_pretraining"].exercises}


# --- the reference solutions (as in exercises/source/07_pretraining.ipynb) ------------------

def get_batch(ids, batch_size, context_length, generator):
    starts = torch.randint(0, len(ids) - context_length, (batch_size,), generator=generator)
    x = torch.stack([ids[s : s + context_length] for s in starts])
    y = torch.stack([ids[s + 1 : s + 1 + context_length] for s in starts])
    return x, y


def learning_rate(step, max_lr, min_lr, warmup_steps, decay_start, decay_steps):
    if step < warmup_steps:
        return max_lr * (step + 1) / warmup_steps
    if step < decay_start:
        return max_lr
    if step >= decay_steps:
        return min_lr
    progress = (step - decay_start) / (decay_steps - decay_start)
    return min_lr + 0.5 * (1 + math.cos(math.pi * progress)) * (max_lr - min_lr)


def decay_split(params):
    trainable = [(name, shape) for name, (shape, train) in params.items() if train]
    return ([name for name, shape in trainable if len(shape) >= 2],
            [name for name, shape in trainable if len(shape) < 2])


def clip_gradients(grads, max_norm, loss_scale):
    if not all(bool(torch.isfinite(g).all()) for g in grads):
        return None, None
    grads = [g / loss_scale for g in grads]
    norm = math.sqrt(sum((g.double() ** 2).sum().item() for g in grads))
    scale = min(1.0, max_norm / (norm + 1e-6))
    return [g * scale for g in grads], norm


def accumulated_gradient(weight, micro_batches):
    w = weight.clone().requires_grad_()
    counted = [int((targets != -100).sum()) for _, targets in micro_batches]
    for (x, targets), count in zip(micro_batches, counted):
        (F.cross_entropy(x @ w.T, targets) * count / sum(counted)).backward()
    return w.grad


def adamw_step(param, grad, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps, weight_decay):
    param = param * (1 - lr * weight_decay)
    exp_avg = beta1 * exp_avg + (1 - beta1) * grad
    exp_avg_sq = beta2 * exp_avg_sq + (1 - beta2) * grad * grad
    m_hat = exp_avg / (1 - beta1 ** step)
    v_hat = exp_avg_sq / (1 - beta2 ** step)
    return param - lr * m_hat / (torch.sqrt(v_hat) + eps), exp_avg, exp_avg_sq


RIGHT = {"pretrain.get_batch": get_batch, "pretrain.learning_rate": learning_rate,
         "pretrain.decay_split": decay_split, "pretrain.clip": clip_gradients,
         "pretrain.accumulate": accumulated_gradient, "pretrain.adamw": adamw_step}


# --- lesson 07's own code, pasted into each task's signature -------------------------------

def lesson_learning_rate(step, max_lr, min_lr, warmup_steps, decay_start, decay_steps):
    # my_learning_rate of lesson 07 (the extra argument ignored)
    if step < warmup_steps:
        return max_lr * (step + 1) / warmup_steps
    if step >= decay_steps:
        return min_lr
    progress = (step - warmup_steps) / (decay_steps - warmup_steps)
    return min_lr + 0.5 * (1 + math.cos(math.pi * progress)) * (max_lr - min_lr)


def lesson_decay_split(params):
    # my_decay_split of lesson 07, on shapes: every parameter, by its dimensions
    decay, no_decay = [], []
    for name, (shape, _) in params.items():
        (decay if len(shape) >= 2 else no_decay).append(name)
    return decay, no_decay


def lesson_clip(grads, max_norm, loss_scale):
    # my_clip_gradients of lesson 07, on copies of the gradients
    grads = [g.clone() for g in grads]
    total_norm = torch.sqrt(sum((g.float() ** 2).sum() for g in grads))
    scale = min(1.0, max_norm / (total_norm.item() + 1e-6))
    for g in grads:
        g.mul_(scale)
    return grads, total_norm.item()


def lesson_accumulation(weight, micro_batches):
    # lesson 07's accumulation: each loss divided by the number of micro-batches
    w = weight.clone().requires_grad_()
    for x, targets in micro_batches:
        (F.cross_entropy(x @ w.T, targets) / len(micro_batches)).backward()
    return w.grad


LESSON = [("pretrain.learning_rate", lesson_learning_rate),
          ("pretrain.decay_split", lesson_decay_split),
          ("pretrain.clip", lesson_clip),
          ("pretrain.accumulate", lesson_accumulation)]


# --- the usual slips -----------------------------------------------------------------------

def schedule_warmup_off_by_one(step, max_lr, min_lr, warmup_steps, decay_start, decay_steps):
    if step < warmup_steps:
        return max_lr * step / warmup_steps
    return learning_rate(step, max_lr, min_lr, warmup_steps, decay_start, decay_steps)


def schedule_cosine_from_warmup(step, max_lr, min_lr, warmup_steps, decay_start, decay_steps):
    if warmup_steps <= step < decay_steps:
        progress = (step - warmup_steps) / (decay_steps - warmup_steps)
        return min_lr + 0.5 * (1 + math.cos(math.pi * progress)) * (max_lr - min_lr)
    return learning_rate(step, max_lr, min_lr, warmup_steps, decay_start, decay_steps)


def decay_split_by_name(params):   # "bias" and "norm" by name: misses 1-D gains named otherwise
    trainable = [name for name, (_, train) in params.items() if train]
    no_decay = [n for n in trainable if n.endswith("bias") or "norm" in n]
    return [n for n in trainable if n not in no_decay], no_decay


def clip_before_unscaling(grads, max_norm, loss_scale):
    if not all(bool(torch.isfinite(g).all()) for g in grads):
        return None, None
    norm = math.sqrt(sum((g.double() ** 2).sum().item() for g in grads))
    scale = min(1.0, max_norm / (norm + 1e-6))
    return [g * scale / loss_scale for g in grads], norm / loss_scale


def clip_without_overflow_check(grads, max_norm, loss_scale):
    grads = [g / loss_scale for g in grads]
    norm = math.sqrt(sum((g.double() ** 2).sum().item() for g in grads))
    scale = min(1.0, max_norm / (norm + 1e-6))
    return [g * scale for g in grads], norm


def accumulation_by_rows(weight, micro_batches):
    w = weight.clone().requires_grad_()
    total = sum(len(t) for _, t in micro_batches)
    for x, targets in micro_batches:
        (F.cross_entropy(x @ w.T, targets) * len(targets) / total).backward()
    return w.grad


def accumulation_summed(weight, micro_batches):
    w = weight.clone().requires_grad_()
    for x, targets in micro_batches:
        F.cross_entropy(x @ w.T, targets).backward()
    return w.grad


def adamw_without_bias_correction(param, grad, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps,
                                  weight_decay):
    param = param * (1 - lr * weight_decay)
    exp_avg = beta1 * exp_avg + (1 - beta1) * grad
    exp_avg_sq = beta2 * exp_avg_sq + (1 - beta2) * grad * grad
    return param - lr * exp_avg / (torch.sqrt(exp_avg_sq) + eps), exp_avg, exp_avg_sq


def adamw_decay_after_update(param, grad, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps,
                             weight_decay):
    new, exp_avg, exp_avg_sq = adamw_step(param, grad, exp_avg, exp_avg_sq, step, lr, beta1, beta2,
                                          eps, 0.0)
    return new * (1 - lr * weight_decay), exp_avg, exp_avg_sq


def adamw_eps_inside_the_root(param, grad, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps,
                              weight_decay):
    param = param * (1 - lr * weight_decay)
    exp_avg = beta1 * exp_avg + (1 - beta1) * grad
    exp_avg_sq = beta2 * exp_avg_sq + (1 - beta2) * grad * grad
    m_hat = exp_avg / (1 - beta1 ** step)
    v_hat = exp_avg_sq / (1 - beta2 ** step)
    return param - lr * m_hat / torch.sqrt(v_hat + eps), exp_avg, exp_avg_sq


# (task, slip, whether the statement names the clause, so the instant check must catch it)
WRONG = [("pretrain.learning_rate", schedule_warmup_off_by_one, True),
         ("pretrain.learning_rate", schedule_cosine_from_warmup, True),
         ("pretrain.decay_split", decay_split_by_name, False),
         ("pretrain.clip", clip_before_unscaling, True),
         ("pretrain.clip", clip_without_overflow_check, True),
         ("pretrain.accumulate", lesson_accumulation, True),
         ("pretrain.accumulate", accumulation_by_rows, True),
         ("pretrain.accumulate", accumulation_summed, True),
         ("pretrain.adamw", adamw_without_bias_correction, True),
         ("pretrain.adamw", adamw_decay_after_update, True),
         ("pretrain.adamw", adamw_eps_inside_the_root, False)]


def test_every_task_is_checked_and_the_points_add_up():
    assert set(EXERCISES) == set(RIGHT)
    assert ASSIGNMENTS["07_pretraining"].max_points == 13


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("exercise_id", sorted(RIGHT))
def test_reference_solutions_pass_every_case(exercise_id, seed):
    exercise = EXERCISES[exercise_id]
    for cases in (instant_cases(exercise, seed),
                  hidden_cases(exercise, seed)):
        assert all(passed(exercise, RIGHT[exercise_id], cases)), exercise_id


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("exercise_id, lesson", LESSON, ids=[e for e, _ in LESSON])
def test_the_lessons_own_code_fails_a_hidden_case(exercise_id, lesson, seed):
    exercise = EXERCISES[exercise_id]
    assert not all(passed(exercise, lesson, hidden_cases(exercise, seed)))


def test_the_warm_up_is_the_lessons_own_code():
    exercise = EXERCISES["pretrain.get_batch"]
    assert exercise.title.startswith("Warm-up")
    assert all(passed(exercise, get_batch, hidden_cases(exercise, 0)))


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("exercise_id, wrong, named", WRONG,
                         ids=[w.__name__ for _, w, _ in WRONG])
def test_a_usual_slip_fails_a_hidden_case_and_the_instant_check(exercise_id, wrong, named, seed):
    exercise = EXERCISES[exercise_id]
    assert not all(passed(exercise, wrong, hidden_cases(exercise, seed)))
    if named:
        instant = instant_cases(exercise, seed)
        assert not all(passed(exercise, wrong, instant))


def test_the_instant_check_tries_unequal_micro_batches_and_ignored_targets():
    for seed in range(5):
        cases = instant_cases(EXERCISES["pretrain.accumulate"], seed)
        sizes = [[len(t) for _, t in case.args[1]] for case in cases]
        assert any(len(set(s)) > 1 for s in sizes)
        assert any((t == -100).any() for case in cases for _, t in case.args[1])


def test_slips_get_a_message_that_names_them():
    exercise = EXERCISES["pretrain.accumulate"]
    case = instant_cases(exercise, 0)[0]
    assert "whatever its size" in exercise.compare(lesson_accumulation(*case.args), case)
    case = instant_cases(exercise, 0)[1]
    assert "counted targets" in exercise.compare(accumulation_by_rows(*case.args), case)
    exercise = EXERCISES["pretrain.clip"]
    case = instant_cases(exercise, 0)[0]
    assert "unscale first" in exercise.compare(clip_before_unscaling(*case.args), case)
    exercise = EXERCISES["pretrain.learning_rate"]
    case = next(c for c in instant_cases(exercise, 0)
                if c.args[0] == 0 and c.args[3] > 0)
    assert "warmup" in exercise.compare(schedule_warmup_off_by_one(*case.args), case)


# --- forbidden routes: each is reported "forbidden" by the instant check --------------------

def forbidden_get_batch(ids, batch_size, context_length, generator):
    from llmkit.data import get_batch as finished
    return finished(ids, batch_size, context_length, generator=generator)


def forbidden_schedule(step, max_lr, min_lr, warmup_steps, decay_start, decay_steps):
    from types import SimpleNamespace

    from llmkit.optim import learning_rate as finished
    if step < decay_start:
        return min(max_lr, max_lr * (step + 1) / max(warmup_steps, 1))
    config = SimpleNamespace(lr=max_lr, min_lr=min_lr, warmup_steps=0,
                             decay_steps=decay_steps - decay_start)
    return finished(step - decay_start, config)


def forbidden_lambda_lr(step, max_lr, min_lr, warmup_steps, decay_start, decay_steps):
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=max_lr)
    rule = lambda s: learning_rate(s, max_lr, min_lr, warmup_steps, decay_start, decay_steps) / max_lr
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, rule)
    for _ in range(step):
        optimizer.step()
        scheduler.step()
    return optimizer.param_groups[0]["lr"]


def forbidden_decay_split(params):
    from llmkit.optim import decay_parameter_names
    module = torch.nn.Module()
    for index, (name, (shape, trainable)) in enumerate(params.items()):
        module.register_parameter(f"p{index}", torch.nn.Parameter(torch.zeros(shape),
                                                                  requires_grad=trainable))
    decay, no_decay = decay_parameter_names(module)
    names = list(params)
    return [names[int(n[1:])] for n in decay], [names[int(n[1:])] for n in no_decay]


def forbidden_clip(grads, max_norm, loss_scale):
    if not all(bool(torch.isfinite(g).all()) for g in grads):
        return None, None
    params = [torch.nn.Parameter(torch.zeros_like(g)) for g in grads]
    for p, g in zip(params, grads):
        p.grad = g / loss_scale
    norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
    return [p.grad for p in params], float(norm)


def forbidden_unscale(grads, max_norm, loss_scale):
    found = torch.zeros(1)
    grads = [g.clone() for g in grads]
    torch._amp_foreach_non_finite_check_and_unscale_(grads, found, torch.tensor([1 / loss_scale]))
    if found.item():
        return None, None
    norm = math.sqrt(sum((g.double() ** 2).sum().item() for g in grads))
    return [g * min(1.0, max_norm / (norm + 1e-6)) for g in grads], norm


def forbidden_grad_scaler(grads, max_norm, loss_scale):
    params = [torch.nn.Parameter(torch.zeros_like(g)) for g in grads]
    for p, g in zip(params, grads):
        p.grad = g.clone()
    scaler = torch.amp.GradScaler("cpu", init_scale=loss_scale)
    optimizer = torch.optim.SGD(params, lr=0.0)
    scaler.scale(torch.zeros(()))                     # sets up the scale, as scaling a loss does
    scaler.unscale_(optimizer)
    if sum(v.item() for v in scaler._check_inf_per_device(optimizer).values()):
        return None, None
    norm = math.sqrt(sum((p.grad.double() ** 2).sum().item() for p in params))
    return [p.grad * min(1.0, max_norm / (norm + 1e-6)) for p in params], norm


def forbidden_accumulation(weight, micro_batches):
    from llmkit.optim import learning_rate as finished   # any piece of llmkit.optim is ruled out
    finished(0, type("C", (), dict(lr=1.0, min_lr=0.0, warmup_steps=0, decay_steps=1))())
    return accumulated_gradient(weight, micro_batches)


def forbidden_adamw(param, grad, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps, weight_decay):
    leaf = torch.nn.Parameter(param.clone())
    optimizer = torch.optim.AdamW([leaf], lr=lr, betas=(beta1, beta2), eps=eps,
                                  weight_decay=weight_decay)
    if step > 1:
        optimizer.state[leaf] = {"step": torch.tensor(float(step - 1)),
                                 "exp_avg": exp_avg.clone(), "exp_avg_sq": exp_avg_sq.clone()}
    leaf.grad = grad.clone()
    optimizer.step()
    state = optimizer.state[leaf]
    return leaf.detach(), state["exp_avg"], state["exp_avg_sq"]


FORBIDDEN = [("pretrain.get_batch", forbidden_get_batch),
             ("pretrain.learning_rate", forbidden_schedule),
             ("pretrain.learning_rate", forbidden_lambda_lr),
             ("pretrain.decay_split", forbidden_decay_split),
             ("pretrain.clip", forbidden_clip),
             ("pretrain.clip", forbidden_unscale),
             ("pretrain.clip", forbidden_grad_scaler),
             ("pretrain.accumulate", forbidden_accumulation),
             ("pretrain.adamw", forbidden_adamw)]


def test_every_task_has_a_forbidden_route_here():
    assert {exercise_id for exercise_id, _ in FORBIDDEN} == set(RIGHT)


@pytest.mark.parametrize("exercise_id, route", FORBIDDEN, ids=[r.__name__ for _, r in FORBIDDEN])
def test_a_ruled_out_piece_is_reported_forbidden(exercise_id, route):
    result = check(exercise_id, route)
    assert result.status == "forbidden", str(result)
    assert "rules that out" in result.message
