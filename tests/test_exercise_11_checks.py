"""Exercise notebook 11's checks: the reference solutions (run from the source notebook) pass
every case, and the lesson's own code and the usual wrong solutions each fail a hidden case of
every seed and an instant case, so under all-or-nothing grading they earn nothing. A solution
that calls the lesson's finished pieces is reported forbidden.

The wrong solutions are written here by hand, one per slip the cases are built to catch.
"""

import math

import numpy as np
import pytest

from llmkit.grading import ASSIGNMENTS, check

from exercise_support import cached_cases, passed, reference_solutions

ASSIGNMENT = ASSIGNMENTS["11_scaling_up"]
EXERCISES = {exercise.id: exercise for exercise in ASSIGNMENT.exercises}
RIGHT = reference_solutions("11_scaling_up")


# --- the lesson's own code, pasted as the answer (or the closest the lesson shows) -----------

def plan_as_the_lesson_splits(global_batch, world_size, max_micro_batch):
    # llmkit.distributed.check_batch: refuse, or every process takes its share at once
    if global_batch % world_size:
        raise ValueError("the global batch does not divide among the processes")
    return (global_batch // world_size, 1)


def memory_as_the_lesson_counts(n_params, world_size, zero_stage, precision):
    # the lesson's table: 4 + 4 + 8 bytes per parameter, on every process
    return {"parameters": 4 * n_params, "gradients": 4 * n_params, "optimizer": 8 * n_params}


def lesson_fit(N, L, n_offsets=400):
    N, L = np.asarray(N, dtype=float), np.asarray(L, dtype=float)
    best = None
    for E in np.linspace(0, L.min(), n_offsets, endpoint=False):
        slope, intercept = np.polyfit(np.log(N), np.log(L - E), 1)
        A, alpha = np.exp(intercept), -slope
        error = np.sum((np.log(E + A * N ** -alpha) - np.log(L)) ** 2)
        if best is None or error < best[0]:
            best = (error, A, alpha, E)
    return best[1:]


def size_from_the_lessons_fit(N, L, target):
    A, alpha, E = lesson_fit(N, L)
    return math.inf if target <= E else float((A / (target - E)) ** (1 / alpha))


def optimal_at_twenty_tokens(C, law):
    # the lesson's prose: compute-optimal training is about 20 tokens per parameter
    N = math.sqrt(C / (6 * 20))
    return (N, 20 * N)


LESSON = [("scaling.accumulation_plan", plan_as_the_lesson_splits),
          ("scaling.memory_per_gpu", memory_as_the_lesson_counts),
          ("scaling.size_for_loss", size_from_the_lessons_fit),
          ("scaling.compute_optimal", optimal_at_twenty_tokens)]


# --- usual slips ------------------------------------------------------------------------------

def plan_largest_that_fits(global_batch, world_size, max_micro_batch):
    if global_batch % world_size:
        return None
    rows = global_batch // world_size
    micro = min(max_micro_batch, rows)
    return (micro, math.ceil(rows / micro))


def plan_fewest_steps_then_divide(global_batch, world_size, max_micro_batch):
    if global_batch % world_size:
        return None
    rows = global_batch // world_size
    steps = math.ceil(rows / max_micro_batch)
    return (rows // steps, steps)


def plan_without_the_world(global_batch, world_size, max_micro_batch):
    fits = [m for m in range(1, min(max_micro_batch, global_batch) + 1) if global_batch % m == 0]
    return (max(fits), global_batch // max(fits))


def plan_without_refusal(global_batch, world_size, max_micro_batch):
    rows = max(global_batch // world_size, 1)
    fits = [m for m in range(1, min(max_micro_batch, rows) + 1) if rows % m == 0]
    return (max(fits), rows // max(fits))


def _memory(n_params, world_size, zero_stage, weight_bytes, optimizer_bytes, shard_of, stages):
    held = {key: shard_of(n_params, world_size) if zero_stage >= stage else n_params
            for key, stage in stages.items()}
    return {"parameters": weight_bytes * held["parameters"],
            "gradients": weight_bytes * held["gradients"],
            "optimizer": optimizer_bytes * held["optimizer"]}


CUMULATIVE = {"parameters": 3, "gradients": 2, "optimizer": 1}


def _ceil(n, w):
    return -(-n // w)


def memory_bf16_halves_everything(n_params, world_size, zero_stage, precision):
    scale = 2 if precision == "bf16" else 4
    return _memory(n_params, world_size, zero_stage, scale, 2 * scale, _ceil, CUMULATIVE)


def memory_without_master_copy(n_params, world_size, zero_stage, precision):
    return _memory(n_params, world_size, zero_stage, 2 if precision == "bf16" else 4, 8,
                   _ceil, CUMULATIVE)


def memory_shards_rounded_down(n_params, world_size, zero_stage, precision):
    bf16 = precision == "bf16"
    return _memory(n_params, world_size, zero_stage, 2 if bf16 else 4, 12 if bf16 else 8,
                   lambda n, w: n // w, CUMULATIVE)


def memory_one_thing_per_stage(n_params, world_size, zero_stage, precision):
    # stage s shards only the s-th thing, not everything the earlier stages shard too
    bf16 = precision == "bf16"
    held = {key: _ceil(n_params, world_size) if zero_stage == stage else n_params
            for key, stage in CUMULATIVE.items()}
    return {"parameters": (2 if bf16 else 4) * held["parameters"],
            "gradients": (2 if bf16 else 4) * held["gradients"],
            "optimizer": (12 if bf16 else 8) * held["optimizer"]}


def size_from_a_straight_line(N, L, target):
    slope, intercept = np.polyfit(np.log(N), np.log(L), 1)
    return float((math.exp(intercept) / target) ** (1 / -slope))


def size_without_the_floor_check(N, L, target):
    # the right fit, inverted whatever the target: below the floor that is not a size
    log_n, losses = np.log(np.asarray(N, dtype=float)), np.asarray(L, dtype=float)

    def fit(E):
        slope, intercept = np.polyfit(log_n, np.log(losses - E), 1)
        error = np.sum((np.log(E + np.exp(intercept + slope * log_n)) - np.log(losses)) ** 2)
        return error, math.exp(intercept), -slope

    low, high = 0.0, float(losses.min())
    for _ in range(8):
        offsets = np.linspace(low, high, 50, endpoint=False)
        E = min(offsets, key=lambda offset: fit(offset)[0])
        step = offsets[1] - offsets[0]
        low, high = max(0.0, E - step), min(float(losses.min()), E + step)
    _, A, alpha = fit(E)
    return float(np.abs(A / (target - E)) ** (1 / alpha))


def optimal_without_the_six(C, law):
    A, alpha, B, beta = law["A"], law["alpha"], law["B"], law["beta"]
    N = (alpha * A / (beta * B)) ** (1 / (alpha + beta)) * C ** (beta / (alpha + beta))
    return (N, C / N)


def optimal_with_equal_terms(C, law):
    A, alpha, B, beta = law["A"], law["alpha"], law["B"], law["beta"]
    N = (A / B) ** (1 / (alpha + beta)) * (C / 6) ** (beta / (alpha + beta))
    return (N, C / (6 * N))


def optimal_with_swapped_exponents(C, law):
    A, alpha, B, beta = law["A"], law["alpha"], law["B"], law["beta"]
    N = (alpha * A / (beta * B)) ** (1 / (alpha + beta)) * (C / 6) ** (alpha / (alpha + beta))
    return (N, C / (6 * N))


WRONG = [("scaling.accumulation_plan", plan_largest_that_fits),
         ("scaling.accumulation_plan", plan_fewest_steps_then_divide),
         ("scaling.accumulation_plan", plan_without_the_world),
         ("scaling.accumulation_plan", plan_without_refusal),
         ("scaling.memory_per_gpu", memory_bf16_halves_everything),
         ("scaling.memory_per_gpu", memory_without_master_copy),
         ("scaling.memory_per_gpu", memory_shards_rounded_down),
         ("scaling.memory_per_gpu", memory_one_thing_per_stage),
         ("scaling.size_for_loss", size_from_a_straight_line),
         ("scaling.size_for_loss", size_without_the_floor_check),
         ("scaling.compute_optimal", optimal_without_the_six),
         ("scaling.compute_optimal", optimal_with_equal_terms),
         ("scaling.compute_optimal", optimal_with_swapped_exponents)]


def _name(value):
    return getattr(value, "__name__", value)


def test_every_task_is_checked():
    assert set(EXERCISES) == set(RIGHT) == {task for task, _ in LESSON}
    assert ASSIGNMENT.max_points == 11


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("exercise_id", sorted(EXERCISES))
def test_reference_solutions_pass_every_case(exercise_id, seed):
    exercise = EXERCISES[exercise_id]
    for hidden in (False, True):
        results = passed(exercise, RIGHT[exercise_id], cached_cases(exercise_id, seed, hidden))
        assert all(results), (exercise_id, hidden, results)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("exercise_id, wrong", LESSON + WRONG, ids=_name)
def test_the_lesson_code_and_each_slip_fail_a_hidden_case(exercise_id, wrong, seed):
    exercise = EXERCISES[exercise_id]
    assert not all(passed(exercise, wrong, cached_cases(exercise_id, seed, True)))


@pytest.mark.parametrize("exercise_id, wrong", LESSON + WRONG, ids=_name)
def test_the_instant_check_already_fails_them(exercise_id, wrong):
    exercise = EXERCISES[exercise_id]
    for seed in range(5):
        assert not all(passed(exercise, wrong, cached_cases(exercise_id, seed, False))), seed


def test_slips_get_messages_that_name_them():
    exercise = EXERCISES["scaling.memory_per_gpu"]
    case = next(c for c in cached_cases("scaling.memory_per_gpu", 0, False)
                if c.args[3] == "bf16" and c.args[2] >= 1)
    assert "master copy" in exercise.compare(memory_without_master_copy(*case.args), case)
    case = next(c for c in cached_cases("scaling.memory_per_gpu", 0, False) if c.args[2] == 2)
    assert "rounded up" in exercise.compare(memory_shards_rounded_down(*case.args), case)

    exercise = EXERCISES["scaling.size_for_loss"]
    case = next(c for c in cached_cases("scaling.size_for_loss", 0, False)
                if "close to the floor" in c.note)
    assert "offset" in exercise.compare(size_from_a_straight_line(*case.args), case)
    assert "refine" in exercise.compare(size_from_the_lessons_fit(*case.args), case)
    below = next(c for c in cached_cases("scaling.size_for_loss", 0, False) if math.isinf(c.expected))
    assert "no size reaches it" in exercise.compare(size_from_a_straight_line(*below.args), below)

    exercise = EXERCISES["scaling.compute_optimal"]
    case = cached_cases("scaling.compute_optimal", 0, False)[0]
    assert "budget" in exercise.compare(optimal_without_the_six(*case.args), case)
    assert "rates of change" in exercise.compare(optimal_with_equal_terms(*case.args), case)
    assert "20 tokens" in exercise.compare(optimal_at_twenty_tokens(*case.args), case)

    exercise = EXERCISES["scaling.accumulation_plan"]
    case = cached_cases("scaling.accumulation_plan", 0, False)[1]          # 14 rows, at most 5
    assert "not the global batch" in exercise.compare(plan_fewest_steps_then_divide(*case.args),
                                                      case)


# --- the finished pieces are forbidden ------------------------------------------------------

def plan_with_check_batch(global_batch, world_size, max_micro_batch):
    from llmkit.distributed import Group, check_batch

    try:
        rows = check_batch(global_batch, Group(rank=0, world_size=world_size))
    except ValueError:
        return None
    micro = max(m for m in range(1, min(max_micro_batch, rows) + 1) if rows % m == 0)
    return (micro, rows // micro)


def memory_with_training_memory(n_params, world_size, zero_stage, precision):
    from llmkit.model import GPTConfig
    from llmkit.scaling import training_memory

    fp32 = training_memory(GPTConfig(vocab_size=8, context_length=4, n_layer=1, n_head=1,
                                     d_model=4), 1)
    per_value = fp32["adamw"] // fp32["parameters"]        # 2 states per parameter
    answer = RIGHT["scaling.memory_per_gpu"](n_params, world_size, zero_stage, precision)
    assert per_value == 2
    return answer


def size_with_fit_power_law(N, L, target):
    from llmkit.scaling import fit_power_law

    law = fit_power_law(N, L)
    return math.inf if target <= law.offset else (law.scale / (target - law.offset)) ** (
        1 / law.exponent)


def optimal_with_power_law(C, law):
    from llmkit.scaling import PowerLaw

    def loss(log_n):
        n = math.exp(log_n)
        return float(PowerLaw(law["A"], law["alpha"]).predict(n)
                     + PowerLaw(law["B"], law["beta"]).predict(C / (6 * n)))

    low, high = 0.0, math.log(C / 6)
    for _ in range(200):
        left, right = low + (high - low) / 3, high - (high - low) / 3
        low, high = (low, right) if loss(left) < loss(right) else (left, high)
    n = math.exp(low)
    return (n, C / (6 * n))


FORBIDDEN = [("scaling.accumulation_plan", plan_with_check_batch),
             ("scaling.memory_per_gpu", memory_with_training_memory),
             ("scaling.size_for_loss", size_with_fit_power_law),
             ("scaling.compute_optimal", optimal_with_power_law)]


@pytest.mark.parametrize("exercise_id, cheat", FORBIDDEN, ids=_name)
def test_the_finished_pieces_are_reported_forbidden(exercise_id, cheat, monkeypatch):
    monkeypatch.delenv("LLMKIT_CHECK_STRICT", raising=False)
    result = check(exercise_id, cheat)
    assert result.status == "forbidden", str(result)
    assert "llmkit." in result.message
