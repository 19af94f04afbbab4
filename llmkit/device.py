"""Pick the hardware to run on, and the number format to run in.

The same notebook cell runs on a laptop CPU, an Apple-silicon GPU (MPS) or an NVIDIA GPU
(CUDA). `pick_device()` chooses the fastest one present, in that order CUDA, MPS, CPU; the
environment variable `LLMKIT_DEVICE` (e.g. `cpu`, `cuda`, `cuda:1`, `mps`) overrides it.

Lower precision, decided from what the hardware really does (`precision_reason` says which
and why in one sentence):

- precision "auto", the default: on CUDA GPUs with bfloat16 in hardware (compute capability
  8.0 and newer: A100, RTX 30xx, H100...) the matmuls run in bfloat16 under `torch.autocast`
  (the exponent range of float32, so no loss scaling). Older CUDA GPUs (T4, V100: the free
  hosted notebooks) only emulate bfloat16, slower than float32, although
  `torch.cuda.is_bf16_supported()` says yes; there "auto" runs in float16, which their tensor
  cores do compute, with a gradient scaler (`needs_grad_scaler`) so that small gradients
  do not underflow to zero. CPU and MPS stay in float32 (on MPS, autocast to a 16-bit
  format covers only some operations).
- "bf16": as "auto" on CUDA GPUs with bfloat16, and the opt-in for CPUs that do bfloat16
  arithmetic in hardware (x86 with AVX512-BF16 or AMX), where a bf16 matmul is several
  times faster than a float32 one. Where bf16 would only be emulated it stays float32.
- "fp32" turns autocast off everywhere.

Float32 matmuls on CUDA may use TF32 (`enable_fast_matmul`): `pick_device` switches it on
when it picks a CUDA device, so every lesson and every `Trainer` (which calls it) gets it.

The first `pick_device` call also sets the number of CPU threads (`llmkit.threads`).
"""

from __future__ import annotations

import contextlib
import os
import platform
import random

import torch

from llmkit.threads import use_chosen_threads

DEVICE_ENV = "LLMKIT_DEVICE"
QUICK_ENV = "LLMKIT_QUICK"
PRECISIONS = ("auto", "fp32", "bf16")


def _mps_available() -> bool:
    return hasattr(torch.backends, "mps") and torch.backends.mps.is_available()


def pick_device(preferred: str | torch.device | None = None) -> torch.device:
    """Return the device to compute on.

    Order of choice: the `preferred` argument, then `$LLMKIT_DEVICE`, then CUDA, MPS, CPU.
    A name that is unknown, or names hardware this machine lacks, raises a ValueError that
    says which devices are available. The first call also sets the number of CPU threads
    (`llmkit.threads.use_chosen_threads`), and on a CUDA device lets float32 matmuls use TF32
    (`enable_fast_matmul`).
    """
    device = _find_device(preferred)
    use_chosen_threads()
    if device.type == "cuda":
        enable_fast_matmul()
    return device


def _find_device(preferred) -> torch.device:
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


def cuda_has_native_bf16(device: torch.device | str = "cuda") -> bool:
    """Whether this CUDA GPU computes in bfloat16 in hardware (compute capability >= 8.0).

    `torch.cuda.is_bf16_supported()` also says yes for older GPUs (T4: 7.5, V100: 7.0),
    because it can create a bfloat16 tensor there; they emulate the arithmetic, slower
    than float32. This asks what `torch.cuda.is_bf16_supported(including_emulation=False)`
    asks, for `device` rather than for the current GPU. ROCm GPUs all have bfloat16.
    """
    if torch.version.hip:
        return True
    major, _ = torch.cuda.get_device_capability(torch.device(device))
    return major >= 8


def _cuda_name(device: torch.device) -> str:
    major, minor = torch.cuda.get_device_capability(device)
    return f"{torch.cuda.get_device_name(device)} (compute capability {major}.{minor})"


def _precision_choice(device, precision: str) -> tuple[torch.dtype | None, str]:
    """(the autocast dtype or None for float32, one sentence saying why)."""
    if precision not in PRECISIONS:
        raise ValueError(
            f"precision must be one of {PRECISIONS}, got {precision!r}. Use 'auto' to let "
            "llmkit choose from the hardware."
        )
    device = torch.device(device)
    if precision == "fp32":
        return None, "float32: precision 'fp32' asks for it."
    if device.type == "cuda":
        name = _cuda_name(device)
        if cuda_has_native_bf16(device):
            return torch.bfloat16, (
                f"bfloat16 autocast: the {name} computes in bfloat16 in hardware, and bfloat16 "
                "has float32's range, so no gradient scaler is needed.")
        if precision == "bf16":
            return None, (
                f"float32: bf16 was asked for, but the {name} only emulates bfloat16, slower "
                "than float32; precision 'auto' uses float16 with a gradient scaler there.")
        return torch.float16, (
            f"float16 autocast with a gradient scaler: the {name} has no bfloat16 in hardware "
            "(emulated, it would be slower than float32) but computes float16 on its tensor "
            "cores; the scaler keeps small gradients from underflowing to zero.")
    if device.type == "mps":
        return None, (
            "float32: on Apple GPUs (MPS) autocast to a 16-bit format covers only some "
            "operations, and float32 is the format with the widest support there.")
    native = cpu_has_native_bf16()
    if precision == "bf16":
        if native:
            return torch.bfloat16, (
                "bfloat16 autocast: this CPU multiplies bfloat16 in hardware (AVX512-BF16 or "
                "AMX), several times faster than float32.")
        return None, (
            "float32: bf16 was asked for, but this CPU has no bfloat16 in hardware (emulated, "
            "it would be slower than float32).")
    return None, (
        "float32: the safe default on a CPU"
        + ("; this one has bfloat16 in hardware, which precision 'bf16' uses (about twice as "
           "fast)." if native else ", and this one has no bfloat16 in hardware."))


def autocast_dtype(device: torch.device | str, precision: str = "auto") -> torch.dtype | None:
    """The reduced precision to run matmuls in on `device`, or None for plain float32.

    precision "auto": bfloat16 on CUDA GPUs with bfloat16 in hardware (`cuda_has_native_bf16`),
    float16 on older CUDA GPUs (train it with a gradient scaler: `needs_grad_scaler`),
    float32 on CPU and MPS. "bf16": bfloat16 on CUDA GPUs and CPUs (`cpu_has_native_bf16`)
    with bfloat16 in hardware, float32 elsewhere. "fp32": always None.
    `precision_reason` says the same in words.
    """
    return _precision_choice(device, precision)[0]


def needs_grad_scaler(device: torch.device | str, precision: str = "auto") -> bool:
    """Whether training in this precision needs a gradient scaler (float16 autocast).

    float16 keeps 5 exponent bits: gradients below about 6e-8 become zero. A scaler
    multiplies the loss before backward and divides the gradients after it, skipping steps
    whose gradients overflowed. The trainer's use, as in PyTorch's AMP recipe:

        scaler = torch.amp.GradScaler(device.type, enabled=needs_grad_scaler(device, precision))
        scaler.scale(loss).backward(); scaler.unscale_(optimizer)   # then clip
        scaler.step(optimizer); scaler.update()
    """
    return _precision_choice(device, precision)[0] == torch.float16


def precision_reason(device: torch.device | str, precision: str = "auto") -> str:
    """One sentence: the number format training runs in on `device`, and why.

    Example: "float16 autocast with a gradient scaler: the Tesla T4 (compute capability
    7.5) has no bfloat16 in hardware ...".
    """
    return _precision_choice(device, precision)[1]


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
    """Let float32 matmuls on CUDA use TF32 (tensor cores, 10 mantissa bits, several times
    faster on Ampere and newer). Idempotent and cheap: call it wherever training starts
    (`pick_device` does whenever it picks a CUDA device).

    Leaves alone a precision someone already chose ("medium" stays "medium"). Uses
    `torch.set_float32_matmul_precision`, which newer PyTorch versions do not mind being
    mixed with their per-backend TF32 switches.
    """
    if torch.get_float32_matmul_precision() == "highest":
        torch.set_float32_matmul_precision("high")


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
        threads = torch.get_num_threads()
        what = f"cpu ({platform.machine()}, {threads} thread{'s' if threads != 1 else ''}{bf16})"
    dtype = autocast_dtype(device)
    precision = f"{str(dtype).removeprefix('torch.')} autocast" if dtype else "float32"
    if dtype == torch.float16:
        precision += " + gradient scaler"
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
