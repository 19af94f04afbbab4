"""Data parallel training: one copy of the model per process, gradients averaged every step.

    torchrun --nproc_per_node=2 -m llmkit train --tinytales 2000 --out runs/ddp
    torchrun --nnodes=2 --nproc_per_node=8 --rdzv-backend=c10d \\
             --rdzv-endpoint=HOST:29500 -m llmkit train ...          (several machines)

torchrun starts the processes and tells each its RANK, LOCAL_RANK and WORLD_SIZE through
the environment; `setup()` reads them and joins the group, NCCL between GPUs and Gloo
between CPUs. The trainer then wraps the model in PyTorch's DistributedDataParallel (DDP),
which averages the gradients across processes during backward.

How the work is split, so that N processes follow the loss of one process (checked in
tests/test_distributed.py): TrainConfig.batch_size is the global batch. Every process draws
the same global batch from the same seeded generator and keeps its own rows,
batch_size / N of them (`my_rows`). Nothing but the gradients (and the reported loss) needs
to cross between processes, and the data order does not depend on N.

From a notebook, `launch(["--tinytales", "200", "--steps", "50"], processes=2)` runs the
command above in a subprocess and returns rank 0's results.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

TIMEOUT_S = 300   # a collective that waits longer (a rank died or hangs) fails with an error


@dataclass(frozen=True)
class Group:
    """Where this process stands: rank (0 .. world_size - 1), world_size, local_rank (its
    GPU on this machine). world_size 1 is an ordinary single process."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0 evaluates, logs, shows progress and writes checkpoints."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1


def launched_by_torchrun() -> bool:
    """Whether torchrun (or another launcher) started this process as one of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def setup(device_type: str = "cpu") -> Group:
    """Join the process group torchrun describes (once); a single Group() when not launched.

    device_type "cuda" uses NCCL (and the GPU LOCAL_RANK), anything else Gloo.
    """
    if not launched_by_torchrun():
        return Group()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        if device_type == "cuda":
            if not torch.cuda.is_available() or local_rank >= torch.cuda.device_count():
                raise ValueError(
                    f"rank {os.environ.get('RANK')} needs GPU {local_rank}, but this machine has "
                    f"{torch.cuda.device_count()}; start at most that many processes per machine "
                    "(--nproc_per_node), or train on the CPU (--device cpu) with Gloo."
                )
            torch.cuda.set_device(local_rank)
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo",
                                timeout=datetime.timedelta(seconds=TIMEOUT_S))
    return Group(dist.get_rank(), dist.get_world_size(), local_rank)


def check_batch(batch_size: int, group: Group) -> int:
    """The rows each process takes: batch_size / world_size, which must be whole."""
    if batch_size % group.world_size:
        low = batch_size - batch_size % group.world_size
        raise ValueError(
            f"the global batch_size {batch_size} does not divide among {group.world_size} "
            f"processes; use a multiple of {group.world_size} (e.g. {max(low, group.world_size)} "
            f"or {low + group.world_size})."
        )
    return batch_size // group.world_size


def my_rows(x: torch.Tensor, y: torch.Tensor, group: Group) -> tuple[torch.Tensor, torch.Tensor]:
    """This process's share of a global batch: rows rank * b .. (rank + 1) * b - 1."""
    if not group.active:
        return x, y
    rows = len(x) // group.world_size
    part = slice(group.rank * rows, (group.rank + 1) * rows)
    return x[part], y[part]


def wrap(model: torch.nn.Module, group: Group, device: torch.device) -> torch.nn.Module:
    """The model wrapped in DistributedDataParallel, or the model itself in one process."""
    if not group.active:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index if device.index is not None else group.local_rank] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def sum_over_ranks(tensor: torch.Tensor, group: Group) -> torch.Tensor:
    """The tensor summed over every process (every process gets the sum)."""
    if group.active:
        tensor = tensor.clone()
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def any_rank(flag: bool, group: Group, device: torch.device) -> bool:
    """True on every process if it is True on any (so that all stop at the same step)."""
    if not group.active:
        return flag
    return bool(sum_over_ranks(torch.tensor(float(flag), device=device), group) > 0)


def gather(value, group: Group) -> list:
    """[value of rank 0, value of rank 1, ...] on every process (any picklable value)."""
    if not group.active:
        return [value]
    values = [None] * group.world_size
    dist.all_gather_object(values, value)
    return values


def launch(train_args: list, processes: int = 2, timeout_s: float = 600) -> dict:
    """Run `torchrun --nproc_per_node=processes -m llmkit train TRAIN_ARGS --json` and return
    rank 0's JSON line of results, e.g. from a notebook cell (lesson 11).

    Each process gets one CPU thread (OMP_NUM_THREADS=1) unless the environment sets it;
    a failed run raises a RuntimeError with the end of what the processes printed.
    """
    import json
    import subprocess
    import sys

    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={int(processes)}", "-m", "llmkit", "train",
               *map(str, train_args), "--json"]
    env = {"OMP_NUM_THREADS": "1", **os.environ}
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, env=env)
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    if result.returncode != 0 or not lines:
        # llmkit's own messages ("error: ...") say what to do; torchrun's traceback does not.
        said = list(dict.fromkeys(line for line in result.stderr.splitlines()
                                  if line.startswith("error:")))
        raise RuntimeError(f"torchrun exited with status {result.returncode}: "
                           + ("\n".join(said) if said else result.stderr.strip()[-2000:]))
    return json.loads(lines[-1])


def cleanup() -> None:
    """Leave the process group (at the end of a run launched by torchrun)."""
    if dist.is_initialized():
        dist.destroy_process_group()
