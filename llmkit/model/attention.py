"""Causal multi-head self-attention: the readable version and the fast one, side by side.

Each position t builds a query, a key and a value; its output is the average of the values
of positions 0..t, weighted by softmax(q . k / sqrt(head_dim)). Several heads do this in
parallel on slices of the width, and a final Linear mixes them.

Two paths compute exactly this (a test holds them together):

- `masked_attention` writes it out (scores, causal mask, softmax, dropout, weighted sum) and
  can hand back the attention weights, for lesson 05 and the attention widgets;
- `torch.nn.functional.scaled_dot_product_attention` (SDPA) does the same in one fused
  kernel (FlashAttention on GPUs) and never materialises the T x T weights.

The queries, keys and values come out of one fused Linear (GPT-2's `c_attn`), which is one
matmul instead of three. With a KV cache the new tokens' keys and values are appended to
those of the tokens before them, so decoding one token costs one row of attention.
Without padding and with the growing `KVCache` the mask is the plain causal one; a batch of
left-padded prompts, or the fixed-size `StaticKVCache`, hands in an explicit (batch, 1, T, S)
mask and per-row positions instead (built by `GPT.attention_layout`).
Grouped-query attention (n_kv_head < n_head) shares each key/value head among a group of
query heads, which shrinks the cache.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from llmkit.model.config import GPTConfig
from llmkit.model.embeddings import RotaryEmbedding, rotate_half


def make_dropout(p: float) -> nn.Module:
    """nn.Dropout(p), or nn.Identity() when p is 0.

    Both do nothing in eval mode, but Identity does it faster: decoding a small model one
    token at a time calls a dozen dropout layers per token, and with p = 0 (the default,
    and GPT-2's weights as imported) they would be pure overhead in training too.
    """
    return nn.Dropout(p) if p > 0 else nn.Identity()


def causal_mask(n_queries: int, n_keys: int, device=None) -> torch.Tensor:
    """(n_queries, n_keys) bool, True where a query may look.

    The queries are the last n_queries of the n_keys positions, so query i sits at position
    n_keys - n_queries + i and sees every key up to and including that position.
    """
    mask = torch.ones(n_queries, n_keys, dtype=torch.bool, device=device)
    return mask.tril(diagonal=n_keys - n_queries)


def masked_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor,
                     dropout: float = 0.0, training: bool = False,
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Scaled dot-product attention, written out.

    q: (batch, heads, T, head_dim), k and v: (batch, heads, S, head_dim), mask: (T, S) bool
    (or (batch, 1, T, S), one mask per row)
    -> output (batch, heads, T, head_dim) and weights (batch, heads, T, S) (before dropout;
    each row sums to 1). Matches torch's scaled_dot_product_attention with the same mask.
    """
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])      # (B, H, T, S)
    scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    output = F.dropout(weights, p=dropout, training=training) @ v
    return output, weights


class CausalSelfAttention(nn.Module):
    """One attention layer. forward(x: (batch, T, d_model)) -> (batch, T, d_model).

    Matches GPT-2's attention (Hugging Face `GPT2Attention`) when the config is GPT-2's.
    `layer_index` says which slot of a KV cache this layer reads and writes.
    """

    def __init__(self, config: GPTConfig, layer_index: int = 0):
        super().__init__()
        self.layer_index = layer_index
        self.n_head, self.n_kv_head, self.head_dim = config.n_head, config.kv_heads, config.head_dim
        self.qkv = nn.Linear(config.d_model, (self.n_head + 2 * self.n_kv_head) * self.head_dim,
                             bias=config.bias)
        self.proj = nn.Linear(config.d_model, config.d_model, bias=config.bias)
        self.dropout = config.dropout
        self.resid_dropout = make_dropout(config.dropout)
        self.use_sdpa = config.attention == "sdpa"
        self.rotary = (RotaryEmbedding(self.head_dim, config.context_length, config.rope_base)
                       if config.position == "rope" else None)

    def project(self, x: torch.Tensor, start: int | torch.Tensor = 0):
        """x: (B, T, d_model) -> q: (B, n_head, T, head_dim), k, v: (B, n_kv_head, T, head_dim).

        `start` is the position of x's first token (the KV cache length), or a (B, T) int64
        tensor with the position of every token (left-padded rows); used by RoPE.
        """
        B, T, _ = x.shape
        # The fused output is n_head query heads, then n_kv_head key heads, then as many value
        # heads: view it as heads, put heads before positions, and cut it in three (views only).
        heads = self.qkv(x).view(B, T, -1, self.head_dim).transpose(1, 2)
        q, k, v = heads.split([self.n_head, self.n_kv_head, self.n_kv_head], dim=1)
        if self.rotary is not None and isinstance(start, int):
            q, k = self.rotary(q, start), self.rotary(k, start)
        elif self.rotary is not None:
            # One angle per row and token: the rotation tables looked up at each position.
            cos = self.rotary.cos[start][:, None].to(q.dtype)            # (B, 1, T, head_dim)
            sin = self.rotary.sin[start][:, None].to(q.dtype)
            q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
        return q, k, v

    def expand_kv(self, t: torch.Tensor) -> torch.Tensor:
        """(B, n_kv_head, S, hd) -> (B, n_head, S, hd): each key/value head serves its group."""
        if self.n_kv_head == self.n_head:
            return t
        return t.repeat_interleave(self.n_head // self.n_kv_head, dim=1)

    def forward(self, x: torch.Tensor, kv_cache=None, positions: int | torch.Tensor | None = None,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B, T, d_model) -> (B, T, d_model).

        positions: the position of x's first token (an int; None: the cache's length, or 0),
        or (B, T) int64, one per token. mask: None (causal) or (B, 1, T, S) bool, True where a
        query may look, S the key slots the cache returns. GPT.attention_layout makes both.
        """
        B, T, _ = x.shape
        if positions is None:
            positions = 0 if kv_cache is None else kv_cache.length
        start = positions       # read only without a mask, where it is an int
        q, k, v = self.project(x, positions)
        if kv_cache is not None:
            k, v = kv_cache.update(self.layer_index, k, v)    # now (B, n_kv_head, S, hd)
        k, v = self.expand_kv(k), self.expand_kv(v)
        dropout = self.dropout if self.training else 0.0
        if mask is not None:
            if self.use_sdpa and not self.sdpa_is_slow(x):
                y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)
            else:
                y, _ = masked_attention(q, k, v, mask, dropout, self.training)
        elif not self.use_sdpa or self.sdpa_is_slow(x):
            mask = causal_mask(T, start + T, x.device)
            y, _ = masked_attention(q, k, v, mask, dropout, self.training)
        elif start == 0:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=True)
        elif T == 1:
            # One new token may see every cached position: no mask at all.
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout)
        else:
            # SDPA's is_causal aligns the mask top-left, which is wrong once a cache
            # holds earlier positions; pass the bottom-right aligned mask explicitly.
            mask = causal_mask(T, start + T, x.device)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)
        y = y.transpose(1, 2).reshape(B, T, self.n_head * self.head_dim)  # heads side by side
        return self.resid_dropout(self.proj(y))

    def sdpa_is_slow(self, x: torch.Tensor) -> bool:
        """True when training on a CPU under bfloat16 autocast.

        There PyTorch's fused CPU attention has a slow backward pass (measured at about 5x the
        written-out path's time on the baby-GPT recipe), so the readable path is the fast one.
        """
        return (self.training and x.device.type == "cpu" and torch.is_autocast_enabled("cpu")
                and torch.get_autocast_dtype("cpu") == torch.bfloat16)

    def attention_weights(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, T, d_model) -> softmax weights (B, n_head, T, T), by the readable path."""
        T = x.shape[1]
        q, k, v = self.project(x)
        mask = causal_mask(T, T, x.device)
        _, weights = masked_attention(q, self.expand_kv(k), self.expand_kv(v), mask)
        return weights
