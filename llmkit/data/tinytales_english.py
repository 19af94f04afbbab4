"""English rendering of a TinyTales story from its facts, sentence by sentence.

The generator's text is exactly what `english_sentences` writes, so two rules matter for
the exact probabilities in `tinytales`: every choice in `Facts` shows in the text (no two
different fact sets give the same story), and a story never contains a blank line (the
corpus separator). Small grammar rules (a/an, plurals, pronouns) keep the word lists short.
"""

from __future__ import annotations

from llmkit.data.tinytales_world import SPOTS, Facts

PRONOUNS = {"girl": ("she", "her"), "boy": ("he", "his")}  # subject, possessive
NUMBER_WORDS = {2: "two", 3: "three"}


def with_article(phrase: str) -> str:
    """'a' or 'an' before a phrase, by its first letter: 'an orange ball', 'a red ball'."""
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def plural(noun: str) -> str:
    """English plural by rule: box -> boxes, bush -> bushes, ball -> balls."""
    if noun.endswith(("s", "x", "ch", "sh")):
        return noun + "es"
    return noun + "s"



def object_phrase(facts: Facts, with_color: bool = True) -> str:
    """'a red ball' or 'two red balls' (without colour: 'a ball', 'two balls')."""
    noun = facts.object if facts.count == 1 else plural(facts.object)
    phrase = f"{facts.color} {noun}" if with_color else noun
    return with_article(phrase) if facts.count == 1 else f"{NUMBER_WORDS[facts.count]} {phrase}"


def the_object(facts: Facts) -> str:
    """'the ball' or 'the balls'."""
    return "the " + (facts.object if facts.count == 1 else plural(facts.object))


def it(facts: Facts) -> str:
    """The object pronoun for the hero's things: 'it' or 'them'."""
    return "it" if facts.count == 1 else "them"


def helper_phrase(facts: Facts) -> str:
    """Who came to help: 'her friend Tom', 'his mom', 'a kind dog'."""
    her = PRONOUNS[facts.group][1]
    if facts.helper_kind == "friend":
        return f"{her} friend {facts.helper}"
    if facts.helper_kind == "parent":
        return f"{her} {facts.helper}"
    return f"a kind {facts.helper}"


def english_sentences(facts: Facts) -> list[str]:
    """The story as a list of sentences, one per step of the plot (aligned with Spanish)."""
    she, her = PRONOUNS[facts.group]
    She = she.capitalize()
    name, obj_them = facts.name, it(facts)
    opening = (
        f"Once upon a time, there was a little {facts.group} named {name}.",
        f"There was a {facts.group} named {name}.",
        f"{name} was a little {facts.group} who lived in a small town.",
    )[facts.opening]
    things = facts.object if facts.count == 1 else plural(facts.object)
    sentences = [
        opening,
        f"{She} was very {facts.trait}.",
        f"{She} wanted to be {with_article(facts.role)} when {she} grew up.",
        f"{name} had {object_phrase(facts)}.",
        f"One {facts.time}, {she} took {her} {things} to the {facts.place}.",
    ]
    sentences.append({
        "lost": f"But {she} lost {obj_them}.",
        "broke": f"But {the_object(facts)} broke.",
        "stuck": f"But {the_object(facts)} got stuck in a tree.",
        "taken": f"But a naughty {facts.taker} took {obj_them}.",
    }[facts.problem])
    sentences.append(f"{name} felt {facts.feeling}.")
    sentences.append(f"Then {helper_phrase(facts)} came to help.")
    if facts.ending == "happy":
        sentences.append(_happy_solution(facts))
        sentences.append((f"{name} was happy again.",
                          f"{name} smiled and said thank you.")[facts.final])
    else:
        was = "it was" if facts.count == 1 else "they were"
        sentences.append({
            "lost": f"They looked everywhere, but they could not find {obj_them}.",
            "broke": f"They tried to fix {obj_them}, but they could not.",
            "stuck": f"They tried to get {obj_them} down, but {was} too high.",
            "taken": f"The {facts.taker} ran away with {obj_them}.",
        }[facts.problem])
        sentences.append((f"{name} was sad, but {she} learned to be more careful.",
                          f"{name} cried a little and then went home.")[facts.final])
    return sentences


def _happy_solution(facts: Facts) -> str:
    """How the problem was solved: where it was found, what fixed it, ..."""
    obj_them = it(facts)
    if facts.problem == "lost":
        spot = SPOTS[facts.detail]
        return (f"They looked everywhere and found {obj_them} "
                f"{spot.en_preposition} {with_article(spot.noun.en)}.")
    if facts.problem == "broke":
        return f"They fixed {obj_them} with some {facts.detail}."
    if facts.problem == "stuck":
        return f"They got {obj_them} down with {with_article(facts.detail)}."
    return (f"They gave the {facts.taker} {with_article(facts.detail)}, "
            f"and the {facts.taker} gave {obj_them} back.")

