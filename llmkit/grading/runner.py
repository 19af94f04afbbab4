"""Execute a notebook top to bottom in a fresh kernel, in a sandbox, with limits.

The grader runs each submitted notebook once with nbclient so the teacher sees whether it
runs and which cells raised. The kernel runs inside a bubblewrap sandbox (isolation.py):
read-only file system with the class folders hidden, an empty scratch folder as its home
and working folder (deleted afterwards), no network, its own PID namespace, and limits on
memory, processes and CPU for its whole process tree. It talks to nbclient over Unix
sockets in that scratch folder (the sandbox has no shared network). Time limits per cell
and per notebook are enforced from outside; at the end the whole sandbox is killed, so
nothing the notebook started outlives it. Nothing the kernel computes feeds into the
grade: the hidden checks run separately (see sandbox.py).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
from jupyter_client import KernelManager
from jupyter_client.kernelspec import KernelSpecManager
from nbclient import NotebookClient
from nbclient.exceptions import CellTimeoutError, DeadKernelError

from .isolation import Jail, JailLimits

KILL_GRACE_S = 10  # after a cell's limit, for the interrupt to work before the kill

# jupyter_client logs this when a kernel client is collected after its sandbox is gone (the
# context went with it): harmless, and it would clutter the teacher's table once a notebook.
logging.getLogger("traitlets").addFilter(
    lambda record: "Could not destroy zmq context" not in record.getMessage())


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
                     env: dict | None = None, hide=(), processes: int = 128) -> ExecutionReport:
    """Run every code cell of `notebook` (modified in place: outputs are filled in).

    cell_timeout / notebook_timeout: seconds; memory_mb: the kernel's whole process tree;
    hide: folders the kernel must not see (the class). Returns by the notebook's deadline
    (plus a grace period) whatever the kernel does: the run happens in a thread, and past
    the deadline the sandbox is killed and the thread left to wind down.
    """
    report = ExecutionReport()
    start = time.monotonic()
    # Inside, the kernel cannot see the grader: it must not watch for its parent to exit.
    jail = Jail(["env", "-u", "JPY_PARENT_PID", sys.executable, "-m", "ipykernel_launcher",
                 "-f", "{connection_file}"],
                limits=JailLimits(memory_mb=memory_mb, processes=processes, cpus=1.0,
                                  cpu_seconds=int(notebook_timeout) + 5),
                hide=hide, env=env)
    worker = threading.Thread(target=_run_cells, daemon=True,
                              args=(notebook, jail, report, cell_timeout,
                                    start + notebook_timeout))
    try:
        worker.start()
        give_up = start + notebook_timeout + 2 * KILL_GRACE_S
        while worker.is_alive() and time.monotonic() < give_up:
            worker.join(0.5)
            if jail.process is not None and jail.process.poll() is not None:
                worker.join(1)  # the sandbox is gone: the kernel died, whatever nbclient says
                if worker.is_alive() and not report.timed_out:
                    report.kernel_died = True
                if worker.is_alive():
                    break
        else:
            if worker.is_alive():
                report.timed_out = True
                report.errors.append("the notebook ran past its time limit; its sandbox "
                                     "was killed")
    finally:
        jail.kill()  # whatever the notebook started dies with its sandbox
        worker.join(KILL_GRACE_S)
    report.seconds = time.monotonic() - start
    return report


def _run_cells(notebook, jail: Jail, report: ExecutionReport, cell_timeout: float,
               deadline: float) -> None:
    watchdog = None
    try:
        manager = _kernel_manager(jail)
        client = NotebookClient(notebook, km=manager, timeout=int(cell_timeout),
                                allow_errors=True, interrupt_on_timeout=True,
                                resources={"metadata": {"path": jail.scratch}})
        # The kernel process's own output (start-up warnings; cell output travels over
        # the kernel protocol instead) would clutter the grader's table.
        with client.setup_kernel(env=jail.environment(), cwd=jail.scratch,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                 preexec_fn=jail.preexec(), start_new_session=True):
            jail.process = getattr(manager.provisioner, "process", None)
            watchdog = _Watchdog(jail, report)
            for index, cell in enumerate(notebook.cells):
                if cell.cell_type != "code":
                    continue
                left = deadline - time.monotonic()
                if left <= 1:
                    report.timed_out = True
                    break
                client.timeout = max(1, int(min(cell_timeout, left)))
                # A cell that ignores the interrupt is ended by killing the sandbox.
                watchdog.arm(time.monotonic() + client.timeout + KILL_GRACE_S)
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
    finally:
        if watchdog is not None:
            watchdog.stop()
            if watchdog.fired:
                report.timed_out = True
                report.errors.append("a cell ignored the interrupt at its time limit; the "
                                     "kernel's sandbox was killed")


class _Watchdog:
    """Kills the sandbox when the armed deadline passes (checked from a thread)."""

    def __init__(self, jail: Jail, report: ExecutionReport):
        self.jail, self.report, self.deadline, self.fired = jail, report, float("inf"), False
        self._stop = threading.Event()
        threading.Thread(target=self._watch, daemon=True).start()

    def arm(self, deadline: float) -> None:
        self.deadline = deadline

    def stop(self) -> None:
        self._stop.set()

    def _watch(self) -> None:
        while not self._stop.wait(0.25):
            if time.monotonic() > self.deadline:
                self.fired = True
                self.report.timed_out = True  # before the kill, which ends the run
                self.jail.kill()
                return


def _kernel_manager(jail: Jail) -> KernelManager:
    """A kernel manager whose kernel runs in `jail` and listens on Unix sockets there."""
    specs = Path(jail.scratch) / ".kernelspec"
    folder = specs / "llmkit-sandboxed"
    folder.mkdir(parents=True)
    (folder / "kernel.json").write_text(json.dumps({
        "argv": jail.command(), "display_name": "Python (sandboxed)", "language": "python",
        # A signal would reach bubblewrap, not the kernel: interrupt over the protocol.
        "interrupt_mode": "message"}))
    manager = KernelManager(kernel_name="llmkit-sandboxed",
                            kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(specs)]),
                            transport="ipc", ip=str(Path(jail.scratch) / "kernel-ipc"))
    manager.connection_file = str(Path(jail.scratch) / "kernel.json")
    return manager


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
