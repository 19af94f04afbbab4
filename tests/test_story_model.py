"""The story model's recipe (llmkit.story_model): data, shapes, folders, and load_or_train.

Each test compares with an independent computation (slicing the encoded text by hand,
PyTorch's own forward pass on the saved weights), never the module with itself.
"""

import torch

from llmkit import story_model
from llmkit.data import SEPARATOR, tinytales_text
from llmkit.model import GPTConfig


def test_story_text_is_the_seeded_tinytales_corpus():
    text = story_model.story_text(12)
    assert text == tinytales_text(12, seed=0)
    assert text.count(SEPARATOR) == 12


def test_story_data_encodes_characters_and_splits_90_10_by_position():
    text = story_model.story_text(30)
    tokenizer, train_ids, val_ids = story_model.story_data(text)
    vocab = sorted(set(text))
    assert tokenizer.vocab_size == len(vocab)
    assert tokenizer.decode(train_ids.tolist()) + tokenizer.decode(val_ids.tolist()) == text
    assert len(val_ids) == round(0.1 * len(text))      # the last 10% of the characters
    assert tokenizer.decode(val_ids.tolist()) == text[len(text) - len(val_ids):]


def test_recipe_shapes_and_overrides():
    config = story_model.story_config(40, n_layer=2)
    assert (config.vocab_size, config.context_length, config.n_layer, config.n_head,
            config.d_model) == (40, 128, 2, 4, 128)
    train = story_model.story_train_config(1000, batch_size=8)
    assert (train.max_steps, train.batch_size, train.warmup_steps) == (1000, 8, 100)
    assert story_model.story_train_config(50).warmup_steps == 5   # a tenth of a short run


def test_quick_mode_keeps_its_own_checkpoint_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("LLMKIT_RUNS", str(tmp_path))
    monkeypatch.setenv("LLMKIT_QUICK", "1")
    assert story_model.story_checkpoint_dir() == tmp_path / "story_model-quick"
    monkeypatch.setenv("LLMKIT_QUICK", "0")
    assert story_model.story_checkpoint_dir("other") == tmp_path / "other"


def test_load_or_train_trains_saves_then_loads_the_same_weights(monkeypatch, tmp_path):
    monkeypatch.setenv("LLMKIT_QUICK", "1")
    monkeypatch.setattr(story_model, "QUICK_STORIES", 30)
    tiny = lambda vocab, **changes: GPTConfig(vocab_size=vocab, context_length=16, n_layer=1,
                                              n_head=2, d_model=16)
    monkeypatch.setattr(story_model, "story_config", tiny)   # a tiny model keeps the test fast
    folder = tmp_path / "story"
    trained = story_model.load_or_train("cpu", steps=2, checkpoint_dir=folder)
    assert "trained just now for 2 steps" in trained.source
    assert (folder / "model.safetensors").exists()

    loaded = story_model.load_or_train("cpu", checkpoint_dir=folder)
    assert "loaded from" in loaded.source and "2 steps" in loaded.source
    assert loaded.tokenizer.encode("Once") == trained.tokenizer.encode("Once")
    torch.testing.assert_close(loaded.val_ids, trained.val_ids)
    idx = loaded.val_ids[:16].unsqueeze(0)
    for name, tensor in trained.model.state_dict().items():
        torch.testing.assert_close(loaded.model.state_dict()[name], tensor)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(idx)[0], trained.model(idx)[0])
