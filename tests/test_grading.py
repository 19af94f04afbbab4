"""The graded exercises: instant checks, student notebooks in sync with their sources, and
the batch grader on a class folder of solved, empty, partly solved and adversarial
notebooks (each trick of the issue: fake check, patched llmkit, edited hidden tests, fake
score, file writes, calling the finished piece, raising, endless loops, eating memory,
invalid JSON). Expected grades are worked out by hand from the rules, not by the grader."""

import csv
import json
import math
from pathlib import Path

import nbformat
import pytest
import torch

from llmkit.grading import ASSIGNMENTS, check, codec
from llmkit.grading.assign import generate, strip_solutions, student_notebook, to_text
from llmkit.grading.exercise import compare_tensors
from llmkit.grading.gradebook import format_table, write_csv, write_json
from llmkit.grading.grader import Limits, PackageGuard, find_notebooks, grade_paths
from llmkit.grading.runner import execute_notebook

EXERCISES = Path(__file__).resolve().parents[1] / "exercises"
FAST = Limits(case_timeout=2, exercise_timeout=20, cell_timeout=20, notebook_timeout=60)


# --- building notebooks --------------------------------------------------------------

def source(name):
    return nbformat.read(EXERCISES / "source" / f"{name}.ipynb", as_version=4)


def student(name):
    return student_notebook(source(name))


def set_task(notebook, grade_id, code):
    cells = [cell for cell in notebook.cells
             if cell.metadata.get("nbgrader", {}).get("grade_id") == grade_id]
    assert len(cells) == 1, grade_id
    cells[0].source = code
    return notebook


def add_cell(notebook, code, position=2):
    notebook.cells.insert(position, nbformat.v4.new_code_cell(code))
    return notebook


def save(notebook, path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(to_text(notebook), encoding="utf-8")


def solution(name, grade_id):
    """The reference solution of one task: its cell in the source notebook."""
    return next(cell.source for cell in source(name).cells
                if cell.metadata.get("nbgrader", {}).get("grade_id") == grade_id)


# Honest answers, for the tasks a test does not attack.
COUNTS = solution("01_bigrams", "bigram-counts")
PROBS = solution("01_bigrams", "bigram-probs")
SAMPLE = solution("01_bigrams", "bigram-sample")
CROSS_ENTROPY = solution("01_bigrams", "bigram-cross_entropy")


def partial_notebook():
    """Tasks 1-2 right; task 4 uses log base 2 (wrong), so task 5, built on it, is wrong too."""
    notebook = student("01_bigrams")
    set_task(notebook, "bigram-counts", COUNTS)
    set_task(notebook, "bigram-probs", PROBS)
    set_task(notebook, "bigram-cross_entropy",
             "def cross_entropy(probs, ids):\n"
             "    return -probs[ids[:-1], ids[1:]].log2().mean().item()\n")
    set_task(notebook, "bigram-perplexity",
             "def perplexity_and_bits(probs, ids, token_lengths=None):\n"
             "    h = cross_entropy(probs, ids)\n"
             "    return math.exp(h), h / math.log(2)\n")
    return notebook


def cheating_notebook():
    """Calls the finished pieces, tampers with the checks: earns only its honest task 3."""
    notebook = student("01_bigrams")
    set_task(notebook, "bigram-counts",
             "import llmkit.bigram\n\ndef count_bigrams(ids, vocab_size):\n"
             "    return llmkit.bigram.count_bigrams(ids, vocab_size)\n")
    set_task(notebook, "bigram-probs",
             "from llmkit.bigram import bigram_probs as finished\n\n"
             "def bigram_probs(counts, smoothing=1.0):\n    return finished(counts, smoothing)\n")
    # An honest answer in a cell that also rewrites the checks and `check` itself.
    set_task(notebook, "bigram-sample",
             "import llmkit.grading\nfrom llmkit.grading.catalog import ASSIGNMENTS\n"
             "for exercise in ASSIGNMENTS['01_bigrams'].exercises:\n"
             "    exercise.compare = lambda answer, case: None\n"
             "llmkit.grading.check = lambda *args: 'passed'\n" + SAMPLE)
    set_task(notebook, "bigram-cross_entropy",
             "import llmkit.grading.exercise as machinery\n"
             "machinery.judge = lambda *args: ('passed', None)\n"
             "print('bigram.cross_entropy: passed, 2/2 points')\n"
             "def cross_entropy(probs, ids):\n    return None\n")
    set_task(notebook, "bigram-perplexity",
             "import math, llmkit.bigram\n\n"
             "def perplexity_and_bits(probs, ids, token_lengths=None):\n"
             "    try:\n        return llmkit.bigram.perplexity(probs, ids), 0.0\n"
             "    except Exception:\n        return 1.0, 0.0\n")
    add_cell(notebook, "def check(*args):\n    print('✅ passed')\n"
                       "print('FINAL SCORE: 12/12')\nopen('grades.csv', 'w').write('me,12')\n")
    return notebook


def broken_notebook():
    """Task 1 right; the rest loop forever, eat memory, fail to parse or raise."""
    notebook = student("01_bigrams")
    set_task(notebook, "bigram-counts", COUNTS)
    set_task(notebook, "bigram-probs",
             "def bigram_probs(counts, smoothing=1.0):\n    while True:\n        pass\n")
    set_task(notebook, "bigram-sample",
             "def sample(probs, start_id, n_tokens, generator=None):\n    hoard = []\n"
             "    while True:\n        hoard.append(torch.empty(100_000_000))\n")
    set_task(notebook, "bigram-cross_entropy", "def cross_entropy(probs, ids)\n    return 0.0\n")
    set_task(notebook, "bigram-perplexity",
             "def perplexity_and_bits(probs, ids):\n"
             "    return math.exp(cross_entropy(probs, ids)), 0.0\n")
    set_task(notebook, "bigram-smoothing",
             "raise RuntimeError('this cell fails before defining anything')\n")
    return notebook


def build_class_folder(root: Path) -> Path:
    """A small class: solved, empty, partly solved, cheating, broken, and not a notebook."""
    for name in ASSIGNMENTS:  # alice solved every notebook, bob touched none
        save(source(name), root / "alice" / f"{name}.ipynb")
        save(student(name), root / "bob" / f"{name}.ipynb")
    save(partial_notebook(), root / "carol" / "01_bigrams.ipynb")
    save(cheating_notebook(), root / "dave" / "01_bigrams.ipynb")
    save(broken_notebook(), root / "erin" / "01_bigrams.ipynb")
    (root / "frank").mkdir(parents=True)
    (root / "frank" / "01_bigrams.ipynb").write_text('{"cells": [ this is not json', "utf-8")
    return root


# --- fast unit tests -----------------------------------------------------------------

def test_codec_round_trips_every_value_kind_without_pickle():
    value = {"t": torch.arange(6, dtype=torch.int32).reshape(2, 3), "f": torch.rand(3).double(),
             "pair": (1, 2), (3, 4): [b"\xc3", "é", None, True, 2.5],
             "g": torch.Generator().manual_seed(7)}
    back = codec.decode(json.loads(json.dumps(codec.encode(value))))
    torch.testing.assert_close(back["t"], value["t"])
    torch.testing.assert_close(back["f"], value["f"])
    assert back["pair"] == (1, 2) and back[(3, 4)] == [b"\xc3", "é", None, True, 2.5]
    assert torch.rand(1, generator=back["g"]) == torch.rand(
        1, generator=torch.Generator().manual_seed(7))
    assert isinstance(codec.decode(codec.encode({1, 2})), codec.Unknown)
    with pytest.raises(ValueError, match="unknown tag"):
        codec.decode({"$pickle": "gASVAAAA"})


def test_tensor_comparison_names_shape_dtype_and_positions():
    expected = torch.tensor([[1, 2], [3, 4]])
    assert "shape (2,)" in compare_tensors(torch.tensor([1, 2]), expected)
    assert "dtype torch.float32" in compare_tensors(expected.float(), expected)
    message = compare_tensors(torch.tensor([[1, 2], [3, 5]]), expected)
    assert "1 of 4 positions" in message and "[1, 1]: got 5, expected 4" in message
    assert compare_tensors(expected.clone(), expected) is None


def test_check_passes_a_right_function_and_explains_a_wrong_one():
    namespace = {"torch": torch}
    exec(COUNTS, namespace)
    assert check("bigram.counts", namespace["count_bigrams"]).passed

    def float_counts(ids, vocab_size):
        return namespace["count_bigrams"](ids, vocab_size).float()

    result = check("bigram.counts", float_counts)
    assert result.status == "failed" and "dtype torch.float32" in result.message
    assert "expected torch.int64" in str(result) and "Hint" in result._repr_html_()


def test_check_reports_not_done_forbidden_and_errors():
    def stub(ids, vocab_size):
        raise NotImplementedError()

    def calls_the_reference(ids, vocab_size):
        import llmkit.bigram
        return llmkit.bigram.count_bigrams(ids, vocab_size)

    def crashes(ids, vocab_size):
        return ids[vocab_size * 1000]

    from llmkit.bigram import count_bigrams as finished

    assert check("bigram.counts", stub).status == "not done"
    assert check("bigram.counts", finished).status == "forbidden"
    forbidden = check("bigram.counts", calls_the_reference)
    assert forbidden.status == "forbidden" and "llmkit.bigram.count_bigrams" in forbidden.message
    crashed = check("bigram.counts", crashes)
    assert crashed.status == "error" and "IndexError" in crashed.message
    assert "return ids[vocab_size * 1000]" in crashed.message  # the learner's own line
    with pytest.raises(ValueError, match="known|exercises are"):
        check("bigram.nonsense", stub)


def test_check_stops_an_endless_loop(monkeypatch):
    import llmkit.grading.checks

    monkeypatch.setattr(llmkit.grading.checks, "TIME_LIMIT_S", 0.5)

    def endless(ids, vocab_size):
        while True:
            pass

    result = check("bigram.counts", endless)
    assert result.status == "error" and "took longer than 0.5 s" in result.message


def test_strict_mode_raises_on_wrong_answers_only(monkeypatch):
    monkeypatch.setenv("LLMKIT_CHECK_STRICT", "1")

    def stub(counts, smoothing=1.0):
        raise NotImplementedError()

    assert check("bigram.probs", stub).status == "not done"
    with pytest.raises(AssertionError, match="bigram.probs"):
        check("bigram.probs", lambda counts, smoothing=1.0: counts)


def test_strip_solutions_keeps_signature_and_docstring():
    code = ('def f(x):\n    """Doc."""\n    ### BEGIN SOLUTION\n    return x + 1\n'
            '    ### END SOLUTION\n')
    stripped = strip_solutions(code)
    assert stripped.startswith('def f(x):\n    """Doc."""\n')
    assert "    raise NotImplementedError()" in stripped and "x + 1" not in stripped
    with pytest.raises(ValueError, match="never closed"):
        strip_solutions("### BEGIN SOLUTION\nx = 1\n")
    with pytest.raises(ValueError, match="without"):
        strip_solutions("x = 1\n### END SOLUTION\n")


def test_student_notebooks_are_up_to_date_with_their_sources():
    stale = generate(check_only=True)
    assert stale == [], f"run `python -m llmkit.grading.assign` to regenerate {stale}"


@pytest.mark.parametrize("name", sorted(ASSIGNMENTS))
def test_source_notebooks_match_their_exercise_definitions(name):
    notebook, assignment = source(name), ASSIGNMENTS[name]
    assert notebook.metadata["llmkit"]["assignment"] == name
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert all(not cell.outputs and cell.execution_count is None for cell in code)
    assert code[0].source.strip() == assignment.setup.strip()
    by_id = {cell.metadata.get("nbgrader", {}).get("grade_id"): cell for cell in code}
    for exercise in assignment.exercises:
        task, test = by_id[exercise.grade_id], by_id[exercise.grade_id + "-check"]
        assert task.metadata["nbgrader"]["solution"] and "### BEGIN SOLUTION" in task.source
        assert f"def {exercise.function}(" in task.source
        assert test.metadata["nbgrader"]["points"] == exercise.points
        assert test.source == f'check("{exercise.id}", {exercise.function})'
    assert sum(e.points for e in assignment.exercises) == assignment.max_points
    assert 4 <= len(assignment.exercises) <= 6


def test_package_guard_reports_changed_files_and_never_writes(tmp_path):
    (tmp_path / "hidden.py").write_text("CASES = 9\n")
    guard = PackageGuard(tmp_path)
    guard.snapshot()
    assert guard.changes() == []
    (tmp_path / "hidden.py").write_text("CASES = 0\n")
    assert guard.changes() == ["hidden.py"]
    assert (tmp_path / "hidden.py").read_text() == "CASES = 0\n"


def test_students_are_named_by_their_class_sub_folder(tmp_path):
    for path in ("alice/01_bigrams.ipynb", "bob/work/02_bpe.ipynb", "loose.ipynb"):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text("{}")
    found = [(student, path.name) for student, path in find_notebooks([tmp_path])]
    assert found == [("alice", "01_bigrams.ipynb"), ("bob", "02_bpe.ipynb"),
                     ("loose", "loose.ipynb")]
    with pytest.raises(FileNotFoundError):
        find_notebooks([tmp_path / "missing"])


# --- the batch grader (sandboxed processes) ------------------------------------------

@pytest.fixture(scope="module")
def class_grades(tmp_path_factory):
    root = build_class_folder(tmp_path_factory.mktemp("class"))
    grades = grade_paths([root], seed=0, limits=FAST, execute=False)
    return root, {(Path(g.path).parent.name, Path(g.path).stem): g for g in grades}


def points(grade):
    return {exercise.id: exercise.points for exercise in grade.exercises}


def status(grade):
    return {exercise.id: exercise.status for exercise in grade.exercises}


@pytest.mark.slow
def test_solutions_score_full_marks_and_stubs_score_zero(class_grades):
    _, grades = class_grades
    for name, assignment in ASSIGNMENTS.items():
        solved, empty = grades[("alice", name)], grades[("bob", name)]
        assert solved.total == assignment.max_points, format_table([solved])
        assert empty.total == 0 and set(status(empty).values()) == {"not done"}


@pytest.mark.slow
def test_partly_solved_notebook_gets_exactly_its_right_tasks(class_grades):
    grade = class_grades[1][("carol", "01_bigrams")]
    assert points(grade) == {"bigram.counts": 2, "bigram.probs": 2, "bigram.sample": 0,
                             "bigram.cross_entropy": 0, "bigram.perplexity": 0,
                             "bigram.smoothing": 0}
    feedback = {e.id: e.feedback for e in grade.exercises}
    assert "the cross-entropy" in feedback["bigram.cross_entropy"]
    hint = next(e.hint for e in ASSIGNMENTS["01_bigrams"].exercises
                if e.id == "bigram.cross_entropy")
    assert hint in feedback["bigram.cross_entropy"]


@pytest.mark.slow
def test_tricks_earn_nothing_and_honest_work_still_counts(class_grades):
    grade = class_grades[1][("dave", "01_bigrams")]
    assert points(grade) == {"bigram.counts": 0, "bigram.probs": 0, "bigram.sample": 2,
                             "bigram.cross_entropy": 0, "bigram.perplexity": 0,
                             "bigram.smoothing": 0}
    statuses = status(grade)
    assert statuses["bigram.counts"] == statuses["bigram.probs"] == "forbidden"
    assert statuses["bigram.perplexity"] == "forbidden"  # even though it caught the error
    assert "llmkit.bigram.bigram_probs" in {e.id: e.feedback for e in grade.exercises}[
        "bigram.probs"]


@pytest.mark.slow
def test_failures_cost_only_the_affected_exercises(class_grades):
    grade = class_grades[1][("erin", "01_bigrams")]
    assert grade.total == 2 and points(grade)["bigram.counts"] == 2
    statuses = status(grade)
    assert statuses["bigram.probs"] == "timeout"
    assert statuses["bigram.sample"] == "error"
    assert "out of memory" in {e.id: e.feedback for e in grade.exercises}["bigram.sample"]
    assert statuses["bigram.cross_entropy"] == "missing"
    assert statuses["bigram.perplexity"] == "error"  # it needs the missing cross_entropy
    assert statuses["bigram.smoothing"] == "missing"


@pytest.mark.slow
def test_invalid_notebook_gets_zero_with_a_clear_message(class_grades):
    grade = class_grades[1][("frank", "01_bigrams")]
    assert grade.total == 0 and grade.exercises == [] and grade.max_points == 12
    assert "not a readable notebook" in grade.problems[0]


@pytest.mark.slow
def test_class_run_writes_a_correct_csv_and_json(class_grades, tmp_path):
    root, grades = class_grades
    ordered = [grades[key] for key in sorted(grades)]
    write_csv(ordered, tmp_path / "grades.csv")
    write_json(ordered, tmp_path / "grades.json", seed=0)
    with open(tmp_path / "grades.csv", newline="", encoding="utf-8") as file:
        rows = {(row["student"], Path(row["notebook"]).stem): row for row in csv.DictReader(file)}
    expected_totals = {("alice", "01_bigrams"): 12, ("alice", "02_bpe"): 14,
                       ("carol", "01_bigrams"): 4, ("dave", "01_bigrams"): 2,
                       ("erin", "01_bigrams"): 2, ("frank", "01_bigrams"): 0}
    for name, assignment in ASSIGNMENTS.items():  # alice solved every one, bob none
        expected_totals.setdefault(("alice", name), assignment.max_points)
        expected_totals[("bob", name)] = 0
    assert {key: float(row["total"]) for key, row in rows.items()} == expected_totals
    assert float(rows[("carol", "01_bigrams")]["bigram.probs"]) == 2
    assert "expected" in rows[("carol", "01_bigrams")]["bigram.cross_entropy feedback"]
    saved = json.loads((tmp_path / "grades.json").read_text())
    assert saved["seed"] == 0 and len(saved["notebooks"]) == len(expected_totals)
    table = format_table(ordered)
    assert "carol" in table and "4/12" in table and "0F" in table


@pytest.mark.slow
def test_bpe_reference_calls_earn_nothing(tmp_path):
    notebook = source("02_bpe")
    set_task(notebook, "bpe-merge", "from llmkit.tokenizers.bpe import merge_pair\n")
    set_task(notebook, "bpe-train",
             "from llmkit.tokenizers import BPETokenizer\n\n"
             "def train_bpe(text, num_merges, min_count=1):\n"
             "    BPETokenizer.train(text, 256 + num_merges)\n    return {}\n")
    save(notebook, tmp_path / "02_bpe.ipynb")
    grade = grade_paths([tmp_path / "02_bpe.ipynb"], seed=1, limits=FAST, execute=False)[0]
    statuses = status(grade)
    assert statuses["bpe.merge"] == "forbidden" and statuses["bpe.train"] == "forbidden"
    # encode and decode lean on the (forbidden) merge_pair too, so they fail with it.
    assert statuses["bpe.pair_counts"] == statuses["bpe.decode"] == "passed"
    assert grade.total == 1 + 2 + (3 if statuses["bpe.special"] == "passed" else 0)


# --- running notebooks in a kernel ---------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(ASSIGNMENTS))
def test_solution_notebook_runs_clean_with_every_check_passing(name, monkeypatch):
    monkeypatch.setenv("LLMKIT_CHECK_STRICT", "1")  # a wrong answer raises
    notebook = source(name)
    report = execute_notebook(notebook, cell_timeout=60, notebook_timeout=120)
    assert report.errors == [] and not report.timed_out and not report.kernel_died
    checks = [c for c in notebook.cells if c.source.startswith("check(")]
    assert all("passed" in json.dumps(c.outputs) for c in checks)


@pytest.mark.slow
def test_kernel_run_reports_problems_but_never_changes_the_grade(tmp_path):
    notebook = source("01_bigrams")
    add_cell(notebook, "import llmkit.grading.catalog as catalog\n"
                       "hidden = catalog.checks_folder() / '01_bigrams.py'\n"
                       "open(hidden, 'a').write('\\n# the hidden tests were here\\n')\n")
    add_cell(notebook, "while True:\n    pass\n", position=len(notebook.cells))
    save(notebook, tmp_path / "alice" / "01_bigrams.ipynb")
    save(student("01_bigrams"), tmp_path / "bob" / "01_bigrams.ipynb")
    hidden = EXERCISES / "checks" / "01_bigrams.py"
    before = hidden.read_bytes()
    limits = Limits(case_timeout=2, exercise_timeout=20, cell_timeout=5, notebook_timeout=60)
    grades = grade_paths([tmp_path], seed=2, limits=limits, execute=True)
    assert hidden.read_bytes() == before
    alice, bob = grades
    assert alice.total == 12 and bob.total == 0
    assert "hit the time limit" in alice.execution and "ran cleanly" in bob.execution
    assert "cell 2: OSError" in alice.execution  # the sandbox refused the write
    assert math.isfinite(alice.seconds)


@pytest.mark.slow
def test_code_that_kills_the_grading_process_costs_only_its_tasks(tmp_path):
    notebook = source("01_bigrams")
    set_task(notebook, "bigram-counts",
             "import os, signal\n\ndef count_bigrams(ids, vocab_size):\n"
             "    os.kill(os.getppid(), signal.SIGKILL)\n")
    save(notebook, tmp_path / "a_killer" / "01_bigrams.ipynb")
    save(source("01_bigrams"), tmp_path / "b_next" / "01_bigrams.ipynb")
    killer, following = grade_paths([tmp_path], seed=3, limits=FAST, execute=False)
    # The grading process is its sandbox's init: the signal does not reach it, so the task
    # just returns nothing. best_smoothing calls the killing count_bigrams, so it goes down
    # with it.
    assert status(killer)["bigram.counts"] == "failed"
    assert status(killer)["bigram.smoothing"] in ("failed", "error")
    assert killer.total == 12 - 2 - 3
    assert following.total == 12


def test_the_table_has_one_block_per_assignment_with_its_own_columns():
    from llmkit.grading.grader import ExerciseGrade, NotebookGrade

    def notebook(student, assignment, ids):
        grade = NotebookGrade(student, f"{student}/{assignment}.ipynb", assignment,
                              max_points=2 * len(ids))
        grade.exercises = [ExerciseGrade(i, i, 2.0, 2, "passed") for i in ids]
        return grade

    grades = [notebook("ann", "01_bigrams", ["bigram.a", "bigram.b"]),
              notebook("ann", "02_bpe", ["bpe.c"]),
              notebook("ben", "01_bigrams", ["bigram.a", "bigram.b"])]
    first, second = format_table(grades).split("\n\n")
    assert "bigram.a" in first and "bpe.c" not in first and first.count("01_bigrams") == 2
    assert "bpe.c" in second and "bigram" not in second and "2/2" in second
