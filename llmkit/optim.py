"""The optimizer of lesson 07: AdamW over two parameter groups, and the learning-rate schedule.

    learning_rate(step, config)     linear warmup, then half a cosine down to min_lr
    decay_parameter_names(model)    which weights weight decay pulls towards zero
    make_optimizer(model, config)   AdamW with those two groups (fused where it exists)

`config` is anything with the fields these read (a `llmkit.train.TrainConfig`): lr, min_lr,
warmup_steps, decay_steps; weight_decay, beta1, beta2. The schedule is checked against its
formula in tests/test_optim.py, the groups against the module types.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def learning_rate(step: int, config) -> float:
    """The learning rate for optimizer step `step` (0-based).

    Linear warmup from lr / warmup_steps up to lr over the first warmup_steps steps, then
    half a cosine from lr down to min_lr at step decay_steps, then min_lr. The warmup is
    capped at decay_steps, so a run shorter than warmup_steps still reaches lr.
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
    """Split the names of the model's trainable parameters into (decayed, not decayed).

    Weight decay pulls weights towards zero. That regularises matrices (linear layers and
    embeddings, 2-D), but biases and norm gains (1-D) only set offsets and scales, and
    pulling them to zero just hurts, as in GPT-2 and nanoGPT. A tied matrix appears once;
    frozen parameters (requires_grad False, e.g. a base model under LoRA) appear in neither.
    """
    decay, no_decay = [], []
    for name, param in model.named_parameters():   # shared (tied) parameters come once
        if param.requires_grad:
            (decay if param.dim() >= 2 else no_decay).append(name)
    return decay, no_decay


def make_optimizer(model: nn.Module, config) -> torch.optim.AdamW:
    """AdamW over two parameter groups (decay / no decay), fused where the build allows.

    The fused implementation updates every parameter in one kernel instead of a dozen per
    tensor; it exists for CUDA, CPU and MPS in recent PyTorch, and we fall back to the
    default (foreach) one where it does not.
    """
    decay, no_decay = decay_parameter_names(model)
    if not decay and not no_decay:
        raise ValueError("the model has no trainable parameters (every requires_grad is False); "
                         "unfreeze some, e.g. the head, before training.")
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
