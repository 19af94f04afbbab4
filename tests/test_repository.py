"""Repository hygiene: notebooks are committed valid and without outputs, every module says
what it is, nothing refers to a path outside the repository, and shipped data is package data."""

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


# --- nothing reads outside the repository -----------------------------------------------------
# A learner's clone holds only the repository: a path to a folder beside it (../shared), to
# the machine the code was written on (/work, /home/NAME) or a Path(__file__).parents[k]
# that climbs above the root works here and fails there.

import re

OUTSIDE_PATTERNS = {
    "a machine's own folder": re.compile(r"(?<![\w.~])/(?:work|mnt|root)/|(?<![\w.~])/(?:home|Users)/\w"
                                         r"|[A-Za-z]:\\\\?Users\\"),
    "the shared folder beside the repository": re.compile(r"\bshared[\"']?\s*[/,]\s*[\"']?data\b"),
}
CLIMB = re.compile(r"(?:\.\./)+")
PARENTS = re.compile(r"__file__\)\.resolve\(\)\.parents\[(\d+)\]|__file__\)\.parents\[(\d+)\]")
SCANNED_SUFFIXES = {".py", ".ipynb", ".md", ".toml", ".txt", ".cfg", ".ini", ".sh", ".yml",
                    ".yaml", ".json", ".html", ""}
SHIPPED_TEXT = "llmkit/data/corpora/"   # corpora: the plays' text, not paths


def outside_references(text: str, relative: str) -> list[str]:
    """The places in `text` (a file at `relative`, a POSIX path from the repository root)
    that refer to something outside the repository."""
    depth = relative.count("/")
    found = []
    for what, pattern in OUTSIDE_PATTERNS.items():
        found += [f"{what}: {m.group(0)!r}" for m in pattern.finditer(text)]
    for match in CLIMB.finditer(text):
        if match.group(0).count("../") > depth:
            found.append(f"a relative path above the root: {match.group(0)!r}")
    if relative.endswith(".py"):
        for match in PARENTS.finditer(text):
            if int(match.group(1) or match.group(2)) > depth:   # parents[depth] is the root
                found.append(f"a folder above the root: {match.group(0)!r}")
    return found


def tracked_files() -> list[str]:
    try:
        return subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.split("\n")
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")


@pytest.mark.parametrize("text, relative, bad", [
    ('Path(__file__).resolve().parents[2] / "shared" / "data"', "bench/x.py", True),
    ("open('../shared/data/tinyshakespeare.txt')", "bench/x.py", True),
    ("see ../../notes", "lessons/x.ipynb", True),
    ("cd /work/main && pytest", "README.md", True),
    ("/home/alice/course", "README.md", True),
    ("C:\\Users\\bob\\course", "README.md", True),
    ('ROOT = Path(__file__).resolve().parents[1]', "tests/x.py", False),
    ("the solutions are in ../exercises/", "lessons/x.ipynb", False),
    ("~/.cache/llmkit and /tmp/x", "README.md", False),
    ("python -m llmkit train --out runs/x", "README.md", False),
])
def test_outside_reference_finder(text, relative, bad):
    assert bool(outside_references(text, relative)) is bad


def test_no_tracked_file_refers_outside_the_repository():
    this_file = Path(__file__).resolve().relative_to(ROOT).as_posix()   # it names the patterns
    problems = []
    for relative in tracked_files():
        path = ROOT / relative
        if (not relative or relative == this_file or relative.startswith(SHIPPED_TEXT)
                or path.suffix not in SCANNED_SUFFIXES or not path.is_file()):
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        problems += [f"{relative}: {found}" for found in outside_references(text, relative)]
    assert not problems, (
        "files that refer to paths outside the repository, which a learner's clone does not "
        "have (ship the file in the repository, e.g. as llmkit package data):\n"
        + "\n".join(problems))


def test_shipped_corpora_are_package_data():
    """pip install (not only a checkout) must carry the corpora: pyproject names them."""
    tomllib = pytest.importorskip("tomllib")   # Python 3.11+
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["llmkit.data"]
    shipped = {path.relative_to(ROOT / "llmkit" / "data").as_posix()
               for pattern in patterns for path in (ROOT / "llmkit" / "data").glob(pattern)}
    assert {"corpora/tinyshakespeare.txt", "corpora/README.md"} <= shipped
