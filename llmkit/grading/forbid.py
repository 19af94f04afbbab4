"""Catch a learner's function doing the work a task rules out, however it got there.

A task rules out two kinds of finished work (see `Exercise.forbidden` and
`Exercise.forbidden_ops`):

- **finished pieces**: dotted names of Python functions, classes or whole modules
  ("llmkit.bigram.count_bigrams", "torch.optim.adam"), and C functions
  ("torch.tril", "torch._C._nn.scaled_dot_product_attention"). A Python piece is
  recognised by its code object (equal code: the same bytecode, names and constants), so
  an alias, `importlib.reload`, a function dug out with `gc.get_objects()`, or `exec` of
  the module's source all count; a C function by identity, whatever name reached it.
- **operators**: ATen kernels by name ("_softmax", "logsumexp"), seen by a
  `TorchDispatchMode` below every Python route (`x.softmax()`, `F.softmin(-x)`,
  `torch._C._nn...`): the operator is what ran, whatever called it.

    with Watch(rules) as watch:      # before any learner code runs
        ...run the learner's cells...
        with watch.recording():      # while the learner's function runs on a case
            answer = fn(*args)
    watch.seen                       # ["runs aten._softmax (the softmax kernel)", ...]

Python calls are seen with `sys.setprofile` (and `threading.setprofile` for new threads).
Turning these hooks off from inside (`sys.setprofile`, `sys.settrace`, popping the
dispatch mode) is itself recorded. What it cannot see: code that never reaches the
interpreter or the dispatcher as a call (e.g. ctypes into the interpreter), or a learner
who retypes a reference's source with small changes. The batch grader runs all of this
inside the sandbox, so what such code can reach is only its own grade.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import sys
import threading
import types
from dataclasses import dataclass

import torch
from torch.utils._python_dispatch import TorchDispatchMode


@dataclass(frozen=True)
class Rules:
    """What one task rules out: `pieces` (dotted names) and `ops` (ATen operator names,
    e.g. "_softmax"; "aten." is optional). Names that do not resolve are skipped."""

    pieces: tuple[str, ...] = ()
    ops: tuple[str, ...] = ()


# ---------------------------------------------------------------------------------------
# Resolving names to code objects and C functions.

def resolve(name: str):
    """The object a dotted name points to ("torch.nn.functional.softmax"), or None."""
    parts = name.split(".")
    for split in range(len(parts), 0, -1):
        try:
            target = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        try:
            for attribute in parts[split:]:
                target = getattr(target, attribute)
        except AttributeError:
            return None
        return target
    return None


def _codes_of_function(function, codes: dict) -> None:
    code = getattr(function, "__code__", None)
    if isinstance(code, types.CodeType):
        _TOP_LEVEL.add(code)
    stack = [code] if isinstance(code, types.CodeType) else []
    while stack:
        code = stack.pop()
        codes.setdefault(code, function)
        stack += [c for c in code.co_consts if isinstance(c, types.CodeType)]


def _collect(target, label: str, codes: dict, builtins: dict, seen: set) -> None:
    if id(target) in seen:
        return
    seen.add(id(target))
    if isinstance(target, (staticmethod, classmethod)):
        target = target.__func__
    if isinstance(target, property):
        for part in (target.fget, target.fset, target.fdel):
            if part is not None:
                _collect(part, label, codes, builtins, seen)
        return
    if inspect.isfunction(target) or inspect.ismethod(target):
        function = getattr(target, "__func__", target)
        _codes_of_function(function, codes)
        for code in list(codes):
            if codes[code] is function:
                codes[code] = label
        wrapped = getattr(function, "__wrapped__", None)
        if wrapped is not None:
            _collect(wrapped, label, codes, builtins, seen)
        return
    if inspect.isbuiltin(target) or isinstance(target, types.BuiltinFunctionType):
        builtins[id(target)] = (target, label)
        return
    if inspect.isclass(target):
        for attribute, member in vars(target).items():
            # Only the class's own code: an Enum's dict also holds enum.Enum's
            # _generate_next_value_ and object.__new__, which every enum in the program runs.
            function = getattr(member, "__func__", member)
            if (inspect.isfunction(function) or inspect.isbuiltin(function)) \
                    and not _defined_in(function, target.__module__):
                continue
            _collect(member, f"{label}.{attribute}", codes, builtins, seen)
        return
    if inspect.ismodule(target):
        # A module's own functions and classes; a package's also come from its submodules
        # (sacrebleu's metrics, peft's LoRA live there), loaded ones included.
        package = hasattr(target, "__path__")
        for attribute, member in vars(target).items():
            if inspect.ismodule(member):
                if package and member.__name__.startswith(target.__name__ + "."):
                    _collect(member, f"{label}.{attribute}", codes, builtins, seen)
            elif (inspect.isfunction(member) or inspect.isclass(member)) \
                    and _defined_in(member, target.__name__, package):
                _collect(member, f"{label}.{attribute}", codes, builtins, seen)
        return
    if callable(target):  # e.g. a functools.partial or an object with __call__
        call = getattr(type(target), "__call__", None)
        if inspect.isfunction(call):
            _collect(call, label, codes, builtins, seen)


def _defined_in(member, module: str, package: bool = False) -> bool:
    """Whether `member` was defined in `module` (or, for a package, in one of its modules)."""
    home = getattr(member, "__module__", None) or ""
    return home == module or (package and home.startswith(module + "."))


_TOP_LEVEL: set = set()  # code objects that are a function's own (not a nested listcomp)


def _code_key(code: types.CodeType):
    """The parts of a code object that decide what it does, not what it is called or
    where it sits (so `code.replace(co_name=...)` is still recognised); only for a whole
    function long enough not to match a learner's own lines by chance."""
    if len(code.co_code) < 64 or code.co_name.startswith("<"):
        return None
    consts = tuple(c if not isinstance(c, types.CodeType) else _code_key(c)
                   for c in code.co_consts)
    return (code.co_code, code.co_names, code.co_varnames, repr(consts))


# ---------------------------------------------------------------------------------------
# Watching.

TAMPERING = ("sys.setprofile", "sys.settrace", "threading.setprofile", "threading.settrace",
             "torch._C._pop_torch_dispatch_stack", "torch._C._set_dispatch_mode",
             "torch._C._unset_dispatch_mode", "sys.monitoring")


class _OperatorWatch(TorchDispatchMode):
    """Records every ATen operator in `ops` that runs while it is on the dispatch stack."""

    def __init__(self, ops, record):
        super().__init__()
        self.ops = ops
        self.record = record

    def __torch_dispatch__(self, func, types_, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name in self.ops:
            self.record(f"runs the operator aten.{name}")
        return func(*args, **(kwargs or {}))


class Watch:
    """Install the hooks for `rules`; `seen` lists what was caught (see the module doc)."""

    def __init__(self, rules: Rules):
        self.seen: list[str] = []
        self.ops = {op.removeprefix("aten.") for op in rules.ops}
        self.codes: dict = {}
        self.builtins: dict = {}
        seen: set = set()
        for name in rules.pieces:
            target = resolve(name)
            if target is not None:
                _collect(target, name, self.codes, self.builtins, seen)
        self.keys = {key: label for code, label in self.codes.items()
                     if code in _TOP_LEVEL and (key := _code_key(code)) is not None}
        self.tampering: dict = {}
        for name in TAMPERING:
            target = resolve(name)
            if target is None:
                continue
            if inspect.ismodule(target):
                for member in vars(target).values():
                    if inspect.isbuiltin(member):
                        self.tampering[id(member)] = (member, name)
            else:
                self.tampering[id(target)] = (target, name)
        self._verdicts: dict[int, tuple] = {}  # id(code) -> (code, label or None)
        self._recording = False
        self._armed = False
        self._hook_fn = self._hook  # one bound method, so `is` can find it again

    # The profile hook: a 'call' for every Python function, a 'c_call' for every C one.
    def _hook(self, frame, event, arg):
        if not self._armed:
            return
        if event == "call":
            if not self._recording:
                return
            code = frame.f_code
            cached = self._verdicts.get(id(code))
            if cached is None:
                label = self.codes.get(code)
                if label is None:
                    key = _code_key(code)
                    label = self.keys.get(key) if key is not None else None
                cached = self._verdicts[id(code)] = (code, label)
            if cached[1] is not None:
                self._note(f"runs {cached[1]} (recognised by its code, however it was "
                           "reached)")
        elif event == "c_call":
            found = self.tampering.get(id(arg))
            if found is not None and found[0] is arg:
                self._note(f"turns off the grader's watch ({found[1]})")
                return
            if self._recording:
                found = self.builtins.get(id(arg))
                if found is not None and found[0] is arg:
                    self._note(f"calls {found[1]}")

    def _note(self, what: str) -> None:
        if what not in self.seen:
            self.seen.append(what)

    def __enter__(self):
        self._armed = True
        sys.setprofile(self._hook_fn)
        threading.setprofile(self._hook_fn)
        return self

    def __exit__(self, *exc):
        self._armed = False
        sys.setprofile(None)
        threading.setprofile(None)

    def intact(self) -> bool:
        """False when the profile hook was replaced (the watch was turned off)."""
        return sys.getprofile() is self._hook_fn

    @contextlib.contextmanager
    def recording(self):
        """Record pieces and operators while the block runs (the learner's function)."""
        self._armed = False  # our own push of the mode is not tampering
        mode = _OperatorWatch(self.ops, self._note) if self.ops else None
        if mode is not None:  # only when ops are ruled out: it slows every operator
            mode.__enter__()
        self._recording = self._armed = True
        interrupted = False
        try:
            yield self
        except BaseException as error:
            # A time limit that fires inside the hook makes Python drop the hook: that is
            # not the learner turning it off.
            interrupted = not isinstance(error, Exception)
            raise
        finally:
            self._recording = self._armed = False
            if mode is not None:
                still_on = torch._C._len_torch_dispatch_stack() > 0
                try:
                    mode.__exit__(None, None, None)
                except Exception:  # popped by the learner's code: not ours to restore
                    still_on = False
                if not still_on:
                    self._note("turns off the grader's watch (the dispatch mode was removed)")
            if not self.intact():
                if not interrupted:
                    self._note("turns off the grader's watch (the profile hook was replaced)")
                sys.setprofile(self._hook_fn)
            self._armed = True
