"""llmkit.viz: every view builds from a tiny model, its controls change what it shows, and
static mode returns a figure or text instead of raising.

Views are driven the way a learner drives them: by setting the ipywidgets' values from
Python, then reading the figure's data. The reference numbers come from elsewhere: the
model's own forward pass and attention maps, torch.softmax, NumPy's eigendecomposition
for PCA, brute-force loops for neighbours and nucleus filtering, the Trainer's history.
"""

from __future__ import annotations

import math

import numpy as np
import plotly.graph_objects as go
import pytest
import torch

import llmkit.viz as viz
from llmkit.model import GPT, GPTConfig
from llmkit.tokenizers import CharTokenizer
from llmkit.train import TrainConfig, Trainer
from llmkit.viz import display

TEXT = "the cat sat on the mat. the dog ran to the cat."


class WordTokenizer:
    """A stand-in tokenizer: one id per distinct word or space, no token_pieces."""

    def __init__(self, text):
        self.words = sorted(set(text.replace(" ", "  ").split(" ")) | {" "})

    def encode(self, text):
        out = []
        for i, word in enumerate(text.split(" ")):
            if i:
                out.append(self.words.index(" "))
            if word:
                out.append(self.words.index(word))
        return out

    def decode(self, ids):
        return "".join(self.words[i] for i in ids)


@pytest.fixture(scope="module")
def tokenizer():
    return CharTokenizer.train(TEXT)


@pytest.fixture(scope="module")
def model(tokenizer):
    torch.manual_seed(0)
    config = GPTConfig(vocab_size=tokenizer.vocab_size, context_length=16, n_layer=2, n_head=2,
                       d_model=32)
    return GPT(config).eval()


def reference_maps(model, ids):
    with torch.no_grad():
        return model.attention_maps(torch.tensor([ids]))


def reference_logits(model, ids):
    with torch.no_grad():
        logits, _ = model(torch.tensor([ids]))
    return logits[0, -1]


# --- display: the live-or-static decision ----------------------------------------------


def test_live_needs_a_kernel_and_no_static_flag(monkeypatch):
    monkeypatch.delenv("LLMKIT_STATIC", raising=False)
    assert display.in_kernel() is False  # pytest is not a Jupyter kernel
    assert viz.widgets_available() is False
    monkeypatch.setattr(display, "in_kernel", lambda: True)
    assert viz.widgets_available() is True
    monkeypatch.setenv("LLMKIT_STATIC", "1")
    assert viz.widgets_available() is False
    with pytest.raises(ValueError, match="live must be"):
        display.resolve_live("yes")


def test_static_view_renders_a_plotly_bundle_and_text(model, tokenizer):
    view = viz.attention(model, "the cat", tokenizer=tokenizer, head=0)
    assert view.live is False and type(view.figure) is go.Figure
    bundle = view._repr_mimebundle_()
    assert bundle["text/plain"] == repr(view) and "attention: 2 layers x 2 heads" in repr(view)
    plotted = bundle[display.PLOTLY_MIME]["data"][0]["z"]
    expected = reference_maps(model, tokenizer.encode("the cat"))[0][0, 0]
    assert plotted[3][1] == pytest.approx(float(expected[3, 1]))


def test_replace_figure_updates_a_figure_widget_in_place():
    widget = go.FigureWidget(go.Figure(go.Bar(y=[1, 2])))
    source = go.Figure([go.Scatter(y=[3, 4]), go.Scatter(y=[5])])
    source.update_layout(title="new")
    display.replace_figure(widget, source)
    assert [t.type for t in widget.data] == ["scatter", "scatter"]
    assert list(widget.data[1].y) == [5] and widget.layout.title.text == "new"


# --- tokens ----------------------------------------------------------------------------


def test_tokens_spans_follow_the_tokenizer_and_escape_html():
    tokenizer = CharTokenizer.train(TEXT + "<b>/")
    view = viz.tokens(tokenizer, "<b>a</b>")
    ids = tokenizer.encode("<b>a</b>")
    assert view.spans == {"CharTokenizer": [(i, c) for i, c in zip(ids, "<b>a</b>")]}
    markup = view._repr_mimebundle_()["text/html"]
    assert "><</span>" not in markup and ">&lt;</span>" in markup and ">&gt;</span>" in markup
    assert markup.count('class="llmkit-token"') == len(ids)
    assert all(f'title="id {i} ' in markup for i in ids)


def test_tokens_compares_two_tokenizers_and_follows_the_text_box(tokenizer):
    words = WordTokenizer(TEXT)
    view = viz.tokens({"chars": tokenizer, "words": words}, "the cat", live=True)
    view.controls["text"].value = "the dog ran"
    assert [p for _, p in view.spans["chars"]] == list("the dog ran")
    assert [i for i, _ in view.spans["words"]] == words.encode("the dog ran")
    assert [p for _, p in view.spans["words"]] == ["the", " ", "dog", " ", "ran"]
    assert "5 tokens" in view.outputs["words"].value and "11 tokens" in view.outputs["chars"].value
    with pytest.raises(ValueError, match="not a tokenizer"):
        viz.tokens("not a tokenizer", "text")


# --- attention -------------------------------------------------------------------------


def test_attention_heatmap_shows_the_models_maps_and_follows_the_selectors(model, tokenizer):
    text = "the dog ran"
    ids = tokenizer.encode(text)
    maps = reference_maps(model, ids)
    view = viz.attention(model, text, tokenizer=tokenizer, head=0, live=True)
    assert isinstance(view.figure, go.FigureWidget)

    def shown(trace):
        return torch.tensor([[math.nan if v is None else v for v in row] for row in trace.z])

    for layer in (1, 0):
        for head in (1, 0):
            view.controls["layer"].value, view.controls["head"].value = layer, head
            z = shown(view.figure.data[0])
            weights = maps[layer][0, head]
            below = torch.ones_like(weights, dtype=torch.bool).tril()
            torch.testing.assert_close(z[below], weights[below])
            assert z[~below].isnan().all()  # the causal mask: nothing after the query
            assert view.figure.layout.title.text == f"layer {layer}, head {head}"
    view.controls["head"].value = "all"
    assert len(view.figure.data) == model.config.n_head
    torch.testing.assert_close(shown(view.figure.data[1]).nan_to_num(0.0), maps[0][0, 1])


def test_attention_lines_draw_one_line_per_visible_weight(model, tokenizer):
    ids = tokenizer.encode("the cat sat")
    weights = reference_maps(model, ids)[1][0, 0]
    view = viz.attention(model, ids, tokenizer=tokenizer, layer=1, head=0, style="lines",
                         live=True)

    def segments():
        ys = [y for trace in view.figure.data if trace.mode == "lines" for y in trace.y]
        return [(-ys[i], -ys[i + 1]) for i in range(0, len(ys), 3)]

    expected = {(q, k) for q in range(len(ids)) for k in range(len(ids)) if weights[q, k] >= 0.02}
    assert sorted(segments()) == sorted(expected)
    view.controls["query"].value = 4
    assert {q for q, _ in segments()} == {4}
    view.controls["style"].value = "heatmap"
    assert view.figure.data[0].type == "heatmap"


def test_attention_from_raw_tensors_accepts_the_bertviz_layout():
    torch.manual_seed(1)
    dense = tuple(torch.rand(2, 3, 4, 4).softmax(-1) for _ in range(2))  # not causal
    view = viz.attention(dense, ["a", "b", "c", "d"], batch_index=1, layer=1, head=2)
    z = torch.tensor(view.figure.data[0].z)
    torch.testing.assert_close(z, dense[1][1, 2])  # no cell blanked: nothing was masked
    assert list(view.figure.layout.xaxis.ticktext) == ["a", "b", "c", "d"]
    numpy_maps = [m.numpy()[0] for m in dense]  # (heads, seq, seq) arrays work too
    assert viz.attention(numpy_maps, head=0).weights.shape == (2, 3, 4, 4)


@pytest.mark.parametrize("bad, message", [
    ((torch.rand(4, 4),), "Layer 0"),
    ((torch.rand(1, 2, 4, 5),), "last two sizes equal"),
    ((torch.rand(1, 2, 4, 4), torch.rand(1, 2, 3, 3)), "same"),
    ([], "non-empty tuple"),
])
def test_attention_rejects_malformed_tensors(bad, message):
    with pytest.raises(ValueError, match=message):
        viz.attention(bad)


def test_attention_explains_missing_or_mismatched_inputs(model, tokenizer):
    with pytest.raises(ValueError, match="no tokenizer"):
        viz.attention(model, "the cat")
    with pytest.raises(ValueError, match="labels"):
        viz.attention((torch.rand(1, 2, 3, 3),), tokens=["a", "b"])
    with pytest.raises(ValueError, match="head must be"):
        viz.attention(model, "the", tokenizer=tokenizer, head=7)


# --- bertviz ---------------------------------------------------------------------------


def test_to_bertviz_attention_converts_arrays_batches_and_3d():
    torch.manual_seed(2)
    maps = [torch.rand(2, 3, 5, 5) for _ in range(2)]
    converted = viz.to_bertviz_attention([m.numpy() for m in maps], batch_index=1)
    assert isinstance(converted, tuple) and len(converted) == 2
    for got, want in zip(converted, maps):
        assert isinstance(got, torch.Tensor) and got.shape == (1, 3, 5, 5)
        torch.testing.assert_close(got[0], want[1])
    assert viz.to_bertviz_attention([maps[0][0]])[0].shape == (1, 3, 5, 5)
    with pytest.raises(ValueError, match="batch_index"):
        viz.to_bertviz_attention(maps, batch_index=2)


def test_bertviz_feeds_head_and_model_views(model, tokenizer):
    head = viz.bertviz(model, "the cat", tokenizer=tokenizer, view="head")
    whole = viz.bertviz(model, "the cat", tokenizer=tokenizer, view="model")
    assert 'id="bertviz-' in head.data and 'id="bertviz-' in whole.data
    assert '"\\u2423"' in head.data or '"\u2423"' in head.data  # the space token's label
    assert head.data != whole.data
    with pytest.raises(ValueError, match="view must be"):
        viz.bertviz(model, "the", tokenizer=tokenizer, view="neuron")


# --- embeddings ------------------------------------------------------------------------


def test_pca_matches_numpy_eigendecomposition():
    torch.manual_seed(3)
    x = torch.randn(40, 6) @ torch.randn(6, 6)
    got = viz.pca(x, 3).double().numpy()
    centred = (x - x.mean(0)).double().numpy()
    values, vectors = np.linalg.eigh(centred.T @ centred)
    want = centred @ vectors[:, np.argsort(values)[::-1][:3]]
    for c in range(3):  # PCA fixes a component only up to its sign
        sign = np.sign(got[:, c] @ want[:, c])
        np.testing.assert_allclose(got[:, c], sign * want[:, c], rtol=1e-4, atol=1e-5)
    assert viz.pca(torch.randn(5, 2), 3).shape == (5, 3)  # padded when d < dims


def test_nearest_neighbours_match_brute_force():
    torch.manual_seed(4)
    x = torch.randn(30, 8)
    got = viz.nearest_neighbours(x, 7, k=5)
    scores = [(float(torch.nn.functional.cosine_similarity(x[7], x[j], dim=0)), j)
              for j in range(30) if j != 7]
    want = sorted(scores, reverse=True)[:5]
    assert [j for j, _ in got] == [j for _, j in want]
    assert [s for _, s in got] == pytest.approx([s for s, _ in want], abs=1e-5)


def test_embeddings_view_controls(model, tokenizer):
    table = model.token_embedding.weight.detach()
    start = torch.randn_like(table)
    vowels = ["vowel" if c in "aeiou" else "other" for c in tokenizer.chars]
    view = viz.embeddings({"start": start, "trained": model}, tokenizer, categories=vowels,
                          live=True)
    assert {t.name for t in view.figure.data} == {"vowel", "other"}
    assert sum(len(t.x) for t in view.figure.data) == tokenizer.vocab_size

    view.controls["search"].value = "a"
    index = tokenizer.chars.index("a")
    want = [tokenizer.chars[j] for j, _ in viz.nearest_neighbours(table, index, k=8)]
    assert [label for label, _ in view.neighbours] == want
    assert list(view.figure.data[-1].text) == ["a"] + want

    view.controls["colour"].value = "none"
    view.controls["dims"].value = 3
    assert [t.type for t in view.figure.data] == ["scatter3d", "scatter3d"]
    view.controls["snapshot"].value = "start"
    shown = torch.tensor([view.figure.data[0].x, view.figure.data[0].y, view.figure.data[0].z]).T
    reference = viz.pca(start, 3)
    for c in range(3):
        sign = torch.sign((shown[:, c] * reference[:, c]).sum())
        torch.testing.assert_close(shown[:, c], sign * reference[:, c], rtol=1e-4, atol=1e-5)


def test_embedding_snapshots_are_sign_aligned_between_checkpoints():
    torch.manual_seed(5)
    x = torch.randn(20, 5)
    view = viz.embeddings([x, -x], dims=2)  # a mirror image of the same space
    first, second = view.projections[2]["snapshot 0"], view.projections[2]["snapshot 1"]
    torch.testing.assert_close(first, second)
    with pytest.raises(ValueError, match="one per row"):
        viz.embeddings(x, labels=["a"])
    with pytest.raises(ValueError, match="same shape"):
        viz.embeddings([x, torch.randn(20, 4)])


# --- training dashboard ----------------------------------------------------------------


def _train(model, tokenizer, callbacks, steps=12, out_dir=None):
    ids = tokenizer.encode(TEXT * 8)
    config = TrainConfig(max_steps=steps, eval_interval=5, eval_iters=2, batch_size=4,
                         warmup_steps=2, progress=False, device="cpu", out_dir=out_dir)
    trainer = Trainer(model, ids[:300], ids[300:], config, callbacks=callbacks)
    trainer.fit()
    return trainer


def test_dashboard_live_plots_the_trainers_history(tokenizer):
    torch.manual_seed(6)
    model = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, context_length=16, n_layer=1,
                          n_head=2, d_model=16))
    dashboard = viz.TrainingDashboard(live=True)
    trainer = _train(model, tokenizer, [dashboard])
    assert dashboard.history == trainer.history
    steps = [r for r in trainer.history if "loss" in r]
    evals = [r for r in trainer.history if "val_loss" in r]
    loss, train_eval, val, lr, speed = dashboard.figure.data
    assert list(loss.x) == [r["step"] for r in steps]
    assert list(loss.y) == pytest.approx([r["loss"] for r in steps])
    assert list(val.y) == pytest.approx([r["val_loss"] for r in evals])
    assert list(train_eval.y) == pytest.approx([r["train_loss"] for r in evals])
    assert list(lr.y) == pytest.approx([r["lr"] for r in steps])
    assert list(speed.y) == pytest.approx([r["tokens_per_sec"] for r in steps])
    assert dashboard.progress.value == dashboard.progress.max == trainer.config.max_steps


def test_dashboard_redraws_are_throttled_but_evals_always_draw():
    dashboard = viz.TrainingDashboard(total_steps=100, redraw_every_s=3600, live=True)
    dashboard.redraw()
    before = dashboard.redraws
    for step in range(1, 51):
        dashboard.on_step(None, {"step": step, "loss": 1.0 / step, "lr": 1e-3,
                                 "tokens_per_sec": 1000.0, "elapsed": step * 0.1})
    assert dashboard.redraws == before  # steps inside the throttle window draw nothing
    dashboard.on_eval(None, {"step": 50, "train_loss": 0.5, "val_loss": 0.6})
    assert dashboard.redraws == before + 1 and len(dashboard.figure.data[0].x) == 50
    assert "step 50 / 100" in dashboard.status.value


def test_dashboard_static_prints_one_line_per_eval_and_redraws_from_history(tokenizer, capsys):
    torch.manual_seed(7)
    model = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, context_length=16, n_layer=1,
                          n_head=2, d_model=16))
    dashboard = viz.TrainingDashboard()
    trainer = _train(model, tokenizer, [dashboard])
    printed = capsys.readouterr().out.strip().splitlines()
    evals = [r for r in trainer.history if "val_loss" in r]
    assert len(printed) == len(evals) + 1  # one line per eval, then the final summary
    assert printed[-2].startswith(f"step {evals[-1]['step']:>6}")
    assert f"val {evals[-1]['val_loss']:.4f}" in printed[-2]

    again = viz.TrainingDashboard.from_history(trainer.history)
    assert type(again.figure) is go.Figure
    assert list(again.figure.data[2].y) == pytest.approx([r["val_loss"] for r in evals])
    with pytest.raises(ValueError, match="list of dict"):
        viz.TrainingDashboard.from_history("history.json")
    with pytest.raises(ValueError, match="'step'"):
        viz.TrainingDashboard.from_history([{"loss": 1.0}])


def test_dashboard_redraws_a_checkpoints_history(tokenizer, tmp_path):
    torch.manual_seed(8)
    model = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, context_length=16, n_layer=1,
                          n_head=2, d_model=16))
    trainer = _train(model, tokenizer, [], steps=6, out_dir=str(tmp_path / "run"))
    dashboard = viz.TrainingDashboard.from_checkpoint(tmp_path / "run", live=True)
    assert dashboard.history == trainer.history and dashboard.total_steps == 6
    assert list(dashboard.figure.data[0].y) == pytest.approx(
        [r["loss"] for r in trainer.history if "loss" in r])
    assert dashboard.progress.value == 6


def test_dashboard_picks_up_a_resumed_runs_history():
    class Resumed:
        history = [{"step": 1, "loss": 2.0, "lr": 1e-3, "tokens_per_sec": 5.0, "elapsed": 0.1}]
        config = TrainConfig(max_steps=10)

    dashboard = viz.TrainingDashboard(live=True)
    dashboard.on_train_start(Resumed())
    assert dashboard.history == Resumed.history and dashboard.progress.max == 10
    assert list(dashboard.figure.data[0].y) == [2.0]


# --- next token ------------------------------------------------------------------------


def _nucleus(probs, p):
    """Brute force: keep the most likely tokens until their mass reaches p."""
    kept, total = [], 0.0
    for i in sorted(range(len(probs)), key=lambda i: -float(probs[i])):
        if total >= p:
            break
        kept.append(i)
        total += float(probs[i])
    out = torch.zeros_like(probs)
    out[kept] = probs[kept] / probs[kept].sum()
    return out


def test_next_token_bars_follow_temperature_top_k_and_top_p(model, tokenizer):
    prompt = "the cat s"
    logits = reference_logits(model, tokenizer.encode(prompt))
    view = viz.next_token(model, tokenizer, prompt, k=5, live=True)
    raw = logits.softmax(-1)
    assert view.shown == raw.argsort(descending=True)[:5].tolist()
    assert list(view.figure.data[0].x) == pytest.approx(raw[view.shown].tolist(), abs=1e-6)

    view.controls["temperature"].value = 0.5
    sharp = (logits / 0.5).softmax(-1)
    assert list(view.figure.data[1].x) == pytest.approx(sharp[view.shown].tolist(), abs=1e-6)

    view.controls["top_k"].value = 3
    top3 = logits.topk(3).indices
    expected = torch.zeros_like(logits)
    expected[top3] = (logits[top3] / 0.5).softmax(-1)
    torch.testing.assert_close(view.probs, expected)

    view.controls["top_k"].value = 0
    view.controls["top_p"].value = 0.3
    torch.testing.assert_close(view.probs, _nucleus(sharp, 0.3), atol=1e-6, rtol=1e-5)

    view.controls["temperature"].value = 0.0  # greedy
    assert view.probs.argmax() == logits.argmax() and float(view.probs.max()) == 1.0


def test_next_token_button_samples_an_allowed_token_and_reset_undoes_it(model, tokenizer):
    prompt = "the dog "
    view = viz.next_token(model, tokenizer, prompt, top_k=2, live=True)
    allowed = set(reference_logits(model, tokenizer.encode(prompt)).topk(2).indices.tolist())
    view.controls["sample"].click()
    assert len(view.ids) == len(prompt) + 1 and view.ids[-1] in allowed
    assert view.text.value.count(tokenizer.decode(view.ids[-1:])) >= 1
    torch.testing.assert_close(view.raw_probs, reference_logits(model, view.ids).softmax(-1))
    view.controls["reset"].click()
    assert view.ids == tokenizer.encode(prompt)


def test_next_token_crops_long_prompts_and_summarises_in_static_mode(model, tokenizer):
    long_prompt = TEXT[:40]  # longer than the context of 16
    view = viz.next_token(model, tokenizer, long_prompt)
    ids = tokenizer.encode(long_prompt)
    torch.testing.assert_close(view.raw_probs, reference_logits(model, ids[-16:]).softmax(-1))
    assert repr(view).startswith("next token after 40 tokens:")
    assert display.PLOTLY_MIME in view._repr_mimebundle_()


def test_typing_a_character_one_tokenizer_lacks_keeps_the_others_live():
    from llmkit.tokenizers import BPETokenizer, CharTokenizer
    from llmkit.viz.tokens import TokensView

    chars, bpe = CharTokenizer.train("abc ab"), BPETokenizer.train("abc ab abc", 260)
    view = TokensView({"chars": chars, "bpe": bpe}, "abc", live=True)
    view.set_text("abc é", typed=True)
    assert "never saw" in view.outputs["chars"].value
    assert "llmkit-token" in view.outputs["bpe"].value and len(view.spans["bpe"]) > 0
    with pytest.raises(ValueError, match="never saw"):
        view.set_text("abc é")  # a text given in code, not typed: the error is raised
