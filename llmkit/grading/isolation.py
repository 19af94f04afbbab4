"""Start untrusted code in a throwaway bubblewrap sandbox whose whole process tree is limited.

    jail = Jail([sys.executable, "-m", "llmkit.grading.sandbox"], hide=["class/"])
    jail.start(); ...; jail.kill()          # kill() ends every process the code started

The grader runs each student's kernel and each student's graded functions in a `Jail`.
Inside, bubblewrap (https://github.com/containers/bubblewrap, the sandbox Flatpak uses)
gives the code its own namespaces:

- PID: it sees only its own processes, so it cannot signal the grader or another student,
  and when the sandbox's first process dies the kernel kills every process in it
  (`--die-with-parent` ties that to the grader's own life too);
- mount: the whole file system is read-only (the course, the class, the grader's files),
  the class folders are hidden behind empty folders, /tmp is empty, and one scratch folder
  (deleted afterwards) is the only place it can write;
- network: no network at all; user: an unprivileged user with no capabilities.

Limits cover the whole tree, not one process: a cgroup (v1 or v2, where this machine lets
us make one) caps memory, the number of processes and the CPU share; resource limits set
before bubblewrap starts (inherited by everything inside) cap CPU seconds, core files and,
where no cgroup is available, processes. Wall-clock limits are enforced from outside by
the caller, who kills the sandbox. Where bubblewrap or cgroups are missing, `protections()`
says which protections the run goes without, and the grader prints it.
"""

from __future__ import annotations

import functools
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


@dataclass
class JailLimits:
    """Limits on one sandbox's whole process tree: memory (MiB), processes, CPU cores
    (a share of the machine), CPU seconds, and the size of one file."""

    memory_mb: int = 4096
    processes: int = 64
    cpus: float = 1.0
    cpu_seconds: int = 600
    file_mb: int = 256  # the largest file it may write (the scratch folder is on disk)


# ---------------------------------------------------------------------------------------
# What this machine allows.

@functools.lru_cache(maxsize=None)
def bwrap_works() -> bool:
    """True when bubblewrap is installed and can make every namespace we ask for."""
    if shutil.which("bwrap") is None:
        return False
    try:
        probe = subprocess.run(_bwrap_prefix(tempfile.gettempdir(), ()) + ["true"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return probe.returncode == 0


@functools.lru_cache(maxsize=None)
def cgroup_controllers() -> tuple[str, ...]:
    """The controllers ("memory", "pids", "cpu") we can make child cgroups with here."""
    probe = Cgroup(JailLimits(memory_mb=4096, processes=64, cpus=1.0))
    try:
        return tuple(sorted(probe.controllers))
    finally:
        probe.remove()


def protections() -> list[str]:
    """What a Jail here goes without (empty when it has every protection)."""
    missing = []
    if not bwrap_works():
        missing.append("no bubblewrap sandbox (install the `bubblewrap` package): student "
                       "code runs as this user, can read and write its files, see and signal "
                       "its processes and use the network")
    controllers = cgroup_controllers()
    if "memory" not in controllers:
        missing.append("no memory cgroup: memory is limited per process, not per tree")
    if "pids" not in controllers:
        missing.append("no pids cgroup: the number of processes is limited per user")
    if "cpu" not in controllers:
        missing.append("no cpu cgroup: CPU is limited in seconds per process, not in share")
    return missing


# ---------------------------------------------------------------------------------------
# The cgroup that holds one sandbox.

class Cgroup:
    """A fresh cgroup under this process's own (v2, or v1 per controller) with the limits;
    `controllers` lists the ones that could be made. Needs write access to the cgroup
    tree (root, or a delegated subtree); without it, nothing is made."""

    def __init__(self, limits: JailLimits):
        self.dirs: dict[str, Path] = {}
        self.controllers: set[str] = set()
        name = f"llmkit-grading-{uuid.uuid4().hex[:12]}"
        memory = str(limits.memory_mb * 2**20)
        period = 100_000
        quota = str(max(1000, int(limits.cpus * period)))
        for controller, mount, files in _cgroup_mounts():
            path = mount / name
            try:
                path.mkdir()
            except OSError:
                continue
            settings = {
                "memory": [("memory.max", memory), ("memory.swap.max", "0")] if controller == "v2"
                else [("memory.limit_in_bytes", memory), ("memory.memsw.limit_in_bytes", memory)],
                "pids": [("pids.max", str(limits.processes))],
                "cpu": [("cpu.max", f"{quota} {period}")] if controller == "v2"
                else [("cpu.cfs_period_us", str(period)), ("cpu.cfs_quota_us", quota)],
            }
            made = False
            for kind in files:
                ok = True
                for index, (file, value) in enumerate(settings[kind]):
                    try:
                        (path / file).write_text(value)
                    except OSError:
                        if index == 0:  # the main setting; swap accounting may be off
                            ok = False
                if ok:
                    self.controllers.add(kind)
                    made = True
            if made:
                self.dirs[controller] = path
            else:
                _rmdir(path)

    def join(self, pid: int) -> None:
        """Move process `pid` (and its future children) into every group."""
        for path in self.dirs.values():
            try:
                (path / "cgroup.procs").write_text(str(pid))
            except OSError:
                pass

    def pids(self) -> set[int]:
        found = set()
        for path in self.dirs.values():
            try:
                found |= {int(p) for p in (path / "cgroup.procs").read_text().split()}
            except (OSError, ValueError):
                pass
        return found

    def peak_memory_mb(self) -> float | None:
        for file in ("memory.max_usage_in_bytes", "memory.peak"):
            for path in self.dirs.values():
                try:
                    return int((path / file).read_text()) / 2**20
                except (OSError, ValueError):
                    continue
        return None

    def kill_all(self) -> None:
        """SIGKILL every process in the groups, until none is left (a fork loop included)."""
        for _ in range(50):
            left = self.pids()
            if not left:
                return
            for pid in left:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            time.sleep(0.02)

    def remove(self) -> None:
        self.kill_all()
        for path in self.dirs.values():
            _rmdir(path)
        self.dirs = {}


def _rmdir(path: Path) -> None:
    for _ in range(50):
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.02)


def _cgroup_mounts() -> list[tuple[str, Path, tuple[str, ...]]]:
    """(kind, the folder our own cgroup is, the controllers it can set) per hierarchy."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return []
    mounts = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "" and (CGROUP_ROOT / "cgroup.controllers").exists():
            base = CGROUP_ROOT / path.lstrip("/")
            try:
                enabled = (base / "cgroup.subtree_control").read_text().split()
                for wanted in ("memory", "pids", "cpu"):
                    if wanted not in enabled:
                        (base / "cgroup.subtree_control").write_text(f"+{wanted}")
                enabled = (base / "cgroup.subtree_control").read_text().split()
            except OSError:
                continue
            mounts.append(("v2", base, tuple(c for c in ("memory", "pids", "cpu")
                                             if c in enabled)))
            continue
        for controller in controllers.split(","):
            if controller in ("memory", "pids", "cpu"):
                base = CGROUP_ROOT / controller / path.lstrip("/")
                if base.is_dir():
                    mounts.append((controller, base, (controller,)))
    return mounts


# ---------------------------------------------------------------------------------------
# The sandbox.

EMPTIED = ("/tmp", "/dev/shm")  # folders the sandbox sees empty


@functools.lru_cache(maxsize=None)
def _needed_inside_emptied() -> tuple[str, ...]:
    """The course and its Python environment, where they live in a folder the sandbox
    empties (a clone or a virtual environment under /tmp, say): bound back read-only, or
    nothing inside could even import llmkit. Outermost folders only."""
    candidates = {Path(__file__).resolve().parents[2], Path(sys.prefix).resolve(),
                  Path(sys.base_prefix).resolve()}
    candidates |= {Path(entry).resolve() for entry in sys.path if entry and Path(entry).is_dir()}
    kept: list[str] = []
    for path in sorted(str(candidate) for candidate in candidates):
        inside = any(path.startswith(root + "/") for root in EMPTIED)
        covered = any(path == k or path.startswith(k + "/") for k in kept)
        if inside and not covered:
            kept.append(path)
    return tuple(kept)


def _bwrap_prefix(scratch: str, hide, as_pid_1: bool = False) -> list[str]:
    argv = ["bwrap", "--unshare-all", "--die-with-parent", "--new-session"]
    if as_pid_1:
        argv.append("--as-pid-1")
    argv += [
            "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc",
            "--tmpfs", "/tmp", "--tmpfs", "/dev/shm",
            "--uid", "65534", "--gid", "65534"]
    for path in _needed_inside_emptied():
        argv += ["--ro-bind", path, path]
    for path in hide:
        argv += ["--tmpfs", str(path)]  # an empty folder over e.g. the class folder
    argv += ["--bind", scratch, scratch, "--chdir", scratch,
             "--setenv", "HOME", scratch, "--setenv", "TMPDIR", scratch, "--"]
    return argv


class Jail:
    """One sandboxed process tree running `argv` (see the module docstring).

    hide: folders to replace by empty ones inside (e.g. the class folders).
    as_pid_1: run argv itself as the sandbox's init (pid 1), instead of under bubblewrap's
    own. Then no other process in the sandbox holds its pipes (bubblewrap's init does, and
    is reachable through /proc/1/fd), and no process in the sandbox can kill or stop it
    (init only receives signals it handles); argv must reap orphans.
    Pipes: stdin and stdout are pipes to this process, stderr goes to /dev/null (or `stderr`).
    """

    def __init__(self, argv: list[str], *, limits: JailLimits | None = None, hide=(),
                 env: dict | None = None, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                 as_pid_1: bool = False):
        self.argv = list(argv)
        self.as_pid_1 = as_pid_1
        self.limits = limits or JailLimits()
        self.hide = [str(Path(p).resolve()) for p in hide]
        self.env = env
        self.stdout, self.stderr = stdout, stderr
        self.scratch = tempfile.mkdtemp(prefix="llmkit-jail-")
        os.chmod(self.scratch, 0o777)  # the sandbox's user owns nothing outside
        self.process: subprocess.Popen | None = None
        self.cgroup: Cgroup | None = None

    @property
    def sandboxed(self) -> bool:
        return bwrap_works()

    def command(self) -> list[str]:
        """The full command line: bwrap and its options, then argv."""
        if not self.sandboxed:
            return list(self.argv)
        return _bwrap_prefix(self.scratch, self.hide, self.as_pid_1) + self.argv

    def environment(self) -> dict:
        env = dict(os.environ if self.env is None else self.env)
        env.update(HOME=self.scratch, TMPDIR=self.scratch, PYTHONDONTWRITEBYTECODE="1")
        return env

    def preexec(self):
        """The function to run in the child before exec: join the cgroup, set the limits.
        (For a caller that starts the process itself, e.g. a Jupyter kernel manager.)"""
        if self.cgroup is None:
            self.cgroup = Cgroup(self.limits)
        cgroup, limits = self.cgroup, self.limits

        def before_exec():  # in the child, before bwrap (or the command) starts
            cgroup.join(os.getpid())
            for kind, value in ((resource.RLIMIT_CPU, limits.cpu_seconds),
                                (resource.RLIMIT_CORE, 0),
                                (resource.RLIMIT_FSIZE, limits.file_mb * 2**20)):
                try:
                    resource.setrlimit(kind, (value, value))
                except (ValueError, OSError):
                    pass
            if "pids" not in cgroup.controllers and os.getuid() != 0:
                try:  # per user, so only a backstop; root is not bound by it at all
                    resource.setrlimit(resource.RLIMIT_NPROC,
                                       (limits.processes * 4, limits.processes * 4))
                except (ValueError, OSError):
                    pass

        return before_exec

    def start(self) -> subprocess.Popen:
        self.process = subprocess.Popen(
            self.command(), stdin=subprocess.PIPE, stdout=self.stdout, stderr=self.stderr,
            env=self.environment(), cwd=self.scratch, preexec_fn=self.preexec(),
            start_new_session=True)
        return self.process

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """End every process of the sandbox and delete its scratch folder."""
        if self.process is not None:
            try:
                # Without bwrap there is no PID namespace: kill the session we started.
                os.killpg(self.process.pid, signal.SIGKILL)
            except OSError:
                pass
            try:
                self.process.kill()
            except OSError:
                pass
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
            for stream in (self.process.stdin, self.process.stdout):
                try:
                    if stream is not None:
                        stream.close()
                except OSError:
                    pass
        if self.cgroup is not None:
            self.cgroup.remove()
        shutil.rmtree(self.scratch, ignore_errors=True)

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.kill()
