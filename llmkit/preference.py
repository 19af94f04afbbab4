"""Preference tuning with DPO (Rafailov et al. 2023), the reference for lesson 12.

A preference pair is a prompt and two completions, one preferred ("chosen") and one not
("rejected"). DPO trains the policy so that, relative to a frozen reference model, the
chosen completion gains log-probability over the rejected one:

    loss = -log sigmoid(beta * [(log pi(chosen) - log ref(chosen))
                               - (log pi(rejected) - log ref(rejected))])

where log pi(completion) is the sum of the completion's token log-probabilities given the
prompt. When the policy equals the reference the bracket is 0 and the loss is ln 2.

The pairs here are ones the course can judge: a TinyTales story says what colour the
hero's things are, and the prompt asks for that colour again ("... The doll was"); the
story's colour is chosen, another colour rejected. Every character is one the story model
already knows, so the pretrained character-level model takes them as they are.
"""

from __future__ import annotations

import random

import torch
import torch.nn.functional as F

from llmkit.data.tinytales import DEFAULT_WORLD, Story
from llmkit.data.tinytales_english import plural

__all__ = ["preference_pairs", "completion_log_probs", "dpo_loss"]


def preference_pairs(stories: list[Story], seed: int = 0) -> list[dict[str, str]]:
    """One {"prompt", "chosen", "rejected"} dict per story: recall the colour of its things.

    prompt: the story's "Mia had a red ball." sentence and the next one, then "The ball
    was" (or "The balls were"); chosen: " red." (the story's colour); rejected: another of
    the world's colours, drawn with `seed`.
    """
    if not stories or not all(isinstance(s, Story) for s in stories):
        raise ValueError("preference_pairs takes a non-empty list of TinyTales stories "
                         "(llmkit.data.tinytales.generate_stories).")
    rng = random.Random(seed)
    pairs = []
    for story in stories:
        facts = story.facts
        sentences = story.sentences
        has = next(i for i, s in enumerate(sentences) if s.startswith(f"{facts.name} had "))
        things = facts.object if facts.count == 1 else plural(facts.object)
        was = "was" if facts.count == 1 else "were"
        prompt = " ".join(sentences[has:has + 2]) + f" The {things} {was}"
        wrong = rng.choice([c for c in DEFAULT_WORLD.colors if c != facts.color])
        pairs.append({"prompt": prompt, "chosen": f" {facts.color}.", "rejected": f" {wrong}."})
    return pairs


def completion_log_probs(model, tokenizer, prompts: list[str], completions: list[str],
                         device=None) -> torch.Tensor:
    """Sum of log p(completion token | everything before it), one per pair -> (B,).

    Prompt and completion are encoded apart and joined, right-padded into one batch; a pair
    longer than context_length + 1 tokens loses the start of its prompt (one window, not a
    sliding one). Gradients flow (so DPO
    and SFT train through it). Checked against a per-token loop in tests/test_preference.py.
    """
    if len(prompts) != len(completions) or not prompts:
        raise ValueError(f"need as many completions as prompts (at least one), got "
                         f"{len(prompts)} prompts and {len(completions)} completions.")
    context = model.config.context_length
    rows, starts = [], []
    for prompt, completion in zip(prompts, completions):
        answer = tokenizer.encode(completion)
        if not answer or len(answer) >= context:
            raise ValueError(f"a completion must be 1 to {context - 1} tokens, got "
                             f"{len(answer)} for {completion!r}.")
        ids = (tokenizer.encode(prompt) + answer)[-(context + 1):]
        rows.append(ids)
        starts.append(len(ids) - len(answer))          # index of the first completion token
    device = device if device is not None else next(model.parameters()).device
    width = max(len(r) for r in rows)
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    scored = torch.zeros(len(rows), width - 1, dtype=torch.bool)  # which targets count
    for i, (row, start) in enumerate(zip(rows, starts)):
        ids[i, :len(row)] = torch.tensor(row)
        scored[i, start - 1:len(row) - 1] = True       # target t+1 is predicted at position t
    ids, scored = ids.to(device), scored.to(device)
    logits, _ = model(ids[:, :-1])
    log_probs = F.log_softmax(logits.float(), dim=-1).gather(-1, ids[:, 1:, None]).squeeze(-1)
    return (log_probs * scored).sum(dim=-1)


def dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor,
             reference_chosen: torch.Tensor, reference_rejected: torch.Tensor,
             beta: float = 0.1) -> torch.Tensor:
    """DPO's loss, averaged over the batch. Each argument: (B,) summed log-probabilities.

    beta sets how far the policy may move from the reference (larger: it stays closer).
    Equals ln 2 when policy == reference; checked against the formula in tests.
    """
    tensors = (policy_chosen, policy_rejected, reference_chosen, reference_rejected)
    if len({tuple(t.shape) for t in tensors}) != 1:
        raise ValueError(f"the four log-probability tensors must have one shape (B,), got "
                         f"{[tuple(t.shape) for t in tensors]}.")
    if not beta > 0:
        raise ValueError(f"beta must be positive (e.g. 0.1), got {beta}.")
    margin = (policy_chosen - reference_chosen) - (policy_rejected - reference_rejected)
    return -F.logsigmoid(beta * margin).mean()
