"""Exercise notebook 09's checks: the reference solutions (run from the source notebook) pass
every case; lesson 09's own code, pasted as the answer, fails a hidden case and an instant case
of every task but the warm-up (task 3, LoRA's forward pass, which it passes); the usual wrong
solutions and the constant answers do too, so under all-or-nothing grading they earn nothing;
the checks' expected values agree with independent computations (peft's LoRA on an nn.Linear
and on transformers' Conv1D, peft's own target matching, torch.nanmean, the rendered chat
text); and every finished piece a task rules out is reported forbidden.

The lesson's code and the wrong solutions are written here by hand.
"""

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from llmkit.grading import ASSIGNMENTS, check

from exercise_support import cached_cases, passed, reference_solutions

ASSIGNMENT = ASSIGNMENTS["09_fine_tuning"]
EXERCISES = {exercise.id: exercise for exercise in ASSIGNMENT.exercises}
WARM_UP = "finetune.lora_forward"


RIGHT = reference_solutions("09_fine_tuning")


# --- lesson 09's own code, pasted into each task's signature --------------------------------

def lesson_pool_last(hidden, idx, pad_id):
    # WorkedClassifier.forward's pooling: the last real token of a row padded on the right
    last = (idx != pad_id).sum(dim=1) - 1
    return hidden[torch.arange(idx.shape[0]), last]


def lesson_instruction_example(turns, markers):
    # worked_instruction_example: everything before the (last) reply is the prompt, the reply
    # is its content and <|end|>; the prompt's targets are masked
    last = max(i for i, (role, _) in enumerate(turns) if role == "assistant")
    prompt = []
    for role, content in turns[:last]:
        prompt += [markers[role], markers["newline"], *content, markers["end"], markers["newline"]]
    prompt += [markers["assistant"], markers["newline"]]
    reply = [*turns[last][1], markers["end"]]
    ids = prompt + reply
    return {"input_ids": ids[:-1], "labels": [-100] * (len(prompt) - 1) + reply}


def lesson_lora_forward(x, weight, bias, A, B, alpha):
    # WorkedLoRALinear.forward, with base(x) written out: the warm-up
    return (x @ weight.T + bias) + (x @ A.T @ B.T) * (alpha / A.shape[0])


def lesson_merged(weight, A, B, alpha):
    # WorkedLoRALinear.merged: weight + scaling * B @ A, for an nn.Linear weight
    return weight + (alpha / A.shape[0]) * B @ A


def lesson_count(layers, targets, rank):
    # the lesson's r (in + out) per wrapped layer, for every layer whose name holds a target
    return sum(rank * (n_in + n_out) for name, (n_out, n_in) in layers.items()
               if any(target in name for target in targets))


LESSON = [("finetune.mean_pool", lesson_pool_last),
          ("finetune.chat_example", lesson_instruction_example),
          ("finetune.merge_conv1d", lesson_merged),
          ("finetune.lora_count", lesson_count)]


# --- the usual slips ------------------------------------------------------------------------

def mean_pool_everything(hidden, idx, pad_id):
    return hidden.mean(dim=1)


def mean_pool_as_if_right_padded(hidden, idx, pad_id):
    lengths = (idx != pad_id).sum(dim=1)
    real = (torch.arange(idx.shape[1])[None] < lengths[:, None]).to(hidden.dtype)[:, :, None]
    return (hidden * real).sum(dim=1) / real.sum(dim=1)


def mean_pool_divided_by_length(hidden, idx, pad_id):
    real = (idx != pad_id).to(hidden.dtype)[:, :, None]
    return (hidden * real).sum(dim=1) / idx.shape[1]


def pool_last_position(hidden, idx, pad_id):      # left padding: the last position is real
    return hidden[:, -1]


def _chat_ids(turns, markers):
    ids, learn = [], []
    for role, content in turns:
        reply = role == "assistant"
        ids += [markers[role], markers["newline"], *content, markers["end"], markers["newline"]]
        learn += [False, False, *[reply] * len(content), reply, False]
    return ids, learn


def chat_last_reply_only(turns, markers):
    ids, learn = _chat_ids(turns, markers)
    last = max(i for i, learned in enumerate(learn) if learned)
    first = last
    while first > 0 and learn[first - 1]:
        first -= 1
    ids = ids[:last + 1]
    return {"input_ids": ids[:-1],
            "labels": [ids[i] if i >= first else -100 for i in range(1, len(ids))]}


def chat_without_end(turns, markers):
    example = RIGHT["finetune.chat_example"](turns, markers)
    return {"input_ids": example["input_ids"],
            "labels": [-100 if label == markers["end"] else label for label in example["labels"]]}


def chat_not_shifted(turns, markers):              # the mask put on the input, not the target
    ids, learn = _chat_ids(turns, markers)
    last = max(i for i, learned in enumerate(learn) if learned)
    ids, learn = ids[:last + 1], learn[:last + 1]
    return {"input_ids": ids[:-1],
            "labels": [ids[i + 1] if learn[i] else -100 for i in range(len(ids) - 1)]}


def chat_keeps_the_tail(turns, markers):           # nothing cut after the last reply
    ids, learn = _chat_ids(turns, markers)
    return {"input_ids": ids[:-1],
            "labels": [ids[i] if learn[i] else -100 for i in range(1, len(ids))]}


def lora_scaled_by_alpha(x, weight, bias, A, B, alpha):
    return x @ weight.T + bias + alpha * (x @ A.T @ B.T)


def lora_without_bias(x, weight, bias, A, B, alpha):
    return x @ weight.T + (alpha / A.shape[0]) * (x @ A.T @ B.T)


def merge_reshaped(weight, A, B, alpha):           # right shape, wrong layout
    return weight + (alpha / A.shape[0]) * (B @ A).reshape(weight.shape)


def merge_scaled_by_alpha(weight, A, B, alpha):
    return weight + alpha * (B @ A).T


def count_ends_with(layers, targets, rank):
    return sum(rank * (n_in + n_out) for name, (n_out, n_in) in layers.items()
               if any(name.endswith(t) for t in targets))


def count_per_target(layers, targets, rank):
    return sum(rank * (n_in + n_out) for name, (n_out, n_in) in layers.items()
               for t in targets if name == t or name.endswith("." + t))


def count_whole_weights(layers, targets, rank):
    return sum(n_in * n_out for name, (n_out, n_in) in layers.items()
               if any(name == t or name.endswith("." + t) for t in targets))


def count_dotted_only(layers, targets, rank):      # a whole name as a target never matches
    return sum(rank * (n_in + n_out) for name, (n_out, n_in) in layers.items()
               if any(name.endswith("." + t) for t in targets))


WRONG = [("finetune.mean_pool", mean_pool_everything),
         ("finetune.mean_pool", mean_pool_as_if_right_padded),
         ("finetune.mean_pool", mean_pool_divided_by_length),
         ("finetune.mean_pool", pool_last_position),
         ("finetune.chat_example", chat_last_reply_only),
         ("finetune.chat_example", chat_without_end),
         ("finetune.chat_example", chat_not_shifted),
         ("finetune.chat_example", chat_keeps_the_tail),
         ("finetune.lora_forward", lora_scaled_by_alpha),
         ("finetune.lora_forward", lora_without_bias),
         ("finetune.merge_conv1d", lesson_merged),
         ("finetune.merge_conv1d", merge_reshaped),
         ("finetune.merge_conv1d", merge_scaled_by_alpha),
         ("finetune.lora_count", count_ends_with),
         ("finetune.lora_count", count_per_target),
         ("finetune.lora_count", count_whole_weights),
         ("finetune.lora_count", count_dotted_only)]


def return_none(*args):
    return None


def return_zero(*args):
    return 0


def return_first_argument(first, *args):           # the input unchanged
    return first


CONSTANT = [(task, answer) for task in sorted(EXERCISES)
            for answer in (return_none, return_zero, return_first_argument)]


def _name(value):
    return getattr(value, "__name__", value)


def test_every_task_is_checked_and_the_points_add_up():
    assert set(EXERCISES) == set(RIGHT)
    assert {task for task, _ in LESSON} == set(EXERCISES) - {WARM_UP}
    assert ASSIGNMENT.max_points == 12


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("exercise_id", sorted(EXERCISES))
def test_reference_solutions_pass_every_case(exercise_id, seed):
    exercise = EXERCISES[exercise_id]
    for hidden in (False, True):
        results = passed(exercise, RIGHT[exercise_id], cached_cases(exercise_id, seed, hidden))
        assert all(results), (exercise_id, hidden, results)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("exercise_id, wrong", LESSON + WRONG + CONSTANT, ids=_name)
def test_the_lesson_code_slips_and_constants_fail_a_hidden_case(exercise_id, wrong, seed):
    exercise = EXERCISES[exercise_id]
    assert not all(passed(exercise, wrong, cached_cases(exercise_id, seed, True)))


@pytest.mark.parametrize("exercise_id, wrong", LESSON + WRONG + CONSTANT, ids=_name)
def test_the_instant_check_already_fails_them(exercise_id, wrong):
    exercise = EXERCISES[exercise_id]
    for seed in range(5):
        assert not all(passed(exercise, wrong, cached_cases(exercise_id, seed, False))), seed


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_warm_up_is_the_lessons_formula(seed):
    exercise = EXERCISES[WARM_UP]
    for hidden in (False, True):
        assert all(passed(exercise, lesson_lora_forward, cached_cases(WARM_UP, seed, hidden)))


def test_slips_get_messages_that_name_them():
    exercise = EXERCISES["finetune.mean_pool"]
    case = cached_cases("finetune.mean_pool", 0, False)[0]
    assert "one position" in exercise.compare(lesson_pool_last(*case.args), case)
    assert "every position" in exercise.compare(mean_pool_everything(*case.args), case)
    exercise = EXERCISES["finetune.lora_forward"]
    case = cached_cases("finetune.lora_forward", 0, False)[0]
    assert "alpha divided by the rank" in exercise.compare(lora_scaled_by_alpha(*case.args), case)
    assert "bias is missing" in exercise.compare(lora_without_bias(*case.args), case)
    exercise = EXERCISES["finetune.chat_example"]
    case = cached_cases("finetune.chat_example", 0, False)[1]
    message = exercise.compare(chat_last_reply_only(*case.args), case)
    assert "should be" in message and "every reply" in message
    exercise = EXERCISES["finetune.merge_conv1d"]
    case = cached_cases("finetune.merge_conv1d", 0, False)[1]                  # a square weight
    assert "the other way round" in exercise.compare(lesson_merged(*case.args), case)
    exercise = EXERCISES["finetune.lora_count"]
    case = cached_cases("finetune.lora_count", 0, False)[2]
    assert "counted twice" in exercise.compare(count_per_target(*case.args), case)


# --- the checks' expected values against independent computations -------------------------

@pytest.mark.parametrize("seed", [0, 1])
def test_pooled_means_agree_with_nanmean(seed):
    for case in cached_cases("finetune.mean_pool", seed, True):
        hidden, idx, pad_id = case.args
        blanked = hidden.masked_fill((idx == pad_id)[:, :, None], float("nan"))
        torch.testing.assert_close(case.expected, blanked.nanmean(dim=1))


@pytest.mark.parametrize("seed", [0, 1])
def test_chat_masks_agree_with_the_rendered_text(seed):
    """Decoded, the input is the conversation as llmkit's template writes it, up to the last
    reply's end marker, and the learned targets are every reply and its end marker, in order."""
    from llmkit.chat_template import END_OF_TURN, format_chat
    from llmkit.tokenizers import CharTokenizer

    tokenizer = CharTokenizer.train("abcdefghij klmnop.?" + "\n")    # the check's characters
    for case in cached_cases("finetune.chat_example", seed, True):
        turns, markers = case.args
        spelled = {markers[role]: f"<|{role}|>" for role in ("system", "user", "assistant")}
        spelled[markers["end"]] = END_OF_TURN

        def text(ids):
            return "".join(spelled.get(i) or tokenizer.decode([i]) for i in ids)

        messages = [{"role": role, "content": text(content)} for role, content in turns]
        last = max(n for n, m in enumerate(messages) if m["role"] == "assistant")
        ids = case.expected["input_ids"] + [case.expected["labels"][-1]]
        assert text(ids) + "\n" == format_chat(messages[:last + 1]), case.note
        learned = [t for t in case.expected["labels"] if t != -100]
        assert text(learned) == "".join(m["content"] + END_OF_TURN for m in messages
                                        if m["role"] == "assistant"), case.note


def _peft_lora(base, name, rank, alpha, A, B, fan_in_fan_out=False):
    from peft import LoraConfig, inject_adapter_in_model

    model = nn.Module()
    model.add_module(name, base)
    config = LoraConfig(r=rank, lora_alpha=alpha, target_modules=[name], lora_dropout=0.0,
                        bias="none", fan_in_fan_out=fan_in_fan_out)
    model = inject_adapter_in_model(config, model)
    layer = getattr(model, name)
    with torch.no_grad():
        layer.lora_A["default"].weight.copy_(A)
        layer.lora_B["default"].weight.copy_(B)
    return model, layer


@pytest.mark.parametrize("seed", [0, 1])
def test_lora_outputs_agree_with_peft(seed):
    for case in cached_cases("finetune.lora_forward", seed, True):
        x, weight, bias, A, B, alpha = case.args
        base = nn.Linear(weight.shape[1], weight.shape[0])
        with torch.no_grad():
            base.weight.copy_(weight)
            base.bias.copy_(bias)
        _, layer = _peft_lora(base, "proj", A.shape[0], alpha, A, B)
        with torch.no_grad():
            torch.testing.assert_close(case.expected, layer(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("seed", [0, 1])
def test_conv1d_merges_agree_with_peft(seed):
    from transformers.pytorch_utils import Conv1D

    for case in cached_cases("finetune.merge_conv1d", seed, True):
        weight, A, B, alpha = case.args
        base = Conv1D(nf=weight.shape[1], nx=weight.shape[0])        # weight (in, out)
        with torch.no_grad():
            base.weight.copy_(weight)
        _, layer = _peft_lora(base, "c_attn", A.shape[0], alpha, A, B, fan_in_fan_out=True)
        layer.merge()
        torch.testing.assert_close(case.expected, layer.base_layer.weight.detach(),
                                   atol=1e-5, rtol=1e-5)


def _model_of(layers):
    """An nn.Module with an nn.Linear(in, out) at every dotted name of `layers`."""
    root = nn.Module()
    for name, (n_out, n_in) in layers.items():
        *path, leaf = name.split(".")
        module = root
        for part in path:
            if not hasattr(module, part):
                module.add_module(part, nn.Module())
            module = getattr(module, part)
        module.add_module(leaf, nn.Linear(n_in, n_out, bias=False))
    return root


@pytest.mark.parametrize("seed", [0, 1])
def test_parameter_counts_agree_with_peft(seed):
    from peft import LoraConfig, inject_adapter_in_model

    for case in cached_cases("finetune.lora_count", seed, True):
        layers, targets, rank = case.args
        model = inject_adapter_in_model(
            LoraConfig(r=rank, lora_alpha=rank, target_modules=list(targets), bias="none"),
            _model_of(layers))
        trained = sum(p.numel() for name, p in model.named_parameters() if "lora_" in name)
        assert trained == case.expected, case.note


# --- forbidden routes: each is reported "forbidden" ------------------------------------------

def pool_with_llmkit(hidden, idx, pad_id):
    from llmkit.finetune import GPTClassifier

    order = (idx == pad_id).to(torch.int64).argsort(dim=1, stable=True)    # real tokens first
    rolled_idx = idx.gather(1, order)
    rolled = hidden.gather(1, order[:, :, None].expand_as(hidden))
    return GPTClassifier.pool(SimpleNamespace(pad_id=pad_id, pooling="mean"), rolled, rolled_idx)


def chat_with_llmkit(turns, markers):
    from llmkit.finetune import instruction_example

    contents = {f"turn {n}": list(content) for n, (_, content) in enumerate(turns)}
    tokenizer = SimpleNamespace(
        special_tokens={"<|system|>": markers["system"], "<|user|>": markers["user"],
                        "<|assistant|>": markers["assistant"], "<|end|>": markers["end"],
                        "<|pad|>": -1},
        encode=lambda text: [markers["newline"]] if text == "\n" else contents[text])
    return instruction_example(tokenizer, [{"role": role, "content": f"turn {n}"}
                                           for n, (role, _) in enumerate(turns)])


def chat_with_the_template(turns, markers):
    from llmkit.chat_template import encode_chat

    contents = {f"turn {n}": list(content) for n, (_, content) in enumerate(turns)}
    tokenizer = SimpleNamespace(
        special_tokens={"<|system|>": markers["system"], "<|user|>": markers["user"],
                        "<|assistant|>": markers["assistant"], "<|end|>": markers["end"],
                        "<|pad|>": -1},
        encode=lambda text: [markers["newline"]] if text == "\n" else contents[text])
    ids, learn = encode_chat(tokenizer, [{"role": role, "content": f"turn {n}"}
                                         for n, (role, _) in enumerate(turns)])
    last = max(i for i, learned in enumerate(learn) if learned)
    ids, learn = ids[:last + 1], learn[:last + 1]
    return {"input_ids": ids[:-1],
            "labels": [ids[i] if learn[i] else -100 for i in range(1, len(ids))]}


def lora_with_llmkit(x, weight, bias, A, B, alpha):
    from llmkit.lora import LoRALinear

    base = nn.Linear(weight.shape[1], weight.shape[0])
    with torch.no_grad():
        base.weight.copy_(weight)
        base.bias.copy_(bias)
    layer = LoRALinear(base, A.shape[0], alpha)
    with torch.no_grad():
        layer.lora_A.copy_(A)
        layer.lora_B.copy_(B)
        return layer(x)


def lora_with_peft(x, weight, bias, A, B, alpha):
    base = nn.Linear(weight.shape[1], weight.shape[0])
    with torch.no_grad():
        base.weight.copy_(weight)
        base.bias.copy_(bias)
    _, layer = _peft_lora(base, "proj", A.shape[0], alpha, A, B)
    with torch.no_grad():
        return layer(x)


def merge_with_llmkit(weight, A, B, alpha):
    from llmkit.lora import LoRALinear

    base = nn.Linear(weight.shape[0], weight.shape[1], bias=False)
    with torch.no_grad():
        base.weight.copy_(weight.T)
    layer = LoRALinear(base, A.shape[0], alpha)
    with torch.no_grad():
        layer.lora_A.copy_(A)
        layer.lora_B.copy_(B)
        layer.merge()
    return layer.base.weight.detach().T.clone()


def merge_with_peft(weight, A, B, alpha):
    from transformers.pytorch_utils import Conv1D

    base = Conv1D(nf=weight.shape[1], nx=weight.shape[0])
    with torch.no_grad():
        base.weight.copy_(weight)
    _, layer = _peft_lora(base, "c_attn", A.shape[0], alpha, A, B, fan_in_fan_out=True)
    layer.merge()
    return layer.base_layer.weight.detach().clone()


def count_with_llmkit(layers, targets, rank):
    from llmkit.lora import matches

    return sum(rank * (n_in + n_out) for name, (n_out, n_in) in layers.items()
               if any(matches(name, target) for target in targets))


def count_with_peft(layers, targets, rank):
    from peft import LoraConfig, inject_adapter_in_model

    model = inject_adapter_in_model(LoraConfig(r=rank, target_modules=list(targets)),
                                    _model_of(layers))
    return sum(p.numel() for name, p in model.named_parameters() if "lora_" in name)


FORBIDDEN = [("finetune.mean_pool", pool_with_llmkit),
             ("finetune.chat_example", chat_with_llmkit),
             ("finetune.chat_example", chat_with_the_template),
             ("finetune.lora_forward", lora_with_llmkit),
             ("finetune.lora_forward", lora_with_peft),
             ("finetune.merge_conv1d", merge_with_llmkit),
             ("finetune.merge_conv1d", merge_with_peft),
             ("finetune.lora_count", count_with_llmkit),
             ("finetune.lora_count", count_with_peft)]


def test_every_task_has_a_forbidden_route_here():
    assert {exercise_id for exercise_id, _ in FORBIDDEN} == set(EXERCISES)


@pytest.mark.parametrize("exercise_id, cheat", FORBIDDEN, ids=_name)
def test_the_finished_pieces_are_reported_forbidden(exercise_id, cheat, monkeypatch):
    monkeypatch.delenv("LLMKIT_CHECK_STRICT", raising=False)
    exercise = EXERCISES[exercise_id]
    case = cached_cases(exercise_id, 0, False)[0]
    assert exercise.compare(cheat(*case.args), case) is None     # the route works...
    result = check(exercise_id, cheat)
    assert result.status == "forbidden", str(result)                  # ...and is caught
    assert "rules that out" in result.message
