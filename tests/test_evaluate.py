"""Task metrics of llmkit.evaluate against brute-force hand computations, the libraries' own
scores (sacrebleu, rouge-score) called directly, and textbook values."""

import itertools
import math
import string
import sys
from collections import Counter

import pytest
import sacrebleu
import torch
from rouge_score import rouge_scorer

from llmkit.evaluate import (accuracy, bleu, chrf, exact_match, normalize_answer, rouge_l,
                             sentence_bleu, sentence_chrf, sentence_rouge_l)

HYPOTHESES = ["the little cat found a red ball in the garden",
              "tom was sad because the dog ran away",
              "el perro encontró una pelota roja"]
REFERENCES = ["the small cat found the red ball in the garden",
              "tom was very sad because his dog ran away",
              "el perro encontro la pelota roja"]


# --- accuracy and exact match --------------------------------------------------------------


def test_accuracy_counts_equal_labels_in_lists_and_tensors():
    assert accuracy([1, 0, 2, 2], [1, 1, 2, 0]) == 0.5
    assert accuracy(torch.tensor([3, 3, 3]), torch.tensor([3, 1, 3])) == pytest.approx(2 / 3)
    assert accuracy(["happy", "sad"], ["happy", "sad"]) == 1.0
    with pytest.raises(ValueError, match="one reference per prediction"):
        accuracy([1, 2], [1])


def squad_normalize_by_hand(text):
    """The four steps of SQuAD v1.1's evaluate script, written out character by character."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in string.punctuation)
    words = [w for w in text.split() if w not in ("a", "an", "the")]
    return " ".join(words)


def test_normalize_answer_is_squads_rule():
    assert normalize_answer("The  Blue Ball!") == "blue ball"
    assert normalize_answer("An apple, a day.") == "apple day"
    assert normalize_answer("theater") == "theater"   # "the" only as a whole word
    for text in ["Tom's  dog", "A RED, red hat...", "  the end  ", "then an answer"]:
        assert normalize_answer(text) == squad_normalize_by_hand(text)


def test_exact_match_with_and_without_normalisation_and_several_answers():
    predictions = ["The ball.", "a dog", "Mia", "blue"]
    references = ["ball", ["the dog", "dog"], "Mia", "red"]
    assert exact_match(predictions, references) == 1 / 4          # only "Mia" is exact
    assert exact_match(predictions, references, normalize=True) == 3 / 4
    with pytest.raises(ValueError, match="decode token ids"):
        exact_match([[1, 2]], ["ab"])
    with pytest.raises(ValueError, match="lists"):
        exact_match("ball", "ball")


# --- chrF ----------------------------------------------------------------------------------


def char_ngram_stats(hypothesis, reference, n):
    """(hypothesis n-grams, reference n-grams, clipped matches) of characters, spaces removed."""
    hyp, ref = "".join(hypothesis.split()), "".join(reference.split())
    hyp_grams = Counter(hyp[i:i + n] for i in range(len(hyp) - n + 1))
    ref_grams = Counter(ref[i:i + n] for i in range(len(ref) - n + 1))
    matches = sum(min(count, ref_grams[gram]) for gram, count in hyp_grams.items())
    return sum(hyp_grams.values()), sum(ref_grams.values()), matches


def chrf_by_hand(hypotheses, references, order, beta=2.0):
    """Popović's chrF: per n, corpus precision and recall; each averaged over n; F-beta."""
    precisions, recalls = [], []
    for n in range(1, order + 1):
        stats = [char_ngram_stats(h, r, n) for h, r in zip(hypotheses, references)]
        n_hyp, n_ref, n_match = (sum(column) for column in zip(*stats))
        if n_hyp and n_ref:
            precisions.append(n_match / n_hyp)
            recalls.append(n_match / n_ref)
    p, r = sum(precisions) / len(precisions), sum(recalls) / len(recalls)
    return 100 * (1 + beta**2) * p * r / (beta**2 * p + r) if p + r else 0.0


@pytest.mark.parametrize("order", [1, 2, 3, 6])
def test_chrf_equals_a_hand_computation_and_sacrebleu(order):
    expected = chrf_by_hand(HYPOTHESES, REFERENCES, order)
    assert chrf(HYPOTHESES, REFERENCES, char_order=order) == pytest.approx(expected, rel=1e-9)
    library = sacrebleu.metrics.CHRF(char_order=order, word_order=0)
    assert chrf(HYPOTHESES, REFERENCES, char_order=order) == pytest.approx(
        library.corpus_score(HYPOTHESES, [REFERENCES]).score, rel=1e-12)
    for h, r in zip(HYPOTHESES, REFERENCES):
        assert sentence_chrf(h, r, char_order=order) == pytest.approx(
            chrf_by_hand([h], [r], order), rel=1e-9)


def test_chrf_textbook_cases_and_chrf_plus_plus():
    assert sentence_chrf("the cat", "the cat") == pytest.approx(100.0)
    assert sentence_chrf("xyz", "abc") == 0.0
    # "ab" vs "abc" at order 1: precision 2/2, recall 2/3, F2 = 5 * 1 * 2/3 / (4 + 2/3) = 5/7.
    assert sentence_chrf("ab", "abc", char_order=1) == pytest.approx(100 * 5 / 7)
    library = sacrebleu.metrics.CHRF(word_order=2)
    assert chrf(HYPOTHESES, REFERENCES, word_order=2) == pytest.approx(
        library.corpus_score(HYPOTHESES, [REFERENCES]).score, rel=1e-12)


# --- BLEU ----------------------------------------------------------------------------------


def bleu_by_hand(hypotheses, references, max_n=4):
    """Papineni et al.: corpus clipped n-gram precisions, geometric mean, brevity penalty.
    Words are split on spaces (the test texts have no punctuation for sacrebleu to split)."""
    log_precisions, hyp_len, ref_len = [], 0, 0
    for n in range(1, max_n + 1):
        matched = total = 0
        for hypothesis, reference in zip(hypotheses, references):
            h, r = hypothesis.split(), reference.split()
            h_grams = Counter(tuple(h[i:i + n]) for i in range(len(h) - n + 1))
            r_grams = Counter(tuple(r[i:i + n]) for i in range(len(r) - n + 1))
            matched += sum(min(c, r_grams[g]) for g, c in h_grams.items())
            total += sum(h_grams.values())
        log_precisions.append(math.log(matched / total))
    for hypothesis, reference in zip(hypotheses, references):
        hyp_len, ref_len = hyp_len + len(hypothesis.split()), ref_len + len(reference.split())
    brevity = 1.0 if hyp_len > ref_len else math.exp(1 - ref_len / hyp_len)
    return 100 * brevity * math.exp(sum(log_precisions) / max_n)


def test_bleu_equals_a_hand_computation_and_sacrebleu():
    expected = bleu_by_hand(HYPOTHESES, REFERENCES)
    assert 0 < expected < 100
    assert bleu(HYPOTHESES, REFERENCES) == pytest.approx(expected, rel=1e-9)
    assert bleu(HYPOTHESES, REFERENCES) == pytest.approx(
        sacrebleu.corpus_bleu(HYPOTHESES, [REFERENCES]).score, rel=1e-12)
    # A short hypothesis pays the brevity penalty.
    short = [" ".join(h.split()[:-1]) for h in HYPOTHESES]
    assert bleu(short, REFERENCES) == pytest.approx(bleu_by_hand(short, REFERENCES), rel=1e-9)


def test_bleu_textbook_values():
    # Papineni et al.'s example: "the" seven times against a reference holding it twice has
    # clipped unigram precision 2/7 (so BLEU with only unigrams would be 2/7 times the penalty).
    h, r = "the the the the the the the", "the cat is on the mat"
    assert sacrebleu.corpus_bleu([h], [[r]]).precisions[0] == pytest.approx(100 * 2 / 7)
    assert sentence_bleu("the cat sat on the mat", "the cat sat on the mat") == pytest.approx(100)
    assert bleu(["a b c d e"], ["v w x y z"]) == 0.0
    # A 3-word sentence has no 4-grams: effective order leaves that precision out instead of
    # scoring 0, and gives sacrebleu's own sentence score.
    assert sentence_bleu("the red ball", "the red ball") == pytest.approx(100)
    library = sacrebleu.metrics.BLEU(effective_order=True)
    for h, r in zip(HYPOTHESES, REFERENCES):
        assert sentence_bleu(h, r) == pytest.approx(library.sentence_score(h, [r]).score)


# --- ROUGE-L -------------------------------------------------------------------------------


def lcs_brute_force(a, b):
    """Length of the longest common subsequence by trying every subsequence of a (tiny a)."""
    for length in range(len(a), 0, -1):
        for chosen in itertools.combinations(range(len(a)), length):
            words, j = [a[i] for i in chosen], 0
            for word in b:                      # is `words` a subsequence of b?
                if j < len(words) and word == words[j]:
                    j += 1
            if j == len(words):
                return length
    return 0


PAIRS = [("police kill the gunman", "police killed the gunman"),
         ("the gunman kill police", "police killed the gunman"),
         ("the cat sat on the mat near the door", "a cat was on the mat by the door"),
         ("Tom, the dog and Mia!", "mia and tom and the dog"),
         ("nothing in common", "entirely different words")]


@pytest.mark.parametrize("prediction, reference", PAIRS)
def test_rouge_l_equals_the_lcs_by_hand_and_rouge_score(prediction, reference):
    p_words = prediction.lower().replace(",", " ").replace("!", " ").split()
    r_words = reference.lower().split()
    lcs = lcs_brute_force(p_words, r_words)
    precision, recall = lcs / len(p_words), lcs / len(r_words)
    expected = 0.0 if lcs == 0 else 2 * precision * recall / (precision + recall)
    assert sentence_rouge_l(prediction, reference) == pytest.approx(expected)
    library = rouge_scorer.RougeScorer(["rougeL"]).score(reference, prediction)["rougeL"]
    assert sentence_rouge_l(prediction, reference) == pytest.approx(library.fmeasure)


def test_rouge_l_textbook_values_and_the_mean_over_pairs():
    # Lin (2004), section 3.1: against "police killed the gunman", S2 "police kill the gunman"
    # has LCS 3 (ROUGE-L 3/4) and S3 "the gunman kill police" LCS 2 (ROUGE-L 1/2).
    assert sentence_rouge_l("police kill the gunman", "police killed the gunman") == 0.75
    assert sentence_rouge_l("the gunman kill police", "police killed the gunman") == 0.5
    predictions, references = zip(*PAIRS)
    expected = sum(sentence_rouge_l(p, r) for p, r in PAIRS) / len(PAIRS)
    assert rouge_l(list(predictions), list(references)) == pytest.approx(expected)


# --- missing libraries ---------------------------------------------------------------------


def test_a_missing_library_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "sacrebleu", None)    # import sacrebleu now fails
    with pytest.raises(ImportError, match="pip install sacrebleu rouge-score"):
        chrf(["a"], ["a"])
    with pytest.raises(ImportError, match="pip install sacrebleu rouge-score"):
        bleu(["a"], ["a"])
    monkeypatch.setitem(sys.modules, "rouge_score", None)
    with pytest.raises(ImportError, match="pip install sacrebleu rouge-score"):
        rouge_l(["a"], ["a"])
