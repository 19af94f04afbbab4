"""The plain PyTorch baseline for the baby-GPT recipe, and our trainer side by side.

The baseline is written the way a typical minimal GPT training script is: its own small
GPT-2 model class (fused qkv projection, `F.scaled_dot_product_attention`, GELU MLP,
pre-LayerNorm blocks, tied embeddings; `--attention manual` writes the masked softmax out
instead), `torch.optim.AdamW` with its default (foreach) implementation, float32, no
compile, one `get_batch` and one `loss.item()` per step.

It then trains `llmkit.model.GPT` with `llmkit.train.Trainer` on the same data, shape and
hyper-parameters in each of the `--ours` settings, and prints every speed and its ratio to
the baseline. A setting is a precision (fp32 or bf16, as TrainConfig.precision), then
optionally "+manual" (GPTConfig(attention="manual"): the written-out masked softmax instead
of SDPA) and "+compile" (torch.compile). All runs alternate in short blocks, so that load
from other processes on a shared machine hits each about equally. `--plain bf16` adds the
baseline under bf16 autocast, to show how much of a bf16 speed-up the number format alone
gives a plain script.

    python bench/plain_loop.py                          # plain vs ours fp32, bf16, bf16+manual
    python bench/plain_loop.py --ours fp32,bf16+manual,bf16+manual+compile --plain fp32,bf16
    python bench/plain_loop.py --attention manual       # the baseline with written-out attention
    python bench/plain_loop.py --attention manual --plain fp32,bf16 --ours fp32,bf16+manual
                                  # a plain script with the same two changes, for comparison

Why "+manual" matters on a CPU in bf16 (measured with torch.profiler, torch 2.13, 2 cores):
the backward pass of PyTorch's CPU flash attention takes about 3.1 ms per layer and step
in bf16 (0.7 ms in float32), while the written-out attention takes about 0.6 ms forward
and backward together, so with SDPA the attention eats most of what the bf16 matmuls save.
On a CPU without native bf16, "bf16" warns and runs in float32 (see llmkit.device).
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

from llmkit.data.text import load_text, tiny_shakespeare


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
    """The plain loop, continued block by block so it can alternate with ours.

    bf16=True wraps the forward pass in torch.autocast(bfloat16), the one-line change a
    plain script would make; it is not the baseline.
    """

    def __init__(self, train_data, vocab_size, attention, bf16=False):
        torch.manual_seed(1337)
        self.data = train_data
        self.model = PlainGPT(vocab_size, attention)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=LR, betas=(0.9, BETA2))
        self.autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16)
        self.step = 0

    def run(self, steps):
        start = time.perf_counter()
        for _ in range(steps):
            for group in self.optimizer.param_groups:
                group["lr"] = lr_at(self.step)
            x, y = get_batch(self.data)
            with self.autocast:
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

    def __init__(self, train_data, val_data, vocab_size, precision, compile_model, attention="sdpa"):
        from llmkit.model import GPT, GPTConfig
        from llmkit.train import TrainConfig, Trainer

        torch.manual_seed(1337)
        config = GPTConfig(vocab_size=vocab_size, context_length=CONTEXT, n_layer=N_LAYER,
                           n_head=N_HEAD, d_model=D_MODEL, dropout=0.0, attention=attention)
        self.train_config = TrainConfig(
            max_steps=0, batch_size=BATCH, lr=LR, min_lr=MIN_LR, warmup_steps=WARMUP,
            lr_decay_steps=DECAY_STEPS, beta2=BETA2, grad_clip=CLIP, eval_interval=0,
            compile=compile_model, precision=precision, progress=False, device="cpu",
        )
        self.trainer = Trainer(GPT(config), train_data, val_data, self.train_config)

    def run(self, steps):
        self.trainer.config.max_steps = self.trainer.step + steps
        start = time.perf_counter()
        self.trainer.fit()
        return time.perf_counter() - start


def parse_settings(text: str, allowed: tuple[str, ...]) -> list[str]:
    settings = [part.strip() for part in text.split(",") if part.strip()]
    wrong = [part for part in settings if part not in allowed]
    if wrong:
        raise SystemExit(f"unknown setting(s) {wrong}; choose from {', '.join(allowed)}")
    return settings


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path,
                        help="a text file (default: Tiny Shakespeare, shipped with llmkit)")
    parser.add_argument("--steps", type=int, default=300, help="timed steps per run (default 300)")
    parser.add_argument("--block", type=int, default=10, help="steps per timed block (default 10)")
    parser.add_argument("--ours", default="fp32,bf16,bf16+manual",
                        help="our settings, comma-separated: fp32 or bf16, then optionally "
                             "+manual and +compile (default fp32,bf16,bf16+manual); '' runs "
                             "the baseline alone")
    parser.add_argument("--plain", default="fp32",
                        help="baseline settings: fp32 (the baseline), bf16 (with autocast)")
    parser.add_argument("--attention", choices=("sdpa", "manual"), default="sdpa",
                        help="the baseline's attention (default sdpa, the faster one)")
    args = parser.parse_args(argv)

    text = tiny_shakespeare() if args.data is None else load_text(args.data)
    chars = sorted(set(text))
    index = {ch: i for i, ch in enumerate(chars)}
    data = torch.tensor([index[ch] for ch in text], dtype=torch.long)
    n_train = int(0.9 * len(data))
    train_data, val_data = data[:n_train], data[n_train:]

    runs = {}
    for setting in parse_settings(args.plain, ("fp32", "bf16")):
        runs[f"plain {setting}"] = PlainRun(train_data, len(chars), args.attention, setting == "bf16")
    ours = [f"{precision}{manual}{compiled}" for precision in ("fp32", "bf16")
            for manual in ("", "+manual") for compiled in ("", "+compile")]
    for setting in parse_settings(args.ours, tuple(ours)):
        attention = "manual" if "+manual" in setting else "sdpa"
        runs[f"ours {setting}"] = LlmkitRun(train_data, val_data, len(chars), setting.split("+")[0],
                                            "+compile" in setting, attention)
    # A few warm-up steps each (and, with compile, the compilation), not timed.
    warmup_s = {name: run.run(5) for name, run in runs.items()}
    # Short alternating blocks, so a burst of load from elsewhere hits all; the median
    # block is the figure least moved by such bursts.
    blocks = {name: [] for name in runs}
    for _ in range(max(1, args.steps // args.block)):
        for name, run in runs.items():
            blocks[name].append(run.run(args.block))

    tokens = args.block * BATCH * CONTEXT
    median = {name: tokens / statistics.median(times) for name, times in blocks.items()}
    overall = {name: tokens * len(times) / sum(times) for name, times in blocks.items()}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{max(1, args.steps // args.block)} blocks of {args.block} steps of {BATCH} x {CONTEXT} tokens each, "
          f"baseline attention {args.attention}")
    baseline = "plain fp32" if "plain fp32" in runs else None
    for name in runs:
        line = (f"{name:>24}: {median[name]:7.0f} tokens/s median block, {overall[name]:7.0f} overall, "
                f"first 5 steps {warmup_s[name]:5.1f} s")
        if baseline and name != baseline:
            line += (f" | {median[name] / median[baseline]:.2f}x plain fp32 (median), "
                     f"{overall[name] / overall[baseline]:.2f}x overall")
        print(line)
    for name in runs:
        if name.endswith("+compile") and name.removesuffix("+compile") in runs:
            eager = name.removesuffix("+compile")
            step_eager = BATCH * CONTEXT / median[eager]
            step_compiled = BATCH * CONTEXT / median[name]
            extra = warmup_s[name] - warmup_s[eager]   # compiling, beyond 5 ordinary steps
            saved = step_eager - step_compiled
            payback = f"after {extra / saved:,.0f} steps" if saved > 0 else "never (no faster per step)"
            print(f"{name}: compiling cost {extra:.1f} s, saves {saved * 1e3:.1f} ms/step: pays back {payback}")


if __name__ == "__main__":
    main()
