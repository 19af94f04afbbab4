"""Tokens view (lesson 02): text shown as coloured token spans, with each id on hover.

`tokens(tokenizer, text)` colours each token of `text` in turn, so you can see where a
tokenizer cuts. Pass several tokenizers (a list, or a dict name -> tokenizer) to compare
them side by side on the same text. Live, a text box re-tokenizes as you type.

Works with any object that has `encode(text) -> list[int]` and either
`token_pieces(ids) -> list[str]` (llmkit's tokenizers) or `decode(ids) -> str`.
"""

from __future__ import annotations

from .display import View, escape

# Soft colours that keep black text readable; neighbours always differ.
PALETTE = ("#fde68a", "#bbf7d0", "#bfdbfe", "#fbcfe8", "#ddd6fe", "#fed7aa", "#a5f3fc")


def token_spans(tokenizer, text: str) -> list[tuple[int, str]]:
    """Tokenize `text` and return one `(id, printable piece)` pair per token, in order."""
    if not isinstance(text, str):
        raise ValueError(f"text must be a str, got {type(text).__name__}.")
    ids = list(tokenizer.encode(text))
    if hasattr(tokenizer, "token_pieces"):
        pieces = list(tokenizer.token_pieces(ids))
    else:
        pieces = [tokenizer.decode([i]) for i in ids]
    return list(zip(ids, pieces))


def spans_html(spans: list[tuple[int, str]], name: str = "") -> str:
    """HTML for one tokenizer's spans: a header with counts, then the coloured tokens."""
    cells = []
    for position, (token_id, piece) in enumerate(spans):
        shown = piece.replace("\n", "\u21b5\n")  # make line breaks visible, then break
        colour = PALETTE[position % len(PALETTE)]
        cells.append(
            f'<span class="llmkit-token" title="id {token_id} | {escape(repr(piece))}" '
            f'style="background:{colour};border-radius:3px;padding:1px 0;margin-right:1px">'
            f"{escape(shown)}</span>"
        )
    header = f"<b>{escape(name)}</b> " if name else ""
    chars = sum(len(piece) for _, piece in spans)
    per_token = f", {chars / len(spans):.2f} chars/token" if spans else ""
    return (
        f'<div class="llmkit-tokens" style="margin:4px 0">'
        f'<div style="font-size:90%;color:#555">{header}{len(spans)} tokens{per_token}</div>'
        f'<div style="font-family:monospace;white-space:pre-wrap;line-height:1.9">'
        f'{"".join(cells)}</div></div>'
    )


def _named(tokenizers) -> dict:
    if isinstance(tokenizers, dict):
        named = dict(tokenizers)
    elif isinstance(tokenizers, (list, tuple)):
        named = {type(t).__name__ + (f" #{i + 1}" if len(tokenizers) > 1 else ""): t
                 for i, t in enumerate(tokenizers)}
    else:
        named = {type(tokenizers).__name__: tokenizers}
    if not named:
        raise ValueError("tokens() needs at least one tokenizer, got an empty collection.")
    for name, tokenizer in named.items():
        if not (hasattr(tokenizer, "encode") and hasattr(tokenizer, "decode")):
            raise ValueError(
                f"{name!r} is a {type(tokenizer).__name__}, not a tokenizer: expected an "
                "object with .encode(text) and .decode(ids), e.g. llmkit.tokenizers.CharTokenizer."
            )
    return named


class TokensView(View):
    """Coloured token spans for one or more tokenizers; live, a text box drives them all.

    Attributes: `tokenizers` (name -> tokenizer), `spans` (name -> list of (id, piece)),
    `controls["text"]` (live: the Textarea), `outputs` (live: name -> HTML widget).
    """

    def __init__(self, tokenizers, text: str, live: bool | None = None):
        super().__init__(live)
        self.tokenizers = _named(tokenizers)
        self.text = ""
        self.spans: dict = {}
        self.outputs: dict = {}
        if self.live:
            import ipywidgets as widgets

            box = widgets.Textarea(value=text, layout=widgets.Layout(width="100%", height="70px"))
            self.controls["text"] = box
            self.outputs = {name: widgets.HTML() for name in self.tokenizers}
            columns = widgets.HBox(
                [widgets.Box([html], layout=widgets.Layout(flex="1 1 0", padding="0 6px"))
                 for html in self.outputs.values()]
            )
            self.widget = widgets.VBox([box, columns])
            box.observe(lambda change: self.set_text(change["new"], typed=True), names="value")
        self.set_text(text)

    def set_text(self, text: str, typed: bool = False) -> None:
        """Re-tokenize `text` with every tokenizer and redraw.

        A tokenizer that cannot encode the text (a character tokenizer meeting a character
        it never saw) shows its error in its own column when the text was typed into the
        box (`typed`), so the others still update; otherwise the error is raised.
        """
        self.text = text
        self.spans, problems = {}, {}
        for name, tokenizer in self.tokenizers.items():
            try:
                self.spans[name] = token_spans(tokenizer, text)
            except ValueError as error:
                if not typed:
                    raise
                problems[name] = str(error)
        for name, html_widget in self.outputs.items():
            if name in problems:
                html_widget.value = (f'<div style="font-size:90%"><b>{escape(name)}</b> '
                                     f'<span style="color:#b91c1c">{escape(problems[name])}'
                                     "</span></div>")
            else:
                html_widget.value = spans_html(self.spans[name], name)

    def static_html(self) -> str:
        columns = "".join(
            f'<div style="flex:1 1 0;padding:0 6px">{spans_html(spans, name)}</div>'
            for name, spans in self.spans.items()
        )
        return f'<div style="display:flex">{columns}</div>'

    def summary(self) -> str:
        lines = []
        for name, spans in self.spans.items():
            pieces = " | ".join(piece for _, piece in spans)
            lines.append(f"{name}: {len(spans)} tokens: {pieces}")
        return "\n".join(lines)


def tokens(tokenizer, text: str, *, live: bool | None = None) -> TokensView:
    """Show `text` as coloured token spans, ids on hover.

    tokenizer: one tokenizer, or a list / dict (name -> tokenizer) to compare side by side.
    text: the string to tokenize. live: force widget (True) or static (False) mode.
    Returns a `TokensView`; it displays itself when it is the last value of a cell.
    """
    return TokensView(tokenizer, text, live=live)
