"""Every exercise notebook the grader knows, and lookups by name.

The course content lives with the course: `exercises/checks/NN_topic.py` holds the cases,
references and rules of `exercises/NN_topic.ipynb` and defines ASSIGNMENT; this module
finds those files ($LLMKIT_EXERCISE_CHECKS names another folder) and loads each one only
when it is first needed, so `from llmkit.grading import check` in notebook 01 does not
import what notebook 03's references need (e.g. plotly).

An assignment's name is its notebook's file stem ("01_bigrams"); an exercise's id is both
its check name (`check("bigram.counts", ...)`) and the nbgrader `grade_id` of the cell the
learner writes it in.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Mapping
from pathlib import Path

from .exercise import Assignment, Exercise

CHECKS_ENV = "LLMKIT_EXERCISE_CHECKS"
MODULE_PREFIX = "llmkit_exercise_checks"


def checks_folder() -> Path:
    """The folder of per-notebook check files (default: the course's exercises/checks)."""
    given = os.environ.get(CHECKS_ENV)
    return Path(given) if given else Path(__file__).resolve().parents[2] / "exercises" / "checks"


def load_checks(path: Path):
    """Import one check file as module `llmkit_exercise_checks.<stem>` (once)."""
    name = f"{MODULE_PREFIX}.{path.stem}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


class _Catalog(Mapping):
    """name -> Assignment, in the order of the notebooks' numbers, each loaded lazily."""

    def __init__(self):
        self._loaded: dict[str, Assignment] = {}

    def _paths(self) -> dict[str, Path]:
        folder = checks_folder()
        paths = sorted(folder.glob("[0-9]*.py")) if folder.is_dir() else []
        return {path.stem: path for path in paths}

    def __getitem__(self, name: str) -> Assignment:
        if name not in self._loaded:
            path = self._paths().get(name)
            if path is None:
                raise KeyError(name)
            self._loaded[name] = load_checks(path).ASSIGNMENT
        return self._loaded[name]

    def __iter__(self):
        return iter(self._paths())

    def __len__(self) -> int:
        return len(self._paths())

    def modules(self) -> list:
        """Every check module, loaded (the sandbox rules out all their functions)."""
        for name in self:
            self[name]
        return [sys.modules[f"{MODULE_PREFIX}.{name}"] for name in self]


ASSIGNMENTS = _Catalog()


def find_exercise(exercise_id: str) -> Exercise:
    """The exercise with this id, e.g. "bigram.counts"; a ValueError lists the known ids."""
    assignment = assignment_of(exercise_id)
    if assignment is not None:
        return next(e for e in assignment.exercises if e.id == exercise_id)
    known = ", ".join(e.id for a in ASSIGNMENTS.values() for e in a.exercises)
    raise ValueError(f"there is no exercise called {exercise_id!r}; the exercises are: {known}.")


def assignment_of(exercise_id: str) -> Assignment | None:
    """The assignment an exercise id belongs to, or None. Only the check file that names
    the id is loaded (so a broken file costs only its own notebook's checks)."""
    for name, path in ASSIGNMENTS._paths().items():
        if f'"{exercise_id}"' not in path.read_text(encoding="utf-8"):
            continue
        assignment = ASSIGNMENTS[name]
        if any(exercise.id == exercise_id for exercise in assignment.exercises):
            return assignment
    return None
