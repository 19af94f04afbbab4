"""`python -m llmkit grade PATH...`: grade notebooks or class folders, print a table.

    python -m llmkit grade class/ --csv grades.csv --json grades.json
    python -m llmkit grade alice.ipynb --seed 7 --no-execute

PATH is a notebook or a folder (a class folder holds one sub-folder per student). Each
notebook is run once in a fresh kernel (skip with --no-execute) and every exercise is graded
with hidden cases in a sandbox. The seed picks the hidden cases; the same seed gives the
same cases, so a grade can be reproduced.
"""

from __future__ import annotations

import argparse
import random
import sys

from .grader import Limits, grade_paths
from .gradebook import format_table, write_csv, write_json


def main(argv=None) -> int:
    """Run the grader; -> the exit status (0 when every notebook could be graded)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["grade"]:
        argv = argv[1:]
    parser = argparse.ArgumentParser(prog="python -m llmkit grade", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+", metavar="PATH", help="notebooks or folders")
    parser.add_argument("--csv", help="write a CSV gradebook here")
    parser.add_argument("--json", help="write a JSON gradebook (with all feedback) here")
    parser.add_argument("--seed", type=int, help="seed of the hidden cases (default: random)")
    parser.add_argument("--no-execute", action="store_true",
                        help="skip running each notebook in a kernel (faster; same grades)")
    defaults = Limits()
    parser.add_argument("--cell-timeout", type=float, default=defaults.cell_timeout,
                        help="seconds per notebook cell (default %(default)s)")
    parser.add_argument("--notebook-timeout", type=float, default=defaults.notebook_timeout,
                        help="seconds per notebook run (default %(default)s)")
    parser.add_argument("--case-timeout", type=float, default=defaults.case_timeout,
                        help="seconds per hidden case (default %(default)s)")
    parser.add_argument("--memory-mb", type=int, default=defaults.memory_mb,
                        help="memory per graded exercise in MiB (default %(default)s)")
    args = parser.parse_args(argv)

    seed = random.SystemRandom().randrange(2**31) if args.seed is None else args.seed
    limits = Limits(cell_timeout=args.cell_timeout, notebook_timeout=args.notebook_timeout,
                    case_timeout=args.case_timeout, memory_mb=args.memory_mb)

    def progress(grade):
        print(f"graded {grade.path}: {grade.total:g}/{grade.max_points:g} "
              f"({grade.seconds:.1f} s)", file=sys.stderr, flush=True)

    try:
        grades = grade_paths(args.paths, seed=seed, limits=limits,
                             execute=not args.no_execute, progress=progress)
    except FileNotFoundError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if not grades:
        print("No notebooks (*.ipynb) found under: " + ", ".join(args.paths), file=sys.stderr)
        return 2
    print(format_table(grades))
    print(f"\nseed {seed} (pass --seed {seed} to grade with the same hidden cases)")
    if args.csv:
        write_csv(grades, args.csv)
        print(f"wrote {args.csv}")
    if args.json:
        write_json(grades, args.json, seed=seed)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
