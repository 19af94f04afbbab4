"""`python -m llmkit bench`: speed figures for this machine, printed (never asserted).

    python -m llmkit bench                       # everything, about a minute on a laptop CPU
    python -m llmkit bench --only matmul,train --train-steps 300
    python -m llmkit bench --only train --precision bf16 --attention manual   # CPU with bf16

- matmul: the matmul peak, the best of several large square products, in float32 and
  (where the hardware has it) bfloat16. It is the yardstick of model FLOPs utilisation
  (MFU): how much of that peak training achieves. MFU is stated against the peak of the
  number format the matmuls ran in: float32's for fp32 training, bfloat16's for bf16.
- train: tokens/s and MFU of the baby-GPT recipe (4 layers, 4 heads, 128 wide, context 64,
  batch 12) with `llmkit.train.Trainer` in the chosen precision (see
  `TrainConfig.precision`) and attention path (`GPTConfig.attention`; on a CPU in bf16 the
  written-out "manual" one is much faster than SDPA, whose backward is slow there);
  FLOPs per token from `GPT.flops_per_token`.
- decode: tokens/s writing 256 new tokens at batch 1, greedy, with and without the KV
  cache, and Hugging Face's `GPT2LMHeadModel.generate` (use_cache=True) on the same
  weights (built from a GPT2Config, no download).
- bpe: seconds to train `BPETokenizer` (vocab 1024) on 1 MB of Python standard-library source.

Other processes on the machine slow every figure; compare figures from one run.
"""

from __future__ import annotations

import argparse
import time

import torch

from llmkit.device import autocast_dtype, describe, pick_device, synchronize

SECTIONS = ("matmul", "train", "decode", "bpe")
# The baby-GPT recipe of lesson 07 (bench/baby_gpt.py trains it to the end).
RECIPE_SHAPE = dict(n_layer=4, n_head=4, d_model=128, context_length=64, dropout=0.0)
RECIPE_VOCAB = 65   # Tiny Shakespeare's characters


def matmul_peak_flops(device=None, size: int = 2048, repeats: int = 5,
                      dtype: torch.dtype = torch.float32) -> float:
    """The best FLOP/s of `repeats` (size x size) @ (size x size) matmuls in `dtype` on `device`.

    A square product does 2 * size**3 FLOPs; the best of several runs is the peak, not a
    figure pulled down by whatever else the machine was doing.
    """
    device = pick_device(device)
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    a @ b   # warm up (thread pools, GPU kernels)
    synchronize(device)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def training_speed(steps: int = 100, warmup_steps: int = 10, device=None, compile: bool = False,
                   precision: str = "auto", attention: str = "sdpa") -> dict:
    """Train the baby-GPT recipe for `steps` timed steps (after `warmup_steps` untimed ones).

    Returns {"tokens_per_sec", "flops_per_token", "achieved_flops", "matmul_dtype"}, the
    last being the dtype the matmuls ran in (float32 or bfloat16). The data are random
    tokens: speed does not depend on what the text says. With compile, the compilation
    happens in the untimed warm-up steps.
    """
    from llmkit.model import GPT, GPTConfig
    from llmkit.train import TrainConfig, Trainer

    device = pick_device(device)
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=RECIPE_VOCAB, attention=attention, **RECIPE_SHAPE))
    ids = torch.randint(0, RECIPE_VOCAB, (100_000,))
    config = TrainConfig(max_steps=warmup_steps, batch_size=12, eval_interval=0, progress=False,
                         compile=compile, precision=precision, lr_decay_steps=2000, log_interval=10)
    trainer = Trainer(model, ids, ids[:1000], config, device=device)
    trainer.fit()
    synchronize(device)
    trainer.config.max_steps = warmup_steps + steps
    start = time.perf_counter()
    trainer.fit()
    synchronize(device)
    seconds = time.perf_counter() - start
    tokens_per_sec = steps * config.batch_size * trainer.context_length / seconds
    flops_per_token = model.flops_per_token(trainer.context_length)
    return {"tokens_per_sec": tokens_per_sec, "flops_per_token": flops_per_token,
            "achieved_flops": tokens_per_sec * flops_per_token,
            "matmul_dtype": autocast_dtype(device, precision) or torch.float32}


def decode_speed(new_tokens: int = 256, prompt_tokens: int = 16, device=None) -> dict:
    """Greedy decoding speed (tokens/s) at batch 1: llmkit with and without the KV cache,
    and transformers' GPT2LMHeadModel.generate with its cache, on the same weights.

    The model is the recipe's shape with a context long enough for prompt + new tokens.
    Returns {"kv_cache", "no_cache", "transformers", "same_tokens"}; same_tokens says
    whether all three wrote the same text (they should: same weights, greedy).
    """
    from llmkit.generate import generate
    from llmkit.model.gpt2 import from_hf_model

    device = pick_device(device)
    try:
        from transformers import GPT2Config, GPT2LMHeadModel
    except ImportError:
        GPT2LMHeadModel = None

    torch.manual_seed(0)
    context = prompt_tokens + new_tokens
    if GPT2LMHeadModel is not None:
        hf_config = GPT2Config(vocab_size=RECIPE_VOCAB, n_positions=context, n_embd=RECIPE_SHAPE["d_model"],
                               n_layer=RECIPE_SHAPE["n_layer"], n_head=RECIPE_SHAPE["n_head"],
                               resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                               bos_token_id=None, eos_token_id=None)
        hf_model = GPT2LMHeadModel(hf_config).to(device).eval()
        model = from_hf_model(hf_model).to(device)
    else:
        from llmkit.model import GPT, GPTConfig

        model = GPT(GPTConfig(vocab_size=RECIPE_VOCAB, **{**RECIPE_SHAPE, "context_length": context}))
        model = model.to(device).eval()
    prompt = torch.randint(0, RECIPE_VOCAB, (1, prompt_tokens), device=device)

    def timed(run):
        run(8)   # warm up
        synchronize(device)
        start = time.perf_counter()
        out = run(new_tokens)
        synchronize(device)
        return new_tokens / (time.perf_counter() - start), out[0, prompt_tokens:].tolist()

    result = {}
    result["kv_cache"], with_cache = timed(
        lambda n: generate(model, prompt, n, temperature=0, use_kv_cache=True))
    result["no_cache"], without_cache = timed(
        lambda n: generate(model, prompt, n, temperature=0, use_kv_cache=False))
    same = with_cache == without_cache
    if GPT2LMHeadModel is not None:
        attention = torch.ones_like(prompt)

        @torch.no_grad()
        def hf_generate(n):
            return hf_model.generate(prompt, attention_mask=attention, max_new_tokens=n,
                                     do_sample=False, use_cache=True, pad_token_id=0)

        result["transformers"], theirs = timed(hf_generate)
        same = same and theirs == with_cache
    result["same_tokens"] = same
    return result


def bpe_training_seconds(n_chars: int = 1_000_000, vocab_size: int = 1024) -> float:
    """Seconds for BPETokenizer.train on n_chars characters of Python standard-library source.

    Code, not TinyTales: the stories' small world runs out of pairs to merge long before
    1024 tokens, while real source text keeps every merge busy.
    """
    from llmkit.data.text import python_stdlib_source
    from llmkit.tokenizers import BPETokenizer

    text = python_stdlib_source(max_chars=n_chars)
    start = time.perf_counter()
    BPETokenizer.train(text, vocab_size)
    return time.perf_counter() - start


def main(argv=None) -> int:
    """Parse the arguments, run the chosen sections and print their figures."""
    parser = argparse.ArgumentParser(prog="python -m llmkit bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default=",".join(SECTIONS),
                        help=f"comma-separated sections to run, of {', '.join(SECTIONS)} (default: all)")
    parser.add_argument("--device", help="cpu, cuda, mps (default: the fastest present)")
    parser.add_argument("--train-steps", type=int, default=100, help="timed training steps (default 100)")
    parser.add_argument("--compile", action="store_true", help="train with torch.compile")
    parser.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                        help="training precision, as TrainConfig.precision (default auto)")
    parser.add_argument("--attention", choices=("sdpa", "manual"), default="sdpa",
                        help="the model's attention path, as GPTConfig.attention (default sdpa)")
    parser.add_argument("--new-tokens", type=int, default=256, help="tokens to decode (default 256)")
    parser.add_argument("--bpe-chars", type=int, default=1_000_000, help="BPE training text size")
    args = parser.parse_args(argv)
    sections = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown or not sections:
        parser.error(f"--only takes some of {', '.join(SECTIONS)}; got {args.only!r}")
    device = pick_device(args.device)
    print(describe(device))

    peaks = {}
    if "matmul" in sections or "train" in sections:
        dtypes = [torch.float32]
        if autocast_dtype(device, "bf16") == torch.bfloat16:
            dtypes.append(torch.bfloat16)
        for dtype in dtypes:
            peaks[dtype] = matmul_peak_flops(device, dtype=dtype)
            name = str(dtype).removeprefix("torch.")
            print(f"matmul  {name} peak (best of 5, 2048^3): {peaks[dtype] / 1e9:,.1f} GFLOP/s")
    if "train" in sections:
        speed = training_speed(args.train_steps, device=device, compile=args.compile,
                               precision=args.precision, attention=args.attention)
        dtype = speed["matmul_dtype"]
        mfu = speed["achieved_flops"] / peaks[dtype]
        dtype_name = str(dtype).removeprefix("torch.")
        print(f"train   baby GPT, batch 12 x 64, {dtype_name} matmuls, {args.attention} attention"
              f"{', compiled' if args.compile else ''}: {speed['tokens_per_sec']:,.0f} tokens/s, "
              f"{speed['achieved_flops'] / 1e9:,.1f} GFLOP/s, MFU {mfu:.0%} of the {dtype_name} "
              "matmul peak")
    if "decode" in sections:
        speed = decode_speed(args.new_tokens, device=device)
        line = (f"decode  {args.new_tokens} tokens, batch 1, greedy: KV cache {speed['kv_cache']:,.0f} "
                f"tokens/s, no cache {speed['no_cache']:,.0f} tokens/s "
                f"({speed['kv_cache'] / speed['no_cache']:.1f}x)")
        if "transformers" in speed:
            line += (f", transformers generate {speed['transformers']:,.0f} tokens/s "
                     f"(ours {speed['kv_cache'] / speed['transformers']:.2f}x)")
        print(line + ("" if speed["same_tokens"] else "  WARNING: the outputs differ"))
    if "bpe" in sections:
        seconds = bpe_training_seconds(args.bpe_chars)
        print(f"bpe     BPETokenizer.train on {args.bpe_chars:,} characters, vocab 1024: {seconds:.1f} s")
    return 0
