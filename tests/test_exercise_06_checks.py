"""Exercise notebook 06's checks: the reference solutions pass every case; the lesson's own
code, pasted as the answer, and the usual wrong solutions each fail a hidden case (so, graded
all-or-nothing, they earn nothing for the task) and an instant case too; every forbidden
route is reported.

The wrong solutions are written here by hand, one per slip the hidden cases are built to catch.
"""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from llmkit.grading import ASSIGNMENTS
from llmkit.grading.exercise import hidden_cases
from llmkit.grading.forbid import Rules, Watch
from llmkit.model import GPT, MLP, Block, GPTConfig
from llmkit.model.gpt2 import convert_state_dict, rename

from exercise_support import instant_cases, passed

EXERCISES = {exercise.id: exercise for exercise in ASSIGNMENTS["06_the_transformer"].exercises}
SEEDS = [0, 1, 2]


# --- the reference solutions (as in exercises/source/06_the_transformer.ipynb) -------------

def mlp_forward(x, fc_weight, fc_bias, proj_weight, proj_bias):
    return F.gelu(x @ fc_weight.T + fc_bias, approximate="tanh") @ proj_weight.T + proj_bias


def _attention(h, weights, n_head, causal=True, transpose=True):
    B, T, d = h.shape
    qkv = h @ weights["attn.qkv.weight"].T + weights["attn.qkv.bias"]
    if transpose:
        q, k, v = (t.view(B, T, n_head, -1).transpose(1, 2) for t in qkv.split(d, dim=-1))
    else:
        q, k, v = (t.reshape(B, n_head, T, -1) for t in qkv.split(d, dim=-1))
    y = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    y = y.transpose(1, 2).reshape(B, T, d)
    return y @ weights["attn.proj.weight"].T + weights["attn.proj.bias"]


def _norm(h, weights, name):
    return F.layer_norm(h, h.shape[-1:], weights[f"{name}.weight"], weights[f"{name}.bias"], 1e-5)


def _mlp(h, w):
    return mlp_forward(h, w["mlp.fc.weight"], w["mlp.fc.bias"], w["mlp.proj.weight"],
                       w["mlp.proj.bias"])


def block_forward(x, weights, n_head, norm_first=True):
    if norm_first:
        x = x + _attention(_norm(x, weights, "norm1"), weights, n_head)
        return x + _mlp(_norm(x, weights, "norm2"), weights)
    x = _norm(x + _attention(x, weights, n_head), weights, "norm1")
    return _norm(x + _mlp(x, weights), weights, "norm2")


def count_params(config):
    d, V, C, L = (config[k] for k in ("d_model", "vocab_size", "context_length", "n_layer"))
    hidden, b = config["mlp_hidden"] or 4 * d, int(config["bias"])
    norm = d + b * d
    block = (4 * d * d + b * 4 * d) + (2 * hidden * d + b * (hidden + d)) + 2 * norm
    kaplan = L * block + norm
    head = 0 if config["tie_weights"] else V * d
    total = V * d + C * d + kaplan + head
    return {"total": total, "nanogpt": total - C * d - head, "kaplan": kaplan}


def flops_per_token(config, T, training):
    L, d = config["n_layer"], config["d_model"]
    forward = 2 * count_params(config)["nanogpt"] + 2 * L * d * (T + 1)
    return 3 * forward if training else forward


def _blocks(weights):
    n_layer = 1 + max(int(name.split(".")[1]) for name in weights if name.startswith("blocks."))
    for i in range(n_layer):
        prefix = f"blocks.{i}."
        yield {k[len(prefix):]: v for k, v in weights.items() if k.startswith(prefix)}


def gpt_forward(idx, weights, n_head):
    embedding = weights["token_embedding.weight"]
    x = embedding[idx] + weights["position_embedding.weight"][:idx.shape[1]]
    for block in _blocks(weights):
        x = block_forward(x, block, n_head)
    head = weights.get("lm_head.weight", embedding)
    return _norm(x, weights, "norm_final") @ head.T


TOP = {"wte": "token_embedding", "wpe": "position_embedding", "ln_f": "norm_final", "h": "blocks"}
INSIDE = {"ln_1": "norm1", "ln_2": "norm2", "c_attn": "qkv", "c_proj": "proj", "c_fc": "fc"}
CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


def convert_hf_weight(name, tensor):
    name = name.removeprefix("transformer.")
    parts = name.split(".")
    new = ".".join([TOP[parts[0]]] + [INSIDE.get(part, part) for part in parts[1:]])
    return new, (tensor.T if name.endswith(CONV1D) else tensor).contiguous()


RIGHT = {"transformer.mlp": mlp_forward, "transformer.block": block_forward,
         "transformer.params": count_params, "transformer.flops": flops_per_token,
         "transformer.gpt": gpt_forward, "transformer.hf_weight": convert_hf_weight}


# --- the lesson's own code, given the task's signature ------------------------------------

def lesson_block(x, weights, n_head, norm_first=True):          # MyBlock: pre-LN only
    x = x + _attention(_norm(x, weights, "norm1"), weights, n_head)
    return x + _mlp(_norm(x, weights, "norm2"), weights)


def lesson_count(config):                                       # section 4's parts
    d, V, C, L = (config[k] for k in ("d_model", "vocab_size", "context_length", "n_layer"))
    parts = {"token embedding": V * d, "position embedding": C * d,
             "attention": L * (4 * d * d + 4 * d), "MLP": L * (8 * d * d + 5 * d),
             "LayerNorms": L * 4 * d + 2 * d,
             "LM head (tied)": 0 if config["tie_weights"] else V * d}
    total = sum(parts.values())
    lookup_only = parts["position embedding"] + (0 if config["tie_weights"]
                                                 else parts["token embedding"])
    return {"total": total, "nanogpt": total - lookup_only,
            "kaplan": total - parts["token embedding"] - parts["position embedding"]}


def lesson_flops(config, T, training):                           # section 5's estimate
    return 6 * lesson_count(config)["nanogpt"] + 12 * config["n_layer"] * T * config["d_model"]


def lesson_gpt(idx, weights, n_head):                            # MyGPT: always tied
    embedding = weights["token_embedding.weight"]
    x = embedding[idx] + weights["position_embedding.weight"][:idx.shape[1]]
    for block in _blocks(weights):
        x = lesson_block(x, block, n_head)
    return _norm(x, weights, "norm_final") @ embedding.T


LESSON = {"transformer.block": lesson_block, "transformer.params": lesson_count,
          "transformer.flops": lesson_flops, "transformer.gpt": lesson_gpt}
WARM_UP = "transformer.mlp"          # the lesson's MyMLP, on purpose
FORBIDDEN_PASTE = "transformer.hf_weight"   # the lesson calls llmkit's rename (tested below)


# --- the usual slips ----------------------------------------------------------------------

def mlp_exact_gelu(x, fc_weight, fc_bias, proj_weight, proj_bias):
    return F.gelu(x @ fc_weight.T + fc_bias) @ proj_weight.T + proj_bias


def block_post_ln_inside(x, weights, n_head, norm_first=True):
    if norm_first:
        return block_forward(x, weights, n_head)
    x = x + _norm(_attention(x, weights, n_head), weights, "norm1")
    return x + _norm(_mlp(x, weights), weights, "norm2")


def block_not_causal(x, weights, n_head, norm_first=True):
    if not norm_first:
        x = _norm(x + _attention(x, weights, n_head, causal=False), weights, "norm1")
        return _norm(x + _mlp(x, weights), weights, "norm2")
    x = x + _attention(_norm(x, weights, "norm1"), weights, n_head, causal=False)
    return x + _mlp(_norm(x, weights, "norm2"), weights)


def block_heads_not_transposed(x, weights, n_head, norm_first=True):
    def attention(h):
        return _attention(h, weights, n_head, transpose=False)
    if norm_first:
        x = x + attention(_norm(x, weights, "norm1"))
        return x + _mlp(_norm(x, weights, "norm2"), weights)
    x = _norm(x + attention(x), weights, "norm1")
    return _norm(x + _mlp(x, weights), weights, "norm2")


def count_always_biased(config):
    return count_params(dict(config, bias=True))


def count_kaplan_keeps_untied_head(config):
    counts = count_params(config)
    if not config["tie_weights"]:
        counts["kaplan"] += config["vocab_size"] * config["d_model"]
    return counts


def count_nanogpt_drops_tied_matrix(config):
    counts = count_params(config)
    if config["tie_weights"]:
        counts["nanogpt"] -= config["vocab_size"] * config["d_model"]
    return counts


def flops_t_over_two(config, T, training):
    forward = 2 * count_params(config)["nanogpt"] + 2 * config["n_layer"] * config["d_model"] * T
    return 3 * forward if training else forward


def flops_with_position_table(config, T, training):
    N = count_params(config)["nanogpt"] + config["context_length"] * config["d_model"]
    forward = 2 * N + 2 * config["n_layer"] * config["d_model"] * (T + 1)
    return 3 * forward if training else forward


def flops_always_training(config, T, training):
    return flops_per_token(config, T, True)


def gpt_positions_by_token(idx, weights, n_head):
    embedding = weights["token_embedding.weight"]
    x = embedding[idx] + weights["position_embedding.weight"][idx]
    for block in _blocks(weights):
        x = block_forward(x, block, n_head)
    return _norm(x, weights, "norm_final") @ weights.get("lm_head.weight", embedding).T


def gpt_layers_by_prefix(idx, weights, n_head):    # "blocks.1" also matches blocks.10
    embedding = weights["token_embedding.weight"]
    x = embedding[idx] + weights["position_embedding.weight"][:idx.shape[1]]
    n_layer = len({name.split(".")[1] for name in weights if name.startswith("blocks.")})
    for i in range(n_layer):
        prefix = f"blocks.{i}"
        block = {k.split(".", 2)[2]: v for k, v in weights.items() if k.startswith(prefix)}
        x = block_forward(x, block, n_head)
    return _norm(x, weights, "norm_final") @ weights.get("lm_head.weight", embedding).T


def gpt_without_final_norm(idx, weights, n_head):
    embedding = weights["token_embedding.weight"]
    x = embedding[idx] + weights["position_embedding.weight"][:idx.shape[1]]
    for block in _blocks(weights):
        x = block_forward(x, block, n_head)
    return x @ weights.get("lm_head.weight", embedding).T


def hf_transposes_every_matrix(name, tensor):
    new, _ = convert_hf_weight(name, tensor)
    return new, (tensor.T if tensor.dim() == 2 else tensor).contiguous()


def hf_keeps_prefix_check(name, tensor):        # assumes the prefix is always there
    parts = name.split(".")[1:]
    new = ".".join([TOP[parts[0]]] + [INSIDE.get(part, part) for part in parts[1:]])
    return new, (tensor.T if name.endswith(CONV1D) else tensor).contiguous()


# (task, wrong function, whether the instant check must already catch it)
WRONG = [("transformer.mlp", mlp_exact_gelu, True),
         ("transformer.block", block_post_ln_inside, True),
         ("transformer.block", block_not_causal, True),
         ("transformer.block", block_heads_not_transposed, True),
         ("transformer.params", count_always_biased, True),
         ("transformer.params", count_kaplan_keeps_untied_head, True),
         ("transformer.params", count_nanogpt_drops_tied_matrix, True),
         ("transformer.flops", flops_t_over_two, True),
         ("transformer.flops", flops_with_position_table, True),
         ("transformer.flops", flops_always_training, True),
         ("transformer.gpt", gpt_positions_by_token, True),
         ("transformer.gpt", gpt_layers_by_prefix, True),
         ("transformer.gpt", gpt_without_final_norm, True),
         ("transformer.hf_weight", hf_transposes_every_matrix, True),
         ("transformer.hf_weight", hf_keeps_prefix_check, True)]


def test_every_task_is_checked():
    assert set(EXERCISES) == set(RIGHT)
    assert sum(e.points for e in EXERCISES.values()) == 14


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("exercise_id", sorted(RIGHT))
def test_reference_solutions_pass_every_case(exercise_id, seed):
    exercise = EXERCISES[exercise_id]
    for cases in (instant_cases(exercise, seed), hidden_cases(exercise, seed)):
        results = passed(exercise, RIGHT[exercise_id], cases)
        assert all(results), [c.note for c, ok in zip(cases, results) if not ok]


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("exercise_id", sorted(LESSON))
def test_the_lessons_code_fails_a_hidden_case_and_the_instant_check(exercise_id, seed):
    exercise = EXERCISES[exercise_id]
    assert not all(passed(exercise, LESSON[exercise_id], hidden_cases(exercise, seed)))
    assert not all(passed(exercise, LESSON[exercise_id], instant_cases(exercise, seed)))


def test_only_the_warm_up_is_the_lessons_code():
    assert set(LESSON) | {WARM_UP, FORBIDDEN_PASTE} == set(RIGHT)
    assert EXERCISES[WARM_UP].title.startswith("Warm-up")


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("exercise_id, wrong, instant", WRONG,
                         ids=lambda v: getattr(v, "__name__", str(v)))
def test_a_usual_slip_fails_a_hidden_case(exercise_id, wrong, instant, seed):
    exercise = EXERCISES[exercise_id]
    assert not all(passed(exercise, wrong, hidden_cases(exercise, seed)))
    if instant:
        assert not all(passed(exercise, wrong, instant_cases(exercise, seed)))


@pytest.mark.parametrize("seed", SEEDS)
def test_every_block_case_catches_heads_left_after_the_positions(seed):
    exercise = EXERCISES["transformer.block"]
    assert not any(passed(exercise, block_heads_not_transposed, hidden_cases(exercise, seed)))


def test_the_flops_task_differs_from_the_lessons_estimate_by_the_masked_half():
    exercise = EXERCISES["transformer.flops"]
    for case in instant_cases(exercise, 0):
        values, T, training = case.args
        with torch.device("meta"):
            model = GPT(GPTConfig(**values))
        if training:                         # the lesson's figure is llmkit's flops_per_token
            L, d = values["n_layer"], values["d_model"]
            assert model.flops_per_token(T) - case.expected == 6 * L * d * (T - 1)


def test_the_counts_agree_with_the_lesson_on_a_tied_gpt2_design():
    # lesson 06 prints all three conventions for tied GPT-2-style models
    exercise = EXERCISES["transformer.params"]
    for case in hidden_cases(exercise, 0):
        values = case.args[0]
        if values["tie_weights"] and values["bias"] and values["mlp_hidden"] is None:
            assert lesson_count(values) == case.expected


def test_slips_get_a_message_that_names_them():
    exercise = EXERCISES["transformer.flops"]
    case = instant_cases(exercise, 0)[0]
    assert "the lesson's estimate" in exercise.compare(lesson_flops(*case.args), case)
    exercise = EXERCISES["transformer.block"]
    case = instant_cases(exercise, 0)[1]
    assert "the other arrangement" in exercise.compare(lesson_block(*case.args), case)
    exercise = EXERCISES["transformer.gpt"]
    case = instant_cases(exercise, 0)[1]
    assert "untied" in exercise.compare(lesson_gpt(*case.args), case)
    exercise = EXERCISES["transformer.params"]
    case = instant_cases(exercise, 0)[1]
    assert "bias=False" in exercise.compare(count_always_biased(*case.args), case)


# --- forbidden routes: each does the task's work and is reported ---------------------------

def caught(exercise, fn, args):
    with Watch(Rules(exercise.forbidden, exercise.forbidden_ops)) as watch:
        with watch.recording():
            answer = fn(*args)
    return watch.seen, answer


def mlp_by_llmkit(x, fc_weight, fc_bias, proj_weight, proj_bias):
    config = GPTConfig(d_model=x.shape[-1], n_head=1, mlp_hidden=fc_weight.shape[0])
    mlp = MLP(config)
    mlp.load_state_dict({"fc.weight": fc_weight, "fc.bias": fc_bias,
                         "proj.weight": proj_weight, "proj.bias": proj_bias})
    with torch.no_grad():
        return mlp.eval()(x)


def block_by_llmkit(x, weights, n_head, norm_first=True):     # the lesson's MyBlock route
    config = GPTConfig(d_model=x.shape[-1], n_head=n_head,
                       mlp_hidden=weights["mlp.fc.weight"].shape[0])
    block = Block(config)
    block.load_state_dict(weights)
    with torch.no_grad():
        return block.eval()(x)


def block_by_torch_layer(x, weights, n_head, norm_first=True):
    d = x.shape[-1]
    layer = nn.TransformerEncoderLayer(d, n_head, weights["mlp.fc.weight"].shape[0], 0.0,
                                       lambda h: F.gelu(h, approximate="tanh"), 1e-5,
                                       batch_first=True, norm_first=norm_first)
    names = ["self_attn.in_proj_weight", "self_attn.in_proj_bias", "self_attn.out_proj.weight",
             "self_attn.out_proj.bias", "linear1.weight", "linear1.bias", "linear2.weight",
             "linear2.bias", "norm1.weight", "norm1.bias", "norm2.weight", "norm2.bias"]
    ours = ["attn.qkv.weight", "attn.qkv.bias", "attn.proj.weight", "attn.proj.bias",
            "mlp.fc.weight", "mlp.fc.bias", "mlp.proj.weight", "mlp.proj.bias",
            "norm1.weight", "norm1.bias", "norm2.weight", "norm2.bias"]
    layer.load_state_dict({a: weights[b] for a, b in zip(names, ours)})
    T = x.shape[1]
    with torch.no_grad():
        return layer.eval()(x, src_mask=torch.ones(T, T, dtype=torch.bool).triu(1))


def count_by_llmkit(config):
    with torch.device("meta"):
        model = GPT(GPTConfig(**config))
    inside = [*model.blocks.parameters(), *model.norm_final.parameters()]
    return {"total": model.num_params(), "nanogpt": model.num_params(include_embeddings=False),
            "kaplan": sum(p.numel() for p in inside)}


def flops_by_llmkit(config, T, training):
    with torch.device("meta"):
        N = GPT(GPTConfig(**config)).num_params(include_embeddings=False)
    forward = 2 * N + 2 * config["n_layer"] * config["d_model"] * (T + 1)
    return 3 * forward if training else forward


def gpt_by_llmkit(idx, weights, n_head):
    V, d = weights["token_embedding.weight"].shape
    n_layer = len(list(_blocks(weights)))
    config = GPTConfig(vocab_size=V, context_length=weights["position_embedding.weight"].shape[0],
                       n_layer=n_layer, n_head=n_head, d_model=d,
                       tie_weights="lm_head.weight" not in weights)
    model = GPT(config)
    model.load_state_dict(weights, strict=False)
    with torch.no_grad():
        return model.eval()(idx)[0]


def hf_by_lessons_rename(name, tensor):                  # lesson 06, section 6
    new = rename(name.removeprefix("transformer."))
    return new, (tensor.T if name.endswith(CONV1D) else tensor).contiguous()


def hf_by_convert_state_dict(name, tensor):
    (new, converted), = convert_state_dict({name: tensor}, GPTConfig()).items()
    return new, converted


# (task, route, what the report names, which instant cases it runs on)
FORBIDDEN = [("transformer.mlp", mlp_by_llmkit, "MLP", [0, 1]),
             ("transformer.block", block_by_llmkit, "Block", [0]),
             ("transformer.block", block_by_torch_layer, "TransformerEncoderLayer", [0, 1]),
             ("transformer.params", count_by_llmkit, "GPT", [0, 1]),
             ("transformer.flops", flops_by_llmkit, "GPT", [0, 1]),
             ("transformer.gpt", gpt_by_llmkit, "GPT", [0, 1]),
             ("transformer.hf_weight", hf_by_lessons_rename, "rename", [0, 1]),
             ("transformer.hf_weight", hf_by_convert_state_dict, "convert_state_dict", [0, 1])]


@pytest.mark.parametrize("exercise_id, route, what, indices", FORBIDDEN,
                         ids=lambda v: getattr(v, "__name__", str(v)))
def test_a_forbidden_route_is_reported(exercise_id, route, what, indices):
    exercise = EXERCISES[exercise_id]
    cases = instant_cases(exercise, 0)
    for index in indices:
        seen, answer = caught(exercise, route, cases[index].args)
        assert exercise.compare(answer, cases[index]) is None   # the route does the work
        assert any(what in s for s in seen), seen


def test_honest_work_is_not_flagged():
    for exercise_id, function in RIGHT.items():
        exercise = EXERCISES[exercise_id]
        case = instant_cases(exercise, 0)[0]
        seen, _ = caught(exercise, function, case.args)
        assert seen == [], (exercise_id, seen)


def test_the_lessons_paste_of_the_converter_is_forbidden():
    exercise = EXERCISES[FORBIDDEN_PASTE]
    case = instant_cases(exercise, 0)[0]
    seen, _ = caught(exercise, hf_by_lessons_rename, case.args)
    assert any("rename" in s for s in seen), seen
