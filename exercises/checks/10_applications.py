"""The checks of exercise notebook 10 (applications): instant and hidden cases.

Every expected value is computed before the learner's function runs, by the libraries
everyone reports with or by a small reference written here:

- SQuAD exact match: llmkit.evaluate.exact_match(normalize=True), whose normalisation is the
  official SQuAD v1.1 script's, times 100 (the scale SQuAD reports);
- ROUGE-L: rouge-score's RougeScorer(["rougeL"]) F-measure;
- the history trimmer: the reference below (whole exchanges dropped oldest first, the system
  prompt kept), the rule of llmkit.chat.ChatSession.prompt_messages with words as tokens;
- chrF++: sacrebleu's CHRF at the case's character order, word order and beta (corpus
  statistics).

While the learner's function runs, the finished versions (sacrebleu, rouge_score, nltk's chrF,
llmkit.evaluate's metrics, llmkit.chat) are off limits.

A task earns its points only when every hidden case passes, so the instant cases already try
every clause of each statement (a reply whose question was cut, no system prompt, nothing to
trim, nothing that fits; punctuation split off a word, a reference too short for an order,
word order 0; articles inside words, punctuation inside words; accents, an empty text), and
each constant answer (None, 0.0, 100.0, the input unchanged) fails an instant case.
"""

from __future__ import annotations

import torch

from llmkit import evaluate
from llmkit.data import generate_stories
from llmkit.grading.exercise import Assignment, Case, Exercise, compare_numbers, describe_type
from llmkit.grading.exercise import random_int as _int

SETUP = "import re\nimport string\nfrom collections import Counter\nfrom llmkit.grading import check\n"

# A package's own modules by name: a package name alone would cover only what its __init__
# defines, and sacrebleu and rouge_score define their metrics in submodules.
LIBRARIES = ("sacrebleu.compat", "sacrebleu.metrics.chrf", "sacrebleu.metrics.bleu",
             "sacrebleu.metrics.helpers", "rouge_score.rouge_scorer", "rouge_score.tokenize",
             "rouge_score.tokenizers", "nltk.translate.chrf_score")
METRICS = LIBRARIES + tuple(
    f"llmkit.evaluate.{name}" for name in (
        "chrf", "sentence_chrf", "bleu", "sentence_bleu", "load_sacrebleu", "exact_match",
        "normalize_answer", "rouge_l", "sentence_rouge_l",
    ))
CHAT = ("llmkit.chat",)

# A pool of real sentences (TinyTales' Spanish renderings and English summaries), so the
# cases look like the lesson's outputs; fixed once, the draws come from the case generator.
_STORIES = generate_stories(40, seed=7)
_SPANISH = [s for story in _STORIES for s in story.spanish_sentences]
_ENGLISH = [story.summary for story in _STORIES]


def _pick(generator, pool):
    return pool[_int(generator, 0, len(pool))]


def _damage(generator, text: str) -> str:
    """A plausible wrong output: words dropped, swapped or cut short."""
    words = text.split()
    for _ in range(_int(generator, 1, 4)):
        kind, i = _int(generator, 0, 4), _int(generator, 0, len(words))
        if kind == 0 and len(words) > 1:
            del words[i]
        elif kind == 1 and len(words) > 1:
            j = _int(generator, 0, len(words))
            words[i], words[j] = words[j], words[i]
        elif kind == 2 and len(words[i]) > 3:
            words[i] = words[i][:-2]
        else:
            words.insert(i, _pick(generator, words))
    return " ".join(words)


def _corpus(generator, n, pool):
    references = [_pick(generator, pool) for _ in range(n)]
    hypotheses = [_damage(generator, r) for r in references]
    return hypotheses, references


def _compare_score(answer, case, name, scale):
    if isinstance(answer, torch.Tensor) and answer.numel() == 1:
        answer = answer.item()
    return compare_numbers(answer, case.expected, name=name, rel=1e-6, abs_=1e-6 * scale)


# --- 1. SQuAD exact match ---------------------------------------------------------------

def _squad_case(predictions, references, note=""):
    expected = 100.0 * evaluate.exact_match(predictions, references, normalize=True)
    return Case((predictions, references), expected, note)


def _variant(generator, answer: str) -> str:
    """The answer written another way that SQuAD's normalisation forgives (or not)."""
    kind = _int(generator, 0, 6)
    if kind == 0:
        return answer.upper()
    if kind == 1:
        return f"  {answer}. "
    if kind == 2:
        return "The " + answer
    if kind == 3:
        return answer.replace(" ", "  ") + "!"
    if kind == 4:
        return answer + " too"                              # a wrong answer
    return answer


def _random_squad_case(generator):
    n = _int(generator, 3, 8)
    predictions, references = [], []
    for _ in range(n):
        story = _STORIES[_int(generator, 0, len(_STORIES))]
        question, answer = story.qa[_int(generator, 0, len(story.qa))]
        predictions.append(_variant(generator, answer))
        references.append([answer])
    predictions[_int(generator, 0, n)] = "a naughty cat"      # at least one wrong answer
    return _squad_case(predictions, references)


def _squad_cases(generator, hidden):
    cases = [_random_squad_case(generator) for _ in range(3 if hidden else 1)]
    cases += [
        _squad_case(["The Park.", "a RED ball", "mom", "The Beach"],
                    [["park"], ["red ball", "a red ball"], ["her mom"],
                     ["at the beach", "beach"]],
                    "capitals, articles, end punctuation, several right answers"),
        _squad_case(["Mia's kite", "well-known", "yes"],
                    [["Mias kite"], ["wellknown"], ["no"]],
                    "punctuation inside words is removed, not turned into a space"),
        _squad_case(["banana", "another one", "the theme", "an apple"],
                    [["banana"], ["other one"], ["theme"], ["apple"]],
                    "articles only as whole words (\"banana\" keeps its \"an\")"),
        _squad_case(["to   the\tpark", "A  cat", "a dog"], [["to park"], ["cat"], ["cats"]],
                    "runs of whitespace"),
    ]
    if hidden:
        cases += [
            _squad_case(["", "a", "the cat"], [["the"], ["an"], ["a dog"]],
                        "answers that are only articles"),
            _squad_case(["to the park", "The Beach", "Leo!"],
                        [["to the beach", "to the forest"], ["beach", "at the beach"],
                         ["leo", "Leo and Mia"]],
                        "several right answers, matched or not"),
            _squad_case(["THE END.", "Anna", "thea"], [["end"], ["anna"], ["a"]],
                        "\"the\" and \"an\" inside names stay"),
        ]
    return cases


def _compare_squad(answer, case):
    problem = _compare_score(answer, case, "the exact-match score", 100)
    if problem and isinstance(answer, (int, float)) and not isinstance(answer, bool) \
            and 0 < case.expected and abs(100 * answer - case.expected) < 1e-6:
        problem += " It is a percentage: 100 times the share of exact matches."
    return problem


# --- 2. ROUGE-L -------------------------------------------------------------------------

def _rouge_case(prediction, reference, note=""):
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    return Case((prediction, reference), scorer.score(reference, prediction)["rougeL"].fmeasure,
                note)


def _rouge_cases(generator, hidden):
    cases = []
    for _ in range(4 if hidden else 1):
        reference = _pick(generator, _ENGLISH)
        cases.append(_rouge_case(_damage(generator, reference), reference))
    cases += [
        _rouge_case("the ball was red and Mia lost it", "Mia lost her red ball",
                    "words in a different order (a subsequence, not a substring)"),
        _rouge_case("Mia's RED ball!", "mia s red ball was lost", "capitals and punctuation"),
        _rouge_case("Leo y el niño se sintió triste", "Leo y el nino se sintio triste",
                    "accented letters (only a-z and 0-9 make words)"),
        _rouge_case("", "Mia lost her ball.", "an empty prediction"),
    ]
    if hidden:
        cases += [
            _rouge_case("the the the the", "the cat and the dog", "a repeated word"),
            _rouge_case("dog cat", "cat dog", "two words, swapped"),
            _rouge_case("a b c d e f", "f e d c b a x", "the same words, reversed"),
            _rouge_case("Mia lost her ball.", "...", "a reference with no word"),
            _rouge_case("snake_case 2x", "snake case 2 x", "underscores and digits"),
        ]
    return cases


def _compare_rouge(answer, case):
    return _compare_score(answer, case, "the ROUGE-L F-measure", 1)


# --- 3. trimming a chat history ---------------------------------------------------------

def message_cost(message) -> int:
    """A message's cost in the task's units: its words, plus 3 for the markers around it."""
    return len(message["content"].split()) + 3


def _trim_reference(messages, limit):
    system = [m for m in messages[:1] if m["role"] == "system"]
    turns = list(messages[len(system):])
    while True:
        kept = system + turns
        if sum(message_cost(m) for m in kept) <= limit:
            return kept
        if len(turns) <= 1:
            return None
        turns = turns[1:]
        while turns and turns[0]["role"] != "user":
            turns = turns[1:]


def _conversation(generator, turns, system=True):
    story = _STORIES[_int(generator, 0, len(_STORIES))]
    messages = [{"role": "system", "content": f"Answer questions about this story. {story.text}"}] \
        if system else []
    for _ in range(turns):
        question, answer = story.qa[_int(generator, 0, len(story.qa))]
        messages += [{"role": "user", "content": question},
                     {"role": "assistant", "content": answer}]
    messages.append({"role": "user", "content": story.qa[0][0]})
    return messages


def _trim_case(messages, limit, note=""):
    return Case((messages, limit), _trim_reference(messages, limit), note)


def _total(messages):
    return sum(message_cost(m) for m in messages)


def _with_two_replies(generator):
    """A conversation where one question got two replies: a cut after that question must
    drop both."""
    messages = _conversation(generator, 3)
    messages.insert(3, {"role": "assistant", "content": "And one more thing."})
    return messages


def _trim_cases(generator, hidden):
    cases = []
    for _ in range(3 if hidden else 1):
        messages = _conversation(generator, _int(generator, 3, 7))
        system_and_last = message_cost(messages[0]) + message_cost(messages[-1])
        limit = _int(generator, system_and_last + 10, _total(messages))
        cases.append(_trim_case(messages, limit))
    messages = _conversation(generator, 4)
    no_system = _conversation(generator, 4, system=False)
    odd = _with_two_replies(generator)
    first_turn = message_cost(messages[1]) + message_cost(messages[2])
    cases += [
        _trim_case(odd, _total(odd) - 4,
                   "two replies in a row (a cut question takes both replies with it)"),
        _trim_case(no_system, _total(no_system) // 2, "no system prompt"),
        _trim_case(messages, _total(messages) - first_turn,
                   "a limit met exactly once the first exchange is gone"),
        _trim_case(messages, message_cost(messages[0]) + message_cost(messages[-1]) - 1,
                   "not even the system prompt and the last message fit"),
    ]
    if hidden:
        short = _conversation(generator, 2)
        cases += [
            _trim_case(messages, _total(messages) - 1, "one token too many"),
            _trim_case(messages, message_cost(messages[0]) + message_cost(messages[-1]),
                       "room for the system prompt and the last message only"),
            _trim_case(short, _total(short), "everything fits exactly"),
            _trim_case(short, _total(short) + 50, "everything fits, with room to spare"),
            _trim_case(no_system, message_cost(no_system[-1]) - 1,
                       "no system prompt, and the last message alone is too long"),
        ]
    else:
        short = _conversation(generator, 2)
        cases.append(_trim_case(short, _total(short) + _int(generator, 0, 20),
                                "everything fits"))
    return cases


def _compare_trim(answer, case):
    expected = case.expected
    messages, limit = case.args
    if expected is None:
        if answer is None:
            return None
        return ("the system prompt (if any) and the last message alone are over the limit: "
                f"return None then, but it returned {describe_type(answer)}.")
    if answer is None:
        return (f"it returned None, but {len(expected)} messages fit the limit of {limit} "
                f"(costing {_total(expected)}).")
    if not isinstance(answer, list):
        return ("trim_history should return a list of messages, but it returned "
                f"{describe_type(answer)}.")
    if answer == expected:
        return None
    if not _dicts(answer):
        return "the list should hold the message dicts themselves, in their order."
    if _total(answer) > limit:
        return f"the kept messages cost {_total(answer)}, over the limit of {limit}."
    if messages[0]["role"] == "system" and (not answer or answer[0] != messages[0]):
        return "the system prompt is always kept, in first place."
    if len(answer) != len(expected):
        return (f"you kept {len(answer)} messages costing {_total(answer)}; the rule keeps "
                f"{len(expected)} (costing {_total(expected)}).")
    return ("you kept the right number of messages but not the right ones: keep the system "
            "prompt first, then the newest turns in their order, starting with a user message.")


def _dicts(messages):
    return all(isinstance(m, dict) and isinstance(m.get("content"), str) for m in messages)


# --- 4. chrF++ ------------------------------------------------------------------------------

def _chrf_case(hypotheses, references, char_order, word_order, beta, note=""):
    import sacrebleu

    metric = sacrebleu.CHRF(char_order=char_order, word_order=word_order, beta=beta)
    expected = metric.corpus_score(hypotheses, [references]).score
    return Case((hypotheses, references, char_order, word_order, beta), expected, note)


def _random_chrf_case(generator, word_orders=(1, 4)):
    hypotheses, references = _corpus(generator, _int(generator, 2, 6), _SPANISH)
    return _chrf_case(hypotheses, references, _int(generator, 1, 9),
                      _int(generator, *word_orders), float(_int(generator, 1, 4)))


def _chrf_cases(generator, hidden):
    cases = [_random_chrf_case(generator) for _ in range(4 if hidden else 1)]
    hypotheses, references = _corpus(generator, 3, _SPANISH)
    cases += [
        _chrf_case(hypotheses, references, 6, 2, 2.0, "chrF++ as WMT reports it: 6, 2, beta 2"),
        _chrf_case(["El perro corrió .", "(Mia) dijo: «hola»", "De mayor , quería"],
                   ["El perro corrió.", "Mia dijo: hola", "De mayor, quería"], 2, 2, 1.0,
                   "punctuation at the start or end of a word"),
        _chrf_case(["Mia corrió al parque.", "Leo"], ["Mia", "Leo estaba triste."], 4, 2, 2.0,
                   "references too short for some orders (one word, four letters)"),
        _chrf_case(hypotheses, references, 3, 0, 3.0, "word order 0 (plain chrF)"),
    ]
    if hidden:
        hypotheses, references = _corpus(generator, 4, _SPANISH)
        cases += [
            _chrf_case(["Mia", "Había un niño llamado Leo."],
                       ["Mia tenía una pelota.", "Había un niño llamado Leo."], 6, 3, 2.0,
                       "a hypothesis shorter than the order"),
            _chrf_case(["a b", "ab", "c d e"], ["ab", "a\tb\n", "cde f"], 2, 1, 2.0,
                       "spaces, tabs and newlines"),
            _chrf_case(["", "El perro corrió."], ["El gato corrió.", "El perro corrió."], 4, 2,
                       3.0, "an empty hypothesis"),
            _chrf_case(["xyz", hypotheses[0]], ["abc", references[0]], 2, 2, 2.0,
                       "one pair with nothing in common"),
            _chrf_case(references[:3] + hypotheses[3:], references, 5, 1, 2.0,
                       "three perfect translations and one wrong one"),
            _chrf_case(["un gato", "el perro grande y marrón corrió mucho"],
                       ["un gato pequeño y gris", "el perro"], 4, 2, 2.0,
                       "one short and one long sentence (corpus counts, not a mean of "
                       "sentence scores)"),
            _chrf_case(["\"Hola.\" dijo (Mia)", "¡Sí! ¿Y tú?"],
                       ["\"Hola\". dijo Mia", "Sí. ¿Y tú?"], 3, 2, 2.0,
                       "quotes and brackets: one character split off a word"),
            _chrf_case(["sí", "no"], ["sí", "."], 1, 2, 1.0,
                       "one-word references, so no word pair at all"),
        ]
    return cases


def _compare_chrf(answer, case):
    import sacrebleu

    problem = _compare_score(answer, case, "chrF++", 100)
    if not problem or isinstance(answer, bool) or not isinstance(answer, (int, float)):
        return problem
    hypotheses, references, char_order, word_order, beta = case.args

    def variant(**changes):
        options = dict(char_order=char_order, word_order=word_order, beta=beta) | changes
        return sacrebleu.CHRF(**options).corpus_score(hypotheses, [references]).score

    if 0 < answer <= 1 and case.expected > 1:
        problem += " chrF is on a 0-100 scale."
    elif word_order and abs(answer - variant(word_order=0)) < 1e-6:
        problem += " That is the score of the character n-grams alone: the word orders are missing."
    elif abs(answer - variant(eps_smoothing=True)) < 1e-6:
        problem += (" That is the mean of one F-score per order; average precision and recall "
                    "over the orders first, then combine them once.")
    return problem


EXERCISES = [
    Exercise("applications.squad_em", "squad_exact_match", 2,
             "Exact match with SQuAD's normalisation",
             _squad_cases, _compare_squad, forbidden=METRICS,
             hint="Both sides go through the same normalisation, in the order the task gives; "
                  "the usual slips are a punctuation mark turned into a space, an article "
                  "removed from inside a word, and only the first acceptable answer tried."),
    Exercise("applications.rouge_l", "rouge_l", 2, "ROUGE-L from the longest common subsequence",
             _rouge_cases, _compare_rouge, forbidden=METRICS,
             hint="A subsequence may skip words, so this is not the longest run of words the "
                  "two share: the usual way is a table of best lengths over every pair of "
                  "prefixes. Split both texts into words the same way, and mind the texts "
                  "with no word at all."),
    Exercise("applications.trim", "trim_history", 3, "Trim a chat history to fit",
             _trim_cases, _compare_trim, forbidden=CHAT,
             hint="The system prompt is set aside, never cut. Cut from the oldest end of the "
                  "rest and look at the cost again after every cut; a cut can leave a reply "
                  "whose question is gone at the front, and that reply must go too. A "
                  "conversation that already fits is returned whole."),
    Exercise("applications.chrf", "chrf", 3, "chrF++: character and word n-grams",
             _chrf_cases, _compare_chrf, forbidden=METRICS,
             hint="Word orders are more orders in the same averages as the character ones. "
                  "Only one punctuation character comes off a word, from its end if it has "
                  "one there, else from its start. Per pair and per order, a reference with no "
                  "n-gram adds nothing, not even the hypothesis's count."),
]
ASSIGNMENT = Assignment("10_applications", "Exercises 10: applications", SETUP, EXERCISES)
