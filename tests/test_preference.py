"""DPO's loss against its formula written out, and the completion log-probabilities
against a per-token loop; the preference pairs against the stories they come from."""

import math

import pytest
import torch

from llmkit.data.tinytales import DEFAULT_WORLD, generate_stories
from llmkit.model import GPT, GPTConfig
from llmkit.preference import completion_log_probs, dpo_loss, preference_pairs
from llmkit.story_model import story_text
from llmkit.tokenizers import CharTokenizer


def test_dpo_loss_matches_the_formula_written_out():
    torch.manual_seed(0)
    pc, pr, rc, rr = (torch.randn(6, dtype=torch.float64) * 5 for _ in range(4))
    beta = 0.3
    expected = sum(math.log(1 + math.exp(-beta * ((a - c) - (b - d))))
                   for a, b, c, d in zip(pc.tolist(), pr.tolist(), rc.tolist(), rr.tolist())) / 6
    assert dpo_loss(pc, pr, rc, rr, beta=beta).item() == pytest.approx(expected, rel=1e-12)


def test_dpo_loss_is_ln2_when_the_policy_is_the_reference():
    chosen, rejected = torch.tensor([-3.0, -7.5]), torch.tensor([-2.0, -9.0])
    assert dpo_loss(chosen, rejected, chosen, rejected).item() == pytest.approx(math.log(2))


def test_dpo_gradient_raises_chosen_and_lowers_rejected():
    pc = torch.tensor([-5.0], requires_grad=True)
    pr = torch.tensor([-5.0], requires_grad=True)
    dpo_loss(pc, pr, torch.tensor([-5.0]), torch.tensor([-5.0]), beta=0.5).backward()
    assert pc.grad.item() < 0 < pr.grad.item()      # descent raises chosen, lowers rejected


def test_dpo_rejects_mismatched_shapes_and_bad_beta():
    with pytest.raises(ValueError, match="one shape"):
        dpo_loss(torch.zeros(2), torch.zeros(3), torch.zeros(2), torch.zeros(2))
    with pytest.raises(ValueError, match="beta"):
        dpo_loss(*(torch.zeros(2) for _ in range(4)), beta=0)


def test_completion_log_probs_match_a_loop_over_tokens():
    text = story_text(20)
    tokenizer = CharTokenizer.train(text)
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, context_length=64, n_layer=1,
                          n_head=2, d_model=16)).eval()
    prompts = ["Mia had a red ball. The ball was", "Tom had"]
    completions = [" red.", " a kite"]
    got = completion_log_probs(model, tokenizer, prompts, completions)
    for i, (prompt, completion) in enumerate(zip(prompts, completions)):
        ids = tokenizer.encode(prompt)
        total = 0.0
        for token in tokenizer.encode(completion):
            window = torch.tensor([ids[-64:]])
            logits, _ = model(window)
            total += torch.log_softmax(logits[0, -1].double(), -1)[token].item()
            ids.append(token)
        assert got[i].item() == pytest.approx(total, abs=1e-4)


def test_preference_pairs_prefer_the_colour_the_story_said():
    stories = generate_stories(50, seed=3)
    pairs = preference_pairs(stories, seed=1)
    known = set(story_text(2000))
    for story, pair in zip(stories, pairs):
        assert pair["chosen"] == f" {story.facts.color}."
        assert pair["rejected"] != pair["chosen"]
        assert pair["rejected"].strip(" .") in DEFAULT_WORLD.colors
        assert pair["prompt"] in story.text.replace(". But", ".") or \
            pair["prompt"].split(" The ")[0] in story.text
        assert f" {story.facts.color} " in pair["prompt"]
        assert set(pair["prompt"] + pair["rejected"]) <= known
    assert preference_pairs(stories, seed=1) == pairs
