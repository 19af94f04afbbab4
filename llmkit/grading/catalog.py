"""Every exercise notebook the grader knows, and lookups by name.

An assignment's name is its notebook's file stem (`exercises/01_bigrams.ipynb` is
"01_bigrams"); an exercise's id is both its check name (`check("bigram.counts", ...)`) and
the nbgrader `grade_id` of the cell the learner writes it in. A later lesson adds its
exercises by writing `exercises_NN.py` and listing its ASSIGNMENT here.
"""

from __future__ import annotations

from . import exercises_01, exercises_02
from .exercise import Assignment, Exercise

ASSIGNMENTS: dict[str, Assignment] = {
    assignment.name: assignment
    for assignment in (exercises_01.ASSIGNMENT, exercises_02.ASSIGNMENT)
}


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
