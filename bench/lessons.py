"""How long each lesson takes to run top to bottom, in default and in quick mode.

    python bench/lessons.py                      # every lesson, both modes
    python bench/lessons.py --mode quick 02 03   # some lessons, one mode
    python bench/lessons.py --mode default --keep runs/executed 07   # keep the outputs to read

Each lesson runs in a fresh kernel (nbclient), exactly as a learner's "Run All" would,
with static figures (LLMKIT_STATIC=1) so no browser is needed. The repository copy is
never written: outputs stay in memory, or go to --keep's folder. Prints one line per run and a table at the end.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
LESSONS = ROOT / "lessons"


def lesson_paths(selected: list[str]) -> list[Path]:
    paths = sorted(LESSONS.glob("[0-9][0-9]_*.ipynb"))
    if selected:
        paths = [p for p in paths if p.name[:2] in selected or p.stem in selected]
    if not paths:
        raise SystemExit(f"no lesson matches {selected}; the lessons are in {LESSONS}")
    return paths


def run_lesson(path: Path, quick: bool, timeout_s: int, keep: Path | None = None) -> float:
    """Seconds to execute every cell of `path` in a fresh kernel (raises on a cell error).
    With `keep`, the executed notebook is written there (e.g. keep/07_pretraining-default.ipynb)."""
    notebook = nbformat.read(path, as_version=4)
    os.environ["LLMKIT_STATIC"] = "1"
    if quick:
        os.environ["LLMKIT_QUICK"] = "1"
    else:
        os.environ.pop("LLMKIT_QUICK", None)
    client = NotebookClient(notebook, timeout=timeout_s, kernel_name="python3",
                            resources={"metadata": {"path": str(LESSONS)}})
    started = time.perf_counter()
    # The kernel's own start-up warnings would clutter the figures (cells' output is kept).
    client.execute(stderr=subprocess.DEVNULL)
    seconds = time.perf_counter() - started
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        nbformat.write(notebook, keep / f"{path.stem}-{'quick' if quick else 'default'}.ipynb")
    return seconds


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("lessons", nargs="*", help="lesson numbers or file stems (default: all)")
    parser.add_argument("--mode", choices=["both", "default", "quick"], default="both")
    parser.add_argument("--timeout", type=int, default=1200, help="seconds per cell")
    parser.add_argument("--keep", type=Path, help="write the executed notebooks to this folder")
    args = parser.parse_args(argv)
    modes = ["default", "quick"] if args.mode == "both" else [args.mode]
    print(f"{os.cpu_count()} CPU threads, Python {sys.version.split()[0]}", flush=True)
    table: dict[str, dict[str, float]] = {}
    for path in lesson_paths(args.lessons):
        for mode in modes:
            seconds = run_lesson(path, quick=mode == "quick", timeout_s=args.timeout,
                                 keep=args.keep)
            table.setdefault(path.stem, {})[mode] = seconds
            print(f"{path.stem:32s} {mode:8s} {seconds:7.1f} s", flush=True)
    print(f"\n| lesson | {' | '.join(modes)} |\n|---|{'---|' * len(modes)}")
    for stem, times in table.items():
        print(f"| {stem} | " + " | ".join(f"{times[m]:.0f} s" for m in modes) + " |")
    totals = {m: sum(t[m] for t in table.values()) for m in modes}
    print("| total | " + " | ".join(f"{totals[m]:.0f} s" for m in modes) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
