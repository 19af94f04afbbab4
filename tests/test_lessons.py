"""Every lesson follows the course's rhythm, and every link in it leads somewhere.

The browser test runs the lessons themselves (tests/test_browser_lessons.py); these tests
read them. Each lesson opens with its title, what the learner will be able to do, the time
it takes and what it builds on; picks the device (so the same cells use a GPU); sizes its
work with `budget(...)` (so quick mode shrinks it); has the learner write its central pieces
("your turn", with a hidden worked solution) and checks them against llmkit; and ends with a
recap, "try this" prompts and its exercises.
"""

import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
LESSONS = sorted((ROOT / "lessons").glob("[0-9][0-9]_*.ipynb"))
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def read(path):
    return nbformat.read(path, as_version=4)


def markdown(notebook) -> str:
    return "\n".join(cell.source for cell in notebook.cells if cell.cell_type == "markdown")


def code(notebook) -> str:
    return "\n".join(cell.source for cell in notebook.cells if cell.cell_type == "code")


def test_lessons_are_numbered_from_00_without_gaps():
    numbers = [int(path.name[:2]) for path in LESSONS]
    assert numbers[:5] == [0, 1, 2, 3, 4], f"lessons found: {[p.name for p in LESSONS]}"
    assert numbers == list(range(len(numbers))), f"a gap in {numbers}"


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.stem)
def test_lesson_opens_with_goals_time_and_prerequisites(path):
    first = read(path).cells[0]
    assert first.cell_type == "markdown"
    assert first.source.startswith(f"# Lesson {path.name[:2]}:"), first.source[:60]
    for needed in ("You will be able to", "Time:", "Builds on:"):
        assert needed in first.source, f"{path.name}: the first cell does not say {needed!r}"


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.stem)
def test_lesson_ends_with_recap_try_this_and_exercises(path):
    text = markdown(read(path))
    headings = re.findall(r"^## (.+)$", text, flags=re.MULTILINE)
    for needed in ("Recap", "Try this"):
        assert any(h.startswith(needed) for h in headings), f"{path.name}: no '## {needed}'"
    assert "../exercises/" in text, f"{path.name}: no link to an exercise notebook"


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.stem)
def test_lesson_runs_anywhere_and_shrinks_in_quick_mode(path):
    source = code(read(path))
    assert "pick_device(" in source, f"{path.name}: the device is not picked with pick_device()"
    assert "budget(" in source, f"{path.name}: no budget(default, quick) for quick mode"


@pytest.mark.parametrize("path", LESSONS[1:], ids=lambda p: p.stem)
def test_lesson_checks_the_learners_pieces_against_llmkit(path):
    assert "check_same(" in code(read(path)), f"{path.name}: no check_same(...) step"


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.stem)
def test_every_relative_link_in_a_lesson_exists(path):
    missing = [target for target in LINK.findall(markdown(read(path)))
               if "://" not in target and not (path.parent / target).exists()]
    assert not missing, f"{path.name} links to files that do not exist: {missing}"


def test_readme_starts_learners_at_the_first_lesson():
    readme = (ROOT / "README.md").read_text()
    assert f"lessons/{LESSONS[0].name}" in readme


def _is_hidden_worked_solution(cell) -> bool:
    return (cell.metadata.get("jupyter", {}).get("source_hidden") is True
            and "worked-solution" in cell.metadata.get("tags", []))


@pytest.mark.parametrize("path", LESSONS[1:], ids=lambda p: p.stem)
def test_each_your_turn_is_a_stub_a_hidden_worked_solution_and_a_check(path):
    """Where a lesson asks the learner to write a piece: a stub cell the learner fills, the
    worked solution after it hidden by default (it stands in until the stub is written, so
    the tests run it), then a check of the learner's piece against a reference."""
    cells = read(path).cells
    turns = [i for i, cell in enumerate(cells)
             if cell.cell_type == "code" and "yours_or_worked(" in cell.source]
    assert turns, f"{path.name}: no 'your turn' (a piece the learner writes and checks)"
    for i in turns:
        stub, worked = cells[i - 1], cells[i]
        where = f"{path.name}, cell {i}"
        assert _is_hidden_worked_solution(worked), \
            f"{where}: the worked solution is not hidden (jupyter.source_hidden and the " \
            "'worked-solution' tag)"
        assert stub.cell_type == "code" and "raise NotImplementedError" in stub.source, \
            f"{where}: the cell before the worked solution is not the learner's stub"
        after = [c.source for c in cells[i + 1:i + 4] if c.cell_type == "code"]
        assert any("check_same(" in source for source in after), \
            f"{where}: no check_same(...) within the next cells"
