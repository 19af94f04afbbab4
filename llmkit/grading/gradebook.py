"""The gradebook: a table to read in the terminal, a CSV for a spreadsheet, JSON for tools.

    print(format_table(grades)); write_csv(grades, "grades.csv"); write_json(grades, "g.json")
    verify_json("g.json", csv_path="grades.csv")    # -> (True, "...") if untouched

`grades` is the list of NotebookGrade that grader.grade_paths returns. The JSON carries a
SHA-256 digest of its own content and of the CSV written with it; the grader prints the
digest in the terminal when it writes them, after every student's code has ended, so a
gradebook changed later (by anyone) no longer matches the digest the teacher saw.
"""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import asdict
from pathlib import Path

from .grader import ExerciseGrade, NotebookGrade


def format_table(grades: list[NotebookGrade]) -> str:
    """Plain-text tables, one per assignment (each has its own exercises): one row per
    notebook, one column per exercise, then the total."""
    assignments = []
    for grade in grades:
        if grade.assignment not in assignments:
            assignments.append(grade.assignment)
    blocks = [_table([g for g in grades if g.assignment == name]) for name in assignments]
    return "\n\n".join(blocks)


def _table(grades: list[NotebookGrade]) -> str:
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


def write_json(grades: list[NotebookGrade], path, seed: int | None = None,
               csv_path=None) -> str:
    """Everything, per notebook and per exercise, plus the seed that reproduces the cases
    and the digest (of this content and of the CSV at `csv_path`, if given); -> the digest."""
    data = {"seed": seed, "notebooks": [dict(asdict(grade), total=grade.total)
                                        for grade in grades]}
    if csv_path is not None:
        data["csv_sha256"] = hashlib.sha256(Path(csv_path).read_bytes()).hexdigest()
    data["digest"] = _digest(data)
    Path(path).write_text(json.dumps(data, indent=2), encoding="utf-8")
    return data["digest"]


def _digest(data: dict) -> str:
    content = {key: value for key, value in data.items() if key != "digest"}
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


def verify_json(path, csv_path=None, digest: str | None = None) -> tuple[bool, str]:
    """Check a JSON gradebook (and its CSV) against the digest inside it, and against the
    digest the grader printed (`digest`), if given. -> (ok, what was found)."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if _digest(data) != data.get("digest"):
        return False, f"{path} was changed after the grader wrote it (digest mismatch)."
    if digest is not None and data["digest"] != digest:
        return False, f"{path} is not the gradebook with digest {digest}."
    if csv_path is not None:
        if hashlib.sha256(Path(csv_path).read_bytes()).hexdigest() != data.get("csv_sha256"):
            return False, f"{csv_path} was changed after the grader wrote it."
    return True, f"{path} is as the grader wrote it (digest {data['digest'][:16]}...)."
