"""Lesson 01's reference: a counted bigram model over characters.

The simplest language model that learns from data: count how often each character follows
each other character, turn each row of counts into probabilities, and sample one character
at a time. Its quality is measured the way every later model is measured:

    cross-entropy H = -(1/N) * sum_t log p(x_t+1 | x_t)      (nats per character)
    perplexity      = exp(H)                                  (an "effective branching")
    bits per char   = H / ln 2

These are the same quantities PyTorch's `F.cross_entropy` computes from logits; here the
model is a table, so `log(probs)` plays the part of the logits (tests check the two agree).

    vocab = char_vocab(text); ids = encode(text, vocab)
    counts = count_bigrams(ids, len(vocab))          # (V, V) int64
    probs = bigram_probs(counts, smoothing=1.0)      # (V, V) float32, rows sum to 1
    decode(sample(probs, ids[0], 100), vocab)
    cross_entropy(probs, ids), perplexity(probs, ids), bits_per_char(probs, ids)
"""

from __future__ import annotations

import math

import torch

from .data.batches import as_token_tensor


def char_vocab(text: str) -> list[str]:
    """The sorted distinct characters of `text`: position i is the character with id i."""
    if not isinstance(text, str) or not text:
        raise ValueError(f"char_vocab needs a non-empty str, got {type(text).__name__} "
                         f"{text!r:.40}.")
    return sorted(set(text))


def encode(text: str, vocab: list[str]) -> torch.Tensor:
    """text -> ids: (len(text),) int64, one id per character (its position in `vocab`)."""
    index = {char: i for i, char in enumerate(vocab)}
    unknown = sorted(set(text) - index.keys())
    if unknown:
        raise ValueError(f"characters {unknown[:5]} are not in the vocabulary; build the "
                         "vocabulary from text that contains them (char_vocab).")
    return torch.tensor([index[char] for char in text], dtype=torch.long)


def decode(ids, vocab: list[str]) -> str:
    """ids: (n,) -> the text they stand for."""
    return "".join(vocab[i] for i in as_token_tensor(ids).tolist())


def count_bigrams(ids, vocab_size: int) -> torch.Tensor:
    """ids: (n,) int64 -> counts: (vocab_size, vocab_size) int64.

    counts[a, b] is how many times id b directly follows id a in `ids`.
    """
    ids = _checked_ids(ids, vocab_size)
    # Each pair (a, b) gets one flat index a * V + b, and bincount counts them all at once.
    flat = ids[:-1] * vocab_size + ids[1:]
    counts = torch.bincount(flat, minlength=vocab_size * vocab_size)
    return counts.reshape(vocab_size, vocab_size)


def bigram_probs(counts: torch.Tensor, smoothing: float = 1.0) -> torch.Tensor:
    """counts: (V, V) -> probs: (V, V) float32, each row a distribution over the next id.

    probs[a, b] = (counts[a, b] + smoothing) / sum_c (counts[a, c] + smoothing). Smoothing
    (add-k, Laplace for k=1) gives unseen pairs a small probability, so held-out text never
    gets probability zero (infinite loss).
    """
    if counts.dim() != 2 or counts.shape[0] != counts.shape[1]:
        raise ValueError(f"counts must be a square (V, V) table, got shape "
                         f"{tuple(counts.shape)}.")
    if smoothing < 0:
        raise ValueError(f"smoothing must be >= 0, got {smoothing}.")
    smoothed = counts.double() + smoothing
    totals = smoothed.sum(dim=1, keepdim=True)
    if (totals == 0).any():
        row = int((totals == 0).nonzero()[0, 0])
        raise ValueError(f"row {row} has no counts and smoothing is 0, so it has no "
                         "distribution; use smoothing > 0.")
    return (smoothed / totals).float()


def sample(probs: torch.Tensor, start_id: int, n_tokens: int,
           generator: torch.Generator | None = None) -> list[int]:
    """Sample `n_tokens` ids one after another, starting after `start_id`.

    probs: (V, V) -> a list of n_tokens ids (start_id not included). Each id is drawn from
    the row of the id before it, with `torch.multinomial` and `generator` (same seed, same
    text).
    """
    if not 0 <= int(start_id) < probs.shape[0]:
        raise ValueError(f"start_id must be in [0, {probs.shape[0]}), got {start_id}.")
    out, current = [], int(start_id)
    for _ in range(n_tokens):
        current = int(torch.multinomial(probs[current], 1, generator=generator))
        out.append(current)
    return out


def cross_entropy(probs: torch.Tensor, ids) -> float:
    """Mean negative log-likelihood of each next id, in nats per token.

    probs: (V, V), ids: (n,) with n >= 2 -> float, averaged over the n - 1 predictions.
    """
    ids = _checked_ids(ids, probs.shape[0])
    if len(ids) < 2:
        raise ValueError("cross_entropy needs at least 2 ids (one prediction).")
    picked = probs.double()[ids[:-1], ids[1:]]
    return float(-picked.log().mean())


def perplexity(probs: torch.Tensor, ids) -> float:
    """exp(cross-entropy): the number of equally likely choices that would be as surprising."""
    return math.exp(cross_entropy(probs, ids))


def bits_per_char(probs: torch.Tensor, ids) -> float:
    """Cross-entropy in bits (log base 2) per character."""
    return cross_entropy(probs, ids) / math.log(2)


def best_smoothing(train_ids, val_ids, vocab_size: int, candidates) -> float:
    """The candidate smoothing with the lowest cross-entropy on `val_ids` (first on ties).

    Counts come from `train_ids` only: choosing a setting on held-out text is the habit that
    keeps every later model honest.
    """
    candidates = list(candidates)
    if not candidates:
        raise ValueError("best_smoothing needs at least one candidate value.")
    counts = count_bigrams(train_ids, vocab_size)
    losses = [cross_entropy(bigram_probs(counts, k), val_ids) for k in candidates]
    return candidates[losses.index(min(losses))]


class BigramModel:
    """A character bigram model trained by counting: `BigramModel.train(text)`."""

    def __init__(self, vocab: list[str], probs: torch.Tensor):
        self.vocab = vocab
        self.probs = probs

    @classmethod
    def train(cls, text: str, smoothing: float = 1.0) -> "BigramModel":
        vocab = char_vocab(text)
        counts = count_bigrams(encode(text, vocab), len(vocab))
        return cls(vocab, bigram_probs(counts, smoothing))

    def generate(self, n_chars: int, start: str | None = None,
                 generator: torch.Generator | None = None) -> str:
        """`start` (default: the first character of the vocabulary) plus n_chars sampled."""
        start = self.vocab[0] if start is None else start
        start_id = int(encode(start[-1], self.vocab)[0])
        return start + decode(sample(self.probs, start_id, n_chars, generator), self.vocab)

    def evaluate(self, text: str) -> dict[str, float]:
        """Cross-entropy (nats), perplexity and bits per character of `text`."""
        ids = encode(text, self.vocab)
        loss = cross_entropy(self.probs, ids)
        return {"cross_entropy": loss, "perplexity": math.exp(loss),
                "bits_per_char": loss / math.log(2)}


def _checked_ids(ids, vocab_size: int) -> torch.Tensor:
    ids = as_token_tensor(ids)
    if len(ids) and (ids.min() < 0 or ids.max() >= vocab_size):
        raise ValueError(f"ids must lie in [0, {vocab_size}), got values from "
                         f"{int(ids.min())} to {int(ids.max())}.")
    return ids
