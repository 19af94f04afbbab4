"""Exercise notebook 08's checks: the reference solutions pass every hidden case; lesson 08's
own code, pasted as the answer, fails a hidden case of every task it could be pasted into; the
usual wrong solutions fail a hidden case (and, where the statement names the clause they get
wrong, an instant case too); and every finished piece a task rules out is reported as
forbidden.

The solutions, the lesson's code and the slips are written here by hand.
"""

import pytest
import torch

from llmkit.grading import ASSIGNMENTS, check
from llmkit.grading.exercise import hidden_cases

from exercise_support import instant_cases, passed

EXERCISES = {exercise.id: exercise for exercise in ASSIGNMENTS["08_generation"].exercises}


# --- the reference solutions (as in exercises/source/08_generation.ipynb) ------------------

def temperature_probs(logits, temperature):
    if temperature == 0:
        winners = logits.argmax(dim=-1)
        return torch.nn.functional.one_hot(winners, logits.shape[-1]).to(logits.dtype)
    return torch.softmax(logits / temperature, dim=-1)


def top_k_filter(logits, k):
    V = logits.shape[-1]
    kth_largest = logits.sort(dim=-1, descending=True).values.gather(-1, (k.clamp(max=V) - 1)[:, None])
    return logits.masked_fill(logits < kth_largest, float("-inf"))


def top_p_filter(logits, p, min_keep):
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    sorted_probs = torch.softmax(sorted_logits, dim=-1)
    mass_before = sorted_probs.cumsum(dim=-1) - sorted_probs
    drop_sorted = (mass_before >= p) & (torch.arange(logits.shape[-1]) >= min_keep)
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def repetition_penalty(logits, previous, penalty, window):
    if window is not None:
        previous = previous[:, -window:]
    V = logits.shape[1]
    seen = torch.zeros(logits.shape[0], V + 1, dtype=torch.bool)
    seen = seen.scatter(-1, torch.where(previous >= 0, previous, V), True)[:, :-1]
    penalised = torch.where(logits > 0, logits / penalty, logits * penalty)
    return torch.where(seen, penalised, logits)


def sample_next(logits, n, temperature, top_k, top_p, generator):
    if temperature == 0:
        return [int(logits.argmax())] * n
    row = logits[None] / temperature
    if top_k is not None:
        row = top_k_filter(row, torch.tensor([top_k]))
    if top_p is not None:
        row = top_p_filter(row, top_p, 1)
    probs = torch.softmax(row, dim=-1)[0]
    if n == 0:
        return []
    return torch.multinomial(probs, n, replacement=True, generator=generator).tolist()


RIGHT = {"generation.temperature": temperature_probs, "generation.top_k": top_k_filter,
         "generation.top_p": top_p_filter, "generation.repetition_penalty": repetition_penalty,
         "generation.sample": sample_next}


# --- lesson 08's own code, pasted into each task's signature -------------------------------

def lesson_temperature(logits, temperature):
    # my_temperature of lesson 08
    return logits / temperature


def lesson_top_k(logits, k):
    # my_top_k of lesson 08, row by row with that row's k
    def my_top_k(logits, k):
        kth_largest = logits.sort(dim=-1, descending=True).values[:, k - 1 : k]
        return logits.masked_fill(logits < kth_largest, float("-inf"))
    return torch.cat([my_top_k(logits[b:b + 1], int(k[b])) for b in range(len(k))])


def lesson_top_p(logits, p, min_keep):
    # my_top_p of lesson 08 (min_keep ignored)
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    sorted_probs = sorted_logits.softmax(dim=-1)
    mass_before = sorted_probs.cumsum(dim=-1) - sorted_probs
    drop_sorted = mass_before >= p
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def lesson_penalty(logits, previous, penalty, window):
    # my_repetition_penalty of lesson 08, with the window sliced off as its "try this" says
    if window is not None:
        previous = previous[:, -window:]
    seen = torch.zeros_like(logits, dtype=torch.bool).scatter(-1, previous, True)
    penalised = torch.where(logits > 0, logits / penalty, logits * penalty)
    return torch.where(seen, penalised, logits)


LESSON = [("generation.temperature", lesson_temperature), ("generation.top_k", lesson_top_k),
          ("generation.top_p", lesson_top_p), ("generation.repetition_penalty", lesson_penalty)]


# --- the usual slips -----------------------------------------------------------------------

def temperature_plain_exp(logits, temperature):      # no max subtracted: overflows
    if temperature == 0:
        return temperature_probs(logits, 0)
    e = (logits / temperature).exp()
    return e / e.sum(-1, keepdim=True)


def top_k_one_k_for_all(logits, k):
    return top_k_filter(logits, k[:1].expand(len(k)))


def top_k_exactly_k(logits, k):                      # topk's indices: ties beyond k dropped
    rows = []
    for b in range(len(k)):
        kk = min(int(k[b]), logits.shape[-1])
        keep = torch.zeros(logits.shape[-1], dtype=torch.bool)
        keep[torch.topk(logits[b], kk).indices] = True
        rows.append(logits[b].masked_fill(~keep, float("-inf")))
    return torch.stack(rows)


def top_p_mass_after(logits, p, min_keep):            # drops the token that crosses p
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    mass_after = torch.softmax(sorted_logits, dim=-1).cumsum(dim=-1)
    drop_sorted = (mass_after > p) & (torch.arange(logits.shape[-1]) >= min_keep)
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def top_p_sorted_order(logits, p, min_keep):           # the mask left in sorted order
    sorted_logits, _ = torch.sort(logits, dim=-1, descending=True)
    sorted_probs = torch.softmax(sorted_logits, dim=-1)
    drop = ((sorted_probs.cumsum(dim=-1) - sorted_probs) >= p) & (
        torch.arange(logits.shape[-1]) >= min_keep)
    return logits.masked_fill(drop, float("-inf"))


def penalty_per_occurrence(logits, previous, penalty, window):
    if window is not None:
        previous = previous[:, -window:]
    out = logits.clone()
    for b in range(len(previous)):
        for token in previous[b].tolist():
            if token >= 0:
                out[b, token] = out[b, token] / penalty if out[b, token] > 0 else out[b, token] * penalty
    return out


def penalty_divides_every_sign(logits, previous, penalty, window):
    if window is not None:
        previous = previous[:, -window:]
    V = logits.shape[1]
    seen = torch.zeros(logits.shape[0], V + 1, dtype=torch.bool)
    seen = seen.scatter(-1, torch.where(previous >= 0, previous, V), True)[:, :-1]
    return torch.where(seen, logits / penalty, logits)


def penalty_without_window(logits, previous, penalty, window):
    return repetition_penalty(logits, previous, penalty, None)


def sample_filters_before_temperature(logits, n, temperature, top_k, top_p, generator):
    if temperature == 0:
        return [int(logits.argmax())] * n
    row = logits[None]
    if top_k is not None:
        row = top_k_filter(row, torch.tensor([top_k]))
    if top_p is not None:
        row = top_p_filter(row, top_p, 1)
    probs = torch.softmax(row / temperature, dim=-1)[0]
    if n == 0:
        return []
    return torch.multinomial(probs, n, replacement=True, generator=generator).tolist()


# (task, slip, whether the statement names the clause, so the instant check must catch it)
WRONG = [("generation.temperature", temperature_plain_exp, True),
         ("generation.top_k", top_k_one_k_for_all, True),
         ("generation.top_k", top_k_exactly_k, True),
         ("generation.top_k", lesson_top_k, True),
         ("generation.top_p", top_p_mass_after, True),
         ("generation.top_p", top_p_sorted_order, True),
         ("generation.top_p", lesson_top_p, True),
         ("generation.repetition_penalty", penalty_per_occurrence, True),
         ("generation.repetition_penalty", penalty_divides_every_sign, True),
         ("generation.repetition_penalty", penalty_without_window, True),
         ("generation.repetition_penalty", lesson_penalty, True),
         ("generation.sample", sample_filters_before_temperature, False)]


def test_every_task_is_checked_and_the_points_add_up():
    assert set(EXERCISES) == set(RIGHT)
    assert ASSIGNMENTS["08_generation"].max_points == 12


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


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("exercise_id, wrong, named", WRONG,
                         ids=[w.__name__ for _, w, _ in WRONG])
def test_a_usual_slip_fails_a_hidden_case_and_the_instant_check(exercise_id, wrong, named, seed):
    exercise = EXERCISES[exercise_id]
    assert not all(passed(exercise, wrong, hidden_cases(exercise, seed)))
    if named:
        instant = instant_cases(exercise, seed)
        assert not all(passed(exercise, wrong, instant))


def test_the_instant_check_tries_k_at_and_above_the_vocabulary():
    for seed in range(5):
        cases = instant_cases(EXERCISES["generation.top_k"], seed)
        ks = [(int(k), case.args[0].shape[-1]) for case in cases for k in case.args[1]]
        assert any(k == V for k, V in ks) and any(k > V for k, V in ks)


def test_slips_get_a_message_that_names_them():
    exercise = EXERCISES["generation.repetition_penalty"]
    cases = instant_cases(exercise, 0)
    assert "exactly once" in exercise.compare(penalty_per_occurrence(*cases[0].args), cases[0])
    assert "multiply it instead" in exercise.compare(penalty_divides_every_sign(*cases[1].args),
                                                      cases[1])
    assert "window" in exercise.compare(penalty_without_window(*cases[2].args), cases[2])
    exercise = EXERCISES["generation.top_p"]
    messages = [exercise.compare(top_p_mass_after(*case.args), case)
                for case in instant_cases(exercise, 0)]
    assert "takes the sum past p" in next(m for m in messages if m)


# --- forbidden routes: each is reported "forbidden" by the instant check --------------------

def forbidden_temperature(logits, temperature):
    from llmkit.generate import next_token_probs
    return next_token_probs(logits, temperature=temperature)


def forbidden_top_k(logits, k):
    from llmkit import generate
    return torch.cat([generate.top_k_filter(logits[b:b + 1], int(k[b])) for b in range(len(k))])


def forbidden_top_p(logits, p, min_keep):
    from llmkit.generate import top_p_filter as finished
    nucleus = torch.isfinite(finished(logits, p))
    least = logits.sort(dim=-1, descending=True).values[:, min(min_keep, logits.shape[-1]) - 1:][:, :1]
    return logits.masked_fill(~(nucleus | (logits >= least)), float("-inf"))


def forbidden_penalty(logits, previous, penalty, window):
    from llmkit.generate import apply_repetition_penalty
    rows = []
    for b in range(len(logits)):
        seen = previous[b] if window is None else previous[b, -window:]
        rows.append(apply_repetition_penalty(logits[b:b + 1], seen[seen >= 0][None], penalty))
    return torch.cat(rows)


def forbidden_sample(logits, n, temperature, top_k, top_p, generator):
    from llmkit.generate import next_token_probs
    probs = next_token_probs(logits[None], temperature=temperature, top_k=top_k, top_p=top_p)[0]
    if n == 0:
        return []
    return torch.multinomial(probs, n, replacement=True, generator=generator).tolist()


FORBIDDEN = [("generation.temperature", forbidden_temperature),
             ("generation.top_k", forbidden_top_k),
             ("generation.top_p", forbidden_top_p),
             ("generation.repetition_penalty", forbidden_penalty),
             ("generation.sample", forbidden_sample)]


def test_every_task_has_a_forbidden_route_here():
    assert {exercise_id for exercise_id, _ in FORBIDDEN} == set(RIGHT)


@pytest.mark.parametrize("exercise_id, route", FORBIDDEN, ids=[r.__name__ for _, r in FORBIDDEN])
def test_a_ruled_out_piece_is_reported_forbidden(exercise_id, route):
    result = check(exercise_id, route)
    assert result.status == "forbidden", str(result)
    assert "rules that out" in result.message
