"""Fine-tuning a pretrained GPT (lesson 09): new tokens, a classification head, freezing,
and instruction data whose loss is masked on the prompt.

1. `resize_token_embedding`: after `tokenizer.add_special_tokens` (or `add_chars`), grow the
   model's token embedding (and the output head, tied or not) to the new vocabulary; the
   rows of the old tokens are kept, so the model still knows them.
2. `GPTClassifier`: a linear head on the GPT's final hidden states, pooled over the
   non-padding tokens ("last": the last real token, which has read the whole text through
   causal attention; "mean": their average). `trainable` chooses what learns: the head
   only, the last N blocks too, or everything.
3. `instruction_examples`: conversations in the chat template (llmkit.chat_template) as
   `{"input_ids", "labels"}` examples, labels masked (-100) everywhere except the assistant's
   replies, cut to the model's context with a count of what was cut.
   `classification_examples`: `{"input_ids", "label"}` examples for the classifier.

Both kinds of example are the ones `llmkit.data.batches.collate` pads into batches: the
Trainer trains the classifier (forward(idx, labels) -> (logits, loss)) as it trains a GPT.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from llmkit.chat_template import encode_chat
from llmkit.model import GPT, IGNORE_INDEX, GPTConfig

# --- 1. growing the vocabulary ------------------------------------------------------------


def resize_token_embedding(model: GPT, new_vocab_size: int, init: str = "mean") -> GPT:
    """Grow model's token embedding, and its output head, to new_vocab_size rows (in place).

    Old rows are copied unchanged. New rows start as the mean of the old ones ("mean",
    which gives a new token the average logit at first instead of a random one; Hewitt
    2021) or ~N(0, 0.02) ("normal", GPT-2's init). A tied head stays tied. Updates
    model.config.vocab_size (checkpoints record it). Returns the model. Build the optimizer
    after resizing: the embedding is a new Parameter.
    """
    if not isinstance(model, GPT):
        raise ValueError(f"resize_token_embedding takes an llmkit GPT, got {type(model).__name__}.")
    old = model.token_embedding.weight
    old_size, width = old.shape
    if not isinstance(new_vocab_size, int) or new_vocab_size < old_size:
        raise ValueError(
            f"new_vocab_size must be an int >= the current {old_size} (shrinking would delete "
            f"the rows of trained tokens), got {new_vocab_size!r}; pass tokenizer.vocab_size."
        )
    if init not in ("mean", "normal"):
        raise ValueError(f"init must be 'mean' or 'normal', got {init!r}.")

    def grown(rows: torch.Tensor) -> nn.Parameter:
        with torch.no_grad():
            new = rows.new_empty(new_vocab_size, width)
            new[:old_size] = rows
            if init == "mean":
                new[old_size:] = rows.mean(dim=0)
            else:
                new[old_size:].normal_(0.0, 0.02)
        return nn.Parameter(new, requires_grad=rows.requires_grad)

    tied = model.lm_head.weight is old
    model.token_embedding = nn.Embedding(new_vocab_size, width, device=old.device, dtype=old.dtype)
    model.token_embedding.weight = grown(old)
    head = model.lm_head.weight
    model.lm_head = nn.Linear(width, new_vocab_size, bias=False, device=old.device, dtype=old.dtype)
    model.lm_head.weight = model.token_embedding.weight if tied else grown(head)
    model.config = dataclasses.replace(model.config, vocab_size=new_vocab_size)
    return model


# --- 2. the classifier --------------------------------------------------------------------

POOLINGS = ("last", "mean")


def freeze(gpt: GPT, trainable="all") -> None:
    """Choose which of the GPT's parameters learn (requires_grad), in place.

    trainable: "all"; "none"; or an int N, the last N blocks and the final norm (the layers
    closest to the output, which change most between tasks). Embeddings learn only with
    "all".
    """
    if trainable == "all":
        chosen = list(gpt.parameters())
    elif trainable == "none":
        chosen = []
    elif isinstance(trainable, int) and not isinstance(trainable, bool) \
            and 0 <= trainable <= len(gpt.blocks):
        last_blocks = list(gpt.blocks)[len(gpt.blocks) - trainable:]
        chosen = [p for block in last_blocks for p in block.parameters()]
        if trainable:   # the final norm sits between the last block and the head
            chosen += list(gpt.norm_final.parameters())
    else:
        raise ValueError(
            f"trainable must be 'all', 'none' or a number of last blocks 0..{len(gpt.blocks)}, "
            f"got {trainable!r}."
        )
    chosen_ids = {id(p) for p in chosen}
    for param in gpt.parameters():
        param.requires_grad_(id(param) in chosen_ids)


class GPTClassifier(nn.Module):
    """A GPT body with a linear head: idx (B, T) -> logits (B, n_classes).

    gpt: the (pretrained) body; n_classes: how many labels; pad_id: the token that pads
    batches on the right (a dedicated special token, e.g. tokenizer.special_tokens
    ["<|pad|>"]); pooling: "last" or "mean" (see the module docstring); trainable: "head"
    (only the head learns: the GPT is a frozen feature extractor), an int N (the last N
    blocks too) or "all". Checked in the tests against pooling computed one example at a
    time, without padding.
    """

    def __init__(self, gpt: GPT, n_classes: int, pad_id: int, pooling: str = "last",
                 trainable="head"):
        super().__init__()
        if not isinstance(gpt, GPT):
            raise ValueError(f"GPTClassifier needs an llmkit GPT body, got {type(gpt).__name__}.")
        if not isinstance(n_classes, int) or n_classes < 2:
            raise ValueError(f"n_classes must be an int >= 2, got {n_classes!r}.")
        if not isinstance(pad_id, int) or not 0 <= pad_id < gpt.config.vocab_size:
            raise ValueError(
                f"pad_id must be a token id of the model (0..{gpt.config.vocab_size - 1}), got "
                f"{pad_id!r}; add a pad token (tokenizer.add_special_tokens(['<|pad|>'])) and "
                "resize the embedding (resize_token_embedding) first."
            )
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}.")
        self.gpt = gpt
        self.n_classes, self.pad_id, self.pooling = n_classes, pad_id, pooling
        self.head = nn.Linear(gpt.config.d_model, n_classes)
        nn.init.normal_(self.head.weight, mean=0.0, std=0.02)
        nn.init.zeros_(self.head.bias)
        self.set_trainable(trainable)

    @property
    def config(self) -> GPTConfig:
        """The body's GPTConfig (the Trainer reads context_length and vocab_size here)."""
        return self.gpt.config

    def set_trainable(self, trainable) -> None:
        """"head", an int N (the last N blocks and the head) or "all"; the head always learns."""
        if trainable == "head":
            trainable = "none"
        elif trainable == "none":
            raise ValueError("trainable='none' would train nothing; use 'head', an int or 'all'.")
        freeze(self.gpt, trainable)
        self.head.requires_grad_(True)
        self.trainable = "head" if trainable == "none" else trainable

    def num_trainable(self) -> int:
        """Number of parameters that learn (a tied matrix counts once)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def num_params(self) -> int:
        """Number of parameters, body and head."""
        return sum(p.numel() for p in self.parameters())

    def pool(self, hidden: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """hidden (B, T, d_model), idx (B, T) -> (B, d_model), over the non-padding tokens."""
        real = idx != self.pad_id                                    # (B, T)
        lengths = real.sum(dim=1)                                    # (B,)
        if not torch.compiler.is_compiling():
            positions = torch.arange(idx.shape[1], device=idx.device)
            if bool((lengths == 0).any()) or not torch.equal(real, positions < lengths[:, None]):
                raise ValueError(
                    f"each row of idx must be real tokens followed by padding (pad_id="
                    f"{self.pad_id}) on the right, with at least one real token; pad batches "
                    "with llmkit.data.batches.collate, or use the pad token only for padding."
                )
        if self.pooling == "last":
            return hidden[torch.arange(idx.shape[0], device=idx.device), lengths - 1]
        weights = real.to(hidden.dtype)[:, :, None]                  # (B, T, 1)
        return (hidden * weights).sum(dim=1) / lengths[:, None].to(hidden.dtype)

    def forward(self, idx: torch.Tensor, labels: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """idx (B, T) int64, labels (B,) int64 or None -> logits (B, n_classes), loss.

        loss is the mean cross-entropy over the batch, or None without labels.
        """
        logits = self.head(self.pool(self.gpt.hidden_states(idx), idx))
        if labels is None:
            return logits, None
        if not isinstance(labels, torch.Tensor) or labels.shape != (idx.shape[0],) \
                or labels.is_floating_point():
            got = tuple(labels.shape) if isinstance(labels, torch.Tensor) else type(labels).__name__
            raise ValueError(f"labels must be a ({idx.shape[0]},) tensor of class indices, one "
                             f"per row of idx, got {got}.")
        if not torch.compiler.is_compiling():
            low, high = int(labels.min()), int(labels.max())
            if low < 0 or high >= self.n_classes:
                bad = sorted({v for v in labels.tolist() if not 0 <= v < self.n_classes})
                raise ValueError(
                    f"labels must be class indices 0..{self.n_classes - 1}, got {bad}; map "
                    "class names to indices (classification_examples does) or build the "
                    "classifier with more classes."
                )
        return logits, F.cross_entropy(logits, labels)

    def checkpoint_config(self) -> dict:
        """The architecture as a JSON-able dict (llmkit.checkpoint's protocol)."""
        return {"gpt": self.gpt.config.to_dict(), "n_classes": self.n_classes,
                "pad_id": self.pad_id, "pooling": self.pooling,
                "trainable": self.trainable}

    @classmethod
    def from_checkpoint_config(cls, config: dict) -> GPTClassifier:
        """The same architecture with fresh weights (llmkit.checkpoint loads the weights)."""
        return cls(GPT(GPTConfig.from_dict(config["gpt"])), config["n_classes"],
                   config["pad_id"], config["pooling"], config.get("trainable", "head"))


# --- 3. examples ----------------------------------------------------------------------------

OVERFLOWS = ("truncate", "drop", "error")


@dataclass
class FitReport:
    """How many examples fit the context as they were, were cut, or were left out."""

    context_length: int
    kept_whole: int = 0
    truncated: int = 0
    dropped: int = 0

    def __str__(self) -> str:
        total = self.kept_whole + self.truncated + self.dropped
        return (f"{total:,} examples: {self.kept_whole:,} fit in {self.context_length} tokens, "
                f"{self.truncated:,} truncated, {self.dropped:,} dropped")


def instruction_example(tokenizer, messages) -> dict:
    """One conversation -> {"input_ids": [...], "labels": [...]}, uncut.

    labels[i] is the target for input_ids[i] (the next token) where that token belongs to
    an assistant reply or its closing <|end|>, else IGNORE_INDEX (-100): the prompt is read,
    never learned. Tokens after the last reply are left out (nothing there is learned).
    """
    ids, learn = encode_chat(tokenizer, messages)
    if not any(learn):
        raise ValueError("the conversation has no assistant message, so there is nothing to "
                         "learn; end it with {'role': 'assistant', 'content': ...}.")
    end = max(i for i, learned in enumerate(learn) if learned) + 1
    ids, learn = ids[:end], learn[:end]
    return {"input_ids": ids[:-1],
            "labels": [ids[i] if learn[i] else IGNORE_INDEX for i in range(1, len(ids))]}


def instruction_examples(tokenizer, conversations, context_length: int,
                         overflow: str = "truncate") -> tuple[list[dict], FitReport]:
    """Conversations -> (examples that fit `context_length` tokens, FitReport).

    conversations: lists of {"role", "content"} messages (e.g. llmkit.data.chat_examples).
    overflow: what to do with an example longer than the context: "truncate" (keep its first
    context_length tokens; one left with no reply token to learn is dropped), "drop", or
    "error" (a ValueError naming the example).
    """
    if overflow not in OVERFLOWS:
        raise ValueError(f"overflow must be one of {OVERFLOWS}, got {overflow!r}.")
    check_context_length(context_length)
    examples, report = [], FitReport(context_length)
    for number, messages in enumerate(conversations):
        example = instruction_example(tokenizer, messages)
        n = len(example["input_ids"])
        if n <= context_length:
            examples.append(example)
            report.kept_whole += 1
            continue
        if overflow == "error":
            raise too_long(number, n, context_length)
        cut = {key: values[:context_length] for key, values in example.items()}
        if overflow == "drop" or all(label == IGNORE_INDEX for label in cut["labels"]):
            report.dropped += 1
            continue
        examples.append(cut)
        report.truncated += 1
    return examples, report


def classification_examples(tokenizer, pairs, class_names, context_length: int,
                            overflow: str = "truncate") -> tuple[list[dict], FitReport]:
    """(text, class name) pairs -> ({"input_ids", "label"} examples, FitReport).

    label is the index of the name in class_names. A text longer than the context keeps its
    last context_length tokens with "truncate" (for TinyTales' label, the ending is at the
    end), or is dropped ("drop"), or raises ("error"). Texts are encoded as ordinary text.
    """
    if overflow not in OVERFLOWS:
        raise ValueError(f"overflow must be one of {OVERFLOWS}, got {overflow!r}.")
    check_context_length(context_length)
    class_names = list(class_names)
    index = {name: i for i, name in enumerate(class_names)}
    examples, report = [], FitReport(context_length)
    for number, (text, name) in enumerate(pairs):
        if name not in index:
            raise ValueError(f"example {number} has label {name!r}, which is not one of the "
                             f"classes {class_names}; add it to class_names or fix the data.")
        ids = tokenizer.encode(text)
        if not ids:
            raise ValueError(f"example {number}'s text encodes to no tokens; give it some text.")
        if len(ids) > context_length:
            if overflow == "error":
                raise too_long(number, len(ids), context_length)
            if overflow == "drop":
                report.dropped += 1
                continue
            ids = ids[-context_length:]
            report.truncated += 1
        else:
            report.kept_whole += 1
        examples.append({"input_ids": ids, "label": index[name]})
    return examples, report


def check_context_length(context_length) -> None:
    if not isinstance(context_length, int) or context_length < 2:
        raise ValueError(f"context_length must be an int >= 2 (the model's "
                         f"config.context_length), got {context_length!r}.")


def too_long(number: int, n_tokens: int, context_length: int) -> ValueError:
    return ValueError(
        f"example {number} has {n_tokens} input tokens, more than the model's context of "
        f"{context_length}; pass overflow='truncate' (keep what fits) or 'drop' (leave such "
        "examples out), shorten the examples, or use a model with a longer context."
    )
