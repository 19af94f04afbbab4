"""Text the course trains on: TinyTales stories, local files, and batches of token ids."""

from llmkit.data.batches import as_token_tensor, get_batch, split_train_val

__all__ = ["as_token_tensor", "get_batch", "split_train_val"]
