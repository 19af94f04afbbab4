"""A chat session: a conversation with a chat model, one streamed reply at a time (lesson 10).

Each turn, the whole conversation is written in the chat template (llmkit.chat_template)
and ends with the assistant's marker; the model's continuation is the reply, and it ends
when the model writes the end-of-turn token.

The model reads at most context_length tokens, and a conversation grows without end. So
before each reply the oldest exchanges are dropped until the prompt, plus room for the
reply, fits. The system prompt is never dropped: it says what the assistant is for (in
lesson 10, the story the questions are about). The full history is kept in `messages`;
only the prompt is trimmed.

    chat = ChatSession(model, tokenizer, system="Answer questions about this story. ...")
    for piece in chat.stream("Who found the ball?"):
        print(piece, end="", flush=True)
    chat.send("What colour was it?")      # the whole reply at once
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from llmkit.chat_template import END_OF_TURN, chat_token_ids, encode_chat
from llmkit.generate import stream


class ChatSession:
    """A conversation with `model` (an llmkit GPT that knows the chat template's tokens).

    system: the system prompt, or None. max_new_tokens: the longest reply; reply_room: the
    tokens kept free for the reply when old turns are dropped (default: max_new_tokens, at
    most half the context). The sampling options (temperature, top_k, top_p,
    repetition_penalty, generator) are generate's; temperature 0 is greedy. Change them
    between turns by setting `options`.
    """

    def __init__(self, model, tokenizer, system: str | None = None, *, max_new_tokens: int = 200,
                 reply_room: int | None = None, **options):
        self.end_id = chat_token_ids(tokenizer)[END_OF_TURN]   # a clear error if it lacks them
        context = model.config.context_length
        if reply_room is None:
            reply_room = min(max_new_tokens, context // 2)
        if not 1 <= reply_room < context:
            raise ValueError(f"reply_room must be between 1 and context_length - 1 = "
                             f"{context - 1}, got {reply_room}.")
        if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be a positive integer, got {max_new_tokens!r}.")
        self.model, self.tokenizer = model, tokenizer
        self.max_new_tokens, self.reply_room = max_new_tokens, reply_room
        self.options = dict(options)
        self.system = system
        self.messages: list[dict] = []
        self.reset()

    def reset(self) -> None:
        """Forget the conversation; keep the system prompt."""
        self.messages = [] if self.system is None else [{"role": "system", "content": self.system}]

    def prompt_messages(self) -> list[dict]:
        """The messages the next reply reads: the system prompt (if any) and the newest turns
        whose template, with the assistant's marker, leaves reply_room tokens of context.

        Whole exchanges go, oldest first: after a cut, the kept turns start with a user turn.
        """
        limit = self.model.config.context_length - self.reply_room
        system = [m for m in self.messages[:1] if m["role"] == "system"]
        turns = self.messages[len(system):]
        while True:
            kept = system + turns
            if len(encode_chat(self.tokenizer, kept, add_generation_prompt=True)[0]) <= limit:
                return kept
            if len(turns) <= 1:
                raise ValueError(
                    f"the system prompt and the last message need more than {limit} tokens "
                    f"(context_length {self.model.config.context_length} less {self.reply_room} "
                    "kept for the reply); shorten them, or lower reply_room."
                )
            turns = turns[1:]
            while turns and turns[0]["role"] != "user":   # no reply without its question
                turns = turns[1:]

    def stream(self, text: str) -> Iterator[str]:
        """Add the user's message, then yield the reply's text as the model writes it.

        The reply ends at the end-of-turn token (not shown) or after max_new_tokens, and
        never runs past the context. When the stream is done, the reply is in `messages`.
        """
        if not isinstance(text, str):
            raise ValueError(f"a chat message must be a str, got {type(text).__name__}.")
        self.messages.append({"role": "user", "content": text})
        try:
            messages = self.prompt_messages()
        except ValueError:
            self.messages.pop()   # a message that cannot be answered is not kept
            raise
        ids, _ = encode_chat(self.tokenizer, messages, add_generation_prompt=True)
        device = next(self.model.parameters()).device
        idx = torch.tensor([ids], dtype=torch.long, device=device)
        # Stop before the window would slide: sliding would push the system prompt out.
        n_new = min(self.max_new_tokens, self.model.config.context_length - len(ids))
        decoder = self.tokenizer.stream_decoder()
        reply = ""
        try:
            for token_id in stream(self.model, idx, n_new, stop_tokens=[self.end_id],
                                   **self.options):
                if token_id == self.end_id:
                    break
                piece = decoder.push(token_id)
                reply += piece
                if piece:
                    yield piece
            piece = decoder.flush()
            reply += piece
            if piece:
                yield piece
        finally:   # a reply cut short (the caller stopped reading) is kept as far as it got
            self.messages.append({"role": "assistant", "content": reply})

    def send(self, text: str) -> str:
        """Add the user's message and return the whole reply (the stream, joined)."""
        return "".join(self.stream(text))
