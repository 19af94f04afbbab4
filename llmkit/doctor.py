"""`python -m llmkit doctor`: is this machine ready for the course, and does training work here?

For a learner before lesson 00, and a maintainer on a new machine:

    python -m llmkit doctor                  # versions, widgets, device, precision, threads
    python -m llmkit doctor --self-test      # ... and train a model here (a minute on a CPU)
    python -m llmkit doctor --gpu            # the same, and fail if there is no GPU
    python -m llmkit doctor --self-test --quick   # a tiny model: seconds (the tests use it)

The report: Python and the versions of the packages the course needs (against the lower
bounds of requirements.txt), whether JupyterLab will draw the widgets (its widget
extensions are installed where it looks for them), the device `pick_device` finds, the
number format training runs in there and why (`llmkit.device.precision_reason`), and the
CPU threads (`llmkit.threads`).

The self-test runs by default on a CUDA or Apple GPU, where the untested paths are: it
trains a GPT on Tiny Shakespeare with `llmkit.train.Trainer` in the automatic precision and
prints one PASS or FAIL line per check:

- 20 training steps, eager and with `torch.compile`: every loss finite and the loss falling;
  tokens/s and MFU (model FLOPs per second over the measured matmul peak of the number
  format the matmuls ran in, as `llmkit.bench` does);
- exact resume: 10 steps, save, resume in a new trainer, 10 more steps give the same losses
  and weights, bit for bit, as 20 steps straight (a WARN where two straight runs already
  differ, as on devices whose kernels are not deterministic);
- KV cache: logits decoded one token at a time with each cache equal the logits of one
  forward pass over the whole text (float32);
- checkpoint round trip: weights, tokenizer and outputs identical after save and load.

The exit status is 0 when nothing failed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import re
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import torch

from llmkit.device import autocast_dtype, describe, pick_device, precision_reason, synchronize
from llmkit.threads import threads_in_use

# What the course installs (requirements.txt: the test suite checks the two agree), and
# what only the tests need.
REQUIRED = {"torch": "2.4", "numpy": "1.24", "regex": "2023.0", "safetensors": "0.4",
            "tqdm": "4.66", "jupyterlab": "4.0", "ipywidgets": "8.1", "plotly": "5.22",
            "anywidget": "0.9", "nbformat": "5.9", "nbclient": "0.10", "ipykernel": "6.29",
            "bertviz": "1.4", "sacrebleu": "2.4", "rouge-score": "0.1.2"}
FOR_TESTS = ("transformers", "tiktoken", "pytest", "nbval", "peft", "nbgrader", "playwright")
# The JupyterLab extensions that draw widgets: ipywidgets' (from jupyterlab_widgets),
# anywidget's (plotly's FigureWidget is one) and plotly's renderer.
WIDGET_EXTENSIONS = {"@jupyter-widgets/jupyterlab-manager": "ipywidgets",
                     "anywidget": "anywidget", "jupyterlab-plotly": "plotly figures"}


@dataclass
class Check:
    """One line of the report: status is PASS, FAIL, WARN or INFO."""

    status: str
    name: str
    detail: str

    def __str__(self) -> str:
        return f"{self.status:<4}  {self.name}: {self.detail}"


def flops(per_second: float) -> str:
    """12.3e9 -> '12.3 GFLOP/s'; 312e12 -> '312.0 TFLOP/s'."""
    if per_second >= 1e12:
        return f"{per_second / 1e12:,.1f} TFLOP/s"
    return f"{per_second / 1e9:,.1f} GFLOP/s"


# --- the environment ---------------------------------------------------------------------


def version_tuple(version: str) -> tuple[int, ...]:
    """'2.13.0+cpu' -> (2, 13, 0): the leading numbers, enough to compare with a lower bound."""
    leading = re.match(r"\d+(?:\.\d+)*", version)
    return tuple(int(n) for n in leading.group(0).split(".")) if leading else ()


def installed_version(package: str) -> str | None:
    """The installed version of a distribution (e.g. 'rouge-score'), or None."""
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def check_packages() -> list[Check]:
    """One check for what the course needs (present and new enough), one for the tests' extras."""
    found, problems = [], []
    for package, minimum in REQUIRED.items():
        version = installed_version(package)
        if version is None:
            problems.append(f"{package} missing")
        elif version_tuple(version) < version_tuple(minimum):
            problems.append(f"{package} {version} is older than {minimum}")
        else:
            found.append(f"{package} {version}")
    checks = [Check("PASS" if not problems else "FAIL", "packages",
                    ", ".join(problems + found) + ("" if not problems else
                    ". Install them: pip install -r requirements.txt (in the course folder, "
                    "in the environment that runs this Python)"))]
    extras = {package: installed_version(package) for package in FOR_TESTS}
    have = [f"{p} {v}" for p, v in extras.items() if v]
    lack = [p for p, v in extras.items() if not v]
    checks.append(Check("INFO", "for the tests", ", ".join(have) + (
        f"; not installed: {', '.join(lack)} (pip install -r requirements-dev.txt)" if lack else "")))
    return checks


def labextension_folders() -> list[Path]:
    """Where JupyterLab looks for prebuilt extensions (`jupyter labextension list` reads these)."""
    try:
        from jupyter_core.paths import jupyter_path

        return [Path(folder) for folder in jupyter_path("labextensions")]
    except ImportError:
        return [Path(sys.prefix) / "share" / "jupyter" / "labextensions"]


def check_widgets(folders: list[Path] | None = None) -> Check:
    """Whether JupyterLab will draw widgets: its widget extensions are installed."""
    folders = labextension_folders() if folders is None else folders
    found, missing = [], []
    for extension, what in WIDGET_EXTENSIONS.items():
        for folder in folders:
            package = folder / extension / "package.json"
            if package.is_file():
                version = json.loads(package.read_text(encoding="utf-8")).get("version", "?")
                found.append(f"{extension} {version}")
                break
        else:
            missing.append(f"{extension} (for {what})")
    if installed_version("jupyterlab") is None:
        return Check("WARN", "widgets", "JupyterLab is not installed in this environment; if you "
                     "start it from another one, install requirements.txt there too")
    if missing:
        return Check("FAIL", "widgets", f"JupyterLab will show widgets as text: no extension "
                     f"{', '.join(missing)} in {', '.join(map(str, folders))}. Run pip install -r "
                     "requirements.txt in the environment that runs jupyter lab, then restart it")
    return Check("PASS", "widgets", "JupyterLab will draw them: " + ", ".join(found))


def check_device(device: torch.device) -> list[Check]:
    """The device, its number format and why, the threads; a CPU-only PyTorch on a GPU machine."""
    checks = [Check("INFO", "device", describe(device)),
              Check("INFO", "precision", precision_reason(device)),
              Check("INFO", "threads", threads_in_use())]
    if device.type == "cpu" and "+cpu" in torch.__version__ and (
            Path("/dev/nvidiactl").exists() or Path("/proc/driver/nvidia").exists()):
        checks.append(Check("WARN", "GPU", "this machine has an NVIDIA GPU, but this PyTorch is "
                            "the CPU-only build: install the CUDA build (README, section Start)"))
    return checks


# --- the self-test -----------------------------------------------------------------------


@dataclass
class Recipe:
    """The model and batch the self-test trains; sized per device (quick: for the tests)."""

    n_layer: int
    n_head: int
    d_model: int
    context_length: int
    batch_size: int
    peak_size: int   # the side of the square matmuls that measure the peak

    @classmethod
    def for_device(cls, device: torch.device, quick: bool = False) -> Recipe:
        if quick:
            return cls(2, 2, 32, 32, 4, 256)
        if device.type == "cuda":   # nanoGPT's shakespeare_char model
            return cls(6, 6, 384, 256, 32, 4096)
        if device.type == "mps":
            return cls(4, 4, 256, 128, 16, 2048)
        return cls(4, 4, 128, 64, 12, 1024)   # the baby GPT of lesson 07


class SelfTest:
    """The checks of the self-test, on one device, sharing the data and the recipe."""

    steps = 20

    def __init__(self, device: torch.device, quick: bool = False, workdir: Path | None = None):
        from llmkit.data.text import tiny_shakespeare
        from llmkit.tokenizers import CharTokenizer

        self.device = device
        self.recipe = Recipe.for_device(device, quick)
        self.workdir = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp())
        text = tiny_shakespeare()[: 100_000 if quick else 400_000]
        self.tokenizer = CharTokenizer.train(text)
        ids = torch.tensor(self.tokenizer.encode(text))
        split = int(0.9 * len(ids))
        self.train_ids, self.val_ids = ids[:split], ids[split:]
        self.peaks: dict[torch.dtype, float] = {}

    def model(self):
        from llmkit.model import GPT, GPTConfig

        r = self.recipe
        torch.manual_seed(0)
        return GPT(GPTConfig(vocab_size=self.tokenizer.vocab_size, context_length=r.context_length,
                             n_layer=r.n_layer, n_head=r.n_head, d_model=r.d_model, dropout=0.0))

    def trainer(self, max_steps: int, compile: bool = False):
        from llmkit.train import TrainConfig, Trainer

        config = TrainConfig(max_steps=max_steps, batch_size=self.recipe.batch_size, lr=3e-3,
                             min_lr=3e-4, warmup_steps=2, lr_decay_steps=self.steps,
                             eval_interval=0, progress=False, compile=compile, seed=1)
        return Trainer(self.model(), self.train_ids, self.val_ids, config,
                       device=self.device, tokenizer=self.tokenizer)

    def peak_flops(self, dtype: torch.dtype) -> float:
        """The matmul peak in `dtype`, measured once (both training checks compare with it)."""
        from llmkit.bench import matmul_peak_flops

        if dtype not in self.peaks:
            self.peaks[dtype] = matmul_peak_flops(self.device, size=self.recipe.peak_size, dtype=dtype)
        return self.peaks[dtype]

    @staticmethod
    def losses(trainer) -> list[float]:
        return [record["loss"] for record in trainer.history if "loss" in record]

    def check_training(self, compile: bool) -> Check:
        """20 steps: finite, falling loss; tokens/s and MFU over the last 15 steps."""
        name = f"train {self.steps} steps, {'torch.compile' if compile else 'eager'}"
        trainer = self.trainer(5, compile=compile)
        start = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            trainer.fit()           # the first steps compile (and warm up the kernels)
            synchronize(self.device)
            warmup_s = time.perf_counter() - start
            trainer.config.max_steps = self.steps
            start = time.perf_counter()
            trainer.fit()
            synchronize(self.device)
            seconds = time.perf_counter() - start
        fell_back = [str(w.message) for w in caught if "compile" in str(w.message)]
        losses = self.losses(trainer)
        dtype = autocast_dtype(self.device) or torch.float32
        dtype_name = str(dtype).removeprefix("torch.")
        tokens_per_s = (self.steps - 5) * self.recipe.batch_size * self.recipe.context_length / seconds
        peak = self.peak_flops(dtype)
        mfu = tokens_per_s * trainer.model.flops_per_token(self.recipe.context_length) / peak
        figures = (f"loss {losses[0]:.3f} -> {losses[-1]:.3f}, {dtype_name} matmuls, "
                   f"{tokens_per_s:,.0f} tokens/s, MFU {mfu:.1%} of the measured {dtype_name} "
                   f"matmul peak ({flops(peak)})"
                   + (f", compiled in {warmup_s:.0f} s" if compile else ""))
        if fell_back:
            return Check("FAIL", name, f"torch.compile fell back to eager: {fell_back[0]} ({figures})")
        if len(losses) != self.steps or not all(math.isfinite(x) for x in losses):
            return Check("FAIL", name, f"losses not all finite: {losses}")
        if not sum(losses[-5:]) < sum(losses[:5]):
            return Check("FAIL", name, f"the loss did not fall: {losses}")
        return Check("PASS", name, figures)

    def check_resume(self) -> Check:
        """10 steps, save, resume in a new trainer, 10 more == 20 straight, bit for bit."""
        name = "exact resume"
        straight = self.trainer(self.steps)
        straight.fit()
        first = self.trainer(self.steps // 2)
        first.fit()
        path = first.save_checkpoint(self.workdir / "resume")
        resumed = self.trainer(self.steps).resume(path)
        resumed.fit()
        same_losses = self.losses(straight) == self.losses(resumed)
        same_weights = all(torch.equal(a, b) for a, b in zip(straight.model.state_dict().values(),
                                                             resumed.model.state_dict().values()))
        if same_losses and same_weights and resumed.step == straight.step == self.steps:
            return Check("PASS", name, f"{self.steps // 2} steps, save, resume, "
                         f"{self.steps // 2} more == {self.steps} straight: losses and weights "
                         "identical bit for bit")

        def largest_gap(run) -> float:
            return max((abs(x - y) for x, y in zip(self.losses(straight), self.losses(run))),
                       default=float("nan"))

        again = self.trainer(self.steps)
        again.fit()
        if self.losses(again) == self.losses(straight):
            return Check("FAIL", name, f"two straight runs agree bit for bit, but the resumed one "
                         f"differs (losses by up to {largest_gap(resumed):.3g}, weights "
                         f"{'equal' if same_weights else 'differ'}, steps {straight.step} vs "
                         f"{resumed.step}): resuming loses some state")
        # Kernels that add in a varying order (e.g. atomics on some GPUs) make no two runs
        # equal, resumed or not: bit for bit cannot be checked, only compared with that noise.
        return Check("WARN", name, f"this device's kernels are not deterministic: two straight "
                     f"runs differ by up to {largest_gap(again):.3g} in loss, the resumed run by "
                     f"up to {largest_gap(resumed):.3g}; bit-for-bit resume cannot be checked here")

    @torch.no_grad()
    def check_kv_cache(self) -> Check:
        """Logits decoded token by token with each cache == one uncached forward pass."""
        name = "KV cache"
        model = self.model().to(self.device).eval()
        T = self.recipe.context_length
        idx = self.val_ids[None, :T].to(self.device)
        precision = torch.get_float32_matmul_precision()
        torch.set_float32_matmul_precision("highest")   # TF32 would blur the comparison
        try:
            full, _ = model(idx)
            worst = {}
            for static in (False, True):
                cache = model.new_kv_cache(1, static=static)
                prompt = T // 4
                steps = [model(idx[:, :prompt], kv_cache=cache)[0]]
                steps += [model(idx[:, t : t + 1], kv_cache=cache)[0] for t in range(prompt, T)]
                cached = torch.cat(steps, dim=1)
                worst[type(cache).__name__] = (cached - full).abs().max().item()
        finally:
            torch.set_float32_matmul_precision(precision)
        scale = full.abs().max().item()
        detail = ", ".join(f"{kind} max difference {gap:.1e}" for kind, gap in worst.items())
        if all(gap <= 1e-4 * max(1.0, scale) for gap in worst.values()):
            return Check("PASS", name, f"{T} positions decoded one by one give the logits of one "
                         f"forward pass (float32; {detail}, logits up to {scale:.1f})")
        return Check("FAIL", name, f"cached logits differ from the uncached ones: {detail}")

    def check_checkpoint(self) -> Check:
        """Save a trained model, load it back: the same weights, tokenizer and outputs."""
        from llmkit.checkpoint import load_checkpoint

        name = "checkpoint round trip"
        trainer = self.trainer(3)
        trainer.fit()
        path = trainer.save_checkpoint(self.workdir / "round-trip")
        loaded = load_checkpoint(path, device=self.device)
        weights = trainer.model.state_dict()
        same_weights = all(torch.equal(tensor, loaded.model.state_dict()[key])
                           for key, tensor in weights.items())
        sample = "ROMEO:\nWhat light is this?"
        same_tokens = (loaded.tokenizer is not None
                       and loaded.tokenizer.encode(sample) == self.tokenizer.encode(sample))
        idx = torch.tensor([self.tokenizer.encode(sample)], device=self.device)
        trainer.model.eval()
        with torch.no_grad():
            same_output = torch.equal(trainer.model(idx)[0], loaded.model(idx)[0])
        problems = [what for what, ok in (("weights", same_weights), ("tokenizer", same_tokens),
                                          ("outputs", same_output)) if not ok]
        if problems:
            return Check("FAIL", name, f"{', '.join(problems)} changed on the way through {path}")
        return Check("PASS", name, f"{len(weights)} tensors, the tokenizer and the logits "
                     "identical after save and load")

    def run(self, compile: bool = True, report=print) -> list[Check]:
        """Every check, each reported as soon as it is done; a crash is a FAIL, not the end."""
        jobs = [("train eager", lambda: self.check_training(False))]
        if compile:
            jobs.append(("train torch.compile", lambda: self.check_training(True)))
        jobs += [("exact resume", self.check_resume), ("KV cache", self.check_kv_cache),
                 ("checkpoint round trip", self.check_checkpoint)]
        checks = []
        for name, job in jobs:
            try:
                check = job()
            except Exception as error:   # a broken piece must not hide the other checks
                check = Check("FAIL", name, f"{type(error).__name__}: {error}")
            report(check)
            checks.append(check)
        return checks


# --- the command ---------------------------------------------------------------------------


def main(argv=None) -> int:
    """Print the report (and run the self-test); returns 0 when nothing failed."""
    parser = argparse.ArgumentParser(prog="python -m llmkit doctor", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--self-test", action="store_true",
                        help="train a model here and check it (default on a CUDA or Apple GPU)")
    parser.add_argument("--gpu", action="store_true",
                        help="the self-test on the GPU; fails where there is none")
    parser.add_argument("--no-self-test", action="store_true", help="only the report, even on a GPU")
    parser.add_argument("--quick", action="store_true", help="a tiny model (seconds; for the tests)")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile check")
    parser.add_argument("--device", help="cpu, cuda, mps (default: the fastest present)")
    args = parser.parse_args(argv)

    def report(check: Check) -> None:
        print(check, flush=True)

    try:
        device = pick_device(args.device)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"llmkit doctor: Python {platform.python_version()} ({sys.executable}), "
          f"{platform.platform()}")
    checks = check_packages() + [check_widgets()] + check_device(device)
    for check in checks:
        report(check)
    if args.gpu and device.type == "cpu":
        checks.append(Check("FAIL", "GPU", "--gpu asks for the GPU self-test, but PyTorch sees no "
                            "CUDA or Apple GPU here; running it on the CPU instead"))
        report(checks[-1])
    if (args.self_test or args.gpu or device.type != "cpu") and not args.no_self_test:
        print(f"self-test on {device}, precision auto{' (quick)' if args.quick else ''}:", flush=True)
        start = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="llmkit-doctor-") as workdir:
            checks += SelfTest(device, quick=args.quick, workdir=Path(workdir)).run(
                compile=not args.no_compile, report=report)
        print(f"self-test took {time.perf_counter() - start:.0f} s")
    failed = [check.name for check in checks if check.status == "FAIL"]
    warned = [check.name for check in checks if check.status == "WARN"]
    print(f"{len(failed)} problem(s): {', '.join(failed)}" if failed else
          "all checks passed" + (f"; read the warning(s): {', '.join(warned)}" if warned else ""))
    return 1 if failed else 0
