"""What an exercise is, and how an answer is compared with the reference.

An `Exercise` names the function the learner writes, its points, how to make test cases
(inputs plus the reference's answer, computed before any learner code runs), how to
compare an answer with the reference, a hint, and what the learner's function may not run
(the `llmkit` reference itself, a ready-made torch function or operator that does the
whole task; see forbid.py).
An `Assignment` is one exercise notebook: its setup code and its exercises, in order.

The same definitions drive the instant `check` in the learner's notebook (a few cases)
and the batch grader (more cases, run in a sandbox). Comparisons say what differs (type,
shape, dtype, which positions, what was expected there), never how to compute it.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import signal
import sys
import sysconfig
import threading
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from . import codec
from .codec import Unknown


@dataclass
class Case:
    """One test: call the learner's function with `args` and compare with `expected`.

    `note` says what the case probes (shown in feedback); `calls` > 1 calls the function
    that many times on fresh copies of the same inputs (e.g. to test reproducibility), and
    the comparison then receives the list of answers.
    """

    args: tuple
    expected: Any
    note: str = ""
    calls: int = 1


@dataclass
class Exercise:
    """One graded task: the learner's function `function`, worth `points`.

    make_cases(generator, hidden) -> list[Case]: a few cases for the instant check
    (hidden=False), more for the grader (hidden=True).
    compare(answer, case) -> None when right, else a message saying what differs.
    forbidden: finished pieces the learner's function may not run: dotted names of
    functions, classes, modules or C functions ("llmkit.bigram.count_bigrams").
    forbidden_ops: ATen operators it may not run ("_softmax"); see forbid.py for how both
    are caught.
    """

    id: str  # the check name, e.g. "bigram.counts"
    function: str
    points: float
    title: str
    make_cases: Callable[[torch.Generator, bool], list[Case]]
    compare: Callable[[Any, Case], str | None]
    hint: str
    forbidden: tuple[str, ...] = ()
    forbidden_ops: tuple[str, ...] = ()

    @property
    def grade_id(self) -> str:
        """The nbgrader grade_id of the learner's cell ("bigram.counts" -> "bigram-counts":
        nbgrader allows only letters, digits, "-" and "_"); its check cell adds "-check"."""
        return self.id.replace(".", "-")


@dataclass
class Assignment:
    """One exercise notebook: `name` (its file stem), setup code, and its exercises."""

    name: str
    title: str
    setup: str
    exercises: list[Exercise] = field(default_factory=list)

    @property
    def max_points(self) -> float:
        return sum(exercise.points for exercise in self.exercises)


# ---------------------------------------------------------------------------------------
# Random test inputs, drawn from the generator the check or the grader passes in (so a
# seed fixes every case).

def random_int(generator: torch.Generator, low: int, high: int) -> int:
    """A Python int drawn uniformly from [low, high)."""
    return int(torch.randint(low, high, (1,), generator=generator))


def random_normal(generator: torch.Generator, *shape: int,
                  dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A tensor of `shape` with standard normal entries."""
    return torch.randn(*shape, generator=generator, dtype=dtype)


# ---------------------------------------------------------------------------------------
# Comparing answers. Each returns None when the answer is right, else a short message.

def describe_type(value) -> str:
    if isinstance(value, Unknown):
        return f"a {value.type_name}"
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)} and dtype {value.dtype}"
    return f"a {type(value).__name__}"


def compare_tensors(got, expected: torch.Tensor, *, name: str = "the result",
                    exact: bool | None = None, atol: float = 1e-5, rtol: float = 1e-4,
                    any_float_dtype: bool = False) -> str | None:
    """Compare a tensor answer with the reference: type, shape, dtype, then values.

    exact defaults to True for integer and bool tensors. With any_float_dtype, any floating
    dtype is accepted (the values are compared in float64).
    """
    if not isinstance(got, torch.Tensor):
        return f"{name} should be a torch tensor, but it is {describe_type(got)}."
    if got.shape != expected.shape:
        return (f"{name} has shape {tuple(got.shape)}, expected {tuple(expected.shape)}.")
    if any_float_dtype and expected.is_floating_point():
        if not got.is_floating_point():
            return (f"{name} has dtype {got.dtype}; it should hold floating-point numbers "
                    f"(e.g. {expected.dtype}).")
    elif got.dtype != expected.dtype:
        return f"{name} has dtype {got.dtype}, expected {expected.dtype}."
    if exact is None:
        exact = not expected.is_floating_point()
    got64, expected64 = got.double(), expected.double()
    if exact:
        wrong = got64 != expected64
    else:
        both_nan = torch.isnan(got64) & torch.isnan(expected64)
        close = torch.isclose(got64, expected64, rtol=rtol, atol=atol, equal_nan=True)
        wrong = ~(close | both_nan)
    if not wrong.any():
        return None
    positions = wrong.nonzero().tolist()
    shown = []
    for position in positions[:3]:
        index = tuple(position)
        shown.append(f"at {list(index)}: got {_number(got64[index])}, "
                     f"expected {_number(expected64[index])}")
    total = wrong.numel()
    return (f"{name} differs at {len(positions)} of {total} positions; " + "; ".join(shown)
            + ("; ..." if len(positions) > 3 else "."))


def compare_numbers(got, expected: float, *, name: str = "the result",
                    rel: float = 1e-4, abs_: float = 1e-6) -> str | None:
    """Compare a plain number (a Python float, or a one-element tensor) with the reference."""
    if isinstance(got, torch.Tensor):
        if got.numel() != 1:
            return f"{name} should be one number, but it is {describe_type(got)}."
        got = got.item()
    if isinstance(got, bool) or not isinstance(got, (int, float)):
        return f"{name} should be a number, but it is {describe_type(got)}."
    if math.isinf(expected) and got == expected:
        return None
    if math.isclose(got, expected, rel_tol=rel, abs_tol=abs_):
        return None
    return f"{name} is {_number(got)}, expected {_number(expected)}."


def compare_sequences(got, expected: list, *, name: str = "the result") -> str | None:
    """Compare a list of ids (or other plain values) with the reference, element by element."""
    if isinstance(got, tuple):
        got = list(got)
    if not isinstance(got, list):
        return f"{name} should be a list, but it is {describe_type(got)}."
    if got == expected:
        return None
    if len(got) != len(expected):
        return f"{name} has {len(got)} items, expected {len(expected)}."
    first = next(i for i, (a, b) in enumerate(zip(got, expected)) if a != b)
    return (f"{name} first differs at index {first}: got {got[first]!r}, "
            f"expected {expected[first]!r}.")


def compare_dicts(got, expected: dict, *, name: str = "the result") -> str | None:
    """Compare a dict with the reference: missing keys, extra keys, then wrong values."""
    if not isinstance(got, dict):
        return f"{name} should be a dict, but it is {describe_type(got)}."
    missing = [key for key in expected if key not in got]
    extra = [key for key in got if key not in expected]
    if missing:
        return (f"{name} lacks {len(missing)} key(s) it should have, e.g. {missing[0]!r}.")
    if extra:
        return f"{name} has {len(extra)} key(s) it should not have, e.g. {extra[0]!r}."
    wrong = [key for key in expected if got[key] != expected[key]]
    if wrong:
        key = wrong[0]
        return (f"{name} has {len(wrong)} wrong value(s), e.g. at key {key!r}: "
                f"got {got[key]!r}, expected {expected[key]!r}.")
    return None


def _number(value) -> str:
    value = value.item() if isinstance(value, torch.Tensor) else value
    return f"{value:.6g}" if isinstance(value, float) else repr(value)


# ---------------------------------------------------------------------------------------
# Running one case, and judging the outcome. The outcome is plain JSON, so the batch
# grader can run the call in a sandbox process and judge it in its own.

def run_case(fn, encoded_args, calls: int = 1, watch=None) -> dict:
    """Call `fn` on fresh copies of the case's inputs, `calls` times, while `watch` (a
    forbid.Watch, optional) records what it runs.

    Returns {"answers": [encoded answer, ...], "error": None} or {"answers": None,
    "error": {"type", "message", "where"}} when the function raised.
    """
    answers = []
    recording = watch.recording if watch is not None else contextlib.nullcontext
    try:
        for _ in range(calls):
            args = codec.decode(encoded_args)
            with recording():  # the answer's encoding too: a lazy tensor runs its ops here
                answers.append(codec.encode(fn(*args)))
    except Exception as error:  # the learner's bug is the feedback, not a crash
        return {"answers": None, "error": describe_error(error)}
    return {"answers": answers, "error": None}


def hidden_cases(exercise: Exercise, seed: int) -> list[Case]:
    """The grader's hidden cases of `exercise` for a run seeded `seed` (the same in
    `python -m llmkit grade --seed N` and in a check cell under nbgrader)."""
    digest = hashlib.sha256(f"{seed}:{exercise.id}".encode()).digest()
    generator = torch.Generator().manual_seed(int.from_bytes(digest[:6], "big"))
    return exercise.make_cases(generator, True)


def describe_error(error: BaseException) -> dict:
    """The error's type, message and the line of the learner's code it came from."""
    frames = [frame for frame in traceback.extract_tb(error.__traceback__)
              if not _is_library_file(frame.filename)]
    where = ""
    if frames:
        frame = frames[-1]
        where = f"line {frame.lineno} in {frame.name}"
        if frame.line:
            where += f": {frame.line.strip()}"
    return {"type": type(error).__name__, "message": str(error)[:300], "where": where}


_LIBRARY_DIRS = tuple({os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                       sysconfig.get_paths()["stdlib"], sysconfig.get_paths()["purelib"],
                       sysconfig.get_paths()["platlib"], sys.prefix, sys.base_prefix})


def _is_library_file(filename: str) -> bool:
    if filename.startswith("<"):  # "<cell ...>" is learner code; "<frozen ...>" is Python's
        return filename.startswith("<frozen")
    return os.path.abspath(filename).startswith(_LIBRARY_DIRS)


def judge(exercise: Exercise, case: Case, outcome: dict) -> tuple[str, str | None]:
    """-> (status, message): status is "passed", "failed", "error", "not done" or "forbidden"."""
    if outcome.get("forbidden"):
        what = "; ".join(outcome["forbidden"][:3])
        return "forbidden", (f"your function {what}: this task rules that out (it is the "
                             "finished piece you are asked to build), so it earns no points; "
                             "write your own version.")
    error = outcome.get("error")
    if error:
        if error.get("type") == "NotImplementedError":
            return "not done", ("not written yet: replace `raise NotImplementedError()` "
                                "with your code.")
        where = f" ({error['where']})" if error.get("where") else ""
        message = str(error.get("message"))
        if error.get("type") == "MemoryError" or "can't allocate memory" in message:
            return "error", f"ran out of memory{where}: does it build something far too big?"
        hint = ""
        if error.get("type") == "NameError":
            hint = (" Keep the imports and helpers your function needs inside its own task "
                    "cell: graded code runs without the other cells.")
        return "error", f"raised {error.get('type')}: {message}{where}.{hint}"
    try:
        answers = [codec.decode(answer) for answer in outcome["answers"]]
        problem = exercise.compare(answers[0] if case.calls == 1 else answers, case)
    except Exception as failure:  # an answer of a shape the comparison did not foresee
        problem = f"the answer could not be checked ({type(failure).__name__}: {failure})."
    if problem is None:
        return "passed", None
    if case.note:
        problem = f"In the case with {case.note}: {problem}"
    return "failed", problem


# ---------------------------------------------------------------------------------------
# A wall-clock limit for learner code.

class TookTooLong(BaseException):
    """Raised by `time_limit`; a BaseException, so the learner's `except Exception` misses it."""


@contextlib.contextmanager
def time_limit(seconds: float):
    """Raise TookTooLong in this thread after `seconds` of wall-clock time.

    Uses SIGALRM, so it works only in the main thread on POSIX (a notebook cell, the sandbox);
    elsewhere it does nothing.
    """
    usable = hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
    if not usable:
        yield
        return

    def ring(signum, frame):
        raise TookTooLong(f"took longer than {seconds} s")

    previous = signal.signal(signal.SIGALRM, ring)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
