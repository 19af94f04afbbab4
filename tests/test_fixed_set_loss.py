"""llmkit.evaluate's first section: eval_mode, the loss's readings (perplexity, bits per
character), checked against their definitions computed here."""

import math

import pytest
import torch
from torch import nn

from llmkit.evaluate import bits_per_character, eval_mode, fixed_set_loss, perplexity
from llmkit.data.batches import IGNORE_INDEX


def test_eval_mode_turns_dropout_and_autograd_off_and_restores_each_module():
    model = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5), nn.Sequential(nn.Dropout(0.5)))
    model.train()
    model[2].eval()                      # a frozen part, left in eval on purpose
    x = torch.ones(2, 4)
    with eval_mode(model):
        assert not any(m.training for m in model.modules())
        out = model(x)
        assert not out.requires_grad
        assert torch.equal(out, model(x))   # no dropout: the same output twice
    assert model.training and model[1].training and not model[2].training


def test_eval_mode_restores_the_modes_after_an_error():
    model = nn.Dropout(0.5).train()
    with pytest.raises(RuntimeError):
        with eval_mode(model):
            raise RuntimeError("boom")
    assert model.training


def test_perplexity_of_a_uniform_guess_is_the_vocabulary_size():
    assert perplexity(math.log(65)) == pytest.approx(65)
    assert perplexity(0.0) == 1.0


def test_bits_per_character_converts_nats_per_token_by_the_characters_each_token_spells():
    # characters as tokens: nats -> bits
    assert bits_per_character(math.log(2), 100, 100) == pytest.approx(1.0)
    # 2.0 nats per token, 50 tokens spelling 200 characters: 100 nats / 200 chars / ln 2
    assert bits_per_character(2.0, 50, 200) == pytest.approx(100 / 200 / math.log(2))
    with pytest.raises(ValueError, match="at least one token and one character"):
        bits_per_character(1.0, 0, 10)


class Uniform(nn.Module):
    """Every target gets probability 1/V, so the loss is ln V whatever the input."""

    def __init__(self, vocab=7):
        super().__init__()
        self.vocab = vocab
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, x, y):
        logits = torch.zeros(*x.shape, self.vocab) + self.dummy
        loss = nn.functional.cross_entropy(logits.view(-1, self.vocab), y.reshape(-1),
                                           ignore_index=IGNORE_INDEX)
        return logits, loss


def test_fixed_set_loss_skips_batches_with_nothing_to_score_and_refuses_an_empty_set():
    x = torch.zeros(2, 3, dtype=torch.long)
    scored = torch.tensor([[1, 2, IGNORE_INDEX], [3, IGNORE_INDEX, IGNORE_INDEX]])
    nothing = torch.full((2, 3), IGNORE_INDEX)
    assert fixed_set_loss(Uniform(), [(x, scored), (x, nothing)]) == pytest.approx(math.log(7))
    with pytest.raises(ValueError, match="no targets to score"):
        fixed_set_loss(Uniform(), [(x, nothing)])
