"""The KV cache: remember every layer's keys and values so decoding doesn't redo the past.

Without a cache, generating token n+1 runs the model over all n tokens again, although the
keys and values of tokens 1..n have not changed (attention is causal, so later tokens
never alter earlier ones). The cache keeps them: one preallocated tensor of keys and one of
values per layer, each (batch, kv_heads, max_len, head_dim), and a counter of how many
positions are filled. Each step then feeds only the new token, at position `length`.

Two caches share that layout:

- `KVCache`, the readable one: attention reads the filled slots only, so the keys it sees
  grow by one each step;
- `StaticKVCache`, the fast one: attention always reads all max_len slots, and a mask hides
  the empty ones. Every decoding step then has the same shapes, so `torch.compile` compiles
  it once (and on a GPU replays it as a CUDA graph). Its fill counter is a tensor for the
  same reason: a Python int that changes every step would make the compiler start again.

Prompts of different lengths share a batch by left padding: row b's first `n_pad[b]` slots
hold padding, which no query may attend to, and its first real token is at position 0.

The cache cannot slide: with learned positions, dropping the oldest token would shift the
position of every token after it, so their keys would be stale. When it is full,
`llmkit.generate` starts again from the last tokens (see its `past_context` option).
"""

from __future__ import annotations

import torch


class KVCache:
    """Keys and values of the positions seen so far, for every layer of one model.

    n_layer, batch_size, n_kv_head, head_dim, max_len: the shapes; the tensors are
    allocated on the first update, with the device and dtype of the keys they receive.
    `length` is the number of positions stored; the model calls `update` once per layer
    during a forward pass and `advance` once at its end. n_pad: None, or (batch,) int64, the
    left padding of each row (see the module docstring).
    """

    def __init__(self, n_layer: int, batch_size: int, n_kv_head: int, head_dim: int, max_len: int,
                 n_pad: torch.Tensor | None = None):
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
        self.n_pad = n_pad

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

    def check_shapes(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> None:
        """Raise a ValueError unless k and v are (batch, n_kv_head, T, head_dim) for this cache."""
        expected = (self.batch_size, self.n_kv_head, k.shape[2], self.head_dim)
        if tuple(k.shape) != expected or tuple(v.shape) != expected:
            raise ValueError(
                f"KV cache layer {layer} expects keys and values shaped (batch={self.batch_size}, "
                f"heads={self.n_kv_head}, T, head_dim={self.head_dim}), got {tuple(k.shape)} and "
                f"{tuple(v.shape)}; make the cache with model.new_kv_cache(batch_size)."
            )

    def start_and_keys(self, n_new: int) -> tuple[int, int]:
        """(slot of the first new position, number of key slots attention reads)."""
        return self.length, self.length + n_new

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor):
        """Store the new positions of one layer; return all its keys and values so far.

        k, v: (batch, n_kv_head, T_new, head_dim) -> (batch, n_kv_head, length + T_new, head_dim)
        each (views into the cache, no copy).
        """
        self.check_shapes(layer, k, v)
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

    def reset(self, n_pad: torch.Tensor | None = None) -> None:
        """Forget every position (the tensors are kept and overwritten); n_pad as in __init__."""
        self.length = 0
        self.n_pad = n_pad


class StaticKVCache(KVCache):
    """A KVCache whose every read has the same shape: all max_len slots, behind a mask.

    Allocated up front on `device` in `dtype`. The fill counter `slot` is a (1,) int64 tensor
    on the device and `n_pad` a (batch,) int64 tensor (zeros: no padding), both updated in
    place, so a compiled step reads them without being compiled again. `length` reads the
    counter back to the host (a synchronisation on a GPU): decoding loops count for
    themselves instead.
    """

    def __init__(self, n_layer: int, batch_size: int, n_kv_head: int, head_dim: int, max_len: int,
                 device=None, dtype: torch.dtype = torch.float32):
        self.slot = torch.zeros(1, dtype=torch.long, device=device)
        super().__init__(n_layer, batch_size, n_kv_head, head_dim, max_len)
        shape = (batch_size, n_kv_head, max_len, head_dim)
        self.keys = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(n_layer)]
        self.values = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(n_layer)]
        self.n_pad = torch.zeros(batch_size, dtype=torch.long, device=device)

    @property
    def length(self) -> int:
        return int(self.slot.item())

    @length.setter
    def length(self, value: int) -> None:
        self.slot.fill_(value)

    def tensors(self) -> list[torch.Tensor]:
        """Every tensor the cache writes in place (for torch.compile's static addresses)."""
        return [*self.keys, *self.values, self.slot, self.n_pad]

    def start_and_keys(self, n_new: int) -> tuple[torch.Tensor, int]:
        return self.slot, self.max_len

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor):
        """Write the new positions at slots slot, slot + 1, ...; return every slot's keys and
        values, (batch, n_kv_head, max_len, head_dim) each. The caller checked the room."""
        slots = self.slot + torch.arange(k.shape[2], device=k.device)
        self.keys[layer].index_copy_(2, slots, k.to(self.keys[layer].dtype))
        self.values[layer].index_copy_(2, slots, v.to(self.values[layer].dtype))
        return self.keys[layer], self.values[layer]

    def advance(self, n_new: int) -> None:
        self.slot.add_(n_new)

    def reset(self, n_pad: torch.Tensor | None = None) -> None:
        """Forget every position; n_pad: (batch,) int64 left padding of the next prompt, or None."""
        self.slot.zero_()
        if n_pad is None:
            self.n_pad.zero_()
        else:
            self.n_pad.copy_(n_pad)
