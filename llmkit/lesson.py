"""Small helpers every lesson notebook uses: budgets, friendly checks, a stopwatch.

- `budget(default, quick)`: a lesson's training steps, corpus sizes and so on. The default
  runs the lesson in a few minutes on a laptop CPU; quick mode (`LLMKIT_QUICK=1`, set by
  the tests) shrinks every budget so the lesson runs in well under a minute.
- `check_same(mine, reference, what)`: the "check it" step of every lesson. It compares
  the learner's result with `llmkit`'s using `torch.testing.assert_close` and prints one
  friendly line, or raises an AssertionError that says what differs and what to look at.
- `yours_or_worked(yours, worked, *example)`: the "your turn" step. A lesson asks the
  learner to write a piece in a stub cell; the hidden cell after it holds a worked
  solution and picks the learner's function once it is written, so the rest of the lesson
  runs either way (and the tests run the worked solution).
- `stopwatch()`: times a block, so prose can quote figures a cell has printed.
"""

from __future__ import annotations

import time
from contextlib import contextmanager

import torch

from llmkit.device import quick_mode


def budget(default, quick):
    """`quick` in quick mode (LLMKIT_QUICK=1), else `default`; e.g. budget(2000, 60) steps."""
    return quick if quick_mode() else default


def _as_tensor(value) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    return torch.as_tensor(value)


# torch.testing.assert_close's default tolerances (rtol, atol) for each floating dtype.
_TOLERANCES = {torch.float16: (1e-3, 1e-5), torch.bfloat16: (1.6e-2, 1e-5),
               torch.float32: (1.3e-6, 1e-5), torch.float64: (1e-7, 1e-7)}


def _tolerances(*tensors: torch.Tensor) -> tuple[float, float]:
    """The (rtol, atol) of the least precise floating dtype among `tensors`."""
    floats = [_TOLERANCES.get(t.dtype, _TOLERANCES[torch.float32]) for t in tensors
              if t.is_floating_point()]
    return max(floats) if floats else (0.0, 0.0)


def check_same(mine, reference, what: str, *, against: str = "llmkit's",
               atol: float | None = None, rtol: float | None = None) -> None:
    """Check the learner's result against the reference and say so in one line.

    mine, reference: tensors, numbers, or (nested) lists of numbers of the same shape, or
    lists of tensors. `against` names the reference in the message (e.g. "F.gelu").
    Floating-point values may differ by rounding: the tolerances are
    torch.testing.assert_close's for the less precise of the two dtypes (so float32 against
    float64 is judged as float32), or atol/rtol when given. Integers must be equal.
    """
    if isinstance(mine, (tuple, list)) and mine and isinstance(mine[0], torch.Tensor):
        if not isinstance(reference, (tuple, list)) or len(mine) != len(reference):
            raise AssertionError(f"{what}: expected {len(reference)} tensors, got {len(mine)}.")
        for index, (one, other) in enumerate(zip(mine, reference)):
            check_same(one, other, f"{what} [{index}]", against=against, atol=atol, rtol=rtol)
        return
    got, expected = _as_tensor(mine), _as_tensor(reference)
    if got.shape != expected.shape:
        raise AssertionError(
            f"{what}: your result has shape {tuple(got.shape)}, {against} has "
            f"{tuple(expected.shape)}. Print the shapes step by step to see where they part."
        )
    default_rtol, default_atol = _tolerances(got, expected)
    rtol = default_rtol if rtol is None else rtol
    atol = default_atol if atol is None else atol
    if got.is_floating_point() or expected.is_floating_point():
        got, expected = got.double(), expected.double()
    try:
        torch.testing.assert_close(got, expected, atol=atol, rtol=rtol, check_dtype=False)
    except AssertionError as error:
        detail = str(error).strip().splitlines()
        raise AssertionError(
            f"{what}: your result differs from {against}.\n" + "\n".join(detail[:6])
            + "\nCompare the two on a tiny input, one step at a time."
        ) from None
    print(f"✓ {what}: matches {against}")


def yours_or_worked(yours, worked, *example, then=None):
    """`yours` once it is written, else `worked` (with a note that says so).

    A "your turn" cell defines `yours` as a stub whose body raises NotImplementedError; the
    learner replaces the body. The hidden cell after it defines the worked solution and
    calls this with a small `example` (arguments to try `yours` on). For a class, `then`
    takes the object `yours(*example)` built and uses it (e.g. a forward pass), so a class
    whose __init__ is written but whose forward is not still counts as unwritten. A piece
    that runs, right or wrong, is the learner's: the check after it says whether it is right.
    """
    try:
        made = yours(*example)
        if then is not None:
            then(made)
    except NotImplementedError:
        print(f"{yours.__name__} is not written yet, so the lesson goes on with the worked "
              "solution (the hidden cell above: open it once you have tried).")
        return worked
    return yours


@contextmanager
def stopwatch(label: str = "took"):
    """Time the block and print e.g. 'took 1.23 s'. The elapsed seconds are in .seconds."""
    timer = _Timer()
    start = time.perf_counter()
    try:
        yield timer
    finally:
        timer.seconds = time.perf_counter() - start
        print(f"{label} {timer.seconds:.2f} s")


class _Timer:
    seconds: float = 0.0
