"""The shape of a GPT, as one dataclass.

`GPTConfig()` with no arguments is a model that trains in minutes on a laptop CPU (the
"baby GPT" of lessons 06-07: 4 layers, 4 heads, 128 wide). GPT-2 small is
`GPTConfig(vocab_size=50257, context_length=1024, n_layer=12, n_head=12, d_model=768)`.

The fields after `tie_weights` choose the variants of lesson 12. Each is swapped in at one
place in the model code (`make_position_embedding`, `make_norm`, `make_mlp`, and the
attention layer for RoPE and grouped-query attention), so trying one is a one-word change:

- `position`: "learned" (GPT-2), "sinusoidal" (the original Transformer) or "rope"
  (rotary embeddings, LLaMA);
- `norm`: "layernorm" (GPT-2) or "rmsnorm" (LLaMA);
- `mlp`: "gelu" (GPT-2's 4x-wide MLP), "swiglu" (LLaMA's gated MLP) or "moe" (a mixture
  of `n_experts` GELU MLPs, each token routed to `experts_per_token` of them, as Mixtral);
- `n_kv_head`: fewer key/value heads than query heads is grouped-query attention;
- `attention`: "sdpa" runs PyTorch's fused kernel, "manual" the masked softmax written out.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

POSITIONS = ("learned", "sinusoidal", "rope")
NORMS = ("layernorm", "rmsnorm")
MLPS = ("gelu", "swiglu", "moe")
ATTENTIONS = ("sdpa", "manual")


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _divisors(n: int) -> list[int]:
    return [k for k in range(1, n + 1) if n % k == 0]


@dataclass
class GPTConfig:
    """Hyperparameters of a GPT. Defaults: a ~0.9M-parameter model for a laptop CPU.

    vocab_size: number of token ids the embedding accepts (ids are 0 .. vocab_size - 1).
    context_length: the longest sequence the model reads at once (T <= context_length).
    n_layer, n_head, d_model: depth, attention heads per layer, residual width;
        d_model must be divisible by n_head (head_dim = d_model // n_head).
    dropout: probability used after attention weights, attention output and MLP output.
    bias: whether Linear layers and LayerNorms have a bias (GPT-2: True).
    tie_weights: share the token embedding matrix with the output head (GPT-2: True).
    layer_norm_eps: the epsilon inside every norm (GPT-2: 1e-5).
    mlp_hidden: width of the MLP's hidden layer; None means 4 * d_model.
    position, norm, mlp, n_kv_head, rope_base, n_experts, experts_per_token: the variants
        (see the module docstring); n_kv_head None means one key/value head per query head
        (plain multi-head attention); the expert counts are read only when mlp="moe".
    attention: "sdpa" (fast, fused) or "manual" (readable); both compute the same thing.
    """

    vocab_size: int = 512
    context_length: int = 128
    n_layer: int = 4
    n_head: int = 4
    d_model: int = 128
    dropout: float = 0.0
    bias: bool = True
    tie_weights: bool = True
    layer_norm_eps: float = 1e-5
    mlp_hidden: int | None = None
    position: str = "learned"
    norm: str = "layernorm"
    mlp: str = "gelu"
    n_kv_head: int | None = None
    rope_base: float = 10000.0
    n_experts: int = 4
    experts_per_token: int = 2
    attention: str = "sdpa"

    def __post_init__(self):
        for name in ("vocab_size", "context_length", "n_layer", "n_head", "d_model"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"GPTConfig.{name} must be a positive integer, got {value!r}.")
        if self.d_model % self.n_head != 0:
            raise ValueError(
                f"d_model ({self.d_model}) must be divisible by n_head ({self.n_head}) so that "
                f"every head gets the same width. Valid head counts for d_model={self.d_model}: "
                f"{_divisors(self.d_model)}; or change d_model to a multiple of {self.n_head}."
            )
        for name in ("dropout", "layer_norm_eps", "rope_base"):
            value = getattr(self, name)
            if not _is_number(value) or not math.isfinite(value):
                raise ValueError(f"GPTConfig.{name} must be a finite number, got {value!r}.")
        for name in ("bias", "tie_weights"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"GPTConfig.{name} must be True or False, got "
                                 f"{getattr(self, name)!r}.")
        for name in ("mlp_hidden", "n_kv_head", "n_experts", "experts_per_token"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)
                                      or value < 1):
                raise ValueError(f"GPTConfig.{name} must be a positive integer"
                                 f"{' or None' if name in ('mlp_hidden', 'n_kv_head') else ''}, "
                                 f"got {value!r}.")
        if self.n_experts is None or self.experts_per_token is None:
            raise ValueError("GPTConfig.n_experts and experts_per_token must be positive integers.")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"GPTConfig.dropout must be in [0, 1), got {self.dropout}.")
        if self.layer_norm_eps <= 0 or self.rope_base <= 0:
            raise ValueError(f"GPTConfig.layer_norm_eps and rope_base must be positive, got "
                             f"{self.layer_norm_eps} and {self.rope_base}.")
        for name, choices in (("position", POSITIONS), ("norm", NORMS), ("mlp", MLPS),
                              ("attention", ATTENTIONS)):
            if getattr(self, name) not in choices:
                raise ValueError(
                    f"GPTConfig.{name} must be one of {choices}, got {getattr(self, name)!r}."
                )
        if self.n_kv_head is not None and (self.n_kv_head < 1 or self.n_head % self.n_kv_head):
            raise ValueError(
                f"n_kv_head ({self.n_kv_head}) must divide n_head ({self.n_head}): each key/value "
                f"head serves a group of query heads. Valid values: {_divisors(self.n_head)}."
            )
        if self.mlp == "moe" and not 1 <= self.experts_per_token <= self.n_experts:
            raise ValueError(
                "a mixture of experts sends each token to experts_per_token of its n_experts "
                f"experts; need 1 <= experts_per_token ({self.experts_per_token}) <= n_experts "
                f"({self.n_experts})."
            )
        if self.position == "rope" and self.head_dim % 2:
            raise ValueError(
                f"rotary embeddings rotate pairs of channels, so head_dim (d_model // n_head = "
                f"{self.head_dim}) must be even; pick d_model and n_head accordingly."
            )
        if self.position == "sinusoidal" and self.d_model % 2:
            raise ValueError(
                f"sinusoidal positions pair a sine with a cosine, so d_model must be even, "
                f"got {self.d_model}."
            )

    @property
    def head_dim(self) -> int:
        """Width of one attention head: d_model // n_head."""
        return self.d_model // self.n_head

    @property
    def kv_heads(self) -> int:
        """Number of key/value heads (n_head unless grouped-query attention is on)."""
        return self.n_kv_head if self.n_kv_head is not None else self.n_head

    @property
    def hidden_width(self) -> int:
        """Width of the MLP's hidden layer: mlp_hidden, or 4 * d_model by default."""
        return self.mlp_hidden if self.mlp_hidden is not None else 4 * self.d_model

    def to_dict(self) -> dict:
        """The fields as a plain, JSON-able dict (for checkpoints)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> GPTConfig:
        """Rebuild a config from `to_dict()`'s output; unknown keys raise a ValueError."""
        if not isinstance(values, dict):
            raise ValueError(f"a GPTConfig is stored as a dict, got {type(values).__name__}.")
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(
                f"unknown GPTConfig field(s) {unknown}; expected a subset of {sorted(known)}. "
                "Was this dict saved by a different version of llmkit?"
            )
        return cls(**values)
