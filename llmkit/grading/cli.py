"""`python -m llmkit grade PATH...`: grade notebooks or class folders, print a table.

    python -m llmkit grade class/ --csv grades.csv --json grades.json
    python -m llmkit grade alice.ipynb --seed 7 --no-execute
    python -m llmkit grade --verify grades.json --csv grades.csv [--digest HEX]

PATH is a notebook or a folder (a class folder holds one sub-folder per student). Each
notebook is run once in a fresh kernel (skip with --no-execute) and every exercise is graded
with hidden cases, each student in sandboxes of their own (see exercises/README.md). The
seed picks the hidden cases; the same seed gives the same cases, so a grade can be
reproduced. The gradebook files are written last, after every student's code has ended;
the digest printed with them (also inside the JSON) lets `--verify` detect a later change.
"""

from __future__ import annotations

import argparse
import random
import sys

from .grader import Limits, grade_paths
from .gradebook import format_table, verify_json, write_csv, write_json
from .isolation import protections


def main(argv=None) -> int:
    """Run the grader; -> the exit status (0 when every notebook could be graded)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["grade"]:
        argv = argv[1:]
    parser = argparse.ArgumentParser(prog="python -m llmkit grade", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="*", metavar="PATH", help="notebooks or folders")
    parser.add_argument("--verify", metavar="JSON",
                        help="check a JSON gradebook (and --csv) against its digest; no grading")
    parser.add_argument("--digest", help="with --verify: the digest the grader printed")
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
    if args.verify:
        ok, message = verify_json(args.verify, args.csv, args.digest)
        print(message)
        return 0 if ok else 1
    if not args.paths:
        parser.error("give notebooks or folders to grade (or --verify JSON)")
    for missing in protections():
        print(f"warning: grading without protection: {missing}.", file=sys.stderr)

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
    # Written last: every sandbox of the run is gone by now.
    if args.csv:
        write_csv(grades, args.csv)
        print(f"wrote {args.csv}")
    if args.json:
        digest = write_json(grades, args.json, seed=seed, csv_path=args.csv)
        print(f"wrote {args.json}\ngradebook digest {digest} (check later with: python -m "
              f"llmkit grade --verify {args.json}"
              + (f" --csv {args.csv}" if args.csv else "") + f" --digest {digest})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
