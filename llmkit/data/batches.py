"""Training batches: windows cut from one long token stream, or examples padded together.

Pretraining (lesson 07). A language model learns from windows of `context_length`
consecutive tokens: the input is the window, the target is the same window shifted one
token to the left, so position t is asked to predict token t + 1. Every batch is cut from
random places in the stream with one indexing operation (no Python loop over tokens),
which keeps data loading far cheaper than the model's step. `TokenStream` is that source.

Fine-tuning (lesson 09). The data is a list of examples, each a dict:

    {"input_ids": [int, ...], "labels": [int, ...]}   token targets, as long as input_ids:
        labels[i] is the target for position i (already shifted: for plain next-token
        prediction labels[i] = input_ids[i + 1]), IGNORE_INDEX (-100) where the loss skips
        the position (a prompt, the last token);
    {"input_ids": [int, ...], "label": int}            one class per example (a classifier).

`collate` pads a list of them into one batch (x, y): input_ids padded on the right with
`pad_id`, token labels with IGNORE_INDEX, class labels stacked as (B,). `ExampleSet` is that
source. Both give the trainer the same three things: `sample` (a random batch),
`fixed_batches` (the same batches every time, for evaluation) and `id_range` (to check the
ids against the model's vocabulary before training).
"""

from __future__ import annotations

import numpy as np
import torch

from llmkit.model.gpt import IGNORE_INDEX

__all__ = ["IGNORE_INDEX", "as_token_tensor", "split_train_val", "get_batch", "to_device",
           "collate", "TokenStream", "ExampleSet", "as_batch_source"]


def as_token_tensor(ids) -> torch.Tensor:
    """A 1-D int64 tensor of token ids from a list, NumPy array (or memmap) or tensor.

    Floats are refused, not truncated: 2.7 is no token id, and rounding would hide a bug.
    """
    if isinstance(ids, torch.Tensor):
        tensor = ids
    elif isinstance(ids, np.ndarray):
        tensor = torch.from_numpy(np.ascontiguousarray(ids))
    else:
        ids = list(ids)
        tensor = torch.tensor(ids) if ids else torch.zeros(0, dtype=torch.long)
    if tensor.dim() != 1:
        raise ValueError(
            f"token ids must be one flat sequence, got shape {tuple(tensor.shape)}; "
            "join your documents into one stream first (e.g. with torch.cat)."
        )
    if tensor.dtype.is_floating_point or tensor.dtype.is_complex or tensor.dtype == torch.bool:
        raise ValueError(
            f"token ids must be integers, got {tensor.dtype}; if the values are whole numbers "
            "convert them first (e.g. ids.long()), otherwise they are not token ids."
        )
    return tensor.long()


def split_train_val(ids, val_fraction: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """Split a token stream by position: the first part trains, the last part validates.

    ids: (n,) -> train: (n - n_val,), val: (n_val,) with n_val = round(n * val_fraction).
    Splitting by position (not at random) keeps validation text unseen, as in the usual
    90/10 Tiny Shakespeare benchmark.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be between 0 and 1, got {val_fraction}.")
    ids = as_token_tensor(ids)
    n_val = round(len(ids) * val_fraction)
    if n_val < 2 or len(ids) - n_val < 2:
        raise ValueError(
            f"{len(ids)} tokens are too few to split with val_fraction={val_fraction}; "
            "use more text."
        )
    return ids[: len(ids) - n_val], ids[len(ids) - n_val :]


def to_device(x: torch.Tensor, y: torch.Tensor, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Move a batch to `device` in one copy.

    x and y travel as one contiguous buffer; on CUDA it is pinned first, so the copy is
    asynchronous (non_blocking) and overlaps with the previous step's compute, as in
    nanoGPT. x and y are then views of that buffer on the device.
    """
    if device is None:
        return x, y
    device = torch.device(device)
    if device.type == "cpu":
        return x, y
    if x.shape == y.shape:
        buffer = torch.stack([x, y])                 # (2, B, T), contiguous
    else:                                            # class labels (B,) beside x (B, T)
        buffer = torch.cat([x, y[:, None]], dim=1)   # (B, T + 1)
    if device.type == "cuda":
        buffer = buffer.pin_memory()
    buffer = buffer.to(device, non_blocking=device.type == "cuda")
    if x.shape == y.shape:
        return buffer[0], buffer[1]
    return buffer[:, :-1], buffer[:, -1]


def get_batch(
    ids: torch.Tensor,
    batch_size: int,
    context_length: int,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample `batch_size` random windows from the stream `ids`.

    ids: (n,) int64 -> x, y: (batch_size, context_length) int64, with y[:, t] == x[:, t+1]
    inside each window (y is the window shifted by one token).
    `generator` makes the draw reproducible; `device` moves the batch there.
    """
    n = len(ids)
    if n < context_length + 1:
        raise ValueError(
            f"the token stream has {n} tokens, but a window needs context_length + 1 = "
            f"{context_length + 1}; use more text or a shorter context_length."
        )
    starts = torch.randint(0, n - context_length, (batch_size,), generator=generator)
    offsets = torch.arange(context_length + 1)
    windows = ids[starts[:, None] + offsets]  # (batch, context_length + 1) in one gather
    if device is not None and torch.device(device).type != "cpu":
        # One contiguous buffer crosses to the device once; x and y are views of it there.
        if torch.device(device).type == "cuda":
            windows = windows.pin_memory()
        windows = windows.to(device, non_blocking=torch.device(device).type == "cuda")
    return windows[:, :-1], windows[:, 1:]


# --- examples padded into batches (fine-tuning) --------------------------------------------


def _check_example(example, number: int) -> tuple[list[int], list[int] | int]:
    if not isinstance(example, dict) or "input_ids" not in example or (
            ("labels" in example) == ("label" in example)):
        raise ValueError(
            f"example {number} must be a dict with 'input_ids' and either 'labels' (one target "
            f"per token) or 'label' (one class), got {_describe(example)}."
        )
    input_ids = list(example["input_ids"])
    if not input_ids or not all(_is_int(i) for i in input_ids):
        raise ValueError(f"example {number}: input_ids must be a non-empty list of ints, got "
                         f"{_describe(example['input_ids'])}.")
    if "label" in example:
        if not _is_int(example["label"]):
            raise ValueError(f"example {number}: label must be an int (the class), got "
                             f"{example['label']!r}.")
        return input_ids, int(example["label"])
    labels = list(example["labels"])
    if len(labels) != len(input_ids) or not all(_is_int(i) for i in labels):
        raise ValueError(
            f"example {number}: labels must be ints, one per input id ({len(input_ids)}), got "
            f"{len(labels)} values; labels[i] is the target for input_ids[i], "
            f"{IGNORE_INDEX} where the loss skips it."
        )
    return input_ids, labels


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _describe(value) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def collate(examples, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad a list of examples (see the module docstring) into one batch.

    -> x: (B, T) int64, input_ids padded on the right with pad_id to the longest example's
       length T; y: (B, T) int64 labels padded with IGNORE_INDEX, or (B,) int64 class labels.
    Right padding leaves every real token where it was, and a causal model's real positions
    never see the padding after them. Use a pad_id that never occurs inside an example
    (a special token), so a model can tell padding from text by x != pad_id.
    """
    examples = list(examples)
    if not examples:
        raise ValueError("collate needs at least one example.")
    checked = [_check_example(example, number) for number, example in enumerate(examples)]
    kinds = {isinstance(labels, int) for _, labels in checked}
    if len(kinds) > 1:
        raise ValueError("a batch mixes examples with 'labels' and with 'label'; use one kind.")
    longest = max(len(ids) for ids, _ in checked)
    x = torch.full((len(checked), longest), pad_id, dtype=torch.long)
    for row, (ids, _) in enumerate(checked):
        x[row, : len(ids)] = torch.tensor(ids)
    if kinds == {True}:
        return x, torch.tensor([label for _, label in checked], dtype=torch.long)
    y = torch.full((len(checked), longest), IGNORE_INDEX, dtype=torch.long)
    for row, (_, labels) in enumerate(checked):
        y[row, : len(labels)] = torch.tensor(labels)
    return x, y


# --- the two batch sources the Trainer takes ------------------------------------------------


class TokenStream:
    """Random windows of one token stream: the pretraining source.

    ids: (n,) token ids; context_length: tokens per window. `sample` draws batch_size
    windows as `get_batch` does; `fixed_batches` draws n_batches of them from a generator
    seeded with `seed`, so every call returns the same windows.
    """

    def __init__(self, ids, context_length: int):
        self.ids = as_token_tensor(ids)
        self.context_length = context_length
        if len(self.ids) < context_length + 1:
            raise ValueError(
                f"the token stream has {len(self.ids)} tokens, but one training window needs "
                f"context_length + 1 = {context_length + 1}; use more text or a shorter context."
            )

    def __len__(self) -> int:
        return len(self.ids)

    def sample(self, batch_size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """x, y: (batch_size, context_length) int64 on the CPU."""
        return get_batch(self.ids, batch_size, self.context_length, generator=generator)

    def fixed_batches(self, batch_size: int, n_batches: int, seed: int) -> list:
        """n_batches batches of random windows, the same for the same seed."""
        generator = torch.Generator().manual_seed(seed)
        return [self.sample(batch_size, generator) for _ in range(n_batches)]

    def id_range(self) -> tuple[int, int]:
        """(smallest, largest) token id, inputs and targets alike."""
        return int(self.ids.min()), int(self.ids.max())


class ExampleSet:
    """Examples (see the module docstring) drawn at random and padded into batches.

    examples: a list of example dicts; pad_id: the id padding input_ids;
    context_length: the longest example the model can read (longer ones are refused, with
    their number, so that truncation is a visible choice made when the data is built).
    `sample` draws batch_size examples at random (with replacement, from the generator, so
    a resumed run draws the same ones); `fixed_batches` is the first
    batch_size * n_batches examples in order, the same every time.
    """

    def __init__(self, examples, pad_id: int, context_length: int | None = None):
        self.examples = list(examples)
        if not self.examples:
            raise ValueError("the example set is empty; give it at least one example.")
        if not _is_int(pad_id) or pad_id < 0:
            raise ValueError(f"pad_id must be a token id (an int >= 0), got {pad_id!r}.")
        self.pad_id = int(pad_id)
        checked = [_check_example(example, number) for number, example in enumerate(self.examples)]
        kinds = {isinstance(labels, int) for _, labels in checked}
        if len(kinds) > 1:
            raise ValueError("the examples mix 'labels' (token targets) and 'label' (a class); "
                             "an example set holds one kind.")
        self.classification = kinds == {True}
        self.context_length = context_length
        if context_length is not None:
            too_long = [n for n, (ids, _) in enumerate(checked) if len(ids) > context_length]
            if too_long:
                raise ValueError(
                    f"{len(too_long)} example(s) are longer than the context_length "
                    f"{context_length} (e.g. example {too_long[0]}: "
                    f"{len(checked[too_long[0]][0])} tokens); truncate or drop them when "
                    "building the data."
                )
        self._checked = checked

    def __len__(self) -> int:
        return len(self.examples)

    def sample(self, batch_size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (batch_size, T) and y: (batch_size, T) or (batch_size,), padded, on the CPU."""
        picks = torch.randint(0, len(self.examples), (batch_size,), generator=generator)
        return collate([self.examples[i] for i in picks.tolist()], self.pad_id)

    def fixed_batches(self, batch_size: int, n_batches: int, seed: int = 0) -> list:
        """The first batch_size * n_batches examples, in order, as batches (seed unused)."""
        chosen = self.examples[: batch_size * n_batches]
        return [collate(chosen[i : i + batch_size], self.pad_id)
                for i in range(0, len(chosen), batch_size)]

    def id_range(self) -> tuple[int, int]:
        """(smallest, largest) input id or token label, ignoring IGNORE_INDEX; class labels
        are not token ids and are left out."""
        values = [self.pad_id]
        for ids, labels in self._checked:
            values += ids
            if not isinstance(labels, int):
                values += [label for label in labels if label != IGNORE_INDEX]
        return min(values), max(values)


def as_batch_source(data, context_length: int):
    """A TokenStream or an ExampleSet as given, or a TokenStream over a token stream."""
    if isinstance(data, (TokenStream, ExampleSet)):
        return data
    return TokenStream(data, context_length)
