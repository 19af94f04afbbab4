"""Run a learner's function on test inputs in a throwaway process (POSIX: Linux, macOS).

The batch grader never runs learner code in its own process. It starts this module once
(`python -m llmkit.grading.sandbox`), a small server that imports torch and llmkit and then,
for each job it reads on stdin (one JSON object per line), forks a child that:

1. moves into a fresh temporary folder, sends its own stdin/stdout/stderr to /dev/null
   (so printing a fake score shows nothing), and lowers its limits: CPU seconds, memory
   (address space), and a file size of 0 (it cannot write files);
2. replaces the finished pieces the task forbids with stand-ins that record the call and
   raise, BEFORE any learner code runs (so even `from llmkit.bigram import ...` in the
   learner's cell gets the stand-in);
3. runs the notebook's setup code and the learner's task cells, each under a timer;
4. calls the learner's function on each case and writes one JSON line per case to a pipe:
   the answers, or the error, and any forbidden piece it touched.

The server relays the child's lines to the grader, killing the child (and anything it
started) when the job's wall-clock time runs out. The answers are compared with the
reference in the grader's process, which computed the references before any learner code
ran: a child can only report what its functions computed, never a score. Forking from a
server that has already imported torch makes each job cost milliseconds, not the seconds
of a fresh interpreter.
"""

from __future__ import annotations

import json
import linecache
import os
import select
import shutil
import signal
import sys
import tempfile
import time

MAX_REPLY_BYTES = 64 * 2**20


def serve(instream=sys.stdin, outstream=sys.stdout) -> None:
    """The server loop: one job per input line, one JSON reply per output line."""
    # Imported here, before any fork, so every child starts with them loaded.
    import torch  # noqa: F401

    import llmkit.bigram  # noqa: F401
    import llmkit.grading.catalog  # noqa: F401
    import llmkit.tokenizers  # noqa: F401

    for line in instream:
        if not line.strip():
            continue
        reply = run_job(json.loads(line))
        outstream.write(json.dumps(reply) + "\n")
        outstream.flush()


def run_job(job: dict) -> dict:
    """Fork a child for `job` and collect its lines.

    -> {"messages": [parsed JSON lines], "timed_out": bool, "exit": description or None}.
    """
    workdir = tempfile.mkdtemp(prefix="llmkit-grade-")
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        os.close(read_end)
        try:
            os.setpgid(0, 0)
            _child(job, write_end, workdir)
        finally:
            os._exit(0)
    os.close(write_end)
    try:
        os.setpgid(pid, pid)  # also here: whichever runs first, the group exists
    except OSError:
        pass
    raw, timed_out = _read_until(read_end, time.monotonic() + job["total_timeout"])
    os.close(read_end)
    _kill_group(pid)
    _, status = os.waitpid(pid, 0)
    shutil.rmtree(workdir, ignore_errors=True)
    messages = []
    for line in raw.decode("utf-8", errors="replace").splitlines():
        try:
            messages.append(json.loads(line))
        except ValueError:
            continue
    return {"messages": messages, "timed_out": timed_out, "exit": _describe_exit(status)}


def _read_until(fd: int, deadline: float) -> tuple[bytes, bool]:
    chunks, size = [], 0
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return b"".join(chunks), True
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            continue
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            return b"".join(chunks), False
        chunks.append(chunk)
        size += len(chunk)
        if size > MAX_REPLY_BYTES:
            return b"".join(chunks), False


def _kill_group(pid: int) -> None:
    for target in (lambda: os.killpg(pid, signal.SIGKILL), lambda: os.kill(pid, signal.SIGKILL)):
        try:
            target()
        except OSError:
            pass


def _describe_exit(status: int) -> str | None:
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        if number == getattr(signal, "SIGXCPU", None):
            return "stopped: it used up its CPU time"
        if number == signal.SIGKILL:
            return None  # our own clean-up kill, or the wall-clock limit (reported as such)
        return f"crashed with signal {signal.Signals(number).name}"
    return None


# ---------------------------------------------------------------------------------------
# The child.

def _child(job: dict, fd: int, workdir: str) -> None:
    from llmkit.grading.exercise import (TookTooLong, describe_error, forbidding, run_case,
                                         time_limit)

    out = os.fdopen(fd, "w", buffering=1)

    def send(message: dict) -> None:
        out.write(json.dumps(message) + "\n")
        out.flush()

    _isolate(workdir, job)
    namespace = {"__name__": "__main__"}
    used = []
    with forbidding(job["forbidden"], used.append):
        errors = []
        for label, source in [("setup", job["setup"])] + [tuple(c) for c in job["cells"]]:
            filename = f"<cell {label}>"
            linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
            try:
                with time_limit(job["cell_timeout"]):
                    exec(compile(source, filename, "exec"), namespace)
            except BaseException as error:  # noqa: BLE001 - any failure is feedback
                errors.append({"cell": label, **describe_error(error)})
        send({"cells": errors})
        fn = namespace.get(job["function"])
        if not callable(fn):
            send({"missing": True})
            return
        for index, case in enumerate(job["cases"]):
            used.clear()
            try:
                with time_limit(job["case_timeout"]):
                    outcome = run_case(fn, case["args"], case["calls"])
            except TookTooLong:
                send({"case": index, "forbidden": sorted(set(used)), "answers": None,
                      "error": {"type": "Timeout", "where": "",
                                "message": f"took longer than {job['case_timeout']} s on "
                                           "one case (an endless loop?)"}})
                break  # the other cases would only wait as long again
            except MemoryError:
                outcome = {"answers": None, "error": {
                    "type": "MemoryError", "where": "",
                    "message": f"used more than {job['memory_mb']} MiB of memory"}}
            send({"case": index, "forbidden": sorted(set(used)), **outcome})
    send({"done": True})


def _isolate(workdir: str, job: dict) -> None:
    """Fresh folder, no terminal, no files, limited CPU and memory (where the OS allows)."""
    import resource

    os.chdir(workdir)
    devnull = os.open(os.devnull, os.O_RDWR)
    for stream in (0, 1, 2):
        os.dup2(devnull, stream)
    sys.dont_write_bytecode = True
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writing a file raises OSError instead
    cpu = int(job["total_timeout"]) + 1
    limits = [(resource.RLIMIT_CPU, (cpu, cpu + 1)), (resource.RLIMIT_FSIZE, (0, 0)),
              (resource.RLIMIT_CORE, (0, 0))]
    pages = _virtual_pages()
    if pages:
        address_space = pages * os.sysconf("SC_PAGE_SIZE") + job["memory_mb"] * 2**20
        limits.append((resource.RLIMIT_AS, (address_space, address_space)))
    for kind, value in limits:
        try:
            resource.setrlimit(kind, value)
        except (ValueError, OSError):
            pass  # e.g. macOS does not enforce RLIMIT_AS; the wall clock still applies


def _virtual_pages() -> int | None:
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[0])
    except OSError:
        return None


if __name__ == "__main__":
    serve()
