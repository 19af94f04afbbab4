"""The GPT model of lessons 03-06 and 12: config, layers, KV cache and GPT-2 weight import."""

from llmkit.model.attention import CausalSelfAttention, causal_mask, masked_attention
from llmkit.model.config import GPTConfig
from llmkit.model.embeddings import RotaryEmbedding, sinusoidal_positions
from llmkit.model.gpt import GPT, IGNORE_INDEX
from llmkit.model.gpt2 import from_hf_folder, from_hf_model, from_hf_state_dict, pretrained_gpt2
from llmkit.model.kv_cache import KVCache
from llmkit.model.layers import MLP, Block, MixtureOfExperts, RMSNorm, SwiGLU

__all__ = [
    "GPT", "GPTConfig", "KVCache", "IGNORE_INDEX", "Block", "CausalSelfAttention", "MLP",
    "SwiGLU", "MixtureOfExperts", "RMSNorm", "RotaryEmbedding", "causal_mask",
    "masked_attention", "sinusoidal_positions", "from_hf_folder", "from_hf_model",
    "from_hf_state_dict", "pretrained_gpt2",
]
