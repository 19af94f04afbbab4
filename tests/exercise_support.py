"""What the exercise-check tests share: draw cases, and run a function on them as the grader
does."""

import functools
from pathlib import Path

import nbformat
import torch

from llmkit.grading import ASSIGNMENTS, codec
from llmkit.grading.catalog import find_exercise
from llmkit.grading.exercise import hidden_cases, judge, run_case

SOURCES = Path(__file__).resolve().parents[1] / "exercises" / "source"


def instant_cases(exercise, seed: int) -> list:
    """The cases the check cell draws for `exercise` when its random seed is `seed`."""
    return exercise.make_cases(torch.Generator().manual_seed(seed), False)


@functools.lru_cache(maxsize=None)
def cached_cases(exercise_id: str, seed: int, hidden: bool) -> tuple:
    """The hidden (or instant) cases of one exercise and seed, drawn once per test run:
    building some takes seconds (a real AdamW step, a small model)."""
    exercise = find_exercise(exercise_id)
    return tuple(hidden_cases(exercise, seed) if hidden else instant_cases(exercise, seed))


def passed(exercise, function, cases) -> list[bool]:
    """For each case, whether `function` passes it, judged as the grader judges: fresh
    copies of the arguments through the grader's codec (so a function that changes its
    inputs cannot spoil the next call), `case.calls` calls, a crash a failed case."""
    results = []
    for case in cases:
        outcome = run_case(function, codec.encode(case.args), case.calls)
        status, _ = judge(exercise, case, outcome)
        results.append(status == "passed")
    return results


def reference_solutions(assignment_name: str) -> dict:
    """{exercise id: function}: the source notebook's solution cells, run as the grader runs
    them (the setup cell first, then every solution cell in one namespace)."""
    assignment = ASSIGNMENTS[assignment_name]
    namespace: dict = {}
    exec(assignment.setup, namespace)
    notebook = nbformat.read(SOURCES / f"{assignment_name}.ipynb", as_version=4)
    solutions = {}
    for cell in notebook.cells:
        meta = cell.metadata.get("nbgrader", {})
        if meta.get("solution"):
            exec(cell.source, namespace)
            exercise = next(e for e in assignment.exercises if e.grade_id == meta["grade_id"])
            solutions[exercise.id] = namespace[exercise.function]
    return solutions
