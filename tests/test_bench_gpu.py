"""bench/gpu.py, run tiny on the CPU: what it trains, what it prints, and its fallbacks.

The figures themselves are the machine's; the tests check what they are made of: the
tokens per step, the FLOPs per token (counted here from the architecture, independently
of GPT.flops_per_token), the MFU arithmetic, the loss of a first step (about ln vocab), the
data-sheet peaks the table finds for real device names, and the DDP part with 2 Gloo
processes.
"""

import importlib.util
import json
import math
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from llmkit.device import cpu_has_native_bf16

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "gpu.py"


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_gpu", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module    # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


gpu = load_bench()


def tiny_flops_per_token(L=2, d=64, V=512, T=64) -> int:
    """6N + 12 L T d, N counted from GPT-2's layers: per block two LayerNorms (2d each), the
    fused qkv Linear (3d^2 + 3d), the attention output (d^2 + d) and the 4x MLP (8d^2 + 5d);
    the tied embedding/head (V d) and the final LayerNorm (2d); positions are a lookup."""
    n = L * (12 * d * d + 13 * d) + V * d + 2 * d
    return 6 * n + 12 * L * T * d


@pytest.mark.slow
def test_cpu_run_reports_one_process_and_ddp_with_gloo():
    """The command a learner runs, start to end: about 30 s on a busy 2-core machine."""
    command = [sys.executable, str(SCRIPT), "--device", "cpu", "--preset", "tiny",
               "--steps", "3", "--no-compile", "--processes", "2", "--batch-tokens", "1024",
               "--json"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=ROOT,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    results = json.loads(out.splitlines()[-1])
    assert "no data-sheet peak for this device, MFU is against the measured one" in out
    assert "ddp     2 processes (Gloo) under torchrun:" in out
    assert "(the measured float32 matmul peak, x 2 processes)" in out

    one, ddp = results["one"], results["ddp"]
    assert results["dtype"] == "float32"     # precision auto on a CPU
    # 1024 tokens per step in micro-batches of 4 x 64: 4 of them in one process, 2 in each
    # of two (the gradients exchanged on the second only).
    assert (one["world_size"], one["micro_batch"], one["grad_accum"]) == (1, 4, 4)
    assert (ddp["world_size"], ddp["micro_batch"], ddp["grad_accum"]) == (2, 4, 2)
    for result in (one, ddp):
        assert result["tokens_per_step"] == 1024
        assert result["flops_per_token"] == tiny_flops_per_token()
        assert result["compiled"] is False
        assert result["tokens_per_sec"] > 0
        assert len(result["losses"]) == 3 + 3      # warm-up and timed steps
        assert all(math.isfinite(v) for v in result["losses"])
        assert result["losses"][0] == pytest.approx(math.log(512), abs=0.3)
        assert result["peak_source"] == "measured"
    assert one["mfu"] == pytest.approx(one["tokens_per_sec"] * one["flops_per_token"]
                                       / one["peak_flops"])
    assert ddp["mfu"] == pytest.approx(ddp["tokens_per_sec"] * ddp["flops_per_token"]
                                       / (2 * ddp["peak_flops"]))
    assert ddp["scaling"] == pytest.approx(ddp["tokens_per_sec"] / (2 * one["tokens_per_sec"]))


def test_without_a_gpu_the_ddp_part_says_why_it_is_skipped(capsys):
    assert gpu.main(["--device", "cpu", "--preset", "tiny", "--steps", "1", "--warmup", "1",
                     "--no-compile", "--precision", "bf16", "--json"]) == 0
    out = capsys.readouterr().out
    assert "ddp     skipped: no GPU; --processes 2 runs it on the CPU with Gloo" in out
    results = json.loads(out.splitlines()[-1])
    assert "ddp" not in results
    # bf16 on a CPU: autocast where the CPU has bfloat16 in hardware, and the peak measured
    # in the format the matmuls ran in.
    expected = "bfloat16" if cpu_has_native_bf16() else "float32"
    assert results["dtype"] == expected
    assert "MFU is against the measured one" in out
    assert f"the measured {expected} matmul peak" in out


@pytest.mark.parametrize("name, tflops", [
    ("NVIDIA H100 80GB HBM3", 989), ("NVIDIA H100 PCIe", 756), ("NVIDIA H100 NVL", 835),
    ("NVIDIA H200", 989), ("NVIDIA GH200 480GB", 989), ("NVIDIA A100-SXM4-80GB", 312),
    ("NVIDIA A100 80GB PCIe", 312), ("NVIDIA A10", 125), ("NVIDIA L4", 121),
    ("NVIDIA L40S", 362), ("NVIDIA L40", 181), ("NVIDIA GeForce RTX 4090", 165),
    ("NVIDIA A10G", None), ("Tesla T4", None), ("Tesla V100-SXM2-16GB", None),
])
def test_data_sheet_peaks_by_device_name(name, tflops):
    """Dense bf16 tensor-core peaks of NVIDIA's data sheets; unknown GPUs get None (measured)."""
    assert gpu.table_peak_flops(name) == (None if tflops is None else tflops * 1e12)


def test_vocab_is_padded_to_a_multiple_of_64():
    assert gpu.padded_vocab(50_257) == math.ceil(50_257 / 64) * 64 == 50_304
    assert gpu.padded_vocab(512) == 512


def test_a_failing_compile_warns_once_and_trains_the_same_steps_eagerly(monkeypatch):
    options = dict(steps=1, warmup_steps=2, micro_batch=4, precision="fp32")
    eager = gpu.train(gpu.PRESETS["tiny"], torch.device("cpu"), compile=False, **options)

    def broken(model):
        def run(*args, **kwargs):
            raise RuntimeError("no C++ compiler here")
        return run

    monkeypatch.setattr(torch, "compile", broken)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fallback = gpu.train(gpu.PRESETS["tiny"], torch.device("cpu"), compile=True, **options)
    said = [str(w.message) for w in caught if "torch.compile failed" in str(w.message)]
    assert len(said) == 1 and "no C++ compiler here" in said[0]
    assert fallback["compiled"] is False
    assert fallback["losses"] == eager["losses"]     # same batches, same weights


def test_out_of_memory_halves_the_micro_batch(monkeypatch, capsys):
    tried = []

    def train(preset, device, micro_batch, **options):
        tried.append(micro_batch)
        if micro_batch > 8:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 3.1 GiB")
        return {"micro_batch": micro_batch}

    monkeypatch.setattr(gpu, "train", train)
    assert gpu.train_fitting(gpu.PRESETS["tiny"], torch.device("cpu"), 32)["micro_batch"] == 8
    assert tried == [32, 16, 8]
    assert "micro-batch 32 does not fit in the GPU's memory; trying 16" in capsys.readouterr().out

    def fails(preset, device, micro_batch, **options):
        raise ValueError("something else")

    monkeypatch.setattr(gpu, "train", fails)
    with pytest.raises(ValueError, match="something else"):
        gpu.train_fitting(gpu.PRESETS["tiny"], torch.device("cpu"), 32)


def test_a_missing_gpu_is_refused_with_the_devices_present(capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(SystemExit) as exit:
        gpu.main(["--device", "cuda"])
    assert exit.value.code == 2
    assert "Use one of: cpu" in capsys.readouterr().err
