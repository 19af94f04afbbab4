"""Embedding projector (lesson 03): vectors projected to 2D or 3D, with hover labels,
colour by category, nearest neighbours, and a slider over training checkpoints.

A model's token embeddings are a (vocab, d_model) matrix: one point per token in
d_model dimensions. PCA (computed here with `torch.linalg.svd`, and checked against
NumPy's eigendecomposition in the tests) keeps the 2 or 3 directions along which the
points spread most. Nearest neighbours are measured in the full space by cosine
similarity, not in the projection, which distorts distances.

Pass a list (or dict) of snapshots, e.g. the embedding matrix saved at several
checkpoints, and a slider steps through them: the space organising as training goes.
"""

from __future__ import annotations

import plotly.graph_objects as go
import torch
from torch import nn

from .display import View, escape, replace_figure

PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf")


def embedding_matrix(source) -> torch.Tensor:
    """The (n, d) float32 CPU matrix to project, from a tensor/array or a model.

    For a model: its `token_embedding` weight, else its first `nn.Embedding`'s weight.
    """
    if isinstance(source, nn.Module):
        table = getattr(source, "token_embedding", None)
        if not isinstance(table, nn.Embedding):
            table = next((m for m in source.modules() if isinstance(m, nn.Embedding)), None)
        if table is None:
            raise ValueError(f"{type(source).__name__} has no nn.Embedding to show; "
                             "pass the (n, d) matrix instead.")
        source = table.weight
    matrix = torch.as_tensor(source).detach().float().cpu()
    if matrix.dim() != 2 or matrix.shape[0] < 2:
        raise ValueError(f"Expected an (n, d) matrix with n >= 2 points, got shape "
                         f"{tuple(matrix.shape)}.")
    return matrix


def pca(x: torch.Tensor, dims: int = 2) -> torch.Tensor:
    """Project x: (n, d) onto its top `dims` principal components -> (n, dims).

    Each component's sign is fixed so that its largest-magnitude coordinate is positive
    (PCA alone leaves the sign arbitrary). A space with fewer than `dims` directions is
    padded with zeros.
    """
    if dims < 1:
        raise ValueError(f"dims must be at least 1, got {dims}.")
    centred = x.double() - x.double().mean(0)
    u, s, _ = torch.linalg.svd(centred, full_matrices=False)
    keep = min(dims, s.shape[0])
    coords = u[:, :keep] * s[:keep]
    picks = coords.abs().argmax(0)
    signs = torch.sign(coords[picks, torch.arange(keep)])
    coords = coords * torch.where(signs == 0, 1.0, signs).to(coords.dtype)
    if keep < dims:
        coords = torch.cat([coords, coords.new_zeros(x.shape[0], dims - keep)], dim=1)
    return coords.float()


def nearest_neighbours(vectors: torch.Tensor, index: int, k: int = 8) -> list[tuple[int, float]]:
    """The k rows most similar to row `index` by cosine similarity, best first.

    vectors: (n, d). Returns [(row, similarity), ...], without `index` itself.
    """
    n = vectors.shape[0]
    if not 0 <= index < n:
        raise ValueError(f"index must be in 0..{n - 1}, got {index}.")
    unit = nn.functional.normalize(vectors.float(), dim=1)
    similarity = unit @ unit[index]
    similarity[index] = -float("inf")
    top = similarity.topk(min(k, n - 1))
    return [(int(i), float(v)) for v, i in zip(top.values, top.indices)]


def _named_snapshots(source) -> dict[str, torch.Tensor]:
    if isinstance(source, dict):
        items = list(source.items())
    elif isinstance(source, (list, tuple)):
        items = [(f"snapshot {i}", s) for i, s in enumerate(source)]
    else:
        items = [("", source)]
    if not items:
        raise ValueError("Got no snapshots: pass a matrix, a model, or a non-empty list of them.")
    snapshots = {str(name): embedding_matrix(s) for name, s in items}
    shapes = {tuple(m.shape) for m in snapshots.values()}
    if len(shapes) != 1:
        raise ValueError(f"Every snapshot must have the same shape, got {sorted(shapes)}.")
    return snapshots


def _aligned_projections(snapshots: dict[str, torch.Tensor]) -> dict[int, dict[str, torch.Tensor]]:
    """PCA of every snapshot in 2 and 3 dims, each component's sign flipped to agree with the
    previous snapshot's, so the slider shows points moving rather than mirror images."""
    projections = {}
    for dims in (2, 3):
        previous, per_snapshot = None, {}
        for name, matrix in snapshots.items():
            coords = pca(matrix, dims)
            if previous is not None:
                agree = (coords * previous).sum(0)
                coords = coords * torch.where(agree < 0, -1.0, 1.0)
            per_snapshot[name] = previous = coords
        projections[dims] = per_snapshot
    return projections


class EmbeddingsView(View):
    """2D/3D projection of one or more embedding snapshots.

    Controls (live): `dims` (2 or 3), `colour` ("none" or a category name), `search` (a
    label whose neighbours to highlight), `snapshot` (slider over snapshots, when there
    are several). `neighbours` holds the current [(label, similarity), ...].
    """

    def __init__(self, source, labels=None, categories=None, dims: int = 2, k: int = 8,
                 search: str = "", live: bool | None = None):
        super().__init__(live)
        self.snapshots = _named_snapshots(source)
        n = next(iter(self.snapshots.values())).shape[0]
        if labels is not None and hasattr(labels, "encode"):  # a tokenizer
            labels = list(labels.token_pieces(list(range(n))))
        self.labels = [str(x) for x in labels] if labels is not None else [str(i) for i in range(n)]
        if len(self.labels) != n:
            raise ValueError(f"Got {len(self.labels)} labels for {n} points; give one per row.")
        if categories is not None and not isinstance(categories, dict):
            categories = {"category": categories}
        self.categories = {str(k_): [str(c) for c in v] for k_, v in (categories or {}).items()}
        for name, values in self.categories.items():
            if len(values) != n:
                raise ValueError(f"Category {name!r} has {len(values)} values for {n} points.")
        if dims not in (2, 3):
            raise ValueError(f"dims must be 2 or 3, got {dims}.")
        self.k = k
        self.projections = _aligned_projections(self.snapshots)
        names = list(self.snapshots)
        self.state = dict(dims=dims, colour=next(iter(self.categories), "none"),
                          search=search, snapshot=names[-1])
        self.neighbours: list[tuple[str, float]] = []
        self.figure = self.new_figure(go.Figure())
        if self.live:
            import ipywidgets as widgets

            self.controls = {
                "dims": widgets.ToggleButtons(options=[2, 3], value=dims, description="dims"),
                "colour": widgets.Dropdown(options=["none"] + list(self.categories),
                                           value=self.state["colour"], description="colour"),
                "search": widgets.Combobox(value=search, options=sorted(set(self.labels))[:2000],
                                           placeholder="a token", description="neighbours of"),
            }
            if len(names) > 1:
                self.controls["snapshot"] = widgets.SelectionSlider(
                    options=names, value=names[-1], description="checkpoint",
                    layout=widgets.Layout(width="420px"))
            for name, control in self.controls.items():
                control.observe(lambda change, name=name: self.set(**{name: change["new"]}),
                                names="value")
            self.neighbour_list = widgets.HTML()
            self.widget = widgets.VBox([widgets.HBox(list(self.controls.values())[:3]),
                                        *list(self.controls.values())[3:],
                                        widgets.HBox([self.figure, self.neighbour_list])])
        self.redraw()

    def set(self, **changes) -> None:
        """Change any of dims, colour, search, snapshot and redraw."""
        self.state.update(changes)
        self.redraw()

    def find(self, label: str) -> int | None:
        """The row of the first point labelled `label` (or its number), or None."""
        if label in self.labels:
            return self.labels.index(label)
        if label.strip().isdigit() and int(label) < len(self.labels):
            return int(label)
        return None

    def redraw(self) -> None:
        """Draw the current snapshot / dims / colouring / neighbours into the figure."""
        dims, name = self.state["dims"], self.state["snapshot"]
        coords = self.projections[dims][name]
        groups = self.categories.get(self.state["colour"])
        figure = go.Figure()
        kinds = sorted(set(groups)) if groups else [None]
        for c, kind in enumerate(kinds):
            rows = [i for i in range(len(self.labels)) if groups is None or groups[i] == kind]
            figure.add_trace(self._scatter(coords[rows], [self.labels[i] for i in rows],
                                           name=kind or "points", mode="markers",
                                           marker=dict(size=5, color=PALETTE[c % len(PALETTE)],
                                                       opacity=0.7)))
        self.neighbours = []
        row = self.find(self.state["search"]) if self.state["search"] else None
        if row is not None:
            found = nearest_neighbours(self.snapshots[name], row, self.k)
            self.neighbours = [(self.labels[i], s) for i, s in found]
            rows = [row] + [i for i, _ in found]
            figure.add_trace(self._scatter(coords[rows], [self.labels[i] for i in rows],
                                           name="neighbours", mode="markers+text",
                                           marker=dict(size=[12] + [8] * len(found),
                                                       color="black", symbol="circle-open")))
        title = f"token embeddings, PCA to {dims}D" + (f" ({name})" if name else "")
        figure.update_layout(title=title, width=640, height=520, legend=dict(itemsizing="constant"))
        replace_figure(self.figure, figure)
        if self.live:
            self.neighbour_list.value = self.neighbours_html()

    def _scatter(self, coords: torch.Tensor, labels: list[str], **options):
        if coords.shape[1] == 3:
            return go.Scatter3d(x=coords[:, 0].tolist(), y=coords[:, 1].tolist(),
                                z=coords[:, 2].tolist(), text=labels, hoverinfo="text", **options)
        # Thousands of SVG markers get sluggish; WebGL draws a whole GPT-2 vocabulary.
        scatter = go.Scattergl if len(labels) > 5000 else go.Scatter
        return scatter(x=coords[:, 0].tolist(), y=coords[:, 1].tolist(), text=labels,
                       hoverinfo="text", **options)

    def neighbours_html(self) -> str:
        """The current neighbour list as a small HTML table."""
        if not self.state["search"]:
            return "<i>type a token to see its nearest neighbours</i>"
        if not self.neighbours:
            return f"<i>no point labelled {escape(self.state['search'])!s}</i>"
        rows = "".join(f"<tr><td><code>{escape(repr(label))}</code></td><td>{s:.3f}</td></tr>"
                       for label, s in self.neighbours)
        return f"<table><tr><th>neighbour</th><th>cosine</th></tr>{rows}</table>"

    def summary(self) -> str:
        matrix = self.snapshots[self.state["snapshot"]]
        text = (f"embeddings: {matrix.shape[0]} points in {matrix.shape[1]} dims, "
                f"{len(self.snapshots)} snapshot(s), PCA to {self.state['dims']}D")
        if self.neighbours:
            text += f"; nearest to {self.state['search']!r}: " + ", ".join(
                f"{label!r} ({s:.2f})" for label, s in self.neighbours)
        return text


def embeddings(source, labels=None, *, categories=None, dims: int = 2, k: int = 8,
               search: str = "", live: bool | None = None) -> EmbeddingsView:
    """Project embeddings to 2D or 3D with PCA and show them with hover labels.

    source: an (n, d) tensor, a model (its token embeddings), or a list / dict
      (name -> tensor or model) of snapshots, e.g. from checkpoints, shown with a slider.
    labels: one str per row, or a tokenizer (labels = its token pieces).
    categories: one category per row (or a dict name -> list) to colour by.
    dims: 2 or 3. k: how many nearest neighbours to list. search: a label to start with.
    Returns an `EmbeddingsView`.
    """
    return EmbeddingsView(source, labels, categories=categories, dims=dims, k=k, search=search,
                          live=live)
