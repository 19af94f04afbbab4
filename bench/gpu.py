"""GPT-2 small (124M) trained on one GPU, then with DDP on every GPU: tokens/s and MFU.

    python bench/gpu.py                                   # a GPU machine: the whole benchmark
    python bench/gpu.py --steps 20 --micro-batch 16       # longer, a smaller micro-batch
    python bench/gpu.py --device cpu --preset tiny --steps 3 --processes 2   # a CPU, in seconds

What runs: llmkit's GPT in GPT-2 small's shape (12 layers, 12 heads, 768 wide, context
1024; the vocabulary of 50,257 padded to 50,304, a multiple of 64, so that the output
matmul tiles evenly on tensor cores), on a generated corpus (no download): one random
sequence of 4,096 token ids, repeated. Speed does not depend on what the tokens say, and
a repeated sequence can be learnt, so a falling loss shows that training really happens.
Each step is one optimizer step over about 2**19 tokens (GPT-2's half-million-token
batch): micro-batches of B x 1024 with gradient accumulation. A few untimed warm-up steps
(where torch.compile compiles) come before the timed ones.

The choices of the fastest small trainers (nanoGPT, llm.c): bfloat16 autocast (float16 with
a gradient scaler on GPUs without bfloat16, as `llmkit.device.autocast_dtype` decides), TF32
for whatever stays in float32, flash attention through `scaled_dot_product_attention`,
`torch.compile` (falling back to eager with one warning if it fails), fused AdamW
(`llmkit.optim.make_optimizer`), batches copied from pinned memory without blocking while
the GPU still works on the previous micro-batch, and no read-back to the host inside the
timed loop (the losses are read once, at the end).

MFU (model FLOPs utilisation) = tokens/s x FLOPs per token (`GPT.flops_per_token`, 6N plus
attention) / the peak. The peak is the GPU's bfloat16 dense tensor-core peak from its data
sheet where `PEAK_BF16_TFLOPS` knows the GPU's name, else the measured matmul peak
(`llmkit.bench.matmul_peak_flops`) of the format the matmuls ran in; the output says which.
Both are printed where both exist. On a CPU there is no table: MFU is against the measured
CPU peak.

Then data parallel: under torchrun, one process per GPU (`llmkit.distributed`), each with the
same micro-batch and a share of the accumulation steps, the gradients averaged by
DistributedDataParallel on the last micro-batch only. With one GPU this part says so and is
skipped; on a CPU, --processes N runs it with N Gloo processes.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
import warnings
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # llmkit, run from anywhere

from llmkit import distributed  # noqa: E402
from llmkit.bench import matmul_peak_flops  # noqa: E402
from llmkit.device import (autocast_dtype, describe, needs_grad_scaler, pick_device,  # noqa: E402
                           precision_reason, synchronize)
from llmkit.model import GPT, GPTConfig  # noqa: E402
from llmkit.optim import make_optimizer  # noqa: E402

# Dense (no sparsity) bfloat16 tensor-core peaks from NVIDIA's data sheets, in TFLOP/s,
# matched in order against the lower-cased device name (the first match wins, so the
# specific names come before the general ones). float16 has the same peak on all of them.
PEAK_BF16_TFLOPS = (
    (r"h100.*pcie", 756.0),
    (r"h100.*nvl", 835.0),
    (r"h200.*nvl", 835.0),
    (r"\bgh200\b", 989.0),
    (r"\bh100\b", 989.0),          # SXM: "NVIDIA H100 80GB HBM3"
    (r"\bh200\b", 989.0),
    (r"\bh800\b.*pcie", 756.0),
    (r"\bh800\b", 989.0),
    (r"\bb200\b", 2250.0),
    (r"\ba100\b", 312.0),          # SXM and PCIe alike
    (r"\ba800\b", 312.0),
    (r"\ba10\b", 125.0),           # not the A10G, whose clocks differ: measured there
    (r"\bl40s\b", 362.0),
    (r"\bl40\b", 181.0),
    (r"\bl4\b", 121.0),
    (r"rtx 4090", 165.0),
    (r"rtx 3090", 71.0),
    (r"rtx a6000", 155.0),
)
H100_CLASS = re.compile(r"\b(gh200|h100|h200|h800)\b")
MFU_TARGET = 0.40   # on an H100-class GPU


@dataclass
class Preset:
    """The model's shape, the optimizer's settings and the tokens per optimizer step."""

    n_layer: int
    n_head: int
    d_model: int
    context_length: int
    vocab_size: int          # the tokenizer's; the model's is padded to a multiple of 64
    batch_tokens: int        # tokens per optimizer step, over every process
    lr: float
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95


PRESETS = {
    "gpt2": Preset(12, 12, 768, 1024, 50_257, batch_tokens=2**19, lr=6e-4),
    "tiny": Preset(2, 2, 64, 64, 512, batch_tokens=512, lr=3e-3),
}
PATTERN_LENGTH = 4096   # the repeated random sequence of the corpus


def padded_vocab(vocab_size: int, multiple: int = 64) -> int:
    """vocab_size rounded up to a multiple of `multiple` (50,257 -> 50,304): the extra rows
    are never targets, so the model learns to give them no probability."""
    return -(-vocab_size // multiple) * multiple


def table_peak_flops(device_name: str) -> float | None:
    """The bfloat16 dense peak in FLOP/s of the GPU called device_name, or None if unknown."""
    name = device_name.lower()
    for pattern, tflops in PEAK_BF16_TFLOPS:
        if re.search(pattern, name):
            return tflops * 1e12
    return None


def default_micro_batch(device: torch.device, preset: str) -> int:
    """Sequences per micro-batch: as many as the GPU's memory holds for GPT-2 small in
    bfloat16 with compile (build-nanogpt runs 64 x 1024 on an 80 GB A100); 4 elsewhere.
    train_fitting halves it while it does not fit."""
    if preset != "gpt2" or device.type != "cuda":
        return 4
    gib = torch.cuda.get_device_properties(device).total_memory / 2**30
    return 64 if gib >= 70 else 32 if gib >= 35 else 16 if gib >= 20 else 8


def out_of_memory(error: Exception) -> bool:
    """Whether error is the GPU running out of memory (raised as is, or wrapped by the
    compiler when it happens while compiling)."""
    return isinstance(error, torch.cuda.OutOfMemoryError) or "out of memory" in str(error).lower()


# --- the corpus and its batches ------------------------------------------------------


class Batches:
    """Random windows of the corpus, (x, y) of shape (micro_batch, T) int64 on the device.

    Drawn on the CPU from a generator seeded by the seed and the process's rank (each rank
    its own windows), copied from pinned memory with non_blocking=True: the copy overlaps
    the GPU's work on the micro-batch before, and the host never waits for the GPU.
    """

    def __init__(self, corpus: torch.Tensor, micro_batch: int, T: int, device: torch.device,
                 seed: int):
        self.corpus, self.micro_batch, self.T, self.device = corpus, micro_batch, T, device
        self.generator = torch.Generator().manual_seed(seed)
        self.window = torch.arange(T + 1)

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        starts = torch.randint(0, len(self.corpus) - self.T - 1, (self.micro_batch, 1),
                               generator=self.generator)
        rows = self.corpus[starts + self.window]                   # (B, T + 1)
        if self.device.type == "cuda":
            rows = rows.pin_memory().to(self.device, non_blocking=True)
        else:
            rows = rows.to(self.device)
        return rows[:, :-1], rows[:, 1:]


def make_corpus(vocab_size: int, n_tokens: int, seed: int = 0) -> torch.Tensor:
    """n_tokens int64 ids: one random sequence of PATTERN_LENGTH ids in 0..vocab_size-1,
    repeated."""
    generator = torch.Generator().manual_seed(seed)
    pattern = torch.randint(0, vocab_size, (PATTERN_LENGTH,), generator=generator)
    return pattern.repeat(-(-n_tokens // PATTERN_LENGTH))[:n_tokens]


# --- training --------------------------------------------------------------------------


def train(preset: Preset, device: torch.device, steps: int, warmup_steps: int, micro_batch: int,
          compile: bool, precision: str, group: distributed.Group = distributed.Group(),
          seed: int = 0) -> dict:
    """warmup_steps untimed then `steps` timed optimizer steps; a dict of what ran and its speed.

    Each step accumulates batch_tokens / (micro_batch x T x world_size) micro-batches per
    process (at least one). Returns tokens_per_sec (all processes together),
    flops_per_token, tokens_per_step, grad_accum, losses (one per step, read at the end),
    compiled (whether compiling worked), warmup_seconds.
    """
    torch.manual_seed(seed)
    T = preset.context_length
    config = GPTConfig(vocab_size=padded_vocab(preset.vocab_size), context_length=T,
                       n_layer=preset.n_layer, n_head=preset.n_head, d_model=preset.d_model,
                       dropout=0.0)
    model = GPT(config).to(device)
    model.train()
    wrapped = distributed.wrap(model, group, device)
    optimizer = make_optimizer(model, preset)
    scaler = torch.amp.GradScaler(device.type, enabled=needs_grad_scaler(device, precision))
    dtype = autocast_dtype(device, precision)
    grad_accum = max(1, round(preset.batch_tokens / (micro_batch * T * group.world_size)))
    corpus = make_corpus(preset.vocab_size, max(16 * PATTERN_LENGTH, 8 * micro_batch * T))
    batches = Batches(corpus, micro_batch, T, device, seed=seed + 1 + group.rank)
    forward = wrapped
    if compile:
        try:
            forward = torch.compile(wrapped)
        except Exception as error:   # e.g. no compiler for this platform or Python version
            warnings.warn(f"torch.compile is unavailable ({error}); running eagerly.")
            compile = False

    def step(forward) -> torch.Tensor:
        """One optimizer step; the mean loss as a 0-d tensor on the device (not read)."""
        total = torch.zeros((), device=device)
        x, y = batches.next()
        for micro in range(grad_accum):
            last = micro == grad_accum - 1
            # DDP averages the gradients in backward; skip it on all but the last micro-batch.
            sync = nullcontext() if last or not group.active else wrapped.no_sync()
            with sync, torch.autocast(device.type, dtype=dtype) if dtype else nullcontext():
                loss = forward(x, y)[1] / grad_accum
            if not last:
                x, y = batches.next()   # queued while the GPU still runs this micro-batch
            scaler.scale(loss).backward()
            total += loss.detach()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        scaler.step(optimizer)          # with a scaler (float16) this reads back: not bf16
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        return total

    losses = []
    started = time.perf_counter()
    for i in range(warmup_steps):
        if i == 0 and compile:
            # Compiling happens in the first forward and the first backward; if either fails,
            # the whole step runs eagerly instead, on the same batches (its half-done
            # gradients dropped).
            drawn = batches.generator.get_state()
            try:
                losses.append(step(forward))
                continue
            except Exception as error:
                if out_of_memory(error):
                    raise            # not the compiler's fault: train_fitting tries a smaller batch
                warnings.warn(f"torch.compile failed ({type(error).__name__}: "
                              f"{str(error)[:300]}); running eagerly.")
                optimizer.zero_grad(set_to_none=True)
                batches.generator.set_state(drawn)
                forward, compile = wrapped, False
        losses.append(step(forward))
    synchronize(device)
    warmup_seconds = time.perf_counter() - started
    if group.active:
        torch.distributed.barrier()
    start = time.perf_counter()
    for _ in range(steps):
        losses.append(step(forward))
    synchronize(device)
    seconds = time.perf_counter() - start
    tokens_per_step = grad_accum * micro_batch * T * group.world_size
    losses = distributed.sum_over_ranks(torch.stack(losses), group) / group.world_size
    return {"tokens_per_sec": steps * tokens_per_step / seconds,
            "flops_per_token": model.flops_per_token(T), "tokens_per_step": tokens_per_step,
            "grad_accum": grad_accum, "micro_batch": micro_batch, "world_size": group.world_size,
            "losses": losses.tolist(), "compiled": compile, "warmup_seconds": warmup_seconds,
            "num_params": model.num_params(), "vocab_size": config.vocab_size}


def train_fitting(preset: Preset, device: torch.device, micro_batch: int, **options) -> dict:
    """train(), halving the micro-batch while the GPU runs out of memory."""
    while True:
        try:
            return train(preset, device, micro_batch=micro_batch, **options)
        except Exception as error:
            if not out_of_memory(error) or micro_batch == 1:
                raise
        print(f"        micro-batch {micro_batch} does not fit in the GPU's memory; "
              f"trying {micro_batch // 2}", flush=True)
        micro_batch //= 2
        # Outside the except block, so that the traceback no longer holds the tensors. The
        # compiler forgets the old shapes too: otherwise it would recompile for any batch
        # size (dynamic shapes), which is slower.
        torch.compiler.reset()
        torch.cuda.empty_cache()


# --- reporting ---------------------------------------------------------------------------


def peaks(device: torch.device, dtype: torch.dtype) -> dict:
    """{"table": FLOP/s or None, "measured": FLOP/s, "name": the device's name}.

    The measured peak is the best of several square matmuls in `dtype` (8192 wide on a GPU,
    where 2048 is too short to time well; float32 there means TF32 tensor cores)."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        table = table_peak_flops(name) if dtype in (torch.bfloat16, torch.float16) else None
        measured = matmul_peak_flops(device, size=8192, repeats=10, dtype=dtype)
    else:
        name, table = device.type, None
        measured = matmul_peak_flops(device, dtype=dtype)
    return {"table": table, "measured": measured, "name": name}


def tflops(per_second: float) -> str:
    """12.3e9 -> '12.3 GFLOP/s'; 989e12 -> '989.0 TFLOP/s'."""
    if per_second >= 1e12:
        return f"{per_second / 1e12:,.1f} TFLOP/s"
    return f"{per_second / 1e9:,.1f} GFLOP/s"


def report(label: str, result: dict, peak: dict, dtype_name: str, processes: int = 1) -> dict:
    """Print one result line (tokens/s, achieved FLOP/s, MFU, the loss) and return the MFUs."""
    achieved = result["tokens_per_sec"] * result["flops_per_token"]
    used = peak["table"] or peak["measured"]
    mfu = achieved / (used * processes)
    source = (f"the {peak['name']}'s {dtype_name} dense peak from its data sheet"
              if peak["table"] else f"the measured {dtype_name} matmul peak")
    if processes > 1:
        source += f", x {processes} processes"
    losses = result["losses"]
    print(f"{label}{result['tokens_per_sec']:,.0f} tokens/s, {tflops(achieved)}, MFU {mfu:.1%} of "
          f"{tflops(used * processes)} ({source})"
          + (f"; {achieved / (peak['measured'] * processes):.1%} of the measured matmul peak"
             if peak["table"] else ""), flush=True)
    print(f"        loss {losses[0]:.2f} at the first step, {losses[-1]:.2f} at the last "
          f"(a random guess: ln {result['vocab_size']:,} = {math.log(result['vocab_size']):.2f})"
          + ("" if all(math.isfinite(v) for v in losses) else "  WARNING: not finite"),
          flush=True)
    return {"mfu": mfu, "peak_flops": used, "peak_source": "table" if peak["table"] else "measured"}


def setup_line(result: dict, steps: int, warmup_steps: int, compile_asked: bool) -> str:
    compiled = ("torch.compile" if result["compiled"]
                else "eager (compiling failed)" if compile_asked else "eager")
    return (f"        {result['world_size']} x micro-batch {result['micro_batch']} x "
            f"{result['grad_accum']} accumulation steps = {result['tokens_per_step']:,} tokens per "
            f"step; {compiled}; {warmup_steps} warm-up step{'s' if warmup_steps > 1 else ''} "
            f"({result['warmup_seconds']:.1f} s"
            f"{', compiling included' if result['compiled'] else ''}), "
            f"{steps} timed")


# --- the two parts -----------------------------------------------------------------------


def chosen_preset(args) -> Preset:
    """The preset --preset names, with --batch-tokens where given."""
    preset = PRESETS[args.preset]
    return preset if args.batch_tokens is None else replace(preset, batch_tokens=args.batch_tokens)


def run_ddp_child(args) -> int:
    """One process of the torchrun part: train, and rank 0 prints its result as JSON."""
    asked = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    device_type = "cuda" if asked.startswith("cuda") else "cpu"
    group = distributed.setup(device_type)
    device = (torch.device("cuda", group.local_rank) if device_type == "cuda"
              else torch.device("cpu"))
    pick_device(device)   # TF32 on, CPU threads chosen
    if args.micro_batch is None:
        args.micro_batch = default_micro_batch(device, args.preset)
    try:
        result = train(chosen_preset(args), device, steps=args.steps, warmup_steps=args.warmup,
                       micro_batch=args.micro_batch, compile=args.compile,
                       precision=args.precision, group=group)
        if group.is_main:
            print("DDP-RESULT " + json.dumps(result), flush=True)
    finally:
        distributed.cleanup()
    return 0


def run_ddp(args, device: torch.device, processes: int) -> dict | None:
    """Run this script under torchrun with `processes` processes; rank 0's result, or None."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={processes}", str(Path(__file__).resolve()),
               "--device", device.type, "--preset", args.preset, "--steps", str(args.steps),
               "--warmup", str(args.warmup), "--micro-batch", str(args.micro_batch),
               "--precision", args.precision] + ([] if args.compile else ["--no-compile"])
    if args.batch_tokens is not None:
        command += ["--batch-tokens", str(args.batch_tokens)]
    env = {**os.environ}
    if device.type == "cpu":
        env.setdefault("OMP_NUM_THREADS", "1")   # processes x threads within the cores
    # A session of its own, so that a timeout stops torchrun and every process it started.
    done = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, start_new_session=True)
    try:
        stdout, stderr = done.communicate(timeout=args.ddp_timeout)
    except subprocess.TimeoutExpired:
        if hasattr(os, "killpg"):
            os.killpg(done.pid, signal.SIGKILL)
        done.kill()
        done.communicate()
        print(f"ddp     FAILED: still running after {args.ddp_timeout:.0f} s (--ddp-timeout); "
              "stopped", flush=True)
        return None
    lines = [line for line in stdout.splitlines() if line.startswith("DDP-RESULT ")]
    if done.returncode != 0 or not lines:
        print(f"ddp     FAILED: torchrun exited with status {done.returncode}:\n"
              + (stderr.strip()[-3000:] or stdout.strip()[-3000:]), flush=True)
        return None
    return json.loads(lines[-1].removeprefix("DDP-RESULT "))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python bench/gpu.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", help="cuda, cuda:1, cpu (default: the fastest present)")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="gpt2",
                        help="gpt2: GPT-2 small, 124M (default); tiny: 2 layers, 64 wide, "
                        "for a CPU")
    parser.add_argument("--steps", type=int, default=10, help="timed optimizer steps (default 10)")
    parser.add_argument("--warmup", type=int, default=3,
                        help="untimed steps first, where compiling happens (default 3)")
    parser.add_argument("--micro-batch", type=int,
                        help="sequences per micro-batch (default: from the GPU's memory)")
    parser.add_argument("--batch-tokens", type=int,
                        help="tokens per optimizer step, over every process (default: 2**19 for "
                        "gpt2 on a GPU; one micro-batch per process elsewhere)")
    parser.add_argument("--no-compile", dest="compile", action="store_false",
                        help="run eagerly, without torch.compile")
    parser.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                        help="as TrainConfig.precision (default auto: bf16 on recent GPUs)")
    parser.add_argument("--processes", type=int,
                        help="processes for the DDP part (default: every GPU; 0 skips it)")
    parser.add_argument("--ddp-timeout", type=float, default=1800,
                        help="seconds the DDP part may take (default 1800)")
    parser.add_argument("--json", action="store_true", help="also print the results as JSON")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.warmup < 1:
        parser.error(f"--steps and --warmup must be at least 1, got {args.steps} and {args.warmup}")
    for name in ("micro_batch", "batch_tokens"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, got "
                         f"{getattr(args, name)}")
    if distributed.launched_by_torchrun():
        return run_ddp_child(args)

    try:
        device = pick_device(args.device)
    except ValueError as error:
        parser.error(str(error))
    gpus = torch.cuda.device_count() if device.type == "cuda" else 0
    processes = args.processes if args.processes is not None else gpus
    if device.type == "cuda" and processes > gpus:
        parser.error(f"--processes {processes} asks for more GPUs than the {gpus} found; NCCL "
                     "needs one GPU per process")
    if args.micro_batch is None:
        args.micro_batch = default_micro_batch(device, args.preset)
    small_steps = args.batch_tokens is None and args.preset == "gpt2" and device.type != "cuda"
    if small_steps:
        # Half a million tokens per step would take the better part of an hour on a CPU.
        args.batch_tokens = args.micro_batch * PRESETS["gpt2"].context_length * max(1, processes)
    preset = chosen_preset(args)
    dtype = autocast_dtype(device, args.precision) or torch.float32
    dtype_name = str(dtype).removeprefix("torch.")
    vocab = padded_vocab(preset.vocab_size)
    print(f"model   {args.preset}: {preset.n_layer} layers, {preset.n_head} heads, "
          f"{preset.d_model} wide, context {preset.context_length}, vocab "
          f"{preset.vocab_size:,} padded to {vocab:,}; "
          f"random tokens in a repeated sequence of {PATTERN_LENGTH:,}", flush=True)
    # describe() ends with the format precision "auto" picks; the next line says the one used.
    print(f"device  {describe(device).rsplit(' | ', 1)[0]}", flush=True)
    print(f"        {precision_reason(device, args.precision)}", flush=True)
    peak = peaks(device, dtype)
    print(f"peak    {dtype_name} matmul, measured: {tflops(peak['measured'])}"
          + (f"; data sheet ({peak['name']}): {tflops(peak['table'])}" if peak["table"] else
             "; no data-sheet peak for this device, MFU is against the measured one"), flush=True)

    if small_steps:
        print(f"        not on a GPU: {args.batch_tokens:,} tokens per step (GPT-2's "
              f"{PRESETS['gpt2'].batch_tokens:,} on a GPU); --batch-tokens sets it", flush=True)
    options = dict(steps=args.steps, warmup_steps=args.warmup, compile=args.compile,
                   precision=args.precision)
    one = train_fitting(preset, device, args.micro_batch, **options)
    args.micro_batch = one["micro_batch"]   # what fitted, for the DDP part too
    print(f"one     1 {'GPU' if device.type == 'cuda' else device.type.upper()}, "
          f"{dtype_name} matmuls:", flush=True)
    print(setup_line(one, args.steps, args.warmup, args.compile), flush=True)
    results = {"device": peak["name"], "dtype": dtype_name, "one": {**one, **report(
        "        ", one, peak, dtype_name)}}
    h100_class = device.type == "cuda" and H100_CLASS.search(peak["name"].lower())
    if h100_class and dtype == torch.bfloat16:
        mfu = results["one"]["mfu"]
        print(f"target  MFU >= {MFU_TARGET:.0%} on an H100-class GPU: "
              f"{'met' if mfu >= MFU_TARGET else 'NOT met'} ({mfu:.1%})", flush=True)

    if processes < 2:
        why = (f"--processes {processes}" if args.processes is not None else
               f"{gpus} GPU found; data parallel training needs 2 or more" if device.type == "cuda"
               else "no GPU; --processes 2 runs it on the CPU with Gloo")
        print(f"ddp     skipped: {why}", flush=True)
        status = 0
    else:
        backend = "NCCL" if device.type == "cuda" else "Gloo"
        print(f"ddp     {processes} processes ({backend}) under torchrun:", flush=True)
        ddp = run_ddp(args, device, processes)
        status = 1 if ddp is None else 0
        if ddp is not None:
            print(setup_line(ddp, args.steps, args.warmup, args.compile), flush=True)
            results["ddp"] = {**ddp, **report("        ", ddp, peak, dtype_name, processes)}
            scaling = ddp["tokens_per_sec"] / (processes * one["tokens_per_sec"])
            results["ddp"]["scaling"] = scaling
            print(f"        {ddp['tokens_per_sec'] / one['tokens_per_sec']:.2f}x one "
                  f"{'GPU' if device.type == 'cuda' else 'process'}: {scaling:.0%} of linear "
                  "scaling", flush=True)
    if args.json:
        print(json.dumps(results))
    return status


if __name__ == "__main__":
    sys.exit(main())
