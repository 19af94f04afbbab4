"""Grade submitted exercise notebooks with hidden checks, and write the gradebook.

For each notebook the grader:

1. reads it (a file that is not a valid notebook gets zero with that message);
2. finds which assignment it is (notebook metadata, else the file name, else its grade ids)
   and takes the learner's task cells by their nbgrader `grade_id`;
3. optionally runs the whole notebook once in a fresh kernel (runner.py) to report which
   cells raise; nothing from that kernel affects the grade;
4. for each exercise, runs the task cells and the learner's function on the hidden cases in
   a sandboxed child process (sandbox.py) and compares the answers here, with references
   computed before any learner code ran. Points are shared out by the fraction of cases
   passed; calling the forbidden finished piece earns zero for that exercise.

After every notebook it also checks that the grading files (llmkit/grading) are unchanged,
and restores (and reports) any the notebook rewrote.

    grades = grade_paths(["class/"], seed=0)     # then gradebook.py prints and saves them
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
import torch

from . import codec
from .catalog import ASSIGNMENTS
from .exercise import Assignment, Case, Exercise, judge
from .runner import execute_notebook


@dataclass
class Limits:
    """Time (seconds) and memory (MiB) limits for one notebook."""

    cell_timeout: float = 60
    notebook_timeout: float = 300
    case_timeout: float = 10
    exercise_timeout: float = 60
    memory_mb: int = 2048
    kernel_memory_mb: int = 8192


@dataclass
class ExerciseGrade:
    """One exercise's outcome: points of max_points, a status and feedback for the learner."""

    id: str
    title: str
    points: float
    max_points: float
    status: str
    feedback: str = ""


@dataclass
class NotebookGrade:
    """One notebook's outcome; `problems` are notebook-wide messages (e.g. invalid JSON)."""

    student: str
    path: str
    assignment: str
    exercises: list[ExerciseGrade] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    execution: str = ""
    seconds: float = 0.0
    max_points: float = 0.0

    @property
    def total(self) -> float:
        return round(sum(grade.points for grade in self.exercises), 2)


# ---------------------------------------------------------------------------------------
# The sandbox server (one per grading run).

class Sandbox:
    """A running `python -m llmkit.grading.sandbox`; restarted if learner code kills it."""

    def __init__(self):
        self.process = None
        # The jobs' work folders go in here, so they are removed even if code under test
        # ends the server before it cleans up.
        self.scratch = tempfile.mkdtemp(prefix="llmkit-grading-")

    def run(self, job: dict) -> dict:
        """Send one job (see sandbox.py) and return the server's reply."""
        if self.process is None or self.process.poll() is not None:
            os.makedirs(self.scratch, exist_ok=True)
            self.process = subprocess.Popen(
                [sys.executable, "-m", "llmkit.grading.sandbox"], stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                env=dict(os.environ, TMPDIR=self.scratch))
        try:
            self.process.stdin.write(json.dumps(job) + "\n")
            self.process.stdin.flush()
            line = self.process.stdout.readline()
        except (BrokenPipeError, OSError):
            line = ""
        if line:
            return json.loads(line)
        # Only this job's code can have ended the server; the next job starts a new one.
        self.stop()
        return {"messages": [], "timed_out": False,
                "exit": "the code under test ended the grading process"}

    def stop(self) -> None:
        """Stop the server process, if one is running."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def close(self) -> None:
        """Stop the server and remove its scratch folder."""
        self.stop()
        shutil.rmtree(self.scratch, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# ---------------------------------------------------------------------------------------
# Reading a submission.

def find_notebooks(paths) -> list[tuple[str, Path]]:
    """(student, path) for every .ipynb under the given files or folders, sorted.

    In a class folder the student is the first sub-folder (class/alice/01_bigrams.ipynb ->
    "alice"); a notebook given directly, or lying in the folder itself, is named by its
    parent folder and file stem.
    """
    found = []
    for given in map(Path, paths):
        if not given.exists():
            raise FileNotFoundError(f"{given} does not exist; give notebook files or folders.")
        if given.is_file():
            found.append((given.parent.name or given.stem, given))
            continue
        for path in sorted(given.rglob("*.ipynb")):
            if ".ipynb_checkpoints" in path.parts:
                continue
            relative = path.relative_to(given)
            student = relative.parts[0] if len(relative.parts) > 1 else path.stem
            found.append((student, path))
    return found


def identify_assignment(notebook, path: Path) -> Assignment | None:
    """Metadata "llmkit": {"assignment": name}, else the file name, else the grade ids."""
    name = notebook.metadata.get("llmkit", {}).get("assignment")
    if name in ASSIGNMENTS:
        return ASSIGNMENTS[name]
    for assignment in ASSIGNMENTS.values():
        if path.stem.startswith(assignment.name):
            return assignment
    ids = {cell.metadata.get("nbgrader", {}).get("grade_id") for cell in notebook.cells}
    for assignment in ASSIGNMENTS.values():
        if ids & {exercise.grade_id for exercise in assignment.exercises}:
            return assignment
    return None


def task_cells(notebook, assignment: Assignment) -> tuple[list[tuple[str, str]], list[str]]:
    """The learner's task cells as (grade_id, source), in notebook order, and notes.

    A task whose cell lost its nbgrader metadata falls back to the last code cell that
    defines its function.
    """
    cells, notes, found = [], [], set()
    for cell in notebook.cells:
        grading = cell.metadata.get("nbgrader", {})
        if cell.cell_type == "code" and grading.get("solution"):
            cells.append((str(grading.get("grade_id", "?")), cell.source))
            found.add(grading.get("grade_id"))
    for exercise in assignment.exercises:
        if exercise.grade_id in found:
            continue
        defining = [cell.source for cell in notebook.cells
                    if cell.cell_type == "code" and f"def {exercise.function}(" in cell.source]
        if defining:
            cells.append((exercise.grade_id, defining[-1]))
            notes.append(f"{exercise.id}: its task cell lost its grading metadata; used the "
                         f"cell that defines {exercise.function}.")
    return cells, notes


# ---------------------------------------------------------------------------------------
# Grading.

class Grader:
    """Grades notebooks one after another with one sandbox and one set of hidden cases."""

    def __init__(self, seed: int | None = None, limits: Limits | None = None,
                 execute: bool = True):
        if not hasattr(os, "fork"):
            raise RuntimeError("batch grading runs each exercise in a forked process, which "
                               "this system (Windows) lacks; grade on Linux or macOS, e.g. "
                               "in WSL. The instant check() works everywhere.")
        self.seed = random.SystemRandom().randrange(2**31) if seed is None else seed
        self.limits = limits or Limits()
        self.execute = execute
        self.sandbox = Sandbox()
        self._cases: dict[str, list[Case]] = {}
        self._package = PackageGuard()

    def cases(self, exercise: Exercise) -> list[Case]:
        """The hidden cases, the same for every notebook in the run (seeded per exercise)."""
        if exercise.id not in self._cases:
            digest = hashlib.sha256(f"{self.seed}:{exercise.id}".encode()).digest()
            generator = torch.Generator().manual_seed(int.from_bytes(digest[:6], "big"))
            self._cases[exercise.id] = exercise.make_cases(generator, True)
        return self._cases[exercise.id]

    def grade_notebook(self, path, student: str = "") -> NotebookGrade:
        """Grade one notebook file; never raises for anything the notebook contains."""
        start = time.monotonic()
        path = Path(path)
        grade = NotebookGrade(student or path.stem, str(path), "?")
        try:
            notebook = nbformat.reads(path.read_text(encoding="utf-8"), as_version=4)
        except Exception as error:  # not JSON, not a notebook, not UTF-8, unreadable
            grade.problems.append(f"not a readable notebook ({type(error).__name__}: "
                                  f"{str(error)[:120]}); nothing could be graded.")
            guess = next((a for name, a in ASSIGNMENTS.items() if path.stem.startswith(name)),
                         None)
            if guess is not None:
                grade.assignment, grade.max_points = guess.name, guess.max_points
            grade.seconds = time.monotonic() - start
            return grade
        assignment = identify_assignment(notebook, path)
        if assignment is None:
            grade.problems.append("not one of the course's exercise notebooks (no known "
                                  "assignment name or task cells).")
            grade.seconds = time.monotonic() - start
            return grade
        grade.assignment, grade.max_points = assignment.name, assignment.max_points
        cells, notes = task_cells(notebook, assignment)
        grade.problems += notes
        self._package.snapshot()
        if self.execute:
            report = execute_notebook(copy.deepcopy(notebook),
                                      cell_timeout=self.limits.cell_timeout,
                                      notebook_timeout=self.limits.notebook_timeout,
                                      memory_mb=self.limits.kernel_memory_mb)
            grade.execution = report.summary()
        for exercise in assignment.exercises:
            grade.exercises.append(self.grade_exercise(exercise, assignment, cells))
        restored = self._package.restore_changes()
        if restored:
            grade.problems.append("the notebook changed course files (restored): "
                                  + ", ".join(restored))
        grade.seconds = time.monotonic() - start
        return grade

    def grade_exercise(self, exercise: Exercise, assignment: Assignment,
                       cells: list[tuple[str, str]]) -> ExerciseGrade:
        """Run the task cells `cells` [(grade_id, source)] and `exercise`'s function on the
        hidden cases in the sandbox, and judge the answers here."""
        cases = self.cases(exercise)
        job = {"setup": assignment.setup, "cells": cells, "function": exercise.function,
               "forbidden": list(exercise.forbidden),
               "cases": [{"args": codec.encode(case.args), "calls": case.calls}
                         for case in cases],
               "case_timeout": self.limits.case_timeout,
               "cell_timeout": self.limits.case_timeout,
               "total_timeout": self.limits.exercise_timeout,
               "memory_mb": self.limits.memory_mb}
        reply = self.sandbox.run(job)
        return _score(exercise, cases, reply)

    def close(self) -> None:
        """Stop the sandbox server."""
        self.sandbox.close()


def _score(exercise: Exercise, cases: list[Case], reply: dict) -> ExerciseGrade:
    """Turn the sandbox's reply into points and feedback (the learner's lines are untrusted:
    only their answers are used, and judged here)."""
    grade = ExerciseGrade(exercise.id, exercise.title, 0.0, exercise.points, "failed")
    messages = [m for m in reply["messages"] if isinstance(m, dict)]
    cell_errors = next((m["cells"] for m in messages if isinstance(m.get("cells"), list)), [])
    own_errors = [e for e in cell_errors if isinstance(e, dict) and e.get("cell") in
                  (exercise.grade_id, "setup")]
    if not messages:
        grade.status = "timeout" if reply["timed_out"] else "error"
        grade.feedback = ("running the task cells took longer than the time limit."
                          if reply["timed_out"] else
                          "the process running your code stopped: "
                          f"{reply['exit'] or 'it ended without a word'}.")
        return grade
    if any(m.get("missing") for m in messages):
        grade.status = "missing"
        grade.feedback = f"no function {exercise.function} was found in the task cells."
        for error in own_errors[:1]:
            where = f" ({error.get('where')})" if error.get("where") else ""
            grade.feedback += (f" Its cell raised {error.get('type')}: "
                               f"{error.get('message')}{where}.")
        return grade
    by_case = {}
    for message in messages:
        index = message.get("case")
        if isinstance(index, int) and index not in by_case:
            by_case[index] = message
    passed, first_problem = 0, None
    for index, case in enumerate(cases):
        outcome = by_case.get(index)
        if outcome is None:
            why = ("ran out of time before this case" if reply["timed_out"]
                   else (reply["exit"] or "stopped before this case"))
            status, message = ("timeout" if reply["timed_out"] else "error"), why
        else:
            outcome = _well_formed(outcome)
            status, message = judge(exercise, case, outcome)
            if outcome["error"] and outcome["error"].get("type") == "Timeout":
                status = "timeout"
        if status == "forbidden":
            grade.status, grade.feedback = "forbidden", message
            return grade
        if status == "passed":
            passed += 1
        elif first_problem is None:
            first_problem = (status, message)
    grade.points = round(exercise.points * passed / len(cases), 2)
    if first_problem is None:
        grade.status = "passed"
        return grade
    status, message = first_problem
    grade.status = status if passed == 0 else "partial"
    grade.feedback = f"{passed}/{len(cases)} hidden cases passed. {message}"
    if status in ("failed", "error"):
        grade.feedback += f" Hint: {exercise.hint}"
    return grade


def _well_formed(message: dict) -> dict:
    """A case message reduced to the expected shapes (it was written by untrusted code)."""
    answers, error = message.get("answers"), message.get("error")
    forbidden = message.get("forbidden")
    if error is not None and not isinstance(error, dict):
        error = {"type": "?", "message": str(error)[:200], "where": ""}
    return {"answers": answers if isinstance(answers, list) else None, "error": error,
            "forbidden": [str(name) for name in forbidden] if isinstance(forbidden, list)
            else []}


def grade_paths(paths, *, seed: int | None = None, limits: Limits | None = None,
                execute: bool = True, progress=None) -> list[NotebookGrade]:
    """Grade every notebook under `paths`; progress(grade) is called after each one."""
    grader = Grader(seed=seed, limits=limits, execute=execute)
    grades = []
    try:
        for student, path in find_notebooks(paths):
            grade = grader.grade_notebook(path, student)
            grades.append(grade)
            if progress is not None:
                progress(grade)
    finally:
        grader.close()
    return grades


class PackageGuard:
    """Remembers the bytes of every source file under `root` (default: llmkit/grading, the
    hidden checks) and puts back any that change; snapshot() before each notebook,
    restore_changes() after. The references of a run are already in memory by then, so a
    rewritten reference module could only mislead a later run; the checks are guarded
    because they are the obvious target."""

    def __init__(self, root=None):
        self.root = Path(root) if root else Path(__file__).resolve().parent
        self.saved: dict[Path, bytes] = {}

    def snapshot(self) -> None:
        """Remember the current bytes of every .py file under the root."""
        self.saved = {path: path.read_bytes() for path in self.root.rglob("*.py")}

    def restore_changes(self) -> list[str]:
        """Rewrite every file that changed or vanished since the snapshot; -> their names."""
        changed = []
        for path, content in self.saved.items():
            try:
                same = path.read_bytes() == content
            except OSError:
                same = False
            if not same:
                path.write_bytes(content)
                changed.append(path.relative_to(self.root).as_posix())
        return changed
