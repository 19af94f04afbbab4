"""The checks of exercise notebook 06 (the transformer): instant and hidden cases.

Every expected value is computed before the learner's function runs, from llmkit's finished
pieces or from PyTorch's own:

- the MLP and the pre-LN block: `llmkit.model` modules holding the case's weights;
- the post-LN block: `torch.nn.TransformerEncoderLayer(norm_first=False)` holding them, with
  a causal mask;
- the parameter counts: a GPT built on the `meta` device (all parameters, its
  `num_params(include_embeddings=False)`, and the parameters of its blocks and final norm);
- the FLOPs: that GPT's count and the causal attention cost added up position by position;
- the whole GPT: `llmkit.model.GPT` with a tied or an untied head;
- the Hugging Face names: `gpt2.convert_state_dict`.

While the learner's function runs, those finished pieces are off limits (and PyTorch's own
transformer layers). The learner may use PyTorch's building blocks (`F.linear`,
`F.layer_norm`, `F.gelu`, `F.scaled_dot_product_attention`): the tasks are about how the
pieces fit together, which exercise 05 built one by one.

A task earns its points only when every hidden case passes. The weights are random (norm
scales near 1, biases non-zero), so a forgotten bias or norm shows; every block case has two
or more heads and positions, so heads split without a transpose show; the counts mix tied and
untied heads, biases and none, 4d-wide MLPs and others, so a count that follows only GPT-2's
design shows; the whole GPT's cases mix tied and untied heads.
"""

from __future__ import annotations

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

def _mlp_case(generator, shape, d_model, hidden=None, scale=4.0, note=""):
    """x is scaled so that the hidden layer sees values of a few units, where the tanh
    approximation of GELU and the exact one differ by more than rounding."""
    mlp = _randomise(MLP(_config(d_model, 1, mlp_hidden=hidden)), generator)
    x = _randn(generator, *shape, d_model) * scale
    with torch.no_grad():
        expected = mlp(x)
    return Case((x, mlp.fc.weight.detach().clone(), mlp.fc.bias.detach().clone(),
                 mlp.proj.weight.detach().clone(), mlp.proj.bias.detach().clone()),
                expected, note)


def _mlp_cases(generator, hidden):
    cases = [_mlp_case(generator, (2, 5), 8, note="x of shape (2, 5, 8)"),
             _mlp_case(generator, (6,), 5, hidden=7, note="a 2-D input (N, d), hidden width 7")]
    if hidden:
        cases += [_mlp_case(generator, (_int(generator, 1, 4), _int(generator, 2, 6)),
                            _int(generator, 4, 12)) for _ in range(3)]
        cases += [_mlp_case(generator, (5,), 6, note="a 2-D input (N, d)"),
                  _mlp_case(generator, (2, 3), 4, hidden=10, note="a hidden width of 10, not 4d"),
                  _mlp_case(generator, (1, 4), 3, hidden=2, note="a hidden width of 2")]
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


# --- 2. one transformer block, pre-LN (GPT-2) or post-LN (the original Transformer) --------

def _gelu_tanh(x):
    return F.gelu(x, approximate="tanh")


def _post_ln_reference(weights, x, n_head):
    """PyTorch's own encoder layer in post-LN form, holding the block's weights, causal."""
    d = x.shape[-1]
    layer = torch.nn.TransformerEncoderLayer(
        d, n_head, dim_feedforward=weights["mlp.fc.weight"].shape[0], dropout=0.0,
        activation=_gelu_tanh, layer_norm_eps=1e-5, batch_first=True, norm_first=False)
    names = {"self_attn.in_proj_weight": "attn.qkv.weight",
             "self_attn.in_proj_bias": "attn.qkv.bias",
             "self_attn.out_proj.weight": "attn.proj.weight",
             "self_attn.out_proj.bias": "attn.proj.bias",
             "linear1.weight": "mlp.fc.weight", "linear1.bias": "mlp.fc.bias",
             "linear2.weight": "mlp.proj.weight", "linear2.bias": "mlp.proj.bias",
             "norm1.weight": "norm1.weight", "norm1.bias": "norm1.bias",
             "norm2.weight": "norm2.weight", "norm2.bias": "norm2.bias"}
    layer.load_state_dict({theirs: weights[ours] for theirs, ours in names.items()})
    T = x.shape[1]
    future = torch.ones(T, T, dtype=torch.bool).triu(diagonal=1)     # True: may not look
    with torch.no_grad():
        return layer.eval()(x, src_mask=future)


def _block_variant(x, w, n_head, *, causal=True, norm_first=True, post_ln_inside=False):
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

    if post_ln_inside:                 # x + LN(sublayer(x)): the norm on the wrong side
        x = x + norm(attention(x), "norm1")
        return x + norm(mlp(x), "norm2")
    if norm_first:
        x = x + attention(norm(x, "norm1"))
        return x + mlp(norm(x, "norm2"))
    x = norm(x + attention(x), "norm1")
    return norm(x + mlp(x), "norm2")


def _block_case(generator, B, T, d_model, n_head, norm_first=True, hidden_width=None, note=""):
    block = _randomise(Block(_config(d_model, n_head, mlp_hidden=hidden_width)), generator)
    x = _randn(generator, B, T, d_model)
    weights = _weights(block)
    if norm_first:
        with torch.no_grad():
            expected = block(x)
    else:
        expected = _post_ln_reference(weights, x, n_head)
    form = "pre-LN" if norm_first else "post-LN"
    text = f"{form}, x of shape {(B, T, d_model)}, {n_head} heads" + (f", {note}" if note else "")
    return Case((x, weights, n_head, norm_first), expected, text)


def _block_cases(generator, hidden):
    cases = [_block_case(generator, 2, 5, 8, 2, True),
             _block_case(generator, 1, 6, 12, 3, False)]
    if hidden:
        cases += [_block_case(generator, 3, 4, 16, 4, True),
                  _block_case(generator, 2, 7, 6, 3, False),
                  _block_case(generator, 1, 9, 16, 8, True, note="8 heads of width 2"),
                  _block_case(generator, 2, 5, 8, 2, False, hidden_width=12,
                              note="an MLP 12 wide, not 4d"),
                  _block_case(generator, 2, 3, 12, 2, True, hidden_width=20,
                              note="an MLP 20 wide, not 4d")]
    return cases


def _compare_block(answer, case):
    problem = compare_tensors(answer, case.expected, name="the block's output",
                              any_float_dtype=True, atol=1e-4, rtol=1e-4)
    if problem and isinstance(answer, torch.Tensor) and answer.shape == case.expected.shape:
        x, weights, n_head, norm_first = case.args
        slips = [(dict(norm_first=not norm_first),
                  "the other arrangement: with norm_first=True each sub-layer reads LN(x) and "
                  "adds to x; with norm_first=False the norm comes after the addition."),
                 (dict(post_ln_inside=True),
                  "the norm applied to the sub-layer's output before the addition; post-LN "
                  "normalises the sum x + sub-layer(x)."),
                 (dict(causal=False, norm_first=norm_first),
                  "the attention sees future positions: use a causal mask.")]
        for options, message in slips:
            variant = _block_variant(x, weights, n_head, **options)
            if torch.allclose(answer.double(), variant.double(), atol=1e-4, rtol=1e-4):
                return problem + " It looks like " + message
    return problem


# --- 3. and 4. counting parameters and FLOPs ----------------------------------------------

GPT2_SMALL = dict(vocab_size=50257, context_length=1024, n_layer=12, n_head=12, d_model=768,
                  tie_weights=True, bias=True, mlp_hidden=None)


def _meta_gpt(values: dict) -> GPT:
    with torch.device("meta"):     # shapes only: counting GPT-2 small costs no memory
        return GPT(GPTConfig(**values))


def _counts(values: dict) -> dict[str, int]:
    """The three conventions, read off a GPT built with these values."""
    model = _meta_gpt(values)
    inside = [*model.blocks.parameters(), *model.norm_final.parameters()]
    return {"total": sum(p.numel() for p in model.parameters()),
            "nanogpt": model.num_params(include_embeddings=False),
            "kaplan": sum(p.numel() for p in inside)}


def _random_config(generator, **changes) -> dict:
    n_head = _int(generator, 1, 5)
    values = dict(vocab_size=_int(generator, 2, 300), context_length=_int(generator, 1, 128),
                  n_layer=_int(generator, 1, 7), n_head=n_head,
                  d_model=n_head * _int(generator, 1, 17), tie_weights=True, bias=True,
                  mlp_hidden=None)
    values.update(changes)
    return values


def _describe(values: dict) -> str:
    parts = ["tied" if values["tie_weights"] else "untied head"]
    if not values["bias"]:
        parts.append("no biases")
    if values["mlp_hidden"] is not None:
        parts.append(f"an MLP {values['mlp_hidden']} wide")
    return ", ".join(parts)


def _count_configs(generator, hidden):
    configs = [(dict(GPT2_SMALL), "GPT-2 small's config"),
               (_random_config(generator, tie_weights=False, bias=False), ""),
               (_random_config(generator, mlp_hidden=_int(generator, 1, 50)), "")]
    if hidden:
        configs += [
            (_random_config(generator), ""),
            (_random_config(generator, tie_weights=False), ""),
            (_random_config(generator, bias=False, mlp_hidden=_int(generator, 1, 50)), ""),
            (_random_config(generator, tie_weights=False, mlp_hidden=_int(generator, 1, 50)), ""),
            (dict(GPT2_SMALL, n_layer=24, d_model=1024, n_head=16), "GPT-2 medium's config"),
        ]
    return [(values, note or _describe(values)) for values, note in configs]


def _count_cases(generator, hidden):
    return [Case((values,), _counts(values), note)
            for values, note in _count_configs(generator, hidden)]


def _whole_number(answer, name):
    if isinstance(answer, torch.Tensor) and answer.numel() == 1:
        answer = answer.item()
    if isinstance(answer, float) and answer.is_integer():
        answer = int(answer)
    if isinstance(answer, bool) or not isinstance(answer, int):
        return None, f"{name} should be a whole number (int), but it is {describe_type(answer)}."
    return answer, None


def _compare_count(answer, case):
    if not isinstance(answer, dict):
        return f"count_params should return a dict, but it returned {describe_type(answer)}."
    if set(answer) != set(case.expected):
        return (f"the dict should have the keys {sorted(case.expected)}, got "
                f"{sorted(answer)}.")
    values = case.args[0]
    d, V, C = values["d_model"], values["vocab_size"], values["context_length"]
    L = values["n_layer"]
    for key in ("total", "nanogpt", "kaplan"):
        got, problem = _whole_number(answer[key], f"count[{key!r}]")
        if problem:
            return problem
        expected = case.expected[key]
        if got == expected:
            continue
        message = f"count[{key!r}] is {got:,}, expected {expected:,}"
        gap = expected - got
        width = values["mlp_hidden"] or 4 * d
        explanations = {
            C * d: "the position embedding table (C x d) is missing",
            -C * d: "the position embedding table (C x d) is counted; this convention leaves "
                    "it out",
            V * d: "one V x d matrix is missing" + (
                "" if values["tie_weights"] else ": with an untied head the head has its own"),
            -V * d: ("a V x d matrix is counted twice: a tied head is the token embedding"
                     if key == "total" and values["tie_weights"] else
                     "a V x d matrix is counted that this convention leaves out"),
        }
        if width != 4 * d:
            explanations[L * (width - 4 * d) * (2 * d + values["bias"])] = (
                "the MLP is taken as 4d wide; its hidden width is mlp_hidden when that is set")
        if not values["bias"]:
            explanations[-(L * (7 * d + width) + d)] = (
                "biases are counted, but with bias=False no Linear or LayerNorm has one")
        if gap in explanations and gap != 0:
            return f"{message}; it looks like {explanations[gap]}."
        return message + "."
    return None


def _causal_attention_flops(L, T, d) -> int:
    """Forward FLOPs per token of attention's scores and weighted sums under the causal mask:
    the query at position t computes t + 1 scores (2d FLOPs each) and sums t + 1 values
    (2d each), averaged over the T positions; added up position by position."""
    total = sum(L * 2 * 2 * d * (t + 1) for t in range(T))
    assert total % T == 0
    return total // T


def _flops_cases(generator, hidden):
    cases = []
    configs = _count_configs(generator, hidden)
    for number, (values, note) in enumerate(configs):
        training = number % 2 == 0 if number < 2 else bool(_int(generator, 0, 2))
        T = values["context_length"] if "GPT-2" in note else _int(generator, 1,
                                                                 values["context_length"] + 1)
        N = _meta_gpt(values).num_params(include_embeddings=False)
        forward = 2 * N + _causal_attention_flops(values["n_layer"], T, values["d_model"])
        cases.append(Case((values, T, training), 3 * forward if training else forward,
                          f"{note}, T = {T}, {'training' if training else 'forward only'}"))
    return cases


def _compare_flops(answer, case):
    answer, problem = _whole_number(answer, "the FLOPs per token")
    if problem:
        return problem
    if answer == case.expected:
        return None
    values, T, training = case.args
    model = _meta_gpt(values)
    N = model.num_params(include_embeddings=False)
    L, d = values["n_layer"], values["d_model"]
    factor = 3 if training else 1
    message = f"the FLOPs per token are {answer:,}, expected {case.expected:,}"
    slips = {factor * (2 * N + 4 * L * T * d): "that counts every one of the T x T scores (the "
                                               "lesson's estimate); here only those the "
                                               "causal mask keeps count",
             factor * (2 * N + 2 * L * T * d): "the query at position t (from 0) computes t + 1 "
                                               "scores, not t",
             factor * 2 * N: "the attention term is missing",
             (3 - factor + 1) * (2 * N + 2 * L * (T + 1) * d):
                 "training is the forward pass plus a backward pass twice as costly; "
                 "forward only is the forward pass alone",
             factor * (2 * model.num_params() + 2 * L * (T + 1) * d):
                 "N should leave out the position embedding (it is only looked up, never "
                 "multiplied)"}
    if not values["tie_weights"]:
        slips[factor * (2 * (N + values["vocab_size"] * d) + 2 * L * (T + 1) * d)] = (
            "with an untied head the token embedding is only looked up: leave it out of N "
            "(the head matrix stays)")
    if answer in slips:
        return f"{message}; {slips[answer]}."
    return message + "."


# --- 5. the whole GPT -----------------------------------------------------------------

def _gpt_case(generator, B, T, n_layer, d_model, n_head, vocab_size, tied=True, note=""):
    config = _config(d_model, n_head, n_layer=n_layer, vocab_size=vocab_size,
                     context_length=T + _int(generator, 0, 4), tie_weights=tied)
    model = _randomise(GPT(config), generator)
    idx = torch.randint(0, vocab_size, (B, T), generator=generator)
    with torch.no_grad():
        expected, _ = model(idx)
    # A tied head has no weight of its own: lm_head.weight is the token embedding.
    drop = ("lm_head.weight",) if tied else ()
    text = (f"{n_layer} layers, {'tied' if tied else 'untied'} head, idx of shape {(B, T)}"
            + (f", {note}" if note else ""))
    return Case((idx, _weights(model, drop=drop), n_head), expected, text)


def _gpt_cases(generator, hidden):
    cases = [_gpt_case(generator, 2, 6, 11, 8, 2, 11, tied=True,
                       note="11 layers (blocks.1 and blocks.10 both start with blocks.1)"),
             _gpt_case(generator, 1, 5, 3, 12, 3, 20, tied=False)]
    if hidden:
        cases += [_gpt_case(generator, 3, 4, 1, 8, 4, 7, tied=False, note="one layer"),
                  _gpt_case(generator, 2, 8, 2, 16, 2, 30, tied=True),
                  _gpt_case(generator, 2, 3, 4, 4, 2, 9, tied=False),
                  _gpt_case(generator, 1, 7, 11, 4, 2, 6, tied=True,
                            note="11 layers (blocks.1 and blocks.10 both start with blocks.1)")]
    return cases


def _tied_variant(idx, weights, n_head):
    """The logits the same weights give with the head tied (the untied-head slip)."""
    V, d = weights["token_embedding.weight"].shape
    n_layer = len({name.split(".")[1] for name in weights if name.startswith("blocks.")})
    config = _config(d, n_head, n_layer=n_layer, vocab_size=V,
                     context_length=weights["position_embedding.weight"].shape[0])
    model = GPT(config).eval()
    model.load_state_dict({k: v for k, v in weights.items() if k != "lm_head.weight"},
                          strict=False)
    with torch.no_grad():
        return model(idx)[0]


def _compare_gpt(answer, case):
    problem = compare_tensors(answer, case.expected, name="the logits tensor", any_float_dtype=True,
                              atol=1e-4, rtol=1e-4)
    if problem and isinstance(answer, torch.Tensor) and answer.shape == case.expected.shape:
        idx, weights, n_head = case.args
        if "lm_head.weight" in weights and torch.allclose(
                answer.double(), _tied_variant(idx, weights, n_head).double(), atol=1e-4,
                rtol=1e-4):
            return problem + (" Those are the logits of a tied head; this model's head is "
                              "untied, with a weight of its own.")
        if torch.allclose(answer[:, :1].double(), case.expected[:, :1].double(),
                          atol=1e-4, rtol=1e-4):
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
    cases = [_hf_case(generator, f"h.{_int(generator, 0, 10)}.attn.c_attn.weight", (d, 3 * d), "",
                      "no 'transformer.' prefix"),
             _hf_case(generator, f"h.{_int(generator, 10, 48)}.ln_1.bias", (d,), "transformer.",
                      "a layer number with two digits"),
             _hf_case(generator, "wte.weight", HF_TOP_SHAPES["wte.weight"](d), "transformer.")]
    if not hidden:
        return cases
    for key, shape in HF_BLOCK_SHAPES.items():
        layer = _int(generator, 0, 12)
        prefix = "transformer." if _int(generator, 0, 2) else ""
        cases.append(_hf_case(generator, f"h.{layer}.{key}", shape(d), prefix))
    for key, shape in HF_TOP_SHAPES.items():
        cases.append(_hf_case(generator, key, shape(d), "transformer."))
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
    Exercise("transformer.mlp", "mlp_forward", 2, "Warm-up: the MLP of a block",
             _mlp_cases, _compare_mlp, forbidden=MODEL_PIECES,
             hint="Widen, GELU, narrow back: an nn.Linear weight is stored (out, in), so the "
                  "input meets its transpose. GPT-2 uses the tanh approximation of GELU, and "
                  "the hidden width is whatever the weights say."),
    Exercise("transformer.block", "block_forward", 3, "One transformer block, pre-LN or post-LN",
             _block_cases, _compare_block, forbidden=MODEL_PIECES,
             hint="Pre-LN (GPT-2) normalises what each sub-layer reads and adds the result to "
                  "the un-normalised stream; post-LN (the original Transformer) adds first and "
                  "normalises the sum. Either way attention is causal, and each head is its "
                  "own slice of the channels until the heads go back side by side."),
    Exercise("transformer.params", "count_params", 2,
             "Counting a GPT's parameters, three conventions",
             _count_cases, _compare_count, forbidden=MODEL_PIECES,
             hint="Count each module from its shapes, for this config (a bias only when there "
                  "are biases, the MLP as wide as mlp_hidden says). Then ask, per convention, "
                  "which V x d and C x d matrices it keeps; a tied matrix is one matrix."),
    Exercise("transformer.flops", "flops_per_token", 2,
             "FLOPs per token, causal attention counted exactly",
             _flops_cases, _compare_flops, forbidden=MODEL_PIECES,
             hint="Attention's work grows with the position: add it up over the T positions "
                  "of a sequence and divide by T (mind where the count starts). N is task 3's "
                  "'nanogpt' count, and the backward pass costs twice the forward."),
    Exercise("transformer.gpt", "gpt_forward", 3, "The whole GPT, tied or untied",
             _gpt_cases, _compare_gpt, forbidden=MODEL_PIECES,
             hint="The number of layers is in the weights' names (compare whole numbers, not "
                  "prefixes of text). The head is the token embedding only when the weights "
                  "have no head of their own; position t adds row t of the position table."),
    Exercise("transformer.hf_weight", "convert_hf_weight", 2,
             "Stretch: a Hugging Face GPT-2 weight in llmkit's names",
             _hf_cases, _compare_hf, forbidden=MODEL_PIECES + GPT2_IMPORT,
             hint="Rename part by part, as in the table, after dropping an optional leading "
                  "prefix. Only Conv1D matrices are stored (in, out): the four 2-D weights "
                  "inside a block, never a bias and never an embedding table."),
]

ASSIGNMENT = Assignment("06_the_transformer", "Exercises 06: the transformer", SETUP, EXERCISES)
