"""The baby-GPT recipe, trained to the end: final validation loss, wall time, tokens/s, MFU.

The recipe (nanoGPT's shakespeare_char, sized for a laptop CPU): 4 layers, 4 heads,
128 wide, context 64, batch 12, AdamW lr 1e-3 with 100 warmup steps and a cosine down to
1e-4 over 2000 steps, weight decay 0.1, beta2 0.99, dropout 0, gradient clipping at 1.0,
characters as tokens, the first 90% of the text to train and the last 10% to validate.

The final validation loss is measured over the whole validation split
(`llmkit.train.stream_loss`, in float32 whatever the training precision), not over a few
random batches: nanoGPT's 20 batches of 12 x 64 move the figure by about +-0.01, as
much as a change of seed does. With several seeds (each seeds the initial weights, the
batch order and the evaluation batches) the mean and the spread are printed too.

Two corpora:
- Tiny Shakespeare (shipped with llmkit, `llmkit.data.text.tiny_shakespeare`): nanoGPT's README reports a
  validation loss of 1.88 for this recipe (one run, 20 eval batches);
- TinyTales of about the same size: validation bits per character against the corpus's
  entropy floor (llmkit.data.tinytales.entropy_floor_bits_per_char), the lowest any model
  could reach on it.

    python bench/baby_gpt.py                                   # both corpora, seed 1337
    python bench/baby_gpt.py --corpus shakespeare --seeds 1337,1338,1339
    # on a CPU with native bf16, about twice as fast:
    python bench/baby_gpt.py --corpus shakespeare --seeds 1337,1338,1339 --precision bf16 --attention manual
    python bench/baby_gpt.py --steps 200 --corpus shakespeare  # a quick look
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from pathlib import Path

import torch

from llmkit.bench import matmul_peak_flops
from llmkit.data.batches import split_train_val
from llmkit.data.text import load_text, tiny_shakespeare
from llmkit.data.tinytales import entropy_floor_bits_per_char, generate_stories, tinytales_text
from llmkit.device import autocast_dtype, describe, pick_device
from llmkit.model import GPT, GPTConfig
from llmkit.tokenizers import CharTokenizer
from llmkit.train import TrainConfig, Trainer, stream_loss

SHAKESPEARE_CHARS = 1_115_394


def train_recipe(text: str, steps: int, seed: int, device, precision: str, attention: str,
                 compile_model: bool, peak_flops: float) -> dict:
    """Train the recipe on `text` from `seed`; returns the final losses and the speed.

    train_loss is measured on the last stretch of the training split, as long as the
    validation split, so that it costs no more than the validation loss.
    """
    tokenizer = CharTokenizer.train(text)
    train_ids, val_ids = split_train_val(torch.tensor(tokenizer.encode(text)), 0.1)
    torch.manual_seed(seed)
    model = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, context_length=64, n_layer=4, n_head=4,
                          d_model=128, dropout=0.0, attention=attention))
    config = TrainConfig(max_steps=steps, batch_size=12, lr=1e-3, min_lr=1e-4, warmup_steps=100,
                         lr_decay_steps=steps, beta2=0.99, grad_clip=1.0, weight_decay=0.1,
                         eval_interval=500, eval_iters=20, seed=seed, precision=precision,
                         compile=compile_model, progress=False, log_interval=10)
    trainer = Trainer(model, train_ids, val_ids, config, device=device)
    start = time.perf_counter()
    history = trainer.fit()
    wall_s = time.perf_counter() - start

    step_records = [r for r in history if "loss" in r]
    tokens_per_step = config.batch_size * trainer.context_length
    # Records come in groups of log_interval, each carrying its group's speed; evaluations
    # fall between groups, so they are left out of the time.
    train_seconds = sum(tokens_per_step / r["tokens_per_sec"] for r in step_records)
    tokens_per_sec = len(step_records) * tokens_per_step / train_seconds
    return {"val_loss": stream_loss(model, val_ids, trainer.context_length),
            "train_loss": stream_loss(model, train_ids[-len(val_ids):], trainer.context_length),
            "val_loss_20_batches": history[-1]["val_loss"], "wall_s": wall_s,
            "tokens_per_sec": tokens_per_sec,
            "mfu": tokens_per_sec * model.flops_per_token(trainer.context_length) / peak_flops}


def tinytales_corpus(n_chars: int) -> tuple[str, float]:
    """About n_chars of TinyTales text and its entropy floor in bits per character."""
    sample = tinytales_text(200, seed=0)
    n_stories = math.ceil(200 * n_chars / len(sample))
    return tinytales_text(n_stories, seed=0), entropy_floor_bits_per_char(generate_stories(n_stories, seed=0))


def spread(values: list[float]) -> str:
    """'mean 1.8972 +- 0.0073 (min .. max)' for several values, the value alone for one."""
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return (f"mean {statistics.mean(values):.4f} +- {statistics.stdev(values):.4f} "
            f"(min {min(values):.4f}, max {max(values):.4f}, {len(values)} seeds)")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000, help="optimizer steps (default 2000)")
    parser.add_argument("--corpus", choices=("shakespeare", "tinytales", "both"), default="both")
    parser.add_argument("--data", type=Path,
                        help="a text file instead of Tiny Shakespeare (default: the copy shipped with llmkit)")
    parser.add_argument("--seeds", default="1337", help="comma-separated seeds (default 1337)")
    parser.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                        help="TrainConfig.precision (default auto: float32 on CPU)")
    parser.add_argument("--attention", choices=("sdpa", "manual"), default="sdpa",
                        help="GPTConfig.attention (default sdpa; bf16 training on a CPU takes the manual path anyway)")
    parser.add_argument("--compile", action="store_true", help="train with torch.compile")
    parser.add_argument("--device", help="cpu, cuda, mps (default: the fastest present)")
    args = parser.parse_args(argv)
    seeds = [int(seed) for seed in args.seeds.split(",") if seed.strip()]

    device = pick_device(args.device)
    dtype = autocast_dtype(device, args.precision) or torch.float32
    dtype_name = str(dtype).removeprefix("torch.")
    peak = matmul_peak_flops(device, dtype=dtype)
    print(f"{describe(device)}\n{dtype_name} matmul peak {peak / 1e9:,.1f} GFLOP/s (MFU is against "
          f"it); recipe: {args.steps} steps, precision {args.precision}, {args.attention} attention"
          f"{', compiled' if args.compile else ''}, seeds {seeds}")
    corpora = []
    if args.corpus in ("shakespeare", "both"):
        text = tiny_shakespeare() if args.data is None else load_text(args.data)
        corpora.append(("Tiny Shakespeare" if args.data is None else str(args.data), text, None))
    if args.corpus in ("tinytales", "both"):
        corpora.append(("TinyTales", *tinytales_corpus(SHAKESPEARE_CHARS)))
    for name, text, floor in corpora:
        results = []
        for seed in seeds:
            result = train_recipe(text, args.steps, seed, device, args.precision, args.attention,
                                  args.compile, peak)
            results.append(result)
            print(f"{name} seed {seed}: val loss {result['val_loss']:.4f} (whole split; 20 batches "
                  f"said {result['val_loss_20_batches']:.4f}), train loss {result['train_loss']:.4f} "
                  f"(last 10% of the training split), "
                  f"{result['wall_s']:.1f} s, {result['tokens_per_sec']:,.0f} tokens/s, "
                  f"MFU {result['mfu']:.0%}", flush=True)
        val = [r["val_loss"] for r in results]
        speed = statistics.mean(r["tokens_per_sec"] for r in results)
        if floor is None:
            print(f"{name}: val loss {spread(val)}; nanoGPT's README: 1.88. "
                  f"{statistics.mean(r['wall_s'] for r in results):.1f} s per run, {speed:,.0f} tokens/s")
        else:
            bits = [v / math.log(2) for v in val]
            print(f"{name} ({len(text):,} chars): val bits/char {spread(bits)}, entropy floor "
                  f"{floor:.3f} (gap {statistics.mean(bits) - floor:.3f}), {speed:,.0f} tokens/s")


if __name__ == "__main__":
    main()
