"""llmkit.viz.chat: the chat widget replies as greedy decoding does, streams its reply
piece by piece, follows its temperature and reset controls, and keeps replying once the
conversation outgrows the context.

The reference reply is decoded here by hand: the conversation rendered with the chat
markers, then one argmax of the model's logits at a time until <|end|>.
"""

from __future__ import annotations

import html

import pytest
import torch

import llmkit.viz as viz
from llmkit.chat_template import add_chat_tokens
from llmkit.model import GPT, GPTConfig
from llmkit.tokenizers import CharTokenizer

TEXT = "Mia had a red ball. Who had the ball? Mia did. What color? red. <>&\"'?"


@pytest.fixture(scope="module")
def tokenizer():
    tokenizer = CharTokenizer.train(TEXT + "\n")
    add_chat_tokens(tokenizer)
    return tokenizer


def tiny_model(tokenizer, context_length=96, seed=0):
    torch.manual_seed(seed)
    config = GPTConfig(vocab_size=tokenizer.vocab_size, context_length=context_length, n_layer=2,
                       n_head=2, d_model=32)
    return GPT(config).eval()


def by_hand(model, tokenizer, turns, max_new_tokens):
    """Greedy reply to [(role, text), ...] rendered as <|role|>\\ntext<|end|>\\n + <|assistant|>\\n."""
    special = tokenizer.special_tokens
    ids = []
    for role, text in turns:
        ids += [special[f"<|{role}|>"]] + tokenizer.encode("\n" + text) + [special["<|end|>"]]
        ids += tokenizer.encode("\n")
    ids += [special["<|assistant|>"]] + tokenizer.encode("\n")
    reply = []
    with torch.no_grad():
        for _ in range(max_new_tokens):
            logits, _ = model(torch.tensor([ids]))
            token = int(logits[0, -1].argmax())
            if token == special["<|end|>"]:
                break
            ids.append(token)
            reply.append(token)
    return tokenizer.decode(reply)


def test_send_button_replies_like_greedy_decoding_and_shows_the_conversation(tokenizer):
    model = tiny_model(tokenizer)
    view = viz.chat(model, tokenizer, system="Mia had a red ball.", max_new_tokens=12, live=True)
    view.controls["message"].value = "Who had the ball?"
    view.controls["send"].click()
    expected = by_hand(model, tokenizer, [("system", "Mia had a red ball."),
                                          ("user", "Who had the ball?")], 12)
    assert view.session.messages[-1] == {"role": "assistant", "content": expected}
    assert view.controls["message"].value == ""               # the box is cleared
    shown = view.conversation.value
    assert "Who had the ball?" in shown and "Mia had a red ball." in shown
    assert shown.index("Who had the ball?") < shown.rindex("llmkit-chat-assistant")
    # a second turn reads the first one
    view.controls["message"].value = "What color?"
    view.controls["send"].click()
    expected_2 = by_hand(model, tokenizer, [("system", "Mia had a red ball."),
                                            ("user", "Who had the ball?"),
                                            ("assistant", expected), ("user", "What color?")], 12)
    assert view.session.messages[-1]["content"] == expected_2


def test_the_reply_is_streamed_piece_by_piece(tokenizer):
    model = tiny_model(tokenizer, seed=1)
    view = viz.chat(model, tokenizer, max_new_tokens=10, live=True)
    seen = []
    view.conversation.observe(lambda change: seen.append(change["new"]), names="value")
    reply = view.send("Who?")
    assert len(reply) >= 2, "pick a seed whose reply has several characters"
    # every prefix of the reply was on screen (with the cursor) before the final text
    for n in range(1, len(reply) + 1):
        shown = html.escape((reply[:n] + "▌").strip("\n"), quote=True) + "</div>"
        assert any(shown in value for value in seen), n
    assert seen[-1] == view.html() and "▌" not in seen[-1]


def test_temperature_slider_and_reset(tokenizer):
    model = tiny_model(tokenizer)
    view = viz.chat(model, tokenizer, system="a red ball", live=True)
    view.controls["temperature"].value = 1.5
    assert view.session.options["temperature"] == 1.5
    view.send("Who?")
    assert len(view.session.messages) == 3
    view.controls["reset"].click()
    assert view.session.messages == [{"role": "system", "content": "a red ball"}]
    assert "Who?" not in view.conversation.value


def test_blank_messages_are_not_sent(tokenizer):
    view = viz.chat(tiny_model(tokenizer), tokenizer, live=True)
    view.controls["message"].value = "   "
    view.controls["send"].click()
    assert view.session.messages == []
    with pytest.raises(ValueError, match="type a message"):
        view.send("")


def test_keeps_replying_past_the_context_and_fades_what_it_no_longer_reads(tokenizer):
    model = tiny_model(tokenizer, context_length=40)
    view = viz.chat(model, tokenizer, system="Mia.", max_new_tokens=6, live=True)
    for _ in range(6):
        view.send("Who had the ball?")
    assert len(view.session.messages) == 1 + 2 * 6
    assert view.dropped > 0
    # the last reply is what greedy decoding gives on the turns that still fit
    kept = view.session.messages[1 + view.dropped:-1]
    expected = by_hand(model, tokenizer, [("system", "Mia.")] +
                       [(m["role"], m["content"]) for m in kept], 6)
    assert view.session.messages[-1]["content"] == expected
    assert kept[0]["role"] == "user"
    assert view.conversation.value.count("opacity:0.45") == view.dropped


def test_static_view_shows_the_conversation_as_escaped_html(tokenizer):
    view = viz.chat(tiny_model(tokenizer), tokenizer, live=False)
    view.send("<b>&")
    bundle = view._repr_mimebundle_()
    assert "&lt;b&gt;&amp;" in bundle["text/html"] and "<b>&" not in bundle["text/html"]
    assert bundle["text/plain"].startswith("user: <b>&")


def test_bad_temperature_is_refused(tokenizer):
    with pytest.raises(ValueError, match="temperature"):
        viz.chat(tiny_model(tokenizer), tokenizer, temperature=-1, live=False)
