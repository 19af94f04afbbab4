"""Load OpenAI's GPT-2 weights, as published by Hugging Face, into our GPT.

Our GPT with the default variants is GPT-2 layer for layer, so importing is renaming:

    Hugging Face GPT2LMHeadModel        llmkit GPT
    wte, wpe                            token_embedding, position_embedding
    h.{i}.ln_1, h.{i}.ln_2              blocks.{i}.norm1, blocks.{i}.norm2
    h.{i}.attn.c_attn, attn.c_proj      blocks.{i}.attn.qkv, attn.proj
    h.{i}.mlp.c_fc, mlp.c_proj          blocks.{i}.mlp.fc, mlp.proj
    ln_f, lm_head                       norm_final, lm_head

with one twist: GPT-2 stores its linear layers as `Conv1D`, whose weight is (in, out), the
transpose of `nn.Linear`'s (out, in). The tests build a small random GPT2LMHeadModel from a
GPT2Config (no download) and check that the logits agree.

Three sources work offline: a state dict, a GPT2LMHeadModel, or a local folder with
config.json and model.safetensors (or pytorch_model.bin), as `save_pretrained` writes.
`pretrained_gpt2` fetches the official weights, but only when asked to with download=True.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from llmkit.model.config import GPTConfig
from llmkit.model.gpt import GPT

# Linear layers that GPT-2 stores transposed (Conv1D).
CONV1D_SUFFIXES = ("attn.c_attn.weight", "attn.c_proj.weight",
                   "mlp.c_fc.weight", "mlp.c_proj.weight")
TOP_LEVEL_NAMES = {"wte.": "token_embedding.", "wpe.": "position_embedding.",
                   "ln_f.": "norm_final.", "h.": "blocks."}
BLOCK_NAMES = {".ln_1.": ".norm1.", ".ln_2.": ".norm2.",
               ".attn.c_attn.": ".attn.qkv.", ".attn.c_proj.": ".attn.proj.",
               ".mlp.c_fc.": ".mlp.fc.", ".mlp.c_proj.": ".mlp.proj."}
TANH_GELUS = ("gelu_new", "gelu_pytorch_tanh", "gelu_fast")
OFFICIAL_REPOS = {name: f"openai-community/{name}"
                  for name in ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl")}


def gpt2_config(hf_config) -> GPTConfig:
    """A GPTConfig from a Hugging Face GPT2Config (or its dict / config.json contents).

    Raises a ValueError for GPT-2 options our model does not implement.
    """
    values = hf_config if isinstance(hf_config, dict) else hf_config.to_dict()
    if values.get("model_type", "gpt2") != "gpt2":
        raise ValueError(
            f"expected a GPT-2 config (model_type 'gpt2'), got {values.get('model_type')!r}."
        )
    activation = values.get("activation_function", "gelu_new")
    unsupported = {
        "activation_function": activation not in TANH_GELUS,
        "scale_attn_by_inverse_layer_idx": values.get("scale_attn_by_inverse_layer_idx", False),
        "scale_attn_weights": not values.get("scale_attn_weights", True),
        "add_cross_attention": values.get("add_cross_attention", False),
    }
    if any(unsupported.values()):
        raise ValueError(
            f"this GPT-2 config uses options llmkit's GPT does not implement: "
            f"{[name for name, bad in unsupported.items() if bad]} (activation {activation!r}); "
            "only the standard GPT-2 architecture can be imported."
        )
    return GPTConfig(
        vocab_size=values["vocab_size"],
        context_length=values["n_positions"],
        n_layer=values["n_layer"],
        n_head=values["n_head"],
        d_model=values["n_embd"],
        dropout=values.get("resid_pdrop", 0.0),
        bias=True,
        tie_weights=values.get("tie_word_embeddings", True),
        layer_norm_eps=values.get("layer_norm_epsilon", 1e-5),
        mlp_hidden=values.get("n_inner"),
    )


def rename(key: str) -> str:
    """A GPT-2 weight name -> ours, e.g. h.3.mlp.c_fc.bias -> blocks.3.mlp.fc.bias."""
    for old, new in TOP_LEVEL_NAMES.items():
        if key.startswith(old):
            key = new + key[len(old):]
            break
    for old, new in BLOCK_NAMES.items():
        key = key.replace(old, new)
    return key


def convert_state_dict(hf_state: dict[str, torch.Tensor], config: GPTConfig,
                       ) -> dict[str, torch.Tensor]:
    """Rename (and transpose where needed) a GPT-2 state dict into our GPT's names.

    Accepts keys with or without the `transformer.` prefix; drops GPT-2's stored attention
    masks, and lm_head.weight when the weights are tied. Returns float32 tensors.
    """
    ours = {}
    for key, tensor in hf_state.items():
        key = key.removeprefix("transformer.")
        if key.endswith((".attn.bias", ".attn.masked_bias")):  # causal masks saved as buffers
            continue
        if key == "lm_head.weight":
            if not config.tie_weights:
                ours[key] = tensor.float()
            continue
        if key.endswith(CONV1D_SUFFIXES):
            tensor = tensor.t()
        ours[rename(key)] = tensor.float().contiguous()
    return ours


def from_hf_state_dict(hf_state: dict[str, torch.Tensor], config) -> GPT:
    """A GPT holding the weights of a Hugging Face GPT-2 state dict.

    config: a GPTConfig, or a GPT-2 config (GPT2Config or its dict). Missing or unexpected
    weights raise a ValueError that names them.
    """
    config = config if isinstance(config, GPTConfig) else gpt2_config(config)
    model = GPT(config)
    state = convert_state_dict(hf_state, config)
    shapes = {name: tensor.shape for name, tensor in model.state_dict().items()}
    if config.tie_weights:
        del shapes["lm_head.weight"]   # the same tensor as token_embedding.weight
    missing, unexpected = sorted(set(shapes) - set(state)), sorted(set(state) - set(shapes))
    if missing or unexpected:
        raise ValueError(
            f"these GPT-2 weights do not fit a {config.n_layer}-layer, {config.d_model}-wide "
            f"GPT: missing {missing[:5]}{'...' if len(missing) > 5 else ''}, unexpected "
            f"{unexpected[:5]}{'...' if len(unexpected) > 5 else ''}. Check that the config "
            "matches the weights."
        )
    for name, tensor in state.items():
        if tensor.shape != shapes[name]:
            raise ValueError(
                f"weight {name} has shape {tuple(tensor.shape)} in the file but "
                f"{tuple(shapes[name])} in the model; check the config."
            )
    model.load_state_dict(state, strict=False)
    return model.eval()


def from_hf_model(hf_model) -> GPT:
    """A GPT equal to a transformers GPT2LMHeadModel (same weights, same logits in eval mode)."""
    if not hasattr(hf_model, "state_dict") or not hasattr(hf_model, "config"):
        raise ValueError(f"expected a transformers GPT2LMHeadModel, got {type(hf_model).__name__}.")
    return from_hf_state_dict(hf_model.state_dict(), hf_model.config)


def load_weight_files(folder: Path) -> dict[str, torch.Tensor]:
    """All tensors of a Hugging Face model folder: model.safetensors (single or sharded)
    or pytorch_model.bin."""
    index = folder / "model.safetensors.index.json"
    if index.exists():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return {k: v for shard in shards for k, v in load_file(folder / shard).items()}
    if (folder / "model.safetensors").exists():
        return load_file(folder / "model.safetensors")
    if (folder / "pytorch_model.bin").exists():
        return torch.load(folder / "pytorch_model.bin", map_location="cpu", weights_only=True)
    raise FileNotFoundError(
        f"no weights in {folder}: expected model.safetensors or pytorch_model.bin next to "
        "config.json (the files GPT2LMHeadModel.save_pretrained writes)."
    )


def from_hf_folder(folder: str | Path) -> GPT:
    """A GPT from a local folder with config.json and the weights (see load_weight_files)."""
    folder = Path(folder)
    if not (folder / "config.json").exists():
        raise FileNotFoundError(
            f"{folder} has no config.json; point at the folder GPT2LMHeadModel.save_pretrained "
            "wrote, or the snapshot folder of a Hugging Face download."
        )
    config = json.loads((folder / "config.json").read_text())
    return from_hf_state_dict(load_weight_files(folder), config)


def pretrained_gpt2(name: str = "gpt2", *, download: bool = False,
                    cache_dir: str | Path | None = None) -> GPT:
    """OpenAI's GPT-2 (name: gpt2, gpt2-medium, gpt2-large or gpt2-xl) as a GPT, in eval mode.

    Uses the files already in the Hugging Face cache; downloads them (about 0.5 GB for gpt2)
    only with download=True and a connection. Otherwise raises FileNotFoundError saying how
    to get them. Never needed by the tests.
    """
    if name not in OFFICIAL_REPOS:
        raise ValueError(f"unknown GPT-2 size {name!r}; choose one of {sorted(OFFICIAL_REPOS)}.")
    try:
        from huggingface_hub import hf_hub_download
    except ImportError as error:
        raise FileNotFoundError(
            "pretrained_gpt2 needs the huggingface_hub package (pip install huggingface_hub), "
            "or download config.json and model.safetensors yourself and use from_hf_folder(folder)."
        ) from error
    repo = OFFICIAL_REPOS[name]
    try:
        paths = [hf_hub_download(repo, filename, cache_dir=cache_dir, local_files_only=not download)
                 for filename in ("config.json", "model.safetensors")]
    except Exception as error:   # the hub raises several types for "not cached" and "offline"
        how = ("the download failed; check your connection" if download else
               "they are not in the local cache; call pretrained_gpt2(name, download=True) "
               "when online")
        raise FileNotFoundError(
            f"could not get {repo}'s config.json and model.safetensors: {how}. Or copy the "
            f"two files from https://huggingface.co/{repo} into a folder and call "
            f"from_hf_folder(folder). ({type(error).__name__}: {error})"
        ) from error
    return from_hf_folder(Path(paths[1]).parent)
