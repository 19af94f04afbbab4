"""The course's story model: the small GPT that lesson 07 pretrains on TinyTales, and that
lessons 05 and 08 reuse.

One recipe, in one place, so every lesson means the same model: characters as tokens
(so the loss in bits per character compares directly with TinyTales' entropy floor), the
first 90% of the stories to train and the last 10% to validate, and a baby GPT sized for a
laptop CPU.

Lesson 07 trains it and saves it with `save_checkpoint(story_checkpoint_dir(), ...)`. A
later lesson calls `load_or_train()`: it loads that checkpoint when it exists, and
otherwise trains the same recipe for a short budget (saying so), so no lesson needs an
earlier one to have run for long. Quick mode (LLMKIT_QUICK=1) uses its own folder, so a
model trained in seconds by the tests never stands in for the real one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from llmkit.checkpoint import load_checkpoint, save_checkpoint
from llmkit.data.batches import split_train_val
from llmkit.data.tinytales import tinytales_text
from llmkit.device import pick_device, quick_mode
from llmkit.model import GPT, GPTConfig
from llmkit.tokenizers import CharTokenizer
from llmkit.train import TrainConfig, Trainer

STORIES = 20_000        # about 6.5 million characters
QUICK_STORIES = 400
SEED = 0


def runs_folder() -> Path:
    """Where lessons keep what they train: $LLMKIT_RUNS, else `runs/` next to `llmkit/`."""
    configured = os.environ.get("LLMKIT_RUNS")
    return Path(configured) if configured else Path(__file__).resolve().parents[1] / "runs"


def story_checkpoint_dir(name: str = "story_model") -> Path:
    """The checkpoint folder of the story model (quick mode: a separate "-quick" folder)."""
    return runs_folder() / (f"{name}-quick" if quick_mode() else name)


def story_text(n_stories: int | None = None) -> str:
    """The training corpus: `n_stories` TinyTales stories (default: STORIES, or
    QUICK_STORIES in quick mode), always from the same seed."""
    if n_stories is None:
        n_stories = QUICK_STORIES if quick_mode() else STORIES
    return tinytales_text(n_stories, seed=SEED)


def story_data(text: str, tokenizer: CharTokenizer | None = None
               ) -> tuple[CharTokenizer, torch.Tensor, torch.Tensor]:
    """(tokenizer, train_ids (n_train,), val_ids (n_val,)): characters as tokens, 90/10 split.

    tokenizer: a saved one to encode with (default: a new one trained on `text`).
    """
    tokenizer = CharTokenizer.train(text) if tokenizer is None else tokenizer
    train_ids, val_ids = split_train_val(torch.tensor(tokenizer.encode(text)), val_fraction=0.1)
    return tokenizer, train_ids, val_ids


def story_config(vocab_size: int, **changes) -> GPTConfig:
    """The model: 4 blocks, 4 heads, 128 wide, reading 128 characters. `changes` override."""
    settings = dict(vocab_size=vocab_size, context_length=128, n_layer=4, n_head=4,
                    d_model=128, dropout=0.0)
    settings.update(changes)
    return GPTConfig(**settings)


def story_train_config(max_steps: int, **changes) -> TrainConfig:
    """The schedule: AdamW at 2e-3 with warmup and a cosine to 2e-4, batch 16, clipping at 1."""
    settings = dict(max_steps=max_steps, batch_size=16, lr=2e-3, min_lr=2e-4,
                    warmup_steps=min(100, max(1, max_steps // 10)), weight_decay=0.1,
                    beta2=0.99, grad_clip=1.0, eval_interval=max(1, max_steps // 5),
                    eval_iters=5, progress=False)
    settings.update(changes)
    return TrainConfig(**settings)


@dataclass
class StoryModel:
    """What `load_or_train` returns: the model (eval mode, on the device), its tokenizer,
    the validation ids, and `source`, a sentence saying where the model came from."""

    model: GPT
    tokenizer: CharTokenizer
    val_ids: torch.Tensor
    source: str


def load_or_train(device=None, *, steps: int | None = None, callbacks=(),
                  checkpoint_dir: Path | None = None) -> StoryModel:
    """The story model: lesson 07's checkpoint if there is one, else a freshly trained one.

    steps: training steps when there is no checkpoint (default 600, 40 in quick mode; a
    laptop CPU takes about a minute for 600). The freshly trained model is saved to
    `checkpoint_dir` (default story_checkpoint_dir()), so the next lesson loads it.
    """
    device = pick_device(device)
    folder = Path(checkpoint_dir) if checkpoint_dir is not None else story_checkpoint_dir()
    text = story_text()
    if (folder / "model.safetensors").exists():
        saved = load_checkpoint(folder, device=device)
        if saved.tokenizer is None:
            raise ValueError(f"the checkpoint in {folder} has no tokenizer; delete the folder "
                             "and run this cell again to train a new model.")
        _, _, val_ids = story_data(text, saved.tokenizer)
        step = (saved.state or {}).get("step", "?")
        return StoryModel(saved.model, saved.tokenizer, val_ids,
                          f"loaded from {folder} (trained for {step} steps)")
    if steps is None:
        steps = 40 if quick_mode() else 600
    tokenizer, train_ids, val_ids = story_data(text)
    model = GPT(story_config(tokenizer.vocab_size))
    trainer = Trainer(model, train_ids, val_ids, story_train_config(steps), device=device,
                      callbacks=callbacks, tokenizer=tokenizer)
    trainer.fit()
    save_checkpoint(folder, model, tokenizer=tokenizer, state=trainer.state_dict())
    model.eval()
    return StoryModel(model, tokenizer, val_ids,
                      f"trained just now for {steps} steps (no checkpoint from lesson 07 "
                      f"in {folder}), and saved there")
