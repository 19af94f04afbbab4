"""Training speed against the number of PyTorch threads, on a CPU that other programs keep busy.

Trains the baby-GPT recipe of `llmkit.bench` (4 layers, 4 heads, 128 wide, context 64,
batch 12, float32) with `llmkit.train.Trainer` while 0, 1, 2... other processes spin on
the CPU (`while True: pass`, as a browser tab or a second notebook would), at each thread
count given. For each load the runs alternate in short blocks, so that the rest of the
machine's load hits every thread count about equally; the figure is the median block.
Each line also shows what `llmkit.threads.thread_choice` picks under that load, and the
last column compares its speed with PyTorch's default thread count.

    python bench/threads.py                          # loads 0 and 2, threads 1 and 2
    python bench/threads.py --busy 0,1,2,4 --threads 1,2,4 --blocks 6

Why more threads can be much slower: PyTorch splits each operation across its threads and
waits for all of them at the end. When other processes hold the cores, a thread that the
operating system has set aside holds up the rest, at every one of the thousands of
operations of a training step.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

import torch

from llmkit.bench import RECIPE_SHAPE, RECIPE_VOCAB
from llmkit.model import GPT, GPTConfig
from llmkit.threads import thread_choice, usable_cores
from llmkit.train import TrainConfig, Trainer

DEFAULT_THREADS = torch.get_num_threads()   # PyTorch's own choice, before anyone changes it


def make_trainer() -> Trainer:
    """The recipe on random tokens (speed does not depend on what the text says)."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=RECIPE_VOCAB, **RECIPE_SHAPE))
    ids = torch.randint(0, RECIPE_VOCAB, (50_000,))
    config = TrainConfig(max_steps=0, batch_size=12, eval_interval=0, progress=False,
                         precision="fp32", device="cpu", log_interval=10)
    return Trainer(model, ids, ids[:1000], config)


def timed_steps(trainer: Trainer, threads: int, steps: int) -> float:
    """Seconds for `steps` more training steps at `threads` threads."""
    torch.set_num_threads(threads)
    trainer.config.max_steps = trainer.step + steps
    start = time.perf_counter()
    trainer.fit()
    return time.perf_counter() - start


def spin_processes(count: int) -> list[subprocess.Popen]:
    """`count` processes that keep one core busy each until killed."""
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]


def measure(busy: int, thread_counts: list[int], blocks: int, steps: int, settle_s: float) -> dict:
    """tokens/s (median block) per thread count with `busy` spinning processes, and the
    thread count `thread_choice` picks under that load."""
    spinners = spin_processes(busy)
    try:
        time.sleep(settle_s)
        choice = thread_choice(default=DEFAULT_THREADS)
        counts = sorted(set(thread_counts) | {choice.threads, DEFAULT_THREADS})
        trainers = {n: make_trainer() for n in counts}
        for n, trainer in trainers.items():   # warm-up, not timed
            timed_steps(trainer, n, 2)
        times = {n: [] for n in counts}
        for _ in range(blocks):
            for n, trainer in trainers.items():
                times[n].append(timed_steps(trainer, n, steps))
    finally:
        for process in spinners:
            process.kill()
            process.wait()
        torch.set_num_threads(DEFAULT_THREADS)
    tokens = steps * 12 * RECIPE_SHAPE["context_length"]
    return {"speed": {n: tokens / statistics.median(t) for n, t in times.items()}, "choice": choice}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--busy", default="0,2", help="competing busy processes, e.g. 0,2 (default)")
    parser.add_argument("--threads", default="1,2", help="thread counts to time (default 1,2)")
    parser.add_argument("--blocks", type=int, default=4, help="timed blocks per setting (default 4)")
    parser.add_argument("--steps", type=int, default=5, help="training steps per block (default 5)")
    parser.add_argument("--settle", type=float, default=2.0,
                        help="seconds to let the busy processes start before choosing (default 2)")
    args = parser.parse_args(argv)
    busy_counts = [int(x) for x in args.busy.split(",") if x.strip()]
    thread_counts = [int(x) for x in args.threads.split(",") if x.strip()]

    print(f"torch {torch.__version__}, {usable_cores()} usable cores, PyTorch's default "
          f"{DEFAULT_THREADS} threads; baby GPT, batch 12 x 64, float32, median of "
          f"{args.blocks} blocks of {args.steps} steps; tokens/s")
    for busy in busy_counts:
        result = measure(busy, thread_counts, args.blocks, args.steps, args.settle)
        speed, choice = result["speed"], result["choice"]
        cells = "  ".join(f"{n} thread{'s' if n > 1 else ''}: {s:7,.0f}" for n, s in speed.items())
        gain = speed[choice.threads] / speed[DEFAULT_THREADS]
        print(f"+{busy} busy processes: {cells}  | chosen {choice.threads} ({gain:.2f}x the default "
              f"{DEFAULT_THREADS}): {choice.reason}", flush=True)


if __name__ == "__main__":
    main()
