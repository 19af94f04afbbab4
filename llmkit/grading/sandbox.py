"""Run a learner's task cells and function on test inputs, inside a student's sandbox.

The batch grader starts this module once per student, inside that student's bubblewrap
sandbox (isolation.py) as its init process (pid 1): `python -I -m llmkit.grading.sandbox`.
It imports torch, llmkit and the check files, prints "ready", makes itself non-dumpable
(so no other process in the sandbox can open its pipes through /proc or trace it; as init
it also cannot be killed or stopped from inside) and then, for each job it reads on stdin
(one JSON object per line), forks a child that:

1. points its stdin/stdout/stderr at /dev/null (it never holds the pipe to the grader),
   and limits its own memory (address space) and CPU seconds;
2. starts watching for the forbidden work (forbid.py) BEFORE any learner code runs;
3. runs the notebook's setup code and the task cells this task needs, each under a timer;
4. calls the learner's function on each case and writes one JSON line per case to a pipe
   of its own: the answers, or the error, and any forbidden work it saw.

The server reads that pipe until the child exits or the job's time is up, then kills every
other process in the sandbox (a daemon, a `setsid` child, a stopped process), empties the
scratch folder, and writes one reply line: only it can write there. The grader reads that line with a deadline, and
judges the answers in its own process against references computed before any learner
code ran: a child can only report what its functions computed, never a score.
"""

from __future__ import annotations

import ctypes
import json
import linecache
import os
import select
import shutil
import signal
import sys
import time

MAX_REPLY_BYTES = 64 * 2**20
PR_SET_DUMPABLE = 4


def serve(instream=sys.stdin, outstream=sys.stdout) -> None:
    """The server loop: one job per input line, one JSON reply per output line."""
    # Imported here, before any fork, so every child starts with them loaded and every
    # check file's functions can be recognised.
    import torch

    from llmkit.grading import catalog

    # One thread: an OpenMP pool started here would deadlock in a forked child, and the
    # sandbox has one CPU's share anyway.
    torch.set_num_threads(1)

    catalog.ASSIGNMENTS.modules()
    _warm_up()
    try:
        ctypes.CDLL(None).prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the sandbox (if any) is all we have
        pass
    outstream.write("ready\n")
    outstream.flush()
    for line in instream:
        if not line.strip():
            continue
        reply = run_job(json.loads(line), streams=(instream, outstream))
        outstream.write(json.dumps(reply) + "\n")
        outstream.flush()


def _warm_up() -> None:
    """Run the watch once, so the modules it imports on first use (a dispatch mode pulls in
    a good part of torch, seconds on a busy machine) are loaded before any child forks,
    instead of counting against each task's time limit."""
    import torch

    from llmkit.grading.forbid import Rules, Watch

    with Watch(Rules(pieces=("llmkit.bigram",), ops=("_softmax",))) as watch:
        with watch.recording():
            torch.ones(2, 3).softmax(-1).sum().item()


def run_job(job: dict, streams=()) -> dict:
    """Fork a child for `job` and collect its lines.

    -> {"messages": [parsed JSON lines], "timed_out": bool, "exit": description or None}.
    """
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        try:
            os.close(read_end)
            for stream in streams:  # the server's own pipes: closed before learner code
                try:
                    os.close(stream.fileno())
                except (OSError, ValueError, AttributeError):
                    pass
            _child(job, write_end)
        finally:
            os._exit(0)
    os.close(write_end)
    raw, timed_out, status = _read_until(read_end, pid,
                                         time.monotonic() + job["total_timeout"])
    os.close(read_end)
    status = _end(pid, status)
    _kill_others()
    _wipe(os.getcwd())
    messages = []
    for line in raw.decode("utf-8", errors="replace").splitlines():
        try:
            messages.append(json.loads(line))
        except ValueError:
            continue
    return {"messages": messages, "timed_out": timed_out, "exit": _describe_exit(status)}


def _read_until(fd: int, pid: int, deadline: float) -> tuple[bytes, bool, int | None]:
    """Read the child's lines until it exits (then drain), the deadline, or the size cap.
    -> (bytes, timed out, the child's exit status if it has exited)."""
    chunks, size, status = [], 0, None
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return b"".join(chunks), True, status
        ready, _, _ = select.select([fd], [], [], min(left, 0.05))
        if ready:
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                return b"".join(chunks), False, status
            chunks.append(chunk)
            size += len(chunk)
            if size > MAX_REPLY_BYTES:
                return b"".join(chunks), False, status
            continue
        if status is not None:  # nothing more came after the child ended (a daemon it
            return b"".join(chunks), False, status  # left may still hold the pipe)
        done, code = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            status = code


def _end(pid: int, status: int | None) -> int:
    """Kill the child (if still running) and collect its exit status."""
    if status is not None:
        return status
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        pass
    return os.waitpid(pid, 0)[1]


def _kill_others() -> None:
    """SIGKILL every process in this sandbox but this server (its init, pid 1), until none
    is left; reap them (orphans are ours to reap). Outside a PID namespace this would
    reach the user's other processes, so it runs only as the sandbox's init."""
    if os.getpid() != 1:
        return
    me = os.getpid()
    for _ in range(50):
        others = [int(name) for name in os.listdir("/proc")
                  if name.isdigit() and int(name) not in (1, me)]
        if not others:
            break
        for pid in others:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        time.sleep(0.01)
    while True:
        try:
            if os.waitpid(-1, os.WNOHANG)[0] == 0:
                break
        except ChildProcessError:
            break


def _wipe(folder: str) -> None:
    """Delete what the job wrote in the scratch folder (the next job, perhaps another
    notebook of the same student, starts clean)."""
    if os.getpid() != 1:  # not in a sandbox: the folder is not ours to empty
        return
    for name in os.listdir(folder):
        path = os.path.join(folder, name)
        try:
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                os.unlink(path)
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
    if os.WIFEXITED(status) and os.WEXITSTATUS(status) != 0:
        return f"the process running it exited (status {os.WEXITSTATUS(status)})"
    return None


# ---------------------------------------------------------------------------------------
# The child.

def _child(job: dict, fd: int) -> None:
    from llmkit.grading.exercise import TookTooLong, describe_error, run_case, time_limit
    from llmkit.grading.forbid import Rules, Watch

    out = os.fdopen(fd, "w", buffering=1)

    def send(message: dict) -> None:
        out.write(json.dumps(message) + "\n")
        out.flush()

    _limit(job)
    namespace = {"__name__": "__main__"}
    watch = Watch(Rules(tuple(job["forbidden"]), tuple(job["forbidden_ops"])))
    with watch:
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
            watch.seen.clear()
            try:
                with time_limit(job["case_timeout"]):
                    outcome = run_case(fn, case["args"], case["calls"], watch)
            except TookTooLong:
                send({"case": index, "forbidden": list(watch.seen), "answers": None,
                      "error": {"type": "Timeout", "where": "",
                                "message": f"took longer than {job['case_timeout']} s on "
                                           "one case (an endless loop?)"}})
                break  # the other cases would only wait as long again
            except MemoryError:
                outcome = {"answers": None, "error": {
                    "type": "MemoryError", "where": "",
                    "message": f"used more than {job['memory_mb']} MiB of memory"}}
            send({"case": index, "forbidden": list(watch.seen), **outcome})
    send({"done": True})


def _limit(job: dict) -> None:
    """No terminal, limited CPU and memory (where the OS allows)."""
    import resource

    devnull = os.open(os.devnull, os.O_RDWR)
    for stream in (0, 1, 2):
        os.dup2(devnull, stream)
    sys.dont_write_bytecode = True
    cpu = int(job["total_timeout"]) + 1
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a too-large write raises OSError instead
    limits = [(resource.RLIMIT_CPU, (cpu, cpu + 1)), (resource.RLIMIT_CORE, (0, 0)),
              (resource.RLIMIT_FSIZE, (16 * 2**20, 16 * 2**20))]
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
