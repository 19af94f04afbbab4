"""`python -m llmkit doctor`: the report's checks, and the self-test in its quick form.

The self-test's checks must be able to fail: each is also run against a deliberately broken
piece (a resume that forgets the optimizer, a KV cache that does not advance, a crash).
"""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from llmkit import doctor

ROOT = Path(__file__).resolve().parents[1]


def test_flops_units():
    assert doctor.flops(12.34e9) == "12.3 GFLOP/s" and doctor.flops(312e12) == "312.0 TFLOP/s"


@pytest.mark.parametrize("text, expected", [
    ("2.13.0+cpu", (2, 13, 0)), ("0.1.2", (0, 1, 2)), ("2026.11.19", (2026, 11, 19)),
    ("8.1.0rc1", (8, 1, 0)), ("1.4.dev0", (1, 4)), ("", ()),
])
def test_version_tuple(text, expected):
    assert doctor.version_tuple(text) == expected


def test_required_packages_match_requirements_txt():
    listed = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)>=([\d.]+)", line.strip())
        if match:
            listed[match.group(1)] = match.group(2)
    assert listed == doctor.REQUIRED


def test_packages_missing_or_old_fail_with_what_to_do(monkeypatch):
    real = doctor.installed_version
    fake = {"numpy": None, "plotly": "5.0.1"}
    monkeypatch.setattr(doctor, "installed_version", lambda name: fake[name] if name in fake else real(name))
    check = doctor.check_packages()[0]
    assert check.status == "FAIL"
    assert "numpy missing" in check.detail and "plotly 5.0.1 is older than 5.22" in check.detail
    assert "pip install -r requirements.txt" in check.detail
    monkeypatch.setattr(doctor, "installed_version", real)
    assert doctor.check_packages()[0].status == "PASS"   # this environment has everything


def write_extension(folder: Path, name: str, version: str) -> None:
    (folder / name).mkdir(parents=True)
    (folder / name / "package.json").write_text(json.dumps({"name": name, "version": version}))


def test_widgets_need_every_extension(tmp_path):
    write_extension(tmp_path, "@jupyter-widgets/jupyterlab-manager", "5.0.16")
    write_extension(tmp_path, "jupyterlab-plotly", "7.1.0")
    check = doctor.check_widgets([tmp_path])
    assert check.status == "FAIL" and "anywidget" in check.detail and "as text" in check.detail
    write_extension(tmp_path, "anywidget", "0.11.0")
    check = doctor.check_widgets([tmp_path])
    assert check.status == "PASS" and "jupyterlab-manager 5.0.16" in check.detail


def test_widgets_without_jupyterlab_is_a_warning(tmp_path, monkeypatch):
    monkeypatch.setattr(doctor, "installed_version", lambda name: None)
    assert doctor.check_widgets([tmp_path]).status == "WARN"


@pytest.mark.slow
def test_widget_check_agrees_with_jupyter_labextension_list():
    jupyter = shutil.which("jupyter", path=str(Path(sys.executable).parent))
    if jupyter is None:
        pytest.skip("no jupyter command in this environment")
    listed = subprocess.run([jupyter, "labextension", "list"], capture_output=True, text=True,
                            timeout=120)
    text = listed.stdout + listed.stderr
    check = doctor.check_widgets()
    expected = all(f"{name} v" in text for name in doctor.WIDGET_EXTENSIONS)
    assert (check.status == "PASS") is expected, text


def test_device_lines_say_device_precision_and_threads():
    lines = {check.name: check for check in doctor.check_device(torch.device("cpu"))}
    assert lines["device"].detail.startswith("cpu")
    assert lines["precision"].detail.startswith("float32")
    assert re.match(r"\d+ threads? of \d+ usable cores: ", lines["threads"].detail)


@pytest.fixture(scope="module")
def quick_test(tmp_path_factory):
    return doctor.SelfTest(torch.device("cpu"), quick=True, workdir=tmp_path_factory.mktemp("doctor"))


def test_quick_self_test_passes(quick_test):
    checks = quick_test.run(compile=False, report=lambda check: None)
    assert [c.name for c in checks] == ["train 20 steps, eager", "exact resume", "KV cache",
                                        "checkpoint round trip"]
    assert all(c.status == "PASS" for c in checks), "\n".join(map(str, checks))
    assert re.search(r"[\d,]+ tokens/s, MFU [\d.]+%", checks[0].detail)


def test_self_test_in_float16_with_a_scaler(quick_test, monkeypatch):
    """The path of GPUs without bfloat16 (T4, V100), simulated on the CPU: float16 autocast
    and a gradient scaler, whose state must survive the resume too."""
    from llmkit import device as dev

    choose = dev._precision_choice
    monkeypatch.setattr(dev, "_precision_choice", lambda device, precision: (
        (torch.float16, "float16 (simulated)") if precision == "auto" else choose(device, precision)))
    assert dev.needs_grad_scaler("cpu")
    with dev.autocast("cpu"):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float16
    training, resume = quick_test.check_training(False), quick_test.check_resume()
    assert training.status == "PASS" and "float16 matmuls" in training.detail, training
    assert resume.status == "PASS", resume


def test_resume_that_forgets_the_optimizer_fails(quick_test, monkeypatch):
    from llmkit.checkpoint import load_checkpoint
    from llmkit.train import Trainer

    def forgetful_resume(self, path):   # weights and step only: the Adam moments are lost
        saved = load_checkpoint(path)
        self.model.load_state_dict(saved.model.state_dict())
        self.step = saved.state["step"]
        return self

    monkeypatch.setattr(Trainer, "resume", forgetful_resume)
    check = quick_test.check_resume()
    assert check.status == "FAIL" and "two straight runs agree" in check.detail


def test_resume_on_nondeterministic_kernels_is_a_warning(quick_test, monkeypatch):
    runs = {}
    losses = quick_test.losses

    def noisy(trainer):   # each run's losses a little off, as varying kernels would make them
        offset = runs.setdefault(id(trainer), len(runs) * 1e-6)
        return [loss + offset for loss in losses(trainer)]

    monkeypatch.setattr(quick_test, "losses", noisy)
    check = quick_test.check_resume()
    assert check.status == "WARN" and "not deterministic" in check.detail, check


def test_kv_cache_that_does_not_advance_fails(quick_test, monkeypatch):
    from llmkit.model.kv_cache import KVCache

    advance = KVCache.advance
    monkeypatch.setattr(KVCache, "advance", lambda self, n: advance(self, 0) if self.length else advance(self, n))
    assert quick_test.check_kv_cache().status == "FAIL"


def test_a_crash_is_a_fail_line_and_the_rest_still_runs(quick_test, monkeypatch):
    def broken():
        raise RuntimeError("no kernel image is available")

    monkeypatch.setattr(quick_test, "check_kv_cache", broken)
    monkeypatch.setattr(quick_test, "check_training", lambda compile: doctor.Check("PASS", "train", "-"))
    monkeypatch.setattr(quick_test, "check_resume", lambda: doctor.Check("PASS", "exact resume", "-"))
    checks = quick_test.run(compile=False, report=lambda check: None)
    assert str(checks[2]) == "FAIL  KV cache: RuntimeError: no kernel image is available"
    assert checks[3].name == "checkpoint round trip" and checks[3].status == "PASS"


def test_command_line_exit_codes(capsys):
    from llmkit.cli import main

    assert main(["doctor", "--no-self-test"]) == 0
    out = capsys.readouterr().out
    for name in ("packages", "widgets", "device", "precision", "threads"):
        assert f"  {name}: " in out
    assert out.rstrip().endswith("all checks passed")
    if not (torch.cuda.is_available() or torch.backends.mps.is_available()):
        assert main(["doctor", "--gpu", "--no-self-test"]) == 1
        assert "no CUDA or Apple GPU" in capsys.readouterr().out
    assert main(["doctor", "--device", "tpu"]) == 2


def test_python_dash_m_runs_it():
    result = subprocess.run([sys.executable, "-m", "llmkit", "doctor", "--no-self-test"], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "PASS  packages" in result.stdout
