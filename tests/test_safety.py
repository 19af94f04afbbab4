"""Nothing a learner owns is ever lost: `--out`, divergence, full disks, bad settings, damaged
files. Each case runs the command line (in process, or as a subprocess where the exit status
of a real process matters), and checks the message, the exit status and the folder given as
--out before and after.
"""

import errno
import json
import math
import shutil
import subprocess
import sys

import pytest
import torch

from llmkit import checkpoint as ckpt
from llmkit.cli import main
from llmkit.data.batches import ExampleSet, as_token_tensor
from llmkit.evaluate import stream_loss
from llmkit.model import GPT, GPTConfig
from llmkit.train import TrainConfig, Trainer, TrainingDiverged

TINY = ["--layers", "1", "--heads", "2", "--width", "16", "--context", "16", "--batch-size", "4",
        "--eval-interval", "0", "--device", "cpu", "--quiet"]


def run(capsys, *args) -> tuple[int, str, str]:
    """Run `python -m llmkit ARGS` in this process: (exit status, stdout, stderr)."""
    try:
        code = main([str(a) for a in args])
    except SystemExit as exit:   # argparse's own errors
        code = exit.code
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


def listing(folder) -> dict:
    """{relative path: bytes} of every file below folder (the folder's state, to compare)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("the cat sat on the mat. the dog sat on the log.\n" * 40, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A checkpoint trained for 4 steps (module-wide; tests copy it before changing it)."""
    folder = tmp_path_factory.mktemp("trained")
    corpus = folder / "corpus.txt"
    corpus.write_text("the cat sat on the mat. the dog sat on the log.\n" * 40, encoding="utf-8")
    assert main(["train", "--data", str(corpus), *TINY, "--steps", "4", "--out", str(folder / "ckpt")]) == 0
    return folder / "ckpt", corpus


def copy_of(trained, tmp_path):
    shutil.copytree(trained[0], tmp_path / "ckpt")
    return tmp_path / "ckpt"


# --- --out: only ever a folder llmkit wrote --------------------------------------------------


def test_out_at_a_folder_of_the_learners_is_refused_before_training(capsys, tmp_path, corpus):
    project = tmp_path / "myproject"
    project.mkdir()
    (project / "notes.txt").write_text("my notes")
    (project / "data").mkdir()
    (project / "data" / "x.csv").write_text("1,2")
    before = listing(tmp_path)
    code, _, err = run(capsys, "train", "--data", corpus, *TINY, "--steps", 2, "--out", project)
    assert code == 2
    assert "not a checkpoint llmkit wrote" in err and "data, notes.txt" in err
    assert f"e.g. {project / 'run1'}" in err
    assert listing(tmp_path) == before


def test_out_at_a_folder_holding_other_runs_is_refused(capsys, tmp_path, corpus, trained):
    runs = tmp_path / "runs"
    runs.mkdir()
    shutil.copytree(trained[0], runs / "first")
    shutil.copytree(trained[0], runs / "second")
    before = listing(tmp_path)
    code, _, err = run(capsys, "train", "--data", corpus, *TINY, "--steps", 2, "--out", runs)
    assert code == 2 and "first, second" in err and "not a checkpoint llmkit wrote" in err
    assert listing(tmp_path) == before


def test_out_at_a_file_is_refused_and_the_file_is_not_hidden(capsys, tmp_path, corpus):
    essay = tmp_path / "essay.txt"
    essay.write_text("my essay")
    before = listing(tmp_path)
    code, _, err = run(capsys, "train", "--data", corpus, *TINY, "--steps", 2, "--out", essay)
    assert code == 2 and "it is a file, not a checkpoint folder, and it is left alone" in err
    assert listing(tmp_path) == before
    assert not (tmp_path / ".essay.txt.previous").exists()
    with pytest.raises(ValueError, match="it is a file"):   # the library refuses it too
        ckpt.save_checkpoint(essay, GPT(GPTConfig(vocab_size=8, context_length=4, n_layer=1,
                                                  n_head=1, d_model=8)))
    assert essay.read_text() == "my essay"


def test_out_dot_and_out_below_a_file_are_refused(capsys, tmp_path, corpus, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("x")
    before = listing(tmp_path)
    code, _, err = run(capsys, "train", "--data", corpus, *TINY, "--steps", 2, "--out", ".")
    assert code == 2 and "names no folder of its own" in err
    code, _, err = run(capsys, "train", "--data", corpus, *TINY, "--steps", 2, "--out", tmp_path)
    assert code == 2 and "the folder you are in" in err
    code, _, err = run(capsys, "train", "--data", corpus, *TINY, "--steps", 2, "--out", "notes.txt/run")
    assert code == 2 and "notes.txt is a file, not a folder" in err
    assert listing(tmp_path) == before


def test_out_in_a_place_that_cannot_be_written_is_found_before_training(capsys, tmp_path, corpus,
                                                                         monkeypatch):
    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(ckpt.tempfile, "mkdtemp", refuse)
    code, _, err = run(capsys, "train", "--data", corpus, *TINY, "--steps", 2, "--out", tmp_path / "run")
    assert code == 2 and "cannot be written to (Permission denied)" in err
    assert not (tmp_path / "run").exists()


@pytest.mark.skipif(shutil.which("bwrap") is None, reason="needs bubblewrap for a read-only mount")
def test_out_on_a_read_only_file_system_is_found_before_training(tmp_path, corpus):
    command = ["bwrap", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc",
               sys.executable, "-m", "llmkit", "train", "--data", str(corpus), *TINY,
               "--steps", "2", "--out", str(tmp_path / "run")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    if "bwrap:" in result.stderr:
        pytest.skip(f"bubblewrap cannot run here: {result.stderr.strip()}")
    assert result.returncode == 2, result.stderr
    assert "cannot be written to (Read-only file system)" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "run").exists()


def test_a_checkpoint_folder_llmkit_wrote_is_replaced(capsys, tmp_path, corpus, trained):
    folder = copy_of(trained, tmp_path)
    code, _, _ = run(capsys, "train", "--data", corpus, *TINY, "--steps", 3, "--out", folder)
    assert code == 0 and ckpt.load_checkpoint(folder).state["step"] == 3
    # ... but not once the learner has put a file of their own in it
    (folder / "my_notes.txt").write_text("keep me")
    code, _, err = run(capsys, "train", "--data", corpus, *TINY, "--steps", 3, "--out", folder)
    assert code == 2 and "my_notes.txt" in err and (folder / "my_notes.txt").exists()


# --- divergence ---------------------------------------------------------------------------


DIVERGE = ["--steps", 60, "--lr", 50, "--warmup", 20, "--checkpoint-interval", 5]


def test_divergence_stops_and_keeps_the_last_finite_checkpoint(capsys, tmp_path, corpus):
    out = tmp_path / "run"
    code, _, err = run(capsys, "train", "--data", corpus, *TINY, *DIVERGE, "--out", out)
    assert code == 1
    assert "training diverged: the loss became nan at step" in err
    assert f"the checkpoint in {out} (step" in err and "Try a lower learning rate" in err
    saved = ckpt.load_checkpoint(out)
    assert all(torch.isfinite(p).all() for p in saved.model.parameters())
    assert all(math.isfinite(r["loss"]) for r in saved.state["history"] if "loss" in r)
    diverged_at = int(err.split("at step ")[1].split()[0])
    assert saved.state["step"] < diverged_at and saved.state["step"] % 5 == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus.txt", "run"]


def test_divergence_with_json_prints_valid_json(capsys, tmp_path, corpus):
    code, out, _ = run(capsys, "train", "--data", corpus, *TINY, *DIVERGE, "--json")
    assert code == 1
    result = json.loads(out.strip().splitlines()[-1], parse_constant=lambda name: 1 / 0)   # no NaN
    assert result["loss"] is None and result["step"] > 0 and "diverged" in result["error"]


def test_the_library_refuses_to_save_weights_that_are_not_finite(tmp_path):
    model = GPT(GPTConfig(vocab_size=8, context_length=4, n_layer=1, n_head=1, d_model=8))
    ckpt.save_checkpoint(tmp_path / "c", model)
    before = listing(tmp_path)
    with torch.no_grad():
        model.lm_head.weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match="weights hold nan or inf .*token_embedding.weight"):
        ckpt.save_checkpoint(tmp_path / "c", model)
    assert listing(tmp_path) == before


def test_trainer_raises_training_diverged_with_the_step():
    ids = torch.arange(400) % 8
    config = TrainConfig(max_steps=50, batch_size=4, lr=1e3, warmup_steps=0, eval_interval=0,
                         progress=False, device="cpu", grad_clip=None)
    trainer = Trainer(GPT(GPTConfig(vocab_size=8, context_length=8, n_layer=1, n_head=1,
                                    d_model=8)), ids, ids, config)
    with pytest.raises(TrainingDiverged, match="nothing was saved") as caught:
        trainer.fit()
    assert not math.isfinite(caught.value.loss) and caught.value.step == trainer.step
    assert "gradient clipping (grad_clip=1.0)" in str(caught.value)


# --- a full disk --------------------------------------------------------------------------


def test_a_full_disk_at_a_save_says_so_and_keeps_the_previous_checkpoint(capsys, tmp_path, corpus,
                                                                          trained, monkeypatch):
    folder = copy_of(trained, tmp_path)
    before = listing(tmp_path)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ckpt.torch, "save", full)
    code, _, err = run(capsys, "train", "--data", corpus, *TINY, "--steps", 3, "--out", folder)
    assert code == 1
    assert "error: could not save the checkpoint to" in err
    assert "the disk is full (no space left on the device)" in err
    assert f"the previous checkpoint in {folder} is unchanged" in err and "free some space" in err
    assert listing(tmp_path) == before             # the old checkpoint, byte for byte
    assert not (tmp_path / ".ckpt.staging").exists()


# --- settings that are not finite ----------------------------------------------------------------


@pytest.mark.parametrize("args, message", [
    (["--lr", "inf"], "argument --lr: expected a finite number, got 'inf'"),
    (["--lr", "nan"], "argument --lr: expected a finite number, got 'nan'"),
    (["--lr", "0"], "argument --lr: expected a number above 0, got '0'"),
    (["--seed", str(2**70)], "argument --seed: expected a seed from 0 to 2**63 - 1"),
    (["--dropout", "nan"], "argument --dropout: expected a finite number"),
    (["--time-budget", "inf"], "argument --time-budget: expected a finite number"),
    (["--steps", "-1"], "argument --steps: expected a whole number of at least 0"),
])
def test_train_settings_that_cannot_work_are_refused(capsys, corpus, args, message):
    code, _, err = run(capsys, "train", "--data", corpus, *TINY, *args)
    assert code == 2 and message in err


def test_tinytales_zero_says_it_needs_stories(capsys):
    code, _, err = run(capsys, "train", "--tinytales", 0, "--steps", 1, "--quiet")
    assert code == 2 and "argument --tinytales: expected a whole number of at least 1, got '0'" in err


@pytest.mark.parametrize("args, message", [
    (["--temperature", "nan"], "argument --temperature: expected a finite number, got 'nan'"),
    (["--temperature", "-1"], "argument --temperature: expected a number of at least 0"),
    (["--top-p", "1.5"], "argument --top-p: expected a probability above 0 and at most 1, got '1.5'"),
    (["--top-p", "nan"], "argument --top-p: expected a finite number, got 'nan'"),
    (["--top-k", "0"], "argument --top-k: expected a whole number of at least 1"),
    (["--top-k", "1000"], "--top-k 1000 is more than the model's 15 tokens; give at most 15"),
    (["--seed", str(2**70)], "argument --seed: expected a seed from 0 to 2**63 - 1"),
])
def test_sampling_settings_that_cannot_work_are_refused(capsys, trained, args, message):
    code, _, err = run(capsys, "generate", "--checkpoint", trained[0], "--prompt", "the", *args)
    assert code == 2 and message in err


def test_train_config_refuses_what_is_not_finite():
    for values in (dict(lr=math.inf), dict(min_lr=math.nan), dict(grad_clip=math.inf),
                   dict(seed=2**70), dict(time_budget_s=math.nan)):
        with pytest.raises(ValueError, match="TrainConfig: "):
            TrainConfig(**values)


# --- damaged files ------------------------------------------------------------------------------


def edit_config(folder, change):
    data = json.loads((folder / ckpt.CONFIG_FILE).read_text())
    change(data)
    (folder / ckpt.CONFIG_FILE).write_text(json.dumps(data))


def test_resume_with_wrong_types_in_the_config_says_which_file(capsys, tmp_path, trained):
    folder = copy_of(trained, tmp_path)
    edit_config(folder, lambda d: d["train"].update(lr="fast"))
    before = listing(tmp_path)
    code, _, err = run(capsys, "train", "--data", trained[1], "--resume", "--out", folder, "--steps", 6,
                       "--quiet")
    assert code == 2
    assert "config.json holds training settings this llmkit cannot use" in err
    assert "lr must be a finite number, got 'fast'" in err
    edit_config(folder, lambda d: d["model"].update(dropout="x", lr=None) or d["train"].update(lr=1e-3)
                or d["model"].pop("lr"))
    code, _, err = run(capsys, "train", "--data", trained[1], "--resume", "--out", folder, "--steps", 6)
    assert code == 2 and "config.json is damaged" in err and "dropout must be a finite number" in err
    assert set(listing(tmp_path)) == set(before)


def test_a_vocab_size_that_does_not_match_the_weights_names_the_shapes(capsys, tmp_path, trained):
    folder = copy_of(trained, tmp_path)
    edit_config(folder, lambda d: d["model"].update(vocab_size=100))
    code, _, err = run(capsys, "generate", "--checkpoint", folder, "--prompt", "the")
    assert code == 2
    assert "do not fit the model config.json describes" in err
    # (the tied embedding/head matrix is stored once, under one of its two names)
    assert "weight is [15, 16] in model.safetensors but [100, 16] by config.json" in err
    assert "truncated" not in err


def test_a_huge_context_length_is_refused_before_anything_is_allocated(tmp_path, trained):
    folder = copy_of(trained, tmp_path)
    edit_config(folder, lambda d: d["model"].update(context_length=10**8))
    # A subprocess capped at 2 GiB of address space: building the model first would need 6 GiB.
    code = ("import resource, sys; resource.setrlimit(resource.RLIMIT_AS, (2**31, 2**31)); "
            "from llmkit.cli import main; sys.exit(main(sys.argv[1:]))")
    result = subprocess.run([sys.executable, "-c", code, "generate", "--checkpoint", str(folder),
                             "--prompt", "the"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert "position_embedding.weight is [16, 16] in model.safetensors but [100000000, 16]" in result.stderr


def test_a_context_length_no_weight_contradicts_is_refused_by_memory(tmp_path):
    model = GPT(GPTConfig(vocab_size=8, context_length=16, n_layer=1, n_head=2, d_model=16,
                          position="sinusoidal"))
    ckpt.save_checkpoint(tmp_path / "c", model)
    edit_config(tmp_path / "c", lambda d: d["model"].update(context_length=10**12))
    with pytest.raises(ValueError, match="needs .* GiB, more than this machine's"):
        ckpt.load_checkpoint(tmp_path / "c")


def test_a_checkpoint_may_only_name_classes_inside_llmkit(tmp_path):
    model = GPT(GPTConfig(vocab_size=8, context_length=4, n_layer=1, n_head=1, d_model=8))
    ckpt.save_checkpoint(tmp_path / "c", model)
    edit_config(tmp_path / "c", lambda d: d.update(model_class="os:system"))
    with pytest.raises(ValueError, match="not a class inside llmkit"):
        ckpt.load_checkpoint(tmp_path / "c")


def test_out_of_range_targets_are_a_clear_error():
    model = GPT(GPTConfig(vocab_size=8, context_length=8, n_layer=1, n_head=1, d_model=8))
    ids = torch.arange(40) % 8
    ids[16] = 8    # only ever a target in stream_loss's windows, never an input
    with pytest.raises(ValueError, match="targets must be token ids in 0..7 .* from 0 to 8"):
        stream_loss(model, ids, 8)
    with pytest.raises(ValueError, match="train_ids holds ids from 0 to 8, but the model's vocab_size is 8"):
        Trainer(model, ids, torch.arange(40) % 8, TrainConfig(progress=False, device="cpu"))
    examples = [{"input_ids": [1, 2, 3], "labels": [2, 3, 9]}]
    with pytest.raises(ValueError, match="train_ids holds ids from 0 to 9, but the model's vocab_size is 8"):
        Trainer(model, ExampleSet(examples, pad_id=0), ExampleSet(examples, pad_id=0),
                TrainConfig(progress=False, device="cpu"))


def test_float_ids_are_refused_not_truncated():
    with pytest.raises(ValueError, match="token ids must be integers, got torch.float32"):
        as_token_tensor(torch.tensor([1.0, 2.7]))
    with pytest.raises(ValueError, match="labels must be ints"):
        ExampleSet([{"input_ids": [1, 2], "labels": [2, 2.5]}], pad_id=0)
