"""The chat session: trimming keeps the system prompt and the newest turns (against a brute
force over every cut), a reply stops at end of turn (a model trained to answer), and the
stream writes what generate writes."""

import pytest
import torch

from llmkit.chat import ChatSession
from llmkit.chat_template import END_OF_TURN, add_chat_tokens, encode_chat
from llmkit.generate import generate
from llmkit.model import GPT, GPTConfig
from llmkit.tokenizers import CharTokenizer

SYSTEM = "Mia had a red ball."
QUESTION, ANSWER = "Who had the ball?", "Mia."


def chat_tokenizer():
    letters = "abcdefghijklmnopqrstuvwxyz"
    tokenizer = CharTokenizer.train(letters + letters.upper() + "0123456789 .,?!\n")
    add_chat_tokens(tokenizer)
    return tokenizer


def tiny_model(tokenizer, context_length=96, seed=0):
    torch.manual_seed(seed)
    config = GPTConfig(vocab_size=tokenizer.vocab_size, context_length=context_length,
                       n_layer=2, n_head=2, d_model=32)
    return GPT(config).eval()


def test_trimming_keeps_the_system_prompt_and_the_newest_turns_that_fit():
    tokenizer = chat_tokenizer()
    model = tiny_model(tokenizer, context_length=120)
    chat = ChatSession(model, tokenizer, system=SYSTEM, reply_room=20)
    for number in range(8):
        chat.messages += [{"role": "user", "content": f"Question {'x' * number}?"},
                          {"role": "assistant", "content": f"Answer {number}."}]
    chat.messages.append({"role": "user", "content": "Last one?"})
    kept = chat.prompt_messages()
    # Brute force: of every cut of the history that starts at a user turn, the longest that
    # fits in context_length - reply_room with the system prompt in front.
    system, turns = chat.messages[:1], chat.messages[1:]
    fitting = [turns[start:] for start in range(len(turns)) if turns[start]["role"] == "user"
               and len(encode_chat(tokenizer, system + turns[start:], True)[0]) <= 100]
    assert kept == system + max(fitting, key=len)
    assert kept[0]["content"] == SYSTEM and kept[-1]["content"] == "Last one?"
    assert 1 < len(kept) < len(chat.messages)          # something was dropped, not everything
    assert len(chat.messages) == 18                    # the history itself is kept whole


def test_a_conversation_longer_than_the_context_goes_on_and_a_hopeless_one_says_why():
    tokenizer = chat_tokenizer()
    model = tiny_model(tokenizer, context_length=64)
    chat = ChatSession(model, tokenizer, system="Be brief.", max_new_tokens=12, temperature=0)
    for number in range(6):
        chat.send(f"Hello number {number}")
    assert len(chat.messages) == 13 and chat.messages[0]["role"] == "system"
    assert all(m["role"] == "assistant" for m in chat.messages[2::2])
    long_system = ChatSession(model, tokenizer, system="x" * 60)
    with pytest.raises(ValueError, match="shorten"):
        long_system.send("hi")
    assert long_system.messages == [{"role": "system", "content": "x" * 60}]
    with pytest.raises(ValueError, match="special tokens"):
        ChatSession(model, CharTokenizer.train("abc"))


def test_the_stream_writes_what_generate_writes_and_send_joins_it():
    tokenizer = chat_tokenizer()
    model = tiny_model(tokenizer, seed=3)
    chat = ChatSession(model, tokenizer, system=SYSTEM, max_new_tokens=15, temperature=0)
    pieces = list(chat.stream(QUESTION))
    ids, _ = encode_chat(tokenizer, [{"role": "system", "content": SYSTEM},
                                     {"role": "user", "content": QUESTION}], True)
    new = generate(model, torch.tensor([ids]), 15, temperature=0)[0, len(ids):].tolist()
    end_id = tokenizer.special_tokens[END_OF_TURN]
    new = new[:new.index(end_id)] if end_id in new else new
    assert "".join(pieces) == tokenizer.decode(new) and len(pieces) > 1
    assert chat.messages[-1] == {"role": "assistant", "content": "".join(pieces)}
    again = ChatSession(model, tokenizer, system=SYSTEM, max_new_tokens=15, temperature=0)
    assert again.send(QUESTION) == "".join(pieces)


def test_a_reply_stops_at_the_end_of_turn_token():
    tokenizer = chat_tokenizer()
    model = tiny_model(tokenizer, context_length=64).train()
    conversation = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": QUESTION},
                    {"role": "assistant", "content": ANSWER}]
    ids = torch.tensor([encode_chat(tokenizer, conversation)[0]])
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)   # a model this small trains fastest on one thread
    try:
        for _ in range(150):   # memorise the one conversation, "<|end|>" included
            _, loss = model(ids[:, :-1], ids[:, 1:])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    finally:
        torch.set_num_threads(threads)
    model.eval()
    chat = ChatSession(model, tokenizer, system=SYSTEM, max_new_tokens=10, temperature=0)
    assert chat.send(QUESTION) == ANSWER       # 4 characters, then the end of the turn
    assert chat.messages[-1] == {"role": "assistant", "content": ANSWER}
