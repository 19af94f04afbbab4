"""Forbidden work is caught where it happens: at the operator (a TorchDispatchMode) and by
the code object of a finished piece, whatever route reached it. Each route below is one a
class used to earn marks for banned work; the references are PyTorch's own ops and
llmkit's own functions, not the watch under test."""

import gc
import importlib
import types

import pytest
import torch
import torch.nn.functional as F

import llmkit.bigram
from llmkit.grading import check
from llmkit.grading.catalog import ASSIGNMENTS, MODULE_PREFIX
from llmkit.grading.forbid import Rules, Watch, resolve

IDS = torch.randint(0, 5, (40,), generator=torch.Generator().manual_seed(0))


def caught(rules, fn):
    """What the watch saw while `fn` ran. The watch only records, so `fn` runs to its end:
    an error is the route's own fault and fails the test with its traceback."""
    with Watch(rules) as watch:
        with watch.recording():
            fn()
    return watch.seen


BIGRAM = Rules(pieces=("llmkit.bigram",))


def reload_route():
    return importlib.reload(llmkit.bigram).count_bigrams(IDS, 5)


def gc_route():
    # The real function, dug out of the garbage collector's list: the one the module holds
    # now (earlier tests in the same run may leave other objects of that name behind).
    # `type(o) is` rather than isinstance: isinstance asks each object for its __class__,
    # which some objects left by earlier tests answer with a warning or an error.
    target = llmkit.bigram.count_bigrams
    found = [o for o in gc.get_objects() if type(o) is types.FunctionType and o is target]
    assert found, "the garbage collector does not list llmkit.bigram.count_bigrams"
    return found[0](IDS, 5)


def exec_route():
    namespace = {"__name__": "llmkit.bigram", "__package__": "llmkit"}
    exec(compile(open(llmkit.bigram.__file__).read(), "<mine>", "exec"), namespace)
    return namespace["count_bigrams"](IDS, 5)


def renamed_copy_route():
    code = llmkit.bigram.count_bigrams.__code__.replace(co_name="mine", co_firstlineno=1)
    return types.FunctionType(code, llmkit.bigram.__dict__)(IDS, 5)


def alias_route():
    from llmkit.bigram import count_bigrams as my_counts
    return my_counts(IDS, 5)


@pytest.mark.parametrize("route", [reload_route, gc_route, exec_route, renamed_copy_route,
                                   alias_route])
def test_a_reference_is_caught_by_its_code_whatever_route_reached_it(route):
    seen = caught(BIGRAM, route)
    assert any("llmkit.bigram.count_bigrams" in what for what in seen), seen


SOFTMAX = Rules(ops=("_softmax", "_log_softmax", "logsumexp"))


@pytest.mark.parametrize("route", [
    lambda x: x.softmax(-1),
    lambda x: F.softmin(-x, dim=-1),
    lambda x: torch.special.softmax(x, -1),
    lambda x: torch.nn.Softmax(dim=-1)(x),
    lambda x: x.log_softmax(-1).exp(),
    lambda x: (x - x.logsumexp(-1, keepdim=True)).exp(),
], ids=["method", "softmin", "special", "module", "log_softmax", "logsumexp"])
def test_softmax_kernels_are_caught_whatever_python_route_reached_them(route):
    x = torch.randn(3, 4)
    torch.testing.assert_close(route(x), torch.softmax(x, -1))  # the route does the work
    assert any("aten._softmax" in s or "aten._log_softmax" in s or "aten.logsumexp" in s
               for s in caught(SOFTMAX, lambda: route(x)))


def test_fused_attention_is_caught_through_the_private_c_binding():
    rules = ASSIGNMENTS["05_attention"].exercises[2]  # causal single-head attention
    q = torch.randn(1, 2, 4, 8)
    seen = caught(Rules(rules.forbidden, rules.forbidden_ops),
                  lambda: torch._C._nn.scaled_dot_product_attention(q, q, q, is_causal=True))
    assert any("scaled_dot_product" in what for what in seen), seen


def test_adam_internals_are_caught_by_their_module():
    rules = next(e for e in ASSIGNMENTS["07_pretraining"].exercises if e.function == "adamw_step")
    param = torch.zeros(3)

    def private_adam():
        from torch.optim.adam import _single_tensor_adam
        _single_tensor_adam([param], [torch.ones(3)], [torch.zeros(3)], [torch.zeros(3)], [],
                            [torch.tensor(0.0)], grad_scale=None, found_inf=None,
                            amsgrad=False, has_complex=False, beta1=0.9, beta2=0.99,
                            lr=0.1, weight_decay=0.0, eps=1e-8, maximize=False,
                            capturable=False, differentiable=False,
                            decoupled_weight_decay=True)

    seen = caught(Rules(rules.forbidden, rules.forbidden_ops), private_adam)
    assert any("_single_tensor_adam" in what for what in seen), seen


def test_turning_the_watch_off_is_itself_caught():
    import sys

    def sneaky():
        sys.setprofile(None)
        return torch.randn(3).softmax(0)

    seen = caught(SOFTMAX, sneaky)
    assert any("turns off the grader's watch" in what for what in seen), seen


def test_honest_work_is_not_flagged():
    def honest():
        x = torch.randn(3, 4)
        e = (x - x.max(-1, keepdim=True).values).exp()
        return e / e.sum(-1, keepdim=True)

    assert caught(Rules(pieces=("llmkit.bigram",), ops=SOFTMAX.ops), honest) == []


# --- every task: asking the grading module itself for the answer is forbidden ---------

EXERCISES = [(name, exercise) for name in ASSIGNMENTS
             for exercise in ASSIGNMENTS[name].exercises]


@pytest.mark.parametrize("name,exercise", EXERCISES,
                         ids=[exercise.id for _, exercise in EXERCISES])
def test_every_task_forbids_the_grading_modules_own_references(name, exercise):
    """The check module's case maker runs the reference: a function that calls it (the
    'grading helper' route) earns "forbidden", with the helper named."""

    def cheat(*args):
        exercise.make_cases(torch.Generator().manual_seed(0), False)
        raise NotImplementedError()

    result = check(exercise.id, cheat)
    assert result.status == "forbidden", str(result)
    assert MODULE_PREFIX in result.message and "rules that out" in result.message


def test_every_finished_piece_a_task_rules_out_still_exists():
    """The watch skips a name that does not resolve (an optional package a machine lacks),
    so a piece of llmkit or torch that moved would silently become allowed again."""
    rotten = [(exercise.id, name) for _, exercise in EXERCISES for name in exercise.forbidden
              if name.split(".")[0] in ("llmkit", "torch") and resolve(name) is None]
    assert not rotten, f"forbidden names that no longer resolve (moved or renamed?): {rotten}"


# --- every task that rules out operators: each one is caught ---------------------------

def _ADAM_STATE():
    return ([torch.zeros(3)], [torch.ones(3)], [torch.zeros(3)], [torch.zeros(3)], [],
            [torch.tensor(1.0)])


_ADAM_HYPER = dict(lr=0.1, beta1=0.9, beta2=0.99, weight_decay=0.0, eps=1e-8, amsgrad=False,
                   maximize=False)
TRIGGERS = {  # one cheap call that runs exactly this ATen operator
    "_softmax": lambda: torch.randn(3).softmax(0),
    "_log_softmax": lambda: torch.randn(3).log_softmax(0),
    "logsumexp": lambda: torch.randn(3).logsumexp(0),
    "nll_loss_forward": lambda: F.nll_loss(torch.randn(2, 3), torch.tensor([0, 1])),
    "native_layer_norm": lambda: F.layer_norm(torch.randn(2, 3), (3,)),
    "native_group_norm": lambda: F.group_norm(torch.randn(2, 4, 3), 2),
    "gelu": lambda: F.gelu(torch.randn(3), approximate="tanh"),
    "one_hot": lambda: F.one_hot(torch.tensor([0, 2]), 3),
    "embedding": lambda: F.embedding(torch.tensor([1]), torch.randn(3, 2)),
    "_cdist_forward": lambda: torch.cdist(torch.randn(2, 3), torch.randn(2, 3)),
    "tril": lambda: torch.ones(3, 3).tril(),
    "triu": lambda: torch.ones(3, 3).triu(),
    "special_entr": lambda: torch.special.entr(torch.rand(3)),
    "_foreach_norm": lambda: torch._foreach_norm([torch.randn(3)]),
    "_fused_adam_": lambda: torch._fused_adam_(*_ADAM_STATE(), **_ADAM_HYPER),
    "_fused_adamw_": lambda: torch._fused_adamw_(*_ADAM_STATE(), **_ADAM_HYPER),
    "_scaled_dot_product_flash_attention_for_cpu": lambda: F.scaled_dot_product_attention(
        torch.randn(1, 2, 3, 4), torch.randn(1, 2, 3, 4), torch.randn(1, 2, 3, 4)),
}
OP_CASES = [(exercise, op) for _, exercise in EXERCISES for op in exercise.forbidden_ops
            if op in TRIGGERS]


def test_every_task_that_rules_out_operators_has_a_caught_case_here():
    with_ops = {exercise.id for _, exercise in EXERCISES if exercise.forbidden_ops}
    assert with_ops and with_ops == {exercise.id for exercise, _ in OP_CASES}


@pytest.mark.parametrize("exercise,op", OP_CASES,
                         ids=[f"{exercise.id}-{op}" for exercise, op in OP_CASES])
def test_each_ruled_out_operator_is_caught_and_named(exercise, op):
    def cheat(*args):
        TRIGGERS[op]()
        raise NotImplementedError()

    result = check(exercise.id, cheat)
    assert result.status == "forbidden", str(result)
    assert f"aten.{op}" in result.message


def test_a_forbidden_enum_does_not_forbid_every_enum():
    """An Enum's class dict holds enum.Enum's own machinery: ruling out a module that
    defines an enum rules out that module's code, not the creation of any other enum."""
    import enum

    def honest():
        return enum.Enum("Colour", ["RED", "GREEN"]).GREEN

    rules = Rules(pieces=("torch.amp.grad_scaler",))
    assert caught(rules, honest) == []
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    assert any("grad_scaler" in what for what in caught(rules, lambda: scaler.get_scale()))


def test_a_package_rules_out_what_its_submodules_define():
    """sacrebleu defines its metrics in submodules: naming the package must cover them,
    whatever route reached them (the package's re-export or the submodule itself)."""
    sacrebleu = pytest.importorskip("sacrebleu")
    from sacrebleu.metrics.chrf import CHRF

    rules = Rules(pieces=("sacrebleu",))
    assert caught(rules, lambda: sacrebleu.sentence_chrf("the cat", ["the cat sat"]))
    assert caught(rules, lambda: CHRF().sentence_score("the cat", ["the cat sat"]))
    assert caught(rules, lambda: len("the cat")) == []
