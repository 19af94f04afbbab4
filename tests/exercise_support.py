"""What the exercise-check tests share: run a function on cases as the grader does."""

from llmkit.grading import codec
from llmkit.grading.exercise import judge, run_case


def passed(exercise, function, cases) -> list[bool]:
    """For each case, whether `function` passes it, judged as the grader judges: fresh
    copies of the arguments through the grader's codec (so a function that changes its
    inputs cannot spoil the next call), `case.calls` calls, a crash a failed case."""
    results = []
    for case in cases:
        outcome = run_case(function, codec.encode(case.args), case.calls)
        status, _ = judge(exercise, case, outcome)
        results.append(status == "passed")
    return results
