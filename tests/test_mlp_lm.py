"""llmkit.mlp_lm against independent computations: PyTorch's own ops (F.linear, F.gelu,
F.softmax, F.cross_entropy, F.layer_norm, nn.RMSNorm), autograd for the hand-written
backward pass, brute-force loops for the context windows, and the model's forward pass
written out with plain tensor indexing."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from llmkit import mlp_lm


@pytest.fixture
def generator():
    return torch.Generator().manual_seed(0)


def test_linear_matches_f_linear(generator):
    x = torch.randn(2, 5, 3, generator=generator)
    weight, bias = torch.randn(4, 3, generator=generator), torch.randn(4, generator=generator)
    torch.testing.assert_close(mlp_lm.linear(x, weight, bias), F.linear(x, weight, bias))
    torch.testing.assert_close(mlp_lm.linear(x, weight), F.linear(x, weight))
    with pytest.raises(ValueError, match="last size"):
        mlp_lm.linear(x, torch.randn(4, 5))


def test_gelu_matches_torchs_tanh_approximation():
    x = torch.linspace(-8, 8, 401, dtype=torch.float64)
    torch.testing.assert_close(mlp_lm.gelu_tanh(x), F.gelu(x, approximate="tanh"))


def test_softmax_matches_torch_and_survives_huge_logits(generator):
    logits = torch.randn(3, 4, 7, generator=generator)
    for dim in (-1, 0, 1):
        torch.testing.assert_close(mlp_lm.softmax(logits, dim=dim), F.softmax(logits, dim=dim))
    huge = torch.tensor([[1000.0, 999.0, -1000.0], [5e4, 5e4, 5e4]])
    probs = mlp_lm.softmax(huge)
    assert torch.isfinite(probs).all()
    torch.testing.assert_close(probs, F.softmax(huge, dim=-1))


def test_cross_entropy_matches_torch_including_very_unlikely_targets(generator):
    logits = torch.randn(16, 9, generator=generator)
    targets = torch.randint(0, 9, (16,), generator=generator)
    torch.testing.assert_close(mlp_lm.cross_entropy(logits, targets),
                               F.cross_entropy(logits, targets))
    # The target's probability underflows to 0 in float32; the loss must stay finite.
    extreme = torch.tensor([[500.0, -500.0, 0.0]])
    loss = mlp_lm.cross_entropy(extreme, torch.tensor([1]))
    assert math.isfinite(loss.item())
    torch.testing.assert_close(loss, F.cross_entropy(extreme, torch.tensor([1])))
    with pytest.raises(ValueError, match="flatten"):
        mlp_lm.cross_entropy(torch.randn(2, 3, 4), torch.zeros(2, 3, dtype=torch.long))


def test_layer_norm_matches_f_layer_norm(generator):
    x = torch.randn(3, 5, 8, generator=generator) * 4 + 2
    weight, bias = torch.randn(8, generator=generator), torch.randn(8, generator=generator)
    for eps in (1e-5, 1e-2):
        torch.testing.assert_close(mlp_lm.layer_norm(x, weight, bias, eps),
                                   F.layer_norm(x, (8,), weight, bias, eps))
    torch.testing.assert_close(mlp_lm.layer_norm(x), F.layer_norm(x, (8,)))


def test_rms_norm_matches_torchs_rmsnorm(generator):
    x = torch.randn(4, 6, generator=generator) * 3
    norm = nn.RMSNorm(6, eps=1e-5)
    with torch.no_grad():
        norm.weight.copy_(torch.randn(6, generator=generator))
    torch.testing.assert_close(mlp_lm.rms_norm(x, norm.weight, 1e-5), norm(x))
    torch.testing.assert_close(mlp_lm.rms_norm(x), nn.RMSNorm(6, eps=1e-5)(x))


def test_linear_backward_matches_autograd(generator):
    x = torch.randn(5, 3, dtype=torch.float64, generator=generator, requires_grad=True)
    weight = torch.randn(4, 3, dtype=torch.float64, generator=generator, requires_grad=True)
    bias = torch.randn(4, dtype=torch.float64, generator=generator, requires_grad=True)
    dout = torch.randn(5, 4, dtype=torch.float64, generator=generator)
    F.linear(x, weight, bias).backward(dout)
    dx, dweight, dbias = mlp_lm.linear_backward(x.detach(), weight.detach(), dout)
    torch.testing.assert_close(dx, x.grad)
    torch.testing.assert_close(dweight, weight.grad)
    torch.testing.assert_close(dbias, bias.grad)
    with pytest.raises(ValueError, match="dout"):
        mlp_lm.linear_backward(x.detach(), weight.detach(), dout[:, :2])


def test_context_windows_match_a_loop():
    ids = torch.tensor([5, 1, 4, 1, 5, 9, 2, 6])
    for block_size in (1, 3, 7):
        x, y = mlp_lm.context_windows(ids, block_size)
        expected_x = [ids[i:i + block_size].tolist() for i in range(len(ids) - block_size)]
        assert x.tolist() == expected_x
        assert y.tolist() == ids[block_size:].tolist()
        assert x.dtype == y.dtype == torch.long
    source = torch.tensor([0, 1, 2, 3])
    x, _ = mlp_lm.context_windows(source, 2)
    x[0, 0] = 99
    assert source[0] == 0  # the windows are a copy, not a view into the ids
    with pytest.raises(ValueError, match="block_size"):
        mlp_lm.context_windows(ids, 8)
    with pytest.raises(ValueError, match="positive"):
        mlp_lm.context_windows(ids, 0)


def test_model_forward_matches_the_formula_written_out(generator):
    torch.manual_seed(0)
    model = mlp_lm.MLPLanguageModel(vocab_size=11, block_size=4, d_embed=3, d_hidden=7)
    assert set(model.state_dict()) == {"embed.weight", "hidden.weight", "hidden.bias",
                                       "out.weight", "out.bias"}
    idx = torch.randint(0, 11, (6, 4), generator=generator)
    state = model.state_dict()
    concatenated = torch.cat([state["embed.weight"][idx[:, t]] for t in range(4)], dim=1)
    hidden = torch.tanh(concatenated @ state["hidden.weight"].T + state["hidden.bias"])
    expected = hidden @ state["out.weight"].T + state["out.bias"]
    torch.testing.assert_close(model(idx), expected)
    with pytest.raises(ValueError, match="batch, 4"):
        model(idx[:, :3])


def test_deep_residual_layers_with_zero_weights_are_the_identity(generator):
    layer = mlp_lm.HiddenLayer(5, "tanh", residual=True, norm="layernorm")
    nn.init.zeros_(layer.linear.weight)
    nn.init.zeros_(layer.linear.bias)
    h = torch.randn(3, 5, generator=generator)
    torch.testing.assert_close(layer(h), h)  # h + tanh(0) = h
    plain = mlp_lm.HiddenLayer(5, "gelu", residual=False, norm="rmsnorm")
    expected = F.gelu(F.linear(nn.RMSNorm(5, eps=1e-5)(h), plain.linear.weight,
                               plain.linear.bias), approximate="tanh")
    torch.testing.assert_close(plain(h), expected)
    deep = mlp_lm.MLPLanguageModel(11, 4, n_layers=3, residual=True, norm="layernorm")
    assert len(deep.deeper) == 2 and isinstance(deep.final_norm, nn.LayerNorm)
    assert deep(torch.zeros(2, 4, dtype=torch.long)).shape == (2, 11)
    with pytest.raises(ValueError, match="norm"):
        mlp_lm.HiddenLayer(5, norm="batchnorm")
    with pytest.raises(ValueError, match="activation"):
        mlp_lm.MLPLanguageModel(11, 4, activation="swish")


def test_fit_lowers_the_loss_and_evaluate_is_the_mean_cross_entropy():
    ids = torch.tensor([0, 1, 2, 3, 4] * 60)  # fully predictable from one id of context
    x, y = mlp_lm.context_windows(ids, 2)
    torch.manual_seed(0)
    model = mlp_lm.MLPLanguageModel(5, 2, d_embed=4, d_hidden=16)
    before = F.cross_entropy(model(x), y).item()
    torch.testing.assert_close(mlp_lm.evaluate(model, x, y, batch_size=7), before,
                               rtol=1e-5, atol=1e-6)
    history = mlp_lm.fit(model, (x, y), (x, y), steps=40, batch_size=32, lr=2e-2,
                         eval_every=15)
    assert len(history["loss"]) == len(history["grad_norm"]) == 40
    assert history["eval_step"] == [0, 15, 30, 39]
    assert history["val_loss"][-1] < 0.2 * before


def test_sample_follows_a_certain_model_and_repeats_with_a_seed():
    torch.manual_seed(0)
    model = mlp_lm.MLPLanguageModel(6, 3, d_embed=2, d_hidden=4)
    with torch.no_grad():
        model.out.weight.zero_()
        model.out.bias.copy_(torch.tensor([0.0, 0.0, 0.0, 50.0, 0.0, 0.0]))
    assert mlp_lm.sample(model, [1, 2, 0, 5], 5) == [3] * 5
    torch.manual_seed(1)
    random_model = mlp_lm.MLPLanguageModel(6, 3)
    first = mlp_lm.sample(random_model, [1, 2, 0], 20, torch.Generator().manual_seed(3))
    again = mlp_lm.sample(random_model, [1, 2, 0], 20, torch.Generator().manual_seed(3))
    assert first == again and all(0 <= i < 6 for i in first)
    with pytest.raises(ValueError, match="block_size"):
        mlp_lm.sample(model, [1], 5)
