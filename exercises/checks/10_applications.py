"""The checks of exercise notebook 10 (applications): instant and hidden cases.

Every expected value is computed before the learner's function runs, by the libraries
everyone reports with or by a small reference written here:

- chrF: sacrebleu's CHRF at the case's character order and beta (corpus statistics);
- SQuAD exact match: llmkit.evaluate.exact_match(normalize=True), whose normalisation is the
  official SQuAD v1.1 script's, times 100 (the scale SQuAD reports);
- ROUGE-L: rouge-score's RougeScorer(["rougeL"]) F-measure;
- the history trimmer: the reference below (whole exchanges dropped oldest first, the system
  prompt kept), which mirrors llmkit.chat.ChatSession.prompt_messages with words as tokens.

While the learner's function runs, the finished versions (sacrebleu, rouge_score and
llmkit.evaluate's metrics) are off limits.
"""

from __future__ import annotations

import torch

from llmkit import evaluate
from llmkit.data import generate_stories
from llmkit.grading.exercise import Assignment, Case, Exercise, compare_numbers, describe_type
from llmkit.grading.exercise import random_int as _int

SETUP = "import re\nimport string\nfrom collections import Counter\nfrom llmkit.grading import check\n"

METRICS = ("sacrebleu", "rouge_score") + tuple(f"llmkit.evaluate.{name}" for name in (
    "chrf", "sentence_chrf", "bleu", "sentence_bleu", "load_sacrebleu", "exact_match",
    "normalize_answer", "rouge_l", "sentence_rouge_l",
))

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
    problem = compare_numbers(answer, case.expected, name=name, rel=1e-6, abs_=1e-6 * scale)
    return problem


# --- 1. chrF at any order ---------------------------------------------------------------

def _chrf_case(hypotheses, references, char_order, beta, note=""):
    import sacrebleu

    metric = sacrebleu.CHRF(char_order=char_order, word_order=0, beta=beta)
    expected = metric.corpus_score(hypotheses, [references]).score
    return Case((hypotheses, references, char_order, beta), expected, note)


def _chrf_cases(generator, hidden):
    cases = []
    for _ in range(4 if hidden else 2):
        hypotheses, references = _corpus(generator, _int(generator, 2, 6), _SPANISH)
        cases.append(_chrf_case(hypotheses, references, _int(generator, 1, 9),
                                float(_int(generator, 1, 4))))
    hypotheses, references = _corpus(generator, 3, _SPANISH)
    cases.append(_chrf_case(hypotheses, references, 3, 1.0, "character order 3 and beta 1"))
    if hidden:
        hypotheses, references = _corpus(generator, 4, _SPANISH)
        cases += [
            _chrf_case(["Mia", "Había un niño llamado Leo."],
                       ["Mia tenía una pelota.", "Había un niño llamado Leo."], 6, 2.0,
                       "a hypothesis shorter than the order (\"Mia\" has no 4-grams)"),
            _chrf_case(["a b", "ab", "c d e"], ["ab", "a\tb\n", "cde f"], 2, 2.0,
                       "spaces, tabs and newlines (chrF ignores whitespace)"),
            _chrf_case(["", "El perro corrió."], ["El gato corrió.", "El perro corrió."], 4,
                       3.0, "an empty hypothesis"),
            _chrf_case(["xyz", hypotheses[0]], ["abc", references[0]], 2, 2.0,
                       "one pair with nothing in common"),
            _chrf_case(references[:3] + hypotheses[3:], references, 5, 2.0,
                       "three perfect translations and one wrong one"),
            _chrf_case(["un gato", "el perro grande y marrón corrió mucho"],
                       ["un gato pequeño y gris", "el perro"], 4, 2.0,
                       "one short and one long sentence (corpus counts, not a mean of "
                       "sentence scores)"),
        ]
    return cases


def _compare_chrf(answer, case):
    problem = _compare_score(answer, case, "chrF", 100)
    if problem:
        problem += " chrF is on a 0-100 scale."
    return problem


# --- 2. SQuAD exact match ---------------------------------------------------------------

_QA = [("the park", ["the park", "park"]), ("A red ball", ["a red ball"]),
       ("her mom", ["her mom"]), ("an orange kite", ["an orange kite", "orange kite"])]


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


def _squad_cases(generator, hidden):
    cases = []
    for _ in range(3 if hidden else 2):
        n = _int(generator, 3, 8)
        predictions, references = [], []
        for _ in range(n):
            story = _STORIES[_int(generator, 0, len(_STORIES))]
            question, answer = story.qa[_int(generator, 0, len(story.qa))]
            predictions.append(_variant(generator, answer))
            references.append([answer])
        predictions[_int(generator, 0, n)] = "a naughty cat"      # at least one wrong answer
        cases.append(_squad_case(predictions, references))
    cases.append(_squad_case(["The Park.", "a RED ball", "mom"],
                             [["park"], ["red ball", "a red ball"], ["her mom"]],
                             "capitals, articles, punctuation, several right answers"))
    if hidden:
        cases += [
            _squad_case(["banana", "another one", "the theme"],
                        [["banana"], ["other one"], ["theme"]],
                        "articles only as whole words (\"banana\" keeps its \"an\")"),
            _squad_case(["Mia's kite", "well-known", "yes"],
                        [["Mias kite"], ["wellknown"], ["no"]],
                        "punctuation inside words is removed, not turned into a space"),
            _squad_case(["to   the\tpark", "A  cat", "a dog"], [["to park"], ["cat"], ["cats"]],
                        "runs of whitespace"),
            _squad_case(["", "a", "the cat"], [["the"], ["an"], ["a dog"]],
                        "answers that are only articles"),
            _squad_case(["to the park", "The Beach"], [["to the beach", "to the forest"],
                                                       ["beach", "at the beach"]],
                        "several right answers, matched or not"),
        ]
    return cases


def _compare_squad(answer, case):
    problem = _compare_score(answer, case, "the exact-match score", 100)
    if problem:
        problem += " It is a percentage: 100 times the share of exact matches."
    return problem


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


def _trim_cases(generator, hidden):
    cases = []
    for _ in range(3 if hidden else 2):
        messages = _conversation(generator, _int(generator, 3, 7))
        system_and_last = message_cost(messages[0]) + message_cost(messages[-1])
        limit = _int(generator, system_and_last + 10, _total(messages))
        cases.append(_trim_case(messages, limit))
    if hidden:
        messages = _conversation(generator, 4)
        no_system = _conversation(generator, 4, system=False)
        odd = _conversation(generator, 3)
        odd.insert(3, {"role": "assistant", "content": "And one more thing."})
        cases += [
            _trim_case(messages, _total(messages) - 1, "one token too many"),
            _trim_case(no_system, _total(no_system) // 2, "no system prompt"),
            _trim_case(messages, message_cost(messages[0]) + message_cost(messages[-1]),
                       "room for the system prompt and the last message only"),
            _trim_case(messages, message_cost(messages[0]) + message_cost(messages[-1]) - 1,
                       "not even the system prompt and the last message fit"),
            _trim_case(odd, _total(odd) - 4, "two replies in a row"),
        ]
    return cases


def _compare_trim(answer, case):
    expected = case.expected
    if expected is None:
        if answer is None:
            return None
        return ("the system prompt and the last message alone are over the limit: return None "
                f"then, but it returned {describe_type(answer)}.")
    if not isinstance(answer, list):
        return f"trim_history should return a list of messages, but it returned {describe_type(answer)}."
    if answer == expected:
        return None
    if len(answer) != len(expected):
        return (f"you kept {len(answer)} messages costing {_total(answer) if _dicts(answer) else '?'}"
                f"; the limit allows keeping {len(expected)} (costing {_total(expected)}).")
    return ("you kept the right number of messages but not the right ones: keep the system "
            "prompt first, then the newest turns in their order, starting with a user message.")


def _dicts(messages):
    return all(isinstance(m, dict) and isinstance(m.get("content"), str) for m in messages)


# --- 4. ROUGE-L -------------------------------------------------------------------------

def _rouge_case(prediction, reference, note=""):
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    return Case((prediction, reference), scorer.score(reference, prediction)["rougeL"].fmeasure,
                note)


def _rouge_cases(generator, hidden):
    cases = []
    for _ in range(4 if hidden else 2):
        reference = _pick(generator, _ENGLISH)
        cases.append(_rouge_case(_damage(generator, reference), reference))
    cases.append(_rouge_case("the ball was red and Mia lost it", "Mia lost her red ball",
                             "words in a different order (a subsequence, not a substring)"))
    if hidden:
        cases += [
            _rouge_case("Mia's RED ball!", "mia s red ball was lost", "capitals and punctuation"),
            _rouge_case("", "Mia lost her ball.", "an empty prediction"),
            _rouge_case("the the the the", "the cat and the dog", "a repeated word"),
            _rouge_case("dog cat", "cat dog", "two words, swapped"),
            _rouge_case("Leo se sintió triste", "Leo se sintio triste",
                        "accented letters (the tokenizer keeps only a-z and 0-9)"),
        ]
    return cases


def _compare_rouge(answer, case):
    return _compare_score(answer, case, "the ROUGE-L F-measure", 1)


EXERCISES = [
    Exercise("applications.chrf", "chrf", 3, "chrF at any character order",
             _chrf_cases, _compare_chrf, forbidden=METRICS,
             hint="Sum the counts over the whole corpus before dividing, order by order. An "
                  "order that neither side is long enough for is left out of the averages. "
                  "Average precision and recall over the orders first, and only then combine "
                  "them with beta."),
    Exercise("applications.squad_em", "squad_exact_match", 2,
             "Exact match with SQuAD's normalisation",
             _squad_cases, _compare_squad, forbidden=METRICS,
             hint="Normalise both sides the same way, in SQuAD's order: lower case, punctuation "
                  "removed (not replaced), the articles a, an and the removed only as whole "
                  "words, whitespace runs collapsed. A prediction counts if it matches any "
                  "of its references."),
    Exercise("applications.trim", "trim_history", 3, "Trim a chat history to fit",
             _trim_cases, _compare_trim, forbidden=("llmkit.chat",),
             hint="The system prompt never goes. Drop whole turns from the oldest end, and "
                  "after a cut never start with a reply whose question is gone. Check the "
                  "cost after each cut, and give up (None) only when the last message alone "
                  "is left and still too long."),
    Exercise("applications.rouge_l", "rouge_l", 2, "ROUGE-L from the longest common subsequence",
             _rouge_cases, _compare_rouge, forbidden=METRICS,
             hint="Tokenize both texts the same way (lower case, and only runs of a-z and 0-9 "
                  "count as words). The longest common subsequence allows gaps, so it is a "
                  "dynamic programme over the two word lists, not a search for a common "
                  "substring. Precision divides by the prediction's length, recall by the "
                  "reference's."),
]
ASSIGNMENT = Assignment("10_applications", "Exercises 10: applications", SETUP, EXERCISES)
