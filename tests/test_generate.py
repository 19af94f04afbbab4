"""Generation: the sampling helpers against brute-force versions, the decoding loop against a
hand-written argmax loop and against transformers' generate(), and the KV cache against
no cache."""

import math

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from llmkit.generate import (apply_repetition_penalty, apply_temperature, generate,
                             generate_batch, generate_text, generate_texts, left_pad,
                             next_token_probs, stream, top_k_filter, top_p_filter)
from llmkit.model import GPT, GPTConfig
from llmkit.model.gpt2 import from_hf_model

CONFIG = dict(vocab_size=50, context_length=16, n_layer=2, n_head=2, d_model=32)


def tiny_model(sharpen=25.0, **overrides) -> GPT:
    torch.manual_seed(0)
    model = GPT(GPTConfig(**{**CONFIG, **overrides}))
    with torch.no_grad():  # larger than GPT-2's init, so distributions are far from uniform
        model.token_embedding.weight.mul_(sharpen)
    return model.eval()


def prompt(batch=2, length=5, seed=1):
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, CONFIG["vocab_size"], (batch, length), generator=generator)


def random_logits(seed=0, batch=3, vocab=20):
    return torch.randn(batch, vocab, generator=torch.Generator().manual_seed(seed)) * 3


# --- the helpers, against brute force ----------------------------------------------------


def test_temperature_against_a_softmax_written_out():
    logits = random_logits()
    for t in (0.5, 1.0, 2.0):
        probs = apply_temperature(logits, t).softmax(-1)
        for row in range(3):
            exps = [math.exp(v / t) for v in logits[row].tolist()]
            expected = torch.tensor([e / sum(exps) for e in exps])
            torch.testing.assert_close(probs[row], expected)
    with pytest.raises(ValueError, match="greedy"):
        apply_temperature(logits, 0)


@pytest.mark.parametrize("k", [1, 3, 7, 20])
def test_top_k_against_brute_force(k):
    logits = random_logits()
    filtered = top_k_filter(logits, k)
    for row in range(3):
        values = logits[row].tolist()
        threshold = sorted(values, reverse=True)[k - 1]
        expected = [v if v >= threshold else float("-inf") for v in values]
        assert filtered[row].tolist() == expected
        assert sum(math.isfinite(v) for v in expected) == k


@pytest.mark.parametrize("p", [0.01, 0.3, 0.75, 0.95, 1.0])
def test_top_p_against_brute_force(p):
    logits = random_logits(seed=4)
    filtered = top_p_filter(logits, p)
    for row in range(3):
        probs = logits[row].softmax(-1).tolist()
        ranked = sorted(range(len(probs)), key=lambda i: -probs[i])
        keep, total = set(), 0.0
        for i in ranked:   # take the most likely tokens until their mass reaches p
            keep.add(i)
            total += probs[i]
            if total >= p:
                break
        kept = {i for i, v in enumerate(filtered[row].tolist()) if math.isfinite(v)}
        assert kept == keep and len(kept) >= 1


def test_repetition_penalty_against_brute_force():
    logits = random_logits(seed=2, batch=2, vocab=10)
    previous = torch.tensor([[1, 3, 3, 7], [0, 0, 9, 2]])
    penalised = apply_repetition_penalty(logits, previous, 1.5)
    for row in range(2):
        seen = set(previous[row].tolist())
        for token, value in enumerate(logits[row].tolist()):
            if token in seen:
                value = value / 1.5 if value > 0 else value * 1.5
            assert penalised[row, token].item() == pytest.approx(value, rel=1e-6)
    assert torch.equal(apply_repetition_penalty(logits, previous, 1.0), logits)


def test_next_token_probs_composes_the_helpers_and_greedy_is_one_hot():
    logits = random_logits(seed=3)
    probs = next_token_probs(logits, temperature=0.7, top_k=8, top_p=0.9)
    by_hand = top_p_filter(top_k_filter(logits / 0.7, 8), 0.9).softmax(-1)
    torch.testing.assert_close(probs, by_hand)
    torch.testing.assert_close(probs.sum(-1), torch.ones(3))
    greedy = next_token_probs(logits, temperature=0)
    assert torch.equal(greedy.argmax(-1), logits.argmax(-1))
    assert torch.equal(greedy.sum(-1), torch.ones(3))
    with pytest.raises(ValueError, match=r"\(batch, vocab\)"):
        next_token_probs(logits[0])


# --- the decoding loop -----------------------------------------------------------------


def greedy_by_hand(model, idx, n_new):
    """The plain loop: the full (cropped) context every step, argmax of the last position."""
    limit = model.config.context_length
    for _ in range(n_new):
        logits, _ = model(idx[:, -limit:])
        idx = torch.cat([idx, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    return idx


@pytest.mark.parametrize("use_kv_cache", [True, False])
def test_greedy_generation_equals_an_argmax_loop_past_the_context_window(use_kv_cache):
    model = tiny_model()
    idx = prompt()
    n_new = 2 * CONFIG["context_length"]   # the window slides, so the cache must be refilled
    expected = greedy_by_hand(model, idx, n_new)
    got = generate(model, idx, n_new, temperature=0, use_kv_cache=use_kv_cache)
    assert got.dtype == torch.long and torch.equal(got, expected)


@pytest.mark.parametrize("overrides", [{}, dict(position="rope", n_kv_head=1)])
def test_seeded_sampling_gives_the_same_tokens_with_and_without_the_cache(overrides):
    model = tiny_model(sharpen=3.0, **overrides)   # a spread-out distribution: sampling matters
    options = dict(temperature=0.9, top_k=20, top_p=0.95, repetition_penalty=1.2)
    def sample(seed, use_kv_cache=True):
        generator = torch.Generator().manual_seed(seed)
        return generate(model, prompt(), 40, use_kv_cache=use_kv_cache, generator=generator,
                        **options)

    with_cache, without = sample(5), sample(5, use_kv_cache=False)
    assert torch.equal(with_cache, without)
    again, other_seed = sample(5), sample(6)
    assert torch.equal(with_cache, again) and not torch.equal(with_cache, other_seed)


def sample_halving_by_hand(model, idx, n_new, seed):
    """The "halve" rule written out, sampling at temperature 1: the model sees every token
    since the last cut; when the next token would not fit in the window, cut so that the
    newest half window stays."""
    generator = torch.Generator().manual_seed(seed)
    limit = model.config.context_length
    start = max(0, idx.shape[1] - limit)
    for _ in range(n_new):
        probs = model(idx[:, start:])[0][:, -1].softmax(-1)
        idx = torch.cat([idx, torch.multinomial(probs, 1, generator=generator)], dim=1)
        if idx.shape[1] - start > limit:
            start = idx.shape[1] - limit // 2
    return idx


@pytest.mark.parametrize("overrides", [{}, dict(position="rope")])
@pytest.mark.parametrize("use_kv_cache", [True, False])
def test_past_the_window_halving_equals_its_definition_and_refills_only_per_half_window(
        overrides, use_kv_cache):
    model = tiny_model(sharpen=3.0, **overrides)   # spread out: the context decides the draw
    idx, n_new = prompt(), 3 * CONFIG["context_length"]
    expected = sample_halving_by_hand(model, idx, n_new, seed=5)
    def sample(rule):
        return generate(model, idx, n_new, temperature=1.0, use_kv_cache=use_kv_cache,
                        past_context=rule, generator=torch.Generator().manual_seed(5))

    assert torch.equal(sample("halve"), expected)
    assert not torch.equal(sample("slide"), expected)   # the rule matters past the window
    # Count the tokens the model reads: halving refills half a window per half window
    # (about 3 tokens per token here), where sliding reads the whole window every step.
    fed = []
    original = model.hidden_states
    model.hidden_states = lambda ids, *a, **k: fed.append(ids.shape[1]) or original(ids, *a, **k)
    for rule in ("halve", "slide"):
        fed.clear()
        generate(model, idx, n_new, temperature=0, past_context=rule)
        per_token = sum(fed) / n_new
        if rule == "halve":
            assert per_token < 3, per_token
        else:
            assert per_token > CONFIG["context_length"] / 2, per_token
    with pytest.raises(ValueError, match="past_context"):
        generate(model, idx, 3, past_context="wrap")


# --- batched generation --------------------------------------------------------------------


PROMPT_LENGTHS = (1, 5, 9, 3, 14)   # 14 + 20 new tokens outgrows the 16-token window


@pytest.mark.parametrize("overrides", [{}, dict(position="rope", n_kv_head=1),
                                       dict(attention="manual"), dict(position="sinusoidal")])
@pytest.mark.parametrize("use_kv_cache", [True, False])
@pytest.mark.parametrize("past_context", ["slide", "halve"])
def test_batched_greedy_generation_equals_one_prompt_at_a_time(overrides, use_kv_cache,
                                                              past_context):
    model = tiny_model(**overrides)
    generator = torch.Generator().manual_seed(1)
    prompts = [torch.randint(0, CONFIG["vocab_size"], (n,), generator=generator).tolist()
               for n in PROMPT_LENGTHS]
    options = dict(temperature=0, use_kv_cache=use_kv_cache, past_context=past_context)
    batched = generate_batch(model, prompts, 20, pad_id=7, **options)
    for row, ids in zip(batched, prompts):
        alone = generate(model, torch.tensor([ids]), 20, **options)[0, len(ids):].tolist()
        assert row == alone


def test_left_padded_rows_give_the_unpadded_logits():
    model = tiny_model(position="rope")
    short, long = prompt(1, 4)[0], prompt(1, 9, seed=2)[0]
    idx, n_pad = left_pad([short, long], pad_id=0)
    assert idx.shape == (2, 9) and n_pad.tolist() == [5, 0] and idx[0, :5].eq(0).all()
    logits, _ = model(idx, n_pad=n_pad)
    torch.testing.assert_close(logits[0, 5:], model(short[None])[0][0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(logits[1], model(long[None])[0][0], rtol=1e-4, atol=1e-5)
    assert torch.isfinite(logits).all()   # padding queries see themselves, so no NaN


def test_each_row_stops_at_its_own_stop_token_while_the_others_go_on():
    model = tiny_model()
    prompts = [prompt(1, n, seed=n)[0].tolist() for n in (2, 6, 4)]
    free = [generate(model, torch.tensor([p]), 12, temperature=0)[0, len(p):].tolist()
            for p in prompts]
    stop_id = free[0][3]
    rows = generate_batch(model, prompts, 12, temperature=0, stop_tokens=[stop_id])
    for row, alone in zip(rows, free):
        end = alone.index(stop_id) + 1 if stop_id in alone else len(alone)
        assert row == alone[:end]
    assert len(rows[0]) == free[0].index(stop_id) + 1 < 12


def test_generate_texts_decodes_each_row_without_its_stop_token():
    class Letters:
        def encode(self, text):
            return [ord(c) - ord("a") for c in text]

        def decode(self, ids):
            return "".join(chr(i + ord("a")) if i < 26 else "#" for i in ids)

    model = tiny_model()
    texts = generate_texts(model, Letters(), ["hel", "a", "world"], 8, temperature=0)
    assert texts == [generate_text(model, Letters(), p, 8, temperature=0)
                     for p in ["hel", "a", "world"]]
    with pytest.raises(ValueError, match="at least one"):
        generate_texts(model, Letters(), ["ab", ""], 3)
    with pytest.raises(ValueError, match="n_pad"):
        generate(model, prompt(batch=2), 3, n_pad=torch.tensor([5, 0]))


def test_greedy_generation_matches_transformers_generate():
    torch.manual_seed(0)
    hf = GPT2LMHeadModel(GPT2Config(vocab_size=300, n_positions=64, n_embd=64, n_layer=2, n_head=4,
                                    bos_token_id=0, eos_token_id=0, pad_token_id=0)).eval()
    with torch.no_grad():
        hf.transformer.wte.weight.mul_(20)   # sharpen the logits so argmax has no near-ties
    idx = torch.randint(1, 300, (2, 6), generator=torch.Generator().manual_seed(3))
    expected = hf.generate(idx, attention_mask=torch.ones_like(idx), max_new_tokens=30,
                           do_sample=False, eos_token_id=None, pad_token_id=0)
    assert torch.equal(generate(from_hf_model(hf), idx, 30, temperature=0), expected)


def test_greedy_with_a_repetition_penalty_equals_a_loop_that_applies_it_by_hand():
    model = tiny_model(sharpen=1.0)   # GPT-2's small init: close logits, so the penalty matters
    idx, penalty = prompt(), 2.0
    expected = idx
    # Brute force, past the 16-token window: the cropped context every step, and the CTRL
    # penalty over every token so far, in plain Python.
    for _ in range(12):
        logits = model(expected[:, -CONFIG["context_length"]:])[0][:, -1].tolist()
        chosen = []
        for row, seen in zip(logits, expected.tolist()):
            for token in set(seen):
                row[token] = row[token] / penalty if row[token] > 0 else row[token] * penalty
            chosen.append(max(range(len(row)), key=row.__getitem__))
        expected = torch.cat([expected, torch.tensor(chosen)[:, None]], dim=1)
    got = generate(model, idx, 12, temperature=0, repetition_penalty=penalty)
    assert torch.equal(got, expected)
    assert not torch.equal(got, generate(model, idx, 12, temperature=0))   # the penalty bites


def test_generate_checks_the_prompt_ids_and_returns_a_tensor_training_can_use():
    model = tiny_model()
    with pytest.raises(ValueError, match=r"0\.\.49"):
        generate(model, torch.tensor([[3, CONFIG["vocab_size"]]]), 4)
    out = generate(model, prompt(), 6, temperature=0)
    # Decoding runs in inference mode; what it returns must still be an ordinary tensor,
    # e.g. the ids of a fine-tuning batch (autograd cannot save an inference tensor).
    assert not out.is_inference()
    model.train()
    _, loss = model(out[:, :-1], out[:, 1:])
    loss.backward()
    assert model.token_embedding.weight.grad.abs().sum() > 0


def test_stop_tokens_end_generation_when_every_row_has_stopped():
    model = tiny_model()
    idx = prompt(batch=3)
    free = generate(model, idx, 12, temperature=0)[:, 5:]
    stop_id = free[0, 2].item()
    stopped = generate(model, idx, 12, temperature=0, stop_tokens=[stop_id])[:, 5:]
    # Brute force: each row runs until its first stop token, then repeats it.
    first_stops = [row.index(stop_id) if stop_id in row else 11 for row in free.tolist()]
    assert stopped.shape[1] == max(first_stops) + 1
    for row, first in zip(range(3), first_stops):
        expected = free[row, :first + 1].tolist()
        expected += [expected[-1]] * (stopped.shape[1] - len(expected))
        assert stopped[row].tolist() == expected


def test_stream_yields_generates_tokens_and_restores_train_mode():
    model = tiny_model().train()
    idx = prompt(batch=1)
    expected = generate(model, idx, 10, temperature=0)[0, 5:].tolist()
    assert model.training
    tokens = stream(model, idx, 10, temperature=0)
    first = next(tokens)
    assert torch.is_grad_enabled(), "gradients must be back on between yields"
    assert [first, *tokens] == expected
    assert model.training
    first_stop = expected.index(expected[3])
    stopped = stream(model, idx, 10, temperature=0, stop_tokens=[expected[3]])
    assert list(stopped) == expected[:first_stop + 1]
    with pytest.raises(ValueError, match="one prompt"):
        list(stream(model, prompt(batch=2), 3))


def test_generate_text_decodes_only_the_new_tokens():
    class Letters:   # a tiny stand-in tokenizer: 'a' -> 0, 'b' -> 1, ...
        def encode(self, text):
            return [ord(c) - ord("a") for c in text]

        def decode(self, ids):
            return "".join(chr(i + ord("a")) if i < 26 else "#" for i in ids)

    model = tiny_model()
    new = generate(model, torch.tensor([[7, 4, 11]]), 8, temperature=0)[0, 3:].tolist()
    assert generate_text(model, Letters(), "hel", 8, temperature=0) == Letters().decode(new)
    cut = generate_text(model, Letters(), "hel", 8, temperature=0, stop_tokens=[new[2]])
    assert cut == Letters().decode(new[:new.index(new[2])])


def test_bad_arguments_raise_clear_errors():
    model = tiny_model()
    with pytest.raises(ValueError, match=r"\(batch, T\)"):
        generate(model, torch.tensor([1, 2]), 3)
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate(model, prompt(), -1)
    with pytest.raises(ValueError, match="top_p"):
        generate(model, prompt(), 3, top_p=0.0)
    assert torch.equal(generate(model, prompt(), 0), prompt())
