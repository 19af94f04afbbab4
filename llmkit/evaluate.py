"""How good is a model? Loss on a fixed set, and the scores of lessons 09-10's tasks.

Two kinds of measurement live here:

- the loss of a language model on a fixed set of text or examples (the same every time, so
  two measurements differ only because the model changed), with its readings as
  perplexity and bits per character;
- task metrics on generated text (accuracy, exact match, chrF and BLEU, ROUGE-L), each a
  function whose docstring says what it rewards.
"""

from __future__ import annotations


# --- loss on a fixed set -------------------------------------------------------------------


# --- task metrics --------------------------------------------------------------------------
