"""Data parallel training: 2 processes under torchrun (Gloo, CPU) against 1 process.

The reference is the single-process Trainer on the same global batches; the two-process run
is launched with PyTorch's own launcher (python -m torch.distributed.run), as a learner would.
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from llmkit import distributed
from llmkit.checkpoint import load_checkpoint
from llmkit.model import GPT, GPTConfig
from llmkit.train import TrainConfig, Trainer

VOCAB = 12

WORKER = textwrap.dedent('''
    """One rank: the same model, data and config as the test's single process."""
    import json, sys
    import torch
    sys.path.insert(0, {tests!r})
    from test_distributed import make_trainer

    settings = json.loads(sys.argv[1])
    resume = settings.pop("resume", None)
    trainer = make_trainer(**settings)
    if resume:
        trainer.resume(resume)
    trainer.fit()
    if trainer.group.is_main:
        losses = [r["loss"] for r in trainer.history if "loss" in r]
        with open(settings["report"], "w") as file:
            json.dump({{"losses": losses, "world_size": trainer.group.world_size,
                       "rows": trainer.rows}}, file)
    from llmkit.distributed import cleanup
    cleanup()
''')


def make_trainer(report=None, dropout=0.0, **changes) -> Trainer:
    """A tiny GPT on a learnable stream; changes go to the TrainConfig."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=VOCAB, context_length=16, n_layer=2, n_head=2, d_model=32,
                          dropout=dropout))
    generator = torch.Generator().manual_seed(0)
    ids = torch.arange(3000) % VOCAB
    ids = torch.where(torch.rand(3000, generator=generator) < 0.1,
                      torch.randint(0, VOCAB, (3000,), generator=generator), ids)
    values = dict(max_steps=8, batch_size=8, grad_accum_steps=2, warmup_steps=2, eval_interval=0,
                  progress=False, device="cpu", lr=3e-3, min_lr=3e-4, lr_decay_steps=10)
    return Trainer(model, ids[:2500], ids[2500:], TrainConfig(**{**values, **changes}))


def torchrun(tmp_path, processes: int, **settings) -> dict:
    """Train with `processes` ranks under torchrun; rank 0's report."""
    worker = tmp_path / "worker.py"
    worker.write_text(WORKER.format(tests=os.path.dirname(__file__)))
    settings["report"] = str(tmp_path / "report.json")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "LLMKIT_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone",
         f"--nproc_per_node={processes}", str(worker), json.dumps(settings)],
        capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads((tmp_path / "report.json").read_text())


def largest_loss_difference(tmp_path) -> tuple[float, list, list]:
    two = torchrun(tmp_path, 2)
    assert two["world_size"] == 2 and two["rows"] == 4     # batch 8 split into 4 + 4
    one = [r["loss"] for r in make_trainer().fit() if "loss" in r]
    return max(abs(a - b) for a, b in zip(one, two["losses"])), one, two["losses"]


@pytest.mark.slow
def test_two_ranks_follow_the_loss_of_one_process(tmp_path):
    torch.set_num_threads(1)
    difference, one, two = largest_loss_difference(tmp_path)
    assert len(one) == len(two) == 8
    assert difference < 1e-5, (one, two)
    assert one[-1] < one[0] - 0.1      # and it learned something, so the steps mattered


@pytest.mark.slow
def test_the_checkpoint_two_ranks_write_resumes_in_one_process(tmp_path):
    torch.set_num_threads(1)
    out = tmp_path / "run"
    torchrun(tmp_path, 2, max_steps=5, out_dir=str(out))
    saved = load_checkpoint(out)          # the plain model: no DDP wrapper in the names
    assert isinstance(saved.model, GPT) and saved.state["step"] == 5
    assert saved.state["world_size"] == 2

    resumed = make_trainer(max_steps=8)
    with pytest.warns(UserWarning, match="saved from 2 process\\(es\\) and resumes in 1"):
        resumed.resume(out)
    resumed.fit()
    straight = make_trainer(max_steps=8)
    straight.fit()
    later = [r["loss"] for r in resumed.history if "loss" in r][5:]
    expected = [r["loss"] for r in straight.history if "loss" in r][5:]
    assert len(later) == 3
    assert max(abs(a - b) for a, b in zip(later, expected)) < 1e-5


@pytest.mark.slow
def test_two_ranks_resume_their_own_run_bit_for_bit(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "c").mkdir()
    # Dropout on: each rank's own random stream must be saved and restored too.
    straight = torchrun(tmp_path / "a", 2, max_steps=8, dropout=0.1)
    torchrun(tmp_path / "b", 2, max_steps=5, dropout=0.1, out_dir=str(tmp_path / "run"))
    resumed = torchrun(tmp_path / "c", 2, max_steps=8, dropout=0.1, resume=str(tmp_path / "run"))
    assert len(resumed["losses"]) == 8
    assert resumed["losses"] == straight["losses"]      # exact, not approx


def test_a_global_batch_that_does_not_divide_is_refused():
    with pytest.raises(ValueError, match="global batch_size 5 does not divide among 2 processes; "
                                         "use a multiple of 2 \\(e.g. 4 or 6\\)"):
        distributed.check_batch(5, distributed.Group(rank=0, world_size=2))
    assert distributed.check_batch(6, distributed.Group(rank=1, world_size=3)) == 2


def test_each_rank_keeps_its_own_rows_of_the_global_batch():
    x, y = torch.arange(12).view(6, 2), torch.arange(6)
    parts = [distributed.my_rows(x, y, distributed.Group(rank, 3)) for rank in range(3)]
    assert torch.equal(torch.cat([p[0] for p in parts]), x)
    assert torch.equal(torch.cat([p[1] for p in parts]), y)
    assert distributed.my_rows(x, y, distributed.Group())[0] is x


def test_one_process_is_a_group_of_one(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    group = distributed.setup("cpu")
    assert group == distributed.Group() and group.is_main and not group.active


DYING_WORKER = textwrap.dedent('''
    """Rank 1 dies (as if killed) at its third step; rank 0 would wait for it."""
    import os, sys
    sys.path.insert(0, {tests!r})
    from test_distributed import make_trainer

    trainer = make_trainer(max_steps=1000)
    step = trainer.train_step

    def train_step():
        if trainer.group.rank == 1 and trainer.step == 3:
            os._exit(17)
        return step()

    trainer.train_step = train_step
    trainer.fit()
''')


@pytest.mark.slow
def test_a_rank_that_dies_stops_the_others_with_its_name(tmp_path):
    worker = tmp_path / "worker.py"
    worker.write_text(DYING_WORKER.format(tests=os.path.dirname(__file__)))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "LLMKIT_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                             "--nproc_per_node=2", str(worker)],
                            capture_output=True, text=True, timeout=240, env=env)   # no hang
    assert result.returncode != 0
    assert "rank      : 1" in result.stderr and "exitcode  : 17" in result.stderr, result.stderr[-2000:]


@pytest.mark.slow
def test_torchrun_runs_the_command_line_and_rank_0_reports(tmp_path, monkeypatch):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the cat sat on the mat. the dog sat on the log.\n" * 40, encoding="utf-8")
    monkeypatch.setenv("LLMKIT_THREADS", "1")
    result = distributed.launch(
        ["--data", corpus, "--layers", 1, "--heads", 2, "--width", 16, "--context", 16,
         "--batch-size", 4, "--steps", 4, "--eval-interval", 2, "--device", "cpu", "--quiet",
         "--out", tmp_path / "run"], processes=2, timeout_s=300)
    assert result["steps"] == 4 and result["device"] == "cpu"       # rank 0's one report
    saved = load_checkpoint(tmp_path / "run")
    assert saved.state["world_size"] == 2 and saved.state["step"] == 4
    assert [r["step"] for r in saved.state["history"] if "val_loss" in r] == [0, 2, 4]
    with pytest.raises(RuntimeError, match="torchrun exited with status 1: error: the global "
                                           "batch_size 3 does not divide among 2 processes"):
        distributed.launch(["--data", corpus, "--batch-size", 3, "--steps", 1, "--device", "cpu"],
                           processes=2, timeout_s=300)


def test_a_rank_whose_gpu_does_not_exist_says_how_many_there_are(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "3")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(ValueError, match="rank 3 needs GPU 3, but this machine has 2; start at most "
                                         "that many processes per machine"):
        distributed.setup("cuda")
