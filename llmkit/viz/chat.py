"""Chat widget (lesson 10): talk to a chat model in the notebook.

A text box and a send button; the reply appears token by token as the model writes it;
the conversation is shown as speech bubbles; a temperature slider and a reset button.
Underneath is `llmkit.chat.ChatSession`, so the widget keeps working when the conversation
outgrows the model's context: the oldest exchanges leave the prompt (never the system
prompt), and the view greys out the messages the last reply could no longer read.

Without a widget front end (nbconvert, CI, `LLMKIT_STATIC=1`) `send()` still works and the
view shows the conversation so far as HTML.
"""

from __future__ import annotations

import torch

from llmkit.chat import ChatSession

from .display import View, escape

COLOURS = {"system": "#f3f4f6", "user": "#dbeafe", "assistant": "#dcfce7"}
ALIGN = {"system": "flex-start", "user": "flex-end", "assistant": "flex-start"}


class ChatView(View):
    """A conversation with `model` through a ChatSession, drawn as HTML bubbles.

    Attributes: `session` (the ChatSession: its `messages` are the whole history),
    `dropped` (how many of the oldest messages the last reply could not read), `updates`
    (how many times the conversation was redrawn: once per streamed piece). Controls (live):
    `message` (text box), `send`, `temperature` (0 = greedy), `reset`.
    """

    def __init__(self, model, tokenizer, system: str | None = None, *, temperature: float = 0.0,
                 max_new_tokens: int = 64, seed: int = 0, live: bool | None = None):
        super().__init__(live)
        if not 0.0 <= float(temperature) <= 2.0:
            raise ValueError(f"temperature must be between 0 (greedy) and 2, got {temperature}.")
        self.session = ChatSession(model, tokenizer, system, max_new_tokens=max_new_tokens,
                                   temperature=float(temperature),
                                   generator=torch.Generator().manual_seed(seed))
        self.dropped, self.updates = 0, 0
        if self.live:
            import ipywidgets as widgets

            self.controls = {
                "message": widgets.Text(placeholder="Type a message, then press send",
                                        layout=widgets.Layout(width="420px")),
                "send": widgets.Button(description="send", button_style="primary"),
                "temperature": widgets.FloatSlider(value=float(temperature), min=0.0, max=2.0,
                                                   step=0.1, description="temperature",
                                                   style={"description_width": "initial"}),
                "reset": widgets.Button(description="reset"),
            }
            self.controls["send"].on_click(lambda _: self.send_box())
            self.controls["reset"].on_click(lambda _: self.reset())
            self.controls["temperature"].observe(
                lambda change: self.set_temperature(change["new"]), names="value")
            self.conversation = widgets.HTML()
            c = self.controls
            self.widget = widgets.VBox([
                self.conversation,
                widgets.HBox([c["message"], c["send"]]),
                widgets.HBox([c["temperature"], c["reset"]]),
            ])
        self.redraw()

    # --- what the controls do ----------------------------------------------------------

    def send(self, text: str) -> str:
        """Send `text` as the user, stream the reply (redrawing after every piece), and
        return it."""
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"type a message first: got {text!r}.")
        reply = ""
        self.redraw(pending="")
        for piece in self.session.stream(text):
            reply += piece
            self.redraw(pending=reply)
        self.dropped = self.unread_messages()
        self.redraw()
        return reply

    def send_box(self) -> None:
        """The send button: send the text box's message (if any) and clear the box."""
        text = self.controls["message"].value
        if not text.strip():
            return
        self.controls["message"].value = ""
        self.send(text)

    def set_temperature(self, temperature: float) -> None:
        """Sample the next replies at `temperature` (0 = greedy)."""
        self.session.options["temperature"] = float(temperature)

    def reset(self) -> None:
        """Forget the conversation (the system prompt stays)."""
        self.session.reset()
        self.dropped = 0
        self.redraw()

    def unread_messages(self) -> int:
        """How many messages (after the system prompt) the last reply could not read."""
        messages = self.session.messages
        if not messages or messages[-1]["role"] != "assistant":
            return 0
        last = messages.pop()               # the prompt of the last reply, without the reply
        try:
            read = self.session.prompt_messages()
        finally:
            messages.append(last)
        return len(messages) - 1 - len(read)

    # --- drawing -------------------------------------------------------------------------

    def html(self, pending: str | None = None) -> str:
        """The conversation as HTML bubbles; `pending` is a reply still being written."""
        messages = list(self.session.messages)
        if pending is not None and (not messages or messages[-1]["role"] != "assistant"
                                    or pending):
            messages = messages + [{"role": "assistant", "content": pending + "▌"}]
        has_system = bool(messages) and messages[0]["role"] == "system"
        first_kept = int(has_system) + self.dropped    # the oldest message the model still read
        bubbles = []
        for number, message in enumerate(messages):
            role = message["role"]
            faded = first_kept - self.dropped <= number < first_kept
            style = (f"background:{COLOURS[role]};border-radius:10px;padding:6px 10px;"
                     "margin:3px 0;max-width:75%;max-height:12em;overflow-y:auto;"
                     "white-space:pre-wrap;"
                     f"align-self:{ALIGN[role]};{'opacity:0.45;' if faded else ''}")
            who = {"system": "system prompt", "user": "you", "assistant": "model"}[role]
            # A weak model may reply with newlines only: strip the edges, say so if nothing is left.
            text = escape(message["content"].strip("\n")) or "<i>(only whitespace)</i>"
            bubbles.append(f'<div class="llmkit-chat-{role}" style="{style}">'
                           f'<b style="font-size:80%">{who}</b><br>{text}</div>')
        if self.dropped:
            bubbles.append(f'<div style="font-size:85%;color:#6b7280">The faded {self.dropped} '
                           "message(s) no longer fit the model's context: the last reply read "
                           "the system prompt and the newer turns only.</div>")
        if not bubbles:
            bubbles.append('<div style="color:#6b7280">No messages yet.</div>')
        return ('<div class="llmkit-chat" style="display:flex;flex-direction:column;'
                'font-family:sans-serif;max-width:640px">' + "".join(bubbles) + "</div>")

    def redraw(self, pending: str | None = None) -> None:
        self.updates += 1
        if self.live:
            self.conversation.value = self.html(pending)

    def static_html(self) -> str:
        return self.html()

    def summary(self) -> str:
        lines = [f"{m['role']}: {m['content']}" for m in self.session.messages]
        return "\n".join(lines) if lines else "<chat: no messages yet>"


def chat(model, tokenizer, system: str | None = None, *, temperature: float = 0.0,
         max_new_tokens: int = 64, seed: int = 0, live: bool | None = None) -> ChatView:
    """A chat widget for `model` (an llmkit GPT fine-tuned on the chat template of
    llmkit.chat_template) and its tokenizer (with the chat markers).

    system: the system prompt (e.g. a story to answer questions about); temperature: 0 is
    greedy; max_new_tokens: the longest reply; seed: seeds sampling. Returns a ChatView.
    """
    return ChatView(model, tokenizer, system, temperature=temperature,
                    max_new_tokens=max_new_tokens, seed=seed, live=live)
