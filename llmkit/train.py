"""The training loop of lesson 07: AdamW, warmup + cosine, clipping, accumulation, resume.

One optimizer step, as in nanoGPT's train.py:

    lr = learning_rate(step)                    linear warmup, then cosine down to min_lr
    repeat grad_accum_steps times:
        x, y = get_batch(train_ids)             (batch, context) int64 each
        loss = model(x, y) / grad_accum_steps   under autocast (see TrainConfig.precision)
        loss.backward()                         gradients add up across micro-batches
    clip the gradient norm to grad_clip
    AdamW step (decoupled weight decay on matmul and embedding weights only)

Every `eval_interval` steps the mean loss over `eval_iters` batches of training and of
validation text is measured, on the same batches every time so the curves are comparable;
`stream_loss` measures a whole split, without sampling noise, for the final figure.
Callbacks (the live dashboard of lesson 07, a notebook's own printing) see every record.

`Trainer.save_checkpoint` writes the weights, the optimizer, the step, every random
number generator and the history (see `llmkit.checkpoint`), and `Trainer.resume` reads
them back, so a run stopped at step k and resumed takes bit for bit the same steps as a run
that never stopped.
"""

from __future__ import annotations

import dataclasses
import math
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from llmkit.checkpoint import load_training_state, save_checkpoint
from llmkit.data.batches import as_token_tensor, get_batch
from llmkit.device import PRECISIONS, autocast, autocast_dtype, pick_device


CALLBACK_EVENTS = ("on_train_start", "on_step", "on_eval", "on_train_end")


# --- the configuration ----------------------------------------------------------------


@dataclass
class TrainConfig:
    """Everything about a training run except the model and the data.

    The defaults train the baby GPT of lesson 07 on a laptop CPU in a few minutes.

    max_steps: optimizer steps to take (the run may stop earlier, see time_budget_s).
    time_budget_s: stop after this many seconds of training in one `fit()` call (None: no limit).
    batch_size: sequences per micro-batch. context_length: tokens per sequence
        (None: the model's config.context_length).
    lr, min_lr, warmup_steps, lr_decay_steps: the schedule, see `learning_rate`
        (lr_decay_steps None: max_steps).
    weight_decay, beta1, beta2: AdamW's; decay applies to matmul and embedding weights only.
    grad_clip: largest allowed global gradient norm (None or 0: no clipping).
    grad_accum_steps: micro-batches per optimizer step (batch of batch_size * grad_accum_steps).
    eval_interval: measure train/val loss every this many steps (0: never), with eval_iters
        batches each. checkpoint_interval: save every this many steps (None: only at the end);
        out_dir: where (None: no checkpoints).
    log_interval: turn losses into Python numbers (one device sync) every this many steps;
        callbacks receive the records at that moment. 1 is right on CPU; 10 or more on a GPU.
    seed: seeds the batch sampler, the evaluation batches and dropout.
    compile: run the model through torch.compile (falls back to eager if compiling fails).
    precision: "auto" (bf16 autocast on CUDA GPUs that support it, float32 elsewhere),
        "bf16" (also bf16 on CPUs with native bf16, e.g. AVX512-BF16 or AMX; other CPUs
        warn and stay float32) or "fp32". See llmkit.device.autocast_dtype. On a CPU,
        pair "bf16" with GPTConfig(attention="manual"): PyTorch's CPU flash attention has a
        slow bf16 backward that otherwise eats most of the gain (bench/plain_loop.py).
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
    log_interval: int = 1
    seed: int = 1337
    compile: bool = False
    precision: str = "auto"
    device: str | None = None
    progress: bool = True

    def __post_init__(self):
        def require(ok: bool, message: str) -> None:
            if not ok:
                raise ValueError(f"TrainConfig: {message}")

        def whole(name: str, minimum: int) -> bool:
            value = getattr(self, name)
            return isinstance(value, int) and not isinstance(value, bool) and value >= minimum

        for name in ("batch_size", "grad_accum_steps", "eval_iters", "log_interval"):
            require(whole(name, 1), f"{name} must be a positive integer, got {getattr(self, name)!r}.")
        for name in ("max_steps", "warmup_steps", "eval_interval"):
            require(whole(name, 0), f"{name} must be an integer >= 0, got {getattr(self, name)!r}.")
        require(self.context_length is None or whole("context_length", 1),
                f"context_length must be a positive integer or None, got {self.context_length!r}.")
        require(self.checkpoint_interval is None or whole("checkpoint_interval", 1),
                f"checkpoint_interval must be a positive integer or None, got "
                f"{self.checkpoint_interval!r}.")
        require(self.lr > 0, f"lr must be positive, got {self.lr}; 1e-3 suits a small model.")
        require(0 <= self.min_lr <= self.lr,
                f"min_lr must be between 0 and lr={self.lr}, got {self.min_lr}; "
                "the cosine decays from lr down to min_lr.")
        require(self.lr_decay_steps is None or (whole("lr_decay_steps", 0)
                                                and self.lr_decay_steps >= self.warmup_steps),
                f"lr_decay_steps ({self.lr_decay_steps!r}) must be None or an integer >= "
                f"warmup_steps ({self.warmup_steps}); the cosine starts where the warmup ends.")
        require(self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}.")
        for name in ("beta1", "beta2"):
            require(0 <= getattr(self, name) < 1, f"{name} must be in [0, 1), got {getattr(self, name)}.")
        require(self.grad_clip is None or self.grad_clip >= 0,
                f"grad_clip must be >= 0 or None, got {self.grad_clip}.")
        require(self.time_budget_s is None or self.time_budget_s > 0,
                f"time_budget_s must be positive or None, got {self.time_budget_s}.")
        require(self.precision in PRECISIONS,
                f"precision must be one of {PRECISIONS}, got {self.precision!r}.")

    @property
    def decay_steps(self) -> int:
        """The step at which the cosine reaches min_lr: lr_decay_steps, or max_steps."""
        return self.max_steps if self.lr_decay_steps is None else self.lr_decay_steps

    def to_dict(self) -> dict:
        """The fields as a plain, JSON-able dict (saved in checkpoints)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        """Rebuild a config from `to_dict()`'s output; unknown keys raise a ValueError."""
        values = dict(values)
        if "autocast" in values:   # checkpoints saved before `precision` replaced it
            values.setdefault("precision", "auto" if values.pop("autocast") else "fp32")
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown TrainConfig field(s) {unknown}; expected some of {sorted(known)}.")
        return cls(**values)


# --- the schedule and the optimizer ------------------------------------------------------


def learning_rate(step: int, config: TrainConfig) -> float:
    """The learning rate for optimizer step `step` (0-based).

    Linear warmup from lr / warmup_steps up to lr over the first warmup_steps steps, then
    half a cosine from lr down to min_lr at step lr_decay_steps, then min_lr. The warmup is
    capped at lr_decay_steps, so a run shorter than warmup_steps still reaches lr.
    Warming up keeps the first, badly scaled updates of Adam small; the cosine lets the
    model settle into a minimum at the end.
    """
    warmup = min(config.warmup_steps, config.decay_steps)
    if step < warmup:
        return config.lr * (step + 1) / warmup
    if step >= config.decay_steps:
        return config.min_lr
    progress = (step - warmup) / (config.decay_steps - warmup)
    return config.min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (config.lr - config.min_lr)


def decay_parameter_names(model: nn.Module) -> tuple[list[str], list[str]]:
    """Split the model's parameter names into (decayed, not decayed).

    Weight decay pulls weights towards zero. That regularises matrices (linear layers and
    embeddings, 2-D), but biases and norm gains (1-D) only set offsets and scales, and
    pulling them to zero just hurts, as in GPT-2 and nanoGPT. A tied matrix appears once.
    """
    decay, no_decay = [], []
    for name, param in model.named_parameters():   # shared (tied) parameters come once
        if param.requires_grad:
            (decay if param.dim() >= 2 else no_decay).append(name)
    return decay, no_decay


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW over two parameter groups (decay / no decay), fused where the build allows.

    The fused implementation updates every parameter in one kernel instead of a dozen per
    tensor; it exists for CUDA, CPU and MPS in recent PyTorch, and we fall back to the
    default (foreach) one where it does not.
    """
    decay, no_decay = decay_parameter_names(model)
    params = dict(model.named_parameters())
    groups = [
        {"params": [params[name] for name in decay], "weight_decay": config.weight_decay},
        {"params": [params[name] for name in no_decay], "weight_decay": 0.0},
    ]
    options = dict(lr=config.lr, betas=(config.beta1, config.beta2))
    try:
        return torch.optim.AdamW(groups, fused=True, **options)
    except (RuntimeError, ValueError, TypeError):
        return torch.optim.AdamW(groups, **options)


# --- a low-noise evaluation ---------------------------------------------------------------


@torch.no_grad()
def stream_loss(model: nn.Module, ids, context_length: int, batch_size: int = 64, device=None,
                precision: str = "fp32") -> float:
    """The mean loss over a whole token stream, read as consecutive windows.

    ids: (n,) token stream -> mean cross-entropy (nats per token) over the first
    (n - 1) // context_length windows of context_length tokens, each position predicting
    the next token (the last few targets that fill no whole window are left out). Each
    position of the window occurs equally often, as in random windows, so this measures
    what `Trainer.estimate_loss` does, without its sampling noise: the figure to compare
    runs by. The model runs in eval mode, batch_size windows at a time; precision is
    TrainConfig's (default fp32, the same arithmetic for every run compared).
    """
    ids = as_token_tensor(ids)
    if not isinstance(context_length, int) or context_length < 1 or len(ids) < context_length + 1:
        raise ValueError(f"need a positive context_length and at least context_length + 1 tokens; "
                         f"got context_length={context_length!r} and {len(ids)} tokens.")
    device = pick_device(device) if device is not None else next(model.parameters()).device
    n_windows = (len(ids) - 1) // context_length
    inputs = ids[: n_windows * context_length].view(n_windows, context_length)
    targets = ids[1 : n_windows * context_length + 1].view(n_windows, context_length)
    was_training = model.training
    model.eval()
    total = 0.0
    for start in range(0, n_windows, batch_size):
        x = inputs[start : start + batch_size].to(device)
        y = targets[start : start + batch_size].to(device)
        with autocast(device, precision=precision):
            _, loss = model(x, y)
        total += loss.item() * len(x)   # the batch mean, weighted by its windows
    model.train(was_training)
    return total / n_windows


# --- the trainer -----------------------------------------------------------------------


class Trainer:
    """Trains a language model on a stream of token ids.

    model: maps (idx (B, T) int64, targets (B, T) int64) -> (logits (B, T, V), loss), as
        `llmkit.model.GPT` does, and has `model.config.context_length`.
    train_ids, val_ids: (n,) token streams (lists, arrays or tensors).
    config: a TrainConfig (defaults if None). callbacks: objects with any of
        on_train_start(trainer), on_step(trainer, record), on_eval(trainer, record),
        on_train_end(trainer); setting `trainer.should_stop = True` ends `fit()` after the
        current step. device: overrides config.device. tokenizer: saved with checkpoints.

    After `fit()`, `trainer.history` holds one record per step
    {step, loss, lr, grad_norm, tokens_per_sec, elapsed} and one per evaluation
    {step, train_loss, val_loss, elapsed}, in order.
    """

    def __init__(self, model: nn.Module, train_ids, val_ids, config: TrainConfig | None = None,
                 callbacks=(), device=None, tokenizer=None):
        self.config = TrainConfig() if config is None else config
        if not isinstance(self.config, TrainConfig):
            raise ValueError(f"config must be a TrainConfig, got {type(self.config).__name__}.")
        if not isinstance(model, nn.Module):
            raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}.")
        model_context = getattr(getattr(model, "config", None), "context_length", None)
        self.context_length = self.config.context_length or model_context
        if self.context_length is None:
            raise ValueError(
                "the model has no config.context_length; set TrainConfig(context_length=...)."
            )
        if model_context is not None and self.context_length > model_context:
            raise ValueError(
                f"TrainConfig.context_length={self.context_length} is longer than the model's "
                f"context_length={model_context}; use at most {model_context}."
            )
        self.device = pick_device(device if device is not None else self.config.device)
        if self.config.precision == "bf16" and autocast_dtype(self.device, "bf16") is None:
            warnings.warn(f"precision='bf16' asked for, but {self.device} has no native bfloat16 "
                          "(emulating it would be slower than float32); training in float32.")
        self.train_ids = self._check_ids(train_ids, "train_ids", model)
        self.val_ids = self._check_ids(val_ids, "val_ids", model)
        for callback in callbacks:
            if not any(callable(getattr(callback, name, None)) for name in CALLBACK_EVENTS):
                raise ValueError(
                    f"callback {callback!r} has none of the methods {', '.join(CALLBACK_EVENTS)}; "
                    "see the Trainer docstring."
                )
        self.callbacks = list(callbacks)
        self.tokenizer = tokenizer

        self.model = model.to(self.device)
        self.optimizer = make_optimizer(self.model, self.config)
        self.forward = self._compiled_model() if self.config.compile else self.model
        self.compile_pending = self.forward is not self.model   # first call still to come
        torch.manual_seed(self.config.seed)  # dropout draws from the global generator
        self.batch_generator = torch.Generator().manual_seed(self.config.seed)
        self.step = 0
        self.elapsed = 0.0          # wall-clock seconds inside fit(), over all calls and resumes
        self.history: list[dict] = []
        self.should_stop = False

    def _check_ids(self, ids, name: str, model: nn.Module) -> torch.Tensor:
        ids = as_token_tensor(ids)
        if len(ids) < self.context_length + 1:
            raise ValueError(
                f"{name} has {len(ids)} tokens, but one training window needs "
                f"context_length + 1 = {self.context_length + 1}; use more text or a shorter "
                "context."
            )
        vocab_size = getattr(getattr(model, "config", None), "vocab_size", None)
        if vocab_size is not None and (ids.min() < 0 or ids.max() >= vocab_size):
            raise ValueError(
                f"{name} holds ids from {ids.min().item()} to {ids.max().item()}, but the model's "
                f"vocab_size is {vocab_size}; build the model with the tokenizer's vocab_size."
            )
        return ids

    def _compiled_model(self):
        try:
            return torch.compile(self.model)
        except Exception as error:  # e.g. no compiler for this platform or Python version
            warnings.warn(f"torch.compile is unavailable ({error}); training without it.")
            return self.model

    # --- one step ----------------------------------------------------------------------

    def compute_gradients(self) -> torch.Tensor:
        """Forward and backward over grad_accum_steps micro-batches; the mean loss (0-d).

        Each micro-batch's loss is divided by grad_accum_steps before backward, so the
        summed gradients equal those of the mean loss over one batch that many times larger.
        """
        accum = self.config.grad_accum_steps
        total = torch.zeros((), device=self.device)
        for _ in range(accum):
            x, y = get_batch(self.train_ids, self.config.batch_size, self.context_length,
                             generator=self.batch_generator, device=self.device)
            loss = self._loss(x, y)
            (loss / accum).backward()
            total += loss.detach()
        return total / accum

    def _loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with autocast(self.device, precision=self.config.precision):
            if not self.compile_pending:
                return self.forward(x, y)[1]
            # torch.compile compiles on the first call; without a working compiler (or
            # for a model it cannot trace) the model still trains, just eagerly.
            self.compile_pending = False
            try:
                return self.forward(x, y)[1]
            except Exception as error:
                warnings.warn(f"torch.compile failed ({type(error).__name__}: {error}); "
                              "training without it.")
                self.forward = self.model
                return self.forward(x, y)[1]

    def clip_gradients(self) -> torch.Tensor:
        """Scale all gradients down together so their global norm is at most grad_clip.

        Returns the norm before clipping (0-d tensor); with no clipping it is still measured.
        """
        if self.config.grad_clip:
            return nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip, foreach=True)
        grads = [p.grad for p in self.model.parameters() if p.grad is not None]
        return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))

    def train_step(self) -> tuple[torch.Tensor, float, torch.Tensor]:
        """One optimizer step; returns (mean loss, learning rate, gradient norm)."""
        lr = learning_rate(self.step, self.config)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        loss = self.compute_gradients()
        grad_norm = self.clip_gradients()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        return loss, lr, grad_norm

    # --- evaluation ---------------------------------------------------------------------

    @torch.no_grad()
    def estimate_loss(self) -> dict[str, float]:
        """Mean loss over eval_iters batches of training and of validation text.

        The batches come from a generator reseeded on every call, so every evaluation sees
        the same windows and the curves differ only because the model changed.
        """
        was_training = self.model.training
        self.model.eval()
        result = {}
        for split, ids in (("train_loss", self.train_ids), ("val_loss", self.val_ids)):
            generator = torch.Generator().manual_seed(self.config.seed + 1)
            losses = torch.zeros(self.config.eval_iters, device=self.device)
            for i in range(self.config.eval_iters):
                x, y = get_batch(ids, self.config.batch_size, self.context_length,
                                 generator=generator, device=self.device)
                with autocast(self.device, precision=self.config.precision):
                    _, loss = self.model(x, y)
                losses[i] = loss.float()
            result[split] = losses.mean().item()
        self.model.train(was_training)
        return result

    def evaluate(self) -> dict:
        """Measure the losses now, add the record to the history and tell the callbacks."""
        record = {"step": self.step, **self.estimate_loss(), "elapsed": self.elapsed}
        self.history.append(record)
        self._notify("on_eval", record)
        return record

    # --- the loop -----------------------------------------------------------------------

    def fit(self) -> list[dict]:
        """Train from the current step up to config.max_steps (or the time budget, or a
        callback's should_stop); returns the history.

        Calling fit() again after raising config.max_steps continues the same run.
        """
        config = self.config
        self.should_stop = False
        self.model.train()
        self._notify("on_train_start")
        bar = self._progress_bar()
        pending: list[tuple[int, torch.Tensor, float, torch.Tensor]] = []
        start = last_flush = time.perf_counter()
        elapsed_before = self.elapsed
        try:
            while self.step < config.max_steps and not self.should_stop:
                if (config.eval_interval and self.step % config.eval_interval == 0
                        and not self._evaluated_now()):
                    self._flush(pending, last_flush, bar)
                    last_flush = time.perf_counter()
                    self.evaluate()
                loss, lr, grad_norm = self.train_step()
                pending.append((self.step, loss, lr, grad_norm))
                self.elapsed = elapsed_before + time.perf_counter() - start
                if len(pending) >= config.log_interval:
                    self._flush(pending, last_flush, bar)
                    last_flush = time.perf_counter()
                if config.time_budget_s is not None and time.perf_counter() - start >= config.time_budget_s:
                    self.should_stop = True
                if (config.out_dir and config.checkpoint_interval
                        and self.step % config.checkpoint_interval == 0):
                    self._flush(pending, last_flush, bar)   # the saved history is complete
                    self.save_checkpoint()
                    last_flush = time.perf_counter()
            self._flush(pending, last_flush, bar)
            if config.eval_interval and self.step > 0 and not self._evaluated_now():
                self.evaluate()
            if config.out_dir:
                self.save_checkpoint()
        finally:
            if bar is not None:
                bar.close()
        self._notify("on_train_end")
        return self.history

    def _evaluated_now(self) -> bool:
        """Whether the last record is an evaluation at the current step (e.g. on resume)."""
        return bool(self.history) and "val_loss" in self.history[-1] and self.history[-1]["step"] == self.step

    def _flush(self, pending: list, since: float, bar) -> None:
        """Turn the pending step results into records (one device sync for all of them)."""
        if not pending:
            return
        losses = torch.stack([loss for _, loss, _, _ in pending]).tolist()
        norms = torch.stack([norm for _, _, _, norm in pending]).float().tolist()
        seconds = max(time.perf_counter() - since, 1e-9)
        tokens = (len(pending) * self.config.batch_size * self.config.grad_accum_steps
                  * self.context_length)
        for (step, _, lr, _), loss, norm in zip(pending, losses, norms):
            record = {"step": step, "loss": loss, "lr": lr, "grad_norm": norm,
                      "tokens_per_sec": tokens / seconds, "elapsed": self.elapsed}
            self.history.append(record)
            self._notify("on_step", record)
        if bar is not None:
            bar.update(len(pending))
            bar.set_postfix(loss=f"{losses[-1]:.4f}", refresh=False)
        pending.clear()

    def _progress_bar(self):
        if not self.config.progress:
            return None
        from tqdm.auto import tqdm

        return tqdm(total=self.config.max_steps, initial=self.step, unit="step", dynamic_ncols=True)

    def _notify(self, event: str, *args) -> None:
        for callback in self.callbacks:
            method = getattr(callback, event, None)
            if method is not None:
                method(self, *args)

    # --- checkpoints --------------------------------------------------------------------

    def state_dict(self) -> dict:
        """Everything besides the weights that resuming needs: optimizer, step, generators,
        history (tensors, numbers, strings, lists and dicts only)."""
        rng = {"torch": torch.get_rng_state(), "batches": self.batch_generator.get_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        return {"step": self.step, "elapsed": self.elapsed, "optimizer": self.optimizer.state_dict(),
                "rng": rng, "history": list(self.history)}

    def load_state_dict(self, state: dict) -> None:
        """Restore what `state_dict()` returned (the weights are loaded separately)."""
        self.step = int(state["step"])
        self.elapsed = float(state.get("elapsed", 0.0))
        self.optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"]["torch"])
        self.batch_generator.set_state(state["rng"]["batches"])
        cuda_states = state["rng"].get("cuda")
        if cuda_states and torch.cuda.is_available() and len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)
        self.history = list(state.get("history", []))

    def save_checkpoint(self, path=None) -> Path:
        """Write a checkpoint folder (default: config.out_dir) atomically; returns its path."""
        path = path if path is not None else self.config.out_dir
        if path is None:
            raise ValueError("no checkpoint path: pass one, or set TrainConfig(out_dir=...).")
        return save_checkpoint(path, self.model, tokenizer=self.tokenizer,
                               train_config=self.config.to_dict(), state=self.state_dict())

    def resume(self, path) -> Trainer:
        """Load weights, optimizer, step, generators and history from a checkpoint folder,
        so that `fit()` continues exactly where that run stopped. Returns self."""
        state = load_training_state(path, self.model)
        self.load_state_dict(state)
        return self
