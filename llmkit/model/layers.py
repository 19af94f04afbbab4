"""The rest of a transformer block: norms, the MLP, and the block that joins them.

A GPT-2 block is pre-LN: each sub-layer reads a normalised copy of the residual stream
and adds its result back,

    x = x + attention(norm1(x))
    x = x + mlp(norm2(x))

so the residual stream itself is never normalised and gradients flow straight through the
additions. `make_norm` and `make_mlp` are the one place each variant of lesson 12 is
chosen (LayerNorm or RMSNorm; GELU MLP, SwiGLU or a mixture of experts).
"""

from __future__ import annotations

import torch
from torch import nn

from llmkit.model.attention import CausalSelfAttention, make_dropout
from llmkit.model.config import GPTConfig


class RMSNorm(nn.Module):
    """Root-mean-square norm (Zhang & Sennrich 2019, used by LLaMA).

    x: (..., d) -> x / sqrt(mean(x^2) + eps) * weight. Unlike LayerNorm it neither
    subtracts the mean nor adds a bias. Matches torch.nn.RMSNorm.
    """

    def __init__(self, d_model: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d_model))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + self.eps) * self.weight


def make_norm(config: GPTConfig) -> nn.Module:
    """LayerNorm (GPT-2; with a bias when config.bias) or RMSNorm, over d_model channels."""
    if config.norm == "rmsnorm":
        return RMSNorm(config.d_model, eps=config.layer_norm_eps)
    return nn.LayerNorm(config.d_model, eps=config.layer_norm_eps, bias=config.bias)


class MLP(nn.Module):
    """GPT-2's feed-forward layer. x: (B, T, d_model) -> (B, T, d_model).

    Widen to hidden_width (4 * d_model by default), GELU with the tanh approximation (as
    GPT-2's `gelu_new`), project back.
    """

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.fc = nn.Linear(config.d_model, config.hidden_width, bias=config.bias)
        self.gelu = nn.GELU(approximate="tanh")
        self.proj = nn.Linear(config.hidden_width, config.d_model, bias=config.bias)
        self.dropout = make_dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.proj(self.gelu(self.fc(x))))


class SwiGLU(nn.Module):
    """LLaMA's gated feed-forward layer. x: (B, T, d_model) -> (B, T, d_model).

    proj(silu(gate(x)) * up(x)): one branch decides, per hidden unit, how much of the other
    passes (Shazeer 2020, "GLU Variants Improve Transformer").
    """

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.gate = nn.Linear(config.d_model, config.hidden_width, bias=config.bias)
        self.up = nn.Linear(config.d_model, config.hidden_width, bias=config.bias)
        self.proj = nn.Linear(config.hidden_width, config.d_model, bias=config.bias)
        self.dropout = make_dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.proj(nn.functional.silu(self.gate(x)) * self.up(x)))


class MixtureOfExperts(nn.Module):
    """A sparse mixture of GELU MLPs (Shazeer et al. 2017; Mixtral's routing).

    x: (B, T, d_model) -> (B, T, d_model). A router scores the n_experts experts for each
    token; the token goes to its experts_per_token best, and their outputs are summed with
    weights softmax(scores of the chosen experts). So the layer holds n_experts MLPs of
    parameters but each token pays for only experts_per_token of them. The layer adds no
    load-balancing loss itself, so nothing here stops the router from favouring a few
    experts; `llmkit.load_balancing` computes the Switch Transformer's from the router's
    scores (lesson 12 adds it to the training loss).
    """

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.experts_per_token = config.experts_per_token
        self.router = nn.Linear(config.d_model, config.n_experts, bias=False)
        self.experts = nn.ModuleList(MLP(config) for _ in range(config.n_experts))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = x.reshape(-1, x.shape[-1])                                   # (N, d)
        scores, chosen = self.router(tokens).topk(self.experts_per_token, dim=-1)   # (N, k) each
        gates = scores.softmax(dim=-1)
        output = torch.zeros_like(tokens)
        for number, expert in enumerate(self.experts):
            # Gather the tokens routed to this expert, run it once on all of them, scatter back.
            token_rows, slot = torch.where(chosen == number)
            expert_output = expert(tokens[token_rows]) * gates[token_rows, slot, None]
            output.index_add_(0, token_rows, expert_output)
        return output.view_as(x)


def make_mlp(config: GPTConfig) -> nn.Module:
    """The feed-forward layer the config asks for: MLP (GELU), SwiGLU or MixtureOfExperts."""
    if config.mlp == "swiglu":
        return SwiGLU(config)
    if config.mlp == "moe":
        return MixtureOfExperts(config)
    return MLP(config)


class Block(nn.Module):
    """One pre-LN transformer block. forward(x: (B, T, d_model), kv_cache=None) -> same shape.

    positions and mask, when given, go to the attention layer (see CausalSelfAttention).
    """

    def __init__(self, config: GPTConfig, layer_index: int = 0):
        super().__init__()
        self.norm1 = make_norm(config)
        self.attn = CausalSelfAttention(config, layer_index)
        self.norm2 = make_norm(config)
        self.mlp = make_mlp(config)

    def forward(self, x: torch.Tensor, kv_cache=None, positions=None, mask=None) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), kv_cache, positions, mask)
        return x + self.mlp(self.norm2(x))

    def attention_weights(self, x: torch.Tensor) -> torch.Tensor:
        """x: the block's input (B, T, d_model) -> its attention weights (B, n_head, T, T)."""
        return self.attn.attention_weights(self.norm1(x))
