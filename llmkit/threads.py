"""How many CPU threads PyTorch should use, so that a busy laptop slows down gracefully.

PyTorch starts one thread per physical core and splits every operation across them, then
waits for all of them at its end. When other programs keep the cores busy (a browser, a
second notebook, a build), the operating system sets some of those threads aside, and every
one of the thousands of operations in a training step waits for the slowest. On a 2-core
machine with two busy programs, training with 2 threads ran 6 to 17 times slower than with
1 in our measurements (`bench/threads.py` measures it on yours).

`thread_choice` leaves the busy cores to the other programs: the cores they leave free,
rounded, at least 1 and at most PyTorch's default. `llmkit.device.pick_device` applies it
once per process (`use_chosen_threads`), unless the threads were set by hand
(`torch.set_num_threads`, `$OMP_NUM_THREADS`); `$LLMKIT_THREADS` overrides the choice.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import NamedTuple

import torch

THREADS_ENV = "LLMKIT_THREADS"
# The thread count PyTorch started with: a different one later means someone chose it.
_STARTING_THREADS = torch.get_num_threads()
_threads_chosen = False
_thread_reason = "PyTorch's default: pick_device has not chosen yet"


class ThreadChoice(NamedTuple):
    """The number of CPU threads to use, and one sentence saying why."""

    threads: int
    reason: str


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity mask, e.g. a container's share)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):   # macOS and Windows have no affinity masks
        return os.cpu_count() or 1


def other_load() -> float:
    """About how many cores other programs keep busy now.

    The larger of the 1-minute load average and the number of tasks running right now
    (Linux's /proc/loadavg, less this process's own threads), so a load that has just
    started counts too. Both are machine-wide: inside a container they may count the
    host's programs. 0.0 where the system does not say.
    """
    try:
        average = os.getloadavg()[0]
    except (AttributeError, OSError):
        average = 0.0
    running = 0.0
    try:
        samples = []
        for _ in range(5):
            with open("/proc/loadavg") as handle:
                total = int(handle.read().split()[3].split("/")[0])
            samples.append(total - _own_running_threads())
            time.sleep(0.005)
        running = float(max(0, sorted(samples)[len(samples) // 2]))
    except (OSError, ValueError, IndexError):
        pass
    return max(average, running)


def _own_running_threads() -> int:
    """This process's threads that are running now (PyTorch's may still spin after work)."""
    running = 0
    for stat in Path("/proc/self/task").glob("*/stat"):
        try:
            running += stat.read_text().rsplit(")", 1)[1].split()[0] == "R"
        except (OSError, IndexError):
            continue
    return max(running, 1)   # at least the thread reading this


def thread_choice(cores: int | None = None, load: float | None = None,
                  default: int | None = None) -> ThreadChoice:
    """How many threads PyTorch should use on this CPU, and why.

    cores: usable cores (default `usable_cores()`); load: cores other programs keep busy
    (default `other_load()`); default: PyTorch's own choice (default the thread count it
    started with: one per physical core). `$LLMKIT_THREADS` overrides everything.

    The rule: the cores left free by the other programs, rounded, at least 1 and at most
    PyTorch's default. On 2 cores with two busy programs that is 1 thread, which trains
    several times faster there than 2 (`bench/threads.py`); on an idle machine it is
    PyTorch's default.
    """
    setting = os.environ.get(THREADS_ENV, "").strip()
    if setting:
        if not setting.isdigit() or int(setting) < 1:
            raise ValueError(
                f"${THREADS_ENV} is {setting!r}; set it to a whole number of threads (1 or "
                f"more), or unset it to let llmkit choose."
            )
        return ThreadChoice(int(setting), f"{setting} as ${THREADS_ENV} asks")
    cores = usable_cores() if cores is None else cores
    load = other_load() if load is None else load
    default = _STARTING_THREADS if default is None else default
    free = cores - load
    threads = max(1, min(default, math.floor(free + 0.5)))   # rounded half up
    what = f"other programs keep about {load:.1f} of {cores} usable cores busy"
    if threads == default:
        return ThreadChoice(threads, f"PyTorch's default ({what})")
    return ThreadChoice(threads, f"{what}: fewer threads than PyTorch's default of {default} "
                                 "leave them their cores instead of waiting for them")


def choose_threads(cores: int | None = None, load: float | None = None,
                   default: int | None = None) -> int:
    """The thread count of `thread_choice` (see there)."""
    return thread_choice(cores, load, default).threads


def use_chosen_threads(force: bool = False) -> ThreadChoice | None:
    """Set PyTorch's thread count to `thread_choice()`, once per process.

    Leaves the count alone (returns None) when it was chosen by hand: `torch.set_num_threads`
    called since llmkit was imported, or `$OMP_NUM_THREADS` / `$MKL_NUM_THREADS` set
    (unless `$LLMKIT_THREADS` is set too). force=True chooses again.
    """
    global _threads_chosen, _thread_reason
    if _threads_chosen and not force:
        return None
    _threads_chosen = True
    by_hand = (torch.get_num_threads() != _STARTING_THREADS
               or any(os.environ.get(name) for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")))
    if by_hand and not os.environ.get(THREADS_ENV, "").strip():
        _thread_reason = "set by hand (torch.set_num_threads or $OMP_NUM_THREADS), kept"
        return None
    choice = thread_choice()
    torch.set_num_threads(choice.threads)
    _thread_reason = choice.reason
    return choice


def threads_in_use() -> str:
    """One line for a report: the threads PyTorch uses now and why, e.g.
    "1 thread of 2 usable cores: other programs keep about 2.1 of 2 usable cores busy: ..."."""
    threads = torch.get_num_threads()
    return (f"{threads} thread{'s' if threads != 1 else ''} of {usable_cores()} usable cores: "
            f"{_thread_reason}")
