"""Device selection: the override, the clear errors, and the autocast choice."""

import platform
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
