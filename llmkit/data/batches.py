"""Turn one long stream of token ids into training batches.

A language model learns from windows of `context_length` consecutive tokens: the input is
the window, the target is the same window shifted one token to the left, so position t is
asked to predict token t + 1. Every batch is cut from random places in the stream with one
indexing operation (no Python loop over tokens), which keeps data loading far cheaper than
the model's step.
"""

from __future__ import annotations

import numpy as np
import torch


def as_token_tensor(ids) -> torch.Tensor:
    """A 1-D int64 tensor of token ids from a list, NumPy array (or memmap) or tensor."""
    if isinstance(ids, torch.Tensor):
        tensor = ids
    elif isinstance(ids, np.ndarray):
        tensor = torch.from_numpy(np.asarray(ids, dtype=np.int64))
    else:
        tensor = torch.tensor(list(ids), dtype=torch.long)
    if tensor.dim() != 1:
        raise ValueError(
            f"token ids must be one flat sequence, got shape {tuple(tensor.shape)}; "
            "join your documents into one stream first (e.g. with torch.cat)."
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
    x, y = windows[:, :-1], windows[:, 1:]
    if device is not None:
        device = torch.device(device)
        if device.type == "cuda":
            # Pinned memory lets the copy to the GPU overlap with compute.
            x = x.pin_memory().to(device, non_blocking=True)
            y = y.pin_memory().to(device, non_blocking=True)
        else:
            x, y = x.to(device), y.to(device)
    return x, y
