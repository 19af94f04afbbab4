"""The KV cache: remember every layer's keys and values so decoding doesn't redo the past.

Without a cache, generating token n+1 runs the model over all n tokens again, although the
keys and values of tokens 1..n have not changed (attention is causal, so later tokens
never alter earlier ones). The cache keeps them: one preallocated tensor of keys and one of
values per layer, each (batch, kv_heads, max_len, head_dim), and a counter of how many
positions are filled. Each step then feeds only the new token, at position `length`.

The cache cannot slide: with learned positions, dropping the oldest token would shift the
position of every token after it, so their keys would be stale. When it is full,
`llmkit.generate` starts again from the last context_length tokens.
"""

from __future__ import annotations

import torch


class KVCache:
    """Keys and values of the positions seen so far, for every layer of one model.

    n_layer, batch_size, n_kv_head, head_dim, max_len: the shapes; the tensors are
    allocated on the first update, with the device and dtype of the keys they receive.
    `length` is the number of positions stored; the model calls `update` once per layer
    during a forward pass and `advance` once at its end.
    """

    def __init__(self, n_layer: int, batch_size: int, n_kv_head: int, head_dim: int, max_len: int):
        if min(n_layer, batch_size, n_kv_head, head_dim, max_len) < 1:
            raise ValueError(
                f"every KVCache size must be positive, got n_layer={n_layer}, batch_size="
                f"{batch_size}, n_kv_head={n_kv_head}, head_dim={head_dim}, max_len={max_len}."
            )
        self.batch_size, self.n_kv_head = batch_size, n_kv_head
        self.head_dim, self.max_len = head_dim, max_len
        self.keys: list[torch.Tensor | None] = [None] * n_layer
        self.values: list[torch.Tensor | None] = [None] * n_layer
        self.length = 0

    @property
    def remaining(self) -> int:
        """How many more positions fit."""
        return self.max_len - self.length

    def check_room(self, n_new: int) -> None:
        """Raise a ValueError unless n_new more positions fit."""
        if n_new > self.remaining:
            raise ValueError(
                f"the KV cache holds {self.length} of {self.max_len} positions and cannot take "
                f"{n_new} more. Call reset() and feed the last {self.max_len} tokens again "
                "(llmkit.generate does this for you)."
            )

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor):
        """Store the new positions of one layer; return all its keys and values so far.

        k, v: (batch, n_kv_head, T_new, head_dim) -> (batch, n_kv_head, length + T_new, head_dim)
        each (views into the cache, no copy).
        """
        expected = (self.batch_size, self.n_kv_head, k.shape[2], self.head_dim)
        if tuple(k.shape) != expected or tuple(v.shape) != expected:
            raise ValueError(
                f"KV cache layer {layer} expects keys and values shaped (batch={self.batch_size}, "
                f"heads={self.n_kv_head}, T, head_dim={self.head_dim}), got {tuple(k.shape)} and "
                f"{tuple(v.shape)}; make the cache with model.new_kv_cache(batch_size)."
            )
        self.check_room(k.shape[2])
        if self.keys[layer] is None:
            shape = (self.batch_size, self.n_kv_head, self.max_len, self.head_dim)
            self.keys[layer] = k.new_zeros(shape)
            self.values[layer] = v.new_zeros(shape)
        T_new = k.shape[2]
        self.keys[layer].narrow(2, self.length, T_new).copy_(k)
        self.values[layer].narrow(2, self.length, T_new).copy_(v)
        end = self.length + T_new
        return self.keys[layer].narrow(2, 0, end), self.values[layer].narrow(2, 0, end)

    def advance(self, n_new: int) -> None:
        """Mark n_new more positions as filled (after every layer has stored them)."""
        self.check_room(n_new)
        self.length += n_new

    def reset(self) -> None:
        """Forget every position (the tensors are kept and overwritten)."""
        self.length = 0
