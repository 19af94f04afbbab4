"""LoRA: fine-tune a few small matrices instead of the whole model (lesson 09).

Hu et al. 2021: a fine-tuned weight matrix W (out, in) changes by an update of low rank, so
learn it as a product. The layer computes

    y = x W^T + b + (alpha / rank) * dropout(x) A^T B^T        A: (rank, in), B: (out, rank)

with W and b frozen. B starts at zero, so the model starts exactly as pretrained, and only
rank * (in + out) numbers per layer learn (an AdamW state of twice that), against in * out.
After training, `merge` folds the update into W (W += (alpha / rank) * B A): the merged
model is a plain GPT again, as fast as the original; `unmerge` takes it back out.

- `LoRALinear`: one wrapped nn.Linear (with or without bias).
- `LoRAModel`: a GPT whose layers named in `LoRAConfig.targets` ("attn.qkv", "attn.proj",
  "mlp.fc", "mlp.proj", "lm_head") are wrapped; everything else is frozen. Tokens added
  for fine-tuning (chat markers) start as copies of the mean embedding, so
  `LoRAConfig.trainable_token_ids` lets those rows of the embedding learn too (peft calls
  this trainable_token_indices).
- Adapters are saved alone (`save_adapters`: adapter.safetensors with A and B, and
  adapter_config.json), loaded onto a base GPT of the same shape (`load_adapters`), or
  exported merged as a plain GPT checkpoint (`merged_gpt`).

The tests check the forward pass, before and after merging, against Hugging Face's `peft`
applied to the same weights.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from llmkit.model import GPT, GPTConfig

ADAPTER_FILE = "adapter.safetensors"
ADAPTER_CONFIG_FILE = "adapter_config.json"


@dataclass
class LoRAConfig:
    """rank: the inner width of the update (1 <= rank <= min(in, out) of every target);
    alpha: the update is scaled by alpha / rank, so changing the rank keeps its size;
    dropout: on the LoRA path's input during training; targets: module names, matched as
    the end of a name ("attn.qkv" matches blocks.0.attn.qkv, blocks.1.attn.qkv, ...);
    trainable_token_ids: embedding rows that learn too (e.g. added special tokens).
    """

    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    targets: tuple[str, ...] = ("attn.qkv", "attn.proj", "mlp.fc", "mlp.proj")
    trainable_token_ids: tuple[int, ...] = ()

    def __post_init__(self):
        if not isinstance(self.rank, int) or isinstance(self.rank, bool) or self.rank < 1:
            raise ValueError(
                f"LoRA rank must be a positive int (the width of the low-rank update, e.g. 8), "
                f"got {self.rank!r}."
            )
        if not (isinstance(self.alpha, (int, float)) and math.isfinite(self.alpha)
                and self.alpha > 0):
            raise ValueError(f"LoRA alpha must be a positive number (often 2 * rank), "
                             f"got {self.alpha!r}.")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"LoRA dropout must be in [0, 1), got {self.dropout!r}.")
        if isinstance(self.targets, str):
            self.targets = (self.targets,)
        self.targets = tuple(self.targets)
        if not self.targets or not all(isinstance(t, str) and t for t in self.targets):
            raise ValueError(f"targets must be module names such as 'attn.qkv', got {self.targets!r}.")
        self.trainable_token_ids = tuple(int(i) for i in self.trainable_token_ids)

    def to_dict(self) -> dict:
        """The fields as JSON values (lists, not tuples, so a saved copy compares equal)."""
        return {k: list(v) if isinstance(v, tuple) else v
                for k, v in dataclasses.asdict(self).items()}

    @property
    def scaling(self) -> float:
        """alpha / rank, the factor on B A."""
        return self.alpha / self.rank


# --- one layer ------------------------------------------------------------------------------


class LoRALinear(nn.Module):
    """A frozen nn.Linear plus a trainable low-rank update: x (..., in) -> (..., out).

    A is initialised like nn.Linear's weight (Kaiming uniform) and B at zero, as in the
    LoRA paper's code and peft, so the layer starts equal to the base layer.
    """

    def __init__(self, base: nn.Linear, rank: int, alpha: float, dropout: float = 0.0):
        super().__init__()
        if not isinstance(base, nn.Linear):
            raise ValueError(f"LoRALinear wraps an nn.Linear, got {type(base).__name__}.")
        out_features, in_features = base.weight.shape
        if not isinstance(rank, int) or not 1 <= rank <= min(in_features, out_features):
            raise ValueError(
                f"LoRA rank must be between 1 and min(in, out) = {min(in_features, out_features)} "
                f"for a {in_features} -> {out_features} layer, got {rank!r}; a larger rank is "
                "no longer low-rank (and fine-tuning the layer itself is cheaper)."
            )
        self.base = base
        base.requires_grad_(False)
        self.rank, self.scaling = rank, alpha / rank
        kwargs = {"device": base.weight.device, "dtype": base.weight.dtype}
        self.lora_A = nn.Parameter(torch.empty(rank, in_features, **kwargs))
        self.lora_B = nn.Parameter(torch.zeros(out_features, rank, **kwargs))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.merged = False

    def delta_weight(self) -> torch.Tensor:
        """The update (alpha / rank) * B A, shaped like the base weight (out, in)."""
        return (self.lora_B @ self.lora_A) * self.scaling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        if self.merged:
            return y
        return y + (self.dropout(x) @ self.lora_A.T @ self.lora_B.T) * self.scaling

    @torch.no_grad()
    def merge(self) -> None:
        """Fold the update into the base weight (equal up to float rounding)."""
        if not self.merged:
            self.base.weight += self.delta_weight()
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """Take the update back out of the base weight."""
        if self.merged:
            self.base.weight -= self.delta_weight()
            self.merged = False

    def extra_repr(self) -> str:
        return f"rank={self.rank}, scaling={self.scaling:g}, merged={self.merged}"


class TrainableRows(nn.Module):
    """A frozen (vocab, d) matrix of which only the rows `token_ids` learn.

    Wraps a token embedding (forward: ids -> vectors) or a bias-free output head
    (forward: hidden -> logits); `tied_to` makes a head read the embedding's matrix.
    """

    def __init__(self, module: nn.Module, token_ids, tied_to: TrainableRows | None = None):
        super().__init__()
        self.is_embedding = isinstance(module, nn.Embedding)
        self.tied_to = [tied_to] if tied_to is not None else []   # a list: not a submodule
        if tied_to is None:
            module.requires_grad_(False)
            self.frozen = module
            self.register_buffer("token_ids", torch.tensor(token_ids, dtype=torch.long,
                                                           device=module.weight.device))
            self.rows = nn.Parameter(module.weight.detach()[self.token_ids].clone())

    @property
    def weight(self) -> torch.Tensor:
        """The full (vocab, d) matrix with the trainable rows in place."""
        if self.tied_to:
            return self.tied_to[0].weight
        return self.frozen.weight.index_copy(0, self.token_ids, self.rows)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.is_embedding:
            return F.embedding(x, self.weight)
        return F.linear(x, self.weight)


# --- the model ------------------------------------------------------------------------------


def linear_names(model: nn.Module) -> list[str]:
    """Names of every nn.Linear in the model (what LoRA targets can match)."""
    return [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]


def matches(name: str, target: str) -> bool:
    """A target matches a module name equal to it or ending in "." + it (peft's rule)."""
    return name == target or name.endswith("." + target)


class LoRAModel(nn.Module):
    """A GPT with LoRA on the layers `lora.targets` names; only the adapters learn.

    idx (B, T) -> (logits (B, T, vocab), loss), like the GPT it wraps (the Trainer trains it
    as one); `config` is the GPT's config. The GPT passed in is changed in place (its layers
    wrapped, its parameters frozen).
    """

    def __init__(self, gpt: GPT, lora: LoRAConfig | None = None):
        super().__init__()
        if not isinstance(gpt, GPT):
            raise ValueError(f"LoRAModel wraps an llmkit GPT, got {type(gpt).__name__}.")
        lora = LoRAConfig() if lora is None else lora
        existing = linear_names(gpt)
        chosen = [name for name in existing if any(matches(name, t) for t in lora.targets)]
        unmatched = [t for t in lora.targets if not any(matches(name, t) for name in existing)]
        if unmatched:
            short = sorted({name.split(".", 2)[-1] if name.startswith("blocks.") else name
                            for name in existing})
            raise ValueError(
                f"LoRA targets {unmatched} match no linear layer of this model; its linear "
                f"layers are {short} (in every block: blocks.N.<name>)."
            )
        bad_ids = [i for i in lora.trainable_token_ids if not 0 <= i < gpt.config.vocab_size]
        if bad_ids:
            raise ValueError(f"trainable_token_ids {bad_ids} are not ids of the model "
                             f"(0..{gpt.config.vocab_size - 1}).")
        tied = gpt.lm_head.weight is gpt.token_embedding.weight
        if tied and "lm_head" in chosen:
            raise ValueError(
                "this GPT's lm_head shares its matrix with the token embedding (tie_weights), so "
                "merging an update into it would change the embedding too; leave 'lm_head' out "
                "of the targets (trainable_token_ids lets chosen rows of the shared matrix learn)."
            )
        gpt.requires_grad_(False)
        for name in chosen:
            parent_name, _, child = name.rpartition(".")
            parent = gpt.get_submodule(parent_name) if parent_name else gpt
            try:
                wrapped = LoRALinear(getattr(parent, child), lora.rank, lora.alpha, lora.dropout)
            except ValueError as error:
                raise ValueError(f"{name}: {error}") from None
            setattr(parent, child, wrapped)
        if lora.trainable_token_ids:
            embedding = TrainableRows(gpt.token_embedding, lora.trainable_token_ids)
            gpt.token_embedding = embedding
            if tied:
                gpt.lm_head = TrainableRows(gpt.lm_head, (), tied_to=embedding)
            elif isinstance(gpt.lm_head, nn.Linear):
                gpt.lm_head = TrainableRows(gpt.lm_head, lora.trainable_token_ids)
        self.gpt, self.lora = gpt, lora

    # What generation and the Trainer use, handed to the GPT.
    @property
    def config(self) -> GPTConfig:
        return self.gpt.config

    def forward(self, idx, targets=None, **kwargs):
        return self.gpt(idx, targets, **kwargs)

    def hidden_states(self, idx, kv_cache=None, **kwargs):
        return self.gpt.hidden_states(idx, kv_cache, **kwargs)

    def next_token_logits(self, idx, kv_cache=None, **kwargs):
        return self.gpt.next_token_logits(idx, kv_cache, **kwargs)

    def check_input(self, idx, kv_cache=None):
        return self.gpt.check_input(idx, kv_cache)

    def new_kv_cache(self, *args, **kwargs):
        return self.gpt.new_kv_cache(*args, **kwargs)

    def lora_layers(self) -> dict[str, LoRALinear]:
        """{module name: LoRALinear} of every wrapped layer."""
        return {name: m for name, m in self.gpt.named_modules() if isinstance(m, LoRALinear)}

    def num_trainable(self) -> int:
        """Parameters that learn: the A and B matrices (and any trainable embedding rows)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def num_params(self) -> int:
        """All parameters, frozen base included (a tied matrix counts once)."""
        return sum(p.numel() for p in self.parameters())

    def merge(self) -> None:
        """Fold every update into its base weight (forward unchanged up to float rounding)."""
        for layer in self.lora_layers().values():
            layer.merge()

    def unmerge(self) -> None:
        """Take every update back out (to train the adapters again, or save them)."""
        for layer in self.lora_layers().values():
            layer.unmerge()

    @property
    def merged(self) -> bool:
        return any(layer.merged for layer in self.lora_layers().values())

    # --- saving ---------------------------------------------------------------------------

    def adapter_state_dict(self) -> dict[str, torch.Tensor]:
        """Only what LoRA trained: {"<layer>.lora_A": ..., "<layer>.lora_B": ..., rows}."""
        return {name: p.detach() for name, p in self.gpt.named_parameters() if p.requires_grad}

    def save_adapters(self, folder) -> Path:
        """Write the adapters alone to `folder`: adapter.safetensors and adapter_config.json
        (the LoRA settings and the base GPT's config, checked when loading). Each file is
        written to a temporary name and renamed, so a crash never leaves half a file."""
        if self.merged:
            raise ValueError("the adapters are merged into the base weights; call unmerge() "
                             "before save_adapters (or save merged_gpt() as a plain GPT).")
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.contiguous().cpu() for k, v in self.adapter_state_dict().items()}
        config = {"lora": self.lora.to_dict(), "base": self.gpt.config.to_dict()}
        write_atomically(folder / ADAPTER_FILE, lambda path: save_file(tensors, str(path)))
        write_atomically(folder / ADAPTER_CONFIG_FILE, lambda path: path.write_text(
            json.dumps(config, indent=1) + "\n", encoding="utf-8"))
        return folder

    @classmethod
    def load_adapters(cls, folder, gpt: GPT) -> LoRAModel:
        """Wrap `gpt` (the base, e.g. load_checkpoint(path).model) with the adapters saved in
        `folder`. Refuses a base of another shape, naming what differs."""
        folder = Path(folder)
        for name in (ADAPTER_FILE, ADAPTER_CONFIG_FILE):
            if not (folder / name).is_file():
                raise FileNotFoundError(f"{folder / name} is missing; save adapters with "
                                        "LoRAModel.save_adapters(folder).")
        try:
            saved = json.loads((folder / ADAPTER_CONFIG_FILE).read_text(encoding="utf-8"))
            lora = LoRAConfig(**saved["lora"])
            base = saved["base"]
            tensors = load_file(str(folder / ADAPTER_FILE))
        except (ValueError, KeyError, TypeError, SafetensorError, OSError) as error:
            raise ValueError(f"{folder} holds damaged adapter files ({error}); save the "
                             "adapters again.") from error
        if not isinstance(gpt, GPT):
            raise ValueError(f"adapters load onto an llmkit GPT, got {type(gpt).__name__}.")
        mine = gpt.config.to_dict()
        differ = {k: (base.get(k), mine.get(k)) for k in sorted(set(base) | set(mine))
                  if base.get(k) != mine.get(k) and k not in ("dropout", "attention")}
        if differ:
            listed = "; ".join(f"{k}: adapters {a!r}, model {b!r}" for k, (a, b) in differ.items())
            raise ValueError(
                f"the adapters in {folder} were trained on a base GPT of another shape ({listed}); "
                "load them onto the model they were trained from."
            )
        model = cls(gpt, lora)
        expected = model.adapter_state_dict()
        if set(tensors) != set(expected) or any(
                tensors[k].shape != expected[k].shape for k in expected):
            raise ValueError(f"{folder / ADAPTER_FILE} does not hold the tensors its config "
                             "describes; save the adapters again.")
        with torch.no_grad():
            for name, param in model.gpt.named_parameters():
                if name in tensors:
                    param.copy_(tensors[name])
        return model

    def merged_gpt(self) -> GPT:
        """A plain GPT with every update folded in (a copy; this model is unchanged)."""
        gpt = copy.deepcopy(self.gpt)
        for name, module in list(gpt.named_modules()):
            parent_name, _, child = name.rpartition(".")
            parent = gpt.get_submodule(parent_name) if parent_name else gpt
            if isinstance(module, LoRALinear):
                module.merge()
                setattr(parent, child, module.base)
        if isinstance(gpt.token_embedding, TrainableRows):
            weight = gpt.token_embedding.weight.detach().clone()
            gpt.token_embedding = nn.Embedding.from_pretrained(weight, freeze=False)
            if isinstance(gpt.lm_head, TrainableRows) and gpt.lm_head.tied_to:
                gpt.lm_head = nn.Linear(weight.shape[1], weight.shape[0], bias=False)
                gpt.lm_head.weight = gpt.token_embedding.weight
            elif isinstance(gpt.lm_head, TrainableRows):
                head = gpt.lm_head.weight.detach().clone()
                gpt.lm_head = nn.Linear(head.shape[1], head.shape[0], bias=False)
                gpt.lm_head.weight = nn.Parameter(head)
        gpt.requires_grad_(True)
        return gpt

    def checkpoint_config(self) -> dict:
        """The architecture as a JSON-able dict (llmkit.checkpoint's protocol)."""
        if self.merged:
            raise ValueError("unmerge() the adapters before saving a LoRAModel checkpoint "
                             "(merged weights would be counted twice on loading).")
        return {"gpt": self.gpt.config.to_dict(), "lora": self.lora.to_dict()}

    @classmethod
    def from_checkpoint_config(cls, config: dict) -> LoRAModel:
        """The same architecture with fresh weights (llmkit.checkpoint loads the weights)."""
        return cls(GPT(GPTConfig.from_dict(config["gpt"])), LoRAConfig(**config["lora"]))


def write_atomically(path: Path, write) -> None:
    """Call write(temporary path), then rename it to `path` (an old file stays whole)."""
    temporary = path.with_name(f".{path.name}.tmp")
    write(temporary)
    os.replace(temporary, path)
