"""Live widget or static figure: the one decision every view in `llmkit.viz` shares.

A view is live (ipywidgets controls around a plotly `FigureWidget`, redrawn in place) when
it runs in a Jupyter kernel that can talk to widgets. Everywhere else (nbconvert, nbval, a
terminal, CI, or `LLMKIT_STATIC=1`) the same call still returns something useful: a static
plotly figure in a notebook, a text summary in a terminal, and it never needs the internet
(plotly's JavaScript ships inside the JupyterLab extension).

Every view subclasses `View`, which holds the figure, the controls, and knows how to show
itself in each of the three places.
"""

from __future__ import annotations

import html
import json
import os

import plotly.graph_objects as go

STATIC_ENV = "LLMKIT_STATIC"
PLOTLY_MIME = "application/vnd.plotly.v1+json"


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no")


def in_kernel() -> bool:
    """True inside a Jupyter kernel (JupyterLab, nbconvert, nbval), False in a terminal."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    # A terminal IPython has no kernel; a notebook's ZMQInteractiveShell has one.
    return shell is not None and getattr(shell, "kernel", None) is not None


def widgets_available() -> bool:
    """True when views should be live widgets: a kernel, ipywidgets and anywidget present,
    and `$LLMKIT_STATIC` not set. plotly 6+ builds `FigureWidget` on anywidget."""
    if _env_flag(STATIC_ENV) or not in_kernel():
        return False
    try:
        import anywidget  # noqa: F401
        import ipywidgets  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_live(live: bool | None) -> bool:
    """The mode a view runs in: `live` when given (tests force it), else `widgets_available()`."""
    if live is None:
        return widgets_available()
    if not isinstance(live, bool):
        raise ValueError(f"live must be True, False or None (decide automatically), got {live!r}.")
    return live


def replace_figure(target: go.Figure, source: go.Figure) -> None:
    """Make `target` show `source`'s traces and layout, in place.

    On a `FigureWidget` this is one message to the browser (inside `batch_update`), so the
    plot on screen changes instead of a new plot being appended below it.
    """
    with target.batch_update():
        target.data = []
        target.layout = source.layout
        target.add_traces(list(source.data))


def static_bundle(figure: go.Figure, text: str) -> dict:
    """The notebook output for a static figure: plotly's own mime type plus a text fallback.

    JupyterLab draws `application/vnd.plotly.v1+json` with the bundled plotly.js (offline);
    a front end without it shows the text.
    """
    return {PLOTLY_MIME: json.loads(figure.to_json()), "text/plain": text}


def html_bundle(markup: str, text: str) -> dict:
    """The notebook output for a static HTML view, with a text fallback."""
    return {"text/html": markup, "text/plain": text}


def escape(text: str) -> str:
    """HTML-escape `text` for a span, quotes included."""
    return html.escape(text, quote=True)


class View:
    """Base of every view: a figure and/or HTML, the controls that drive it, and its display.

    Subclasses build `self.figure` (a `go.FigureWidget` when live, else a `go.Figure`),
    put their ipywidgets in `self.controls` (name -> widget, live mode only), lay them out
    in `self.widget`, and implement `summary()` (the text shown in a terminal). Tests drive
    a live view by setting `view.controls[name].value` and reading `view.figure.data`.
    """

    def __init__(self, live: bool | None = None):
        self.live = resolve_live(live)
        self.figure: go.Figure | None = None
        self.controls: dict = {}
        self.widget = None

    def new_figure(self, figure: go.Figure) -> go.Figure:
        """Wrap `figure` as a `FigureWidget` in live mode; keep it as is otherwise."""
        return go.FigureWidget(figure) if self.live else figure

    def summary(self) -> str:
        """A short text description of what the view shows (terminal output)."""
        return f"<{type(self).__name__}>"

    def static_html(self) -> str | None:
        """HTML for a static view without a figure (e.g. token spans); None if it has a figure."""
        return None

    def _repr_mimebundle_(self, include=None, exclude=None):
        if self.live and self.widget is not None:
            bundle = self.widget._repr_mimebundle_(include=include, exclude=exclude)
            bundle["text/plain"] = self.summary()
            return bundle
        markup = self.static_html()
        if markup is not None:
            return html_bundle(markup, self.summary())
        return static_bundle(self.figure, self.summary())

    def __repr__(self) -> str:
        return self.summary()

    def show(self) -> None:
        """Display the view in the current notebook cell (or print its summary)."""
        if in_kernel():
            from IPython.display import display

            display(self)
        else:
            print(self.summary())
