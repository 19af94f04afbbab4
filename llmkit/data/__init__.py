"""Text the course trains on: TinyTales stories, local files, and batches of token ids."""

from llmkit.data.batches import as_token_tensor, get_batch, split_train_val
from llmkit.data.text import DownloadError, cached_download, load_text, python_stdlib_source
from llmkit.data.tinytales import (
    LABELS,
    SEPARATOR,
    Facts,
    Story,
    World,
    chat_examples,
    classification_examples,
    entropy_floor_bits_per_char,
    generate_stories,
    instruction_pairs,
    qa_examples,
    role_probabilities,
    summarization_pairs,
    tinytales_text,
    translation_pairs,
)

__all__ = [
    "LABELS", "SEPARATOR", "DownloadError", "Facts", "Story", "World",
    "cached_download", "load_text", "python_stdlib_source",
    "as_token_tensor", "chat_examples", "classification_examples",
    "entropy_floor_bits_per_char", "generate_stories", "get_batch", "instruction_pairs",
    "qa_examples", "role_probabilities", "split_train_val", "summarization_pairs",
    "tinytales_text", "translation_pairs",
]
