"""Execute a notebook top to bottom in a fresh kernel, with time and memory limits.

The grader runs each submitted notebook once with nbclient so the teacher sees whether it
runs and which cells raised. The kernel starts in an empty temporary folder (files the
notebook writes land there and are deleted), with a memory limit, a limit per cell and a
limit for the whole notebook; a cell that raises does not stop the run. Nothing the kernel
computes feeds into the grade: the hidden checks run separately (see sandbox.py).
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from dataclasses import dataclass, field

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellTimeoutError, DeadKernelError


@dataclass
class ExecutionReport:
    """How a run went: seconds taken, the cells that raised ("cell 4: NameError: ..."), and
    whether a time limit was hit or the kernel died (e.g. out of memory)."""

    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)
    timed_out: bool = False
    kernel_died: bool = False

    def summary(self) -> str:
        parts = []
        if self.timed_out:
            parts.append("hit the time limit")
        if self.kernel_died:
            parts.append("the kernel died (memory limit or crash)")
        if self.errors:
            parts.append(f"{len(self.errors)} cell(s) raised: " + "; ".join(self.errors[:3]))
        return ", ".join(parts) if parts else "ran cleanly"


def execute_notebook(notebook: nbformat.NotebookNode, *, cell_timeout: float = 60,
                     notebook_timeout: float = 300, memory_mb: int = 8192,
                     env: dict | None = None) -> ExecutionReport:
    """Run every code cell of `notebook` (modified in place: outputs are filled in).

    cell_timeout / notebook_timeout: seconds; memory_mb: the kernel's address-space limit.
    """
    report = ExecutionReport()
    start = time.monotonic()
    deadline = start + notebook_timeout
    with tempfile.TemporaryDirectory(prefix="llmkit-run-") as workdir:
        client = NotebookClient(notebook, timeout=int(cell_timeout), allow_errors=True,
                                interrupt_on_timeout=True, kernel_name="python3",
                                resources={"metadata": {"path": workdir}})
        kernel_env = dict(os.environ if env is None else env)
        kernel_env["HOME"] = workdir
        try:
            # The kernel process's own output (start-up warnings; cell output travels over
            # the kernel protocol instead) would clutter the grader's table.
            with client.setup_kernel(env=kernel_env, cwd=workdir, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL,
                                     preexec_fn=_memory_limiter(memory_mb)):
                for index, cell in enumerate(notebook.cells):
                    if cell.cell_type != "code":
                        continue
                    left = deadline - time.monotonic()
                    if left <= 1:
                        report.timed_out = True
                        break
                    client.timeout = max(1, int(min(cell_timeout, left)))
                    try:
                        client.execute_cell(cell, index)
                    except CellTimeoutError:
                        report.timed_out = True
                        report.errors.append(f"cell {index}: took longer than "
                                             f"{client.timeout} s")
                    _collect_errors(cell, index, client.timeout, report)
        except DeadKernelError:
            report.kernel_died = True
        except Exception as error:  # a kernel that fails to start, a broken cell format
            report.errors.append(f"the notebook could not be run: {type(error).__name__}: "
                                 f"{str(error)[:200]}")
    report.seconds = time.monotonic() - start
    return report


def _collect_errors(cell, index: int, timeout: float, report: ExecutionReport) -> None:
    for output in cell.get("outputs", []):
        if output.get("output_type") != "error":
            continue
        if output.get("ename") == "KeyboardInterrupt":  # how nbclient stops a cell on timeout
            report.timed_out = True
            report.errors.append(f"cell {index}: took longer than {timeout} s and was stopped")
        else:
            report.errors.append(f"cell {index}: {output.get('ename')}: "
                                 f"{str(output.get('evalue'))[:120]}")


def _memory_limiter(memory_mb: int):
    def limit():  # runs in the kernel's process just before it starts
        import resource

        size = memory_mb * 2**20
        try:
            resource.setrlimit(resource.RLIMIT_AS, (size, size))
        except (ValueError, OSError):
            pass
    return limit
