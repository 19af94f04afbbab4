"""The training loop of lesson 07: AdamW, warmup + cosine, clipping, accumulation, resume.

One optimizer step (`Trainer.train_step`), as in nanoGPT's train.py:

    lr = learning_rate(step)                    linear warmup, then cosine down to min_lr
    draw grad_accum_steps micro-batches (x, y)  windows of a token stream, or padded examples
    for each micro-batch:
        loss = model(x, y)                      under autocast (see TrainConfig.precision)
        (loss * its share of the counted targets).backward()
    clip the gradient norm to grad_clip
    AdamW step (decoupled weight decay on matmul and embedding weights only)

Weighting each micro-batch by its share of the targets that count makes the accumulated
gradient that of one big batch even when the micro-batches hold different numbers of
targets (padded examples, masked prompts). In float16 a gradient scaler multiplies the
loss before backward and divides the gradients again before clipping.

The pieces live beside it: the settings in `llmkit.train_config`, the schedule and the
parameter groups in `llmkit.optim`, the fixed-set losses in `llmkit.evaluate`, the batch
sources in `llmkit.data.batches`, the files in `llmkit.checkpoint`, the processes of a run
under torchrun in `llmkit.distributed` (the same Trainer, one process or several).

Every `eval_interval` steps the loss on a fixed set of training and of validation batches
is measured (the same batches every time, so the curves are comparable). Callbacks (the
live dashboard of lesson 07, a notebook's own printing) see every record. A loss that
turns nan or inf stops the run with `TrainingDiverged` before anything is saved, so a good
checkpoint is never replaced by a broken one.

`Trainer.save_checkpoint` writes the weights, the optimizer, the step, every random
number generator and the history, and `Trainer.resume` reads them back, so a run stopped at
step k and resumed takes bit for bit the same steps as a run that never stopped.
"""

from __future__ import annotations

import dataclasses
import math
import time
import warnings
from contextlib import nullcontext
from pathlib import Path

import torch
from torch import nn

from llmkit import device as devices
from llmkit import distributed
from llmkit.checkpoint import check_output_folder, load_training_state, save_checkpoint
from llmkit.data.batches import IGNORE_INDEX, ExampleSet, TokenStream, as_batch_source, to_device
from llmkit.device import autocast, pick_device
from llmkit.evaluate import counted_targets, eval_mode, fixed_set_loss, stream_loss
from llmkit.optim import decay_parameter_names, learning_rate, make_optimizer
from llmkit.train_config import TrainConfig

# Names lessons, exercises and notebooks import from here.
__all__ = ["TrainConfig", "Trainer", "TrainingDiverged", "learning_rate", "decay_parameter_names",
           "make_optimizer", "stream_loss", "eval_mode", "IGNORE_INDEX", "CALLBACK_EVENTS"]

CALLBACK_EVENTS = ("on_train_start", "on_step", "on_eval", "on_train_end")


# --- the trainer -----------------------------------------------------------------------


class TrainingDiverged(RuntimeError):
    """The loss became nan or inf: training stopped, and nothing was saved after it.

    step: the step whose loss was not finite; loss: that value; lr: its learning rate.
    """

    def __init__(self, message: str, step: int, loss: float, lr: float):
        super().__init__(message)
        self.step, self.loss, self.lr = step, loss, lr


class Trainer:
    """Trains a model on a token stream or on a set of examples.

    model: maps (x, y) to (output, loss), loss being the mean over y's targets that are not
        IGNORE_INDEX, as `llmkit.model.GPT` does for x (B, T) and y (B, T); a classifier
        does it for y (B,). Saving checkpoints needs the protocol of `llmkit.checkpoint`.
    train_ids, val_ids: the data, each a token stream ((n,) ids: list, array or tensor), a
        `TokenStream` or an `ExampleSet` of padded examples (llmkit.data.batches).
    config: a TrainConfig (defaults if None). callbacks: objects with any of
        on_train_start(trainer), on_step(trainer, record), on_eval(trainer, record),
        on_train_end(trainer); setting `trainer.should_stop = True` ends `fit()` after the
        current step. device: overrides config.device. tokenizer: saved with checkpoints.
    Under torchrun, config.batch_size is the global batch: each process trains on its
    share, and rank 0 alone evaluates, calls the callbacks and writes checkpoints.

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
        self.context_length = self._context_length(model, train_ids)
        self.train_data = self._check_data(train_ids, "train_ids", model)
        self.val_data = self._check_data(val_ids, "val_ids", model)
        for callback in callbacks:
            if not any(callable(getattr(callback, name, None)) for name in CALLBACK_EVENTS):
                raise ValueError(
                    f"callback {callback!r} has none of the methods {', '.join(CALLBACK_EVENTS)}; "
                    "see the Trainer docstring."
                )
        self.callbacks = list(callbacks)
        self.tokenizer = tokenizer

        self.device = pick_device(device if device is not None else self.config.device)
        self.group = distributed.setup(self.device.type)   # one process unless under torchrun
        if self.group.active and self.device.type == "cuda":
            self.device = torch.device("cuda", self.group.local_rank)
        self.rows = distributed.check_batch(self.config.batch_size, self.group)
        if self.config.out_dir and self.group.is_main:   # a wrong --out is found now, not at the end
            check_output_folder(self.config.out_dir)
        if self.device.type == "cuda":
            devices.enable_fast_matmul()
        self._check_precision()
        self.scaler = torch.amp.GradScaler(   # float16 only: bf16 and fp32 need no scaling
            self.device.type, enabled=devices.needs_grad_scaler(self.device, self.config.precision))
        self.log_interval = self.config.log_interval or (1 if self.device.type == "cpu" else 10)

        self.model = model.to(self.device)           # what is saved: never the DDP wrapper
        self.optimizer = make_optimizer(self.model, self.config)
        self.wrapped = distributed.wrap(self.model, self.group, self.device)
        self.forward = self._compiled_model() if self.config.compile else self.wrapped
        self.compile_pending = self.forward is not self.wrapped   # first call still to come
        torch.manual_seed(self.config.seed + self.group.rank)   # dropout: its own draws per rank
        # The batch generator is the same on every rank: each draws the global batch.
        self.batch_generator = torch.Generator().manual_seed(self.config.seed)
        self.step = 0
        self.tokens_seen = 0        # input tokens of every micro-batch trained on
        self.elapsed = 0.0          # wall-clock seconds inside fit(), over all calls and resumes
        self.history: list[dict] = []
        self.should_stop = False
        self.saved_step: int | None = None   # the step of the last checkpoint written
        self._eval_batches: dict | None = None

    @property
    def train_ids(self) -> torch.Tensor | None:
        """The training token stream (None when training on examples)."""
        return self.train_data.ids if isinstance(self.train_data, TokenStream) else None

    @property
    def val_ids(self) -> torch.Tensor | None:
        """The validation token stream (None when validating on examples)."""
        return self.val_data.ids if isinstance(self.val_data, TokenStream) else None

    def _context_length(self, model: nn.Module, data) -> int | None:
        model_context = getattr(getattr(model, "config", None), "context_length", None)
        context_length = self.config.context_length or model_context
        if context_length is None and not isinstance(data, ExampleSet):
            raise ValueError(
                "the model has no config.context_length; set TrainConfig(context_length=...)."
            )
        if model_context is not None and context_length > model_context:
            raise ValueError(
                f"TrainConfig.context_length={context_length} is longer than the model's "
                f"context_length={model_context}; use at most {model_context}."
            )
        return context_length

    def _check_data(self, data, name: str, model: nn.Module):
        try:
            source = as_batch_source(data, self.context_length)
        except ValueError as error:
            raise ValueError(f"{name}: {error}") from None
        if isinstance(source, ExampleSet) and source.context_length is None and self.context_length:
            source = ExampleSet(source.examples, source.pad_id, self.context_length)
        vocab_size = getattr(getattr(model, "config", None), "vocab_size", None)
        low, high = source.id_range()
        if vocab_size is not None and (low < 0 or high >= vocab_size):
            raise ValueError(
                f"{name} holds ids from {low} to {high}, but the model's vocab_size is "
                f"{vocab_size}; build the model with the tokenizer's vocab_size."
            )
        return source

    def _check_precision(self) -> None:
        if self.config.precision == "bf16" and devices.autocast_dtype(self.device, "bf16") is None:
            warnings.warn(f"precision='bf16' asked for, but {self.device} has no native bfloat16 "
                          "(emulating it would be slower than float32); training in float32: "
                          f"{devices.precision_reason(self.device, 'bf16')}")

    def _compiled_model(self):
        try:
            return torch.compile(self.wrapped)
        except Exception as error:  # e.g. no compiler for this platform or Python version
            warnings.warn(f"torch.compile is unavailable ({error}); training without it.")
            return self.wrapped

    # --- one step ----------------------------------------------------------------------

    def train_step(self) -> tuple[torch.Tensor, float, torch.Tensor]:
        """One optimizer step; returns (mean loss, learning rate, gradient norm)."""
        lr = learning_rate(self.step, self.config)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        loss = self._first_compiled_gradients() if self.compile_pending else self.compute_gradients()
        self.scaler.unscale_(self.optimizer)     # clip the true gradients, not scaled ones
        grad_norm = self.clip_gradients()
        self.scaler.step(self.optimizer)         # skipped if float16 gradients overflowed
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        return loss, lr, grad_norm

    def compute_gradients(self) -> torch.Tensor:
        """Forward and backward over grad_accum_steps micro-batches; the mean loss (0-d).

        Each micro-batch's mean loss is weighted by its share of all the counted targets
        (not IGNORE_INDEX) before backward, so the summed gradients are those of the mean
        loss over one batch holding every micro-batch, even when they differ in size.
        Under torchrun every rank draws the same global batches and keeps its own rows; DDP
        averages the ranks' gradients, so each rank's share is multiplied by world_size, and
        the gradients are exchanged only after the last micro-batch.
        """
        batches = [self.train_data.sample(self.config.batch_size, self.batch_generator)
                   for _ in range(self.config.grad_accum_steps)]
        total_count = sum(counted_targets(y) for _, y in batches)   # over every rank's rows
        total = torch.zeros((), device=self.device)
        for i, batch in enumerate(batches):
            x, y = distributed.my_rows(*batch, self.group)
            count = counted_targets(y)
            if count == 0 and not self.group.active:
                continue            # nothing to learn here (every target masked)
            if count == 0:          # DDP needs every rank's backward: a zero-weighted one
                y = y.clone()
                y.view(-1)[0] = 0
            x, y = to_device(x, y, self.device)
            last = i == len(batches) - 1
            with self.wrapped.no_sync() if self.group.active and not last else nullcontext():
                loss = self._loss(x, y) * (count / total_count if total_count else 0.0)
                self.scaler.scale(loss * self.group.world_size).backward()
            total += loss.detach().float()
            self.tokens_seen += x.numel() * self.group.world_size
        return distributed.sum_over_ranks(total, self.group)

    def _loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with autocast(self.device, precision=self.config.precision):
            return self.forward(x, y)[1]

    def _first_compiled_gradients(self) -> torch.Tensor:
        """compute_gradients for the first step of a compiled model, which compiles both the
        forward (at the first call) and the backward (at the first backward). Where either
        fails (no C++ compiler, a model it cannot trace), one warning, and the whole step runs
        again eagerly from the same batches and random state."""
        self.compile_pending = False
        rng = (self.batch_generator.get_state(), torch.get_rng_state(), self.tokens_seen,
               torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None)
        try:
            return self.compute_gradients()
        except Exception as error:
            warnings.warn(f"torch.compile failed ({type(error).__name__}: {error}); "
                          "training without it.")
        self.forward = self.wrapped
        self.optimizer.zero_grad(set_to_none=True)
        self.batch_generator.set_state(rng[0])
        torch.set_rng_state(rng[1])
        self.tokens_seen = rng[2]
        if rng[3] is not None:
            torch.cuda.set_rng_state_all(rng[3])
        return self.compute_gradients()

    def clip_gradients(self) -> torch.Tensor:
        """Scale all gradients down together so their global norm is at most grad_clip.

        Returns the norm before clipping (0-d tensor); with no clipping it is still measured.
        PyTorch picks the implementation (foreach=None): the foreach one is not on every
        device (it fails on Apple's MPS).
        """
        params = [p for p in self.model.parameters() if p.grad is not None]
        if self.config.grad_clip:
            return nn.utils.clip_grad_norm_(params, self.config.grad_clip, foreach=None)
        return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in params]))

    # --- evaluation ---------------------------------------------------------------------

    def estimate_loss(self) -> dict[str, float]:
        """Mean loss per counted target on a fixed set of training and of validation batches.

        eval_iters batches of batch_size each: random windows of a stream drawn from a
        generator seeded with seed + 1, or the first examples of an example set. They are the
        same at every call, so the curves differ only because the model changed.
        """
        if self._eval_batches is None:
            self._eval_batches = {
                split: data.fixed_batches(self.config.batch_size, self.config.eval_iters,
                                          self.config.seed + 1)
                for split, data in (("train_loss", self.train_data), ("val_loss", self.val_data))}
        return {split: fixed_set_loss(self.model, batches, self.device, self.config.precision)
                for split, batches in self._eval_batches.items()}

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
        Raises TrainingDiverged, before saving anything, if the loss becomes nan or inf.
        """
        config = self.config
        self.should_stop = False
        self.model.train()
        self._notify("on_train_start")
        bar = self._progress_bar()
        pending: list[tuple[int, torch.Tensor, float, torch.Tensor, int]] = []
        start = last_flush = time.perf_counter()
        elapsed_before = self.elapsed
        try:
            while self.step < config.max_steps and not self.should_stop:
                if (config.eval_interval and self.step % config.eval_interval == 0
                        and not self._evaluated_now()):
                    self._flush(pending, last_flush, bar)
                    if self.group.is_main:
                        self.evaluate()
                    last_flush = time.perf_counter()   # eval time is not training time
                tokens_before = self.tokens_seen
                loss, lr, grad_norm = self.train_step()
                pending.append((self.step, loss, lr, grad_norm, self.tokens_seen - tokens_before))
                self.elapsed = elapsed_before + time.perf_counter() - start
                if len(pending) >= self.log_interval:
                    self._flush(pending, last_flush, bar)
                    last_flush = time.perf_counter()
                if config.time_budget_s is not None and time.perf_counter() - start >= config.time_budget_s:
                    self.should_stop = True
                if self.group.active:   # every rank stops at the same step
                    self.should_stop = distributed.any_rank(self.should_stop, self.group, self.device)
                if (config.out_dir and config.checkpoint_interval
                        and self.step % config.checkpoint_interval == 0):
                    self._flush(pending, last_flush, bar)   # the saved history is complete
                    self.save_checkpoint()
                    last_flush = time.perf_counter()
            self._flush(pending, last_flush, bar)
            if config.eval_interval and self.step > 0 and not self._evaluated_now() and self.group.is_main:
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
        """Turn the pending step results into records (one device sync for all of them),
        and stop the run if a loss is not finite."""
        if not pending:
            return
        losses = torch.stack([loss for _, loss, _, _, _ in pending]).tolist()
        norms = torch.stack([norm for _, _, _, norm, _ in pending]).float().tolist()
        seconds = max(time.perf_counter() - since, 1e-9)
        tokens_per_sec = sum(tokens for *_, tokens in pending) / seconds
        for (step, _, lr, _, _), loss, norm in zip(pending, losses, norms):
            record = {"step": step, "loss": loss, "lr": lr, "grad_norm": norm,
                      "tokens_per_sec": tokens_per_sec, "elapsed": self.elapsed}
            self.history.append(record)
            self._notify("on_step", record)
        if bar is not None:
            bar.update(len(pending))
            bar.set_postfix(loss=f"{losses[-1]:.4f}", refresh=False)
        pending.clear()
        for record in self.history[-len(losses):]:
            if not math.isfinite(record["loss"]):
                raise self._diverged(record)

    def _diverged(self, record: dict) -> TrainingDiverged:
        saved = (f"the checkpoint in {self.config.out_dir} (step {self.saved_step}) is kept as it was"
                 if self.saved_step is not None else "nothing was saved")
        clipping = "" if self.config.grad_clip else ", or gradient clipping (grad_clip=1.0)"
        message = (
            f"training diverged: the loss became {record['loss']} at step {record['step']} "
            f"(learning rate {record['lr']:.3g}), so training stopped and {saved}. Try a lower "
            f"learning rate (e.g. lr={self.config.lr / 3:.2g}) or a longer warmup "
            f"(warmup_steps){clipping}."
        )
        return TrainingDiverged(message, record["step"], record["loss"], record["lr"])

    def _progress_bar(self):
        if not self.config.progress or not self.group.is_main:
            return None
        from tqdm.auto import tqdm

        return tqdm(total=self.config.max_steps, initial=self.step, unit="step", dynamic_ncols=True)

    def _notify(self, event: str, *args) -> None:
        if not self.group.is_main:   # one dashboard, one log: rank 0's
            return
        for callback in self.callbacks:
            method = getattr(callback, event, None)
            if method is not None:
                method(self, *args)

    # --- checkpoints --------------------------------------------------------------------

    def state_dict(self) -> dict:
        """Everything besides the weights that resuming needs: optimizer, gradient scaler,
        step, schedule length, generators, history (tensors, numbers, strings, lists and
        dicts only)."""
        rng = {"torch": torch.get_rng_state(), "batches": self.batch_generator.get_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        if self.group.active:   # each rank's dropout draws (a collective: every rank calls it)
            rng["torch_per_rank"] = distributed.gather(torch.get_rng_state(), self.group)
        state = {"step": self.step, "elapsed": self.elapsed, "tokens_seen": self.tokens_seen,
                 "world_size": self.group.world_size,
                 "decay_steps": self.config.decay_steps,
                 "optimizer": self.optimizer.state_dict(), "rng": rng, "history": list(self.history)}
        if self.scaler.is_enabled():
            state["scaler"] = self.scaler.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        """Restore what `state_dict()` returned (the weights are loaded separately).

        The learning-rate schedule keeps the length it was saved with: a run extended to
        more steps continues the same cosine (the extra steps run at min_lr) instead of
        jumping to a new one; a warning says so. To decay over a new length, start a new
        run from the saved weights.
        """
        self.step = int(state["step"])
        self.elapsed = float(state.get("elapsed", 0.0))
        self.tokens_seen = int(state.get("tokens_seen", 0))
        saved_decay = state.get("decay_steps")
        if saved_decay is not None and saved_decay != self.config.decay_steps:
            warnings.warn(
                f"the saved run's learning rate decays over {saved_decay} steps; keeping that "
                f"schedule (the config says {self.config.decay_steps}), so steps after "
                f"{saved_decay} run at min_lr={self.config.min_lr:g}. To decay over a new "
                "length, start a new run from the saved weights.")
            self.config = dataclasses.replace(self.config, lr_decay_steps=int(saved_decay),
                                              warmup_steps=min(self.config.warmup_steps, int(saved_decay)))
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scaler.is_enabled() and "scaler" in state:
            self.scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["rng"]["torch"])
        saved_world = int(state.get("world_size", 1))
        if saved_world == self.group.world_size and self.group.active:
            torch.set_rng_state(state["rng"]["torch_per_rank"][self.group.rank])
        elif saved_world != self.group.world_size and self.group.is_main:
            warnings.warn(
                f"the run was saved from {saved_world} process(es) and resumes in "
                f"{self.group.world_size}: the weights, optimizer, schedule and the global batches "
                "are restored, but each process's rows, dropout draws and float rounding differ, "
                "so the losses will not repeat bit for bit.")
        self.batch_generator.set_state(state["rng"]["batches"])
        cuda_states = state["rng"].get("cuda")
        if cuda_states and torch.cuda.is_available() and len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)
        self.history = list(state.get("history", []))
        self.saved_step = self.step

    def save_checkpoint(self, path=None) -> Path:
        """Write a checkpoint folder (default: config.out_dir) atomically; returns its path."""
        path = path if path is not None else self.config.out_dir
        if path is None:
            raise ValueError("no checkpoint path: pass one, or set TrainConfig(out_dir=...).")
        state = self.state_dict()    # on every rank (it gathers their generators) ...
        if self.group.is_main:       # ... but only rank 0 writes
            save_checkpoint(path, self.model, tokenizer=self.tokenizer,
                            train_config=self.config.to_dict(), state=state)
        self.saved_step = self.step
        return Path(path)

    def resume(self, path) -> Trainer:
        """Load weights, optimizer, step, generators and history from a checkpoint folder,
        so that `fit()` continues exactly where that run stopped. Returns self."""
        state = load_training_state(path, self.model)
        self.load_state_dict(state)
        return self
