"""The settings of a training run, as one dataclass with laptop defaults.

`TrainConfig()` trains the baby GPT of lesson 07 on a laptop CPU in a few minutes. Every
field is checked when the config is made (a learning rate of inf or a seed of 2**70 is a
ValueError that says what is expected), and `to_dict` / `from_dict` store it as JSON in a
checkpoint. `llmkit.train.Trainer` runs it; `llmkit.optim` reads the schedule from it.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

from llmkit.device import PRECISIONS

LARGEST_SEED = 2**63 - 1   # torch.manual_seed takes a 64-bit integer


@dataclass
class TrainConfig:
    """Everything about a training run except the model and the data.

    The defaults train the baby GPT of lesson 07 on a laptop CPU in a few minutes.

    max_steps: optimizer steps to take (the run may stop earlier, see time_budget_s).
    time_budget_s: stop after this many seconds of training in one `fit()` call (None: no limit).
    batch_size: sequences per micro-batch. context_length: tokens per sequence
        (None: the model's config.context_length).
    lr, min_lr, warmup_steps, lr_decay_steps: the schedule, see `llmkit.optim.learning_rate`
        (lr_decay_steps None: max_steps).
    weight_decay, beta1, beta2: AdamW's; decay applies to matmul and embedding weights only.
    grad_clip: largest allowed global gradient norm (None or 0: no clipping).
    grad_accum_steps: micro-batches per optimizer step (batch of batch_size * grad_accum_steps).
    eval_interval: measure train/val loss every this many steps (0: never), on eval_iters
        fixed batches each. checkpoint_interval: save every this many steps (None: only at
        the end); out_dir: where (None: no checkpoints).
    log_interval: turn losses into Python numbers (one device sync) every this many steps;
        callbacks receive the records at that moment. None: 1 on a CPU, 10 on a GPU.
    seed: seeds the batch sampler, the evaluation batches and dropout (0 .. 2**63 - 1).
    compile: run the model through torch.compile (falls back to eager if compiling fails).
    precision: "auto", "bf16" or "fp32"; llmkit.device.precision_reason says what each
        means on a device (bf16 where the hardware has it, float16 with a gradient scaler
        on older CUDA GPUs, float32 elsewhere). On a CPU, pair "bf16" with
        GPTConfig(attention="manual"): PyTorch's CPU flash attention has a slow bf16
        backward that otherwise eats most of the gain (bench/plain_loop.py).
    device: "cpu", "cuda", "mps" or None (llmkit.device.pick_device chooses).
    progress: show a tqdm progress bar with the loss.
    """

    max_steps: int = 2000
    time_budget_s: float | None = None
    batch_size: int = 12
    context_length: int | None = None
    lr: float = 1e-3
    min_lr: float = 1e-4
    warmup_steps: int = 100
    lr_decay_steps: int | None = None
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.99
    grad_clip: float | None = 1.0
    grad_accum_steps: int = 1
    eval_interval: int = 250
    eval_iters: int = 20
    checkpoint_interval: int | None = None
    out_dir: str | None = None
    log_interval: int | None = None
    seed: int = 1337
    compile: bool = False
    precision: str = "auto"
    device: str | None = None
    progress: bool = True

    def __post_init__(self):
        def require(ok: bool, message: str) -> None:
            if not ok:
                raise ValueError(f"TrainConfig: {message}")

        def whole(name: str, minimum: int, optional: bool = False) -> bool:
            value = getattr(self, name)
            if optional and value is None:
                return True
            return isinstance(value, int) and not isinstance(value, bool) and value >= minimum

        def finite(name: str, optional: bool = False) -> bool:
            value = getattr(self, name)
            if optional and value is None:
                return True
            return (isinstance(value, (int, float)) and not isinstance(value, bool)
                    and math.isfinite(value))

        for name in ("batch_size", "grad_accum_steps", "eval_iters"):
            require(whole(name, 1), f"{name} must be a positive integer, got {getattr(self, name)!r}.")
        for name in ("max_steps", "warmup_steps", "eval_interval"):
            require(whole(name, 0), f"{name} must be an integer >= 0, got {getattr(self, name)!r}.")
        for name in ("context_length", "checkpoint_interval", "log_interval"):
            require(whole(name, 1, optional=True),
                    f"{name} must be a positive integer or None, got {getattr(self, name)!r}.")
        for name in ("lr", "min_lr", "weight_decay", "beta1", "beta2"):
            require(finite(name), f"{name} must be a finite number, got {getattr(self, name)!r}.")
        for name in ("grad_clip", "time_budget_s"):
            require(finite(name, optional=True), f"{name} must be a finite number or None (no "
                    f"limit), got {getattr(self, name)!r}.")
        require(self.lr > 0, f"lr must be positive, got {self.lr}; 1e-3 suits a small model.")
        require(0 <= self.min_lr <= self.lr,
                f"min_lr must be between 0 and lr={self.lr}, got {self.min_lr}; "
                "the cosine decays from lr down to min_lr.")
        require(whole("lr_decay_steps", 0, optional=True)
                and (self.lr_decay_steps is None or self.lr_decay_steps >= self.warmup_steps),
                f"lr_decay_steps ({self.lr_decay_steps!r}) must be None or an integer >= "
                f"warmup_steps ({self.warmup_steps}); the cosine starts where the warmup ends.")
        require(self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}.")
        for name in ("beta1", "beta2"):
            require(0 <= getattr(self, name) < 1, f"{name} must be in [0, 1), got {getattr(self, name)}.")
        require(self.grad_clip is None or self.grad_clip >= 0,
                f"grad_clip must be >= 0 or None, got {self.grad_clip}.")
        require(self.time_budget_s is None or self.time_budget_s > 0,
                f"time_budget_s must be positive or None, got {self.time_budget_s}.")
        require(whole("seed", 0) and self.seed <= LARGEST_SEED,
                f"seed must be an integer from 0 to 2**63 - 1, got {self.seed!r}.")
        require(self.precision in PRECISIONS,
                f"precision must be one of {PRECISIONS}, got {self.precision!r}.")
        for name in ("compile", "progress"):
            require(isinstance(getattr(self, name), bool),
                    f"{name} must be True or False, got {getattr(self, name)!r}.")
        for name in ("out_dir", "device"):
            value = getattr(self, name)
            require(value is None or isinstance(value, (str, Path)),
                    f"{name} must be a string or None, got {value!r}.")

    @property
    def decay_steps(self) -> int:
        """The step at which the cosine reaches min_lr: lr_decay_steps, or max_steps."""
        return self.max_steps if self.lr_decay_steps is None else self.lr_decay_steps

    def to_dict(self) -> dict:
        """The fields as a plain, JSON-able dict (saved in checkpoints)."""
        values = dataclasses.asdict(self)
        if values["out_dir"] is not None:
            values["out_dir"] = str(values["out_dir"])
        return values

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        """Rebuild a config from `to_dict()`'s output; unknown keys or wrong types raise a
        ValueError."""
        if not isinstance(values, dict):
            raise ValueError(f"a TrainConfig is stored as a dict, got {type(values).__name__}.")
        values = dict(values)
        if "autocast" in values:   # checkpoints saved before `precision` replaced it
            values.setdefault("precision", "auto" if values.pop("autocast") else "fp32")
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown TrainConfig field(s) {unknown}; expected some of {sorted(known)}.")
        return cls(**values)
