"""Scaling up (lesson 11): power laws fitted to losses, and where training memory goes.

- `fit_power_law(x, loss)`: loss = offset + scale * x ** -exponent, the shape of the scaling
  laws of Kaplan et al. (2020) and Hoffmann et al. (2022, "Chinchilla"), x being parameters
  N or compute C ~ 6 N D. The offset is the loss no model size removes (the data's own
  entropy plus what the recipe leaves); without it, log(loss) against log(x) bends and a
  straight-line fit predicts too low a loss for a larger model. Checked in
  tests/test_scaling.py against numpy.polyfit on exact power laws and a brute-force search.
- `training_memory(config, batch_size)`: bytes of parameters, gradients, AdamW's two moments
  and the activations autograd keeps for backward, by formula. Checked against what the
  tensors themselves hold: `saved_activation_bytes` counts what autograd saves.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from llmkit.model import GPTConfig


@dataclass(frozen=True)
class PowerLaw:
    """loss(x) = offset + scale * x ** -exponent."""

    scale: float
    exponent: float
    offset: float = 0.0

    def predict(self, x):
        """The loss the law gives at x (a number, or an array of numbers)."""
        return self.offset + self.scale * np.asarray(x, dtype=float) ** -self.exponent


def _check_points(x, y, least: int) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(x, dtype=float).ravel(), np.asarray(y, dtype=float).ravel()
    if len(x) != len(y):
        raise ValueError(f"x and loss must be the same length, got {len(x)} and {len(y)}.")
    if len(x) < least:
        raise ValueError(f"fitting needs at least {least} points, got {len(x)}; "
                         "train more model sizes.")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y)) and np.all(x > 0) and np.all(y > 0)):
        raise ValueError("x and loss must be finite and positive (a power law lives on log-log "
                         f"axes); got x={x.tolist()}, loss={y.tolist()}.")
    if len(set(x.tolist())) < 2:
        raise ValueError(f"x needs at least two different values, got {x.tolist()}.")
    return x, y


def _line_in_log_space(x: np.ndarray, y: np.ndarray, offset: float) -> tuple[PowerLaw, float]:
    """The power law through (x, y - offset) by least squares on log-log axes, and its squared
    error measured on log(loss)."""
    slope, intercept = np.polyfit(np.log(x), np.log(y - offset), 1)
    law = PowerLaw(scale=float(np.exp(intercept)), exponent=float(-slope), offset=float(offset))
    return law, float(np.sum((np.log(law.predict(x)) - np.log(y)) ** 2))


def fit_power_law(x, loss, offset: bool = True, grid: int = 400) -> PowerLaw:
    """Fit loss = offset + scale * x ** -exponent to points (x_i, loss_i).

    x, loss: sequences of positive numbers, e.g. parameter counts and validation losses.
    offset=False fits a straight line to log(loss) against log(x) (offset 0).
    offset=True tries offsets from 0 up to just below the smallest loss, fits the line to
    log(loss - offset) for each, and keeps the one whose curve is closest to the points
    (squared error of log(loss)); a finer grid around the best refines it. Needs 3 points
    (3 unknowns); give more, the fit is only as good as the points.
    """
    x, y = _check_points(x, loss, 3 if offset else 2)
    if not offset:
        return _line_in_log_space(x, y, 0.0)[0]
    low, high = 0.0, float(y.min())
    best = None
    for _ in range(2):     # a coarse search over [0, min loss), then a fine one around its best
        candidates = np.linspace(low, high, grid, endpoint=False)
        for candidate in candidates:
            law, error = _line_in_log_space(x, y, candidate)
            if best is None or error < best[1]:
                best = (law, error)
        step = candidates[1] - candidates[0]
        low, high = max(0.0, best[0].offset - step), min(float(y.min()), best[0].offset + step)
    return best[0]


# --- memory --------------------------------------------------------------------------------


def training_memory(config: GPTConfig, batch_size: int, context_length: int | None = None,
                    bytes_per_value: int = 4) -> dict[str, int]:
    """Bytes a training step of llmkit's GPT holds, by formula, in one number format.

    parameters: N values (N = every parameter, a tied matrix once); gradients: N; adamw: 2N
    (the running mean and mean square of each gradient); activations: what autograd keeps
    for backward, per block 16 * B * T * d values (the inputs of both norms, of the four
    linear layers and of GELU, the 3 * d wide q, k, v, and the attention output; the MLP's
    are 4 * d wide) plus B * heads * T * T for the attention weights when they are written
    out (attention="manual"; fused attention keeps only a row statistic), and after the
    blocks 2 * B * T * d (final norm, output head) plus B * T * vocab (the log-softmax).
    Small per-row statistics (norm means, targets) are left out. Checked in
    tests/test_scaling.py against `saved_activation_bytes` and the tensors' own sizes.
    """
    if not isinstance(config, GPTConfig):
        raise ValueError(f"config must be a GPTConfig, got {type(config).__name__}.")
    if config.mlp != "gelu" or (config.n_kv_head not in (None, config.n_head)):
        raise ValueError("training_memory's activation formula is GPT-2's block (mlp='gelu', "
                         f"full multi-head attention); got mlp={config.mlp!r}, "
                         f"n_kv_head={config.n_kv_head!r}. Measure others with "
                         "saved_activation_bytes.")
    T = config.context_length if context_length is None else context_length
    B, d, n_layer = batch_size, config.d_model, config.n_layer
    for name, value in (("batch_size", B), ("context_length", T),
                        ("bytes_per_value", bytes_per_value)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    from llmkit.model import GPT

    with torch.device("meta"):      # shapes only: nothing is allocated
        n_params = GPT(config).num_params()
    per_block = 16 * B * T * d + (B * config.n_head * T * T if config.attention == "manual" else 0)
    activations = n_layer * per_block + 2 * B * T * d + B * T * config.vocab_size
    values = {"parameters": n_params, "gradients": n_params, "adamw": 2 * n_params,
              "activations": activations}
    return {name: count * bytes_per_value for name, count in values.items()}


def saved_activation_bytes(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> int:
    """Bytes of the tensors autograd saves for backward during model(x, y), the parameters
    left out (they are counted as parameters). x, y: (B, T) token ids and targets.

    A saved-tensors hook sees each tensor as autograd stores it; several may be views of
    one block of memory (q, k and v are slices of one projection), so each storage counts once.
    Runs the forward only, in whatever autocast the caller has entered.
    """
    parameters = {p.untyped_storage().data_ptr() for p in model.parameters()}
    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in parameters:
            storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        model(x, y)
    return sum(storages.values())


def mebibytes(n_bytes: float) -> float:
    """Bytes in MiB (2**20 bytes)."""
    return n_bytes / 2**20

