"""The load-balancing loss against a loop over tokens and experts, and its minimum."""

import pytest
import torch

from llmkit.load_balancing import RouterLogits, load_balancing_loss
from llmkit.model import GPT, GPTConfig


def brute_force(logits, k):
    n, e = logits.shape
    probs = [[0.0] * e for _ in range(n)]
    counts = [0] * e
    for t in range(n):
        row = logits[t].tolist()
        total = sum(torch.tensor(row).exp().tolist())
        probs[t] = [x / total for x in torch.tensor(row).exp().tolist()]
        for i in sorted(range(e), key=lambda i: -row[i])[:k]:
            counts[i] += 1
    return e * sum(counts[i] / (n * k) * sum(probs[t][i] for t in range(n)) / n
                   for i in range(e))


@pytest.mark.parametrize("k", [1, 2])
def test_load_balancing_loss_matches_a_loop(k):
    logits = torch.randn(23, 4, generator=torch.Generator().manual_seed(k))
    assert load_balancing_loss(logits, k).item() == pytest.approx(brute_force(logits, k), rel=1e-5)


def test_balanced_routing_scores_one_and_collapsed_routing_more():
    balanced = torch.eye(4).repeat(5, 1) * 10          # each expert first for a quarter of tokens
    assert load_balancing_loss(balanced, 1).item() == pytest.approx(1.0, abs=1e-3)
    collapsed = torch.tensor([[10.0, 0, 0, 0]]).repeat(20, 1)
    assert load_balancing_loss(collapsed, 1).item() == pytest.approx(4.0, abs=1e-3)


def test_router_logits_collects_every_moe_layer_and_backpropagates():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=20, context_length=8, n_layer=2, n_head=2, d_model=16,
                          mlp="moe", n_experts=4, experts_per_token=2))
    x = torch.randint(0, 20, (3, 8))
    with RouterLogits(model) as routers:
        model(x)
    assert len(routers.logits) == 2 and routers.logits[0][0].shape == (24, 4)
    shares = routers.expert_shares()
    assert shares.shape == (2, 4) and torch.allclose(shares.sum(-1), torch.ones(2))
    routers.loss().backward()
    assert model.blocks[0].mlp.router.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="no mixture-of-experts"):
        RouterLogits(GPT(GPTConfig(vocab_size=20, context_length=8, n_layer=1, n_head=2,
                                   d_model=16)))
