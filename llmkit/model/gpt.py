"""The GPT: embeddings, a stack of transformer blocks, a final norm and the output head.

    idx (B, T) --token + position embedding--> x (B, T, d_model)
      --n_layer x Block--> --final norm--> --lm_head--> logits (B, T, vocab_size)

With the default config choices this is GPT-2 (Radford et al. 2019) layer for layer, in the
style of nanoGPT's model.py; `llmkit.model.gpt2` loads Hugging Face's GPT-2 weights into it
and a test checks that the logits agree with `transformers.GPT2LMHeadModel`.

Initialisation follows GPT-2: every weight ~ N(0, 0.02), biases zero, and the two
projections that write into the residual stream in each block scaled by 1/sqrt(2 * n_layer),
so the stream's variance does not grow with depth.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from llmkit.model.attention import make_dropout
from llmkit.model.config import GPTConfig
from llmkit.model.embeddings import make_position_embedding
from llmkit.model.kv_cache import KVCache, StaticKVCache
from llmkit.model.layers import Block, make_norm

IGNORE_INDEX = -100  # targets equal to this (e.g. masked prompt tokens) add nothing to the loss


class GPT(nn.Module):
    """A decoder-only transformer language model. See the module docstring for the shapes."""

    def __init__(self, config: GPTConfig | None = None):
        super().__init__()
        if config is None:
            config = GPTConfig()
        if not isinstance(config, GPTConfig):
            raise ValueError(f"GPT expects a GPTConfig, got {type(config).__name__}.")
        self.config = config
        self.token_embedding = nn.Embedding(config.vocab_size, config.d_model)
        self.position_embedding = make_position_embedding(config)  # None for RoPE
        self.dropout = make_dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config, i) for i in range(config.n_layer))
        self.norm_final = make_norm(config)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        if config.tie_weights:
            # One matrix both reads tokens in and scores them out (Press & Wolf 2017).
            self.lm_head.weight = self.token_embedding.weight
        self.apply(self._init_weights)
        for name, param in self.named_parameters():
            if name.endswith("proj.weight"):  # attn.proj and mlp.proj write into the residual
                nn.init.normal_(param, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    # --- the forward pass -------------------------------------------------------------

    def check_input(self, idx: torch.Tensor, kv_cache: KVCache | None = None) -> None:
        """Raise a ValueError unless idx is a (batch, T) tensor of valid token ids that fits."""
        if not isinstance(idx, torch.Tensor) or idx.dim() != 2:
            shape = tuple(idx.shape) if isinstance(idx, torch.Tensor) else type(idx).__name__
            raise ValueError(
                f"idx must be a (batch, seq) tensor of token ids, got {shape}; "
                "for one sequence use idx[None] or torch.tensor([ids])."
            )
        if idx.dtype.is_floating_point or idx.dtype == torch.bool or idx.dtype.is_complex:
            raise ValueError(f"idx must hold integer token ids (int64), got dtype {idx.dtype}.")
        T = idx.shape[1]
        if T == 0:
            raise ValueError("idx is empty (0 tokens); give the model at least one token.")
        limit = self.config.context_length
        if kv_cache is None and T > limit:
            raise ValueError(
                f"idx has {T} tokens but the model's context_length is {limit}; crop it to the "
                f"last {limit} tokens first: idx[:, -{limit}:]."
            )
        if kv_cache is not None:
            kv_cache.check_room(T)
        # An id out of range would crash inside the embedding (on a GPU as an opaque device
        # assert), so look first. On a GPU the look is a read-back that stalls the pipeline,
        # so a training step there skips it (the trainer's data was checked when encoded);
        # torch.compile cannot trace it at all.
        on_gpu_training = self.training and idx.device.type != "cpu"
        if not on_gpu_training and not torch.compiler.is_compiling():
            low, high = torch.stack(torch.aminmax(idx)).tolist()
            if low < 0 or high >= self.config.vocab_size:
                raise ValueError(
                    f"token ids must be in 0..{self.config.vocab_size - 1} (vocab_size="
                    f"{self.config.vocab_size}), got ids from {low} to {high}; "
                    "was the text encoded with a different tokenizer?"
                )

    def embed(self, idx: torch.Tensor, start: int | torch.Tensor = 0) -> torch.Tensor:
        """idx: (B, T) int64 -> token plus position embeddings (B, T, d_model).

        `start` is the position of idx's first token (non-zero after a KV cache's tokens),
        or a (B, T) int64 tensor of every token's position (left-padded rows).
        """
        x = self.token_embedding(idx)
        if self.position_embedding is not None:
            if isinstance(start, int):
                positions = torch.arange(start, start + idx.shape[1], device=idx.device)
            else:
                positions = start
            x = x + self.position_embedding(positions)
        return x

    @staticmethod
    def attention_layout(T: int, start: int | torch.Tensor, n_keys: int,
                         n_pad: torch.Tensor | None, device=None):
        """Where T new tokens sit and what each may attend to.

        start: the cache slot of the first new token (an int, or a (1,) tensor for a
        StaticKVCache); n_keys: the key slots attention reads; n_pad: None or (B,) int64, the
        left padding of each row. Returns (start, None) when an int start and no padding
        need nothing more (plain causal attention), else positions (B, T) int64 and a mask
        (B, 1, T, n_keys) bool. A row's slot s holds position s - n_pad; a query sees the
        slots up to its own, minus the padding. A padding query sees only itself: a row
        of nothing but -inf would make its softmax NaN, and 0 * NaN leaks into real rows.
        """
        if n_pad is None and isinstance(start, int):
            return start, None
        if n_pad is None:
            n_pad = torch.zeros(1, dtype=torch.long, device=device)
        slots = start + torch.arange(T, device=device)                     # (T,)
        keys = torch.arange(n_keys, device=device)                          # (S,)
        positions = (slots[None, :] - n_pad[:, None]).clamp(min=0)          # (B, T)
        causal = keys[None, None, :] <= slots[None, :, None]                # (1, T, S)
        itself = keys[None, None, :] == slots[None, :, None]
        real = keys[None, None, :] >= n_pad[:, None, None]                  # (B, 1, S)
        return positions, (causal & (real | itself))[:, None]               # (B, 1, T, S)

    def hidden_states(self, idx: torch.Tensor, kv_cache: KVCache | None = None, *,
                      check: bool = True, n_pad: torch.Tensor | None = None) -> torch.Tensor:
        """idx: (B, T) int64 -> final-normed hidden states (B, T, d_model).

        With a kv_cache, idx holds only the new tokens, at positions cache.length onwards.
        n_pad: (B,) int64, the number of padding tokens at the start of each row (left
        padding; their outputs are meaningless, and no other token sees them); with a cache,
        the cache's n_pad. check=False skips check_input, for a caller that has already
        checked (a decoding loop feeding back the model's own tokens).
        """
        if check:
            self.check_input(idx, kv_cache)
        T = idx.shape[1]
        if kv_cache is None:
            start, n_keys = 0, T
        else:
            start, n_keys = kv_cache.start_and_keys(T)
            n_pad = kv_cache.n_pad if n_pad is None else n_pad
        positions, mask = self.attention_layout(T, start, n_keys, n_pad, idx.device)
        x = self.dropout(self.embed(idx, positions))
        for block in self.blocks:
            x = block(x, kv_cache, positions, mask)
        if kv_cache is not None:
            kv_cache.advance(T)
        return self.norm_final(x)

    def check_targets(self, targets: torch.Tensor) -> None:
        """Raise a ValueError unless every target is a token id or IGNORE_INDEX.

        cross_entropy would raise a bare IndexError (on a GPU, an opaque device assert).
        Like check_input's id check, it is skipped in GPU training and under compile, where
        the read-back would stall every step.
        """
        if (self.training and targets.device.type != "cpu") or torch.compiler.is_compiling():
            return
        if targets.dtype.is_floating_point or targets.dtype == torch.bool:
            raise ValueError(f"targets must hold integer token ids, got dtype {targets.dtype}.")
        counted = targets[targets != IGNORE_INDEX]
        if counted.numel():
            low, high = torch.stack(torch.aminmax(counted)).tolist()
            if low < 0 or high >= self.config.vocab_size:
                raise ValueError(
                    f"targets must be token ids in 0..{self.config.vocab_size - 1} or "
                    f"{IGNORE_INDEX} (skipped), got ids from {low} to {high}; were they encoded "
                    "with a different tokenizer?"
                )

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, *,
                kv_cache: KVCache | None = None,
                n_pad: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """idx: (B, T) int64, targets: (B, T) int64 or None -> logits (B, T, vocab), loss.

        loss is the mean cross-entropy over targets that are not -100 (IGNORE_INDEX), or
        None without targets. Logits are returned for every position. n_pad: left padding,
        as in hidden_states.
        """
        if targets is not None and (not isinstance(targets, torch.Tensor)
                                    or targets.shape != idx.shape):
            got = (tuple(targets.shape) if isinstance(targets, torch.Tensor)
                   else type(targets).__name__)
            raise ValueError(
                f"targets must have the shape of idx {tuple(idx.shape)}, got {got}; "
                "targets are the inputs shifted by one token (see llmkit.data.batches.get_batch)."
            )
        if targets is not None:
            self.check_targets(targets)
        logits = self.lm_head(self.hidden_states(idx, kv_cache, n_pad=n_pad))
        if targets is None:
            return logits, None
        loss = F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.reshape(-1),
                               ignore_index=IGNORE_INDEX)
        return logits, loss

    def next_token_logits(self, idx: torch.Tensor, kv_cache: KVCache | None = None, *,
                          check: bool = True, n_pad: torch.Tensor | None = None) -> torch.Tensor:
        """idx: (B, T) int64 -> logits for the token after the last one, (B, vocab).

        Runs the head on the last position only, which is what generation needs.
        check=False skips the input checks; n_pad: left padding (see hidden_states).
        """
        return self.lm_head(self.hidden_states(idx, kv_cache, check=check, n_pad=n_pad)[:, -1])

    def new_kv_cache(self, batch_size: int, max_len: int | None = None, *,
                     static: bool = False) -> KVCache:
        """An empty KVCache for this model; max_len is at most (and by default) context_length.

        static=True gives a StaticKVCache, allocated now on the model's device and dtype.
        """
        config = self.config
        max_len = config.context_length if max_len is None else max_len
        if not 1 <= max_len <= config.context_length:
            raise ValueError(
                f"max_len must be between 1 and context_length={config.context_length}, "
                f"got {max_len}."
            )
        shapes = (config.n_layer, batch_size, config.kv_heads, config.head_dim, max_len)
        if static:
            weight = self.token_embedding.weight
            return StaticKVCache(*shapes, device=weight.device, dtype=weight.dtype)
        return KVCache(*shapes)

    def attention_maps(self, idx: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """idx: (B, T) int64 -> one softmax weight tensor (B, n_head, T, T) per layer.

        Computed in eval mode (no dropout) by the readable attention path; the tuple is the
        layout bertviz's head_view and model_view take (with B = 1).
        """
        from llmkit.evaluate import eval_mode   # here: llmkit.evaluate imports llmkit.model

        with eval_mode(self):
            self.check_input(idx)
            x = self.embed(idx)
            maps = []
            for block in self.blocks:
                maps.append(block.attention_weights(x))
                x = block(x)
            return tuple(maps)

    # --- counting -----------------------------------------------------------------------

    def num_params(self, include_embeddings: bool = True) -> int:
        """Number of parameters (a tied matrix counts once).

        include_embeddings=False leaves out the lookup-only tables: the learned position
        embedding, and the token embedding when it is not tied to the output head (when
        tied it is also the head's weight, a real matmul, so it stays, as in nanoGPT).
        """
        total = sum(p.numel() for p in self.parameters())
        if not include_embeddings:
            if isinstance(self.position_embedding, nn.Embedding):
                total -= self.position_embedding.weight.numel()
            if not self.config.tie_weights:
                total -= self.token_embedding.weight.numel()
        return total

    def flops_per_token(self, context_length: int | None = None) -> int:
        """Training FLOPs per token (forward + backward) at a given context length.

        6 * N + 12 * n_layer * T * d_model, with N = num_params(include_embeddings=False):
        each weight does a multiply and an add (2 FLOPs) per token forward and twice that
        backward (6N); attention's q.k and weights.v add 2 * 2 * T * d_model per layer
        forward, x3 with backward. The estimate of the PaLM paper (appendix B) and of
        nanoGPT's estimate_mfu. T defaults to config.context_length. With a mixture of
        experts, N counts only the experts_per_token experts a token goes through.
        """
        T = self.config.context_length if context_length is None else context_length
        if T < 1:
            raise ValueError(f"context_length must be positive, got {T}.")
        active = self.num_params(include_embeddings=False)
        if self.config.mlp == "moe":
            per_expert = sum(p.numel() for p in self.blocks[0].mlp.experts[0].parameters())
            idle = self.config.n_experts - self.config.experts_per_token
            active -= self.config.n_layer * idle * per_expert
        return 6 * active + 12 * self.config.n_layer * T * self.config.d_model

    # --- checkpoints (the protocol of llmkit.checkpoint) ---------------------------------

    def checkpoint_config(self) -> dict:
        """The architecture as a JSON-able dict: `GPT.from_checkpoint_config` rebuilds it."""
        return self.config.to_dict()

    @classmethod
    def from_checkpoint_config(cls, values: dict) -> GPT:
        """A GPT of the architecture `checkpoint_config()` described, with fresh weights."""
        return cls(GPTConfig.from_dict(values))
