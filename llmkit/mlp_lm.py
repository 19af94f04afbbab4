"""Lesson 04's reference: neurons, layers, and a Bengio-style MLP language model.

The small pieces first, each written the readable way and checked in the tests against
PyTorch's own op (named in each docstring):

    linear(x, W, b)          x @ W.T + b                          (nn.Linear)
    gelu_tanh(x)             GELU, tanh approximation             (F.gelu(approximate="tanh"))
    softmax(z)               exp(z - max) / sum exp(z - max)      (F.softmax)
    cross_entropy(z, y)      mean of -log softmax(z)[y]           (F.cross_entropy)
    layer_norm(x, w, b)      (x - mean) / std * w + b             (F.layer_norm)
    rms_norm(x, w)           x / rms(x) * w                       (nn.RMSNorm)
    linear_backward(...)     dx, dW, db of a linear layer by hand (autograd)

Then the model of Bengio et al. (2003), "A Neural Probabilistic Language Model": look up an
embedding for each of the previous `block_size` characters, concatenate them, pass them
through a hidden layer with a non-linearity, and read off one logit per vocabulary entry:

    idx (B, block_size) -> embed (B, block_size, d_embed) -> concat (B, block_size * d_embed)
        -> tanh(hidden) (B, d_hidden) -> [more hidden layers] -> out (B, vocab_size)

    X, Y = context_windows(ids, block_size=8)      # X: (n - 8, 8), Y: (n - 8,)
    model = MLPLanguageModel(vocab_size, block_size=8)
    history = fit(model, (X, Y), (X_val, Y_val), steps=2000)
    sample(model, X[0].tolist(), 200, torch.Generator().manual_seed(0))

Extra hidden layers (n_layers > 1) can add a residual connection (h + f(h)) and a
normalisation (LayerNorm or RMSNorm) before each layer, so lesson 04 can show what each one
does to the loss and to the gradient that reaches the first layer.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .data.batches import as_token_tensor
from .evaluate import eval_mode
from .model.layers import RMSNorm

# --- the small pieces -------------------------------------------------------------------

def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None
           ) -> torch.Tensor:
    """A layer of neurons. x: (..., d_in), weight: (d_out, d_in), bias: (d_out,) -> (..., d_out).

    Row j of `weight` is neuron j's weights, so x @ weight.T gives every neuron's weighted
    sum at once. Matches nn.Linear (which stores its weight the same way, (d_out, d_in)).
    """
    if x.shape[-1] != weight.shape[-1]:
        raise ValueError(f"x has {x.shape[-1]} features but weight is {tuple(weight.shape)} "
                         "(d_out, d_in); its last size must equal x's last size.")
    out = x @ weight.T
    return out if bias is None else out + bias


def gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    """GELU with GPT-2's tanh approximation, elementwise: (...) -> (...).

    0.5 * x * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 * x^3))). Matches
    F.gelu(x, approximate="tanh").
    """
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def softmax(logits: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Probabilities from logits along `dim`: (...) -> (...), summing to 1 along dim.

    Subtracting the largest logit first changes nothing mathematically (it cancels in the
    ratio) but keeps exp from overflowing for large logits. Matches F.softmax.
    """
    shifted = logits - logits.amax(dim=dim, keepdim=True)
    exps = shifted.exp()
    return exps / exps.sum(dim=dim, keepdim=True)


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean negative log-probability of the targets. logits: (N, V), targets: (N,) -> scalar.

    log p = z - max - log(sum exp(z - max)) (log-sum-exp), so a very unlikely target gives
    a large finite loss instead of log(0). Matches F.cross_entropy (in nats).
    """
    if logits.dim() != 2 or targets.shape != logits.shape[:1]:
        raise ValueError(f"expected logits (N, V) and targets (N,), got "
                         f"{tuple(logits.shape)} and {tuple(targets.shape)}; flatten the "
                         "batch and time dimensions first, e.g. logits.view(-1, V).")
    shifted = logits - logits.amax(dim=1, keepdim=True)
    log_probs = shifted - shifted.exp().sum(dim=1, keepdim=True).log()
    return -log_probs[torch.arange(len(targets), device=logits.device), targets].mean()


def layer_norm(x: torch.Tensor, weight: torch.Tensor | None = None,
               bias: torch.Tensor | None = None, eps: float = 1e-5) -> torch.Tensor:
    """Normalise each vector over its last dimension: (..., d) -> (..., d).

    (x - mean) / sqrt(var + eps) * weight + bias, with the biased variance (divide by d).
    Matches F.layer_norm(x, (d,), weight, bias, eps).
    """
    mean = x.mean(dim=-1, keepdim=True)
    var = x.var(dim=-1, keepdim=True, unbiased=False)
    out = (x - mean) / torch.sqrt(var + eps)
    if weight is not None:
        out = out * weight
    return out if bias is None else out + bias


def rms_norm(x: torch.Tensor, weight: torch.Tensor | None = None,
             eps: float = 1e-5) -> torch.Tensor:
    """Scale each vector to root-mean-square 1 over its last dimension: (..., d) -> (..., d).

    x / sqrt(mean(x^2) + eps) * weight: no mean subtracted, no bias. Matches nn.RMSNorm
    and llmkit.model.layers.RMSNorm.
    """
    out = x / torch.sqrt(x.pow(2).mean(dim=-1, keepdim=True) + eps)
    return out if weight is None else out * weight


def linear_backward(x: torch.Tensor, weight: torch.Tensor, dout: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The gradients of out = x @ weight.T + bias, by the chain rule.

    x: (N, d_in), weight: (d_out, d_in), dout = dL/dout: (N, d_out) ->
    dx: (N, d_in), dweight: (d_out, d_in), dbias: (d_out,). Matches autograd.
    """
    if x.dim() != 2 or dout.shape != (x.shape[0], weight.shape[0]):
        raise ValueError(f"expected x (N, d_in), weight (d_out, d_in), dout (N, d_out); got "
                         f"{tuple(x.shape)}, {tuple(weight.shape)}, {tuple(dout.shape)}.")
    dx = dout @ weight           # each input feeds every neuron, so its gradients add up
    dweight = dout.T @ x         # summed over the N examples of the batch
    dbias = dout.sum(dim=0)
    return dx, dweight, dbias


# --- the data: every window of block_size ids and the id after it -----------------------

def context_windows(ids, block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """ids: (n,) -> X: (n - block_size, block_size), Y: (n - block_size,), both int64.

    X[i] = ids[i : i + block_size] and Y[i] = ids[i + block_size]: each window of
    consecutive ids, and the id that follows it.
    """
    ids = as_token_tensor(ids)
    if not isinstance(block_size, int) or block_size < 1:
        raise ValueError(f"block_size must be a positive int, got {block_size!r}.")
    if len(ids) <= block_size:
        raise ValueError(f"{len(ids)} ids give no window of block_size={block_size} plus a "
                         "next id; use more text or a smaller block_size.")
    # unfold makes every window as a view (no copy); the target is the id after each one.
    windows = ids.unfold(0, block_size, 1)[:-1]
    return windows.contiguous(), ids[block_size:].clone()


# --- the model ----------------------------------------------------------------------------

ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU, "gelu": lambda: nn.GELU(approximate="tanh")}
NORMS = {"layernorm": nn.LayerNorm, "rmsnorm": RMSNorm}


def _activation(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {name!r}.")
    return ACTIVATIONS[name]()


class HiddenLayer(nn.Module):
    """One more hidden layer of width d: (B, d) -> (B, d).

    plain:    h -> act(linear(norm(h)))
    residual: h -> h + act(linear(norm(h)))    (the identity path carries h, and its
              gradient, past the layer unchanged)
    norm is LayerNorm, RMSNorm, or nothing (None).
    """

    def __init__(self, d: int, activation: str = "tanh", residual: bool = False,
                 norm: str | None = None):
        super().__init__()
        if norm is not None and norm not in NORMS:
            raise ValueError(f"norm must be None or one of {sorted(NORMS)}, got {norm!r}.")
        self.residual = residual
        self.norm = NORMS[norm](d) if norm else nn.Identity()
        self.linear = nn.Linear(d, d)
        self.act = _activation(activation)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        update = self.act(self.linear(self.norm(h)))
        return h + update if self.residual else update


class MLPLanguageModel(nn.Module):
    """Bengio et al. (2003): the next id from the previous block_size ids.

    forward(idx: (B, block_size) int64) -> logits: (B, vocab_size).
    With the defaults (n_layers=1) the parameters are exactly `embed` (vocab_size, d_embed),
    `hidden` (d_hidden, block_size * d_embed) and `out` (vocab_size, d_hidden), with biases.
    n_layers > 1 adds HiddenLayers in `deeper` (residual and norm as given) and, when norm
    is set, a final norm before `out`, as in a pre-norm transformer.
    """

    def __init__(self, vocab_size: int, block_size: int, d_embed: int = 16,
                 d_hidden: int = 128, n_layers: int = 1, activation: str = "tanh",
                 residual: bool = False, norm: str | None = None):
        super().__init__()
        for name, value in (("vocab_size", vocab_size), ("block_size", block_size),
                            ("d_embed", d_embed), ("d_hidden", d_hidden), ("n_layers", n_layers)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}.")
        self.block_size = block_size
        self.embed = nn.Embedding(vocab_size, d_embed)
        self.hidden = nn.Linear(block_size * d_embed, d_hidden)
        self.act = _activation(activation)
        self.deeper = nn.ModuleList(HiddenLayer(d_hidden, activation, residual, norm)
                                    for _ in range(n_layers - 1))
        self.final_norm = NORMS[norm](d_hidden) if norm and n_layers > 1 else nn.Identity()
        self.out = nn.Linear(d_hidden, vocab_size)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        if idx.dim() != 2 or idx.shape[1] != self.block_size:
            raise ValueError(f"expected idx of shape (batch, {self.block_size}), got "
                             f"{tuple(idx.shape)}; build windows with context_windows.")
        embedded = self.embed(idx)                           # (B, block_size, d_embed)
        h = self.act(self.hidden(embedded.flatten(1)))       # concatenate, then (B, d_hidden)
        for layer in self.deeper:
            h = layer(h)
        return self.out(self.final_norm(h))                  # (B, vocab_size)


# --- training, evaluation, sampling --------------------------------------------------------

def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
             batch_size: int = 8192) -> float:
    """Mean cross-entropy (nats per character) of `model` on windows x: (N, T), y: (N,)."""
    device = next(model.parameters()).device
    total = 0.0
    with eval_mode(model):
        for start in range(0, len(x), batch_size):
            logits = model(x[start:start + batch_size].to(device))
            total += float(nn.functional.cross_entropy(
                logits, y[start:start + batch_size].to(device), reduction="sum"))
    return total / len(x)


def fit(model: nn.Module, train: tuple[torch.Tensor, torch.Tensor],
        val: tuple[torch.Tensor, torch.Tensor], steps: int, batch_size: int = 128,
        lr: float = 3e-3, eval_every: int = 100, eval_size: int = 20_000,
        seed: int = 0) -> dict[str, list]:
    """Train with AdamW on random batches of (X, Y) windows; the loop of lesson 04.

    train, val: (X: (N, T) int64, Y: (N,) int64). Every step records the batch loss and the
    gradient norm of the first hidden layer (`model.hidden`); every `eval_every` steps (and
    at the end) the loss on the first `eval_size` train and val windows. Returns a history
    {"step", "loss", "grad_norm", "eval_step", "train_loss", "val_loss"} (losses in nats).
    The same seed draws the same batches, so models compared with it see the same data.
    """
    if steps < 1 or batch_size < 1 or eval_every < 1:
        raise ValueError(f"steps, batch_size and eval_every must be >= 1, got {steps}, "
                         f"{batch_size}, {eval_every}.")
    device = next(model.parameters()).device
    train_x, train_y = (t.to(device) for t in train)
    val_x, val_y = val
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    history = {key: [] for key in ("step", "loss", "grad_norm", "eval_step", "train_loss",
                                   "val_loss")}
    model.train()
    for step in range(steps):
        rows = torch.randint(0, len(train_x), (batch_size,), generator=generator).to(device)
        loss = nn.functional.cross_entropy(model(train_x[rows]), train_y[rows])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        history["step"].append(step)
        history["loss"].append(loss.item())
        history["grad_norm"].append(model.hidden.weight.grad.norm().item())
        optimizer.step()
        if step % eval_every == 0 or step == steps - 1:
            history["eval_step"].append(step)
            history["train_loss"].append(evaluate(model, train_x[:eval_size], train_y[:eval_size]))
            history["val_loss"].append(evaluate(model, val_x[:eval_size], val_y[:eval_size]))
    return history


@torch.no_grad()
def sample(model: MLPLanguageModel, context: list[int], n_chars: int,
           generator: torch.Generator | None = None, temperature: float = 1.0) -> list[int]:
    """Draw n_chars ids one at a time, each from the model given the last block_size ids.

    context: at least block_size ids to start from -> a list of n_chars new ids.
    """
    if len(context) < model.block_size:
        raise ValueError(f"context needs at least block_size = {model.block_size} ids, got "
                         f"{len(context)}; start from a longer prompt.")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}.")
    device = next(model.parameters()).device
    window, out = list(context[-model.block_size:]), []
    with eval_mode(model):
        for _ in range(n_chars):
            logits = model(torch.tensor([window], device=device))[0] / temperature
            probs = torch.softmax(logits.float(), dim=-1).cpu()
            next_id = int(torch.multinomial(probs, 1, generator=generator))
            out.append(next_id)
            window = window[1:] + [next_id]
    return out
