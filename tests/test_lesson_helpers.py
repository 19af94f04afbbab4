"""llmkit.lesson: budgets follow quick mode; check_same passes equal results and explains
different ones."""

import pytest
import torch

from llmkit.lesson import budget, check_same, stopwatch, yours_or_worked


def test_budget_follows_quick_mode(monkeypatch):
    monkeypatch.setenv("LLMKIT_QUICK", "1")
    assert budget(2000, 50) == 50
    monkeypatch.delenv("LLMKIT_QUICK")
    assert budget(2000, 50) == 2000


def test_check_same_accepts_rounding_and_dtype_differences(capsys):
    x = torch.randn(4, 5)
    check_same(x + 1e-7, x.double(), "sum")
    check_same([1, 2, 3], torch.tensor([1, 2, 3]), "ids")
    check_same((x, x * 2), (x.clone(), x * 2), "pair")
    assert capsys.readouterr().out.count("✓") == 4  # one line per tensor of the pair


def test_check_same_explains_a_wrong_shape_or_value():
    with pytest.raises(AssertionError, match=r"shape \(4, 5\).*\(5, 4\)"):
        check_same(torch.zeros(4, 5), torch.zeros(5, 4), "table")
    with pytest.raises(AssertionError, match="differs from llmkit's"):
        check_same(torch.zeros(3), torch.tensor([0.0, 1.0, 0.0]), "probs")
    with pytest.raises(AssertionError, match="differs"):
        check_same([1, 2], [1, 3], "ids")


def test_stopwatch_reports_seconds(capsys):
    with stopwatch("took") as timer:
        sum(range(1000))
    assert timer.seconds >= 0 and capsys.readouterr().out.startswith("took ")


def test_check_same_judges_float32_by_float32_tolerances(capsys):
    exact = torch.linspace(-3, 3, 50, dtype=torch.float64)
    rounded = (exact.float() * (1 + 4e-7)).float()  # float32-sized error, far above float64's
    check_same(rounded, exact, "gelu", against="F.gelu")
    assert "matches F.gelu" in capsys.readouterr().out
    with pytest.raises(AssertionError, match="differs from F.gelu"):
        check_same(exact * (1 + 1e-4), exact, "gelu", against="F.gelu")


def test_yours_or_worked_takes_the_learners_function_once_it_is_written(capsys):
    def worked(x):
        return x + 1

    def stub(x):
        raise NotImplementedError()

    def wrong(x):
        return x - 1

    assert yours_or_worked(stub, worked, 3) is worked
    assert "stub is not written yet" in capsys.readouterr().out
    assert yours_or_worked(wrong, worked, 3) is wrong   # the check after it judges it
    assert capsys.readouterr().out == ""
    with pytest.raises(ZeroDivisionError):                # a crash is the learner's to see
        yours_or_worked(lambda x: x / 0, worked, 3)


def test_a_class_counts_as_written_only_when_what_then_uses_is_written(capsys):
    class Half:
        def __init__(self, width):
            self.width = width

        def forward(self, x):
            raise NotImplementedError("your turn")

    class Worked(Half):
        def forward(self, x):
            return x * self.width

    assert yours_or_worked(Half, Worked, 2) is Half          # __init__ alone runs fine
    assert yours_or_worked(Half, Worked, 2, then=lambda made: made.forward(1)) is Worked
    assert "Half is not written yet" in capsys.readouterr().out
