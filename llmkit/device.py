"""Pick the hardware to run on, and the number format to run in.

The same notebook cell runs on a laptop CPU, an Apple-silicon GPU (MPS) or an NVIDIA GPU
(CUDA). `pick_device()` chooses the fastest one present, in that order CUDA, MPS, CPU; the
environment variable `LLMKIT_DEVICE` (e.g. `cpu`, `cuda`, `cuda:1`, `mps`) overrides it.

Lower precision: on CUDA GPUs that support it we run the matrix multiplications in
bfloat16 under `torch.autocast` (same exponent range as float32, so no loss scaling is
needed) and let float32 matmuls use TF32. That is precision "auto", the default; CPU and
MPS stay in float32 under it. Precision "bf16" is the opt-in for CPUs that do bfloat16
arithmetic in hardware (x86 with AVX512-BF16 or AMX): there a bf16 matmul is several times
faster than a float32 one. CPUs without it would only emulate bf16, slower than float32,
so "bf16" keeps them in float32. "fp32" turns autocast off everywhere.
"""

from __future__ import annotations

import contextlib
import os
import platform
import random

import torch

DEVICE_ENV = "LLMKIT_DEVICE"
QUICK_ENV = "LLMKIT_QUICK"
PRECISIONS = ("auto", "fp32", "bf16")


def _mps_available() -> bool:
    return hasattr(torch.backends, "mps") and torch.backends.mps.is_available()


def pick_device(preferred: str | torch.device | None = None) -> torch.device:
    """Return the device to compute on.

    Order of choice: the `preferred` argument, then `$LLMKIT_DEVICE`, then CUDA, MPS, CPU.
    A name that is unknown, or names hardware this machine lacks, raises a ValueError that
    says which devices are available.
    """
    name = preferred if preferred is not None else os.environ.get(DEVICE_ENV) or None
    if name is None:
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")

    source = "the device argument" if preferred is not None else f"${DEVICE_ENV}"
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as error:
        raise ValueError(
            f"{source} is {name!r}, which is not a device name. "
            f"Use one of: {', '.join(available_devices())}."
        ) from error
    if device.type == "cuda":
        count = torch.cuda.device_count()
        index = device.index or 0
        if index >= count:
            found = f"{count} CUDA device(s)" if count else "no CUDA GPU"
            raise ValueError(
                f"{source} asks for {name!r}, but this machine has {found}. "
                f"Use one of: {', '.join(available_devices())}."
            )
    elif device.type == "mps" and not _mps_available():
        raise ValueError(
            f"{source} asks for 'mps', but Apple's Metal backend is not available here. "
            f"Use one of: {', '.join(available_devices())}."
        )
    elif device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(
            f"{source} is {name!r}; the course runs on cpu, cuda or mps. "
            f"Use one of: {', '.join(available_devices())}."
        )
    return device


def available_devices() -> list[str]:
    """The device names this machine can use, e.g. `['cuda', 'cuda:0', 'cpu']`."""
    names = []
    if torch.cuda.is_available():
        names.append("cuda")
        names += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if _mps_available():
        names.append("mps")
    names.append("cpu")
    return names


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 in hardware (x86 AVX512-BF16 or AMX tiles).

    Asks PyTorch's own CPU-feature probes; where a build lacks them, answers False.
    """
    for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        check = getattr(torch.cpu, probe, None)
        try:
            if check is not None and check():
                return True
        except RuntimeError:
            continue
    return False


def autocast_dtype(device: torch.device | str, precision: str = "auto") -> torch.dtype | None:
    """The reduced precision to run matmuls in on `device`, or None for plain float32.

    precision "auto": bfloat16 on CUDA GPUs that support it (Ampere and newer), float32
    elsewhere (older CUDA GPUs would need float16 and a gradient scaler; CPU and MPS gain
    little by default). "bf16": also bfloat16 on CPUs with native bf16
    (`cpu_has_native_bf16`). "fp32": always None.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}.")
    device = torch.device(device)
    if precision == "fp32":
        return None
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    if precision == "bf16" and device.type == "cpu" and cpu_has_native_bf16():
        return torch.bfloat16
    return None


def autocast(device: torch.device | str, enabled: bool = True, precision: str = "auto"):
    """A context manager that runs the forward pass in `autocast_dtype(device, precision)`.

    Does nothing (plain float32) where that dtype is None or `enabled` is False.
    """
    device = torch.device(device)
    dtype = autocast_dtype(device, precision)
    if not enabled or dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def enable_fast_matmul() -> None:
    """Let float32 matmuls use TF32 on CUDA (about 8x faster, 10 mantissa bits)."""
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy (when installed) and PyTorch on every device.

    Returns a CPU `torch.Generator` seeded the same way, for code that wants its own stream.
    """
    random.seed(seed)
    try:
        import numpy as np

        np.random.seed(seed % 2**32)
    except ImportError:
        pass
    torch.manual_seed(seed)  # also seeds every CUDA and MPS device
    return torch.Generator().manual_seed(seed)


def describe(device: torch.device | str | None = None) -> str:
    """One line for a notebook: the device, its name and memory, and the software versions.

    Example: `cpu (x86_64, 2 threads) | torch 2.13.0 | Python 3.11.7 | float32`.
    """
    device = pick_device(device)
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        what = f"{device} ({props.name}, {props.total_memory / 2**30:.0f} GiB)"
    elif device.type == "mps":
        what = f"mps (Apple {platform.machine()})"
    else:
        bf16 = ", native bf16" if cpu_has_native_bf16() else ""
        what = f"cpu ({platform.machine()}, {torch.get_num_threads()} threads{bf16})"
    dtype = autocast_dtype(device)
    precision = f"{str(dtype).removeprefix('torch.')} autocast" if dtype else "float32"
    return (
        f"{what} | torch {torch.__version__} | Python {platform.python_version()} | {precision}"
    )


def quick_mode() -> bool:
    """True when `$LLMKIT_QUICK` is set (to anything but '', '0' or 'false').

    The tests set it so that every lesson shrinks its training budgets and runs in seconds.
    """
    return os.environ.get(QUICK_ENV, "").strip().lower() not in ("", "0", "false", "no")


def synchronize(device: torch.device | str) -> None:
    """Wait for queued GPU work to finish, so that a timer measures it (no-op on CPU)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()
