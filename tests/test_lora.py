"""LoRA against Hugging Face's peft on the same weights, and its files.

peft wraps the same modules of an identical copy of the model; our A and B matrices are
copied into its lora_A / lora_B, and the logits must agree before and after both merge.
"""

import copy

import pytest
import torch
from peft import LoraConfig, inject_adapter_in_model
from peft.tuners.lora import LoraLayer

from llmkit.checkpoint import load_checkpoint, save_checkpoint
from llmkit.lora import ADAPTER_FILE, LoRAConfig, LoRALinear, LoRAModel
from llmkit.model import GPT, GPTConfig

TARGETS = ("attn.qkv", "attn.proj", "mlp.fc", "mlp.proj")


def tiny_gpt(seed: int = 0, **changes) -> GPT:
    torch.manual_seed(seed)
    settings = dict(vocab_size=40, context_length=16, n_layer=2, n_head=2, d_model=32)
    settings.update(changes)
    return GPT(GPTConfig(**settings)).eval()


def randomise_adapters(model: LoRAModel, seed: int = 1) -> None:
    """B starts at zero (no change at all); give it values so the comparison means something."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in model.lora_layers().values():
            layer.lora_B.copy_(torch.randn(layer.lora_B.shape, generator=generator) * 0.1)


def peft_copy(base: GPT, ours: LoRAModel, targets, rank, alpha):
    reference = inject_adapter_in_model(
        LoraConfig(r=rank, lora_alpha=alpha, target_modules=list(targets), lora_dropout=0.0),
        copy.deepcopy(base))
    with torch.no_grad():
        for name, layer in ours.lora_layers().items():
            theirs = reference.get_submodule(name)
            theirs.lora_A["default"].weight.copy_(layer.lora_A)
            theirs.lora_B["default"].weight.copy_(layer.lora_B)
    return reference


@pytest.mark.parametrize("bias, targets, rank, alpha", [
    (True, TARGETS, 4, 8.0),
    (False, ("attn.qkv", "mlp.proj"), 2, 5.0),   # base layers without bias, two targets
])
def test_forward_and_merge_match_peft(bias, targets, rank, alpha):
    base = tiny_gpt(bias=bias)
    pristine = copy.deepcopy(base)
    ours = LoRAModel(base, LoRAConfig(rank=rank, alpha=alpha, targets=targets))
    randomise_adapters(ours)
    reference = peft_copy(pristine, ours, targets, rank, alpha)
    assert sorted(n for n, m in reference.named_modules() if isinstance(m, LoraLayer)) == \
        sorted(ours.lora_layers())
    idx = torch.randint(0, 40, (3, 16), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        unmerged = ours(idx)[0]
        torch.testing.assert_close(unmerged, reference(idx)[0])
        assert (unmerged - pristine(idx)[0]).abs().max() > 1e-3   # the adapters do something
        ours.merge()
        for module in reference.modules():
            if isinstance(module, LoraLayer):
                module.merge()
        merged = ours(idx)[0]
        torch.testing.assert_close(merged, reference(idx)[0])
        torch.testing.assert_close(merged, unmerged)
        ours.unmerge()
        torch.testing.assert_close(ours(idx)[0], unmerged)
        for name, layer in ours.lora_layers().items():
            torch.testing.assert_close(layer.base.weight, pristine.get_submodule(name).weight)


def test_trainable_parameters_are_the_adapters_only():
    model = LoRAModel(tiny_gpt(), LoRAConfig(rank=3, targets=("attn.qkv", "mlp.fc")))
    d, n_layer = 32, 2
    # qkv: d -> 3d, fc: d -> 4d; each adds rank * (in + out).
    assert model.num_trainable() == n_layer * 3 * ((d + 3 * d) + (d + 4 * d))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert all(n.endswith(("lora_A", "lora_B")) for n in trainable) and len(trainable) == 8
    idx = torch.randint(0, 40, (2, 8))
    model(idx, idx)[1].backward()
    assert all((p.grad is not None) == p.requires_grad for p in model.parameters())


def test_bad_lora_settings_say_what_to_do():
    with pytest.raises(ValueError, match="rank must be a positive int.*got 0"):
        LoRAConfig(rank=0)
    with pytest.raises(ValueError, match="rank must be a positive int.*got -2"):
        LoRAConfig(rank=-2)
    with pytest.raises(ValueError, match=r"blocks.0.attn.qkv: LoRA rank must be between 1 and "
                                         r"min\(in, out\) = 32 for a 32 -> 96 layer, got 33"):
        LoRAModel(tiny_gpt(), LoRAConfig(rank=33, targets=("attn.qkv",)))
    with pytest.raises(ValueError, match=r"targets \['attn.q_proj'\] match no linear layer.*"
                                         r"\['attn.proj', 'attn.qkv', 'lm_head', 'mlp.fc', 'mlp.proj'\]"):
        LoRAModel(tiny_gpt(), LoRAConfig(targets=("attn.qkv", "attn.q_proj")))
    with pytest.raises(ValueError, match="shares its matrix with the token embedding"):
        LoRAModel(tiny_gpt(), LoRAConfig(targets=("lm_head",)))
    with pytest.raises(ValueError, match="alpha must be a positive number"):
        LoRAConfig(alpha=0)
    with pytest.raises(ValueError, match="dropout must be in"):
        LoRAConfig(dropout=1.0)
    with pytest.raises(ValueError, match="trainable_token_ids \\[40\\] are not ids"):
        LoRAModel(tiny_gpt(), LoRAConfig(trainable_token_ids=(40,)))
    untied = LoRAModel(tiny_gpt(tie_weights=False), LoRAConfig(rank=2, targets=("lm_head",)))
    assert list(untied.lora_layers()) == ["lm_head"]
    with pytest.raises(ValueError, match="wraps an nn.Linear"):
        LoRALinear(torch.nn.Embedding(3, 4), 1, 1.0)


def test_adapters_saved_alone_and_loaded_onto_the_base(tmp_path):
    base = tiny_gpt(d_model=64, n_layer=3)
    save_checkpoint(tmp_path / "base", base)
    model = LoRAModel(copy.deepcopy(base), LoRAConfig(rank=2, alpha=4, targets=("attn.qkv",)))
    randomise_adapters(model)
    idx = torch.randint(0, 40, (2, 12))
    expected = model(idx)[0]
    folder = model.save_adapters(tmp_path / "adapters")
    adapter_bytes = (folder / ADAPTER_FILE).stat().st_size
    base_bytes = (tmp_path / "base" / "model.safetensors").stat().st_size
    assert adapter_bytes < base_bytes / 10
    loaded = LoRAModel.load_adapters(folder, load_checkpoint(tmp_path / "base").model)
    torch.testing.assert_close(loaded(idx)[0], expected, rtol=0, atol=0)

    other = tiny_gpt(d_model=32, n_layer=3)
    with pytest.raises(ValueError, match=r"another shape \(d_model: adapters 64, model 32\)"):
        LoRAModel.load_adapters(folder, other)
    with pytest.raises(FileNotFoundError, match="adapter.safetensors is missing; save adapters with"):
        LoRAModel.load_adapters(tmp_path / "base", base)
    model.merge()
    with pytest.raises(ValueError, match="call unmerge"):
        model.save_adapters(tmp_path / "again")


def test_merged_export_loads_as_a_plain_gpt(tmp_path):
    model = LoRAModel(tiny_gpt(), LoRAConfig(rank=4, targets=TARGETS))
    randomise_adapters(model)
    idx = torch.randint(0, 40, (2, 16))
    expected = model(idx)[0]
    merged = model.merged_gpt()
    assert type(merged) is GPT and not any(isinstance(m, LoRALinear) for m in merged.modules())
    assert not model.merged     # the LoRA model itself is unchanged
    save_checkpoint(tmp_path / "merged", merged)
    loaded = load_checkpoint(tmp_path / "merged").model
    assert type(loaded) is GPT
    torch.testing.assert_close(loaded(idx)[0], expected)


def test_lora_model_checkpoint_round_trip(tmp_path):
    model = LoRAModel(tiny_gpt(), LoRAConfig(rank=2, targets=("attn.qkv", "mlp.fc"),
                                             trainable_token_ids=(38, 39)))
    randomise_adapters(model)
    with torch.no_grad():
        model.gpt.token_embedding.rows.add_(1.0)
    idx = torch.randint(0, 40, (2, 16))
    save_checkpoint(tmp_path / "lora", model)
    loaded = load_checkpoint(tmp_path / "lora").model
    assert type(loaded) is LoRAModel and loaded.lora == model.lora
    torch.testing.assert_close(loaded(idx)[0], model(idx)[0], rtol=0, atol=0)
    model.merge()
    with pytest.raises(ValueError, match="unmerge"):
        save_checkpoint(tmp_path / "lora", model)
    assert type(load_checkpoint(tmp_path / "lora").model) is LoRAModel   # the saved one is kept


def test_trainable_token_rows_learn_and_merge():
    base = tiny_gpt()
    frozen_before = base.token_embedding.weight.detach().clone()
    model = LoRAModel(base, LoRAConfig(rank=2, targets=("attn.qkv",), trainable_token_ids=(37, 39)))
    idx = torch.tensor([[1, 37, 5, 39, 2]])
    model(idx, idx)[1].backward()
    rows = model.gpt.token_embedding.rows
    assert rows.grad is not None and rows.grad.abs().sum() > 0
    with torch.no_grad():
        rows.add_(torch.ones_like(rows))
    weight = model.gpt.token_embedding.weight
    changed = (weight != frozen_before).any(dim=1).nonzero().flatten().tolist()
    assert changed == [37, 39]
    merged = model.merged_gpt()
    assert merged.lm_head.weight is merged.token_embedding.weight      # still tied
    torch.testing.assert_close(merged.token_embedding.weight, weight)
    torch.testing.assert_close(merged(idx)[0], model(idx)[0])


def test_lora_training_resumes_exactly(tmp_path):
    from llmkit.train import TrainConfig, Trainer

    data = torch.randint(0, 40, (2000,), generator=torch.Generator().manual_seed(3))

    class StopAt:
        def __init__(self, step):
            self.step = step

        def on_step(self, trainer, record):
            trainer.should_stop = trainer.step >= self.step

    def trainer(out, callbacks=()):
        model = LoRAModel(tiny_gpt(), LoRAConfig(rank=2, dropout=0.1, targets=("attn.qkv", "mlp.fc")))
        config = TrainConfig(max_steps=6, batch_size=4, lr=1e-2, warmup_steps=2,
                             eval_interval=0, eval_iters=1, progress=False, out_dir=str(out))
        return Trainer(model, data[:1500], data[1500:], config, callbacks=callbacks)

    straight = trainer(tmp_path / "straight")
    straight.fit()
    first = trainer(tmp_path / "cut", callbacks=[StopAt(3)])   # stopped, saved at step 3
    first.fit()
    assert first.step == 3
    resumed = trainer(tmp_path / "cut").resume(tmp_path / "cut")
    resumed.fit()
    assert resumed.step == 6
    for (name, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
    assert any(not torch.equal(a, b) for a, b in zip(   # and training did change the adapters
        straight.model.state_dict().values(), trainer(tmp_path / "x").model.state_dict().values()))
