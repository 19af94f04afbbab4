"""llmkit.applications: lesson 10's tasks say what TinyTales' facts say, its metrics score
what they claim, batched replies equal greedy decoding done by hand, and the cached models
load on the second call.

References: each story's own text, summary, questions and aligned Spanish sentences (read
from the generator's facts, not from the task builder), `compile` for code, a hand-written
argmax loop for the replies.
"""

from __future__ import annotations

import random
import re

import pytest
import torch

from llmkit import applications as apps
from llmkit.chat_template import add_chat_tokens
from llmkit.data import generate_stories
from llmkit.model import GPT, GPTConfig
from llmkit.tokenizers import CharTokenizer

STORIES = generate_stories(60, seed=5)


def test_every_task_asks_for_what_the_story_holds():
    rng = random.Random(0)
    for story in STORIES[:20]:
        tasks = apps.task_conversations(story, rng)
        assert set(tasks) == set(apps.TASKS)
        assert tasks["write"][-1]["content"] == story.text
        request, facts = apps.write_instruction(story)
        assert tasks["write"][0]["content"] == request
        assert all(fact in request for fact in facts)
        assert tasks["summarize"] == [
            {"role": "user", "content": f"Summarize this story.\n\n{story.text}"},
            {"role": "assistant", "content": story.summary}]
        english = tasks["translate"][0]["content"].removeprefix("Translate into Spanish: ")
        index = story.sentences.index(english)
        assert tasks["translate"][1]["content"] == story.spanish_sentences[index]
        question = tasks["answer"][0]["content"].split("Question: ")[1]
        assert (question, tasks["answer"][1]["content"]) in story.qa
        chat = tasks["chat"]
        assert chat[0]["role"] == "system" and story.text in chat[0]["content"]
        assert [m["role"] for m in chat[1:]] == ["user", "assistant"] * 3
        pairs = [(chat[i]["content"], chat[i + 1]["content"]) for i in range(1, 7, 2)]
        assert all(pair in story.qa for pair in pairs) and len(set(pairs)) == 3


def test_eval_sets_hold_prompts_without_their_replies():
    sets = apps.eval_tasks(STORIES[:5])
    for task, examples in sets.items():
        assert len(examples) == 5
        for example in examples:
            if task == "chat":
                replies = [m["content"] for m in example["messages"] if m["role"] == "assistant"]
                assert example["reference"] == replies
            else:
                assert example["messages"][-1]["role"] == "user"
    assert [e["reference"] for e in sets["summarize"]] == [s.summary for s in STORIES[:5]]


def test_the_task_mix_is_every_task_of_every_story_shuffled():
    mix = apps.task_mix(STORIES[:10], seed=3)
    assert len(mix) == 10 * len(apps.TASKS)
    assert sum(c[0]["role"] == "system" for c in mix) == 10
    assert mix != apps.task_mix(STORIES[:10], seed=4)


def test_facts_share_counts_whole_words_from_their_start():
    text = "Mia took her two red balls to the park."
    assert apps.facts_share(text, ["Mia", "ball", "park"]) == 1.0
    assert apps.facts_share(text, ["Leo", "ball", "beach"]) == pytest.approx(1 / 3)
    assert apps.facts_share("Amia went home.", ["Mia"]) == 0.0     # not inside a word
    assert apps.facts_share("MIA", ["mia"]) == 1.0


def test_every_true_summary_names_its_hero_and_ending_and_others_do_not():
    for story in STORIES:
        assert apps.summary_names_story(story.summary, story), story.summary
    for story, other in zip(STORIES, STORIES[1:]):
        same = (other.facts.name == story.facts.name and other.facts.ending == story.facts.ending)
        assert apps.summary_names_story(other.summary, story) == same


def test_a_completed_function_ends_where_the_model_goes_back_to_column_0():
    prompt = "def f(x):\n\t"
    assert apps.completed_function(prompt, "return x\n\ndef g():\n\tpass") == \
        "def f(x):\n\treturn x\n\n"
    assert apps.completion_parses(prompt, "return x\n\ndef g(:\n")       # g is not f's
    assert apps.completed_function(prompt, "y = 1\n\treturn (y") == "def f(x):\n\ty = 1\n"
    assert apps.completion_parses(prompt, "y = 1\n\treturn (y")        # cut before "(y"
    assert not apps.completion_parses(prompt, "return (x\n\t+ 1\n")
    assert not apps.completion_parses(prompt, "")                      # no body at all
    assert not apps.completion_parses(prompt, "     \n")               # only whitespace


def test_function_prompts_come_from_held_out_files_and_their_bodies_parse():
    alphabet = set(map(chr, range(128)))
    prompts = apps.function_prompts(8, alphabet)
    assert len(prompts) == 8
    for p in prompts:
        compile(p["prompt"] + p["body"], "<function>", "exec")
        assert apps.completion_parses(p["prompt"], p["body"])      # the original counts
        assert p["prompt"].startswith("def ") and p["prompt"].endswith("\n\t")
        assert not apps.completion_parses(p["prompt"], "")
    training, held_out = apps.library_files()
    assert not set(training) & set(held_out) and held_out


def test_the_code_corpus_is_short_functions_indented_with_tabs():
    functions = list(apps.short_functions(apps.library_files()[0], 20_000))
    assert len(functions) > 20
    corpus = apps.code_text(20_000)
    assert corpus == "".join(code + "\n\n" for code in functions)
    for code in functions:
        assert code.startswith("def ")
        compile(code, "<function>", "exec")                 # tabs are valid indentation
    assert not re.search(r"^    ", corpus, flags=re.MULTILINE)


@pytest.fixture(scope="module")
def chat_model():
    tokenizer = CharTokenizer.train("Mia had a red ball. Who had it? Mia.\n")
    add_chat_tokens(tokenizer)
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, context_length=64, n_layer=2,
                          n_head=2, d_model=32)).eval()
    return model, tokenizer


def greedy_by_hand(model, tokenizer, messages, max_new_tokens):
    special = tokenizer.special_tokens
    ids = []
    for m in messages:
        ids += [special[f"<|{m['role']}|>"]] + tokenizer.encode("\n" + m["content"])
        ids += [special["<|end|>"]] + tokenizer.encode("\n")
    ids += [special["<|assistant|>"]] + tokenizer.encode("\n")
    out = []
    with torch.no_grad():
        for _ in range(max_new_tokens):
            token = int(model(torch.tensor([ids]))[0][0, -1].argmax())
            if token == special["<|end|>"]:
                break
            ids.append(token)
            out.append(token)
    return tokenizer.decode(out)


def test_batched_replies_equal_greedy_decoding_one_at_a_time(chat_model):
    model, tokenizer = chat_model
    conversations = [[{"role": "user", "content": text}] for text in
                     ("Who had it?", "Mia had a red ball. Who had it?", "Mia.")]
    got = apps.replies(model, tokenizer, conversations, 8, batch_size=2)
    assert got == [greedy_by_hand(model, tokenizer, c, 8) for c in conversations]


def test_chat_answers_keep_the_models_own_replies_in_the_history(chat_model):
    model, tokenizer = chat_model
    conversation = [{"role": "system", "content": "Mia had a red ball."},
                    {"role": "user", "content": "Who had it?"},
                    {"role": "assistant", "content": "Mia."},
                    {"role": "user", "content": "Who?"}]
    first, second = apps.chat_answers(model, tokenizer, conversation, max_new_tokens=5)
    assert first == greedy_by_hand(model, tokenizer, conversation[:2], 5)
    history = conversation[:2] + [{"role": "assistant", "content": first}, conversation[3]]
    assert second == greedy_by_hand(model, tokenizer, history, 5)


def test_a_prompt_that_fills_the_context_is_refused(chat_model):
    model, tokenizer = chat_model
    with pytest.raises(ValueError, match="no room left"):
        apps.replies(model, tokenizer, [[{"role": "user", "content": "Mia had a red ball. " * 4}]], 4)


@pytest.mark.slow
def test_the_models_are_trained_once_then_loaded(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMKIT_RUNS", str(tmp_path))
    monkeypatch.setenv("LLMKIT_QUICK", "1")
    base = apps.load_or_pretrain("cpu", stories=80, steps=2)
    assert "just now" in base.source
    start = apps.with_chat_tokens(base)
    assert start.model.config.vocab_size == start.tokenizer.vocab_size > base.tokenizer.vocab_size
    assert base.model.config.vocab_size == base.tokenizer.vocab_size      # base is unchanged
    tuned = apps.load_or_finetune(start, "cpu", stories=10, steps=2)
    assert "just now" in tuned.source
    again = apps.load_or_finetune(start, "cpu")
    assert again.source.startswith("loaded from")
    for a, b in zip(tuned.model.parameters(), again.model.parameters()):
        torch.testing.assert_close(a, b)
    assert again.tokenizer.special_tokens == tuned.tokenizer.special_tokens
    assert apps.load_or_pretrain("cpu").source.startswith("loaded from")
