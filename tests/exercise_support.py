"""What the exercise-check tests share: run a function on cases as the grader does."""

from pathlib import Path

import nbformat
import torch

from llmkit.grading import ASSIGNMENTS, codec
from llmkit.grading.exercise import judge, run_case

SOURCES = Path(__file__).resolve().parents[1] / "exercises" / "source"


def instant_cases(exercise, seed: int) -> list:
    """The cases the check cell draws for `exercise` when its random seed is `seed`."""
    return exercise.make_cases(torch.Generator().manual_seed(seed), False)


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
