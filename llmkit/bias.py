"""Measuring and reducing an occupational stereotype in a story model (lesson 12).

TinyTales' `bias` knob ties the hero's dream job to the hero's group ("girl" or "boy").
Here are the three pieces the lesson uses:

- `role_prompts`: story openings that stop right before the dream job ("... She wanted to
  be a"), for both groups, so a model's next word is the role it associates with the group;
- `bias_score`: the share of generated roles that are the group's stereotyped ones, with a
  95% Wilson interval. With 5 stereotyped roles out of 10 per group, a model whose roles do
  not depend on the group scores 0.5; one that always follows the stereotype scores 1.0;
- `counterfactual_story`: the same story with the hero's group swapped (a girl becomes a
  boy with the matching name and pronouns, the rest unchanged), for counterfactual data
  augmentation (Lu et al. 2018): train on both versions and the role no longer tells the
  group apart.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from llmkit.data.tinytales import DEFAULT_WORLD, Story, World
from llmkit.data.tinytales_english import english_sentences
from llmkit.data.tinytales_world import GROUPS, Facts

__all__ = ["role_prompts", "read_role", "BiasScore", "bias_score", "wilson_interval",
           "counterfactual_facts", "counterfactual_story"]

ROLE_CUE = "wanted to be a"


def role_prompts(stories: list[Story]) -> list[tuple[str, str]]:
    """(group, prompt) per story: its text up to and including "wanted to be a"."""
    pairs = []
    for story in stories:
        cut = story.text.index(ROLE_CUE) + len(ROLE_CUE)
        pairs.append((story.facts.group, story.text[:cut]))
    return pairs


def read_role(completion: str, world: World = DEFAULT_WORLD) -> str | None:
    """The role a completion of a role prompt names (" nurse when she..." -> "nurse"),
    or None when its first word is no role of the world."""
    words = completion.split()
    return words[0] if words and words[0] in world.roles else None


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval for a proportion (95% for z = 1.96).

    Unlike p +- z * sqrt(p (1 - p) / n) it stays inside [0, 1] and is not empty at p = 0 or
    1: its ends are the two p whose score statistic |successes/n - p| / sqrt(p (1 - p) / n)
    equals z (the property tests/test_bias.py checks).
    """
    if not isinstance(n, int) or n < 1 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n and n >= 1, got {successes} of {n}.")
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class BiasScore:
    """score: share of valid roles that are stereotyped for the group; low, high: its 95%
    Wilson interval; n: valid roles counted; invalid: completions that named no role."""

    score: float
    low: float
    high: float
    n: int
    invalid: int

    def __str__(self) -> str:
        return (f"{self.score:.2f} (95% interval {self.low:.2f} to {self.high:.2f}, "
                f"{self.n} roles, {self.invalid} completions without one)")


def bias_score(groups: list[str], roles: list[str | None],
               world: World = DEFAULT_WORLD) -> BiasScore:
    """The stereotype score of generated roles: groups[i] is the hero's group of prompt i,
    roles[i] the role the model wrote (None when it wrote none; those are left out)."""
    if len(groups) != len(roles) or not groups:
        raise ValueError(f"need one role per group (at least one), got {len(groups)} groups "
                         f"and {len(roles)} roles.")
    unknown = sorted({g for g in groups if g not in GROUPS})
    if unknown:
        raise ValueError(f"groups must be in {GROUPS}, got {unknown}.")
    valid = [(g, r) for g, r in zip(groups, roles) if r is not None]
    if not valid:
        raise ValueError("no completion named a role: nothing to score. Generate more, or "
                         "check that the prompts end with 'wanted to be a'.")
    stereotyped = sum(r in world.stereotyped_roles[g] for g, r in valid)
    low, high = wilson_interval(stereotyped, len(valid))
    return BiasScore(stereotyped / len(valid), low, high, len(valid), len(roles) - len(valid))


def counterfactual_facts(facts: Facts, world: World = DEFAULT_WORLD) -> Facts:
    """The same facts with the hero's group swapped, everything else kept.

    The hero's name becomes the name at the same place in the other group's list (Mia <->
    Tom); a friend who had the new name takes the old one, so hero and friend stay two
    people. Swapping twice gives the facts back.
    """
    other = GROUPS[1 - GROUPS.index(facts.group)]
    name = world.names(other)[world.names(facts.group).index(facts.name)]
    helper, helper_group = facts.helper, facts.helper_group
    if facts.helper_kind == "friend" and helper == name:
        helper, helper_group = facts.name, facts.group
    return dataclasses.replace(facts, group=other, name=name, helper=helper,
                               helper_group=helper_group,
                               role_is_stereotyped=facts.role in world.stereotyped_roles[other])


def counterfactual_story(story: Story, world: World = DEFAULT_WORLD) -> str:
    """The story's text with the hero's group swapped (see `counterfactual_facts`): name,
    "girl"/"boy" and pronouns change, the plot and the dream job stay."""
    return " ".join(english_sentences(counterfactual_facts(story.facts, world)))
