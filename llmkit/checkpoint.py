"""Save a model (and where its training stands) to a folder, and load it back.

A checkpoint is a folder of plain files:

    model.safetensors   the weights (a tied embedding/head matrix is stored once)
    config.json         {"format_version", "saved_by": "llmkit", "model_class", "model", "train"}
    state.pt            optimizer state, step, random generator states, history (optional)
    tokenizer.json      the tokenizer, when one is given (llmkit.tokenizers file format)

Any model kind can be saved (the GPT, a classifier, a LoRA model) if it follows a small
protocol: `model.checkpoint_config()` returns a JSON-able dict of its architecture, and the
classmethod `from_checkpoint_config(dict)` builds the same architecture with fresh weights.
config.json records the class as "module:QualName"; loading imports only classes whose
module is inside `llmkit` (older checkpoints, which say "GPT", load as llmkit's GPT).

safetensors holds only tensors and cannot run code when loaded; state.pt is read with
`torch.load(weights_only=True)`, which likewise accepts only tensors, numbers, strings,
lists and dicts. So opening a checkpoint from someone else cannot run their code. The
shapes in model.safetensors' header are compared with the config before the model is
built, so a damaged config cannot make loading allocate memory it has no use for.

Writing is atomic: the files go into a temporary sibling folder, are flushed to disk
(fsync), and only then does that folder take the checkpoint's name. A crash halfway leaves
the previous checkpoint whole; `load_checkpoint` also finds it if the crash came between
the two renames that swap the folders. A save only ever replaces a folder that llmkit wrote
(`check_output_folder`), never weights that are not finite, and a full disk leaves the
previous checkpoint as it was.
"""

from __future__ import annotations

import errno
import importlib
import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import NamedTuple

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_model, save_model

from llmkit.model import GPT

FORMAT_VERSION = 1
SAVED_BY = "llmkit"
MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
STATE_FILE = "state.pt"
TOKENIZER_FILE = "tokenizer.json"
CHECKPOINT_FILES = (MODEL_FILE, CONFIG_FILE, STATE_FILE, TOKENIZER_FILE)


class Checkpoint(NamedTuple):
    """What `load_checkpoint` returns; unpack it or use the fields by name.

    model: the model with the saved weights, in eval mode. config: its config (a GPTConfig
    for the GPT; the model's `config` attribute, else the saved dict, for other kinds).
    tokenizer: the saved tokenizer or None. train_config: the TrainConfig as a dict, or
    None. state: the training state (see `Trainer.state_dict`), or None.
    """

    model: torch.nn.Module
    config: object
    tokenizer: object | None
    train_config: dict | None
    state: dict | None


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (full disk, no permission); the previous one is kept."""


# --- the protocol: which class, with which architecture ------------------------------------


def model_class_name(model: torch.nn.Module) -> str:
    """"module:QualName" of the model's class, e.g. "llmkit.model.gpt:GPT"."""
    cls = type(model)
    return f"{cls.__module__}:{cls.__qualname__}"


def import_model_class(name: str):
    """The class config.json names; only classes inside llmkit are imported.

    "GPT" (checkpoints saved before the protocol) means llmkit's GPT.
    """
    if name == "GPT":
        return GPT
    module_name, _, qualname = str(name).partition(":")
    if module_name != "llmkit" and not module_name.startswith("llmkit.") or not qualname:
        raise ValueError(
            f"model_class {name!r} is not a class inside llmkit ('llmkit.module:ClassName'); "
            "a checkpoint may only name llmkit's own models, so loading it cannot import "
            "other code."
        )
    try:
        found = importlib.import_module(module_name)
        for part in qualname.split("."):
            found = getattr(found, part)
    except (ImportError, AttributeError) as error:
        raise ValueError(f"model_class {name!r} does not exist in this llmkit ({error}); "
                         "update llmkit or use the version that saved it.") from None
    if not (isinstance(found, type) and issubclass(found, torch.nn.Module)
            and callable(getattr(found, "from_checkpoint_config", None))):
        raise ValueError(f"model_class {name!r} is not a model that can be loaded from a "
                         "checkpoint (it needs from_checkpoint_config).")
    return found


def _check_protocol(model) -> None:
    if not isinstance(model, torch.nn.Module) or not callable(getattr(model, "checkpoint_config", None)) \
            or not callable(getattr(type(model), "from_checkpoint_config", None)):
        raise ValueError(
            f"save_checkpoint saves an llmkit model (one with checkpoint_config() and "
            f"from_checkpoint_config()), got {type(model).__name__}; for a compiled model pass "
            "the original module."
        )


# --- where a checkpoint may be written ------------------------------------------------------


def is_llmkit_checkpoint(path) -> bool:
    """Whether `path` is a folder that llmkit wrote: a config.json of ours, and no file of
    anyone else's (so replacing the folder loses nothing but the old checkpoint)."""
    path = Path(path)
    try:
        config = json.loads((path / CONFIG_FILE).read_text(encoding="utf-8"))
        names = {entry.name for entry in path.iterdir()}
    except (OSError, ValueError):
        return False
    ours = isinstance(config, dict) and (config.get("saved_by") == SAVED_BY or (
        "format_version" in config and "model_class" in config))   # saved before the marker
    return ours and names <= set(CHECKPOINT_FILES)


def check_output_folder(path) -> Path:
    """Make sure a checkpoint can be written to `path` before any training starts.

    Accepted: a folder that does not exist yet (below folders we can write in), an empty
    folder, or a checkpoint folder llmkit wrote. Anything else raises a ValueError that says
    what to do, and nothing is touched: a file, a folder holding other files, the current
    folder or one above it, a place below a file, a read-only place. Returns the path.
    """
    path = Path(path)
    cannot = f"cannot save a checkpoint to {str(path) or repr('')}"
    if path.name in ("", ".", ".."):
        raise ValueError(f"{cannot}: it names no folder of its own; give the checkpoint a new "
                         "folder, e.g. runs/first.")
    here = Path.cwd().resolve()
    if path.resolve() == here or path.resolve() in here.parents:
        raise ValueError(f"{cannot}: it is the folder you are in (or one above it), which the "
                         "checkpoint would replace; give a new folder, e.g. runs/first.")
    if path.exists() and not path.is_dir():
        raise ValueError(f"{cannot}: it is a file, not a checkpoint folder, and it is left "
                         f"alone. Give a new folder name, e.g. {path.with_name(path.name + '-run')}.")
    if path.is_dir():
        names = sorted(entry.name for entry in path.iterdir())
        if names and not is_llmkit_checkpoint(path):
            shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
            raise ValueError(
                f"{cannot}: it is a folder with other files in it ({shown}), not a checkpoint "
                "llmkit wrote, and saving would replace it; nothing was changed. Give a new "
                f"folder, e.g. {path / 'run1'}."
            )
    # The save writes a sibling folder and renames it, so the parent must take new entries.
    existing = path.parent
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"{cannot}: {existing} is a file, not a folder, so no folder can be "
                         "made below it; give another path.")
    try:   # the one reliable test: write something (os.access misjudges some file systems)
        os.rmdir(tempfile.mkdtemp(prefix=".llmkit-write-test-", dir=existing))
    except OSError as error:
        raise ValueError(f"{cannot}: {existing} cannot be written to ({error.strerror or error}); "
                         "choose a folder you can write in.") from None
    return path


# --- saving -----------------------------------------------------------------------------


def save_checkpoint(path, model: torch.nn.Module, *, tokenizer=None,
                    train_config: dict | None = None, state: dict | None = None) -> Path:
    """Write `model` (and optionally tokenizer, train config and training state) to the
    folder `path`, replacing any checkpoint there atomically. Returns the folder's path.

    Refuses (ValueError) a path that is not a new folder or an llmkit checkpoint, and
    weights that hold nan or inf. A failed write (e.g. a full disk) raises
    CheckpointWriteError, removes the half-written files and keeps the previous checkpoint.
    """
    _check_protocol(model)
    path = check_output_folder(path)
    broken = [name for name, tensor in model.state_dict().items()
              if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())]
    if broken:
        raise ValueError(
            f"the model's weights hold nan or inf ({', '.join(broken[:3])}"
            f"{', ...' if len(broken) > 3 else ''}), so they were not saved to {path}; a diverged "
            "run cannot be resumed. Restart from the last good checkpoint with a lower learning rate."
        )
    staging, previous = _siblings(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(staging, ignore_errors=True)   # left over from a crash: never a checkpoint
        staging.mkdir()
        save_model(model, str(staging / MODEL_FILE))
        config = {"format_version": FORMAT_VERSION, "saved_by": SAVED_BY,
                  "model_class": model_class_name(model), "model": model.checkpoint_config(),
                  "train": train_config}
        (staging / CONFIG_FILE).write_text(json.dumps(config, indent=1) + "\n", encoding="utf-8")
        if state is not None:
            torch.save(state, staging / STATE_FILE)
        if tokenizer is not None:
            tokenizer.save(staging / TOKENIZER_FILE)
        for file in staging.iterdir():
            _fsync(file)
        _fsync(staging)
    except OSError as error:
        shutil.rmtree(staging, ignore_errors=True)
        raise _write_failed(path, error) from error
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise

    # Swap: old -> previous, staging -> path, then drop previous. Between the two renames
    # only `previous` exists, and load_checkpoint knows to look there.
    if path.exists():
        shutil.rmtree(previous, ignore_errors=True)
        os.replace(path, previous)
    os.replace(staging, path)
    _fsync(path.parent)
    shutil.rmtree(previous, ignore_errors=True)
    return path


def _write_failed(path: Path, error: OSError) -> CheckpointWriteError:
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        what = "the disk is full (no space left on the device)"
        todo = "free some space (or give --out a folder on another disk) and save again"
    else:
        what = f"writing failed ({error.strerror or error})"
        todo = "check that the folder can be written and save again"
    kept = f"the previous checkpoint in {path} is unchanged" if path.exists() else "nothing was saved"
    failure = CheckpointWriteError(f"could not save the checkpoint to {path}: {what}; {kept} and "
                                   f"the partial files were removed. To keep this run, {todo}.")
    failure.errno = error.errno   # as OSError's own, without "[Errno 28]" in the message
    return failure


# --- loading ----------------------------------------------------------------------------


def load_checkpoint(path, device=None) -> Checkpoint:
    """Read a checkpoint folder written by `save_checkpoint`.

    Returns Checkpoint(model, config, tokenizer, train_config, state); the model is on
    `device` (default CPU) in eval mode. A missing folder or file raises FileNotFoundError,
    a damaged one ValueError, each naming the file and what to do.
    """
    path = _existing_folder(path)
    config = _read_config(path)
    model = _build_model(path, config)
    _load_weights(path, model)
    state = _read_state(path) if (path / STATE_FILE).exists() else None
    tokenizer = _read_tokenizer(path) if (path / TOKENIZER_FILE).exists() else None
    if device is not None:
        model.to(device)
    model.eval()
    return Checkpoint(model, getattr(model, "config", config["model"]), tokenizer,
                      config["train"], state)


def load_training_state(path, model: torch.nn.Module) -> dict:
    """Load a checkpoint's weights into `model` (in place) and return its training state.

    For `Trainer.resume`: the model must be of the checkpoint's class and shape.
    """
    _check_protocol(model)
    path = _existing_folder(path)
    config = _read_config(path)
    if config["class"] is not type(model) or model.checkpoint_config() != config["model"]:
        raise ValueError(
            f"the checkpoint in {path} holds a {config['class'].__name__} with {config['model']}, "
            f"but the model to resume is a {type(model).__name__} with "
            f"{model.checkpoint_config()}; build the model with the checkpoint's config "
            "(load_checkpoint(path).config)."
        )
    if not (path / STATE_FILE).exists():
        raise FileNotFoundError(
            f"{path / STATE_FILE} is missing, so training cannot resume from {path} (it holds "
            "weights only); start a new run from load_checkpoint(path).model instead."
        )
    _check_shapes(path, model)
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


def _damaged(file: Path, error: Exception, hint: str = "it may be truncated") -> ValueError:
    # Only the first sentence of the loader's own message: torch.load's goes on with advice
    # (load with weights_only=False) that is wrong, and unsafe, for a damaged file.
    reason = str(error).strip().split("\n")[0].split(". ")[0]
    return ValueError(
        f"{file} is damaged or not an llmkit checkpoint file ({type(error).__name__}: {reason}); "
        f"{hint}. Save the checkpoint again or use an older one."
    )


def _read_config(path: Path) -> dict:
    """{"class", "model" (the architecture dict), "train"} from config.json, checked."""
    file = _required(path, CONFIG_FILE)
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ValueError(f"expected a JSON object, found {type(data).__name__}")
        if data.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"format_version {data.get('format_version')!r}, "
                             f"this llmkit reads {FORMAT_VERSION}")
        cls = import_model_class(data.get("model_class", "GPT"))
        if not isinstance(data["model"], dict):
            raise ValueError(f"'model' must be a JSON object, found {type(data['model']).__name__}")
        train = data.get("train")
        if train is not None and not isinstance(train, dict):
            raise ValueError(f"'train' must be a JSON object or null, found {type(train).__name__}")
        return {"class": cls, "model": data["model"], "train": train}
    except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as error:
        raise _damaged(file, error, "its settings are not what llmkit wrote") from error


def _build_model(path: Path, config: dict) -> torch.nn.Module:
    """The saved architecture with fresh weights, once the weights file's shapes match it.

    The shapes are compared on a model built on the "meta" device (shapes only, no memory),
    so a config edited to a huge size is refused before anything is allocated.
    """
    file = path / CONFIG_FILE
    try:
        with torch.device("meta"):
            skeleton = config["class"].from_checkpoint_config(config["model"])
    except (ValueError, KeyError, TypeError) as error:
        raise _damaged(file, error, "its model settings are not what llmkit wrote") from error
    _check_shapes(path, skeleton)
    _check_memory(file, skeleton)
    return config["class"].from_checkpoint_config(config["model"])


def _check_memory(file: Path, skeleton: torch.nn.Module) -> None:
    """Refuse a model that needs more memory than the machine has (e.g. tables computed for
    a context_length of 10**8, which no weight in the file contradicts)."""
    tensors = list(skeleton.parameters()) + list(skeleton.buffers())
    needed = sum(t.numel() * t.element_size() for t in tensors)
    try:
        available = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):   # not a POSIX system: no limit known
        return
    if needed > available:
        raise ValueError(
            f"the model {file} describes needs {needed / 2**30:.1f} GiB, more than this machine's "
            f"{available / 2**30:.1f} GiB, so it was not built; the config was probably edited "
            "(e.g. its context_length). Restore the original config.json."
        )


def _check_shapes(path: Path, model: torch.nn.Module) -> None:
    """Compare model.safetensors' header with the model's tensors; read no weights."""
    file = _required(path, MODEL_FILE)
    try:
        with safe_open(str(file), framework="pt") as weights:
            stored = {name: tuple(weights.get_slice(name).get_shape()) for name in weights.keys()}
    except (SafetensorError, OSError, ValueError) as error:
        raise _damaged(file, error) from error
    expected = {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}
    differ = [f"{name} is {list(shape)} in {MODEL_FILE} but {list(expected[name])} by "
              f"{CONFIG_FILE}" for name, shape in stored.items()
              if name in expected and expected[name] != shape]
    unknown = sorted(set(stored) - set(expected))
    if differ or unknown:
        detail = "; ".join(differ[:3]) if differ else f"it holds tensors the model lacks: {unknown[:3]}"
        raise ValueError(
            f"the weights in {file} do not fit the model {CONFIG_FILE} describes: {detail}. "
            f"The two files come from different models (or {CONFIG_FILE} was edited, e.g. its "
            "vocab_size or context_length); restore the original config.json or save the "
            "checkpoint again."
        )


def _load_weights(path: Path, model: torch.nn.Module) -> None:
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
