"""Every exercise notebook the grader knows, and lookups by name.

An assignment's name is its notebook's file stem (`exercises/01_bigrams.ipynb` is
"01_bigrams"); an exercise's id is both its check name (`check("bigram.counts", ...)`) and
the nbgrader `grade_id` of the cell the learner writes it in. A lesson adds its exercises
by writing `exercises_NN.py` (in this folder) with an ASSIGNMENT; they are found here in
the order of their numbers.
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

from .exercise import Assignment, Exercise


def _exercise_modules() -> list[str]:
    names = [module.name for module in pkgutil.iter_modules([str(Path(__file__).parent)])]
    return sorted(name for name in names if name.startswith("exercises_"))


ASSIGNMENTS: dict[str, Assignment] = {}
for _name in _exercise_modules():
    _assignment = importlib.import_module(f"{__package__}.{_name}").ASSIGNMENT
    ASSIGNMENTS[_assignment.name] = _assignment


def find_exercise(exercise_id: str) -> Exercise:
    """The exercise with this id, e.g. "bigram.counts"; a ValueError lists the known ids."""
    for assignment in ASSIGNMENTS.values():
        for exercise in assignment.exercises:
            if exercise.id == exercise_id:
                return exercise
    known = ", ".join(e.id for a in ASSIGNMENTS.values() for e in a.exercises)
    raise ValueError(f"there is no exercise called {exercise_id!r}; the exercises are: {known}.")


def assignment_of(exercise_id: str) -> Assignment | None:
    """The assignment an exercise id belongs to, or None."""
    for assignment in ASSIGNMENTS.values():
        if any(exercise.id == exercise_id for exercise in assignment.exercises):
            return assignment
    return None
