"""Graded exercises: the instant `check` for learners, the batch grader for teachers.

    from llmkit.grading import check
    check("bigram.counts", count_bigrams)          # in an exercise notebook

    python -m llmkit grade class_folder/ --csv grades.csv --json grades.json
    python -m llmkit.grading.assign                # regenerate exercises/ from the sources

Files: exercise.py (what an exercise is, comparing answers), exercises_NN.py (the cases of
each exercise notebook), catalog.py (all of them), checks.py (the instant check),
codec.py (values as JSON between processes), sandbox.py (runs learner code in throwaway
processes), runner.py (executes a notebook in a fresh kernel), grader.py (grades notebooks),
gradebook.py (table, CSV, JSON), assign.py (student notebooks from the solution sources),
cli.py (the `grade` command).
"""

from llmkit.grading.catalog import ASSIGNMENTS, find_exercise
from llmkit.grading.checks import CheckResult, check

__all__ = ["ASSIGNMENTS", "CheckResult", "check", "find_exercise"]
