"""The chat template of lessons 09-10: a conversation as text, as token ids, and which ids
a fine-tuned model learns.

A chat model reads a conversation as one sequence, each turn between markers:

    <|system|>
    Answer questions about this story. Mia had a red ball. ...<|end|>
    <|user|>
    Who found the ball?<|end|>
    <|assistant|>
    her friend Ben<|end|>

Every marker is a special token (one id of its own), added to a trained tokenizer with
`add_chat_tokens`. The role markers say who speaks; `<|end|>` ends a turn and is the stop
token of generation; `<|pad|>` fills batches of examples of different lengths.

Only the markers this module writes become control tokens: the content of a message is
encoded as ordinary text (`allowed_special="none"`), so a user who types `<|end|>` gets
the characters, never the token. That is why `encode_chat` encodes turn by turn instead of
encoding the rendered text.

`encode_chat` also says which tokens the model should learn to produce: the assistant's
replies and the `<|end|>` that closes each of them. Everything else (system prompt, user
turns, the role markers) is the prompt, masked out of the loss (see
`llmkit.finetune.instruction_example`).
"""

from __future__ import annotations

SYSTEM, USER, ASSISTANT = "<|system|>", "<|user|>", "<|assistant|>"
END_OF_TURN = "<|end|>"
PAD = "<|pad|>"
ROLE_MARKERS = {"system": SYSTEM, "user": USER, "assistant": ASSISTANT}
CHAT_ROLES = tuple(ROLE_MARKERS)
CHAT_SPECIAL_TOKENS = (SYSTEM, USER, ASSISTANT, END_OF_TURN, PAD)


def add_chat_tokens(tokenizer, extra=()) -> dict[str, int]:
    """Give `tokenizer` the chat markers it lacks (and `extra` ones, e.g. task prefixes).

    Returns {marker: id} for every chat marker (old and new). Markers it already has keep
    their ids, so calling this twice is harmless. Resize the model's token embedding to the
    new `tokenizer.vocab_size` afterwards (llmkit.finetune.resize_token_embedding).
    """
    missing = [name for name in (*CHAT_SPECIAL_TOKENS, *extra)
               if name not in tokenizer.special_tokens]
    tokenizer.add_special_tokens(list(dict.fromkeys(missing)))
    return {name: tokenizer.special_tokens[name] for name in (*CHAT_SPECIAL_TOKENS, *extra)}


def check_messages(messages) -> list[dict]:
    """Raise a ValueError unless messages is a list of {"role", "content"} dicts."""
    if not isinstance(messages, (list, tuple)):
        raise ValueError(
            "messages must be a list of {'role', 'content'} dicts, "
            f"got {type(messages).__name__}."
        )
    for number, message in enumerate(messages):
        if not isinstance(message, dict) or set(message) != {"role", "content"}:
            raise ValueError(
                f"message {number} must be a dict with exactly 'role' and 'content', "
                f"got {message!r}."
            )
        if message["role"] not in ROLE_MARKERS:
            raise ValueError(
                f"message {number} has role {message['role']!r}; use one of {CHAT_ROLES}."
            )
        if not isinstance(message["content"], str):
            raise ValueError(f"message {number}'s content must be a str, "
                             f"got {type(message['content']).__name__}.")
    return list(messages)


def format_chat(messages, add_generation_prompt: bool = False) -> str:
    """A conversation as text: each turn `<|role|>\\ncontent<|end|>\\n`.

    messages: [{"role": "system" | "user" | "assistant", "content": str}, ...]. With
    add_generation_prompt the text ends with `<|assistant|>\\n`, so what a model writes next
    is the assistant's reply. For showing; to feed a model use `encode_chat`.
    """
    parts = [f"{ROLE_MARKERS[m['role']]}\n{m['content']}{END_OF_TURN}\n"
             for m in check_messages(messages)]
    if add_generation_prompt:
        parts.append(f"{ASSISTANT}\n")
    return "".join(parts)


def encode_chat(tokenizer, messages, add_generation_prompt: bool = False
                ) -> tuple[list[int], list[bool]]:
    """A conversation -> (ids, learn): the token ids of `format_chat(messages, ...)`, and for
    each id whether a fine-tuned model learns to produce it.

    Markers become their special ids; content is encoded as ordinary text, so typed markers
    stay text. learn[i] is True for the tokens of every assistant message's content and its
    closing `<|end|>`, False for the rest (system and user turns, role markers, newlines).
    Checked in the tests against the rendered text and a per-turn reference.
    """
    messages = check_messages(messages)
    marker_ids = chat_token_ids(tokenizer)
    newline = tokenizer.encode("\n")
    ids: list[int] = []
    learn: list[bool] = []

    def add(new_ids, learned: bool):
        ids.extend(new_ids)
        learn.extend([learned] * len(new_ids))

    for message in messages:
        reply = message["role"] == "assistant"
        add([marker_ids[ROLE_MARKERS[message["role"]]], *newline], False)
        add(tokenizer.encode(message["content"]), reply)
        add([marker_ids[END_OF_TURN]], reply)   # learning to stop is part of the reply
        add(newline, False)
    if add_generation_prompt:
        add([marker_ids[ASSISTANT], *newline], False)
    return ids, learn


def chat_token_ids(tokenizer) -> dict[str, int]:
    """{marker: id} of the chat markers; a ValueError says how to add them if one is missing."""
    missing = [name for name in CHAT_SPECIAL_TOKENS if name not in tokenizer.special_tokens]
    if missing:
        raise ValueError(
            f"the tokenizer has no special tokens {missing}; add them once with "
            "llmkit.chat_template.add_chat_tokens(tokenizer), then resize the model's "
            "embedding (llmkit.finetune.resize_token_embedding)."
        )
    return {name: tokenizer.special_tokens[name] for name in CHAT_SPECIAL_TOKENS}
