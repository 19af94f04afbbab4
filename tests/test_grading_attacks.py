"""A class that attacks the grader, graded in one run among honest students.

Each attacker writes honest code for most tasks and an attack in one or two cells: kill the
grader, stop (SIGSTOP) the grading process, flood and forge its replies, leave daemons,
overwrite other students' notebooks and the course, fork and allocate without end,
`os._exit` and endless loops that ignore the alarm. The expected grades are worked out by
hand from the rules: an honest student keeps 12/12 whatever their neighbours do, an
attacker loses exactly the attacked tasks and the tasks whose cells use them. Files
outside the students' folders are checksummed before and after.
"""

import hashlib
import os
import subprocess
import time
from pathlib import Path

import pytest

from llmkit.grading.gradebook import verify_json, write_csv, write_json
from llmkit.grading.grader import Limits, grade_paths
from llmkit.grading.isolation import bwrap_works
from test_grading import COUNTS, CROSS_ENTROPY, PROBS, SAMPLE, save, set_task, source

ROOT = Path(__file__).resolve().parents[1]
LIMITS = Limits(case_timeout=2, exercise_timeout=8, cell_timeout=8, reply_grace=4,
                memory_mb=1024, startup_timeout=120)
MARK = "llmkit-attack-marker"  # every process an attack starts carries it, to find leftovers

pytestmark = pytest.mark.skipif(not bwrap_works(), reason="needs bubblewrap (.ci/run installs it)")


def solved_with(grade_id=None, code=None, prefix=None):
    notebook = source("01_bigrams")
    if grade_id is not None:
        cell = next(c for c in notebook.cells
                    if c.metadata.get("nbgrader", {}).get("grade_id") == grade_id)
        cell.source = (prefix + cell.source) if prefix else code
    return notebook


KILL_EVERYTHING = f'''import os, signal
def count_bigrams(ids, vocab_size):
    for pid in [int(p) for p in os.listdir("/proc") if p.isdigit()]:
        if pid != os.getpid():
            try: os.kill(pid, signal.SIGKILL)
            except OSError: pass
    os.kill(-1, signal.SIGKILL)
'''
STOP_SERVER = '''import os, signal
os.kill(os.getppid(), signal.SIGSTOP)
def bigram_probs(counts, smoothing=1.0):
    os.kill(os.getppid(), signal.SIGSTOP)
'''
FLOOD_AND_FORGE = '''import os, json
forged = json.dumps({"messages": [{"cells": []}] + [{"case": i, "answers": [None]} for i in range(9)],
                     "timed_out": False, "exit": None}) + "\\n"
for target in (f"/proc/{os.getppid()}/fd/1", f"/proc/1/fd/1", "/dev/stdout"):
    try:
        with open(target, "w") as pipe:
            pipe.write(forged * 3)
            pipe.write("x" * (64 << 20))
    except OSError:
        pass
''' + SAMPLE
DAEMONS = f'''import os, subprocess, sys
subprocess.Popen(["setsid", "sh", "-c", "exec -a {MARK} sleep 600"])
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        import time
        for _ in range(600):
            for path in ("/work", "/tmp", os.environ.get("HOME", "/")):
                pass
            time.sleep(1)
        os._exit(0)
    os._exit(0)
''' + SAMPLE
VANDAL = '''import glob, os, llmkit.bigram
targets = [llmkit.bigram.__file__] + glob.glob(os.path.join(os.path.dirname(
    llmkit.bigram.__file__), "..", "exercises", "checks", "*.py"))
targets += glob.glob("/tmp/**/*.ipynb", recursive=True) + glob.glob("/tmp/**/*.json", recursive=True)
for path in targets:
    try:
        open(path, "a").write("\\nraise SystemExit  # vandalised\\n")
    except OSError:
        pass
''' + COUNTS
FORK_BOMB = '''import os
children = 0
try:
    while children < 10_000:
        if os.fork() == 0:
            import time; time.sleep(600); os._exit(0)
        children += 1
except OSError:
    pass
''' + COUNTS
MEMORY_HOG = '''import os
def bigram_probs(counts, smoothing=1.0):
    for _ in range(2):
        os.fork()
    hoard = bytearray(1200 * 2**20)
    for i in range(0, len(hoard), 4096):
        hoard[i] = 1
    return counts
'''
EXITS = "import os\nos._exit(0)\n" + SAMPLE
IGNORES_ALARM = '''import signal
signal.signal(signal.SIGALRM, signal.SIG_IGN)
while True:
    pass
''' + PROBS


def build_class(root: Path) -> dict[str, float]:
    """The class folder; -> each student's expected total (by hand, from the rules)."""
    expected = {}

    def student(name, notebook, total, file="01_bigrams.ipynb"):
        save(notebook, root / name / file)
        expected[name] = total

    # best_smoothing (3 points) calls count_bigrams and bigram_probs: it goes with either.
    student("a_honest", solved_with(), 12)
    run_enders = solved_with("bigram-counts", KILL_EVERYTHING)
    set_task(run_enders, "bigram-probs", STOP_SERVER)
    set_task(run_enders, "bigram-sample", FLOOD_AND_FORGE)  # honest after the flood
    student("b_kills_stops_floods", run_enders, 12 - 2 - 2 - 3)
    student("c_honest", solved_with(), 12)
    escapers = solved_with("bigram-sample", DAEMONS)
    set_task(escapers, "bigram-counts", VANDAL)
    set_task(escapers, "bigram-cross_entropy", FORK_BOMB.replace(COUNTS, "") + CROSS_ENTROPY)
    student("d_daemons_vandal_fork_bomb", escapers, 12)
    resources = solved_with("bigram-probs", MEMORY_HOG)
    set_task(resources, "bigram-sample", EXITS)
    student("g_memory_hog_and_exit", resources, 12 - 2 - 3 - 2)
    student("h_loops_ignoring_the_alarm", solved_with("bigram-probs", IGNORES_ALARM),
            12 - 2 - 3)
    student("i_two_copies", solved_with(), 12)
    save(solved_with(), root / "i_two_copies" / "01_bigrams (copy).ipynb")
    student("z_honest", solved_with(), 12)
    return expected


def checksums(*folders) -> dict[str, str]:
    found = {}
    for folder in folders:
        folder = Path(folder)
        for path in sorted(folder.rglob("*")) if folder.is_dir() else [folder]:
            if path.is_file() and "__pycache__" not in path.parts:
                found[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


@pytest.fixture(scope="module")
def attacked(tmp_path_factory):
    root = tmp_path_factory.mktemp("attack_class")
    expected = build_class(root)
    # (Not all of llmkit/: in a shared checkout someone may be editing it meanwhile.)
    outside = (root, ROOT / "exercises", ROOT / "llmkit" / "grading", ROOT / "llmkit" / "bigram.py")
    before = checksums(*outside)
    start = time.monotonic()
    grades = grade_paths([root], seed=0, limits=LIMITS, execute=False)
    copies = [g for g in grades if g.student == "i_two_copies"]
    grades = [g for g in grades if g.student != "i_two_copies"] + copies[:1]
    seconds = time.monotonic() - start
    csv_path, json_path = root.parent / "attack.csv", root.parent / "attack.json"
    write_csv(grades, csv_path)
    digest = write_json(grades, json_path, seed=0, csv_path=csv_path)
    time.sleep(2)  # a daemon that outlived its sandbox would strike now
    return dict(expected=expected, grades={Path(g.path).parent.name: g for g in grades},
                copies=copies,
                before=before, after=checksums(*outside), seconds=seconds,
                json=json_path, csv=csv_path, digest=digest)


@pytest.mark.slow
def test_every_student_gets_what_their_own_functions_earn(attacked):
    got = {name: grade.total for name, grade in attacked["grades"].items()}
    assert got == attacked["expected"]


@pytest.mark.slow
def test_run_ending_attacks_cost_only_the_attackers_task_with_a_note(attacked):
    grades = attacked["grades"]
    killed = {e.id: e for e in grades["b_kills_stops_floods"].exercises}["bigram.counts"]
    stopped = {e.id: e for e in grades["b_kills_stops_floods"].exercises}["bigram.probs"]
    # The grading process is the sandbox's init: signals from inside do not reach it, so
    # each attack ends only the attacker's own task process.
    assert killed.status == "error" and killed.points == 0, killed
    assert stopped.status == "failed" and stopped.points == 0, stopped
    # An attack costs its own time-limits, not the run: well under a minute per student.
    assert attacked["seconds"] < 60 * len(grades)


@pytest.mark.slow
def test_both_copies_are_graded_and_flagged(attacked):
    copies = attacked["copies"]
    assert [g.total for g in copies] == [12, 12]
    assert all("DUPLICATE" in g.problems[0] for g in copies)


@pytest.mark.slow
def test_nothing_outside_a_students_sandbox_changed_or_survived(attacked):
    assert attacked["before"] == attacked["after"]
    leftovers = subprocess.run(["pgrep", "-f", MARK], capture_output=True, text=True).stdout
    assert leftovers.strip() == ""
    ok, message = verify_json(attacked["json"], attacked["csv"], attacked["digest"])
    assert ok, message


def test_a_forged_gradebook_is_detected(tmp_path):
    from llmkit.grading.grader import ExerciseGrade, NotebookGrade

    grade = NotebookGrade("eve", "eve/01_bigrams.ipynb", "01_bigrams", max_points=12,
                          exercises=[ExerciseGrade("bigram.counts", "c", 0, 2, "failed")])
    csv_path, json_path = tmp_path / "g.csv", tmp_path / "g.json"
    write_csv([grade], csv_path)
    digest = write_json([grade], json_path, seed=1, csv_path=csv_path)
    assert verify_json(json_path, csv_path, digest)[0]
    json_path.write_text(json_path.read_text().replace('"points": 0', '"points": 2'))
    assert not verify_json(json_path, csv_path)[0]
    write_json([grade], json_path, seed=1, csv_path=csv_path)  # restored ...
    csv_path.write_text(csv_path.read_text().replace(",0,", ",12,"))
    assert not verify_json(json_path, csv_path)[0]  # ... but the CSV was changed


def test_sandbox_reports_what_it_runs_without(monkeypatch):
    from llmkit.grading import isolation

    monkeypatch.setattr(isolation, "bwrap_works", lambda: False)
    assert any("no bubblewrap sandbox" in line for line in isolation.protections())


def test_undecodable_bytes_are_replaced_with_a_note_not_a_zero(tmp_path):
    from llmkit.grading.assign import to_text
    from llmkit.grading.grader import read_notebook

    path = tmp_path / "01_bigrams.ipynb"
    text = to_text(source("01_bigrams")).replace("bigram", "bigr\u00e4m", 1)
    path.write_bytes(text.encode("utf-8").replace("\u00e4".encode("utf-8"), b"\xe4"))  # Latin-1
    notebook, notes = read_notebook(path)
    assert len(notes) == 1 and "not valid UTF-8" in notes[0] and "1 undecodable" in notes[0]
    assert len(notebook.cells) == len(source("01_bigrams").cells)
    assert "bigr\ufffdm" in "".join(cell.source for cell in notebook.cells)


def test_two_notebooks_for_one_assignment_are_flagged():
    from llmkit.grading.grader import NotebookGrade, flag_duplicates

    grades = [NotebookGrade("ann", "ann/01_bigrams.ipynb", "01_bigrams"),
              NotebookGrade("ann", "ann/01_bigrams copy.ipynb", "01_bigrams"),
              NotebookGrade("ann", "ann/02_bpe.ipynb", "02_bpe"),
              NotebookGrade("bob", "bob/01_bigrams.ipynb", "01_bigrams")]
    flag_duplicates(grades)
    assert ["DUPLICATE" in " ".join(g.problems) for g in grades] == [True, True, False, False]
    assert "01_bigrams copy.ipynb" in grades[0].problems[0]


@pytest.mark.parametrize("server", [
    "print('ready', flush=True)\nimport time\ntime.sleep(60)",             # stopped
    "print('ready', flush=True)\nimport sys\nsys.stdin.readline()\nprint('{\"messages\": 7}')",
    "print('ready', flush=True)\nimport sys\nsys.stdin.readline()\nsys.exit(0)",  # killed
], ids=["silent", "garbage", "gone"])
def test_a_sandbox_that_stops_answering_is_killed_by_the_deadline(monkeypatch, server):
    import sys

    import llmkit.grading.grader as grader

    real_jail = grader.Jail
    monkeypatch.setattr(grader, "Jail",
                        lambda argv, **kw: real_jail([sys.executable, "-c", server], **kw))
    sandbox = grader.Sandbox(Limits(reply_grace=1))
    start = time.monotonic()
    reply = sandbox.run({"total_timeout": 1})
    assert time.monotonic() - start < 15
    assert reply["broken"] and reply["messages"] == [] and not sandbox.alive


@pytest.mark.skipif(not bwrap_works(), reason="needs bubblewrap")
def test_a_course_living_under_tmp_is_still_visible_inside_the_sandbox(tmp_path, monkeypatch):
    # The sandbox empties /tmp; a clone or a virtual environment there must be bound back,
    # read-only, or nothing inside could import llmkit (CI may clone under /tmp).
    from llmkit.grading import isolation

    course = Path("/tmp") / f"llmkit-course-{os.getpid()}"
    (course / "pkg").mkdir(parents=True, exist_ok=True)
    (course / "pkg" / "marker.txt").write_text("here\n")
    try:
        monkeypatch.setattr(isolation.sys, "path", [str(course), *isolation.sys.path])
        needed = isolation._needed_inside_emptied.__wrapped__()
        assert str(course) in needed
        monkeypatch.setattr(isolation, "_needed_inside_emptied", lambda: needed)
        scratch = str(tmp_path)
        os.chmod(scratch, 0o777)
        argv = isolation._bwrap_prefix(scratch, ()) + [
            "sh", "-c", f"cat {course}/pkg/marker.txt; touch {course}/pkg/new 2>/dev/null || echo read-only"]
        out = subprocess.run(argv, capture_output=True, text=True, timeout=60).stdout
        assert out.split() == ["here", "read-only"], out
    finally:
        for child in sorted(course.rglob("*"), reverse=True):
            child.unlink() if child.is_file() else child.rmdir()
        course.rmdir()
