"""Carry test inputs and learners' answers between processes as plain JSON.

The batch grader runs a learner's functions in a separate process and compares what they
return in the grader's own process. The answers therefore cross a process boundary, and
they come from code we do not trust, so they must never be unpickled (unpickling runs
code). This module turns the few kinds of value the exercises use (numbers, strings,
bytes, lists, tuples, dicts, tensors, NumPy arrays, seeded random generators) into JSON
and back; anything else arrives as a short description of its type, so a check can say
"expected a tensor, got a <set>".

    encode(value) -> JSON-ready object        decode(obj) -> value
"""

from __future__ import annotations

import base64

import numpy as np
import torch

_DTYPES = {str(dtype): dtype for dtype in (
    torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.uint8, torch.int8,
    torch.int16, torch.int32, torch.int64, torch.bool,
)}


class Unknown:
    """A value of a type the codec does not carry; keeps its type name and a short repr."""

    def __init__(self, type_name: str, text: str):
        self.type_name = type_name
        self.text = text

    def __repr__(self) -> str:
        return f"<{self.type_name}: {self.text}>"


def encode(value):
    """Return a JSON-ready form of `value` (see the module docstring for what is carried)."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, np.generic):
        return encode(value.item())
    if isinstance(value, bytes):
        return {"$bytes": base64.b64encode(value).decode("ascii")}
    if isinstance(value, tuple):
        return {"$tuple": [encode(item) for item in value]}
    if isinstance(value, list):
        return [encode(item) for item in value]
    if isinstance(value, dict):
        return {"$dict": [[encode(key), encode(item)] for key, item in value.items()]}
    if isinstance(value, torch.Tensor):
        tensor = value.detach().cpu()
        data = tensor.float() if tensor.dtype == torch.bfloat16 else tensor
        return {"$tensor": {"dtype": str(tensor.dtype), "shape": list(tensor.shape),
                            "data": data.reshape(-1).tolist()}}
    if isinstance(value, np.ndarray):
        return {"$ndarray": encode(torch.from_numpy(np.ascontiguousarray(value)))}
    if isinstance(value, torch.Generator):
        return {"$generator": value.initial_seed()}
    return {"$unknown": [type(value).__name__, repr(value)[:200]]}


def decode(obj):
    """Rebuild a value from `encode`'s output; builds only plain data, never runs code."""
    if isinstance(obj, list):
        return [decode(item) for item in obj]
    if not isinstance(obj, dict):
        return obj
    if len(obj) != 1:
        raise ValueError(f"not an encoded value: a dict with keys {sorted(obj)[:5]}")
    (tag, body), = obj.items()
    if tag == "$bytes":
        return base64.b64decode(body)
    if tag == "$tuple":
        return tuple(decode(item) for item in body)
    if tag == "$dict":
        return {_hashable(decode(key)): decode(item) for key, item in body}
    if tag == "$tensor":
        dtype = _DTYPES.get(body["dtype"])
        if dtype is None:
            return Unknown("Tensor", f"dtype {body['dtype']}")
        return torch.tensor(body["data"], dtype=dtype).reshape(body["shape"])
    if tag == "$ndarray":
        return decode(body).numpy()
    if tag == "$generator":
        return torch.Generator().manual_seed(int(body))
    if tag == "$unknown":
        return Unknown(str(body[0]), str(body[1]))
    raise ValueError(f"not an encoded value: unknown tag {tag!r}")


def _hashable(key):
    # A list key cannot index a dict; a tuple can (e.g. a BPE pair that arrived as a list).
    return tuple(key) if isinstance(key, list) else key


def fresh_copy(value):
    """An independent copy of `value` (same route as between processes), e.g. per call."""
    return decode(encode(value))
