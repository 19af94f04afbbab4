"""Training dashboard (lesson 07): live loss, validation loss, learning rate and tokens per
second, beside a progress bar, redrawn in place while `llmkit.train.Trainer` runs.

Pass it as a callback: `Trainer(model, train_ids, val_ids, config, callbacks=[dash]).fit()`.
The Trainer calls `on_train_start`, `on_step` (record: step, loss, lr, tokens_per_sec,
elapsed), `on_eval` (record: step, train_loss, val_loss) and `on_train_end`.

Live, one `FigureWidget` is updated inside `batch_update()` (a single message to the
browser) at most every `redraw_every_s` seconds, so drawing never slows training
measurably and no new figures pile up below the cell. Without a widget front end it prints
one line per evaluation and shows one static figure at the end. The dashboard keeps every
record in `history`; `TrainingDashboard.from_history(history)` redraws a saved run, and
`TrainingDashboard.from_checkpoint(folder)` reads the history a checkpoint keeps.
"""

from __future__ import annotations

import time

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from llmkit.checkpoint import load_checkpoint

from .display import View

# Trace order in the figure: the loss panel holds three, then lr, then throughput.
TRAIN_STEP, TRAIN_EVAL, VAL_EVAL, LEARNING_RATE, THROUGHPUT = range(5)


def _is_eval(record: dict) -> bool:
    return "val_loss" in record


def dashboard_figure() -> go.Figure:
    """The empty three-panel figure: loss, learning rate, tokens per second, by step."""
    figure = make_subplots(rows=1, cols=3, horizontal_spacing=0.08,
                           subplot_titles=("loss", "learning rate", "tokens / second"))
    figure.add_trace(go.Scatter(name="train (per step)", mode="lines",
                                line=dict(color="#9ecae1", width=1)), row=1, col=1)
    figure.add_trace(go.Scatter(name="train (eval)", mode="lines+markers",
                                line=dict(color="#1f77b4")), row=1, col=1)
    figure.add_trace(go.Scatter(name="validation", mode="lines+markers",
                                line=dict(color="#ff7f0e")), row=1, col=1)
    figure.add_trace(go.Scatter(name="lr", mode="lines", showlegend=False,
                                line=dict(color="#2ca02c")), row=1, col=2)
    figure.add_trace(go.Scatter(name="tokens/s", mode="lines", showlegend=False,
                                line=dict(color="#9467bd")), row=1, col=3)
    figure.update_xaxes(title_text="step")
    figure.update_layout(height=330, width=980, margin=dict(t=40, b=40),
                         legend=dict(orientation="h", y=-0.25))
    return figure


class TrainingDashboard(View):
    """A trainer callback that plots the run live and keeps its history.

    total_steps: the run's length for the progress bar (None: read `trainer.config.max_steps`
    at the start, if there is one). redraw_every_s: the shortest time between two redraws.
    Attributes: `history` (every record, step and eval, in order), `figure`, and (live)
    `progress` (IntProgress) and `status` (HTML line under it).
    """

    def __init__(self, total_steps: int | None = None, *, redraw_every_s: float = 0.25,
                 live: bool | None = None):
        super().__init__(live)
        if total_steps is not None and total_steps < 1:
            raise ValueError(f"total_steps must be a positive number of steps, got {total_steps}.")
        if redraw_every_s < 0:
            raise ValueError(f"redraw_every_s must be >= 0 seconds, got {redraw_every_s}.")
        self.total_steps = total_steps
        self.redraw_every_s = redraw_every_s
        self.history: list[dict] = []
        self.redraws = 0
        self.displayed = False
        self._last_draw = float("-inf")
        self.figure = self.new_figure(dashboard_figure())
        if self.live:
            import ipywidgets as widgets

            self.progress = widgets.IntProgress(value=0, min=0, max=total_steps or 1,
                                                description="step", bar_style="info")
            self.status = widgets.HTML()
            self.widget = widgets.VBox([widgets.HBox([self.progress, self.status]), self.figure])

    # --- the callback hooks ---------------------------------------------------------

    def on_train_start(self, trainer) -> None:
        """Take the run length from the trainer, pick up a resumed run's history, show."""
        if self.total_steps is None:
            self.total_steps = getattr(getattr(trainer, "config", None), "max_steps", None)
        if not self.history and getattr(trainer, "history", None):
            self.history = [dict(r) for r in trainer.history]  # resuming: continue the curves
        if self.live:
            self.progress.max = self.total_steps or 1
            if not self.displayed:
                self.show()
            self.redraw()

    def on_step(self, trainer, record: dict) -> None:
        """Keep the record; redraw if the last redraw is older than `redraw_every_s`."""
        self.history.append(dict(record))
        if self.live and time.monotonic() - self._last_draw >= self.redraw_every_s:
            self.redraw()

    def on_eval(self, trainer, record: dict) -> None:
        """Keep the record and redraw now (live) or print one line (static)."""
        self.history.append(dict(record))
        if self.live:
            self.redraw()
        else:
            print(self.eval_line(record))

    def on_train_end(self, trainer) -> None:
        """Final redraw (live), or one static figure / summary for the whole run."""
        self.redraw()
        if not self.live:
            self.show()

    # --- drawing --------------------------------------------------------------------

    def series(self) -> dict[str, tuple[list, list]]:
        """The plotted data: name -> (steps, values), from `history`."""
        steps = [r for r in self.history if not _is_eval(r)]
        evals = [r for r in self.history if _is_eval(r)]

        def column(records, key):
            kept = [r for r in records if r.get(key) is not None]
            return [r["step"] for r in kept], [float(r[key]) for r in kept]

        return {"train_step": column(steps, "loss"), "train_eval": column(evals, "train_loss"),
                "val": column(evals, "val_loss"), "lr": column(steps, "lr"),
                "tokens_per_sec": column(steps, "tokens_per_sec")}

    def redraw(self) -> None:
        """Write the whole history into the figure in one batched update."""
        series = self.series()
        order = ("train_step", "train_eval", "val", "lr", "tokens_per_sec")
        with self.figure.batch_update():
            for trace, name in zip(self.figure.data, order):
                trace.x, trace.y = series[name]
        if self.live:
            step = max((r["step"] for r in self.history), default=0)
            self.progress.max = max(self.total_steps or 1, step)
            self.progress.value = step
            self.status.value = self.status_text()
        self.redraws += 1
        self._last_draw = time.monotonic()

    def status_text(self) -> str:
        """e.g. 'step 120 / 500 | loss 2.314 | val 2.402 | 12.3 s, about 39 s left'."""
        steps = [r for r in self.history if not _is_eval(r)]
        evals = [r for r in self.history if _is_eval(r)]
        if not steps:
            return "waiting for the first step"
        last = steps[-1]
        total = f" / {self.total_steps}" if self.total_steps else ""
        text = f"step {last['step']}{total}"
        if last.get("loss") is not None:
            text += f" | loss {last['loss']:.3f}"
        if evals:
            text += f" | val {evals[-1]['val_loss']:.3f}"
        elapsed = last.get("elapsed")
        if elapsed is not None:
            text += f" | {elapsed:.1f} s"
            if self.total_steps and last["step"] > 0:
                left = elapsed / last["step"] * (self.total_steps - last["step"])
                text += f", about {max(left, 0):.0f} s left"
        return text

    def eval_line(self, record: dict) -> str:
        """One compact printed line per evaluation, with the latest lr and throughput."""
        last = next((r for r in reversed(self.history) if not _is_eval(r)), {})
        line = (f"step {record['step']:>6} | train {record.get('train_loss', float('nan')):.4f}"
                f" | val {record['val_loss']:.4f}")
        if last.get("lr") is not None:
            line += f" | lr {last['lr']:.2e}"
        if last.get("tokens_per_sec") is not None:
            line += f" | {last['tokens_per_sec']:,.0f} tok/s"
        return line

    def show(self) -> None:
        """Display the dashboard once in the current cell (or print its summary)."""
        self.displayed = True
        super().show()

    def _repr_mimebundle_(self, include=None, exclude=None):
        self.displayed = True
        return super()._repr_mimebundle_(include=include, exclude=exclude)

    def summary(self) -> str:
        series = self.series()
        if not series["train_step"][0] and not series["val"][0]:
            return "training dashboard: no steps yet"
        text = f"training dashboard: {len(series['train_step'][0])} steps"
        if series["train_step"][1]:
            text += f", last loss {series['train_step'][1][-1]:.4f}"
        if series["val"][1]:
            text += f", last val loss {series['val'][1][-1]:.4f} (best {min(series['val'][1]):.4f})"
        return text

    @classmethod
    def from_history(cls, history: list[dict], *, total_steps: int | None = None,
                     live: bool | None = None) -> TrainingDashboard:
        """A dashboard drawing a saved history (a list of step and eval records)."""
        if not isinstance(history, (list, tuple)) or not all(isinstance(r, dict) for r in history):
            raise ValueError("history must be a list of dict records, e.g. trainer.history "
                             f"or a checkpoint's history; got {type(history).__name__}.")
        missing = [r for r in history if "step" not in r]
        if missing:
            raise ValueError(f"Every record needs a 'step'; this one has none: {missing[0]}.")
        dashboard = cls(total_steps=total_steps, live=live)
        dashboard.history = [dict(r) for r in history]
        dashboard.redraw()
        return dashboard

    @classmethod
    def from_checkpoint(cls, path, *, live: bool | None = None) -> TrainingDashboard:
        """A dashboard drawing the history kept in a checkpoint folder (Trainer.save_checkpoint)."""
        checkpoint = load_checkpoint(path)
        history = (checkpoint.state or {}).get("history")
        if history is None:
            raise ValueError(f"The checkpoint in {path} holds no training history (weights only); "
                             "save it with Trainer.save_checkpoint to keep the history.")
        total_steps = (checkpoint.train_config or {}).get("max_steps")
        return cls.from_history(history, total_steps=total_steps, live=live)
