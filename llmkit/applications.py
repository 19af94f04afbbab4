"""Lesson 10's application model: one small GPT that writes, translates, summarizes,
answers and chats about TinyTales stories, and a tiny code model.

Why not the story model of lesson 07? It reads 128 characters, and a story is 300-400, so
no whole-story task fits it. This model reads tokens of a byte-level BPE trained on
TinyTales in English and Spanish (1,024 ids: a story is about 85 tokens), with a context
of 192 tokens: a story, an instruction and the answer fit together.

The recipe, in two cached steps (like llmkit.story_model, under `runs/`):

1. `load_or_pretrain`: the tokenizer and a GPT pretrained on stories, English and their
   Spanish renderings mixed (so translation has Spanish words to build on);
2. `load_or_finetune`: that model, with the chat template's tokens added, fine-tuned on
   `task_mix`: every application as a conversation marked by its instruction, the loss on
   the replies only (llmkit.finetune.instruction_examples).

Stories come from three seeds: pretraining (PRETRAIN_SEED), the task mix (TASK_SEED) and
evaluation (EVAL_SEED), so every score is on stories drawn apart from the training ones.

`eval_tasks` builds the evaluation sets, `replies` answers them in batches, and the
metrics that TinyTales' facts make possible live here too: `facts_share` (content
creation), `summary_names_story` (summarization), `completion_parses` (code).

The code model (`load_or_train_code_model`) is separate: a character-level GPT trained
briefly on short functions from the Python standard library's source, asked to complete
functions from files it never saw (`function_prompts`); `completion_parses` scores them.
"""

from __future__ import annotations

import ast
import copy
import random
import re
import textwrap
from dataclasses import dataclass
from pathlib import Path

import torch

from llmkit.chat import ChatSession
from llmkit.chat_template import END_OF_TURN, PAD, add_chat_tokens, chat_token_ids, encode_chat
from llmkit.checkpoint import load_checkpoint, save_checkpoint
from llmkit.data.batches import ExampleSet, split_train_val
from llmkit.data.text import stdlib_folder, stdlib_source_files
from llmkit.data.tinytales import SEPARATOR, Story, generate_stories
from llmkit.data.tinytales_english import object_phrase
from llmkit.data.tinytales_tasks import questions
from llmkit.device import pick_device, quick_mode
from llmkit.finetune import instruction_examples, resize_token_embedding
from llmkit.generate import generate_batch, generate_texts
from llmkit.model import GPT, GPTConfig
from llmkit.story_model import runs_folder
from llmkit.tokenizers import BPETokenizer, CharTokenizer
from llmkit.train import TrainConfig, Trainer

PRETRAIN_SEED, TASK_SEED, EVAL_SEED, CODE_SEED = 0, 1, 2, 0
VOCAB_SIZE = 1024
CONTEXT_LENGTH = 192
TASKS = ("write", "translate", "summarize", "answer", "chat")
CHAT_SYSTEM = "Answer questions about this story."


def application_folder(name: str) -> Path:
    """runs/applications/<name> (quick mode: runs/applications-quick/<name>)."""
    return runs_folder() / ("applications-quick" if quick_mode() else "applications") / name


def application_config(vocab_size: int, **changes) -> GPTConfig:
    """4 blocks, 4 heads, 128 wide, reading CONTEXT_LENGTH tokens. `changes` override."""
    settings = dict(vocab_size=vocab_size, context_length=CONTEXT_LENGTH, n_layer=4, n_head=4,
                    d_model=128, dropout=0.0)
    settings.update(changes)
    return GPTConfig(**settings)


# --- 1. the task mix ------------------------------------------------------------------------


def write_instruction(story: Story) -> tuple[str, list[str]]:
    """The content-creation request for a story, and the facts it asks for (name, object,
    place): 'Write a story about Mia, a red ball and the park.'"""
    f = story.facts
    request = f"Write a story about {f.name}, {object_phrase(f)} and the {f.place}."
    return request, [f.name, f.object, f.place]


def task_conversations(story: Story, rng: random.Random) -> dict[str, list[dict]]:
    """One conversation per task about `story` ({task: messages}), each ending with the
    reply the model should learn. Questions and the translated sentence are drawn by rng."""
    text, qa = story.text, questions(story.facts)
    english, spanish = rng.choice(list(zip(story.sentences, story.spanish_sentences)))
    question, answer = rng.choice(qa)
    chat = [{"role": "system", "content": f"{CHAT_SYSTEM}\n\n{text}"}]
    for asked, said in rng.sample(qa, 3):
        chat += [{"role": "user", "content": asked}, {"role": "assistant", "content": said}]

    def pair(prompt, reply):
        return [{"role": "user", "content": prompt}, {"role": "assistant", "content": reply}]

    return {
        "write": pair(write_instruction(story)[0], text),
        "translate": pair(f"Translate into Spanish: {english}", spanish),
        "summarize": pair(f"Summarize this story.\n\n{text}", story.summary),
        "answer": pair(f"{text}\n\nQuestion: {question}", answer),
        "chat": chat,
    }


def task_mix(stories: list[Story], seed: int = 0) -> list[list[dict]]:
    """Every task of every story as one shuffled list of conversations."""
    rng = random.Random(seed)
    mix = [c for story in stories for c in task_conversations(story, rng).values()]
    rng.shuffle(mix)
    return mix


def eval_tasks(stories: list[Story], seed: int = 0) -> dict[str, list[dict]]:
    """{task: [{"messages": the prompt (no reply), "reference": the reply, "story": Story}]}.

    For "chat" the messages are the whole conversation and "reference" its replies (a list):
    the answers are asked for one turn at a time (see `chat_answers`).
    """
    rng = random.Random(seed)
    sets: dict[str, list[dict]] = {task: [] for task in TASKS}
    for story in stories:
        for task, messages in task_conversations(story, rng).items():
            if task == "chat":
                reference = [m["content"] for m in messages if m["role"] == "assistant"]
                sets[task].append({"messages": messages, "reference": reference, "story": story})
            else:
                sets[task].append({"messages": messages[:-1], "reference": messages[-1]["content"],
                                   "story": story})
    return sets


# --- 2. the model: pretrained, then fine-tuned ------------------------------------------------


def pretraining_text(stories: list[Story], seed: int = PRETRAIN_SEED) -> str:
    """The stories in English, and every other one in Spanish, shuffled, each followed by
    SEPARATOR (a Spanish story is never next to its English one: no translation is shown)."""
    documents = [s.text for s in stories] + [s.translation for s in stories[::2]]
    random.Random(seed).shuffle(documents)
    return "".join(d + SEPARATOR for d in documents)


@dataclass
class AppModel:
    """A model, its tokenizer, and `source`: a sentence saying where it came from."""

    model: GPT
    tokenizer: BPETokenizer
    source: str


def train_config(steps: int, lr: float, **changes) -> TrainConfig:
    settings = dict(max_steps=steps, batch_size=8, lr=lr, min_lr=lr / 10,
                    warmup_steps=max(1, min(30, steps // 10)), weight_decay=0.1, beta2=0.99,
                    grad_clip=1.0, eval_interval=max(1, steps // 4) if steps >= 40 else steps,
                    eval_iters=4 if steps >= 40 else 1,
                    progress=False)
    settings.update(changes)
    return TrainConfig(**settings)


def load_saved(folder: Path, device) -> AppModel | None:
    if not (folder / "model.safetensors").exists():
        return None
    saved = load_checkpoint(folder, device=device)
    step = (saved.state or {}).get("step", "?")
    return AppModel(saved.model, saved.tokenizer, f"loaded from {folder} (trained for {step} steps)")


def load_or_pretrain(device=None, *, stories: int | None = None, steps: int | None = None,
                     callbacks=()) -> AppModel:
    """The pretrained model and its BPE tokenizer: loaded from runs/, or trained and saved.

    stories: TinyTales stories to pretrain on (default 3,000; 100 in quick mode);
    steps: optimizer steps of 8 windows of 192 tokens (default 300; 8 in quick mode).
    """
    device = pick_device(device)
    folder = application_folder("pretrained")
    saved = load_saved(folder, device)
    if saved is not None:
        return saved
    stories = stories or (100 if quick_mode() else 3000)
    steps = steps or (8 if quick_mode() else 300)
    text = pretraining_text(generate_stories(stories, seed=PRETRAIN_SEED))
    tokenizer = BPETokenizer.train(text[: 600_000], VOCAB_SIZE)
    train_ids, val_ids = split_train_val(torch.tensor(tokenizer.encode(text)), val_fraction=0.05)
    torch.manual_seed(PRETRAIN_SEED)
    model = GPT(application_config(tokenizer.vocab_size))
    trainer = Trainer(model, train_ids, val_ids, train_config(steps, 2e-3), device=device,
                      callbacks=callbacks, tokenizer=tokenizer)
    trainer.fit()
    save_checkpoint(folder, model, tokenizer=tokenizer, state=trainer.state_dict())
    model.eval()
    return AppModel(model, tokenizer, f"pretrained just now for {steps} steps on {stories} "
                                      f"stories, and saved in {folder}")


def with_chat_tokens(pretrained: AppModel) -> AppModel:
    """A copy of the pretrained model and tokenizer that know the chat template's markers:
    new embedding rows start as the mean of the old ones. The starting point of fine-tuning,
    and the "before" of every comparison."""
    tokenizer = copy.deepcopy(pretrained.tokenizer)
    add_chat_tokens(tokenizer)
    model = resize_token_embedding(copy.deepcopy(pretrained.model), tokenizer.vocab_size)
    return AppModel(model.eval(), tokenizer, "the pretrained model with the chat markers added")


def load_or_finetune(start: AppModel, device=None, *, stories: int | None = None,
                     steps: int | None = None, callbacks=()) -> AppModel:
    """`start` (with_chat_tokens' model) fine-tuned on the task mix: loaded or trained.

    start is not changed (a copy is trained). stories: how many stories make the mix (5
    conversations each; default 2,000, 50 in quick mode); steps: optimizer steps of 8
    conversations (default 300; 8 in quick mode).
    """
    device = pick_device(device)
    folder = application_folder("finetuned")
    saved = load_saved(folder, device)
    if saved is not None:
        return saved
    stories = stories or (50 if quick_mode() else 2000)
    steps = steps or (8 if quick_mode() else 300)
    model, tokenizer = copy.deepcopy(start.model), start.tokenizer
    conversations = task_mix(generate_stories(stories, seed=TASK_SEED), seed=TASK_SEED)
    examples, _ = instruction_examples(tokenizer, conversations, CONTEXT_LENGTH)
    n_val = max(8, len(examples) // 20)
    pad = chat_token_ids(tokenizer)[PAD]
    trainer = Trainer(model, ExampleSet(examples[n_val:], pad, CONTEXT_LENGTH),
                      ExampleSet(examples[:n_val], pad, CONTEXT_LENGTH),
                      train_config(steps, 1e-3), device=device, callbacks=callbacks,
                      tokenizer=tokenizer)
    trainer.fit()
    save_checkpoint(folder, model, tokenizer=tokenizer, state=trainer.state_dict())
    model.eval()
    return AppModel(model, tokenizer, f"fine-tuned just now for {steps} steps on "
                                      f"{len(examples):,} conversations, and saved in {folder}")


# --- 3. answering, and the metrics TinyTales' facts allow ----------------------------------


def replies(model, tokenizer, conversations, max_new_tokens: int, batch_size: int = 32,
            **options) -> list[str]:
    """The model's reply to each conversation (greedy unless options say otherwise).

    conversations: lists of messages ending with a user turn. Each is written in the chat
    template with the assistant's marker; the reply ends at <|end|> (left out) or after
    max_new_tokens, never past the context. Batched with left padding (generate_batch).
    """
    end = chat_token_ids(tokenizer)[END_OF_TURN]
    prompts = [encode_chat(tokenizer, c, add_generation_prompt=True)[0] for c in conversations]
    room = model.config.context_length - max(len(p) for p in prompts)
    if room < 1:
        raise ValueError(f"a prompt has {max(len(p) for p in prompts)} tokens, no room left in "
                         f"the context of {model.config.context_length}; shorten it.")
    options.setdefault("temperature", 0)
    out = []
    for start in range(0, len(prompts), batch_size):
        rows = generate_batch(model, prompts[start:start + batch_size],
                              min(max_new_tokens, room), stop_tokens=[end], **options)
        out += [tokenizer.decode([t for t in row if t != end]) for row in rows]
    return out


def chat_answers(model, tokenizer, conversation, max_new_tokens: int = 16) -> list[str]:
    """Ask a conversation's user turns one at a time through a ChatSession (greedy): the
    model's own replies stay in the history, and the oldest turns are dropped when the
    context fills (never the system prompt, which holds the story). Returns its replies."""
    system = next((m["content"] for m in conversation if m["role"] == "system"), None)
    session = ChatSession(model, tokenizer, system, max_new_tokens=max_new_tokens, temperature=0)
    return [session.send(m["content"]) for m in conversation if m["role"] == "user"]


def facts_share(text: str, facts: list[str]) -> float:
    """The share of `facts` (words) that appear in `text` as whole words, case ignored
    ("ball" counts in "balls" too: a word starting with the fact)."""
    found = sum(bool(re.search(rf"\b{re.escape(f.lower())}", text.lower())) for f in facts)
    return found / len(facts)


def summary_names_story(summary: str, story: Story) -> bool:
    """True when a summary names the story's hero and tells the right ending: TinyTales'
    happy summaries say who "helped"; the sad ones never do."""
    names_hero = story.facts.name in summary.split() or f"{story.facts.name}'s" in summary
    happy = "helped" in summary
    return names_hero and happy == (story.facts.ending == "happy")


# --- 4. the code model ------------------------------------------------------------------------

HELD_OUT_FILES = 60     # the last files of the shuffled standard library: never trained on
# Each level of indentation becomes one tab (Python accepts tabs used consistently), so the
# tiny model need not learn to count spaces: one character per level.
TABS = re.compile(r"^(?:    )+", flags=re.MULTILINE)


def library_files() -> tuple[list[Path], list[Path]]:
    """(training files, held-out files): the standard library's code files shuffled with
    CODE_SEED; the last HELD_OUT_FILES are held out."""
    files = list(stdlib_source_files(stdlib_folder()))
    random.Random(CODE_SEED).shuffle(files)
    return files[:-HELD_OUT_FILES], files[-HELD_OUT_FILES:]


def short_functions(files, max_chars: int, max_lines: int = 12):
    """Yield the short functions and methods of `files`, dedented and indented with tabs,
    until max_chars are given: one-line signatures, no decorators, 2..max_lines lines, ASCII
    only."""
    given = 0
    for path in files:
        try:
            source = path.read_text(encoding="utf-8")
            tree = ast.parse(source)
        except (SyntaxError, UnicodeDecodeError, OSError, ValueError):
            continue
        lines = source.split("\n")
        for node in ast.walk(tree):
            if not isinstance(node, ast.FunctionDef) or node.decorator_list:
                continue
            code = textwrap.dedent("\n".join(lines[node.lineno - 1: node.end_lineno]))
            first = code.split("\n", 1)[0]
            if not (2 <= code.count("\n") + 1 <= max_lines) or not first.endswith(":") \
                    or not code.isascii() or "\t" in code:
                continue
            code = TABS.sub(lambda m: "\t" * (len(m.group(0)) // 4), code)
            yield code
            given += len(code) + 2
            if given >= max_chars:
                return


def code_text(max_chars: int | None = None) -> str:
    """The code model's corpus: short functions from the standard library's training files,
    each followed by a blank line (default 600 kB; 60 kB in quick mode)."""
    max_chars = max_chars or (60_000 if quick_mode() else 600_000)
    return "".join(code + "\n\n" for code in short_functions(library_files()[0], max_chars))


def load_or_train_code_model(device=None, *, steps: int | None = None, callbacks=()
                             ) -> tuple[AppModel, AppModel]:
    """(untrained, trained): a character-level GPT (lesson 07's shape, 128 characters of
    context) before and after training on `code_text()`; the trained one cached in runs/.
    steps: default 300 (8 in quick mode), batches of 16 windows."""
    device = pick_device(device)
    text = code_text()
    tokenizer = CharTokenizer.train(text)
    torch.manual_seed(CODE_SEED)
    config = application_config(tokenizer.vocab_size, context_length=128)
    untrained = AppModel(GPT(config).to(device).eval(), tokenizer, "untrained")
    folder = application_folder("code")
    saved = load_saved(folder, device)
    if saved is not None:
        return untrained, saved
    steps = steps or (8 if quick_mode() else 300)
    train_ids, val_ids = split_train_val(torch.tensor(tokenizer.encode(text)), val_fraction=0.05)
    model = copy.deepcopy(untrained.model)
    trainer = Trainer(model, train_ids, val_ids, train_config(steps, 2e-3, batch_size=16),
                      device=device, callbacks=callbacks, tokenizer=tokenizer)
    trainer.fit()
    save_checkpoint(folder, model, tokenizer=tokenizer, state=trainer.state_dict())
    return untrained, AppModel(model.eval(), tokenizer, f"trained just now for {steps} steps "
                                                        f"on {len(text):,} characters of code")


def function_prompts(n: int, alphabet: set[str]) -> list[dict]:
    """Up to n short functions from the held-out files: {"prompt": the def line, a newline
    and the body's indent, "body": the rest, ending with a newline}, using only characters in
    `alphabet` (the code model's vocabulary)."""
    found = []
    for code in short_functions(library_files()[1], max_chars=10 ** 9):
        lines = code.split("\n")
        indent = lines[1][: len(lines[1]) - len(lines[1].lstrip())]
        if not set(code) <= alphabet or not indent:
            continue
        prompt = lines[0] + "\n" + indent
        found.append({"prompt": prompt, "body": code[len(prompt):] + "\n"})
        if len(found) == n:
            break
    return found


def completed_function(prompt: str, completion: str) -> str:
    """The function the model wrote: prompt + completion up to where the function ends (the
    first line back at column 0), or its last complete line if it never ends."""
    lines = (prompt + completion).split("\n")
    kept = [lines[0]]
    for line in lines[1:]:
        if line.strip() and not line[0].isspace():
            return "\n".join(kept) + "\n"
        kept.append(line)
    ended = completion.endswith("\n")
    return "\n".join(kept if ended else kept[:-1]) + "\n"


def completion_parses(prompt: str, completion: str) -> bool:
    """True when the completed function is valid Python (ast.parse accepts it)."""
    try:
        ast.parse(completed_function(prompt, completion))
    except (SyntaxError, ValueError):
        return False
    return True


def complete_functions(code_model: AppModel, prompts: list[dict], max_new_tokens: int,
                       **options) -> list[str]:
    """The code model's continuation of each prompt (batched). options: generate's."""
    return generate_texts(code_model.model, code_model.tokenizer,
                          [p["prompt"] for p in prompts], max_new_tokens, **options)
