"""Make the student notebooks in exercises/ from the solution sources in exercises/source/.

A source notebook holds the reference solutions between nbgrader's markers:

    def count_bigrams(ids, vocab_size):
        \"\"\"...\"\"\"
        ### BEGIN SOLUTION
        ...
        ### END SOLUTION

The student version keeps everything else (signature, docstring, check cells, metadata)
and replaces each marked region by `raise NotImplementedError()` at the same indentation;
outputs are cleared. The task cell still runs (it only defines the function), so an
untouched student notebook runs top to bottom and its checks say "not done yet".

    python -m llmkit.grading.assign            # regenerate exercises/*.ipynb
    python -m llmkit.grading.assign --check    # exit 1 if any is out of date
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import nbformat

BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
EXERCISES_DIR = Path(__file__).resolve().parents[2] / "exercises"


def strip_solutions(source: str, where: str = "a cell") -> str:
    """Replace every BEGIN/END SOLUTION region (markers included) by a stub line."""
    out, inside = [], False
    for line in source.splitlines():
        marker = line.strip()
        if marker == BEGIN:
            if inside:
                raise ValueError(f"{where}: a second '{BEGIN}' before '{END}'; close the "
                                 "first region.")
            indent = line[: len(line) - len(line.lstrip())]
            out += [f"{indent}# YOUR CODE HERE", f"{indent}raise NotImplementedError()"]
            inside = True
        elif marker == END:
            if not inside:
                raise ValueError(f"{where}: '{END}' without a '{BEGIN}' before it.")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise ValueError(f"{where}: '{BEGIN}' is never closed by '{END}'.")
    return "\n".join(out)


def student_notebook(source: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """The student version of a source notebook (a new object; the source is unchanged)."""
    notebook = copy.deepcopy(source)
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
        if cell.metadata.get("nbgrader", {}).get("solution"):
            cell.source = strip_solutions(cell.source, f"cell {index}")
        elif BEGIN in cell.source:
            raise ValueError(f"cell {index} has a solution region but is not marked as a "
                             "solution cell (nbgrader metadata 'solution': true).")
    return notebook


def to_text(notebook: nbformat.NotebookNode) -> str:
    """The exact text a notebook file is written as (so up-to-date checks compare text)."""
    return nbformat.writes(notebook) + "\n"


def generate(source_dir=None, out_dir=None, check_only: bool = False) -> list[Path]:
    """Write the student version of every source notebook; -> the files that changed
    (with check_only, the files that are out of date, writing nothing)."""
    out_dir = Path(out_dir) if out_dir else EXERCISES_DIR
    source_dir = Path(source_dir) if source_dir else out_dir / "source"
    sources = sorted(source_dir.glob("*.ipynb"))
    if not sources:
        raise FileNotFoundError(f"no source notebooks (*.ipynb) in {source_dir}.")
    changed = []
    for source_path in sources:
        source = nbformat.read(source_path, as_version=4)
        text = to_text(student_notebook(source))
        target = out_dir / source_path.name
        if not target.exists() or target.read_text(encoding="utf-8") != text:
            changed.append(target)
            if not check_only:
                target.write_text(text, encoding="utf-8")
    return changed


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m llmkit.grading.assign",
                                     description="Make student notebooks from the sources.")
    parser.add_argument("--source", help="folder of source notebooks (default exercises/source)")
    parser.add_argument("--out", help="folder for student notebooks (default exercises)")
    parser.add_argument("--check", action="store_true",
                        help="only report out-of-date notebooks; exit 1 if there are any")
    args = parser.parse_args(argv)
    changed = generate(args.source, args.out, check_only=args.check)
    for path in changed:
        print(f"{'out of date' if args.check else 'wrote'}: {path}")
    if args.check and changed:
        print("Run `python -m llmkit.grading.assign` to regenerate them.")
        return 1
    if not changed:
        print("All student notebooks are up to date.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
