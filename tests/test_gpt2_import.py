"""GPT-2 import: our GPT on Hugging Face's weights gives Hugging Face's logits.

The reference is transformers' own GPT2LMHeadModel, built at random from a small GPT2Config
(no download), in eval mode and float32.
"""

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from llmkit.model import GPT
from llmkit.model.gpt2 import (from_hf_folder, from_hf_model, from_hf_state_dict, gpt2_config,
                               pretrained_gpt2)


def tiny_hf_gpt2(tie=True, seed=0) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=300, n_positions=64, n_embd=64, n_layer=2, n_head=4,
                        tie_word_embeddings=tie, bos_token_id=0, eos_token_id=0)
    model = GPT2LMHeadModel(config).eval()
    with torch.no_grad():  # HF starts biases at 0 and norms at 1: perturb them so they count
        for name, p in model.named_parameters():
            if name.endswith("bias") or ".ln_" in name:
                p.add_(0.1 * torch.randn_like(p))
    return model


def ids(batch=2, length=40):
    return torch.randint(0, 300, (batch, length), generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("tie", [True, False])
def test_imported_model_gives_hugging_face_logits(tie):
    hf = tiny_hf_gpt2(tie)
    ours = from_hf_model(hf)
    assert isinstance(ours, GPT) and not ours.training
    assert ours.config.tie_weights == tie and ours.config.context_length == 64
    x = ids()
    with torch.no_grad():
        torch.testing.assert_close(ours(x)[0], hf(x).logits)
        # The loss too: HF shifts labels internally, ours takes shifted targets.
        torch.testing.assert_close(ours(x[:, :-1], x[:, 1:])[1], hf(x, labels=x).loss)


def test_import_through_a_folder_written_by_save_pretrained(tmp_path):
    hf = tiny_hf_gpt2()
    hf.save_pretrained(tmp_path)
    ours = from_hf_folder(tmp_path)
    x = ids()
    with torch.no_grad():
        torch.testing.assert_close(ours(x)[0], hf(x).logits)


def test_import_from_a_bare_state_dict_without_the_transformer_prefix():
    hf = tiny_hf_gpt2()
    bare = {k.removeprefix("transformer."): v for k, v in hf.state_dict().items()}
    ours = from_hf_state_dict(bare, hf.config.to_dict())
    x = ids(1, 64)   # the full context
    with torch.no_grad():
        torch.testing.assert_close(ours(x)[0], hf(x).logits)


def test_mismatches_and_missing_files_raise_clear_errors(tmp_path):
    hf = tiny_hf_gpt2()
    wrong = gpt2_config(hf.config)
    wrong.n_layer = 3
    with pytest.raises(ValueError, match=r"missing \['blocks\.2"):
        from_hf_state_dict(hf.state_dict(), wrong)
    with pytest.raises(ValueError, match="activation_function"):
        gpt2_config({**hf.config.to_dict(), "activation_function": "relu"})
    with pytest.raises(FileNotFoundError, match="config.json"):
        from_hf_folder(tmp_path)
    (tmp_path / "config.json").write_text(hf.config.to_json_string())
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        from_hf_folder(tmp_path)


def test_pretrained_gpt2_never_downloads_unless_asked(tmp_path):
    with pytest.raises(FileNotFoundError, match="download=True"):
        pretrained_gpt2("gpt2", cache_dir=tmp_path)   # an empty cache, and download is off
    with pytest.raises(ValueError, match="gpt2-medium"):
        pretrained_gpt2("gpt3")
