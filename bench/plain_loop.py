"""The plain PyTorch baseline for the baby-GPT recipe, and our trainer side by side.

The baseline is written the way a typical minimal GPT training script is: its own small
GPT-2 model class (fused qkv projection, `F.scaled_dot_product_attention`, GELU MLP,
pre-LayerNorm blocks, tied embeddings; `--attention manual` writes the masked softmax out
instead), `torch.optim.AdamW` with its default (foreach)
implementation, no compile, one `get_batch` and one `loss.item()` per step.

It then trains `llmkit.model.GPT` with `llmkit.train.Trainer` on the same data, shape and
hyper-parameters, and prints both speeds and their ratio. The two runs alternate in short
blocks, so that load from other processes on a shared machine hits both about equally.

    python bench/plain_loop.py                       # 300 steps each, in blocks of 10
    python bench/plain_loop.py --attention manual    # the baseline with written-out attention
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "tinyshakespeare.txt"

# The baby-GPT recipe (nanoGPT's shakespeare_char, shrunk to fit a laptop CPU).
N_LAYER, N_HEAD, D_MODEL, CONTEXT, BATCH = 4, 4, 128, 64, 12
LR, MIN_LR, WARMUP, DECAY_STEPS, BETA2, CLIP = 1e-3, 1e-4, 100, 2000, 0.99, 1.0


class Block(nn.Module):
    def __init__(self, d_model: int, n_head: int, attention: str):
        super().__init__()
        self.n_head, self.attention = n_head, attention
        self.ln1 = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.ln2 = nn.LayerNorm(d_model)
        self.fc = nn.Linear(d_model, 4 * d_model)
        self.fc_out = nn.Linear(4 * d_model, d_model)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        if self.attention == "sdpa":
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:   # the masked softmax written out, as in nanoGPT's fallback
            att = (q @ k.transpose(-2, -1)) / math.sqrt(k.shape[-1])
            mask = torch.tril(torch.ones(T, T, dtype=torch.bool))
            y = F.softmax(att.masked_fill(~mask, float("-inf")), dim=-1) @ v
        x = x + self.proj(y.transpose(1, 2).contiguous().view(B, T, C))
        return x + self.fc_out(F.gelu(self.fc(self.ln2(x))))


class PlainGPT(nn.Module):
    def __init__(self, vocab_size: int, attention: str = "sdpa"):
        super().__init__()
        self.tok = nn.Embedding(vocab_size, D_MODEL)
        self.pos = nn.Embedding(CONTEXT, D_MODEL)
        self.blocks = nn.ModuleList(Block(D_MODEL, N_HEAD, attention) for _ in range(N_LAYER))
        self.ln_f = nn.LayerNorm(D_MODEL)
        self.head = nn.Linear(D_MODEL, vocab_size, bias=False)
        self.head.weight = self.tok.weight

    def forward(self, idx, targets):
        x = self.tok(idx) + self.pos(torch.arange(idx.shape[1]))
        for block in self.blocks:
            x = block(x)
        logits = self.head(self.ln_f(x))
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))


def get_batch(data):
    starts = torch.randint(len(data) - CONTEXT, (BATCH,))
    x = torch.stack([data[i : i + CONTEXT] for i in starts])
    y = torch.stack([data[i + 1 : i + 1 + CONTEXT] for i in starts])
    return x, y


def lr_at(step):
    if step < WARMUP:
        return LR * (step + 1) / WARMUP
    ratio = min(1.0, (step - WARMUP) / (DECAY_STEPS - WARMUP))
    return MIN_LR + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (LR - MIN_LR)


class PlainRun:
    """The plain loop, continued block by block so it can alternate with ours."""

    def __init__(self, train_data, vocab_size, attention):
        torch.manual_seed(1337)
        self.data = train_data
        self.model = PlainGPT(vocab_size, attention)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=LR, betas=(0.9, BETA2))
        self.step = 0

    def run(self, steps):
        start = time.perf_counter()
        for _ in range(steps):
            for group in self.optimizer.param_groups:
                group["lr"] = lr_at(self.step)
            x, y = get_batch(self.data)
            loss = self.model(x, y)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), CLIP)
            self.optimizer.step()
            self.last_loss = loss.item()
            self.step += 1
        return time.perf_counter() - start


class LlmkitRun:
    """Our trainer on the same recipe, continued block by block by raising `max_steps`."""

    def __init__(self, train_data, val_data, vocab_size, compile_model):
        from llmkit.model import GPT, GPTConfig
        from llmkit.train import TrainConfig, Trainer

        torch.manual_seed(1337)
        config = GPTConfig(vocab_size=vocab_size, context_length=CONTEXT, n_layer=N_LAYER,
                           n_head=N_HEAD, d_model=D_MODEL, dropout=0.0)
        self.train_config = TrainConfig(
            max_steps=0, batch_size=BATCH, lr=LR, min_lr=MIN_LR, warmup_steps=WARMUP,
            lr_decay_steps=DECAY_STEPS, beta2=BETA2, grad_clip=CLIP, eval_interval=0,
            compile=compile_model, progress=False, device="cpu",
        )
        self.trainer = Trainer(GPT(config), train_data, val_data, self.train_config)

    def run(self, steps):
        self.trainer.config.max_steps = self.trainer.step + steps
        start = time.perf_counter()
        self.trainer.fit()
        return time.perf_counter() - start


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="a text file")
    parser.add_argument("--steps", type=int, default=300, help="timed steps per trainer (default 300)")
    parser.add_argument("--block", type=int, default=10, help="steps per timed block (default 10)")
    parser.add_argument("--compile", action="store_true", help="torch.compile our model")
    parser.add_argument("--attention", choices=("sdpa", "manual"), default="sdpa",
                        help="the baseline's attention (default sdpa, the faster one)")
    parser.add_argument("--plain-only", action="store_true", help="skip our trainer")
    args = parser.parse_args(argv)

    text = args.data.read_text(encoding="utf-8")
    chars = sorted(set(text))
    index = {ch: i for i, ch in enumerate(chars)}
    data = torch.tensor([index[ch] for ch in text], dtype=torch.long)
    n_train = int(0.9 * len(data))
    train_data, val_data = data[:n_train], data[n_train:]

    runs = {"plain": PlainRun(train_data, len(chars), args.attention)}
    if not args.plain_only:
        runs["llmkit"] = LlmkitRun(train_data, val_data, len(chars), args.compile)
    # A few warm-up steps each (and, with --compile, the compilation), not timed.
    warmup_s = {name: run.run(5) for name, run in runs.items()}
    # Short alternating blocks, so a burst of load from elsewhere hits both; the median
    # block is the figure least moved by such bursts.
    blocks = {name: [] for name in runs}
    for _ in range(max(1, args.steps // args.block)):
        for name, run in runs.items():
            blocks[name].append(run.run(args.block))

    tokens = args.block * BATCH * CONTEXT
    median = {name: tokens / statistics.median(times) for name, times in blocks.items()}
    overall = {name: tokens * len(times) / sum(times) for name, times in blocks.items()}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{len(blocks['plain'])} blocks of {args.block} steps of {BATCH} x {CONTEXT} tokens each, "
          f"baseline attention {args.attention}")
    for name in runs:
        print(f"{name:>7}: {median[name]:9.0f} tokens/s median block, {overall[name]:9.0f} overall "
              f"(first 5 steps {warmup_s[name]:.1f} s)")
    if "llmkit" in runs:
        print(f"  ratio: {median['llmkit'] / median['plain']:.2f}x llmkit over plain (median blocks), "
              f"{overall['llmkit'] / overall['plain']:.2f}x overall")


if __name__ == "__main__":
    main()
