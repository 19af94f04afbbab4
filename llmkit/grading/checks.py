"""The instant check a learner runs after each task: `check("bigram.counts", count_bigrams)`.

It draws a few fresh inputs (a new random seed on every call), runs the learner's function
on them, compares each answer with the `llmkit` reference and returns a `CheckResult`:
"passed", or what differs in the first failing case and a hint. It never shows the
reference code. The result renders as a coloured box in JupyterLab and as plain text in a
terminal. With `$LLMKIT_CHECK_STRICT=1` a wrong answer raises AssertionError instead, so a
test run of the solution notebooks stops at the first one (an unwritten task, "not done
yet", still only reports, so the student notebooks run clean too).

The instant check runs in the learner's own kernel and is there to help; the batch grader
(`python -m llmkit grade`) does not trust it and runs its own, larger set of hidden cases.

Under nbgrader's autograder (which sets $NBGRADER_EXECUTION in the kernel's environment)
the check cell is the graded cell, so `check` turns into a grader: it runs the hidden
cases of seed $LLMKIT_GRADING_SEED (default 0, as `python -m llmkit grade --seed 0`),
raises AssertionError when the task earns nothing (not done, failed on any case,
forbidden), and otherwise returns the task's points, which nbgrader takes as the cell's
grade. The same seed gives the same cases and the same points as the batch
grader for a notebook that does not attack it (the batch grader also isolates each task).
"""

from __future__ import annotations

import html
import os
import random
import sys
import warnings
from dataclasses import dataclass

import torch

from . import codec
from .catalog import MODULE_PREFIX, find_exercise
from .exercise import TookTooLong, hidden_cases, judge, run_case, time_limit
from .forbid import Rules, Watch

STRICT_ENV = "LLMKIT_CHECK_STRICT"
NBGRADER_ENV = "NBGRADER_EXECUTION"
SEED_ENV = "LLMKIT_GRADING_SEED"
TIME_LIMIT_S = 30  # per case; every case of every exercise takes well under a second

_SYMBOLS = {"passed": "✅", "failed": "❌", "error": "❌", "not done": "⏳", "forbidden": "⛔"}
_COLOURS = {"passed": "#1a7f37", "not done": "#9a6700"}


@dataclass
class CheckResult:
    """What one `check` found: status is "passed", "failed", "error", "not done" or
    "forbidden"; message says what differs; n_passed of n_cases cases passed."""

    exercise_id: str
    title: str
    status: str
    message: str | None
    hint: str | None
    n_passed: int
    n_cases: int

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    def __bool__(self) -> bool:
        return self.passed

    def __str__(self) -> str:
        lines = [f"{_SYMBOLS.get(self.status, '')} {self.exercise_id} ({self.title}): "
                 f"{self.status}, {self.n_passed}/{self.n_cases} cases"]
        if self.message:
            lines.append(f"   {self.message}")
        if self.hint:
            lines.append(f"   Hint: {self.hint}")
        return "\n".join(lines)

    __repr__ = __str__

    def _repr_html_(self) -> str:
        colour = _COLOURS.get(self.status, "#cf222e")
        parts = [f"<b>{_SYMBOLS.get(self.status, '')} {html.escape(self.exercise_id)}</b> "
                 f"({html.escape(self.title)}): <b>{html.escape(self.status)}</b>, "
                 f"{self.n_passed}/{self.n_cases} cases"]
        if self.message:
            parts.append(f"<div>{html.escape(self.message)}</div>")
        if self.hint:
            parts.append(f"<div><i>Hint:</i> {html.escape(self.hint)}</div>")
        return (f'<div style="border-left: 4px solid {colour}; padding: 4px 10px; '
                f'margin: 4px 0">{"".join(parts)}</div>')


def rules_for(exercise) -> Rules:
    """What `exercise` rules out, plus every function of the check files themselves (their
    references and helpers are finished pieces for every task)."""
    own = tuple(name for name in sys.modules if name.startswith(MODULE_PREFIX + "."))
    return Rules(pieces=tuple(exercise.forbidden) + own, ops=tuple(exercise.forbidden_ops))


def check(exercise_id: str, fn):
    """Run `fn` on a few fresh cases of exercise `exercise_id` and say how it did.

    exercise_id: e.g. "bigram.counts" (a ValueError lists the known ids).
    fn: the learner's function. Returns a CheckResult (see the module docstring), or under
    nbgrader's autograder the points earned (raising AssertionError when there are none).
    """
    exercise = find_exercise(exercise_id)
    if not callable(fn):
        raise ValueError(f"check({exercise_id!r}, ...) needs your function itself, e.g. "
                         f"check({exercise_id!r}, {exercise.function}); got "
                         f"{type(fn).__name__}.")
    if os.environ.get(NBGRADER_ENV):
        return _nbgrader_grade(exercise, fn)
    generator = torch.Generator().manual_seed(random.SystemRandom().randrange(2**31))
    result = _run(exercise, fn, exercise.make_cases(generator, False), stop_early=True)
    if result.status not in ("passed", "not done") and os.environ.get(STRICT_ENV) == "1":
        raise AssertionError(str(result))
    return result


def _run(exercise, fn, cases, stop_early: bool) -> CheckResult:
    n_passed, first = 0, None
    watch = Watch(rules_for(exercise))
    for case in cases:
        watch.seen.clear()
        try:
            with watch, time_limit(TIME_LIMIT_S):
                outcome = run_case(fn, codec.encode(case.args), case.calls, watch)
        except TookTooLong:
            outcome = {"answers": None, "error": {
                "type": "Timeout", "where": "",
                "message": f"took longer than {TIME_LIMIT_S} s on one small case (an endless "
                           "loop? a while loop whose condition never changes?)"}}
        outcome["forbidden"] = list(watch.seen)
        status, message = judge(exercise, case, outcome)
        if status == "forbidden":
            first = (status, message)
            n_passed = 0
            break
        if status == "passed":
            n_passed += 1
            continue
        if first is None:
            first = (status, message)
        if stop_early:
            break
    status, message = first if first is not None else ("passed", None)
    hint = exercise.hint if status in ("failed", "error") else None
    return CheckResult(exercise.id, exercise.title, status, message, hint, n_passed,
                       len(cases))


def _nbgrader_grade(exercise, fn) -> float:
    """The hidden cases, graded as `python -m llmkit grade` grades them (see the module
    docstring); warnings are silenced, since nbgrader scores output on stderr as zero."""
    seed = int(os.environ.get(SEED_ENV, "0"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cases = hidden_cases(exercise, seed)
        result = _run(exercise, fn, cases, stop_early=False)
    if result.status != "passed":   # all or nothing, as the batch grader grades
        raise AssertionError(str(result))
    return exercise.points
