"""nbgrader's own workflow gives the grades `python -m llmkit grade` gives.

nbgrader awards a grade cell's points unless the cell raises, or the points it prints as
its result (partial credit). Our check cells are the grade cells: under nbgrader's
autograder (it sets $NBGRADER_EXECUTION) `check` runs the hidden cases of seed
$LLMKIT_GRADING_SEED and raises when the task earns nothing. The test runs nbgrader's
`generate_assignment` and `autograde` on a solved, an untouched and a partly solved
notebook and compares with the batch grader at the same seed.
"""

import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from llmkit.grading.grader import grade_paths
from test_grading import FAST, partial_notebook, save, source, student

NBGRADER = shutil.which("nbgrader") or str(Path(sys.executable).parent / "nbgrader")


def nbgrader(root: Path, *args) -> None:
    done = subprocess.run([NBGRADER, *args, f"--CourseDirectory.root={root}"], cwd=root,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]


@pytest.mark.slow
def test_nbgrader_autograde_matches_the_batch_grader(tmp_path):
    from nbgrader.api import Gradebook

    root = tmp_path / "course"
    save(source("01_bigrams"), root / "source" / "ps1" / "01_bigrams.ipynb")
    nbgrader(root, "generate_assignment", "ps1", "--force")
    released = nbformat.read(root / "release" / "ps1" / "01_bigrams.ipynb", as_version=4)
    ours = student("01_bigrams")
    assert [c.source for c in released.cells] == [c.source for c in ours.cells]

    submissions = {"solved": source("01_bigrams"), "untouched": released,
                   "partial": partial_notebook()}
    for name, notebook in submissions.items():
        save(notebook, root / "submitted" / name / "ps1" / "01_bigrams.ipynb")
    nbgrader(root, "autograde", "ps1", "--force")
    with Gradebook(f"sqlite:///{root / 'gradebook.db'}") as gradebook:
        by_nbgrader = {name: gradebook.find_submission("ps1", name).score
                       for name in submissions}

    ours = grade_paths([root / "submitted"], seed=0, limits=FAST, execute=False)
    by_llmkit = {grade.student: grade.total for grade in ours}
    assert by_nbgrader == by_llmkit == {"solved": 12, "untouched": 0, "partial": 4}


def test_check_needs_no_plotly():
    code = ("import sys, llmkit.grading\nfrom llmkit.grading import check\n"
            "assert not any(m.split('.')[0] == 'plotly' for m in sys.modules), 'plotly'\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
