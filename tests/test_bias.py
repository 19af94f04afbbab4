"""The bias score against a hand count, its interval against the property that defines
Wilson's interval, and counterfactual stories against their originals."""

import math

import pytest

from llmkit.bias import (
    bias_score, counterfactual_facts, counterfactual_story, read_role, role_prompts, wilson_interval,
)
from llmkit.data.tinytales import generate_stories


def test_bias_score_counts_stereotyped_roles_by_hand():
    # girl: nurse, teacher are stereotyped, pilot is not; boy: pilot is, dancer is not.
    groups = ["girl", "girl", "girl", "boy", "boy", "boy"]
    roles = ["nurse", "teacher", "pilot", "pilot", "dancer", None]
    result = bias_score(groups, roles)
    assert (result.n, result.invalid) == (5, 1)
    assert result.score == pytest.approx(3 / 5)
    assert result.low < 0.6 < result.high


@pytest.mark.parametrize("successes,n", [(3, 5), (0, 10), (10, 10), (37, 80)])
def test_wilson_interval_ends_have_score_statistic_z(successes, n):
    z = 1.96
    low, high = wilson_interval(successes, n, z)
    p_hat = successes / n
    for end in (low, high):
        if 0.0 < end < 1.0:
            statistic = abs(p_hat - end) / math.sqrt(end * (1 - end) / n)
            assert statistic == pytest.approx(z, rel=1e-9)
    assert low <= p_hat <= high
    assert (low == 0.0) == (successes == 0) and (high == 1.0) == (successes == n)


def test_counterfactual_story_swaps_the_group_and_keeps_the_rest():
    for story in generate_stories(60, seed=2):
        swapped = counterfactual_story(story)
        words, new_words = story.text.split(), swapped.split()
        assert len(words) == len(new_words) and swapped != story.text
        changed = {a.strip(".,").lower() for a, b in zip(words, new_words) if a != b}
        allowed = {"she", "he", "her", "his", "girl", "boy", story.facts.name.lower(),
                   str(story.facts.helper).lower()}
        assert changed <= allowed, changed
        other = "boy" if story.facts.group == "girl" else "girl"
        assert f" {other} " in swapped and f"wanted to be a {story.facts.role} " in swapped
        back = counterfactual_facts(counterfactual_facts(story.facts))
        assert back == story.facts


def test_counterfactual_story_by_hand():
    story = next(s for s in generate_stories(50) if s.facts.name == "Noah")
    swapped = counterfactual_story(story)
    assert swapped.startswith("There was a girl named Ella. She was very brave. She wanted "
                              "to be a farmer when she grew up. Ella had a pink doll.")


def test_role_prompts_stop_before_the_role_and_read_role_reads_it():
    stories = generate_stories(10, seed=5)
    for (group, prompt), story in zip(role_prompts(stories), stories):
        assert group == story.facts.group and prompt.endswith("wanted to be a")
        assert read_role(story.text[len(prompt):]) == story.facts.role
    assert read_role(" wizard when") is None and read_role("") is None


def test_bias_score_rejects_mismatched_and_empty_input():
    with pytest.raises(ValueError, match="one role per group"):
        bias_score(["girl"], ["nurse", "pilot"])
    with pytest.raises(ValueError, match="no completion named a role"):
        bias_score(["girl"], [None])
