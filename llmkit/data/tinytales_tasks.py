"""What each TinyTales story teaches beyond its text: a summary, questions, a label, and
instructions in chat form, all read off the story's facts (so they are always right).

These feed the fine-tuning lessons: summarization, question answering, classification
(the ending), instruction tuning and a chatbot turn, translation.
"""

from __future__ import annotations

from llmkit.data.tinytales_english import (
    NUMBER_WORDS, PRONOUNS, helper_phrase, it, object_phrase, plural, with_article,
)
from llmkit.data.tinytales_world import Facts

LABELS = ("happy", "sad")  # the classification classes: how the story ended
OBJECT_PRONOUNS = {"girl": "her", "boy": "him"}
IN_PLACES = ("park", "garden", "forest")  # "in the park", but "at the beach"


def _owned_things(facts: Facts) -> str:
    """'red ball' or 'two red balls', to follow a possessive ('her', "Mia's")."""
    if facts.count == 1:
        return f"{facts.color} {facts.object}"
    return f"{NUMBER_WORDS[facts.count]} {facts.color} {plural(facts.object)}"


def summary(facts: Facts) -> str:
    """One sentence saying what happened: who, what, where, and how it ended."""
    name, her = facts.name, PRONOUNS[facts.group][1]
    them = it(facts)
    where = f"{'in' if facts.place in IN_PLACES else 'at'} the {facts.place}"
    owned = f"{name}'s {_owned_things(facts)}"
    what = {
        "lost": f"{name} lost {her} {_owned_things(facts)} {where}",
        "broke": f"{owned} broke {where}",
        "stuck": f"{owned} got stuck in a tree {where}",
        "taken": f"A naughty {facts.taker} took {owned} {where}",
    }[facts.problem]
    if facts.ending == "happy":
        fix = {"lost": f"find {them}", "broke": f"fix {them}", "stuck": f"get {them} down",
               "taken": f"get {them} back"}[facts.problem]
        return f"{what}, and {helper_phrase(facts)} helped {OBJECT_PRONOUNS[facts.group]} {fix}."
    outcome = {"lost": f"could not find {them}", "broke": "could not be fixed",
               "stuck": "stayed there", "taken": f"ran away with {them}"}[facts.problem]
    return f"{what} and {outcome}."


def what_happened(facts: Facts) -> str:
    """The problem in one short sentence: 'She lost it.', 'They broke.'"""
    she = PRONOUNS[facts.group][0].capitalize()
    it_ = "It" if facts.count == 1 else "They"
    return {"lost": f"{she} lost {it(facts)}.", "broke": f"{it_} broke.",
            "stuck": f"{it_} got stuck in a tree.",
            "taken": f"A naughty {facts.taker} took {it(facts)}."}[facts.problem]


def questions(facts: Facts) -> list[tuple[str, str]]:
    """Question-answer pairs whose answers are read off the facts."""
    name, her = facts.name, PRONOUNS[facts.group][1]
    things = facts.object if facts.count == 1 else plural(facts.object)
    was = "was" if facts.count == 1 else "were"
    pairs = [
        ("Who is the story about?", name),
        (f"What did {name} want to be?", with_article(facts.role)),
        (f"What did {name} have?", object_phrase(facts)),
        (f"What color {was} {name}'s {things}?", facts.color),
        (f"Where did {name} take {her} {things}?", f"to the {facts.place}"),
        (f"What happened to the {things}?", what_happened(facts)),
    ]
    if facts.problem == "taken":
        pairs.append((f"Which animal took the {things}?", with_article(facts.taker)))
    pairs += [
        (f"How did {name} feel?", facts.feeling),
        (f"Who came to help {name}?", helper_phrase(facts)),
        ("Did the story end happily?", "yes" if facts.ending == "happy" else "no"),
    ]
    return pairs


def instructions(text: str, facts: Facts, translation: str) -> list[tuple[str, str]]:
    """Instruction-response pairs about one story, for instruction tuning and chat."""
    pairs = [
        (f"Summarize this story.\n\n{text}", summary(facts)),
        (f"Is this story happy or sad?\n\n{text}", facts.ending),
        (f"Translate this story into Spanish.\n\n{text}", translation),
        (f"Write a story about a {facts.group} named {facts.name} and "
         f"{object_phrase(facts, with_color=False)}.", text),
    ]
    pairs += [(f"{text}\n\nQuestion: {q}", a) for q, a in questions(facts)]
    return pairs


# ---- short forms, for models with a small context ------------------------------------------
# A whole story is 300-400 characters, more than a character-level model of 128 reads. These
# pairs hold one sentence of the story instead: the one that answers the question.


def sentence_questions(sentences: list[str], facts: Facts) -> list[tuple[str, str]]:
    """(sentence + question, answer) pairs, each with the one sentence that holds the answer.

    Questions whose answer no single sentence spells out (the taker, "did it end happily?")
    are left out.
    """
    pairs = []
    for question, answer in questions(facts):
        needle = answer.lower().rstrip(".")
        holding = [s for s in sentences if needle in s.lower()]
        if holding:
            pairs.append((f"{holding[0]}\n\nQuestion: {question}", answer))
    return pairs


def story_chat(text: str, facts: Facts, n_turns: int = 3) -> list[dict[str, str]]:
    """A multi-turn conversation about one story: the story in the system prompt, then
    n_turns questions from the user, each answered by the assistant (answers from the facts).
    """
    turns = [{"role": "system", "content": f"Answer questions about this story.\n\n{text}"}]
    for question, answer in questions(facts)[:n_turns]:
        turns += [{"role": "user", "content": question},
                  {"role": "assistant", "content": answer}]
    return turns
