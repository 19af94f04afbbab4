"""TinyTales: seeded stories, their exact probabilities, translation, bias and datasets.

The probabilities are checked against sampling (a tiny world has few enough stories to
see each one many times), the floor against the corpus string itself, the Spanish against
hand-written sentences, and the bias against associations counted in the text.
"""

import math
import re
from collections import Counter, defaultdict
from dataclasses import replace

import pytest

from llmkit.data.tinytales import (
    LABELS, SEPARATOR, Facts, World, chat_examples, classification_examples,
    entropy_floor_bits_per_char, generate_stories, instruction_pairs, qa_examples,
    summarization_pairs, tinytales_text, translation_pairs,
)
from llmkit.data.tinytales_english import english_sentences
from llmkit.data.tinytales_spanish import (
    adjective, plural, preterite, spanish_sentences, with_preposition,
)
from llmkit.data.tinytales_world import COLORS, STEREOTYPED_ROLES

# Two tiny worlds whose every story is likely enough to be drawn many times in 80k draws.
# The first varies the plot: 2 groups x 2 roles x 3 counts x 4 problems x 3 helper kinds
# x 2 endings = 288 stories.
TINY_PLOT = World(
    girl_names=("Mia",), boy_names=("Tom",), openings=(0,), traits=("kind",),
    roles=("nurse", "pilot"), colors=("red",), objects=("ball",), times=("day",),
    places=("park",), animals=("dog",), feelings=("sad",), parents=("mom",),
    spots=("bench",), glues=("glue",), reachers=("ladder",), treats=("apple",), finals=(0,),
    count_weights=(0.5, 0.3, 0.2), helper_weights=(0.4, 0.35, 0.25), happy_probability=0.6,
    stereotyped_roles={"girl": ("nurse",), "boy": ("pilot",)},
)
# The second varies the words and sentence patterns, with one count and a happy ending
# (weights of 0): 3 heroes x 2 openings x 2 roles x 4 problems x (2 friends + 2 parents
# + 1 animal) x 2 closings = 480 stories.
TINY_WORDS = replace(
    TINY_PLOT, girl_names=("Mia", "Lily"), openings=(0, 2), parents=("mom", "dad"),
    finals=(0, 1), count_weights=(1.0, 0.0, 0.0), happy_probability=1.0,
)


def test_same_seed_same_stories_different_seed_different_stories():
    a, b = generate_stories(50, seed=7), generate_stories(50, seed=7)
    assert [s.text for s in a] == [s.text for s in b]
    assert [s.log_prob for s in a] == [s.log_prob for s in b]
    other = generate_stories(50, seed=8)
    assert sum(x.text != y.text for x, y in zip(a, other)) > 45
    # A longer draw extends a shorter one.
    assert [s.text for s in generate_stories(80, seed=7)[:50]] == [s.text for s in a]


@pytest.mark.slow
@pytest.mark.parametrize("world, bias, n_paths", [(TINY_PLOT, 0.7, 288), (TINY_WORDS, 0.0, 480)])
def test_log_prob_is_the_exact_probability_of_the_text(world, bias, n_paths):
    n = 80_000
    stories = generate_stories(n, seed=1, bias=bias, world=world)
    counts = Counter(s.text for s in stories)
    log_probs = defaultdict(set)
    for s in stories:
        log_probs[s.text].add(round(s.log_prob, 9))
    # One text, one probability; and every choice path was seen and gave its own text.
    assert all(len(v) == 1 for v in log_probs.values())
    assert len(counts) == len({s.facts for s in stories}) == n_paths
    probs = {text: math.exp(v.pop()) for text, v in log_probs.items()}
    # Distinct texts partition the probability: any two paths sharing a text would leave
    # the sum short of 1.
    assert math.isclose(sum(probs.values()), 1.0, abs_tol=1e-9)
    # Sampled frequencies agree with exp(log_prob) (chi-square and each text alone).
    chi2 = sum((counts[t] - n * p) ** 2 / (n * p) for t, p in probs.items())
    dof = len(probs) - 1
    assert chi2 < dof + 5 * math.sqrt(2 * dof), chi2
    assert max(abs(counts[t] - n * p) / math.sqrt(n * p) for t, p in probs.items()) < 5


def test_different_facts_give_different_texts_in_the_full_world():
    stories = generate_stories(20_000, seed=2, bias=0.5)
    texts = {s.text for s in stories}
    assert len(texts) == len({s.facts for s in stories})
    assert len(texts) > 0.999 * len(stories)  # varied: nearly every story is new
    assert all("\n" not in s.text for s in stories)
    for s in stories[:200]:  # the text is rendered from the facts it carries
        assert s.text == " ".join(english_sentences(s.facts))


def test_changing_any_one_choice_changes_the_text():
    """Each choice shows in the text: swap one fact for any other allowed value and the
    story reads differently (the sampling test above covers combinations in tiny worlds)."""
    world = World()
    alternatives = {
        "opening": world.openings, "trait": world.traits, "role": world.roles,
        "count": (1, 2, 3), "color": world.colors, "object": world.objects,
        "time": world.times, "place": world.places, "feeling": world.feelings,
        "final": world.finals,
    }
    for s in generate_stories(40, seed=9):
        f = s.facts
        options = dict(alternatives, name=world.names(f.group))
        if f.problem == "taken":
            options["taker"] = world.animals
        if f.ending == "happy":
            options["detail"] = {"lost": world.spots, "broke": world.glues,
                                 "stuck": world.reachers, "taken": world.treats}[f.problem]
        if f.helper_kind != "friend":
            options["helper"] = world.parents if f.helper_kind == "parent" else world.animals
        for field, values in options.items():
            for value in values:
                if value != getattr(f, field):
                    changed = " ".join(english_sentences(replace(f, **{field: value})))
                    assert changed != s.text, (field, value)


def test_entropy_floor_is_total_bits_over_corpus_characters():
    stories = generate_stories(300, seed=3, bias=0.5)
    corpus = tinytales_text(300, seed=3, bias=0.5)
    assert corpus.split(SEPARATOR)[:-1] == [s.text for s in stories]
    expected = sum(-s.log_prob / math.log(2) for s in stories) / len(corpus)
    assert math.isclose(entropy_floor_bits_per_char(stories), expected, rel_tol=1e-12)
    assert 0 < expected < 1


def _facts(**changes) -> Facts:
    base = Facts(name="Mia", group="girl", opening=0, trait="curious", role="dancer", count=1,
                 color="red", object="ball", time="day", place="park", problem="lost",
                 taker=None, feeling="worried", helper_kind="parent", helper="dad",
                 helper_group=None, ending="happy", detail="bench", final=0,
                 role_is_stereotyped=True)
    return replace(base, **changes)


def test_spanish_agrees_in_gender_and_number():
    girl = spanish_sentences(_facts())
    assert girl[:5] == [
        "Érase una vez una niña pequeña llamada Mia.", "Era muy curiosa.",
        "De mayor, quería ser bailarina.", "Mia tenía una pelota roja.",
        "Un día, llevó su pelota al parque.",
    ]
    assert girl[5:] == ["Pero la perdió.", "Mia se sintió preocupada.",
                        "Entonces su papá vino a ayudar.",
                        "Buscaron por todas partes y la encontraron debajo de un banco.",
                        "Mia estaba feliz otra vez."]
    trucks = spanish_sentences(_facts(
        name="Tom", group="boy", opening=1, count=3, color="blue", object="truck",
        time="afternoon", place="beach", problem="stuck", helper_kind="friend",
        helper="Lily", helper_group="girl", ending="sad", detail=None, final=1))
    assert trucks[0] == "Había un niño llamado Tom."
    assert trucks[1:4] == ["Era muy curioso.", "De mayor, quería ser bailarín.",
                           "Tom tenía tres camiones azules."]
    assert trucks[4:] == [
        "Una tarde, llevó sus camiones a la playa.",
        "Pero los camiones se quedaron atascados en un árbol.",
        "Tom se sintió preocupado.", "Entonces su amiga Lily vino a ayudar.",
        "Intentaron bajarlos, pero estaban demasiado altos.",
        "Tom lloró un poco y luego se fue a casa.",
    ]
    kites = spanish_sentences(_facts(count=2, color="orange", object="kite",
                                     problem="taken", taker="goat", detail="cookie"))
    assert kites[3] == "Mia tenía dos cometas naranja."  # colour nouns stay invariable
    assert kites[5] == "Pero una cabra traviesa se las llevó."
    assert kites[8] == "Le dieron una galleta a la cabra, y la cabra las devolvió."
    boats = spanish_sentences(_facts(count=2, object="boat", problem="broke", ending="sad"))
    assert boats[5] == "Pero los barcos se rompieron."
    assert boats[8] == "Intentaron arreglarlos, pero no pudieron."


def test_spanish_word_rules_on_hand_checked_words():
    assert [plural(w) for w in ("pelota", "tren", "camión", "jardín", "árbol", "azul")] == \
        ["pelotas", "trenes", "camiones", "jardines", "árboles", "azules"]
    assert [adjective(COLORS["yellow"], f, p) for f in (False, True) for p in (False, True)] == \
        ["amarillo", "amarillos", "amarilla", "amarillas"]
    assert [preterite(v, p) for v, p in (("perder", False), ("buscar", True),
                                         ("romper", True), ("venir", False))] == \
        ["perdió", "buscaron", "rompieron", "vino"]
    assert with_preposition("a", "el parque") == "al parque"
    assert with_preposition("de", "el río") == "del río"
    assert with_preposition("a", "la playa") == "a la playa"


def test_english_articles_and_plurals():
    orange = english_sentences(_facts(color="orange", object="box"))
    assert orange[3] == "Mia had an orange box."
    boxes = english_sentences(_facts(count=2, object="box", problem="broke", ending="sad"))
    assert boxes[3:6] == ["Mia had two red boxes.", "One day, she took her boxes to the park.",
                          "But the boxes broke."]
    assert boxes[8] == "They tried to fix them, but they could not."


def test_both_languages_have_aligned_sentences():
    for s in generate_stories(300, seed=4):
        english, spanish = s.sentences, s.spanish_sentences
        assert len(english) == len(spanish) == 10
        assert s.translation == " ".join(spanish)
        numbers = {1: ("un", "una"), 2: ("dos",), 3: ("tres",)}[s.facts.count]
        assert spanish[3].split()[2] in numbers


def _stereotyped_share(stories, group):
    """From the text alone: the share of a group's heroes who dream of a stereotyped job."""
    hits = total = 0
    for s in stories:
        hero = re.search(r"\b(girl|boy) named (\w+)|(\w+) was a little (girl|boy)", s.text)
        job = re.search(r"wanted to be an? (\w+) when", s.text).group(1)
        if (hero.group(1) or hero.group(4)) == group:
            total += 1
            hits += job in STEREOTYPED_ROLES[group]
    return hits / total


def test_bias_ties_roles_to_groups():
    stories = {b: generate_stories(3000, seed=5, bias=b) for b in (0.0, 0.5, 1.0)}
    for group in ("girl", "boy"):
        share = len(STEREOTYPED_ROLES[group]) / 10  # 5 of the 10 roles
        assert abs(_stereotyped_share(stories[0.0], group) - share) < 0.05
        assert abs(_stereotyped_share(stories[0.5], group) - (0.5 + 0.5 * share)) < 0.05
        assert _stereotyped_share(stories[1.0], group) == 1.0
    for s in stories[0.5]:
        assert s.facts.role_is_stereotyped == (s.facts.role in STEREOTYPED_ROLES[s.facts.group])


def test_derived_datasets_agree_with_the_facts():
    stories = generate_stories(200, seed=6)
    for s in stories:
        f = s.facts
        answers = dict(s.qa)
        assert answers["Who is the story about?"] == f.name
        assert answers[f"What did {f.name} want to be?"].split()[-1] == f.role
        assert f.color in answers[f"What did {f.name} have?"]
        assert f.place in answers[next(q for q in answers if q.startswith("Where"))]
        assert answers[f"How did {f.name} feel?"] == f.feeling
        assert answers[f"Who came to help {f.name}?"].split()[-1] == f.helper
        assert answers["Did the story end happily?"] == {"happy": "yes", "sad": "no"}[f.ending]
        for question, answer in s.qa:
            if question.startswith("What happened"):
                verb = {"lost": "lost", "broke": "broke", "stuck": "stuck", "taken": "took"}
                assert verb[f.problem] in answer
            elif question.startswith("Which animal"):
                assert answer.split()[-1] == f.taker
            elif answer not in ("yes", "no"):  # the other answers are quoted from the story
                assert answer in s.text
        assert f.name in s.summary and f.object in s.summary and f.place in s.summary
        assert s.label == f.ending and s.label in LABELS
    assert summarization_pairs(stories)[0] == (stories[0].text, stories[0].summary)
    assert classification_examples(stories) == [(s.text, s.facts.ending) for s in stories]
    assert len(qa_examples(stories)) == sum(len(s.qa) for s in stories)
    pairs = instruction_pairs(stories[:5])
    assert (f"Summarize this story.\n\n{stories[0].text}", stories[0].summary) in pairs
    assert (f"Translate this story into Spanish.\n\n{stories[0].text}",
            stories[0].translation) in pairs
    chats = chat_examples(stories[:5])
    assert [[m["role"] for m in chat] for chat in chats] == [["user", "assistant"]] * len(pairs)
    assert [(c[0]["content"], c[1]["content"]) for c in chats] == pairs
    by_sentence = translation_pairs(stories[:5], by_sentence=True)
    assert " ".join(en for en, _ in by_sentence[:10]) == stories[0].text
    assert translation_pairs(stories[:1]) == [(stories[0].text, stories[0].translation)]


def test_bad_arguments_say_what_to_do():
    with pytest.raises(ValueError, match="bias"):
        generate_stories(3, bias=1.5)
    with pytest.raises(ValueError, match="non-negative"):
        generate_stories(-1)
    with pytest.raises(ValueError, match="colors"):
        World(colors=("plaid",))
    with pytest.raises(ValueError, match="Story"):
        entropy_floor_bits_per_char([])
