"""Repository hygiene: notebooks are committed valid and without outputs."""

import subprocess
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]


def tracked_notebooks() -> list[Path]:
    try:
        listed = subprocess.run(
            ["git", "ls-files", "*.ipynb"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.split()
    except (OSError, subprocess.CalledProcessError):  # not a git checkout: look at the tree
        return sorted(p for p in ROOT.rglob("*.ipynb") if ".venv" not in p.parts
                      and ".ipynb_checkpoints" not in p.parts)
    return [ROOT / name for name in listed]


NOTEBOOKS = tracked_notebooks()


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: str(p.relative_to(ROOT)))
def test_notebook_is_valid_and_has_no_outputs(path):
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    dirty = [
        index for index, cell in enumerate(notebook.cells)
        if cell.cell_type == "code" and (cell.outputs or cell.execution_count is not None)
    ]
    assert not dirty, (
        f"{path.name}: cells {dirty} have outputs or execution counts. Clear them before "
        "committing: jupyter nbconvert --clear-output --inplace " + str(path.relative_to(ROOT))
    )


def test_every_module_has_a_docstring():
    import ast

    missing = [
        str(path.relative_to(ROOT))
        for path in sorted((ROOT / "llmkit").rglob("*.py"))
        if ast.get_docstring(ast.parse(path.read_text())) is None
    ]
    assert not missing, f"modules without a docstring saying what they are: {missing}"
