"""Grade submitted exercise notebooks with hidden checks, and write the gradebook.

For each notebook the grader:

1. reads it (bytes that are not UTF-8 are replaced, with a note; a file that is not a
   notebook gets zero with that message);
2. finds which assignment it is (notebook metadata, else the file name, else its grade ids)
   and takes the learner's task cells by their nbgrader `grade_id`;
3. optionally runs the whole notebook once in a fresh kernel inside a sandbox (runner.py)
   to report which cells raise; nothing from that kernel affects the grade;
4. for each exercise, sends the setup code and only the task cells that exercise needs
   (its own, and the task cells defining names it uses) to a server inside that
   student's own sandbox (isolation.py, sandbox.py), which runs them and the learner's
   function on the hidden cases in a fresh child; the answers come back as data and are
   judged here, against references computed before any learner code ran. A task earns
   its points when every case passes, and nothing otherwise; forbidden work earns zero.

Every reply is read with a deadline. A sandbox that stops answering (killed, stopped,
flooded, out of time) is killed whole and replaced by a fresh one: it costs that task, and
the note says why; no other student shares it.

    grades = grade_paths(["class/"], seed=0)     # then gradebook.py prints and saves them
"""

from __future__ import annotations

import ast
import copy
import hashlib
import json
import os
import random
import select
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from . import codec
from .catalog import ASSIGNMENTS, MODULE_PREFIX, checks_folder
from .exercise import Assignment, Case, Exercise, hidden_cases, judge
from .isolation import Jail, JailLimits
from .isolation import bwrap_works as sandboxed
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
    processes: int = 64
    startup_timeout: float = 180  # a sandbox importing torch on a busy machine
    reply_grace: float = 20  # past a task's own limit, before its sandbox is killed


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
# One student's sandbox server.

class Sandbox:
    """`python -m llmkit.grading.sandbox` in a Jail of its own; jobs go in on its stdin,
    replies come back on its stdout, each read with a deadline and a size cap."""

    def __init__(self, limits: Limits, hide=()):
        self.limits = limits
        jail_limits = JailLimits(memory_mb=limits.memory_mb + 1536,
                                 processes=limits.processes, cpus=1.0,
                                 cpu_seconds=int(limits.notebook_timeout
                                                 + 10 * limits.exercise_timeout))
        self.jail = Jail([sys.executable, "-I", "-m", "llmkit.grading.sandbox"],
                         limits=jail_limits, hide=hide, as_pid_1=True,
                         env=dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1",
                                  MKL_NUM_THREADS="1"))
        self.jail.start()
        self.ready = False
        self._buffer = b""

    def _read_line(self, deadline: float, cap: int = 128 * 2**20) -> bytes | None:
        """One line from the server, or None at EOF, past the deadline or past the cap."""
        fd = self.jail.process.stdout.fileno()
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or len(self._buffer) > cap:
                return None
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                continue
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                return None
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line

    def run(self, job: dict) -> dict:
        """Send one job and return the server's reply; on any failure kill the sandbox and
        return a reply saying what happened (the caller starts a new one)."""
        if not self.ready:
            line = self._read_line(time.monotonic() + self.limits.startup_timeout)
            if line != b"ready":
                return self._failed("the sandbox did not start")
            self.ready = True
        try:
            self.jail.process.stdin.write((json.dumps(job) + "\n").encode())
            self.jail.process.stdin.flush()
        except (BrokenPipeError, OSError):
            return self._failed("the code under test ended the grading process")
        line = self._read_line(time.monotonic() + job["total_timeout"]
                               + self.limits.reply_grace)
        if line is None:
            return self._failed("the grading process stopped answering (killed, stopped or "
                                "flooded by the code under test); its sandbox was killed")
        try:
            reply = json.loads(line)
        except ValueError:
            return self._failed("the grading process answered with something that is not "
                                "a reply")
        if not isinstance(reply, dict) or not isinstance(reply.get("messages"), list):
            return self._failed("the grading process answered with something that is not "
                                "a reply")
        return {"messages": reply["messages"], "timed_out": bool(reply.get("timed_out")),
                "exit": reply.get("exit") if isinstance(reply.get("exit"), str) else None}

    def _failed(self, why: str) -> dict:
        self.close()
        return {"messages": [], "timed_out": False, "exit": why, "broken": True}

    @property
    def alive(self) -> bool:
        return self.jail.alive()

    def close(self) -> None:
        self.jail.kill()


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


def read_notebook(path: Path) -> tuple[nbformat.NotebookNode, list[str]]:
    """The notebook, and notes (e.g. bytes that were not UTF-8 and were replaced)."""
    raw = path.read_bytes()
    notes = []
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        text = raw.decode("utf-8", errors="replace")
        bad = sum(1 for ch in text if ch == "\ufffd")
        notes.append(f"the file is not valid UTF-8 (first bad byte at offset {error.start}); "
                     f"{bad} undecodable byte(s) were replaced by U+FFFD and it was graded.")
    return nbformat.reads(text, as_version=4), notes


def identify_assignment(notebook, path: Path) -> Assignment | None:
    """Metadata "llmkit": {"assignment": name}, else the file name, else the grade ids."""
    name = notebook.metadata.get("llmkit", {}).get("assignment")
    if name in ASSIGNMENTS:
        return ASSIGNMENTS[name]
    for known in ASSIGNMENTS:
        if path.stem.startswith(known):
            return ASSIGNMENTS[known]
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


def _names(source: str) -> tuple[set[str], set[str]]:
    """(names a cell defines at top level: def, class, =, import; names it reads anywhere)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return set(), set()
    defined = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            defined.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                defined |= {n.id for n in ast.walk(target) if isinstance(n, ast.Name)}
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            defined |= {(alias.asname or alias.name).split(".")[0] for alias in node.names}
    used = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)
            and isinstance(n.ctx, ast.Load)}
    return defined, used


def cells_needed(exercise: Exercise, cells: list[tuple[str, str]],
                 setup: str = "") -> list[tuple[str, str]]:
    """The task cells one exercise is graded from: its own cell, and every other task cell
    that defines a name it uses (and so on; names the setup code defines do not count), in
    notebook order. An endless loop or a crash in any other cell therefore cannot cost
    this exercise its points."""
    given = _names(setup)[0]
    info = [(label, source, _names(source)[0] - given, _names(source)[1])
            for label, source in cells]
    wanted = {i for i, (label, *_) in enumerate(info) if label == exercise.grade_id}
    needed_names = set().union(*(info[i][3] for i in wanted)) if wanted else set()
    changed = True
    while changed:
        changed = False
        for i, (_, _, defined, used) in enumerate(info):
            if i not in wanted and defined & needed_names:
                wanted.add(i)
                needed_names |= used
                changed = True
    return [(label, source) for i, (label, source, _, _) in enumerate(info) if i in wanted]


# ---------------------------------------------------------------------------------------
# Grading.

class Grader:
    """Grades notebooks one after another, each in sandboxes of its own, with one set of
    hidden cases for the whole run."""

    def __init__(self, seed: int | None = None, limits: Limits | None = None,
                 execute: bool = True, hide=()):
        if not hasattr(os, "fork"):
            raise RuntimeError("batch grading runs each exercise in a forked process, which "
                               "this system (Windows) lacks; grade on Linux or macOS, e.g. "
                               "in WSL. The instant check() works everywhere.")
        self.seed = random.SystemRandom().randrange(2**31) if seed is None else seed
        self.limits = limits or Limits()
        self.execute = execute
        self.hide = list(hide)
        self._cases: dict[str, list[Case]] = {}
        self._spare: Sandbox | None = None
        self._current: tuple[str, Sandbox] | None = None
        self._package = PackageGuard()

    def cases(self, exercise: Exercise) -> list[Case]:
        """The hidden cases, the same for every notebook in the run (seeded per exercise)."""
        if exercise.id not in self._cases:
            self._cases[exercise.id] = hidden_cases(exercise, self.seed)
        return self._cases[exercise.id]

    def sandbox_for(self, student: str) -> Sandbox:
        """The student's own sandbox: kept for all their notebooks while it works, a fresh
        one (started ahead when possible, so its imports overlap grading) for a new student
        or after one broke. Within it, every task runs in a fresh child, and nothing a
        child starts outlives its task (sandbox.py)."""
        if self._current is not None:
            owner, sandbox = self._current
            if owner == student and sandbox.alive:
                return sandbox
            sandbox.close()
            self._current = None
        sandbox, self._spare = self._spare, None
        if sandbox is None or not sandbox.alive:
            if sandbox is not None:
                sandbox.close()
            sandbox = Sandbox(self.limits, self.hide)
        self._current = (student, sandbox)
        return sandbox

    def prepare(self) -> None:
        """Start the next student's sandbox now, while this one is graded."""
        if self._spare is None:
            self._spare = Sandbox(self.limits, self.hide)

    def grade_notebook(self, path, student: str = "") -> NotebookGrade:
        """Grade one notebook file; never raises for anything the notebook contains."""
        start = time.monotonic()
        path = Path(path)
        grade = NotebookGrade(student or path.stem, str(path), "?")
        try:
            notebook, notes = read_notebook(path)
            grade.problems += notes
        except Exception as error:  # not JSON, not a notebook, unreadable
            grade.problems.append(f"not a readable notebook ({type(error).__name__}: "
                                  f"{str(error)[:120]}); nothing could be graded.")
            guess = next((name for name in ASSIGNMENTS if path.stem.startswith(name)), None)
            if guess is not None:
                grade.assignment, grade.max_points = guess, ASSIGNMENTS[guess].max_points
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
        if not sandboxed():
            self._package.snapshot()
        if self.execute:
            report = execute_notebook(copy.deepcopy(notebook),
                                      cell_timeout=self.limits.cell_timeout,
                                      notebook_timeout=self.limits.notebook_timeout,
                                      memory_mb=self.limits.kernel_memory_mb,
                                      hide=self.hide)
            grade.execution = report.summary()
        for exercise in assignment.exercises:
            sandbox = self.sandbox_for(grade.student)
            grade.exercises.append(self.grade_exercise(exercise, assignment, cells, sandbox))
        if not sandboxed():
            changed = self._package.changes()
            if changed:
                grade.problems.append("course files changed while this notebook was graded "
                                      "(no sandbox here): " + ", ".join(changed))
        grade.seconds = time.monotonic() - start
        return grade

    def grade_exercise(self, exercise: Exercise, assignment: Assignment,
                       cells: list[tuple[str, str]], sandbox: Sandbox) -> ExerciseGrade:
        """Run the cells `exercise` needs and its function on the hidden cases in the
        student's sandbox, and judge the answers here."""
        cases = self.cases(exercise)
        own_checks = tuple(f"{MODULE_PREFIX}.{name}" for name in ASSIGNMENTS)
        job = {"setup": assignment.setup, "cells": cells_needed(exercise, cells, assignment.setup),
               "function": exercise.function,
               "forbidden": list(exercise.forbidden) + list(own_checks),
               "forbidden_ops": list(exercise.forbidden_ops),
               "cases": [{"args": codec.encode(case.args), "calls": case.calls}
                         for case in cases],
               "case_timeout": self.limits.case_timeout,
               "cell_timeout": self.limits.case_timeout,
               "total_timeout": self.limits.exercise_timeout,
               "memory_mb": self.limits.memory_mb}
        return _score(exercise, cases, sandbox.run(job))

    def close(self) -> None:
        """Stop every sandbox of the run."""
        for sandbox in [self._spare] + [self._current[1] if self._current else None]:
            if sandbox is not None:
                sandbox.close()
        self._spare = self._current = None


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
    if first_problem is None:
        grade.points, grade.status = float(exercise.points), "passed"
        return grade
    # All or nothing: a task's points say its behaviour is right. Per-case credit paid
    # solutions that were right only on the easy cases (one head, equal sizes, k < V).
    status, message = first_problem
    grade.status = status
    grade.feedback = (f"{passed}/{len(cases)} hidden cases passed (a task earns its points "
                      f"when every case passes). {message}")
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
    """Grade every notebook under `paths`; progress(grade) is called after each one.

    The folders given are hidden from every sandbox (a student sees no one's notebook).
    Two notebooks of one student for the same assignment are both graded and flagged.
    """
    hide = [Path(p).resolve() for p in paths if Path(p).is_dir()]
    grader = Grader(seed=seed, limits=limits, execute=execute, hide=hide)
    grades = []
    notebooks = find_notebooks(paths)
    try:
        for index, (student, path) in enumerate(notebooks):
            if index + 1 < len(notebooks) and notebooks[index + 1][0] != student:
                grader.prepare()  # the next student's sandbox starts while this one grades
            try:
                grade = grader.grade_notebook(path, student)
            except Exception as error:  # a bug of ours must not cost the rest of the class
                grade = NotebookGrade(student, str(path), "?", problems=[
                    f"could not be graded ({type(error).__name__}: {str(error)[:160]})"])
            grades.append(grade)
            if progress is not None:
                progress(grade)
    finally:
        grader.close()
    flag_duplicates(grades)
    return grades


def flag_duplicates(grades: list[NotebookGrade]) -> None:
    """Note on each notebook when its student handed in another for the same assignment."""
    groups: dict[tuple[str, str], list[NotebookGrade]] = {}
    for grade in grades:
        if grade.assignment != "?":
            groups.setdefault((grade.student, grade.assignment), []).append(grade)
    for (student, assignment), same in groups.items():
        if len(same) > 1:
            names = ", ".join(Path(g.path).name for g in same)
            for grade in same:
                grade.problems.insert(0, f"DUPLICATE: {student} has {len(same)} notebooks "
                                         f"for {assignment} ({names}); each is graded, "
                                         "decide which counts.")


class PackageGuard:
    """Remembers a digest of every source file under `root` (default: the llmkit package
    and exercises/checks); snapshot() before each notebook, changes() after lists the
    files that changed meanwhile. In a sandbox the course is read-only and nothing can
    change; this is the report where there is no sandbox (see isolation.protections).
    It never writes: a file can also change because someone is editing the course."""

    def __init__(self, root=None):
        self.root = Path(root) if root else Path(__file__).resolve().parents[2]
        self.folders = [self.root] if root else [self.root / "llmkit", checks_folder()]
        self.saved: dict[Path, bytes] = {}

    def snapshot(self) -> None:
        """Remember the digest of every .py file under the folders."""
        self.saved = {path: _file_digest(path) for folder in self.folders
                      for path in folder.rglob("*.py")}

    def changes(self) -> list[str]:
        """The files that changed or vanished since the snapshot."""
        return [path.relative_to(self.root).as_posix() for path, digest in self.saved.items()
                if _file_digest(path) != digest]


def _file_digest(path: Path) -> bytes | None:
    try:
        return hashlib.sha256(path.read_bytes()).digest()
    except OSError:
        return None
