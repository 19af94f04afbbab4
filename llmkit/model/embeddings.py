"""Where a token is: the three ways the course tells the model about position.

Attention by itself ignores order (it is a weighted sum over a set), so position has to be
put in:

- learned positions (GPT-2): a second lookup table, one trained vector per position,
  added to the token vector;
- sinusoidal positions ("Attention Is All You Need", section 3.5): the same addition, but
  the table is fixed, sines and cosines of geometrically spaced frequencies;
- rotary positions, RoPE (Su et al. 2021, used by LLaMA): nothing is added; instead each
  query and key is rotated by an angle proportional to its position, so the dot product
  between them depends on their distance. We rotate the two halves of each head
  (channel i with channel i + head_dim/2), the convention of Hugging Face's LLaMA.

`make_position_embedding(config)` is the one place the model picks between them.
"""

from __future__ import annotations

import torch
from torch import nn

from llmkit.model.config import GPTConfig


def sinusoidal_positions(context_length: int, d_model: int, base: float = 10000.0) -> torch.Tensor:
    """The fixed position table of the original Transformer.

    Returns (context_length, d_model) float32 with, for position p and pair index i,
    table[p, 2i] = sin(p / base^(2i/d_model)) and table[p, 2i+1] = cos(p / base^(2i/d_model)).
    """
    if context_length < 1 or d_model < 2 or d_model % 2:
        raise ValueError(
            f"need context_length >= 1 and an even d_model >= 2, got context_length="
            f"{context_length}, d_model={d_model}."
        )
    positions = torch.arange(context_length, dtype=torch.float64)[:, None]   # (T, 1)
    frequencies = base ** (-torch.arange(0, d_model, 2, dtype=torch.float64) / d_model)  # (d/2,)
    angles = positions * frequencies                                          # (T, d/2)
    table = torch.empty(context_length, d_model, dtype=torch.float64)
    table[:, 0::2] = torch.sin(angles)
    table[:, 1::2] = torch.cos(angles)
    return table.float()


class SinusoidalPositionEmbedding(nn.Module):
    """A position lookup with the same interface as nn.Embedding, but a fixed table.

    positions: (T,) int64 -> (T, d_model). The table is a buffer, not a parameter, and is
    rebuilt from the config rather than saved in checkpoints.
    """

    def __init__(self, context_length: int, d_model: int):
        super().__init__()
        table = sinusoidal_positions(context_length, d_model)
        self.register_buffer("table", table, persistent=False)

    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        return self.table[positions]


def make_position_embedding(config: GPTConfig) -> nn.Module | None:
    """The module added to the token embeddings, or None for RoPE (applied inside attention)."""
    if config.position == "learned":
        return nn.Embedding(config.context_length, config.d_model)
    if config.position == "sinusoidal":
        return SinusoidalPositionEmbedding(config.context_length, config.d_model)
    return None


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """(..., d) -> (..., d): the halves [x1, x2] become [-x2, x1] (a 90-degree turn per pair)."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class RotaryEmbedding(nn.Module):
    """Rotary position embedding for one attention layer's queries and keys.

    forward(x: (batch, heads, T, head_dim), start: int) -> same shape, where row t is
    rotated by the angles of position start + t (start > 0 when a KV cache holds the past).
    Pair (i, i + head_dim/2) turns by position * base^(-2i/head_dim).
    """

    def __init__(self, head_dim: int, max_positions: int, base: float = 10000.0):
        super().__init__()
        if head_dim % 2:
            raise ValueError(f"rotary embeddings need an even head_dim, got {head_dim}.")
        frequencies = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
        angles = torch.arange(max_positions, dtype=torch.float64)[:, None] * frequencies
        angles = torch.cat((angles, angles), dim=-1)                  # (max_positions, head_dim)
        self.register_buffer("cos", angles.cos().float(), persistent=False)
        self.register_buffer("sin", angles.sin().float(), persistent=False)

    def forward(self, x: torch.Tensor, start: int = 0) -> torch.Tensor:
        T = x.shape[-2]
        cos = self.cos[start:start + T].to(x.dtype)
        sin = self.sin[start:start + T].to(x.dtype)
        return x * cos + rotate_half(x) * sin
