"""How good is a model? Loss on a fixed set, and the scores of lessons 09-10's tasks.

Two kinds of measurement live here:

- the loss of a language model on a fixed set of text or examples (the same every time, so
  two measurements differ only because the model changed), with its readings as
  perplexity and bits per character;
- task metrics on generated text (accuracy, exact match, chrF and BLEU, ROUGE-L), each a
  function whose docstring says what it rewards.
"""

from __future__ import annotations

import contextlib
import math

import torch
from torch import nn

from llmkit.data.batches import IGNORE_INDEX, as_token_tensor
from llmkit.device import autocast, pick_device


# --- loss on a fixed set -------------------------------------------------------------------
#
# A loss measured on random batches moves with the batches drawn; measured on a fixed set
# (the same windows or examples every time) it moves only because the model changed. Every
# loss here is the mean over the targets that count (not IGNORE_INDEX), weighted by how many
# each batch holds, so a batch of short examples weighs less than one of long examples.


@contextlib.contextmanager
def eval_mode(model: nn.Module):
    """`with eval_mode(model):` runs the model without dropout and without autograd, then
    puts every submodule back in the mode it was in (a frozen part left in eval stays so)."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            yield model
    finally:
        for module, training in modes:
            module.training = training


def counted_targets(y: torch.Tensor) -> int:
    """How many targets of y count towards the loss: those not equal to IGNORE_INDEX."""
    return int((y != IGNORE_INDEX).sum())


def check_targets(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
    """Raise a ValueError unless every token target of y is a token id of the model's
    vocabulary or IGNORE_INDEX (cross_entropy would raise a bare IndexError, or on a GPU
    stop at a device assert). Class labels (y of shape (B,)) are the classifier's to check."""
    vocab_size = getattr(getattr(model, "config", None), "vocab_size", None)
    if vocab_size is None or y.shape != x.shape:
        return
    scored = y[y != IGNORE_INDEX]
    if len(scored) and (int(scored.min()) < 0 or int(scored.max()) >= vocab_size):
        raise ValueError(
            f"targets must be token ids in 0..{vocab_size - 1} or {IGNORE_INDEX} (skipped), got "
            f"ids from {int(scored.min())} to {int(scored.max())}; was the text encoded with "
            "another tokenizer?"
        )


def fixed_set_loss(model: nn.Module, batches, device=None, precision: str = "fp32") -> float:
    """The mean loss per counted target over a fixed list of batches.

    batches: (x, y) pairs as the model takes them, e.g. x (B, T) int64 with y (B, T) token
    targets or y (B,) class labels; IGNORE_INDEX in y marks targets to skip. model(x, y) must
    return (output, mean loss over y's counted targets), as `llmkit.model.GPT` does.
    Returns sum over batches of (batch mean x counted targets) / all counted targets: the
    loss of one batch holding every example (checked in tests/test_evaluate.py against
    one cross_entropy call over the concatenated targets).
    """
    device = next(model.parameters()).device if device is None else torch.device(device)
    total, count = 0.0, 0
    with eval_mode(model):
        for x, y in batches:
            check_targets(model, x, y)
            n = counted_targets(y)
            if n == 0:
                continue
            with autocast(device, precision=precision):
                _, loss = model(x.to(device), y.to(device))
            total += loss.float().item() * n
            count += n
    if count == 0:
        raise ValueError("the fixed set has no targets to score (every label is IGNORE_INDEX "
                         f"= {IGNORE_INDEX}); give it examples with labels.")
    return total / count


def stream_loss(model: nn.Module, ids, context_length: int, batch_size: int = 64, device=None,
                precision: str = "fp32") -> float:
    """The mean loss over a whole token stream, read as consecutive windows.

    ids: (n,) token stream -> mean cross-entropy (nats per token) over the first
    (n - 1) // context_length windows of context_length tokens, each position predicting
    the next token (the last few targets that fill no whole window are left out). Each
    position of the window occurs equally often, as in random windows, so this measures
    what `Trainer.estimate_loss` does, without its sampling noise: the figure to compare
    runs by. The model runs in eval mode, batch_size windows at a time; precision is
    TrainConfig's (default fp32, the same arithmetic for every run compared).
    """
    ids = as_token_tensor(ids)
    if not isinstance(context_length, int) or context_length < 1 or len(ids) < context_length + 1:
        raise ValueError(f"need a positive context_length and at least context_length + 1 tokens; "
                         f"got context_length={context_length!r} and {len(ids)} tokens.")
    device = pick_device(device) if device is not None else None
    n_windows = (len(ids) - 1) // context_length
    inputs = ids[: n_windows * context_length].view(n_windows, context_length)
    targets = ids[1 : n_windows * context_length + 1].view(n_windows, context_length)
    batches = ((inputs[start : start + batch_size], targets[start : start + batch_size])
               for start in range(0, n_windows, batch_size))
    return fixed_set_loss(model, batches, device=device, precision=precision)


def perplexity(loss: float) -> float:
    """exp(loss): the number of equally likely tokens the model is as unsure as.

    loss: mean cross-entropy in nats per token. A uniform guess over V tokens has loss
    ln V and perplexity V; a perfect model has perplexity 1.
    """
    return math.exp(loss)


def bits_per_character(loss: float, n_tokens: int, n_characters: int) -> float:
    """The loss in bits per character of text, comparable across tokenizers.

    loss: nats per token over n_tokens tokens that spell n_characters characters. With
    characters as tokens this is loss / ln 2; with BPE each token covers several characters,
    so the same text costs loss * n_tokens / n_characters nats per character.
    """
    if n_tokens < 1 or n_characters < 1:
        raise ValueError(f"need at least one token and one character, got n_tokens={n_tokens}, "
                         f"n_characters={n_characters}.")
    return loss * n_tokens / (n_characters * math.log(2))


# --- task metrics --------------------------------------------------------------------------
#
# Each metric compares what a model wrote with a reference and returns one number. Accuracy,
# exact match and ROUGE-L are fractions in [0, 1]; chrF and BLEU keep sacrebleu's 0-100 scale,
# the one papers report. chrF and BLEU come from sacrebleu and ROUGE-L from rouge-score, the
# implementations everyone reports, so our numbers can be compared with published ones.

LIBRARIES_HINT = ("pip install sacrebleu rouge-score (both are in requirements.txt: "
                  "pip install -r requirements.txt)")


def check_pairs(predictions, references, what: str = "predictions") -> tuple[list, list]:
    """Return both as lists, or raise a ValueError unless they are equally long and not empty."""
    if isinstance(predictions, str) or isinstance(references, str):
        raise ValueError(
            f"{what} and references must be lists (one entry per example), got a single str; "
            "for one pair use the sentence_ version of the metric, or wrap each in a list."
        )
    predictions, references = list(predictions), list(references)
    if len(predictions) != len(references) or not predictions:
        raise ValueError(
            f"need one reference per prediction and at least one pair, got {len(predictions)} "
            f"{what} and {len(references)} references."
        )
    return predictions, references


def check_texts(texts: list, what: str) -> None:
    """Raise a ValueError unless every entry is a str (generated text must be decoded first)."""
    for number, text in enumerate(texts):
        if not isinstance(text, str):
            raise ValueError(
                f"{what} {number} must be a str, got {type(text).__name__}; decode token ids "
                "with the tokenizer before scoring."
            )


def accuracy(predictions, labels) -> float:
    """The share of predictions equal to their label, in [0, 1].

    predictions, labels: equally long sequences (lists or 1-D tensors) of class labels.
    Rewards: getting the class right. Misses: how sure the model was, and which classes it
    confuses; on unbalanced labels always answering the majority class already scores high.
    """
    if hasattr(predictions, "tolist"):
        predictions = predictions.tolist()
    if hasattr(labels, "tolist"):
        labels = labels.tolist()
    predictions, labels = check_pairs(predictions, labels)
    return sum(p == y for p, y in zip(predictions, labels)) / len(labels)


def normalize_answer(text: str) -> str:
    """SQuAD's answer normalisation: lower case, no punctuation, no articles, single spaces.

    "The  Blue Ball!" -> "blue ball". The same steps as the official SQuAD v1.1 evaluation
    script (articles are the English "a", "an", "the").
    """
    import re
    import string

    text = text.lower()
    text = "".join(ch for ch in text if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def exact_match(predictions, references, normalize: bool = False) -> float:
    """The share of predictions that equal their reference exactly, in [0, 1].

    predictions: list of str. references: list with, per prediction, one str or a list of
    acceptable answers (the best one counts, as in SQuAD). normalize=True compares the
    answers after `normalize_answer` (SQuAD's rule), so "The ball." matches "ball".
    Rewards: the exact answer and nothing else. Misses: partial credit (one word off scores
    0) and answers that are right in other words; without normalisation even a final full
    stop or a capital letter makes an answer wrong.
    """
    predictions, references = check_pairs(predictions, references)
    check_texts(predictions, "prediction")
    hits = 0
    for prediction, answers in zip(predictions, references):
        answers = [answers] if isinstance(answers, str) else list(answers)
        check_texts(answers, "reference")
        if normalize:
            prediction, answers = normalize_answer(prediction), map(normalize_answer, answers)
        hits += prediction in answers
    return hits / len(predictions)


def load_sacrebleu():
    """The sacrebleu module, or an ImportError that says how to install it."""
    try:
        import sacrebleu
    except ImportError as error:
        raise ImportError(f"chrF and BLEU are computed by sacrebleu, which is not installed: "
                          f"{LIBRARIES_HINT}") from error
    return sacrebleu


def chrf(hypotheses, references, char_order: int = 6, word_order: int = 0,
         beta: float = 2.0) -> float:
    """Corpus chrF (Popović 2015) through sacrebleu, 0-100.

    hypotheses, references: lists of str, one reference per hypothesis. chrF counts the
    character n-grams (n = 1..char_order, spaces removed) the hypothesis shares with the
    reference, summed over the corpus; per n it takes precision and recall, averages each
    over n, and combines them into an F-score that weighs recall beta times as much as
    precision. word_order=2 adds word uni- and bigrams (chrF++).
    Rewards: getting most of the characters right, so a word with the wrong ending still
    earns credit (good for languages with rich word endings, such as Spanish). Misses:
    meaning; words in the wrong order lose little, since short n-grams survive reordering.
    """
    hypotheses, references = check_pairs(hypotheses, references, "hypotheses")
    check_texts(hypotheses, "hypothesis")
    check_texts(references, "reference")
    metric = load_sacrebleu().CHRF(char_order=char_order, word_order=word_order, beta=beta)
    return metric.corpus_score(hypotheses, [references]).score


def sentence_chrf(hypothesis: str, reference: str, char_order: int = 6, word_order: int = 0,
                  beta: float = 2.0) -> float:
    """chrF of one hypothesis against one reference, 0-100 (see chrf)."""
    return chrf([hypothesis], [reference], char_order, word_order, beta)


def bleu(hypotheses, references) -> float:
    """Corpus BLEU (Papineni et al. 2002) through sacrebleu, 0-100, with its standard settings.

    hypotheses, references: lists of str, one reference per hypothesis. BLEU is the geometric
    mean of the clipped word n-gram precisions for n = 1..4 (a hypothesis n-gram counts at
    most as often as it occurs in the reference), counted over the whole corpus, times a
    brevity penalty exp(1 - ref_len / hyp_len) when the hypotheses are shorter in total.
    Rewards: the reference's exact words in the reference's order. Misses: synonyms and
    other correct wordings; a single short sentence with no matching 4-gram scores 0, which
    is why it is a corpus metric (see sentence_bleu).
    """
    hypotheses, references = check_pairs(hypotheses, references, "hypotheses")
    check_texts(hypotheses, "hypothesis")
    check_texts(references, "reference")
    return load_sacrebleu().BLEU().corpus_score(hypotheses, [references]).score


def sentence_bleu(hypothesis: str, reference: str) -> float:
    """BLEU of one sentence, 0-100, with sacrebleu's effective order.

    With effective order a precision whose n-gram order the sentence is too short to have
    is left out instead of zeroing the score (sacrebleu's recommendation for sentences).
    Still noisy: prefer corpus `bleu` for comparing models.
    """
    check_texts([hypothesis], "hypothesis")
    check_texts([reference], "reference")
    metric = load_sacrebleu().BLEU(effective_order=True)
    return metric.sentence_score(hypothesis, [reference]).score


def sentence_rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F-measure (Lin 2004) of one text against one reference, in [0, 1].

    Both are split into lower-case words (rouge-score's tokenizer: runs of a-z and 0-9;
    other characters, accented letters included, are dropped). With L the length of their
    longest common subsequence (words in the same order, gaps allowed), precision is
    L / len(prediction), recall L / len(reference), and the score their harmonic mean.
    Rewards: the reference's words in the reference's order, without needing them to be
    adjacent. Misses: meaning (a negation costs one word) and paraphrase; no stemming, so
    "kill" and "killed" differ.
    """
    check_texts([prediction], "prediction")
    check_texts([reference], "reference")
    try:
        from rouge_score import rouge_scorer
    except ImportError as error:
        raise ImportError(f"ROUGE-L is computed by rouge-score, which is not installed: "
                          f"{LIBRARIES_HINT}") from error
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    return scorer.score(reference, prediction)["rougeL"].fmeasure


def rouge_l(predictions, references) -> float:
    """The mean sentence_rouge_l F-measure over pairs, in [0, 1] (how ROUGE-L is reported)."""
    predictions, references = check_pairs(predictions, references)
    scores = [sentence_rouge_l(p, r) for p, r in zip(predictions, references)]
    return sum(scores) / len(scores)
