"""The load-balancing loss of a mixture of experts (Switch Transformer, Fedus et al. 2022).

A router left alone tends to send most tokens to a few experts: they learn faster, so the
router prefers them more. The auxiliary loss

    n_experts * sum_i f_i * P_i

where f_i is the share of routing slots that went to expert i (each token fills
experts_per_token slots) and P_i the router's mean probability for expert i, is smallest
(1.0) when both are uniform. f_i has no gradient (it counts choices); P_i carries it.

`RouterLogits` records the router scores of every MixtureOfExperts layer of a model during
a forward pass (forward hooks on the `router` layers), so the loss can be added to the
language-model loss without changing the model.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["load_balancing_loss", "RouterLogits"]


def load_balancing_loss(router_logits: torch.Tensor, experts_per_token: int) -> torch.Tensor:
    """router_logits: (N tokens, n_experts) -> scalar loss (1.0 when perfectly balanced).

    Checked against a loop over tokens and experts in tests/test_load_balancing.py.
    """
    if router_logits.dim() != 2:
        raise ValueError(f"router_logits must be (tokens, n_experts), got shape "
                         f"{tuple(router_logits.shape)}; flatten batch and time first.")
    n_tokens, n_experts = router_logits.shape
    if not 1 <= experts_per_token <= n_experts:
        raise ValueError(f"experts_per_token must be 1..{n_experts}, got {experts_per_token}.")
    probs = router_logits.float().softmax(dim=-1)                           # (N, E)
    chosen = router_logits.topk(experts_per_token, dim=-1).indices          # (N, k)
    slots = torch.zeros_like(probs).scatter_(1, chosen, 1.0)                # (N, E) 0/1
    share = slots.mean(dim=0) / experts_per_token                           # f_i, sums to 1
    return n_experts * (share * probs.mean(dim=0)).sum()


class RouterLogits:
    """Context manager: `with RouterLogits(model) as routers: model(x)`; then
    `routers.loss()` is the mean load-balancing loss over the model's MoE layers."""

    def __init__(self, model: nn.Module):
        self.layers = [(name, module) for name, module in model.named_modules()
                       if hasattr(module, "router") and hasattr(module, "experts_per_token")]
        if not self.layers:
            raise ValueError("this model has no mixture-of-experts layer (GPTConfig(mlp='moe')).")
        self.logits: list[tuple[torch.Tensor, int]] = []
        self.handles = []

    def __enter__(self) -> RouterLogits:
        self.logits.clear()
        for _, layer in self.layers:
            k = layer.experts_per_token
            self.handles.append(layer.router.register_forward_hook(
                lambda module, inputs, output, k=k: self.logits.append((output, k))))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles.clear()

    def loss(self) -> torch.Tensor:
        """The mean load-balancing loss over every router call recorded."""
        if not self.logits:
            raise ValueError("no router ran: call the model inside the `with` block.")
        return torch.stack([load_balancing_loss(l, k) for l, k in self.logits]).mean()

    def expert_shares(self) -> torch.Tensor:
        """(n_moe_calls, n_experts): share of routing slots each expert got, per call."""
        rows = []
        for logits, k in self.logits:
            chosen = logits.topk(k, dim=-1).indices
            rows.append(torch.bincount(chosen.flatten(), minlength=logits.shape[-1]).float()
                        / chosen.numel())
        return torch.stack(rows)
