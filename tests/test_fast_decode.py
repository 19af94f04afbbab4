"""The fast decoder (static cache, compiled step) against generate's readable eager loop:
the same tokens, greedy and sampled, padded batches and past the context window."""

import pytest
import torch

from llmkit.fast_decode import CompiledDecoder
from llmkit.generate import generate, left_pad
from llmkit.model import GPT, GPTConfig

CONFIG = dict(vocab_size=50, context_length=16, n_layer=2, n_head=2, d_model=32)
VARIANTS = {"gpt2": {}, "llama": dict(position="rope", norm="rmsnorm", mlp="swiglu", n_kv_head=1),
            "manual": dict(attention="manual"), "sinusoidal": dict(position="sinusoidal")}


def tiny_model(sharpen=25.0, **overrides) -> GPT:
    torch.manual_seed(0)
    model = GPT(GPTConfig(**{**CONFIG, **overrides}))
    with torch.no_grad():  # larger than GPT-2's init, so argmax has no near-ties
        model.token_embedding.weight.mul_(sharpen)
    return model.eval()


def padded_prompts():
    generator = torch.Generator().manual_seed(1)
    prompts = [torch.randint(0, 50, (n,), generator=generator).tolist() for n in (3, 7, 12)]
    return left_pad(prompts)


def assert_same_as_eager(decoder, model):
    idx, n_pad = padded_prompts()
    for past_context in ("slide", "halve"):   # 12 + 30 tokens outgrow the 16-token window
        options = dict(temperature=0, n_pad=n_pad, past_context=past_context)
        expected = generate(model, idx, 30, **options)
        assert torch.equal(decoder.generate(idx, 30, **options), expected)
    sampled = dict(temperature=1.0, top_k=10, n_pad=n_pad)
    one = decoder.generate(idx, 20, generator=torch.Generator().manual_seed(3), **sampled)
    two = generate(model, idx, 20, generator=torch.Generator().manual_seed(3), **sampled)
    assert torch.equal(one, two)


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_static_step_run_eagerly_gives_generates_tokens(variant):
    model = tiny_model(**VARIANTS[variant])
    assert_same_as_eager(CompiledDecoder(model, batch_size=3, compile=False), model)


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["gpt2", "llama"])
def test_the_compiled_step_gives_generates_tokens(variant):
    model = tiny_model(**VARIANTS[variant])
    decoder = CompiledDecoder(model, batch_size=3)
    assert_same_as_eager(decoder, model)
    assert decoder.compile_seconds is not None and decoder.compile_seconds > 0
    # Trained further, the model's new weights are what the compiled step reads.
    with torch.no_grad():
        model.lm_head.weight.mul_(-1)
    idx, n_pad = padded_prompts()
    assert torch.equal(decoder.generate(idx, 5, temperature=0, n_pad=n_pad),
                       generate(model, idx, 5, temperature=0, n_pad=n_pad))


def test_bad_arguments_say_what_to_do():
    model = tiny_model()
    decoder = CompiledDecoder(model, batch_size=2, compile=False)
    with pytest.raises(ValueError, match="batch_size=3"):
        decoder.generate(torch.zeros(3, 4, dtype=torch.long), 2)
    with pytest.raises(ValueError, match="use_kv_cache=False"):
        decoder.generate(torch.zeros(2, 4, dtype=torch.long), 2, use_kv_cache=False)
    with pytest.raises(ValueError, match="batch_size"):
        CompiledDecoder(model, batch_size=0)
