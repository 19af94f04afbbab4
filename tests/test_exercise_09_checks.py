"""Exercise notebook 09's checks: the reference solutions pass every hidden case, and the
usual wrong solutions (each right on the easy cases) pass none, so they earn nothing.

The wrong solutions are written here by hand, one per slip the hidden cases are built to catch.
"""

import pytest
import torch

from llmkit.grading import ASSIGNMENTS
from llmkit.grading.exercise import hidden_cases

EXERCISES = {exercise.id: exercise for exercise in ASSIGNMENTS["09_fine_tuning"].exercises}


def mean_pool(hidden, idx, pad_id):
    real = (idx != pad_id).to(hidden.dtype)[:, :, None]
    return (hidden * real).sum(dim=1) / real.sum(dim=1)


def mean_pool_everything(hidden, idx, pad_id):
    return hidden.mean(dim=1)


def mean_pool_as_if_right_padded(hidden, idx, pad_id):
    lengths = (idx != pad_id).sum(dim=1)
    real = (torch.arange(idx.shape[1])[None] < lengths[:, None]).to(hidden.dtype)[:, :, None]
    return (hidden * real).sum(dim=1) / real.sum(dim=1)


def chat_ids(turns, markers):
    ids, learn = [], []
    for role, content in turns:
        reply = role == "assistant"
        ids += [markers[role], markers["newline"], *content, markers["end"], markers["newline"]]
        learn += [False, False, *[reply] * len(content), reply, False]
    return ids, learn


def chat_example(turns, markers):
    ids, learn = chat_ids(turns, markers)
    last = max(i for i, learned in enumerate(learn) if learned)
    ids, learn = ids[:last + 1], learn[:last + 1]
    return {"input_ids": ids[:-1],
            "labels": [ids[i] if learn[i] else -100 for i in range(1, len(ids))]}


def chat_last_reply_only(turns, markers):
    ids, learn = chat_ids(turns, markers)
    last = max(i for i, learned in enumerate(learn) if learned)
    first = last
    while first > 0 and learn[first - 1]:
        first -= 1
    ids = ids[:last + 1]
    return {"input_ids": ids[:-1],
            "labels": [ids[i] if i >= first else -100 for i in range(1, len(ids))]}


def chat_without_end(turns, markers):
    example = chat_example(turns, markers)
    return {"input_ids": example["input_ids"],
            "labels": [-100 if label == markers["end"] else label for label in example["labels"]]}


def lora_forward(x, weight, bias, A, B, alpha):
    return x @ weight.T + bias + (alpha / A.shape[0]) * (x @ A.T @ B.T)


def lora_scaled_by_alpha(x, weight, bias, A, B, alpha):
    return x @ weight.T + bias + alpha * (x @ A.T @ B.T)


def lora_without_bias(x, weight, bias, A, B, alpha):
    return x @ weight.T + (alpha / A.shape[0]) * (x @ A.T @ B.T)


def merge_conv1d(weight, A, B, alpha):
    return weight + (alpha / A.shape[0]) * (B @ A).T


def merge_as_linear(weight, A, B, alpha):
    return weight + (alpha / A.shape[0]) * (B @ A)


def merge_reshaped(weight, A, B, alpha):   # right shape, wrong layout
    return weight + (alpha / A.shape[0]) * (B @ A).reshape(weight.shape)


def lora_count(layers, targets, rank):
    return sum(rank * (n_in + n_out) for name, (n_out, n_in) in layers.items()
               if any(name == t or name.endswith("." + t) for t in targets))


def lora_count_ends_with(layers, targets, rank):
    return sum(rank * (n_in + n_out) for name, (n_out, n_in) in layers.items()
               if any(name.endswith(t) for t in targets))


def lora_count_per_target(layers, targets, rank):
    return sum(rank * (n_in + n_out) for name, (n_out, n_in) in layers.items()
               for t in targets if name == t or name.endswith("." + t))


RIGHT = {"finetune.mean_pool": mean_pool, "finetune.chat_example": chat_example,
         "finetune.lora_forward": lora_forward, "finetune.merge_conv1d": merge_conv1d,
         "finetune.lora_count": lora_count}
WRONG = [("finetune.mean_pool", mean_pool_everything),
         ("finetune.mean_pool", mean_pool_as_if_right_padded),
         ("finetune.chat_example", chat_last_reply_only),
         ("finetune.chat_example", chat_without_end),
         ("finetune.lora_forward", lora_scaled_by_alpha),
         ("finetune.lora_forward", lora_without_bias),
         ("finetune.merge_conv1d", merge_as_linear),
         ("finetune.merge_conv1d", merge_reshaped),
         ("finetune.lora_count", lora_count_ends_with),
         ("finetune.lora_count", lora_count_per_target)]


def passed(exercise, function, cases):
    results = []
    for case in cases:
        args = [a.clone() if isinstance(a, torch.Tensor) else a for a in case.args]
        try:
            results.append(exercise.compare(function(*args), case) is None)
        except Exception:   # a shape error is a failed case
            results.append(False)
    return results


def test_every_task_is_checked():
    assert set(EXERCISES) == set(RIGHT)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("exercise_id", sorted(RIGHT))
def test_reference_solutions_pass_every_case(exercise_id, seed):
    exercise = EXERCISES[exercise_id]
    for hidden in (False, True):
        cases = exercise.make_cases(torch.Generator().manual_seed(seed), hidden)
        assert all(passed(exercise, RIGHT[exercise_id], cases)), (exercise_id, hidden)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("exercise_id, wrong", WRONG, ids=lambda v: getattr(v, "__name__", v))
def test_a_usual_slip_passes_no_hidden_case(exercise_id, wrong, seed):
    exercise = EXERCISES[exercise_id]
    cases = hidden_cases(exercise, seed)
    assert not any(passed(exercise, wrong, cases)), [c.note for c, ok in
                                                     zip(cases, passed(exercise, wrong, cases)) if ok]


def test_a_slip_gets_a_message_that_names_it():
    exercise = EXERCISES["finetune.lora_forward"]
    case = exercise.make_cases(torch.Generator().manual_seed(0), False)[0]
    message = exercise.compare(lora_scaled_by_alpha(*case.args), case)
    assert "alpha divided by the rank" in message
    exercise = EXERCISES["finetune.chat_example"]
    case = exercise.make_cases(torch.Generator().manual_seed(0), False)[1]
    message = exercise.compare(chat_last_reply_only(*case.args), case)
    assert "should be" in message and "every reply" in message
