"""The baby-GPT recipe, trained to the end: final validation loss, wall time, tokens/s, MFU.

The recipe (nanoGPT's shakespeare_char, sized for a laptop CPU): 4 layers, 4 heads,
128 wide, context 64, batch 12, AdamW lr 1e-3 with 100 warmup steps and a cosine down to
1e-4 over 2000 steps, beta2 0.99, dropout 0, gradient clipping at 1.0, characters as
tokens, the first 90% of the text to train and the last 10% to validate.

Two corpora:
- Tiny Shakespeare (../shared/data/tinyshakespeare.txt): target validation loss <= 1.88;
- TinyTales of about the same size: validation bits per character against the corpus's
  entropy floor (llmkit.data.tinytales.entropy_floor_bits_per_char), the lowest any model
  could reach on it.

    python bench/baby_gpt.py                           # both, 2000 steps each
    python bench/baby_gpt.py --steps 200 --corpus shakespeare
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch

from llmkit.bench import matmul_peak_flops
from llmkit.data.batches import split_train_val
from llmkit.data.text import load_text
from llmkit.data.tinytales import entropy_floor_bits_per_char, generate_stories, tinytales_text
from llmkit.device import describe, pick_device
from llmkit.model import GPT, GPTConfig
from llmkit.tokenizers import CharTokenizer
from llmkit.train import TrainConfig, Trainer

SHAKESPEARE = Path(__file__).resolve().parents[2] / "shared" / "data" / "tinyshakespeare.txt"
SHAKESPEARE_CHARS = 1_115_394
FINAL_EVAL_ITERS = 200


def train_recipe(text: str, steps: int, device, compile_model: bool, peak_flops: float) -> dict:
    """Train the recipe on `text`; returns the final losses (200 eval batches) and speeds."""
    tokenizer = CharTokenizer.train(text)
    train_ids, val_ids = split_train_val(torch.tensor(tokenizer.encode(text)), 0.1)
    torch.manual_seed(1337)
    model = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, context_length=64, n_layer=4, n_head=4,
                          d_model=128, dropout=0.0))
    config = TrainConfig(max_steps=steps, batch_size=12, lr=1e-3, min_lr=1e-4, warmup_steps=100,
                         lr_decay_steps=steps, beta2=0.99, grad_clip=1.0, weight_decay=0.1,
                         eval_interval=500, eval_iters=20, compile=compile_model, progress=False)
    trainer = Trainer(model, train_ids, val_ids, config, device=device)
    start = time.perf_counter()
    history = trainer.fit()
    wall_s = time.perf_counter() - start

    step_records = [r for r in history if "loss" in r]
    tokens_per_step = config.batch_size * trainer.context_length
    train_seconds = sum(tokens_per_step / r["tokens_per_sec"] for r in step_records)  # evals left out
    tokens_per_sec = len(step_records) * tokens_per_step / train_seconds
    trainer.config.eval_iters = FINAL_EVAL_ITERS
    final = trainer.estimate_loss()
    return {**final, "wall_s": wall_s, "tokens_per_sec": tokens_per_sec,
            "mfu": tokens_per_sec * model.flops_per_token(trainer.context_length) / peak_flops}


def tinytales_corpus(n_chars: int) -> tuple[str, float]:
    """About n_chars of TinyTales text and its entropy floor in bits per character."""
    sample = tinytales_text(200, seed=0)
    n_stories = math.ceil(200 * n_chars / len(sample))
    return tinytales_text(n_stories, seed=0), entropy_floor_bits_per_char(generate_stories(n_stories, seed=0))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000, help="optimizer steps (default 2000)")
    parser.add_argument("--corpus", choices=("shakespeare", "tinytales", "both"), default="both")
    parser.add_argument("--data", type=Path, default=SHAKESPEARE, help="Tiny Shakespeare's path")
    parser.add_argument("--compile", action="store_true", help="train with torch.compile")
    parser.add_argument("--device", help="cpu, cuda, mps (default: the fastest present)")
    args = parser.parse_args(argv)

    device = pick_device(args.device)
    peak = matmul_peak_flops(device)
    print(f"{describe(device)}\nfloat32 matmul peak {peak / 1e9:,.1f} GFLOP/s; recipe: {args.steps} steps")
    if args.corpus in ("shakespeare", "both"):
        result = train_recipe(load_text(args.data), args.steps, device, args.compile, peak)
        print(f"Tiny Shakespeare: val loss {result['val_loss']:.4f} (target <= 1.88), train loss "
              f"{result['train_loss']:.4f}, {result['wall_s']:.1f} s, "
              f"{result['tokens_per_sec']:,.0f} tokens/s, MFU {result['mfu']:.0%}")
    if args.corpus in ("tinytales", "both"):
        text, floor = tinytales_corpus(SHAKESPEARE_CHARS)
        result = train_recipe(text, args.steps, device, args.compile, peak)
        bits = result["val_loss"] / math.log(2)
        print(f"TinyTales ({len(text):,} chars): val {bits:.3f} bits/char, entropy floor "
              f"{floor:.3f} bits/char (gap {bits - floor:.3f}), {result['wall_s']:.1f} s, "
              f"{result['tokens_per_sec']:,.0f} tokens/s, MFU {result['mfu']:.0%}")


if __name__ == "__main__":
    main()
