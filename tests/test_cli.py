"""`python -m llmkit`: train to a checkpoint, resume it, generate from it, fail kindly."""

import json
import subprocess
import sys

import pytest

from llmkit.checkpoint import load_checkpoint

TINY_SHAPE = ["--layers", "1", "--heads", "2", "--width", "16", "--context", "16",
              "--batch-size", "4", "--eval-interval", "0", "--device", "cpu", "--quiet"]


def llmkit(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "llmkit", *map(str, args)], capture_output=True,
                          text=True, timeout=120, cwd=cwd)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A corpus and a checkpoint trained on it for 6 steps, with the JSON line printed."""
    folder = tmp_path_factory.mktemp("cli")
    corpus = folder / "corpus.txt"
    corpus.write_text("the cat sat on the mat. the dog sat on the log.\n" * 40, encoding="utf-8")
    result = llmkit("train", "--data", corpus, *TINY_SHAPE, "--steps", 6, "--out", folder / "ckpt", "--json")
    assert result.returncode == 0, result.stderr
    return folder, corpus, result


def test_train_ends_with_one_json_line_of_results(trained):
    folder, _, result = trained
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(summary) == {"train_loss", "val_loss", "steps", "tokens_per_sec", "wall_s", "device"}
    assert summary["steps"] == 6 and summary["device"] == "cpu"
    assert 0 < summary["val_loss"] < 10 and summary["tokens_per_sec"] > 0

    saved = load_checkpoint(folder / "ckpt")
    assert saved.state["step"] == 6
    assert saved.config.n_layer == 1 and saved.config.d_model == 16
    assert saved.config.vocab_size == saved.tokenizer.vocab_size == len(set("the cat sat on mat.dglo\n"))


@pytest.mark.slow
def test_resume_continues_to_the_new_step_count(trained, tmp_path):
    folder, corpus, _ = trained
    copy = tmp_path / "ckpt"
    subprocess.run(["cp", "-r", str(folder / "ckpt"), str(copy)], check=True)
    result = llmkit("train", "--data", corpus, "--out", copy, "--resume", "--steps", 9, "--json", "--quiet")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1])["steps"] == 9
    history = load_checkpoint(copy).state["history"]
    assert [r["step"] for r in history if "loss" in r] == list(range(1, 10))
    # The saved schedule reached min_lr (default lr / 10) at step 6; the extra steps stay there.
    assert [r["lr"] for r in history if "loss" in r][6:] == [1e-4] * 3


def test_generate_streams_text_from_the_checkpoint(trained):
    folder, _, _ = trained
    result = llmkit("generate", "--checkpoint", folder / "ckpt", "--prompt", "the ",
                    "--max-new-tokens", 20, "--temperature", 0)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("the ")
    assert len(result.stdout.rstrip("\n")) == len("the ") + 20   # one character per token
    assert set(result.stdout) <= set("the cat sat on the mat. the dog sat on the log.\n")


def test_missing_checkpoint_is_a_message_not_a_traceback(tmp_path):
    result = llmkit("generate", "--checkpoint", tmp_path / "nothing-here", "--prompt", "hi")
    assert result.returncode != 0
    assert "no checkpoint folder" in result.stderr and str(tmp_path / "nothing-here") in result.stderr
    assert "Traceback" not in result.stderr


def test_train_without_data_says_what_to_give(tmp_path):
    result = llmkit("train", "--steps", 1, "--quiet")
    assert result.returncode == 2
    assert "--data PATH.txt or --tinytales N" in result.stderr and "Traceback" not in result.stderr


def test_help_lists_every_subcommand():
    result = llmkit("--help")
    assert result.returncode == 0
    for command in ("train", "generate", "bench", "grade"):
        assert command in result.stdout
