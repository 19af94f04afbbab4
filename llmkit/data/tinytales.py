"""TinyTales: short, simple stories from a small world, with the exact probability of each.

    Mia had a red ball. One day, she took her ball to the park. But she lost it. ...

`generate_stories(n, seed)` draws stories one choice at a time (who, which object, what
went wrong, who helped, how it ended) from a seeded random generator, and keeps the
choices as `Facts`. From the facts come the English text, a Spanish translation built by
grammar rules, a summary, question-answer pairs, a label and instruction pairs, so one
generator yields every dataset of the course (`tinytales_tasks` writes those).

Because each choice has a known probability, the probability of a whole story is their
product, `Story.log_prob` (natural log). The English text shows every choice, so no two
choice paths write the same story and that product is exactly the probability of the
text. The corpus is i.i.d. stories, each followed by a blank line, so
`entropy_floor_bits_per_char` (total -log2 p over total characters) is the lowest loss
that any model can reach on it, in bits per character.

`bias` (0 to 1) ties the hero's dream job to the hero's group ("girl" or "boy"), the
stereotype lesson 12 measures in a trained model and then removes.
"""

from __future__ import annotations

import math
import random
from bisect import bisect_right
from dataclasses import dataclass
from functools import cached_property

from llmkit.data.tinytales_english import english_sentences
from llmkit.data.tinytales_spanish import spanish_sentences
from llmkit.data.tinytales_tasks import LABELS, instructions, questions, summary
from llmkit.data.tinytales_world import (
    ENDINGS, GROUPS, HELPER_KINDS, PROBLEMS, Facts, World, group_of,
)

SEPARATOR = "\n\n"  # follows every story in the corpus; no story contains it
DEFAULT_WORLD = World()

__all__ = [
    "DEFAULT_WORLD", "LABELS", "SEPARATOR", "Story", "World", "Facts", "generate_stories",
    "role_probabilities", "tinytales_text",
    "entropy_floor_bits_per_char", "summarization_pairs", "qa_examples",
    "classification_examples", "instruction_pairs", "chat_examples", "translation_pairs",
]


@dataclass(frozen=True)
class Story:
    """One story: its text, the facts behind it, and the exact log-probability of the text.

    text: the English story, one line; log_prob: natural log of the probability that the
    generator writes exactly this text; facts: every choice made (see `Facts`).
    The rest is derived from the facts on first use (so drawing 100k stories stays fast):
    summary (one sentence), qa [(question, answer)], label ("happy" or "sad"), translation
    (Spanish), instructions [(instruction, response)], and both texts as sentence lists.
    """

    text: str
    log_prob: float
    facts: Facts

    @cached_property
    def sentences(self) -> list[str]:
        return english_sentences(self.facts)

    @cached_property
    def spanish_sentences(self) -> list[str]:
        return spanish_sentences(self.facts)

    @cached_property
    def translation(self) -> str:
        return " ".join(self.spanish_sentences)

    @cached_property
    def summary(self) -> str:
        return summary(self.facts)

    @cached_property
    def qa(self) -> list[tuple[str, str]]:
        return questions(self.facts)

    @property
    def label(self) -> str:
        """How the story ended, "happy" or "sad" (one of LABELS)."""
        return self.facts.ending

    @cached_property
    def instructions(self) -> list[tuple[str, str]]:
        return instructions(self.text, self.facts, self.translation)


class _Categorical:
    """A fixed distribution over options, sampled with one uniform number and a bisection."""

    def __init__(self, options, weights=None):
        if weights is None:
            weights = [1.0] * len(options)
        kept = [(o, w) for o, w in zip(options, weights) if w > 0]  # never draw p = 0
        total = sum(w for _, w in kept)
        self.options = [o for o, _ in kept]
        self.log_probs = [math.log(w / total) for _, w in kept]
        cumulative, running = [], 0.0
        for _, w in kept:
            running += w / total
            cumulative.append(running)
        cumulative[-1] = math.inf  # rounding must never leave u past the last option
        self.cumulative = cumulative

    def draw(self, u: float):
        """The option for a uniform number u in [0, 1), and its log-probability."""
        i = bisect_right(self.cumulative, u)
        return self.options[i], self.log_probs[i]


def role_probabilities(group: str, bias: float, world: World = DEFAULT_WORLD) -> dict[str, float]:
    """P(role | hero's group): a mix of the stereotyped roles (weight `bias`) and all roles.

    bias = 0 makes the role independent of the group; bias = 1 draws only the group's
    stereotyped roles (`world.stereotyped_roles`)."""
    if group not in GROUPS or not 0.0 <= bias <= 1.0:
        raise ValueError(f"expected a group in {GROUPS} and a bias in [0, 1], "
                         f"got group={group!r}, bias={bias}.")
    stereotyped = [r for r in world.roles if r in world.stereotyped_roles[group]]
    return {r: bias * (r in stereotyped) / len(stereotyped) + (1.0 - bias) / len(world.roles)
            for r in world.roles}


class _Sampler:
    """The story grammar as a sequence of draws; adds up the log-probability as it goes."""

    def __init__(self, world: World, bias: float):
        self.world = w = world
        uniform = _Categorical  # no weights: every option equally likely
        self.group = uniform(GROUPS)
        self.names = {g: uniform(w.names(g)) for g in GROUPS}
        everyone = w.girl_names + w.boy_names
        self.friends = {n: uniform([f for f in everyone if f != n]) for n in everyone}
        self.roles = {g: _Categorical(*zip(*role_probabilities(g, bias, w).items()))
                      for g in GROUPS}
        self.openings, self.traits = uniform(w.openings), uniform(w.traits)
        self.count = _Categorical((1, 2, 3), w.count_weights)
        self.colors, self.objects = uniform(w.colors), uniform(w.objects)
        self.times, self.places = uniform(w.times), uniform(w.places)
        self.problems, self.animals = uniform(PROBLEMS), uniform(w.animals)
        self.feelings = uniform(w.feelings)
        self.helper_kind = _Categorical(HELPER_KINDS, w.helper_weights)
        self.parents = uniform(w.parents)
        self.ending = _Categorical(ENDINGS, (w.happy_probability, 1.0 - w.happy_probability))
        self.details = {"lost": uniform(w.spots), "broke": uniform(w.glues),
                        "stuck": uniform(w.reachers), "taken": uniform(w.treats)}
        self.finals = uniform(w.finals)

    def sample(self, rng: random.Random) -> tuple[Facts, float]:
        """Draw one story's facts; returns (facts, natural-log probability of the draws)."""
        log_p = 0.0

        def draw(categorical):
            nonlocal log_p
            option, lp = categorical.draw(rng.random())
            log_p += lp
            return option

        group = draw(self.group)
        name = draw(self.names[group])
        opening, trait = draw(self.openings), draw(self.traits)
        role = draw(self.roles[group])
        count, color, obj = draw(self.count), draw(self.colors), draw(self.objects)
        time, place = draw(self.times), draw(self.places)
        problem = draw(self.problems)
        taker = draw(self.animals) if problem == "taken" else None
        feeling = draw(self.feelings)
        helper_kind = draw(self.helper_kind)
        helper = draw({"friend": self.friends[name], "parent": self.parents,
                       "animal": self.animals}[helper_kind])
        ending = draw(self.ending)
        detail = draw(self.details[problem]) if ending == "happy" else None
        final = draw(self.finals)
        facts = Facts(
            name=name, group=group, opening=opening, trait=trait, role=role, count=count,
            color=color, object=obj, time=time, place=place, problem=problem, taker=taker,
            feeling=feeling, helper_kind=helper_kind, helper=helper,
            helper_group=group_of(helper, self.world) if helper_kind == "friend" else None,
            ending=ending, detail=detail, final=final,
            role_is_stereotyped=role in self.world.stereotyped_roles[group],
        )
        return facts, log_p


def generate_stories(n: int, seed: int = 0, bias: float = 0.0,
                     world: World | None = None) -> list[Story]:
    """Draw `n` stories, the same ones for the same (seed, bias, world).

    The first k stories of a call do not depend on n, so a longer corpus extends a shorter
    one. bias in [0, 1] ties dream jobs to the hero's group (see `role_probabilities`);
    world (default: the full one) restricts the words, e.g. to a tiny world for tests.
    """
    if not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be a non-negative int (how many stories), got {n!r}.")
    if not 0.0 <= bias <= 1.0:
        raise ValueError(f"bias must be between 0 (none) and 1 (always stereotyped), got {bias}.")
    sampler = _Sampler(world if world is not None else DEFAULT_WORLD, float(bias))
    rng = random.Random(seed)
    stories = []
    for _ in range(n):
        facts, log_prob = sampler.sample(rng)
        stories.append(Story(" ".join(english_sentences(facts)), log_prob, facts))
    return stories


def tinytales_text(n_stories: int, seed: int = 0, bias: float = 0.0,
                   world: World | None = None) -> str:
    """The pretraining corpus: `n_stories` stories, each followed by SEPARATOR (a blank line)."""
    return "".join(s.text + SEPARATOR for s in generate_stories(n_stories, seed, bias, world))


def entropy_floor_bits_per_char(stories: list[Story]) -> float:
    """The corpus's entropy in bits per character: the lowest loss any model can reach.

    Equals -log2 P(corpus) / len(corpus) for the text `tinytales_text` writes from these
    stories (each followed by SEPARATOR, whose characters count too)."""
    stories = _check_stories(stories)
    bits = -sum(s.log_prob for s in stories) / math.log(2)
    return bits / sum(len(s.text) + len(SEPARATOR) for s in stories)


def _check_stories(stories) -> list[Story]:
    stories = list(stories)
    if not stories or not all(isinstance(s, Story) for s in stories):
        raise ValueError(
            "expected a non-empty list of Story objects, as generate_stories returns; got "
            f"{type(stories[0]).__name__ if stories else 'an empty list'}."
        )
    return stories


# ---- Datasets for fine-tuning, as plain lists --------------------------------------------

def summarization_pairs(stories: list[Story]) -> list[tuple[str, str]]:
    """(story text, one-sentence summary) pairs."""
    return [(s.text, s.summary) for s in _check_stories(stories)]


def qa_examples(stories: list[Story]) -> list[dict[str, str]]:
    """Question answering: dicts with "story", "question" and "answer"."""
    return [{"story": s.text, "question": q, "answer": a}
            for s in _check_stories(stories) for q, a in s.qa]


def classification_examples(stories: list[Story]) -> list[tuple[str, str]]:
    """(story text, label) pairs; the labels are LABELS ("happy", "sad"): how it ended."""
    return [(s.text, s.label) for s in _check_stories(stories)]


def instruction_pairs(stories: list[Story]) -> list[tuple[str, str]]:
    """(instruction, response) pairs: summarize, classify, translate, write, answer."""
    return [pair for s in _check_stories(stories) for pair in s.instructions]


def chat_examples(stories: list[Story]) -> list[list[dict[str, str]]]:
    """The instruction pairs as chat conversations: [{"role": "user", "content": ...},
    {"role": "assistant", "content": ...}], the message format of chat templates."""
    return [[{"role": "user", "content": instruction},
             {"role": "assistant", "content": response}]
            for instruction, response in instruction_pairs(stories)]


def translation_pairs(stories: list[Story], by_sentence: bool = False) -> list[tuple[str, str]]:
    """(English, Spanish) pairs: whole stories, or aligned sentences with by_sentence=True
    (short pairs suit a small model's context)."""
    stories = _check_stories(stories)
    if by_sentence:
        return [pair for s in stories for pair in zip(s.sentences, s.spanish_sentences)]
    return [(s.text, s.translation) for s in stories]
