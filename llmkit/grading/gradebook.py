"""The gradebook: a table to read in the terminal, a CSV for a spreadsheet, JSON for tools.

    print(format_table(grades)); write_csv(grades, "grades.csv"); write_json(grades, "g.json")

`grades` is the list of NotebookGrade that grader.grade_paths returns.
"""

from __future__ import annotations

import csv
import json
from dataclasses import asdict
from pathlib import Path

from .grader import ExerciseGrade, NotebookGrade


def format_table(grades: list[NotebookGrade]) -> str:
    """A plain-text table: one row per notebook, one column per exercise, then the total."""
    ids = _exercise_ids(grades)
    header = ["student", "notebook"] + ids + ["total", "seconds", "notes"]
    rows = []
    for grade in grades:
        points = {e.id: e for e in grade.exercises}
        row = [grade.student, Path(grade.path).name]
        for exercise_id in ids:
            exercise = points.get(exercise_id)
            row.append("" if exercise is None else _points(exercise))
        notes = "; ".join(grade.problems + ([grade.execution] if grade.execution else []))
        row += [f"{_num(grade.total)}/{_num(grade.max_points)}", f"{grade.seconds:.1f}",
                notes[:70]]
        rows.append(row)
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    lines = ["  ".join(str(cell).ljust(width) for cell, width in zip(r, widths)).rstrip()
             for r in [header] + rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def _points(exercise: ExerciseGrade) -> str:
    flag = {"forbidden": "F", "timeout": "T", "missing": "M"}.get(exercise.status, "")
    return f"{_num(exercise.points)}{flag}"


def _num(value: float) -> str:
    return f"{value:g}"


def _exercise_ids(grades) -> list[str]:
    ids = []
    for grade in grades:
        for exercise in grade.exercises:
            if exercise.id not in ids:
                ids.append(exercise.id)
    return ids


def write_csv(grades: list[NotebookGrade], path) -> None:
    """One row per notebook: student, notebook, assignment, total, max, then for each
    exercise its points and its feedback."""
    ids = _exercise_ids(grades)
    header = ["student", "notebook", "assignment", "total", "max_points", "problems"]
    for exercise_id in ids:
        header += [exercise_id, f"{exercise_id} feedback"]
    with open(path, "w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(header)
        for grade in grades:
            by_id = {e.id: e for e in grade.exercises}
            row = [grade.student, grade.path, grade.assignment, grade.total,
                   grade.max_points, " ".join(grade.problems)]
            for exercise_id in ids:
                exercise = by_id.get(exercise_id)
                row += ["", ""] if exercise is None else [exercise.points,
                                                          exercise.feedback or exercise.status]
            writer.writerow(row)


def write_json(grades: list[NotebookGrade], path, seed: int | None = None) -> None:
    """Everything, per notebook and per exercise, plus the seed that reproduces the cases."""
    data = {"seed": seed, "notebooks": [dict(asdict(grade), total=grade.total)
                                        for grade in grades]}
    Path(path).write_text(json.dumps(data, indent=2), encoding="utf-8")
