"""Attention view (lesson 05): where each token looks, per layer and per head, offline.

`attention(model, text_or_ids, tokenizer=...)` runs the model once, takes the softmax
weights of every layer (`model.attention_maps(idx)`), and shows them two ways:

- a heatmap: one row per query token (the token doing the looking), one column per key
  token (the token looked at); hover shows the weight. In a causal model every cell right
  of the diagonal is masked, drawn blank, so the lower triangle *is* the causal structure;
- token-to-token lines: the tokens in two columns, a line from each query to each key,
  thicker and darker for more weight (the picture bertviz draws).

Selectors pick the layer and the head, or "all" heads as a grid. It also takes raw
attention tensors, the per-layer tuple `(batch, heads, seq, seq)` bertviz takes, so any
model's attention can be shown. Unlike bertviz it needs no script from the internet.
"""

from __future__ import annotations

import math

import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from llmkit.evaluate import eval_mode

from .display import View, replace_figure

COLOURSCALE = "Blues"
MASKED_COLOUR = "#d9d9d9"  # the background masked (future) cells leave visible
LINE_BINS = 6  # line weights are drawn in this many thickness/opacity steps


def token_labels(tokenizer, ids: list[int]) -> list[str]:
    """A printable label per token id, from `tokenizer.token_pieces` or `decode`."""
    if tokenizer is None:
        return [str(i) for i in ids]
    if hasattr(tokenizer, "token_pieces"):
        pieces = list(tokenizer.token_pieces(ids))
    else:
        pieces = [tokenizer.decode([i]) for i in ids]
    return [visible_whitespace(p) for p in pieces]


def visible_whitespace(piece: str) -> str:
    """Show spaces, newlines and tabs as visible marks, so a ' ' token is not a blank label."""
    return piece.replace(" ", "\u2423").replace("\n", "\u21b5").replace("\t", "\u21e5")


def encode_input(text_or_ids, tokenizer=None) -> list[int]:
    """Token ids from a string (needs `tokenizer`), a list of ints, or a 1-D / (1, seq) tensor."""
    if isinstance(text_or_ids, str):
        if tokenizer is None:
            raise ValueError(
                "Got text but no tokenizer: pass tokenizer=... (the one the model was trained "
                "with), or pass the token ids instead of the text."
            )
        ids = list(tokenizer.encode(text_or_ids))
    elif isinstance(text_or_ids, torch.Tensor):
        if text_or_ids.dim() == 2 and text_or_ids.shape[0] == 1:
            text_or_ids = text_or_ids[0]
        if text_or_ids.dim() != 1:
            raise ValueError(
                f"Token ids must be shaped (seq,) or (1, seq), got {tuple(text_or_ids.shape)}."
            )
        ids = [int(i) for i in text_or_ids.tolist()]
    elif isinstance(text_or_ids, (list, tuple)) and all(isinstance(i, int) for i in text_or_ids):
        ids = list(text_or_ids)
    else:
        raise ValueError(
            f"Expected a str, a list of token ids or a tensor of ids, got "
            f"{type(text_or_ids).__name__}."
        )
    if not ids:
        raise ValueError("The input is empty: give at least one token.")
    return ids


def model_attention(model, text_or_ids, tokenizer=None) -> tuple[tuple[torch.Tensor, ...], list]:
    """Run `model` once and return (maps, labels).

    maps: one tensor per layer, each (1, heads, seq, seq) float32 on the CPU: the softmax
    attention weights from `model.attention_maps(idx)`. labels: one string per token.
    Inputs longer than the model's context are cut to their last `context_length` tokens.
    """
    if not hasattr(model, "attention_maps"):
        raise ValueError(
            f"{type(model).__name__} has no attention_maps(idx); pass an llmkit GPT, or pass "
            "the attention tensors themselves (a per-layer tuple shaped (batch, heads, seq, seq))."
        )
    ids = encode_input(text_or_ids, tokenizer)
    context = getattr(getattr(model, "config", None), "context_length", None)
    if context is not None:
        ids = ids[-context:]
    device = next(model.parameters()).device
    idx = torch.tensor([ids], dtype=torch.long, device=device)
    with eval_mode(model):
        maps = model.attention_maps(idx)
    maps = tuple(m.detach().float().cpu() for m in maps)
    return maps, token_labels(tokenizer, ids)


def check_maps(maps, batch_index: int = 0) -> torch.Tensor:
    """Validate attention tensors and stack them: returns (layers, heads, seq, seq) float32.

    maps: a tuple/list with one tensor (or array) per layer, each (batch, heads, seq, seq)
    or (heads, seq, seq); `batch_index` picks the sequence to show.
    """
    if isinstance(maps, torch.Tensor) and maps.dim() in (4, 5):
        maps = tuple(maps)
    if not isinstance(maps, (list, tuple)) or not maps:
        raise ValueError(
            "Expected attention as a non-empty tuple with one tensor per layer, each shaped "
            f"(batch, heads, seq, seq); got {type(maps).__name__}."
        )
    layers = []
    for n, layer in enumerate(maps):
        layer = torch.as_tensor(layer).detach().float().cpu()
        if layer.dim() == 3:
            layer = layer.unsqueeze(0)
        if layer.dim() != 4 or layer.shape[-1] != layer.shape[-2]:
            raise ValueError(
                f"Layer {n} of the attention has shape {tuple(layer.shape)}; expected "
                "(batch, heads, seq, seq) with the last two sizes equal."
            )
        if not 0 <= batch_index < layer.shape[0]:
            raise ValueError(f"batch_index {batch_index} is outside the batch of {layer.shape[0]}.")
        layers.append(layer[batch_index])
    if any(layer.shape != layers[0].shape for layer in layers):
        shapes = sorted({tuple(layer.shape) for layer in layers})
        raise ValueError(f"Every layer must have the same (heads, seq, seq) shape, got {shapes}.")
    return torch.stack(layers)


def is_masked(weights: torch.Tensor) -> torch.Tensor:
    """(seq, seq) bool: True where a key lies after its query and gets exactly zero weight."""
    seq = weights.shape[-1]
    future = torch.ones(seq, seq, dtype=torch.bool).triu(1)
    return future & (weights == 0)


def _heatmap_trace(weights: torch.Tensor, labels: list[str], **trace_options) -> go.Heatmap:
    masked = is_masked(weights)
    z, hover = [], []
    for q in range(len(labels)):
        z.append([None if masked[q, k] else float(weights[q, k]) for k in range(len(labels))])
        hover.append([f"{labels[q]!r} \u2192 {labels[k]!r}: {float(weights[q, k]):.3f}"
                      for k in range(len(labels))])
    return go.Heatmap(z=z, text=hover, hovertemplate="%{text}<extra></extra>", zmin=0, zmax=1,
                      **trace_options)


def _token_axis(labels: list[str], show_labels: bool = True) -> dict:
    positions = list(range(len(labels)))
    return dict(tickmode="array", tickvals=positions,
                ticktext=labels if show_labels else [""] * len(labels), showgrid=False)


def heatmap_figure(weights: torch.Tensor, labels: list[str], title: str = "") -> go.Figure:
    """One head's attention as a heatmap. weights: (seq, seq), rows = queries, cols = keys."""
    figure = go.Figure(_heatmap_trace(weights, labels, colorscale=COLOURSCALE))
    side = min(640, 160 + 28 * len(labels))
    figure.update_layout(title=title, width=side + 120, height=side, margin=dict(l=80, t=50),
                         plot_bgcolor=MASKED_COLOUR,
                         xaxis=dict(title="key (looked at)", **_token_axis(labels)),
                         yaxis=dict(title="query (looking)", autorange="reversed",
                                    **_token_axis(labels)))
    return figure


def grid_figure(layer_weights: torch.Tensor, labels: list[str], title: str = "") -> go.Figure:
    """All heads of one layer as a grid of heatmaps. layer_weights: (heads, seq, seq)."""
    heads = layer_weights.shape[0]
    cols = min(4, heads)
    rows = math.ceil(heads / cols)
    figure = make_subplots(rows=rows, cols=cols, subplot_titles=[f"head {h}" for h in range(heads)],
                           horizontal_spacing=0.04, vertical_spacing=0.08)
    show_labels = len(labels) <= 12
    for h in range(heads):
        row, col = divmod(h, cols)
        figure.add_trace(_heatmap_trace(layer_weights[h], labels, coloraxis="coloraxis"),
                         row=row + 1, col=col + 1)
        figure.update_xaxes(_token_axis(labels, show_labels), row=row + 1, col=col + 1)
        figure.update_yaxes(dict(autorange="reversed", **_token_axis(labels, show_labels)),
                            row=row + 1, col=col + 1)
    figure.update_layout(title=title, coloraxis=dict(colorscale=COLOURSCALE, cmin=0, cmax=1),
                         plot_bgcolor=MASKED_COLOUR,
                         width=min(1000, 250 * cols + 120), height=230 * rows + 80)
    return figure


def lines_figure(weights: torch.Tensor, labels: list[str], title: str = "",
                 query: int | None = None) -> go.Figure:
    """Token-to-token lines: queries on the left, keys on the right, weight as thickness.

    weights: (seq, seq). query: draw only that query's lines (None: every query).
    """
    seq = len(labels)
    queries = range(seq) if query is None else [query]
    binned = [([], []) for _ in range(LINE_BINS)]
    for q in queries:
        for k in range(seq):
            w = float(weights[q, k])
            if w < 0.02:  # too faint to see; skipping keeps the figure light
                continue
            xs, ys = binned[min(LINE_BINS - 1, int(w * LINE_BINS))]
            xs += [0, 1, None]
            ys += [-q, -k, None]
    figure = go.Figure()
    for b, (xs, ys) in enumerate(binned):
        strength = (b + 1) / LINE_BINS
        figure.add_trace(go.Scatter(x=xs, y=ys, mode="lines", hoverinfo="skip", showlegend=False,
                                    opacity=0.15 + 0.85 * strength,
                                    line=dict(width=0.5 + 5 * strength, color="#1f77b4")))
    for x, side, anchor in ((0, "query", "middle left"), (1, "key", "middle right")):
        hover = [f"{side} {i}: {labels[i]!r}" for i in range(seq)]
        figure.add_trace(go.Scatter(
            x=[x] * seq, y=[-i for i in range(seq)], mode="markers+text", text=labels,
            textposition=anchor, hovertext=hover, hoverinfo="text", showlegend=False,
            marker=dict(size=6, color="#444")))
    figure.update_layout(title=title, width=420, height=min(900, 120 + 24 * seq),
                         xaxis=dict(visible=False, range=[-0.6, 1.6]),
                         yaxis=dict(visible=False), plot_bgcolor="white")
    return figure


class AttentionView(View):
    """Attention heatmap / lines with layer and head selectors.

    `weights`: (layers, heads, seq, seq) float32. Controls (live): `layer` (Dropdown of
    layer numbers), `head` (Dropdown: "all" or a head number), `style` ("heatmap" or
    "lines"), `query` ("all" or a query position, used by the lines style).
    """

    def __init__(self, weights: torch.Tensor, labels: list[str], layer: int = 0,
                 head: int | str = "all", style: str = "heatmap", live: bool | None = None):
        super().__init__(live)
        self.weights, self.labels = weights, labels
        layers, heads, seq, _ = weights.shape
        if len(labels) != seq:
            raise ValueError(f"Got {len(labels)} token labels for a sequence of {seq} tokens.")
        if not 0 <= layer < layers:
            raise ValueError(f"layer must be in 0..{layers - 1}, got {layer}.")
        if head != "all" and not (isinstance(head, int) and 0 <= head < heads):
            raise ValueError(f"head must be 'all' or in 0..{heads - 1}, got {head!r}.")
        if style not in ("heatmap", "lines"):
            raise ValueError(f"style must be 'heatmap' or 'lines', got {style!r}.")
        self.state = dict(layer=layer, head=head, style=style, query="all")
        self.figure = self.new_figure(go.Figure())
        if self.live:
            import ipywidgets as widgets

            self.controls = {
                "layer": widgets.Dropdown(options=list(range(layers)), value=layer,
                                          description="layer"),
                "head": widgets.Dropdown(options=["all"] + list(range(heads)), value=head,
                                         description="head"),
                "style": widgets.ToggleButtons(options=["heatmap", "lines"], value=style),
                "query": widgets.Dropdown(options=["all"] + list(range(seq)), value="all",
                                          description="query"),
            }
            for name, control in self.controls.items():
                control.observe(lambda change, name=name: self.set(**{name: change["new"]}),
                                names="value")
            self.widget = widgets.VBox([widgets.HBox(list(self.controls.values())), self.figure])
        self.redraw()

    def set(self, **changes) -> None:
        """Change any of layer, head, style, query and redraw."""
        self.state.update(changes)
        self.redraw()

    def redraw(self) -> None:
        """Draw the current selection into `self.figure`, in place."""
        layer, head, style = self.state["layer"], self.state["head"], self.state["style"]
        query = None if self.state["query"] == "all" else self.state["query"]
        if style == "heatmap" and head == "all":
            new = grid_figure(self.weights[layer], self.labels, f"layer {layer}, every head")
        elif style == "heatmap":
            new = heatmap_figure(self.weights[layer, head], self.labels,
                                 f"layer {layer}, head {head}")
        else:
            weights = self.weights[layer].mean(0) if head == "all" else self.weights[layer, head]
            which = "mean of heads" if head == "all" else f"head {head}"
            new = lines_figure(weights, self.labels, f"layer {layer}, {which}", query)
        replace_figure(self.figure, new)

    def summary(self) -> str:
        layers, heads, seq, _ = self.weights.shape
        layer, head = self.state["layer"], self.state["head"]
        weights = self.weights[layer].mean(0) if head == "all" else self.weights[layer, head]
        strongest = [f"{self.labels[q]!r}->{self.labels[int(weights[q].argmax())]!r}"
                     for q in range(seq)]
        return (f"attention: {layers} layers x {heads} heads over {seq} tokens; "
                f"layer {layer}, head {head}, each query's strongest key: " + ", ".join(strongest))


def attention(source, text_or_ids=None, *, tokenizer=None, tokens: list[str] | None = None,
              layer: int = 0, head: int | str = "all", style: str = "heatmap",
              batch_index: int = 0, live: bool | None = None) -> AttentionView:
    """Show attention weights with layer / head selectors, as a heatmap or lines.

    source: an llmkit GPT (anything with `attention_maps(idx)`), with `text_or_ids` (a str,
      which needs `tokenizer`, or token ids); or the attention itself, a per-layer tuple of
      tensors shaped (batch, heads, seq, seq), labelled by `tokens` (one str per position).
    layer, head ("all" for a grid of every head), style ("heatmap" or "lines"): the first view.
    live: force widget (True) or static figure (False); None decides from the front end.
    Returns an `AttentionView`.
    """
    if hasattr(source, "attention_maps"):
        if text_or_ids is None:
            raise ValueError("Pass the text (or token ids) to run the model on: "
                             "attention(model, 'Once upon a time', tokenizer=tok).")
        maps, labels = model_attention(source, text_or_ids, tokenizer)
        weights = check_maps(maps)
    else:
        weights = check_maps(source, batch_index)
        seq = weights.shape[-1]
        if tokens is None and isinstance(text_or_ids, (list, tuple)):
            tokens = text_or_ids  # attention(maps, ["The", " cat", ...]) reads naturally
        labels = [str(t) for t in tokens] if tokens is not None else [str(i) for i in range(seq)]
    return AttentionView(weights, labels, layer=layer, head=head, style=style, live=live)
