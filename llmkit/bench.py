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
- decode: new tokens/s writing 256 tokens, greedy, at batch 1 and 16: llmkit's eager loop
  (KV cache; at batch 1 also without), its compiled one-token step (`llmkit.fast_decode`,
  with the compile time and the number of tokens after which compiling pays off), and
  Hugging Face's `GPT2LMHeadModel.generate` (use_cache=True) on the same weights (built
  from a GPT2Config, no download); then 16 prompts of different lengths decoded as one
  batch (`llmkit.generate.generate_batch`) against 16 single calls.
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


def decode_models(context: int, device):
    """The recipe's shape with a context of `context`: (llmkit GPT, transformers model or None)
    on the same random weights (transformers' GPT2LMHeadModel built from a GPT2Config, no
    download), both in eval mode on `device`."""
    from llmkit.model import GPT, GPTConfig
    from llmkit.model.gpt2 import from_hf_model

    torch.manual_seed(0)
    try:
        from transformers import GPT2Config, GPT2LMHeadModel
    except ImportError:
        model = GPT(GPTConfig(vocab_size=RECIPE_VOCAB, **{**RECIPE_SHAPE, "context_length": context}))
        return model.to(device).eval(), None
    hf_config = GPT2Config(vocab_size=RECIPE_VOCAB, n_positions=context, n_embd=RECIPE_SHAPE["d_model"],
                           n_layer=RECIPE_SHAPE["n_layer"], n_head=RECIPE_SHAPE["n_head"],
                           resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                           bos_token_id=None, eos_token_id=None)
    hf_model = GPT2LMHeadModel(hf_config).to(device).eval()
    return from_hf_model(hf_model).to(device).eval(), hf_model


def best_rate(run, n_tokens: int, device, repeats: int = 3) -> tuple[float, list]:
    """(n_tokens / the best of `repeats` timed runs of run(n_tokens), the last run's output),
    after one short untimed warm-up run. The best run is the one least slowed by whatever
    else the machine was doing."""
    run(8)
    best, out = float("inf"), None
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        out = run(n_tokens)
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return n_tokens / best, out


def decode_speed(new_tokens: int = 256, prompt_tokens: int = 16, batch_sizes=(1, 16),
                 device=None, repeats: int = 3) -> dict:
    """Greedy decoding speed in new tokens per second (all rows together), per batch size:
    llmkit's eager loop with the KV cache ("eager") and without ("no_cache", batch 1 only),
    the compiled one-token step of llmkit.fast_decode ("compiled"), and transformers'
    GPT2LMHeadModel.generate with its cache ("transformers"), on the same weights.

    Returns {batch: {name: tokens/s, ..., "same_tokens": bool}, "compile_seconds": s,
    "break_even_tokens": n}. same_tokens says whether all of them wrote the same tokens
    (they should: same weights, greedy). compile_seconds is the first compiled call at
    batch 1 (compiling included) less an eager step; break_even_tokens the number of
    tokens after which compiling has paid for itself at batch 1.
    """
    from llmkit.fast_decode import CompiledDecoder
    from llmkit.generate import generate

    device = pick_device(device)
    context = prompt_tokens + new_tokens
    model, hf_model = decode_models(context, device)
    result = {}
    for batch in batch_sizes:
        prompt = torch.randint(0, RECIPE_VOCAB, (batch, prompt_tokens), device=device)
        rates, outputs = {}, {}

        def timed(name, run):
            rate, out = best_rate(run, new_tokens, device, repeats)
            rates[name], outputs[name] = rate * batch, out[:, prompt_tokens:].tolist()

        decoder = CompiledDecoder(model, batch)
        started = time.perf_counter()
        decoder.generate(prompt, 2, temperature=0)   # the prompt, then one compiled step
        synchronize(device)
        first_call = time.perf_counter() - started
        timed("eager", lambda n: generate(model, prompt, n, temperature=0))
        timed("compiled", lambda n: decoder.generate(prompt, n, temperature=0))
        if batch == 1:
            timed("no_cache", lambda n: generate(model, prompt, n, temperature=0, use_kv_cache=False))
            # What compiling cost: the first call less what two eager tokens take; it pays
            # off once the time each compiled token saves adds up to that.
            compile_seconds = first_call - 2 / rates["eager"]
            saved_per_token = 1 / rates["eager"] - 1 / rates["compiled"]
            result["compile_seconds"] = compile_seconds
            result["break_even_tokens"] = (compile_seconds / saved_per_token
                                           if saved_per_token > 0 else float("inf"))
        if hf_model is not None:
            attention = torch.ones_like(prompt)

            @torch.no_grad()
            def hf_generate(n):
                return hf_model.generate(prompt, attention_mask=attention, max_new_tokens=n,
                                         min_new_tokens=n, do_sample=False, use_cache=True,
                                         pad_token_id=0)

            timed("transformers", hf_generate)
        rates["same_tokens"] = all(out == outputs["eager"] for out in outputs.values())
        result[batch] = rates
    return result


def batching_speed(n_prompts: int = 16, new_tokens: int = 64, device=None,
                   repeats: int = 3) -> dict:
    """n_prompts prompts of different lengths (4 to 4 + 2 * (n_prompts - 1) tokens), greedy:
    one call of llmkit.generate.generate_batch against one generate call per prompt.

    Returns {"batched", "single"} in new tokens per second and "same_tokens": whether every
    row of the batch equals its prompt decoded alone.
    """
    from llmkit.generate import generate, generate_batch

    device = pick_device(device)
    lengths = [4 + 2 * i for i in range(n_prompts)]
    model, _ = decode_models(max(lengths) + new_tokens, device)
    generator = torch.Generator().manual_seed(0)
    prompts = [torch.randint(0, RECIPE_VOCAB, (n,), generator=generator).tolist() for n in lengths]

    def single(n):
        return [generate(model, torch.tensor([p], device=device), n, temperature=0)[0, len(p):].tolist()
                for p in prompts]

    batched_rate, batched = best_rate(lambda n: generate_batch(model, prompts, n, temperature=0),
                                      new_tokens, device, repeats)
    single_rate, alone = best_rate(single, new_tokens, device, repeats)
    return {"batched": batched_rate * n_prompts, "single": single_rate * n_prompts,
            "same_tokens": batched == alone}


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
        if dtype not in peaks:   # e.g. float16 autocast on a GPU without bfloat16
            peaks[dtype] = matmul_peak_flops(device, dtype=dtype)
        mfu = speed["achieved_flops"] / peaks[dtype]
        dtype_name = str(dtype).removeprefix("torch.")
        print(f"train   baby GPT, batch 12 x 64, {dtype_name} matmuls, {args.attention} attention"
              f"{', compiled' if args.compile else ''}: {speed['tokens_per_sec']:,.0f} tokens/s, "
              f"{speed['achieved_flops'] / 1e9:,.1f} GFLOP/s, MFU {mfu:.0%} of the {dtype_name} "
              "matmul peak")
    if "decode" in sections:
        speed = decode_speed(args.new_tokens, device=device)
        print(f"decode  {args.new_tokens} new tokens, greedy, new tokens/s (all rows together):")
        print(f"        {'batch':>5}  {'eager':>8}  {'compiled':>8}  {'transformers':>12}  "
              "compiled/transformers  eager/transformers")
        for batch in (1, 16):
            rates = speed[batch]
            hf = rates.get("transformers")
            line = (f"        {batch:5d}  {rates['eager']:8,.0f}  {rates['compiled']:8,.0f}  "
                    + (f"{hf:12,.0f}  {rates['compiled'] / hf:20.2f}x  {rates['eager'] / hf:17.2f}x"
                       if hf else f"{'(absent)':>12}"))
            print(line + ("" if rates["same_tokens"] else "  WARNING: the outputs differ"))
        print(f"        batch 1 without the KV cache: {speed[1]['no_cache']:,.0f} tokens/s; compiling "
              f"took {speed['compile_seconds']:.1f} s and pays off after "
              f"{speed['break_even_tokens']:,.0f} tokens")
        batching = batching_speed(device=device)
        print(f"batch   16 prompts of 4-34 tokens, 64 new tokens each, greedy: one batch "
              f"{batching['batched']:,.0f} tokens/s, 16 single calls {batching['single']:,.0f} "
              f"tokens/s ({batching['batched'] / batching['single']:.1f}x)"
              + ("" if batching["same_tokens"] else "  WARNING: the outputs differ"))
    if "bpe" in sections:
        seconds = bpe_training_seconds(args.bpe_chars)
        print(f"bpe     BPETokenizer.train on {args.bpe_chars:,} characters, vocab 1024: {seconds:.1f} s")
    return 0
