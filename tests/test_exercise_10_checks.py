"""Exercise notebook 10's checks: the reference solutions (run from the source notebook) pass
every case; lesson 10's own code, pasted as the answer, fails a hidden case and an instant case
of every task it could be pasted into; the usual wrong solutions and the constant answers do
too, so under all-or-nothing grading they earn nothing; the checks' expected values agree with
independent computations (the official SQuAD v1.1 script's normalisation, rouge-score, sacrebleu,
llmkit.chat's own trimming); and every finished piece a task rules out is reported forbidden.

The lesson's code and the wrong solutions are written here by hand.
"""

import functools
import re
import string
from collections import Counter

import pytest

from llmkit.grading import ASSIGNMENTS, check

from exercise_support import cached_cases, passed, reference_solutions

ASSIGNMENT = ASSIGNMENTS["10_applications"]
EXERCISES = {exercise.id: exercise for exercise in ASSIGNMENT.exercises}
RIGHT = reference_solutions("10_applications")


def _copy(value):
    if isinstance(value, list):
        return [_copy(v) for v in value]
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    return value


# --- lesson 10's own code, pasted into each task's signature --------------------------------

def lesson_exact_match(predictions, references):
    # the lesson's exact match: character for character (llmkit.evaluate.exact_match's rule
    # without normalize), as a percentage, any acceptable answer
    hits = sum(p in answers for p, answers in zip(predictions, references))
    return 100.0 * hits / len(predictions)


def char_ngrams(text, n):
    # given in lesson 10
    text = "".join(text.split())
    return Counter(text[i:i + n] for i in range(len(text) - n + 1))


def worked_chrf(hypotheses, references, max_n=6, beta=2.0):
    # lesson 10's worked chrF, as it stands
    precisions, recalls = [], []
    for n in range(1, max_n + 1):
        matches = in_hypotheses = in_references = 0
        for hypothesis, reference in zip(hypotheses, references):
            h, r = char_ngrams(hypothesis, n), char_ngrams(reference, n)
            matches += sum((h & r).values())
            in_hypotheses += sum(h.values())
            in_references += sum(r.values())
        if in_hypotheses and in_references:
            precisions.append(matches / in_hypotheses)
            recalls.append(matches / in_references)
    if not precisions:
        return 0.0
    p, r = sum(precisions) / len(precisions), sum(recalls) / len(recalls)
    if p + r == 0:
        return 0.0
    return 100 * (1 + beta ** 2) * p * r / (beta ** 2 * p + r)


def lesson_chrf(hypotheses, references, char_order, word_order, beta):
    return worked_chrf(hypotheses, references, char_order, beta)


# The lesson shows no code for ROUGE-L or for trimming a history (it calls llmkit's); what it
# says of them in prose is taken literally among the slips below.
LESSON = [("applications.squad_em", lesson_exact_match), ("applications.chrf", lesson_chrf)]


# --- the usual slips ------------------------------------------------------------------------

def _squad(name, normalise, any_answer=True, scale=100.0):
    def score(predictions, references):
        hits = 0
        for p, answers in zip(predictions, references):
            answers = answers if any_answer else answers[:1]
            hits += normalise(p) in {normalise(a) for a in answers}
        return scale * hits / len(predictions)
    score.__name__ = name
    return score


def _normalise(text, punctuation="", articles=r"\b(a|an|the)\b"):
    text = text.lower()
    text = "".join(punctuation if ch in string.punctuation else ch for ch in text)
    text = re.sub(articles, " ", text)
    return " ".join(text.split())


squad_punctuation_to_space = _squad("squad_punctuation_to_space",
                                    lambda t: _normalise(t, punctuation=" "))
squad_articles_anywhere = _squad("squad_articles_anywhere",
                                 lambda t: _normalise(t, articles=r"(a|an|the)"))
squad_first_answer_only = _squad("squad_first_answer_only", _normalise, any_answer=False)
squad_share_not_percent = _squad("squad_share_not_percent", _normalise, scale=1.0)
squad_articles_before_lower = _squad("squad_articles_before_lower", 
    lambda t: " ".join(re.sub(r"\b(a|an|the)\b", " ", "".join(
        ch for ch in t if ch not in string.punctuation)).lower().split()))


def _words(text):
    return re.findall(r"[a-z0-9]+", text.lower())


def _lcs(a, b):
    table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i, x in enumerate(a):
        for j, y in enumerate(b):
            table[i + 1][j + 1] = (table[i][j] + 1 if x == y
                                   else max(table[i][j + 1], table[i + 1][j]))
    return table[-1][-1]


def _f(common, n_prediction, n_reference):
    if common == 0:
        return 0.0
    p, r = common / n_prediction, common / n_reference
    return 2 * p * r / (p + r)


def rouge_split_on_spaces(prediction, reference):      # the lesson's "words", taken literally
    a, b = prediction.split(), reference.split()
    return _f(_lcs(a, b), len(a), len(b)) if a and b else 0.0


def rouge_word_characters(prediction, reference):      # \w keeps accents and underscores
    a, b = re.findall(r"\w+", prediction.lower()), re.findall(r"\w+", reference.lower())
    return _f(_lcs(a, b), len(a), len(b)) if a and b else 0.0


def rouge_longest_substring(prediction, reference):    # contiguous runs only
    a, b = _words(prediction), _words(reference)
    best = 0
    for i in range(len(a)):
        for j in range(len(b)):
            k = 0
            while i + k < len(a) and j + k < len(b) and a[i + k] == b[j + k]:
                k += 1
            best = max(best, k)
    return _f(best, len(a), len(b)) if a and b else 0.0


def rouge_shared_words(prediction, reference):         # ROUGE-1: order ignored
    a, b = _words(prediction), _words(reference)
    return _f(sum((Counter(a) & Counter(b)).values()), len(a), len(b)) if a and b else 0.0


def rouge_no_zero_guard(prediction, reference):        # divides by zero on L = 0
    a, b = _words(prediction), _words(reference)
    p, r = _lcs(a, b) / max(len(a), 1), _lcs(a, b) / max(len(b), 1)
    return 2 * p * r / (p + r)


def _cost(message):
    return len(message["content"].split()) + 3


def trim_drops_the_system_prompt(messages, limit):
    turns = list(messages)
    while sum(_cost(m) for m in turns) > limit:
        if len(turns) <= 1:
            return None
        turns = turns[1:]
        while turns and turns[0]["role"] != "user":
            turns = turns[1:]
    return turns


def _trim(messages, limit, cut, fits=lambda total, limit: total <= limit):
    system = [m for m in messages[:1] if m["role"] == "system"]
    turns = list(messages[len(system):])
    while not fits(sum(_cost(m) for m in system + turns), limit):
        if len(turns) <= 1:
            return None
        turns = cut(turns)
    return system + turns


def _drop_one(turns):
    turns = turns[1:]
    while turns and turns[0]["role"] != "user":
        turns = turns[1:]
    return turns


def trim_keeps_orphan_replies(messages, limit):
    return _trim(messages, limit, lambda turns: turns[1:])


def trim_drops_pairs(messages, limit):                 # assumes strict question/reply pairs
    return _trim(messages, limit, lambda turns: turns[2:] if len(turns) > 2 else turns[1:])


def trim_strictly_below(messages, limit):
    return _trim(messages, limit, _drop_one, fits=lambda total, limit: total < limit)


def trim_newest_first(messages, limit):
    system = [m for m in messages[:1] if m["role"] == "system"]
    turns = list(messages[len(system):])
    while sum(_cost(m) for m in system + turns) > limit:
        if len(turns) <= 1:
            return None
        turns = turns[:-2] + turns[-1:]
    return system + turns


def trim_counts_characters(messages, limit):
    def cost(message):
        return len(message["content"]) + 3
    system = [m for m in messages[:1] if m["role"] == "system"]
    turns = list(messages[len(system):])
    while sum(cost(m) for m in system + turns) > limit:
        if len(turns) <= 1:
            return None
        turns = _drop_one(turns)
    return system + turns


def _chrf_words(text, both_ends=False, split=True):
    out = []
    for word in text.split():
        if not split or len(word) == 1:
            out.append(word)
        elif both_ends:
            out += re.findall(r"\w+|[^\w\s]", word)
        elif word[-1] in string.punctuation:
            out += [word[:-1], word[-1]]
        elif word[0] in string.punctuation:
            out += [word[0], word[1:]]
        else:
            out.append(word)
    return out


def _chrf_stats(hypotheses, references, char_order, word_order, words=_chrf_words,
                count_without_reference=False):
    """[(matches, hypothesis n-grams, reference n-grams) per order]."""
    def ngrams(items, n):
        return Counter(tuple(items[i:i + n]) for i in range(len(items) - n + 1))

    stats = []
    orders = ([(True, n) for n in range(1, char_order + 1)]
              + [(False, n) for n in range(1, word_order + 1)])
    for chars, n in orders:
        m = h_total = r_total = 0
        for hyp, ref in zip(hypotheses, references):
            if chars:
                h, r = ngrams(list("".join(hyp.split())), n), ngrams(list("".join(ref.split())), n)
            else:
                h, r = ngrams(words(hyp), n), ngrams(words(ref), n)
            if not r and not count_without_reference:
                continue
            m += sum((h & r).values())
            h_total += sum(h.values())
            r_total += sum(r.values())
        stats.append((m, h_total, r_total))
    return stats


def _combine(stats, beta):
    kept = [(m / h, m / r) for m, h, r in stats if h and r]
    if not kept:
        return 0.0
    p = sum(x for x, _ in kept) / len(kept)
    r = sum(y for _, y in kept) / len(kept)
    return 0.0 if p + r == 0 else 100 * (1 + beta ** 2) * p * r / (beta ** 2 * p + r)


def chrf_words_split_on_spaces(hypotheses, references, char_order, word_order, beta):
    words = functools.partial(_chrf_words, split=False)
    return _combine(_chrf_stats(hypotheses, references, char_order, word_order, words), beta)


def chrf_punctuation_off_both_ends(hypotheses, references, char_order, word_order, beta):
    words = functools.partial(_chrf_words, both_ends=True)
    return _combine(_chrf_stats(hypotheses, references, char_order, word_order, words), beta)


def chrf_counts_pairs_without_reference(hypotheses, references, char_order, word_order, beta):
    return _combine(_chrf_stats(hypotheses, references, char_order, word_order,
                                count_without_reference=True), beta)


def chrf_averages_f_scores(hypotheses, references, char_order, word_order, beta):
    scores = []
    for m, h, r in _chrf_stats(hypotheses, references, char_order, word_order):
        if h and r and m:
            p, rec = m / h, m / r
            scores.append((1 + beta ** 2) * p * rec / (beta ** 2 * p + rec))
        elif h and r:
            scores.append(0.0)
    return 100 * sum(scores) / len(scores) if scores else 0.0


def chrf_mean_of_sentences(hypotheses, references, char_order, word_order, beta):
    return sum(_combine(_chrf_stats([h], [r], char_order, word_order), beta)
               for h, r in zip(hypotheses, references)) / len(hypotheses)


def chrf_beta_on_precision(hypotheses, references, char_order, word_order, beta):
    stats = _chrf_stats(hypotheses, references, char_order, word_order)
    return _combine([(m, r, h) for m, h, r in stats], beta)      # P and R swapped


WRONG = [("applications.squad_em", squad_punctuation_to_space),
         ("applications.squad_em", squad_articles_anywhere),
         ("applications.squad_em", squad_first_answer_only),
         ("applications.squad_em", squad_share_not_percent),
         ("applications.squad_em", squad_articles_before_lower),
         ("applications.rouge_l", rouge_split_on_spaces),
         ("applications.rouge_l", rouge_word_characters),
         ("applications.rouge_l", rouge_longest_substring),
         ("applications.rouge_l", rouge_shared_words),
         ("applications.rouge_l", rouge_no_zero_guard),
         ("applications.trim", trim_drops_the_system_prompt),
         ("applications.trim", trim_keeps_orphan_replies),
         ("applications.trim", trim_drops_pairs),
         ("applications.trim", trim_strictly_below),
         ("applications.trim", trim_newest_first),
         ("applications.trim", trim_counts_characters),
         ("applications.chrf", chrf_words_split_on_spaces),
         ("applications.chrf", chrf_punctuation_off_both_ends),
         ("applications.chrf", chrf_counts_pairs_without_reference),
         ("applications.chrf", chrf_averages_f_scores),
         ("applications.chrf", chrf_mean_of_sentences),
         ("applications.chrf", chrf_beta_on_precision)]


# Constant answers: a function that ignores its input must fail an instant case too.
def return_none(*args):
    return None


def return_zero(*args):
    return 0.0


def return_hundred(*args):
    return 100.0


def return_one(*args):
    return 1.0


def return_the_messages(messages, limit):
    return messages


def return_system_and_last(messages, limit):
    return ([messages[0]] if messages[0]["role"] == "system" else []) + messages[-1:]


CONSTANT = [(task, answer) for task in sorted(EXERCISES)
            for answer in (return_none, return_zero, return_hundred, return_one)] + [
    ("applications.trim", return_the_messages), ("applications.trim", return_system_and_last)]


def _name(value):
    return getattr(value, "__name__", value)


def test_every_task_is_checked_and_the_points_add_up():
    assert set(EXERCISES) == set(RIGHT)
    assert [e.id for e in ASSIGNMENT.exercises] == ["applications.squad_em", "applications.rouge_l",
                                                   "applications.trim", "applications.chrf"]
    assert ASSIGNMENT.max_points == 10


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("exercise_id", sorted(EXERCISES))
def test_reference_solutions_pass_every_case(exercise_id, seed):
    exercise = EXERCISES[exercise_id]
    for hidden in (False, True):
        results = passed(exercise, RIGHT[exercise_id], cached_cases(exercise_id, seed, hidden))
        assert all(results), (exercise_id, hidden, results)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("exercise_id, wrong", LESSON + WRONG + CONSTANT, ids=_name)
def test_the_lesson_code_slips_and_constants_fail_a_hidden_case(exercise_id, wrong, seed):
    exercise = EXERCISES[exercise_id]
    assert not all(passed(exercise, wrong, cached_cases(exercise_id, seed, True)))


@pytest.mark.parametrize("exercise_id, wrong", LESSON + WRONG + CONSTANT, ids=_name)
def test_the_instant_check_already_fails_them(exercise_id, wrong):
    exercise = EXERCISES[exercise_id]
    for seed in range(5):
        assert not all(passed(exercise, wrong, cached_cases(exercise_id, seed, False))), seed


def test_slips_get_messages_that_name_them():
    exercise = EXERCISES["applications.squad_em"]
    case = cached_cases("applications.squad_em", 0, False)[1]
    assert "percentage" in exercise.compare(squad_share_not_percent(*case.args), case)
    exercise = EXERCISES["applications.trim"]
    messages = [exercise.compare(trim_drops_the_system_prompt(*c.args), c)
                for c in cached_cases("applications.trim", 0, False)]
    assert any(m and "system prompt is always kept" in m for m in messages)
    case = next(c for c in cached_cases("applications.trim", 0, False) if c.expected is None)
    assert "return None" in exercise.compare([], case)
    exercise = EXERCISES["applications.chrf"]
    case = cached_cases("applications.chrf", 0, False)[1]                      # chrF++: 6, 2, 2
    assert "word orders are missing" in exercise.compare(lesson_chrf(*case.args), case)
    assert "one F-score per order" in exercise.compare(chrf_averages_f_scores(*case.args), case)


# --- the checks' expected values against independent computations -------------------------

def squad_v11_normalize_answer(s):
    """The official SQuAD v1.1 evaluation script's normalize_answer, as published."""
    def remove_articles(text):
        return re.sub(r'\b(a|an|the)\b', ' ', text)

    def white_space_fix(text):
        return ' '.join(text.split())

    def remove_punc(text):
        exclude = set(string.punctuation)
        return ''.join(ch for ch in text if ch not in exclude)

    def lower(text):
        return text.lower()

    return white_space_fix(remove_articles(remove_punc(lower(s))))


@pytest.mark.parametrize("seed", [0, 1])
def test_squad_expected_values_follow_the_official_script(seed):
    for case in cached_cases("applications.squad_em", seed, True):
        predictions, references = case.args
        hits = [max(squad_v11_normalize_answer(p) == squad_v11_normalize_answer(a) for a in answers)
                for p, answers in zip(predictions, references)]
        assert case.expected == pytest.approx(100.0 * sum(hits) / len(hits))


@pytest.mark.parametrize("seed", [0, 1])
def test_rouge_expected_values_are_rouge_scores(seed):
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL", "rougeLsum"], use_stemmer=False)
    for case in cached_cases("applications.rouge_l", seed, True):
        prediction, reference = case.args
        scores = scorer.score(reference, prediction)
        assert case.expected == pytest.approx(scores["rougeL"].fmeasure)
        if "\n" not in prediction + reference:       # one sentence: ROUGE-Lsum is ROUGE-L
            assert case.expected == pytest.approx(scores["rougeLsum"].fmeasure)


@pytest.mark.parametrize("seed", [0, 1])
def test_chrf_expected_values_are_sacrebleus(seed):
    import sacrebleu

    for case in cached_cases("applications.chrf", seed, True):
        hypotheses, references, char_order, word_order, beta = case.args
        metric = sacrebleu.CHRF(char_order=char_order, word_order=word_order, beta=beta)
        assert case.expected == pytest.approx(metric.corpus_score(hypotheses, [references]).score)


class _WordTokenizer:
    """Words as tokens, and the chat template's markers as three more: a message then costs
    its words plus 3 (role marker, newline, end marker), as the task counts."""

    def __init__(self):
        self.special_tokens = {}

    def encode(self, text):
        return text.split()


@pytest.mark.parametrize("seed", [0, 1])
def test_trim_expected_values_follow_the_chat_session(seed, monkeypatch):
    from llmkit import chat

    def encode_chat(tokenizer, messages, add_generation_prompt=False):
        ids = [w for m in messages for w in ["<role>", *m["content"].split(), "<end>", "\n"]]
        return ids, None

    monkeypatch.setattr(chat, "encode_chat", encode_chat)
    for case in cached_cases("applications.trim", seed, True):
        messages, limit = case.args
        session = chat.ChatSession.__new__(chat.ChatSession)
        session.messages = list(messages)
        session.reply_room = 0
        session.model = type("M", (), {"config": type("C", (), {"context_length": limit})()})()
        session.tokenizer = _WordTokenizer()
        try:
            kept = session.prompt_messages()
        except ValueError:
            kept = None
        assert kept == case.expected, case.note


# --- forbidden routes: each is reported "forbidden" ------------------------------------------

def squad_with_llmkit(predictions, references):
    from llmkit.evaluate import exact_match
    return 100.0 * exact_match(predictions, references, normalize=True)


def squad_with_normalize_answer(predictions, references):
    from llmkit import evaluate
    return 100.0 * sum(evaluate.normalize_answer(p) in map(evaluate.normalize_answer, answers)
                       for p, answers in zip(predictions, references)) / len(predictions)


def rouge_with_rouge_score(prediction, reference):
    from rouge_score import rouge_scorer
    return rouge_scorer.RougeScorer(["rougeL"]).score(reference, prediction)["rougeL"].fmeasure


def rouge_with_llmkit(prediction, reference):
    from llmkit.evaluate import sentence_rouge_l
    return sentence_rouge_l(prediction, reference)


def trim_with_chat_session(messages, limit):
    from llmkit import chat

    session = chat.ChatSession.__new__(chat.ChatSession)
    session.messages = list(messages)
    session.reply_room = 0
    session.model = type("M", (), {"config": type("C", (), {"context_length": limit})()})()
    session.tokenizer = None
    try:
        return session.prompt_messages()
    except Exception:
        return None


def chrf_with_sacrebleu(hypotheses, references, char_order, word_order, beta):
    import sacrebleu
    return sacrebleu.corpus_chrf(hypotheses, [references], char_order=char_order,
                                 word_order=word_order, beta=beta).score


def chrf_with_sacrebleus_class(hypotheses, references, char_order, word_order, beta):
    from sacrebleu.metrics import CHRF
    return CHRF(char_order=char_order, word_order=word_order, beta=beta).corpus_score(
        hypotheses, [references]).score


def rouge_with_its_tokenizer(prediction, reference):
    from rouge_score.tokenize import tokenize
    a, b = tokenize(prediction, None), tokenize(reference, None)
    return _f(_lcs(a, b), len(a), len(b)) if a and b else 0.0


def chrf_with_llmkit(hypotheses, references, char_order, word_order, beta):
    from llmkit.evaluate import chrf as finished
    return finished(hypotheses, references, char_order=char_order, word_order=word_order,
                    beta=beta)


def chrf_with_nltk(hypotheses, references, char_order, word_order, beta):
    from nltk.translate.chrf_score import corpus_chrf
    return 100 * corpus_chrf(references, hypotheses, max_len=char_order, beta=beta)


FORBIDDEN = [("applications.squad_em", squad_with_llmkit),
             ("applications.squad_em", squad_with_normalize_answer),
             ("applications.rouge_l", rouge_with_rouge_score),
             ("applications.rouge_l", rouge_with_llmkit),
             ("applications.rouge_l", rouge_with_its_tokenizer),
             ("applications.trim", trim_with_chat_session),
             ("applications.chrf", chrf_with_sacrebleu),
             ("applications.chrf", chrf_with_sacrebleus_class),
             ("applications.chrf", chrf_with_llmkit),
             ("applications.chrf", chrf_with_nltk)]


def test_every_task_has_a_forbidden_route_here():
    assert {exercise_id for exercise_id, _ in FORBIDDEN} == set(EXERCISES)


@pytest.mark.parametrize("exercise_id, cheat", FORBIDDEN, ids=_name)
def test_the_finished_pieces_are_reported_forbidden(exercise_id, cheat, monkeypatch):
    monkeypatch.delenv("LLMKIT_CHECK_STRICT", raising=False)
    result = check(exercise_id, cheat)
    assert result.status == "forbidden", str(result)
    assert "rules that out" in result.message
