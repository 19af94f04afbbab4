"""Save a model (and where its training stands) to a folder, and load it back.

A checkpoint is a folder of plain files:

    model.safetensors   the weights (a tied embedding/head matrix is stored once)
    config.json         {"format_version", "model_class", "model": GPTConfig, "train": TrainConfig}
    state.pt            optimizer state, step, random generator states, history (optional)
    tokenizer.json      the tokenizer, when one is given (llmkit.tokenizers file format)

safetensors holds only tensors and cannot run code when loaded; state.pt is read with
`torch.load(weights_only=True)`, which likewise accepts only tensors, numbers, strings,
lists and dicts. So opening a checkpoint from someone else cannot run their code.

Writing is atomic: the files go into a temporary sibling folder, are flushed to disk
(fsync), and only then does that folder take the checkpoint's name. A crash halfway leaves
the previous checkpoint whole; `load_checkpoint` also finds it if the crash came between
the two renames that swap the folders.
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from pathlib import Path
from typing import NamedTuple

import torch
from safetensors import SafetensorError
from safetensors.torch import load_model, save_model

from llmkit.model import GPT, GPTConfig

FORMAT_VERSION = 1
MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
STATE_FILE = "state.pt"
TOKENIZER_FILE = "tokenizer.json"


class Checkpoint(NamedTuple):
    """What `load_checkpoint` returns; unpack it or use the fields by name.

    model: the GPT with the saved weights, in eval mode. config: its GPTConfig.
    tokenizer: the saved tokenizer or None. train_config: the TrainConfig as a dict, or
    None. state: the training state (see `Trainer.state_dict`), or None.
    """

    model: GPT
    config: GPTConfig
    tokenizer: object | None
    train_config: dict | None
    state: dict | None


def save_checkpoint(path, model: GPT, *, tokenizer=None, train_config: dict | None = None,
                    state: dict | None = None) -> Path:
    """Write `model` (and optionally tokenizer, train config and training state) to the
    folder `path`, replacing any checkpoint there atomically. Returns the folder's path."""
    if not isinstance(model, GPT):
        raise ValueError(
            f"save_checkpoint saves an llmkit.model.GPT, got {type(model).__name__}; "
            "for a compiled model pass the original module."
        )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging, previous = _siblings(path)
    shutil.rmtree(staging, ignore_errors=True)   # left over from a crash: never a checkpoint
    staging.mkdir()

    save_model(model, str(staging / MODEL_FILE))
    config = {"format_version": FORMAT_VERSION, "model_class": "GPT",
              "model": model.config.to_dict(), "train": train_config}
    (staging / CONFIG_FILE).write_text(json.dumps(config, indent=1) + "\n", encoding="utf-8")
    if state is not None:
        torch.save(state, staging / STATE_FILE)
    if tokenizer is not None:
        tokenizer.save(staging / TOKENIZER_FILE)
    for file in staging.iterdir():
        _fsync(file)
    _fsync(staging)

    # Swap: old -> previous, staging -> path, then drop previous. Between the two renames
    # only `previous` exists, and load_checkpoint knows to look there.
    if path.exists():
        shutil.rmtree(previous, ignore_errors=True)
        os.replace(path, previous)
    os.replace(staging, path)
    _fsync(path.parent)
    shutil.rmtree(previous, ignore_errors=True)
    return path


def load_checkpoint(path, device=None) -> Checkpoint:
    """Read a checkpoint folder written by `save_checkpoint`.

    Returns Checkpoint(model, config, tokenizer, train_config, state); the model is on
    `device` (default CPU) in eval mode. A missing folder or file raises FileNotFoundError,
    a damaged one ValueError, each naming the file and what to do.
    """
    path = _existing_folder(path)
    config = _read_config(path)
    model = GPT(config["model"])
    _load_weights(path, model)
    state = _read_state(path) if (path / STATE_FILE).exists() else None
    tokenizer = _read_tokenizer(path) if (path / TOKENIZER_FILE).exists() else None
    if device is not None:
        model.to(device)
    model.eval()
    return Checkpoint(model, config["model"], tokenizer, config["train"], state)


def load_training_state(path, model: GPT) -> dict:
    """Load a checkpoint's weights into `model` (in place) and return its training state.

    For `Trainer.resume`: the model must have the checkpoint's shape.
    """
    path = _existing_folder(path)
    config = _read_config(path)
    if getattr(model, "config", None) != config["model"]:
        raise ValueError(
            f"the checkpoint in {path} holds a model with {config['model']}, but the model to "
            f"resume is {getattr(model, 'config', type(model).__name__)}; build the model with "
            "the checkpoint's config (load_checkpoint(path).config)."
        )
    if not (path / STATE_FILE).exists():
        raise FileNotFoundError(
            f"{path / STATE_FILE} is missing, so training cannot resume from {path} (it holds "
            "weights only); start a new run from load_checkpoint(path).model instead."
        )
    _load_weights(path, model)
    return _read_state(path)


# --- reading the pieces, with errors that say what to do ---------------------------------


def _siblings(path: Path) -> tuple[Path, Path]:
    return path.with_name(f".{path.name}.staging"), path.with_name(f".{path.name}.previous")


def _existing_folder(path) -> Path:
    path = Path(path)
    if path.is_dir():
        return path
    _, previous = _siblings(path)
    if previous.is_dir() and not path.exists():
        warnings.warn(f"{path} was being replaced when a save stopped; loading the previous "
                      f"checkpoint from {previous}.")
        return previous
    if path.exists():
        raise FileNotFoundError(f"{path} is a file, not a checkpoint folder; pass the folder "
                                "that holds model.safetensors and config.json.")
    raise FileNotFoundError(
        f"no checkpoint folder at {path}; check the path, or train one first "
        "(python -m llmkit train --out DIR)."
    )


def _required(path: Path, name: str) -> Path:
    file = path / name
    if not file.is_file():
        raise FileNotFoundError(
            f"{file} is missing, so {path} is not a complete checkpoint; save it again "
            "(Trainer.save_checkpoint or llmkit.checkpoint.save_checkpoint)."
        )
    return file


def _damaged(file: Path, error: Exception) -> ValueError:
    # Only the first sentence of the loader's own message: torch.load's goes on with advice
    # (load with weights_only=False) that is wrong, and unsafe, for a damaged file.
    reason = str(error).strip().split("\n")[0].split(". ")[0]
    return ValueError(
        f"{file} is damaged or not an llmkit checkpoint file ({type(error).__name__}: {reason}); "
        "it may be truncated. Save the checkpoint again or use an older one."
    )


def _read_config(path: Path) -> dict:
    file = _required(path, CONFIG_FILE)
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
        if data.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"format_version {data.get('format_version')!r}, "
                             f"this llmkit reads {FORMAT_VERSION}")
        return {"model": GPTConfig.from_dict(data["model"]), "train": data.get("train")}
    except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as error:
        raise _damaged(file, error) from error


def _load_weights(path: Path, model: GPT) -> None:
    file = _required(path, MODEL_FILE)
    try:
        load_model(model, str(file), strict=True, device="cpu")
    except (SafetensorError, RuntimeError, OSError, ValueError) as error:
        raise _damaged(file, error) from error


def _read_state(path: Path) -> dict:
    file = _required(path, STATE_FILE)
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as error:  # torch.load raises many kinds for a bad zip or pickle
        raise _damaged(file, error) from error
    if not isinstance(state, dict):
        raise _damaged(file, TypeError(f"expected a dict, found {type(state).__name__}"))
    return state


def _read_tokenizer(path: Path):
    from llmkit.tokenizers import load

    return load(path / TOKENIZER_FILE)


def _fsync(path: Path) -> None:
    """Flush a file's (or a folder's list of names') data to the disk."""
    flags = os.O_RDONLY | (os.O_DIRECTORY if path.is_dir() and hasattr(os, "O_DIRECTORY") else 0)
    try:
        descriptor = os.open(path, flags)
    except OSError:   # some platforms (Windows) cannot open folders; the rename still holds
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)
