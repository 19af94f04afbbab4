"""The checks of exercise notebook 06 (the transformer): instant and hidden cases.

Every expected value comes from `llmkit.model` (the MLP, Block and GPT modules holding the
case's weights, a GPT built on the `meta` device for the counts, `gpt2.convert_state_dict`
for the weight names), computed before the learner's function runs. While it runs, those
finished pieces are off limits. The learner may use PyTorch's building blocks
(`F.linear`, `F.layer_norm`, `F.gelu`, `F.scaled_dot_product_attention`): the tasks are
about how the pieces fit together, which earlier lessons' exercises built one by one.

The weights are random (norm scales near 1, biases non-zero), so a forgotten bias or norm
shows. Comparisons recognise the usual slips (post-LN instead of pre-LN, no causal mask,
the exact GELU, forgetting the tie or the position table) and say so.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from llmkit.model import GPT, MLP, Block, GPTConfig
from llmkit.model.gpt2 import convert_state_dict

from llmkit.grading.exercise import Assignment, Case, Exercise, compare_tensors, describe_type
from llmkit.grading.exercise import random_int as _int, random_normal as _randn

SETUP = ("import math\nimport torch\nimport torch.nn.functional as F\n"
         "from llmkit.grading import check\n")

MODEL_PIECES = (
    "llmkit.model.GPT", "llmkit.model.gpt.GPT", "llmkit.model.Block", "llmkit.model.layers.Block",
    "llmkit.model.MLP", "llmkit.model.layers.MLP", "llmkit.model.CausalSelfAttention",
    "llmkit.model.attention.CausalSelfAttention", "torch.nn.TransformerEncoderLayer",
    "torch.nn.TransformerDecoderLayer", "torch.nn.MultiheadAttention",
)
GPT2_IMPORT = tuple(f"llmkit.model.gpt2.{name}" for name in (
    "rename", "convert_state_dict", "from_hf_state_dict", "from_hf_model", "from_hf_folder",
    "CONV1D_SUFFIXES", "TOP_LEVEL_NAMES", "BLOCK_NAMES",
)) + ("llmkit.model.from_hf_state_dict", "llmkit.model.from_hf_model",
      "llmkit.model.from_hf_folder")


def _randomise(module, generator):
    """Fill every parameter from `generator`: norm scales near 1, everything else small.

    GPT-2's own initialisation zeroes the biases and sets norm scales to 1, which would let
    a forgotten bias or scale pass."""
    with torch.no_grad():
        for name, parameter in module.named_parameters():
            noise = _randn(generator, *parameter.shape)
            is_norm_scale = "norm" in name and name.endswith("weight")
            parameter.copy_(1 + 0.2 * noise if is_norm_scale else 0.2 * noise)
    return module.eval()


def _weights(module, drop=()) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().clone() for name, tensor in module.state_dict().items()
            if name not in drop}


def _config(d_model, n_head, n_layer=1, vocab_size=16, context_length=16, **changes):
    return GPTConfig(vocab_size=vocab_size, context_length=context_length, n_layer=n_layer,
                     n_head=n_head, d_model=d_model, **changes)


# --- 1. the MLP ------------------------------------------------------------------------

def _mlp_case(generator, shape, d_model, hidden=None, note=""):
    mlp = _randomise(MLP(_config(d_model, 1, mlp_hidden=hidden)), generator)
    x = _randn(generator, *shape, d_model)
    with torch.no_grad():
        expected = mlp(x)
    return Case((x, mlp.fc.weight.detach().clone(), mlp.fc.bias.detach().clone(),
                 mlp.proj.weight.detach().clone(), mlp.proj.bias.detach().clone()),
                expected, note)


def _mlp_cases(generator, hidden):
    cases = [_mlp_case(generator, (_int(generator, 1, 4), _int(generator, 1, 6)),
                       _int(generator, 2, 12)) for _ in range(4 if hidden else 2)]
    if hidden:
        cases += [_mlp_case(generator, (5,), 6, note="a 2-D input (N, d)"),
                  _mlp_case(generator, (2, 3), 4, hidden=10, note="a hidden width of 10, not 4d"),
                  _mlp_case(generator, (1, 1), 1, note="d_model = 1")]
    return cases


def _compare_mlp(answer, case):
    problem = compare_tensors(answer, case.expected, name="the MLP's output",
                              any_float_dtype=True, atol=1e-4, rtol=1e-4)
    if problem and isinstance(answer, torch.Tensor) and answer.shape == case.expected.shape:
        x, fc_w, fc_b, proj_w, proj_b = case.args
        exact = F.linear(F.gelu(F.linear(x, fc_w, fc_b)), proj_w, proj_b)
        if torch.allclose(answer.double(), exact.double(), atol=1e-4, rtol=1e-4):
            problem += (" Your values match the exact (erf) GELU; GPT-2 uses the tanh "
                        "approximation.")
    return problem


# --- 2. one transformer block ----------------------------------------------------------

def _block_variant(x, w, n_head, *, causal=True, pre_ln=True):
    """A block written with torch ops, with one of the usual slips switched on."""
    d = x.shape[-1]

    def attention(h):
        B, T, _ = h.shape
        q, k, v = F.linear(h, w["attn.qkv.weight"], w["attn.qkv.bias"]).split(d, dim=-1)
        q, k, v = (t.view(B, T, n_head, d // n_head).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        return F.linear(y.transpose(1, 2).reshape(B, T, d), w["attn.proj.weight"],
                        w["attn.proj.bias"])

    def mlp(h):
        hidden = F.gelu(F.linear(h, w["mlp.fc.weight"], w["mlp.fc.bias"]), approximate="tanh")
        return F.linear(hidden, w["mlp.proj.weight"], w["mlp.proj.bias"])

    def norm(h, which):
        return F.layer_norm(h, (d,), w[f"{which}.weight"], w[f"{which}.bias"], 1e-5)

    if pre_ln:
        x = x + attention(norm(x, "norm1"))
        return x + mlp(norm(x, "norm2"))
    x = norm(x + attention(x), "norm1")
    return norm(x + mlp(x), "norm2")


def _block_case(generator, B, T, d_model, n_head, note=""):
    block = _randomise(Block(_config(d_model, n_head)), generator)
    x = _randn(generator, B, T, d_model)
    with torch.no_grad():
        expected = block(x)
    return Case((x, _weights(block), n_head), expected, note)


def _block_cases(generator, hidden):
    shapes = [(2, 5, 8, 2), (1, 7, 12, 3), (3, 4, 16, 4), (2, 6, 6, 1)]
    cases = [_block_case(generator, *shape) for shape in shapes[: 4 if hidden else 2]]
    if hidden:
        cases += [_block_case(generator, 2, 1, 8, 4, "a single position (T = 1)"),
                  _block_case(generator, 1, 9, 16, 8, "8 heads of width 2")]
    return cases


def _compare_block(answer, case):
    problem = compare_tensors(answer, case.expected, name="the block's output",
                              any_float_dtype=True, atol=1e-4, rtol=1e-4)
    if problem and isinstance(answer, torch.Tensor) and answer.shape == case.expected.shape:
        x, weights, n_head = case.args
        slips = {"the attention sees future positions: use a causal mask.":
                 dict(causal=False),
                 "it normalises after the residual addition (post-LN); GPT-2 normalises "
                 "each sub-layer's input and adds the result to the unnormalised x (pre-LN).":
                 dict(pre_ln=False)}
        for message, options in slips.items():
            variant = _block_variant(x, weights, n_head, **options)
            if torch.allclose(answer.double(), variant.double(), atol=1e-4, rtol=1e-4):
                return problem + " It looks like " + message
    return problem


# --- 3. and 4. counting parameters and FLOPs ----------------------------------------------

CONFIG_KEYS = ("vocab_size", "context_length", "n_layer", "n_head", "d_model", "tie_weights")
GPT2_SMALL = dict(vocab_size=50257, context_length=1024, n_layer=12, n_head=12, d_model=768,
                  tie_weights=True)


def _meta_gpt(values: dict) -> GPT:
    with torch.device("meta"):     # shapes only: counting GPT-2 small costs no memory
        return GPT(GPTConfig(**values))


def _random_config(generator) -> dict:
    n_head = _int(generator, 1, 5)
    return dict(vocab_size=_int(generator, 2, 300), context_length=_int(generator, 1, 128),
                n_layer=_int(generator, 1, 7), n_head=n_head,
                d_model=n_head * _int(generator, 1, 17), tie_weights=True)


def _count_cases(generator, hidden):
    configs = [(_random_config(generator), "") for _ in range(3 if hidden else 1)]
    configs.append((GPT2_SMALL, "GPT-2 small's config"))
    if hidden:
        untied = dict(_random_config(generator), tie_weights=False)
        configs += [(untied, "tie_weights=False (a separate head matrix)"),
                    (dict(GPT2_SMALL, n_layer=24, d_model=1024, n_head=16),
                     "GPT-2 medium's config"),
                    (dict(vocab_size=2, context_length=1, n_layer=1, n_head=1, d_model=1,
                          tie_weights=True), "every size 1 or 2")]
    return [Case((values,), sum(p.numel() for p in _meta_gpt(values).parameters()), note)
            for values, note in configs]


def _whole_number(answer, name):
    if isinstance(answer, torch.Tensor) and answer.numel() == 1:
        answer = answer.item()
    if isinstance(answer, float) and answer.is_integer():
        answer = int(answer)
    if isinstance(answer, bool) or not isinstance(answer, int):
        return None, f"{name} should be a whole number (int), but it is {describe_type(answer)}."
    return answer, None


def _compare_count(answer, case):
    answer, problem = _whole_number(answer, "the parameter count")
    if problem:
        return problem
    expected = case.expected
    if answer == expected:
        return None
    values = case.args[0]
    d, V, C = values["d_model"], values["vocab_size"], values["context_length"]
    L = values["n_layer"]
    message = f"the parameter count is {answer:,}, expected {expected:,}"
    gap = expected - answer
    missing_matrix = ("one V x d matrix is missing: with tie_weights=False the head has its "
                      "own matrix" if not values["tie_weights"] else
                      "the token embedding (V x d) is missing")
    explanations = {C * d: "the position embedding table ((C, d)) is missing",
                    V * d: missing_matrix,
                    -V * d: "a V x d matrix is counted twice: with tied weights the head is the "
                            "token embedding",
                    L * 4 * d + 2 * d: "the LayerNorms (2d each, two per block and a final "
                                       "one) are missing",
                    2 * d: "the final LayerNorm (2d) is missing",
                    L * 4 * d: "the blocks' LayerNorms (2d each, two per block) are missing",
                    L * 9 * d: "the biases of the Linear layers are missing (attention 4d, "
                               "MLP 5d per block)"}
    if gap in explanations:
        return f"{message}; it looks like {explanations[gap]}."
    return message + "."


def _flops_cases(generator, hidden):
    cases = []
    configs = [(_random_config(generator), "") for _ in range(3 if hidden else 1)]
    configs.append((GPT2_SMALL, "GPT-2 small's config"))
    if hidden:
        configs.append((dict(_random_config(generator), tie_weights=False), "tie_weights=False"))
    for values, note in configs:
        T = _int(generator, 1, values["context_length"] + 1)
        if note:
            T = values["context_length"]
        cases.append(Case((values, T), _meta_gpt(values).flops_per_token(T),
                          f"{note}, T = {T}".lstrip(", ")))
    return cases


def _compare_flops(answer, case):
    answer, problem = _whole_number(answer, "the FLOPs per token")
    if problem:
        return problem
    if answer == case.expected:
        return None
    values, T = case.args
    model = _meta_gpt(values)
    N = model.num_params(include_embeddings=False)
    attention = 12 * values["n_layer"] * T * values["d_model"]
    message = f"the FLOPs per token are {answer:,}, expected {case.expected:,}"
    slips = {6 * N: "the attention term (12 L T d) is missing",
             2 * N + attention // 3: "that is the forward pass only; training adds the "
                                     "backward pass (twice the forward)",
             6 * model.num_params() + attention: "N should leave out the position embedding "
                                                 "(it is only looked up, never multiplied)"}
    if not values["tie_weights"]:
        with_token_table = 6 * (N + values["vocab_size"] * values["d_model"]) + attention
        slips[with_token_table] = ("with an untied head the token embedding is only looked up: "
                                   "leave it out of N (the head matrix stays)")
    if answer in slips:
        return f"{message}; {slips[answer]}."
    return message + "."


# --- 5. the whole GPT -----------------------------------------------------------------

def _gpt_case(generator, B, T, n_layer, d_model, n_head, vocab_size, note=""):
    config = _config(d_model, n_head, n_layer=n_layer, vocab_size=vocab_size,
                     context_length=T + _int(generator, 0, 4))
    model = _randomise(GPT(config), generator)
    idx = torch.randint(0, vocab_size, (B, T), generator=generator)
    with torch.no_grad():
        expected, _ = model(idx)
    # lm_head.weight is left out: with tied weights it is the token embedding.
    return Case((idx, _weights(model, drop=("lm_head.weight",)), n_layer, n_head), expected,
                note)


def _gpt_cases(generator, hidden):
    shapes = [(2, 6, 2, 8, 2, 11), (1, 5, 1, 12, 3, 20), (3, 4, 3, 8, 4, 7),
              (2, 8, 2, 16, 2, 30)]
    cases = [_gpt_case(generator, *shape) for shape in shapes[: 4 if hidden else 2]]
    if hidden:
        cases += [_gpt_case(generator, 1, 1, 2, 8, 2, 5, "a single token"),
                  _gpt_case(generator, 2, 3, 4, 4, 1, 9, "4 layers of one head")]
    return cases


def _compare_gpt(answer, case):
    problem = compare_tensors(answer, case.expected, name="the logits tensor", any_float_dtype=True,
                              atol=1e-4, rtol=1e-4)
    if problem and isinstance(answer, torch.Tensor) and answer.shape == case.expected.shape:
        same_first = torch.allclose(answer[:, :1].double(), case.expected[:, :1].double(),
                                    atol=1e-4, rtol=1e-4)
        if same_first:
            problem += (" Position 0 is right but later positions differ: look at the "
                        "position embeddings (row t for position t) and the causal mask.")
    return problem


# --- 6. a Hugging Face GPT-2 weight, in llmkit's names ------------------------------------

HF_BLOCK_SHAPES = {  # GPT-2 name inside block i -> shape as Hugging Face stores it, for d
    "ln_1.weight": lambda d: (d,), "ln_1.bias": lambda d: (d,),
    "attn.c_attn.weight": lambda d: (d, 3 * d), "attn.c_attn.bias": lambda d: (3 * d,),
    "attn.c_proj.weight": lambda d: (d, d), "attn.c_proj.bias": lambda d: (d,),
    "ln_2.weight": lambda d: (d,), "ln_2.bias": lambda d: (d,),
    "mlp.c_fc.weight": lambda d: (d, 4 * d), "mlp.c_fc.bias": lambda d: (4 * d,),
    "mlp.c_proj.weight": lambda d: (4 * d, d), "mlp.c_proj.bias": lambda d: (d,),
}
HF_TOP_SHAPES = {"wte.weight": lambda d: (7, d), "wpe.weight": lambda d: (5, d),
                 "ln_f.weight": lambda d: (d,), "ln_f.bias": lambda d: (d,)}


def _hf_case(generator, key, shape, prefix, note=""):
    tensor = _randn(generator, *shape)
    name = prefix + key
    (expected_key, expected_tensor), = convert_state_dict({name: tensor}, GPTConfig()).items()
    return Case((name, tensor), (expected_key, expected_tensor), note)


def _hf_cases(generator, hidden):
    d = 4
    block_keys = list(HF_BLOCK_SHAPES)
    wanted = ["attn.c_attn.weight", "ln_1.bias"] + (block_keys if hidden else [])
    cases = []
    for key in wanted:
        layer = _int(generator, 0, 12)
        prefix = "transformer." if _int(generator, 0, 2) else ""
        cases.append(_hf_case(generator, f"h.{layer}.{key}", HF_BLOCK_SHAPES[key](d), prefix))
    for key in (HF_TOP_SHAPES if hidden else ["wte.weight"]):
        cases.append(_hf_case(generator, key, HF_TOP_SHAPES[key](d), "transformer."))
    if hidden:
        cases.append(_hf_case(generator, "h.11.mlp.c_proj.weight", (4 * d, d), "",
                              "layer 11 (two digits), no 'transformer.' prefix"))
    return cases


def _compare_hf(answer, case):
    if not isinstance(answer, (tuple, list)) or len(answer) != 2:
        return ("convert_hf_weight should return a pair (name, tensor), but it returned "
                f"{describe_type(answer)}.")
    got_key, got_tensor = answer
    expected_key, expected_tensor = case.expected
    if got_key != expected_key:
        return f"for {case.args[0]!r} the name is {got_key!r}, expected {expected_key!r}."
    problem = compare_tensors(got_tensor, expected_tensor, name=f"the tensor of {expected_key}",
                              any_float_dtype=True)
    if (problem and isinstance(got_tensor, torch.Tensor)
            and got_tensor.shape == expected_tensor.T.shape != expected_tensor.shape):
        problem += " It looks transposed."
    return problem


EXERCISES = [
    Exercise("transformer.mlp", "mlp_forward", 2, "The MLP of a block",
             _mlp_cases, _compare_mlp, forbidden=MODEL_PIECES,
             hint="Three steps: x @ fc_weight.T + fc_bias, then GELU with the tanh "
                  "approximation, then @ proj_weight.T + proj_bias. nn.Linear stores its "
                  "weight as (out, in)."),
    Exercise("transformer.block", "block_forward", 3, "One pre-LN transformer block",
             _block_cases, _compare_block, forbidden=MODEL_PIECES,
             hint="x = x + attention(layer_norm(x)), then x = x + mlp(layer_norm(x)), each "
                  "with its own norm's weights. For attention: qkv = x @ W.T + b is (B, T, 3d); "
                  "split it into q, k, v of width d; view each as (B, T, n_head, d // n_head) "
                  "and move the heads before T; attend causally; put the heads side by side "
                  "again and apply attn.proj."),
    Exercise("transformer.params", "count_params", 2, "Counting a GPT's parameters",
             _count_cases, _compare_count, forbidden=MODEL_PIECES,
             hint="Add up the parts: V*d (token embedding), C*d (positions), per block "
                  "4d^2 + 4d (attention) + 8d^2 + 5d (MLP) + 4d (two LayerNorms), 2d for the "
                  "final LayerNorm, and V*d for the head only when it is not tied."),
    Exercise("transformer.flops", "training_flops_per_token", 2, "Training FLOPs per token",
             _flops_cases, _compare_flops,
             forbidden=MODEL_PIECES,
             hint="6 * N + 12 * n_layer * T * d_model, where N counts every parameter except "
                  "the lookup-only tables: the position embedding (C*d), and the token "
                  "embedding (V*d) when the head is not tied to it."),
    Exercise("transformer.gpt", "gpt_forward", 3, "The whole GPT, to logits",
             _gpt_cases, _compare_gpt, forbidden=MODEL_PIECES,
             hint="x = token_embedding[idx] + position_embedding[0..T-1]; then each block "
                  "with the weights whose names start with f'blocks.{i}.' (prefix removed); "
                  "then the final LayerNorm; then logits = x @ token_embedding.T (the tied "
                  "head, no bias)."),
    Exercise("transformer.hf_weight", "convert_hf_weight", 2,
             "Stretch: a Hugging Face GPT-2 weight in llmkit's names",
             _hf_cases, _compare_hf, forbidden=MODEL_PIECES + GPT2_IMPORT,
             hint="Drop a leading 'transformer.'; rename wte, wpe, ln_f and h. at the start, "
                  "and ln_1, ln_2, c_attn, c_proj, c_fc inside a block (see the table); "
                  "transpose the four Conv1D weight matrices (.T), and nothing else."),
]

ASSIGNMENT = Assignment("06_the_transformer", "Exercises 06: the transformer", SETUP, EXERCISES)
