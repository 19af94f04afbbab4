"""Device selection: the override, the clear errors, and the autocast choice."""

import platform
from types import SimpleNamespace
from pathlib import Path

import pytest
import torch

from llmkit import device as dev


def test_cpu_is_always_available():
    assert "cpu" in dev.available_devices()
    assert dev.pick_device("cpu") == torch.device("cpu")


def test_environment_variable_overrides(monkeypatch):
    monkeypatch.setenv(dev.DEVICE_ENV, "cpu")
    assert dev.pick_device() == torch.device("cpu")


def test_default_follows_what_torch_reports(monkeypatch):
    monkeypatch.delenv(dev.DEVICE_ENV, raising=False)
    expected = "cuda" if torch.cuda.is_available() else (
        "mps" if torch.backends.mps.is_available() else "cpu")
    assert dev.pick_device().type == expected


@pytest.mark.parametrize("name", ["gpu", "cuda:7x", "tpu"])
def test_wrong_device_name_says_what_to_use(monkeypatch, name):
    monkeypatch.setenv(dev.DEVICE_ENV, name)
    with pytest.raises(ValueError, match="Use one of: .*cpu"):
        dev.pick_device()


def test_missing_hardware_is_a_clear_error():
    if torch.cuda.device_count() > 8:
        pytest.skip("a machine with more than 8 GPUs has cuda:8")
    with pytest.raises(ValueError, match="cuda:8"):
        dev.pick_device("cuda:8")


def test_cpu_runs_in_float32():
    assert dev.autocast_dtype("cpu") is None
    with dev.autocast("cpu"):
        out = torch.ones(2, 2) @ torch.ones(2, 2)
    assert out.dtype == torch.float32


@pytest.mark.parametrize("native", [True, False])
def test_bf16_is_an_opt_in_for_cpus_that_have_it(monkeypatch, native):
    monkeypatch.setattr(dev, "cpu_has_native_bf16", lambda: native)
    assert dev.autocast_dtype("cpu", "auto") is None
    assert dev.autocast_dtype("cpu", "fp32") is None
    assert dev.autocast_dtype("cpu", "bf16") is (torch.bfloat16 if native else None)
    with dev.autocast("cpu", precision="bf16"):
        out = torch.ones(2, 2) @ torch.ones(2, 2)
    assert out.dtype == (torch.bfloat16 if native else torch.float32)
    with pytest.raises(ValueError, match="precision must be one of"):
        dev.autocast_dtype("cpu", "half")


def test_native_bf16_matches_the_cpu_flags():
    cpuinfo = Path("/proc/cpuinfo")
    if platform.machine() in ("x86_64", "AMD64") and cpuinfo.exists():
        flags = set()
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("flags"):
                flags |= set(line.split(":", 1)[1].split())
        assert dev.cpu_has_native_bf16() == bool(flags & {"avx512_bf16", "amx_bf16", "amx_tile"})
    else:   # elsewhere the answer only has to be a plain yes or no
        assert dev.cpu_has_native_bf16() in (True, False)


def test_seed_everything_repeats_random_draws():
    dev.seed_everything(3)
    first = torch.randn(5)
    generator = dev.seed_everything(3)
    assert torch.equal(first, torch.randn(5))
    assert torch.equal(torch.randn(5, generator=generator), torch.randn(5, generator=torch.Generator().manual_seed(3)))


def test_describe_names_device_and_versions():
    line = dev.describe("cpu")
    assert line.startswith("cpu") and torch.__version__ in line and "\n" not in line


@pytest.mark.parametrize("value, expected", [("", False), ("0", False), ("false", False), ("1", True), ("yes", True)])
def test_quick_mode_flag(monkeypatch, value, expected):
    monkeypatch.setenv(dev.QUICK_ENV, value)
    assert dev.quick_mode() is expected


# --- precision from the hardware's real capability (GPUs faked: there is none here) ------

GPUS = {"Tesla T4": (7, 5), "Tesla V100-SXM2-16GB": (7, 0), "NVIDIA A100-SXM4-40GB": (8, 0),
        "NVIDIA H100 80GB HBM3": (9, 0)}


@pytest.fixture
def fake_gpu(monkeypatch):
    """Make torch report one CUDA GPU of the given name; torch's own bf16 probe then answers
    as it would on that GPU (including the emulation check, which succeeds on every GPU)."""
    def install(name):
        major, minor = GPUS[name]
        monkeypatch.setattr(torch.version, "hip", None)
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
        monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (major, minor))
        monkeypatch.setattr(torch.cuda, "get_device_properties",
                            lambda device=None: SimpleNamespace(name=name, major=major, minor=minor,
                                                                total_memory=16 * 2**30))
        monkeypatch.setattr(torch.cuda, "_check_bf16_tensor_supported", lambda device: True, raising=False)
    return install


@pytest.mark.parametrize("name", sorted(GPUS))
def test_auto_precision_follows_native_bf16_not_emulation(fake_gpu, name):
    fake_gpu(name)
    # The trap: torch's default answer counts emulation, so it says yes on every GPU.
    assert torch.cuda.is_bf16_supported()
    native = torch.cuda.is_bf16_supported(including_emulation=False)   # the reference
    assert dev.cuda_has_native_bf16("cuda") is native
    auto = dev.autocast_dtype("cuda", "auto")
    reason = dev.precision_reason("cuda", "auto")
    assert name in reason
    if native:
        assert auto is torch.bfloat16 and not dev.needs_grad_scaler("cuda")
        assert reason.startswith("bfloat16") and "no gradient scaler" in reason
        assert dev.autocast_dtype("cuda", "bf16") is torch.bfloat16
    else:   # T4, V100: float16 with a scaler; an explicit bf16 would be emulated, so float32
        assert auto is torch.float16 and dev.needs_grad_scaler("cuda", "auto")
        assert reason.startswith("float16") and "gradient scaler" in reason
        assert dev.autocast_dtype("cuda", "bf16") is None
        assert not dev.needs_grad_scaler("cuda", "bf16")
        assert "emulates" in dev.precision_reason("cuda", "bf16")
    assert dev.autocast_dtype("cuda", "fp32") is None and not dev.needs_grad_scaler("cuda", "fp32")
    assert "float16 autocast + gradient scaler" in dev.describe("cuda") or native


def test_mps_stays_float32_and_says_why():
    for precision in ("auto", "bf16"):
        assert dev.autocast_dtype("mps", precision) is None
        assert not dev.needs_grad_scaler("mps", precision)
        assert "MPS" in dev.precision_reason("mps", precision)


@pytest.mark.parametrize("native", [True, False])
def test_cpu_reason_matches_the_choice(monkeypatch, native):
    monkeypatch.setattr(dev, "cpu_has_native_bf16", lambda: native)
    assert dev.precision_reason("cpu").startswith("float32")
    assert dev.precision_reason("cpu", "bf16").startswith("bfloat16" if native else "float32")
    assert not dev.needs_grad_scaler("cpu", "bf16")
    with pytest.raises(ValueError, match="'auto'"):
        dev.precision_reason("cpu", "fp8")


@pytest.fixture
def matmul_precision():
    before = torch.get_float32_matmul_precision()
    yield
    torch.set_float32_matmul_precision(before)


def test_fast_matmul_is_idempotent_and_keeps_a_choice(matmul_precision):
    torch.set_float32_matmul_precision("highest")
    dev.enable_fast_matmul()
    dev.enable_fast_matmul()
    assert torch.get_float32_matmul_precision() == "high"
    torch.set_float32_matmul_precision("medium")
    dev.enable_fast_matmul()
    assert torch.get_float32_matmul_precision() == "medium"


def test_picking_a_gpu_switches_tf32_on(fake_gpu, monkeypatch, matmul_precision):
    fake_gpu("NVIDIA A100-SXM4-40GB")
    monkeypatch.delenv(dev.DEVICE_ENV, raising=False)
    torch.set_float32_matmul_precision("highest")
    assert dev.pick_device() == torch.device("cuda")
    assert torch.get_float32_matmul_precision() == "high"
    torch.set_float32_matmul_precision("highest")
    assert dev.pick_device("cpu").type == "cpu"
    assert torch.get_float32_matmul_precision() == "highest"
