"""The checks of exercise notebook 09 (fine-tuning): instant and hidden cases.

Every expected value is computed before the learner's function runs, from llmkit's finished
pieces or from a plainer computation:

- mean pooling over left-padded rows: each row's real tokens sliced out and averaged on
  their own (no mask at all);
- the multi-turn mask: `llmkit.finetune.instruction_example` on the same conversation, as
  text, encoded by a character tokenizer that has the chat markers;
- LoRA on a layer with a bias: `llmkit.lora.LoRALinear` wrapping an nn.Linear that holds the
  case's weights;
- the merge into a Conv1D (input x output) weight: LoRALinear's merged weight, transposed;
- the trainable-parameter count: llmkit.lora's target rule (`matches`) and rank * (in + out)
  per wrapped layer.

While the learner's function runs, llmkit.finetune, llmkit.lora, llmkit.chat_template and
peft's LoRA modules are off limits (each does a whole task).

A task earns its points only when every hidden case passes, and every hidden case is one the
usual shortcut fails: every pooled batch has padded rows of different lengths; every
conversation has two or more replies; every LoRA case has rank >= 2, a bias and a nonzero B;
every merge is into a weight whose transpose matters; every parameter count has layer names
that a plain "ends with" or "contains" test would match wrongly. The instant cases already try
every clause of each statement (a system prompt, a last question with no reply, an empty
reply; a layer two targets match, a target that is a whole name), so an instant "passed" is
not followed by a zero.
"""

from __future__ import annotations

import torch
from torch import nn

from llmkit.chat_template import add_chat_tokens
from llmkit.finetune import instruction_example
from llmkit.grading.exercise import Assignment, Case, Exercise, compare_tensors, describe_type
from llmkit.grading.exercise import random_int as _int
from llmkit.grading.exercise import random_normal as _normal
from llmkit.lora import LoRALinear, matches
from llmkit.model import IGNORE_INDEX
from llmkit.tokenizers import CharTokenizer

SETUP = "import math\nimport torch\nfrom llmkit.grading import check\n"

# peft by its own modules: the package name alone would cover only what its __init__ defines.
FINISHED = ("llmkit.finetune", "llmkit.lora", "llmkit.chat_template", "peft.tuners.lora.layer",
            "peft.tuners.lora.model", "peft.tuners.tuners_utils", "peft.peft_model",
            "peft.mapping_func", "peft.mapping")


# --- 1. mean pooling over left-padded rows --------------------------------------------------

def _pool_case(generator, n_real, width, pad_id, note=""):
    """Rows with n_real[b] real tokens at the end, padding (pad_id) before them."""
    length = max(n_real) + _int(generator, 0, 3)
    idx = torch.full((len(n_real), length), pad_id, dtype=torch.long)
    for row, n in enumerate(n_real):
        real = torch.randint(0, 20, (n,), generator=generator)
        idx[row, length - n:] = torch.where(real >= pad_id, real + 1, real)   # never pad_id
    hidden = _normal(generator, len(n_real), length, width)
    hidden[idx == pad_id] *= 100.0        # what padding positions hold must not matter
    expected = torch.stack([hidden[row, length - n:].mean(dim=0) for row, n in enumerate(n_real)])
    return Case((hidden, idx, pad_id), expected, note)


def _pool_cases(generator, hidden):
    cases = [_pool_case(generator, [5, 2, 4], 3, pad_id=20, note="three rows, two padded")]
    if not hidden:
        cases.append(_pool_case(generator, [1, 6], 4, pad_id=0, note="pad_id 0"))
        return cases
    for _ in range(3):
        rows = _int(generator, 2, 6)
        n_real = [_int(generator, 1, 9) for _ in range(rows)]
        n_real[0], n_real[1] = 9, _int(generator, 1, 5)           # at least one padded row
        cases.append(_pool_case(generator, n_real, _int(generator, 2, 9), pad_id=20))
    cases += [
        _pool_case(generator, [1, 7, 3], 5, pad_id=0, note="pad_id 0, a row with one real token"),
        _pool_case(generator, [2, 8], 6, pad_id=7, note="pad_id 7, in the middle of the ids"),
    ]
    return cases


def _compare_pool(answer, case):
    hidden, idx, pad_id = case.args
    problem = compare_tensors(answer, case.expected, name="the pooled tensor",
                              any_float_dtype=True, atol=1e-4, rtol=1e-4)
    if problem and isinstance(answer, torch.Tensor) and answer.shape == case.expected.shape:
        picked = (answer.double()[:, None, :] - hidden.double()).abs().amax(dim=-1) < 1e-4
        if torch.allclose(answer.double(), hidden.double().mean(dim=1), atol=1e-4):
            problem += " It looks like the mean over every position, padding included."
        elif picked.any(dim=1).all():
            problem += (" Each row is the hidden state of one position, not a mean over the "
                        "real tokens.")
        elif (answer.abs() > 20).any():
            problem += (" Some values are far too large: padding positions (which hold large "
                        "values here) went into the mean.")
    return problem


# --- 2. the prompt mask of a multi-turn conversation ----------------------------------------

_ALPHABET = "abcdefghij klmnop.?"


def _chat_tokenizer() -> CharTokenizer:
    tokenizer = CharTokenizer.train(_ALPHABET + "\n")
    add_chat_tokens(tokenizer)
    return tokenizer


def _chat_case(generator, roles, note="", empty_reply=None):
    tokenizer = _chat_tokenizer()
    messages = []
    for number, role in enumerate(roles):
        size = 0 if number == empty_reply else _int(generator, 1, 12)
        picks = torch.randint(0, len(_ALPHABET), (size,), generator=generator).tolist()
        messages.append({"role": role, "content": "".join(_ALPHABET[i] for i in picks)})
    turns = [[m["role"], tokenizer.encode(m["content"])] for m in messages]
    special = tokenizer.special_tokens
    markers = {"system": special["<|system|>"], "user": special["<|user|>"],
               "assistant": special["<|assistant|>"], "end": special["<|end|>"],
               "newline": tokenizer.encode("\n")[0]}
    return Case((turns, markers), instruction_example(tokenizer, messages), note)


def _chat_cases(generator, hidden):
    cases = [_chat_case(generator, ["user", "assistant", "user", "assistant"],
                        "two questions, two replies")]
    if not hidden:
        return [_chat_case(generator, ["user", "assistant"], "one question, one reply"), *cases,
                _chat_case(generator, ["system", "user", "assistant", "user", "assistant", "user"],
                           "a system prompt, and a last question with no reply"),
                _chat_case(generator, ["user", "assistant", "user", "assistant"],
                           "an empty first reply (only its end marker is learned)", empty_reply=1)]
    cases += [
        _chat_case(generator, ["system", "user", "assistant", "user", "assistant"],
                   "a system prompt, then two exchanges"),
        _chat_case(generator, ["user", "assistant", "user", "assistant", "user", "assistant"],
                   "three exchanges"),
        _chat_case(generator, ["system", "user", "assistant", "user", "assistant", "user"],
                   "a last question with no reply (nothing after the last reply is kept)"),
        _chat_case(generator, ["user", "assistant", "assistant", "user", "assistant"],
                   "two replies in a row"),
        _chat_case(generator, ["user", "assistant", "user", "assistant"],
                   "an empty first reply (only its end marker is learned)", empty_reply=1),
    ]
    return cases


def _compare_chat(answer, case):
    expected = case.expected
    if not isinstance(answer, dict):
        return f"chat_example should return a dict, but it returned {describe_type(answer)}."
    if set(answer) != {"input_ids", "labels"}:
        return f"the dict should have the keys 'input_ids' and 'labels', got {sorted(answer)}."
    for key in ("input_ids", "labels"):
        value = answer[key]
        if isinstance(value, torch.Tensor):
            value = value.tolist()
        if not isinstance(value, (list, tuple)):
            return f"{key} should be a list of ints, but it is {describe_type(value)}."
        answer = {**answer, key: list(value)}
    got_ids, got_labels = answer["input_ids"], answer["labels"]
    want_ids, want_labels = expected["input_ids"], expected["labels"]
    if len(got_ids) != len(got_labels):
        return (f"input_ids has {len(got_ids)} ids but labels has {len(got_labels)}: there is one "
                "label per input position.")
    if got_ids != want_ids:
        if len(got_ids) != len(want_ids):
            return (f"input_ids has {len(got_ids)} ids, expected {len(want_ids)}. The input is the "
                    "conversation up to the last reply's end marker, without that last id "
                    "(it is only ever a target).")
        first = next(i for i, (a, b) in enumerate(zip(got_ids, want_ids)) if a != b)
        return (f"input_ids first differs at position {first}: got {got_ids[first]}, expected "
                f"{want_ids[first]}. Each turn is its role marker, a newline, the content, "
                "the end marker and a newline.")
    if got_labels != want_labels:
        wrong = [i for i, (a, b) in enumerate(zip(got_labels, want_labels)) if a != b]
        first = wrong[0]
        what = ("should be masked (-100): its target is not part of a reply"
                if want_labels[first] == IGNORE_INDEX else
                f"should be {want_labels[first]}: its target belongs to a reply")
        learned = sum(label != IGNORE_INDEX for label in want_labels)
        return (f"labels differ at {len(wrong)} of {len(want_labels)} positions; position {first} "
                f"{what} (got {got_labels[first]}). This conversation has {learned} learned "
                "targets, in every reply.")
    return None


# --- 3. LoRA on a layer with a bias ---------------------------------------------------------

def _lora_parts(generator, rank, n_in, n_out):
    weight, bias = _normal(generator, n_out, n_in) * 0.3, _normal(generator, n_out)
    A, B = _normal(generator, rank, n_in) * 0.3, _normal(generator, n_out, rank) * 0.3
    return weight, bias, A, B


def _reference_layer(weight, bias, A, B, alpha) -> LoRALinear:
    base = nn.Linear(weight.shape[1], weight.shape[0])
    with torch.no_grad():
        base.weight.copy_(weight)
        base.bias.copy_(bias)
    layer = LoRALinear(base, A.shape[0], alpha)
    with torch.no_grad():
        layer.lora_A.copy_(A)
        layer.lora_B.copy_(B)
    return layer


def _forward_case(generator, rank, n_in, n_out, alpha, shape, note=""):
    weight, bias, A, B = _lora_parts(generator, rank, n_in, n_out)
    x = _normal(generator, *shape, n_in)
    with torch.no_grad():
        expected = _reference_layer(weight, bias, A, B, alpha)(x)
    return Case((x, weight, bias, A, B, alpha), expected, note)


def _forward_cases(generator, hidden):
    cases = [_forward_case(generator, 2, 6, 4, 4.0, (3,), "rank 2, alpha 4, a batch of 3")]
    if not hidden:
        cases.append(_forward_case(generator, 3, 5, 7, 6.0, (2, 4), "x shaped (2, 4, in)"))
        return cases
    for _ in range(3):
        rank = _int(generator, 2, 5)
        cases.append(_forward_case(generator, rank, _int(generator, 5, 12), _int(generator, 5, 12),
                                   float(_int(generator, 1, 17)), (_int(generator, 1, 4), 5)))
    cases += [
        _forward_case(generator, 4, 8, 8, 1.0, (2, 3), "alpha smaller than the rank"),
        _forward_case(generator, 2, 3, 9, 16.0, (1, 1, 2), "x with three leading dimensions"),
    ]
    return cases


def _compare_forward(answer, case):
    x, weight, bias, A, B, alpha = case.args
    problem = compare_tensors(answer, case.expected, name="the layer's output",
                              any_float_dtype=True, atol=1e-4, rtol=1e-4)
    if problem and isinstance(answer, torch.Tensor) and answer.shape == case.expected.shape:
        got = answer.double()
        plain = (x @ weight.T + bias).double()
        update = (x @ A.T @ B.T).double()
        rank = A.shape[0]
        if torch.allclose(got, plain + alpha * update, atol=1e-4):
            problem += " The update looks scaled by alpha; the scale is alpha divided by the rank."
        elif torch.allclose(got, plain - bias.double() + alpha / rank * update, atol=1e-4):
            problem += " The bias is missing."
        elif torch.allclose(got, plain + bias.double() + alpha / rank * update, atol=1e-4):
            problem += " The bias is added twice; it belongs to the frozen layer alone."
    return problem


# --- 4. merging into a Conv1D weight (input x output) ---------------------------------------

def _merge_case(generator, rank, n_in, n_out, alpha, note=""):
    weight, bias, A, B = _lora_parts(generator, rank, n_in, n_out)
    with torch.no_grad():
        layer = _reference_layer(weight, bias, A, B, alpha)
        layer.merge()
        expected = layer.base.weight.T.clone()               # (in, out), as Conv1D stores it
    return Case((weight.T.contiguous(), A, B, alpha), expected, note)


def _merge_cases(generator, hidden):
    cases = [_merge_case(generator, 2, 5, 3, 4.0, "5 inputs, 3 outputs")]
    if not hidden:
        cases.append(_merge_case(generator, 2, 4, 4, 2.0, "a square weight"))
        return cases
    for _ in range(2):
        n_in = _int(generator, 3, 10)
        cases.append(_merge_case(generator, _int(generator, 2, 4), n_in, n_in + _int(generator, 1, 6),
                                 float(_int(generator, 1, 17))))
    cases += [
        _merge_case(generator, 3, 6, 6, 8.0, "a square weight (the transpose still matters)"),
        _merge_case(generator, 2, 8, 8, 1.0, "a square weight, alpha smaller than the rank"),
        _merge_case(generator, 4, 12, 4, 16.0, "more inputs than outputs"),
    ]
    return cases


def _compare_merge(answer, case):
    weight, A, B, alpha = case.args
    problem = compare_tensors(answer, case.expected, name="the merged weight",
                              any_float_dtype=True, atol=1e-4, rtol=1e-4)
    if problem and isinstance(answer, torch.Tensor):
        if answer.shape != case.expected.shape and answer.shape == weight.shape[::-1]:
            problem += " It has the shape of an nn.Linear weight; a Conv1D weight is (in, out)."
        elif answer.shape == case.expected.shape:
            rank = A.shape[0]
            update = (B @ A).double()
            if weight.shape[0] == weight.shape[1] and torch.allclose(
                    answer.double(), weight.double() + alpha / rank * update, atol=1e-4):
                problem += (" The update was added as B A, which is shaped (out, in); this "
                            "weight is stored the other way round.")
            elif torch.allclose(answer.double(), weight.double() + alpha * update.T, atol=1e-4):
                problem += " The update looks scaled by alpha; the scale is alpha / rank."
    return problem


# --- 5. stretch: how many parameters LoRA trains --------------------------------------------

def _count_case(layers, targets, rank, note=""):
    expected = sum(rank * (n_in + n_out) for name, (n_out, n_in) in layers.items()
                   if any(matches(name, target) for target in targets))
    return Case((layers, list(targets), rank), expected, note)


def _gpt_layers(generator, n_blocks, width, decoys=True):
    """{name: [out, in]} of a GPT-like model. decoys: layers whose names end in a target's
    letters without being that module (attn.out_proj, mlp.gate_fc, cross_attn.*)."""
    layers = {}
    for block in range(n_blocks):
        prefix = f"blocks.{block}."
        layers[prefix + "attn.qkv"] = [3 * width, width]
        layers[prefix + "attn.proj"] = [width, width]
        layers[prefix + "mlp.fc"] = [4 * width, width]
        layers[prefix + "mlp.proj"] = [width, 4 * width]
        if decoys:
            layers[prefix + "attn.out_proj"] = [width, 3 * width]
            layers[prefix + "mlp.gate_fc"] = [2 * width, width]
            layers[prefix + "cross_attn.qkv"] = [3 * width, 2 * width]
            layers[prefix + "cross_attn.proj"] = [width, 2 * width]
    layers["lm_head"] = [_int(generator, 20, 60), width]
    return layers


def _count_cases(generator, hidden):
    width = _int(generator, 4, 9) * 4
    if not hidden:
        return [_count_case(_gpt_layers(generator, 2, width, decoys=False), ["attn.qkv"], 4,
                            "attention's qkv in two blocks"),
                _count_case(_gpt_layers(generator, 2, width), ["proj"], 2,
                            "'proj' (attn.out_proj is another layer)"),
                _count_case(_gpt_layers(generator, 2, width), ["lm_head", "fc", "mlp.fc"], 3,
                            "a whole name as a target; 'fc' is not 'gate_fc'; mlp.fc named "
                            "twice")]
    cases = []
    # Each hidden case has a decoy for one of its targets and a layer two targets match.
    for targets, rank, note in [
        (["proj", "attn.proj"], 2, "'proj' is not 'out_proj'; attn.proj named twice"),
        (["fc", "mlp.fc", "attn.proj"], 4, "'fc' is not 'gate_fc'; mlp.fc named twice"),
        (["attn.qkv", "blocks.0.attn.qkv", "mlp.proj"], 3,
         "'attn.qkv' is not 'cross_attn.qkv'; a block's qkv named twice"),
        (["lm_head", "proj", "mlp.proj"], 8, "a whole name as a target; 'proj' is not 'out_proj'"),
        (["attn.proj", "mlp.fc", "blocks.0.mlp.fc"], 1,
         "rank 1; 'attn.proj' is not 'cross_attn.proj'; a block's fc named twice"),
    ]:
        layers = _gpt_layers(generator, _int(generator, 1, 4), _int(generator, 4, 9) * 4)
        cases.append(_count_case(layers, targets, rank, note))
    return cases


def _compare_count(answer, case):
    layers, targets, rank = case.args
    if isinstance(answer, torch.Tensor) and answer.numel() == 1:
        answer = answer.item()
    if isinstance(answer, bool) or not isinstance(answer, int):
        return f"lora_parameter_count should return an int, but it returned {describe_type(answer)}."
    if answer == case.expected:
        return None
    problem = f"the count is {answer:,}, expected {case.expected:,}."
    loose = sum(rank * (n_in + n_out) for name, (n_out, n_in) in layers.items()
                if any(name.endswith(target) or target in name for target in targets))
    counted_twice = sum(rank * (n_in + n_out) for name, (n_out, n_in) in layers.items()
                        for target in targets if matches(name, target))
    full = sum(n_in * n_out for name, (n_out, n_in) in layers.items()
               if any(matches(name, target) for target in targets))
    if answer == full:
        problem += " That is the size of the wrapped weights; LoRA trains A and B only."
    if answer == loose:
        problem += (" Some layers whose names merely end in (or contain) a target's letters "
                    "were counted.")
    if answer == counted_twice:
        problem += " A layer that two targets match was counted twice."
    return problem


EXERCISES = [
    Exercise("finetune.mean_pool", "mean_pool", 2, "Mean pooling over left-padded rows",
             _pool_cases, _compare_pool, forbidden=FINISHED,
             hint="Only the real tokens count, and with left padding they sit at the end of each "
                  "row, a different number in every row. The usual slips: averaging over every "
                  "position, dividing by the row's length instead of its real tokens, or "
                  "assuming the real tokens come first."),
    Exercise("finetune.chat_example", "chat_example", 3,
             "The prompt mask of a multi-turn conversation",
             _chat_cases, _compare_chat, forbidden=FINISHED,
             hint="Every reply is learned, not only the last one: the content of each assistant "
                  "turn and the end marker that closes it, and nothing of the other turns. A "
                  "label is about the next id (what the position predicts), so decide what is "
                  "learned per id first and shift afterwards."),
    Exercise("finetune.lora_forward", "lora_forward", 2, "Warm-up: LoRA on a layer with a bias",
             _forward_cases, _compare_forward, forbidden=FINISHED,
             hint="The frozen layer (weight and bias) plus the low-rank path through A then B, "
                  "scaled by alpha over the rank (the number of rows of A). The bias belongs "
                  "to the frozen layer: it is added once."),
    Exercise("finetune.merge_conv1d", "merge_conv1d", 2, "Merging LoRA into a Conv1D weight",
             _merge_cases, _compare_merge, forbidden=FINISHED,
             hint="B A is shaped like an nn.Linear weight, (out, in); a Conv1D weight is the "
                  "transpose of that. Bring the update to the weight's layout before adding it."),
    Exercise("finetune.lora_count", "lora_parameter_count", 3,
             "Stretch: how many parameters LoRA trains",
             _count_cases, _compare_count, forbidden=FINISHED,
             hint="A target names a module: it matches a layer whose name is the target, or ends "
                  "with a dot followed by the target, and a layer is wrapped once however many "
                  "targets match it. Each wrapped layer trains rank numbers per input and per "
                  "output."),
]

ASSIGNMENT = Assignment("09_fine_tuning", "Exercises 09: fine-tuning", SETUP, EXERCISES)
