"""bertviz's head and model views (lesson 05), fed by an llmkit model. Online only.

bertviz (https://github.com/jessevig/bertviz) draws attention as lines between tokens,
for one layer (`head_view`) or every layer and head at once (`model_view`). Its HTML
loads require.js, d3 and jQuery from a CDN (cdnjs.cloudflare.com), so the view only draws
when the browser can reach the internet; offline it shows an empty box (and "require is
not defined" in the browser console). `llmkit.viz.attention` shows the same weights
offline.

bertviz 1.4 wants exactly a tuple with one torch tensor per layer, each shaped
(1, heads, seq, seq); numpy arrays, 3-D tensors or a batch above 1 fail deep inside it with
misleading messages, so `to_bertviz_attention` validates and converts first.
"""

from __future__ import annotations

import torch

from .attention import check_maps, model_attention


def to_bertviz_attention(maps, batch_index: int = 0) -> tuple[torch.Tensor, ...]:
    """Convert attention to the layout bertviz takes.

    maps: one tensor or array per layer, each (batch, heads, seq, seq) or (heads, seq, seq)
    -> a tuple with one float32 CPU tensor (1, heads, seq, seq) per layer, for the sequence
    `batch_index`. Raises ValueError for any other shape.
    """
    stacked = check_maps(maps, batch_index)  # (layers, heads, seq, seq)
    return tuple(layer.unsqueeze(0).contiguous() for layer in stacked)


def bertviz(source, text_or_ids=None, *, tokenizer=None, tokens: list[str] | None = None,
            view: str = "head", batch_index: int = 0):
    """bertviz's `head_view` or `model_view` of an llmkit model's attention.

    source: an llmkit GPT with `text_or_ids` (a str needs `tokenizer`), or the attention
      itself (per-layer tuple (batch, heads, seq, seq)) labelled by `tokens`.
    view: "head" (one layer, pick heads by colour) or "model" (every layer x head).
    Returns bertviz's `IPython.display.HTML`, which draws in a notebook only when the
    browser can load require.js and d3 from cdnjs.cloudflare.com (an internet connection).
    """
    if view not in ("head", "model"):
        raise ValueError(f"view must be 'head' or 'model', got {view!r}.")
    if hasattr(source, "attention_maps"):
        if text_or_ids is None:
            raise ValueError("Pass the text (or token ids) to run the model on: "
                             "bertviz(model, 'Once upon a time', tokenizer=tok).")
        maps, labels = model_attention(source, text_or_ids, tokenizer)
    else:
        maps = source
        if tokens is None and isinstance(text_or_ids, (list, tuple)):
            tokens = text_or_ids
        labels = None if tokens is None else [str(t) for t in tokens]
    attention = to_bertviz_attention(maps, batch_index)
    seq = attention[0].shape[-1]
    labels = labels if labels is not None else [str(i) for i in range(seq)]
    if len(labels) != seq:
        raise ValueError(f"Got {len(labels)} token labels for a sequence of {seq} tokens.")

    from bertviz import head_view, model_view  # imported late: only this view needs it

    draw = head_view if view == "head" else model_view
    # prettify_tokens would strip GPT-2's "Ġ" marker, which our labels never carry.
    return draw(attention=attention, tokens=labels, prettify_tokens=False, html_action="return")
