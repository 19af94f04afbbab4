"""Checkpoints: round trip, tied weights, safe loading, atomic replacement, clear errors."""

import json

import pytest
import torch
from safetensors.torch import load_file

from llmkit import checkpoint as ckpt
from llmkit.model import GPT, GPTConfig
from llmkit.tokenizers import CharTokenizer
from llmkit.train import TrainConfig, Trainer

TEXT = "to be or not to be, that is the question\n" * 20


def tiny_model(seed=0) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=20, context_length=8, n_layer=1, n_head=2, d_model=16))


def test_round_trip_keeps_weights_config_and_tied_head(tmp_path):
    model = tiny_model()
    tokenizer = CharTokenizer.train(TEXT)
    ckpt.save_checkpoint(tmp_path / "c", model, tokenizer=tokenizer, train_config={"lr": 0.01})

    loaded = ckpt.load_checkpoint(tmp_path / "c")
    assert loaded.config == model.config
    assert loaded.train_config == {"lr": 0.01} and loaded.state is None
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.model.state_dict().items()):
        assert torch.equal(a, b), name
    # Still one matrix: a change to the embedding is a change to the head.
    assert loaded.model.lm_head.weight is loaded.model.token_embedding.weight
    idx = torch.tensor([[1, 2, 3, 4]])
    model.eval()
    torch.testing.assert_close(loaded.model(idx)[0], model(idx)[0], rtol=0, atol=0)
    assert loaded.tokenizer.encode("to be") == tokenizer.encode("to be")

    stored = load_file(str(tmp_path / "c" / ckpt.MODEL_FILE))   # the tied matrix is stored once
    assert len(stored) == len(dict(model.named_parameters())) + len(list(model.buffers()))


def test_training_state_is_plain_data_that_weights_only_loading_accepts(tmp_path):
    ids = torch.tensor(CharTokenizer.train(TEXT).encode(TEXT))
    config = TrainConfig(max_steps=3, batch_size=2, eval_interval=0, progress=False, device="cpu",
                         out_dir=str(tmp_path / "run"))
    Trainer(tiny_model(), ids[:600], ids[600:], config).fit()
    state = torch.load(tmp_path / "run" / ckpt.STATE_FILE, weights_only=True)
    assert state["step"] == 3 and len(state["history"]) == 3
    assert isinstance(state["rng"]["batches"], torch.Tensor) and state["optimizer"]["state"]
    saved = json.loads((tmp_path / "run" / ckpt.CONFIG_FILE).read_text())
    assert saved["train"]["max_steps"] == 3 and saved["model"]["d_model"] == 16


def test_a_crash_while_saving_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "c"
    ckpt.save_checkpoint(path, tiny_model(seed=1), state={"step": 1})

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        ckpt.save_checkpoint(path, tiny_model(seed=2), state={"step": 2})
    monkeypatch.undo()

    loaded = ckpt.load_checkpoint(path)
    assert loaded.state == {"step": 1}
    assert torch.equal(loaded.model.token_embedding.weight, tiny_model(seed=1).token_embedding.weight)

    ckpt.save_checkpoint(path, tiny_model(seed=2), state={"step": 2})   # clears the leftovers
    assert ckpt.load_checkpoint(path).state == {"step": 2}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]


def test_a_crash_between_the_renames_finds_the_previous_folder(tmp_path):
    path = tmp_path / "c"
    ckpt.save_checkpoint(path, tiny_model(seed=1), state={"step": 1})
    path.rename(tmp_path / ".c.previous")   # what the swap leaves if it stops halfway
    with pytest.warns(UserWarning, match="previous checkpoint"):
        assert ckpt.load_checkpoint(path).state == {"step": 1}


def test_missing_checkpoint_names_the_path_and_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint folder at .*train one first"):
        ckpt.load_checkpoint(tmp_path / "nowhere")
    ckpt.save_checkpoint(tmp_path / "c", tiny_model())
    (tmp_path / "c" / ckpt.MODEL_FILE).unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors is missing"):
        ckpt.load_checkpoint(tmp_path / "c")


@pytest.mark.parametrize("name", [ckpt.MODEL_FILE, ckpt.CONFIG_FILE, ckpt.STATE_FILE])
def test_a_truncated_file_is_reported_by_name(tmp_path, name):
    ckpt.save_checkpoint(tmp_path / "c", tiny_model(), state={"step": 1, "x": torch.ones(100)})
    file = tmp_path / "c" / name
    file.write_bytes(file.read_bytes()[: file.stat().st_size // 2])
    with pytest.raises(ValueError, match=f"{name} is damaged"):
        ckpt.load_checkpoint(tmp_path / "c")


def test_state_with_code_in_it_is_refused(tmp_path):
    ckpt.save_checkpoint(tmp_path / "c", tiny_model())
    torch.save({"step": 1, "thing": TrainConfig()}, tmp_path / "c" / ckpt.STATE_FILE)
    with pytest.raises(ValueError, match="state.pt is damaged"):
        ckpt.load_checkpoint(tmp_path / "c")


def test_resuming_into_a_model_of_another_shape_is_refused(tmp_path):
    ckpt.save_checkpoint(tmp_path / "c", tiny_model(), state={"step": 1})
    other = GPT(GPTConfig(vocab_size=20, context_length=8, n_layer=2, n_head=2, d_model=16))
    with pytest.raises(ValueError, match="build the model with the checkpoint's config"):
        ckpt.load_training_state(tmp_path / "c", other)
