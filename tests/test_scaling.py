"""Power-law fits and training memory (llmkit.scaling) against independent computations.

The fits are checked on exact power laws (numpy.polyfit on log-log axes recovers them
without llmkit) and against a brute-force least-squares search; the memory formula against
the byte sizes of the tensors themselves: parameters, AdamW's state after a real step, and
every tensor autograd saves, counted by a saved-tensors hook written here.
"""

import numpy as np
import pytest
import torch

from llmkit.model import GPT, GPTConfig
from llmkit.scaling import PowerLaw, fit_power_law, saved_activation_bytes, training_memory

SIZES = np.array([3e3, 8e3, 2e4, 6e4, 1.5e5, 4e5])


def test_fit_without_offset_is_numpys_line_on_log_log_axes():
    rng = np.random.default_rng(0)
    loss = 30 * SIZES ** -0.2 * np.exp(rng.normal(0, 0.01, len(SIZES)))
    slope, intercept = np.polyfit(np.log(SIZES), np.log(loss), 1)
    law = fit_power_law(SIZES, loss, offset=False)
    assert law.offset == 0
    assert law.exponent == pytest.approx(-slope, rel=1e-9)
    assert law.scale == pytest.approx(np.exp(intercept), rel=1e-9)


def test_fit_with_offset_recovers_an_exact_law_and_predicts_beyond_it():
    loss = 1.3 + 40 * SIZES ** -0.35
    law = fit_power_law(SIZES, loss)
    assert law.offset == pytest.approx(1.3, abs=2e-3)
    assert law.exponent == pytest.approx(0.35, rel=0.01)
    assert law.scale == pytest.approx(40, rel=0.05)
    assert law.predict(2e6) == pytest.approx(1.3 + 40 * 2e6 ** -0.35, rel=1e-3)


def test_fit_with_offset_is_as_good_as_a_brute_force_search():
    rng = np.random.default_rng(1)
    loss = 1.8 + 12 * SIZES ** -0.3 * np.exp(rng.normal(0, 0.02, len(SIZES)))
    law = fit_power_law(SIZES, loss)

    def error(offset, exponent):   # the best scale for this pair, in closed form on log axes
        basis = SIZES ** -exponent
        if offset >= loss.min():
            return np.inf
        log_scale = np.mean(np.log(loss - offset) - np.log(basis))
        return np.sum((np.log(offset + np.exp(log_scale) * basis) - np.log(loss)) ** 2)

    brute = min(error(o, e) for o in np.linspace(0, loss.min(), 200, endpoint=False)
                for e in np.linspace(0.05, 1.0, 120))
    mine = np.sum((np.log(law.predict(SIZES)) - np.log(loss)) ** 2)
    assert mine <= brute * 1.01 + 1e-12
    assert 1.0 < law.offset < loss.min()


def test_an_offset_matters_a_straight_line_predicts_too_low():
    loss = 2.0 + 5 * SIZES ** -0.4
    straight = fit_power_law(SIZES, loss, offset=False)
    assert straight.predict(1e8) < 2.0 < fit_power_law(SIZES, loss).predict(1e8)


@pytest.mark.parametrize("x, loss, expected", [
    ([1, 2], [3, 2], "at least 3 points"),
    ([1, 2, 3], [3, 2], "same length"),
    ([1, -2, 3], [3, 2, 1], "positive"),
    ([1, 2, 3], [3, float("nan"), 1], "finite"),
    ([5, 5, 5], [3, 2, 1], "two different"),
])
def test_bad_points_are_refused_with_what_to_do(x, loss, expected):
    with pytest.raises(ValueError, match=expected):
        fit_power_law(x, loss)


def test_power_law_predicts_arrays():
    law = PowerLaw(scale=2.0, exponent=0.5, offset=1.0)
    np.testing.assert_allclose(law.predict([1.0, 4.0, 16.0]), [3.0, 2.0, 1.5])


def tiny(attention="manual", **changes):
    settings = dict(vocab_size=37, context_length=24, n_layer=2, n_head=4, d_model=32,
                    attention=attention)
    return GPTConfig(**{**settings, **changes})


def test_parameter_gradient_and_adamw_bytes_are_what_the_tensors_hold():
    torch.manual_seed(0)
    model = GPT(tiny())
    memory = training_memory(model.config, batch_size=3)
    param_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    assert memory["parameters"] == param_bytes
    x = torch.randint(0, 37, (3, 24))
    _, loss = model(x, x)
    loss.backward()
    assert memory["gradients"] == sum(p.grad.numel() * p.grad.element_size()
                                      for p in model.parameters())
    optimizer = torch.optim.AdamW(model.parameters())
    optimizer.step()
    moments = [t for state in optimizer.state.values()
               for name, t in state.items() if name != "step"]
    assert memory["adamw"] == sum(t.numel() * t.element_size() for t in moments)
    assert training_memory(model.config, 3, bytes_per_value=2)["adamw"] == memory["adamw"] // 2


def hooked_saved_bytes(model, x, y):
    """Bytes autograd saves in model(x, y), written independently of llmkit: every saved
    tensor's storage once, parameters aside."""
    weights = [p.detach() for p in model.parameters()]
    kept = {}

    def pack(t):
        if not any(t.untyped_storage().data_ptr() == w.untyped_storage().data_ptr()
                   for w in weights):
            kept[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(x, y)
    return sum(kept.values())


@pytest.mark.parametrize("attention", ["manual", "sdpa"])
@pytest.mark.parametrize("shape", [dict(), dict(n_layer=3, d_model=48),
                                   dict(n_head=2, context_length=40)])
def test_activation_formula_is_within_a_few_percent_of_what_autograd_saves(attention, shape):
    torch.manual_seed(0)
    config = tiny(attention, **shape)
    model = GPT(config)
    x = torch.randint(0, 37, (4, config.context_length))
    measured = hooked_saved_bytes(model, x, x)
    assert saved_activation_bytes(model, x, x) == measured
    estimate = training_memory(config, batch_size=4)["activations"]
    assert estimate == pytest.approx(measured, rel=0.05)
    assert estimate <= measured          # the formula leaves out only small statistics


def test_written_out_attention_weights_grow_with_the_square_of_the_context():
    short, long = (training_memory(tiny(context_length=T), 4)["activations"] for T in (16, 64))
    short_sdpa, long_sdpa = (training_memory(tiny("sdpa", context_length=T), 4)["activations"]
                             for T in (16, 64))
    assert long_sdpa == 4 * short_sdpa          # linear in T without the T x T weights
    assert long > 4 * short


def test_memory_formula_refuses_what_it_does_not_describe():
    with pytest.raises(ValueError, match="GPT-2's block"):
        training_memory(tiny(mlp="swiglu"), 2)
    with pytest.raises(ValueError, match="batch_size"):
        training_memory(tiny(), 0)
