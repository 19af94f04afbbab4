"""Next-token explorer (lesson 08): the model's top next-token probabilities as bars, with
temperature / top-k / top-p controls that redraw them, and a button that samples a token
and appends it to the prompt.

Two bars per token: grey is the model's own distribution (softmax of the logits), blue is
the distribution `llmkit.generate` actually samples from after temperature, top-k and top-p
(computed by `llmkit.generate.next_token_probs`, so the picture and the sampler agree).
"""

from __future__ import annotations

import plotly.graph_objects as go
import torch

from llmkit.evaluate import eval_mode
from llmkit.generate import next_token_probs

from .attention import encode_input, token_labels
from .display import View, escape, replace_figure


def _options(temperature: float, top_k: int | None, top_p: float | None) -> dict:
    # The controls use 0 for "top-k off" and 1.0 for "top-p off"; the sampler uses None.
    return dict(temperature=float(temperature), top_k=int(top_k) if top_k else None,
                top_p=float(top_p) if top_p is not None and top_p < 1.0 else None)


class NextTokenView(View):
    """Bars of next-token probabilities for a prompt, with sampling controls.

    Attributes: `ids` (the prompt plus sampled tokens), `prompt_length`, `raw_probs` and
    `probs` ((vocab,) tensors: the model's distribution, and the one sampled from), `shown`
    (the token ids in the bars, most likely first). Controls (live): `temperature`, `top_k`
    (0 = off), `top_p` (1.0 = off), `sample` and `reset` buttons.
    """

    def __init__(self, model, tokenizer, prompt, *, k: int = 10, temperature: float = 1.0,
                 top_k: int | None = None, top_p: float | None = None, seed: int = 0,
                 live: bool | None = None):
        super().__init__(live)
        if not callable(model):
            raise ValueError("model must map idx (1, seq) to (logits, loss), "
                             f"got {type(model).__name__}.")
        if k < 1:
            raise ValueError(f"k (how many bars to show) must be at least 1, got {k}.")
        self.model, self.tokenizer, self.k = model, tokenizer, k
        self.ids = encode_input(prompt, tokenizer)
        self.prompt_length = len(self.ids)
        self.state = dict(temperature=temperature, top_k=top_k or 0,
                          top_p=1.0 if top_p is None else top_p)
        self.generator = torch.Generator().manual_seed(seed)
        self.figure = self.new_figure(go.Figure())
        if self.live:
            import ipywidgets as widgets

            vocab = len(self.logits())
            self.controls = {
                "temperature": widgets.FloatSlider(value=temperature, min=0.0, max=2.0, step=0.05,
                                                   description="temperature"),
                "top_k": widgets.IntSlider(value=top_k or 0, min=0, max=min(vocab, 100),
                                           description="top-k"),
                "top_p": widgets.FloatSlider(value=self.state["top_p"], min=0.05, max=1.0,
                                             step=0.05, description="top-p"),
            }
            for name, control in self.controls.items():
                control.observe(lambda change, name=name: self.set(**{name: change["new"]}),
                                names="value")
            self.controls["sample"] = widgets.Button(description="sample a token",
                                                     button_style="primary")
            self.controls["reset"] = widgets.Button(description="reset")
            self.controls["sample"].on_click(lambda _: self.sample())
            self.controls["reset"].on_click(lambda _: self.reset())
            self.text = widgets.HTML()
            sliders = [self.controls[n] for n in ("temperature", "top_k", "top_p")]
            buttons = [self.controls["sample"], self.controls["reset"]]
            self.widget = widgets.VBox([widgets.HBox(sliders), widgets.HBox(buttons), self.text,
                                        self.figure])
        self.redraw()

    def logits(self) -> torch.Tensor:
        """(vocab,) float32 logits for the token after `ids` (cropped to the model's context)."""
        context = getattr(getattr(self.model, "config", None), "context_length", None)
        ids = self.ids[-context:] if context else self.ids
        parameters = getattr(self.model, "parameters", None)
        device = next(parameters()).device if parameters else torch.device("cpu")
        idx = torch.tensor([ids], dtype=torch.long, device=device)
        is_module = isinstance(self.model, torch.nn.Module)
        with eval_mode(self.model) if is_module else torch.no_grad():
            logits, _ = self.model(idx)
        return logits[0, -1].float().cpu()

    def set(self, **changes) -> None:
        """Change temperature, top_k or top_p and redraw."""
        self.state.update(changes)
        self.redraw()

    def redraw(self) -> None:
        """Recompute both distributions and redraw the bars and the text."""
        logits = self.logits()
        self.raw_probs = logits.softmax(-1)
        self.probs = next_token_probs(logits[None], **_options(**self.state))[0]
        # Most likely first under the sampling distribution, the model's own breaking ties.
        order = sorted(range(len(logits)), key=lambda i: (-float(self.probs[i]),
                                                          -float(self.raw_probs[i])))
        self.shown = order[: self.k]
        labels = [repr(p) for p in token_labels(self.tokenizer, self.shown)]
        rows = list(range(len(self.shown)))
        figure = go.Figure([
            go.Bar(y=rows, x=[float(self.raw_probs[i]) for i in self.shown], orientation="h",
                   name="model (softmax of logits)", marker_color="#c7c7c7"),
            go.Bar(y=rows, x=[float(self.probs[i]) for i in self.shown], orientation="h",
                   name="sampled from", marker_color="#1f77b4"),
        ])
        options = _options(**self.state)
        title = (f"next token after {len(self.ids)} tokens (temperature {options['temperature']:g}"
                 f", top-k {options['top_k'] or 'off'}, top-p {options['top_p'] or 'off'})")
        figure.update_layout(title=title, barmode="group", width=640,
                             height=140 + 32 * len(rows), xaxis=dict(title="probability",
                                                                     range=[0, 1]),
                             yaxis=dict(tickmode="array", tickvals=rows, ticktext=labels,
                                        autorange="reversed"),
                             legend=dict(orientation="h", y=-0.2))
        replace_figure(self.figure, figure)
        if self.live:
            self.text.value = self.text_html()

    def sample(self) -> int:
        """Draw one token from `probs`, append it to `ids`, redraw; returns its id."""
        token = int(torch.multinomial(self.probs, 1, generator=self.generator))
        self.ids.append(token)
        self.redraw()
        return token

    def reset(self) -> None:
        """Drop the sampled tokens, back to the prompt."""
        del self.ids[self.prompt_length:]
        self.redraw()

    def decoded(self, ids: list[int]) -> str:
        """The text of `ids`, with the tokenizer's decode when it has one."""
        if hasattr(self.tokenizer, "decode"):
            return self.tokenizer.decode(ids)
        return "".join(token_labels(self.tokenizer, ids))

    def text_html(self) -> str:
        """The prompt, then the sampled tokens highlighted."""
        prompt, added = self.ids[: self.prompt_length], self.ids[self.prompt_length:]
        return (f'<div style="font-family:monospace;white-space:pre-wrap">'
                f'{escape(self.decoded(prompt))}<span style="background:#bfdbfe">'
                f'{escape(self.decoded(added)) if added else ""}</span></div>')

    def summary(self) -> str:
        pieces = token_labels(self.tokenizer, self.shown)
        top = ", ".join(f"{p!r} {float(self.probs[i]):.3f}" for p, i in zip(pieces, self.shown))
        return f"next token after {len(self.ids)} tokens: {top}"


def next_token(model, tokenizer, prompt, *, k: int = 10, temperature: float = 1.0,
               top_k: int | None = None, top_p: float | None = None, seed: int = 0,
               live: bool | None = None) -> NextTokenView:
    """Show the `k` most likely next tokens after `prompt`, with sampling controls.

    model: maps idx (1, seq) int64 -> (logits (1, seq, vocab), loss), like llmkit's GPT.
    tokenizer: encodes `prompt` (a str; token ids work too) and labels the bars.
    temperature, top_k (None/0 = off), top_p (None/1.0 = off): the starting settings.
    seed: seeds the sampling button's generator. Returns a `NextTokenView`.
    """
    return NextTokenView(model, tokenizer, prompt, k=k, temperature=temperature, top_k=top_k,
                         top_p=top_p, seed=seed, live=live)
