"""llmkit.bigram against independent computations: brute-force counting, PyTorch's own
F.cross_entropy, NumPy logs, and the law of large numbers for sampling."""

import math
from collections import Counter

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from llmkit import bigram

TEXT = "the cat sat on the mat. the dog sat on the log. a cat and a dog met at the mat."


@pytest.fixture
def ids_and_vocab():
    vocab = bigram.char_vocab(TEXT)
    return bigram.encode(TEXT, vocab), vocab


def test_vocab_encode_decode_round_trip(ids_and_vocab):
    ids, vocab = ids_and_vocab
    assert vocab == sorted(set(TEXT))
    assert ids.dtype == torch.long and len(ids) == len(TEXT)
    assert bigram.decode(ids, vocab) == TEXT


def test_counts_match_a_brute_force_count(ids_and_vocab):
    ids, vocab = ids_and_vocab
    counts = bigram.count_bigrams(ids, len(vocab))
    pairs = Counter(zip(TEXT, TEXT[1:]))
    assert counts.shape == (len(vocab), len(vocab)) and counts.dtype == torch.long
    for a, first in enumerate(vocab):
        for b, second in enumerate(vocab):
            assert counts[a, b].item() == pairs[(first, second)]


def test_probabilities_are_smoothed_rows_that_sum_to_one():
    counts = torch.tensor([[0, 3, 1], [2, 2, 0], [0, 0, 0]])
    probs = bigram.bigram_probs(counts, smoothing=0.5)
    by_hand = (counts.numpy() + 0.5) / (counts.numpy() + 0.5).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(probs.numpy(), by_hand, rtol=1e-6)
    torch.testing.assert_close(probs.sum(dim=1), torch.ones(3))


def test_cross_entropy_matches_torch_cross_entropy(ids_and_vocab):
    ids, vocab = ids_and_vocab
    probs = bigram.bigram_probs(bigram.count_bigrams(ids, len(vocab)), smoothing=1.0)
    # A table model is a model whose logits are log-probabilities: F.cross_entropy agrees
    # (up to float32 rounding of the rows, which it renormalises).
    expected = F.cross_entropy(probs.double().log()[ids[:-1]], ids[1:]).item()
    assert bigram.cross_entropy(probs, ids) == pytest.approx(expected, rel=1e-6)
    assert bigram.perplexity(probs, ids) == pytest.approx(math.exp(expected), rel=1e-6)
    log2 = np.log2(probs.double().numpy()[ids[:-1].numpy(), ids[1:].numpy()])
    assert bigram.bits_per_char(probs, ids) == pytest.approx(-log2.mean(), rel=1e-9)


def test_a_zero_probability_pair_makes_the_loss_infinite():
    probs = torch.tensor([[0.0, 1.0], [0.5, 0.5]])
    assert bigram.cross_entropy(probs, torch.tensor([1, 0, 0])) == math.inf


def test_sampling_is_reproducible_and_follows_the_probabilities():
    probs = torch.tensor([[0.1, 0.6, 0.3], [0.5, 0.0, 0.5], [0.2, 0.2, 0.6]])
    first = bigram.sample(probs, 0, 20000, torch.Generator().manual_seed(3))
    again = bigram.sample(probs, 0, 20000, torch.Generator().manual_seed(3))
    assert first == again and len(first) == 20000
    walk = torch.tensor([0] + first)
    observed = bigram.count_bigrams(walk, 3).double()
    frequencies = observed / observed.sum(dim=1, keepdim=True)
    assert observed[1, 1] == 0  # a probability-0 step never happens
    torch.testing.assert_close(frequencies, probs.double(), atol=0.03, rtol=0)


def test_best_smoothing_matches_a_brute_force_search(ids_and_vocab):
    ids, vocab = ids_and_vocab
    train, val = ids[:60], ids[60:]
    candidates = [0.001, 0.01, 0.1, 1.0, 10.0]
    counts = Counter(zip(train.tolist(), train[1:].tolist()))
    size = len(vocab)

    def val_loss(k):
        total = 0.0
        for a, b in zip(val.tolist(), val[1:].tolist()):
            row = sum(counts[(a, c)] for c in range(size)) + k * size
            total -= math.log((counts[(a, b)] + k) / row)
        return total / (len(val) - 1)

    losses = [val_loss(k) for k in candidates]
    assert bigram.best_smoothing(train, val, size, candidates) == candidates[
        losses.index(min(losses))]


def test_bigram_model_writes_only_known_characters_and_reports_consistent_metrics():
    model = bigram.BigramModel.train(TEXT, smoothing=0.1)
    text = model.generate(50, start="t", generator=torch.Generator().manual_seed(0))
    assert text.startswith("t") and len(text) == 51 and set(text) <= set(TEXT)
    metrics = model.evaluate(TEXT)
    assert metrics["perplexity"] == pytest.approx(math.exp(metrics["cross_entropy"]))
    assert metrics["bits_per_char"] == pytest.approx(metrics["cross_entropy"] / math.log(2))


@pytest.mark.parametrize("call, words", [
    (lambda: bigram.count_bigrams(torch.tensor([0, 5]), 3), "[0, 3)"),
    (lambda: bigram.bigram_probs(torch.zeros(2, 3)), "square"),
    (lambda: bigram.bigram_probs(torch.zeros(2, 2), smoothing=0.0), "smoothing > 0"),
    (lambda: bigram.bigram_probs(torch.ones(2, 2), smoothing=-1.0), ">= 0"),
    (lambda: bigram.char_vocab(""), "non-empty"),
    (lambda: bigram.encode("xyz", ["x"]), "not in the vocabulary"),
    (lambda: bigram.cross_entropy(torch.ones(2, 2) / 2, torch.tensor([1])), "at least 2"),
])
def test_bad_inputs_raise_a_value_error_that_says_what_to_do(call, words):
    with pytest.raises(ValueError, match=words.replace("[", r"\[").replace(")", r"\)")):
        call()
