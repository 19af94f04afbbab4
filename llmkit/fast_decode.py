"""Fast decoding: the one-token step compiled once, beside generate's readable loop.

A small model's decoding step is mostly overhead: Python dispatching a few dozen tiny
operations, and a cache whose keys grow by one every step, so no two steps have the same
shapes. `CompiledDecoder` removes both:

- a `StaticKVCache` (llmkit.model.kv_cache): attention reads all max_len slots and a mask
  hides the empty ones, so every one-token step has the same shapes;
- `torch.compile` turns that step into one fused program, compiled on the first call and
  reused for every token after it. On a GPU it is also recorded as a CUDA graph (what
  mode="reduce-overhead" does), so a whole step is one launch; on a CPU the program's
  wrapper is C++ instead of Python (inductor's cpp_wrapper). Either way the compiled step
  skips re-checking the model's modules before every call (they cannot change while the
  decoder lives), which on a small model costs as much as the arithmetic.

Everything else is generate's own loop (`llmkit.generate.sample_tokens`): the prompt and
every refill of the window run eagerly into the same cache, and the same options and
stop tokens apply. The eager path stays the readable default; a test holds the two to the
same tokens.

    decoder = CompiledDecoder(model, batch_size=1)
    out = decoder.generate(idx, 256, temperature=0)     # the first call compiles
    decoder.compile_seconds                             # what that cost
"""

from __future__ import annotations

import time

import torch

from llmkit.generate import generate


class CompiledDecoder:
    """Decode with model's one-token step compiled, for batches of batch_size rows.

    mode: a torch.compile mode instead of the options above (e.g. "default"). compile=False
    runs the same static-shape step eagerly (the reference the compiled one is tested
    against). The model may be trained further between calls (its weights are read, not
    copied, at every step), but make a new decoder after changing its modules, device or
    dtype. Each decoder compiles its own step (a few seconds on a laptop CPU, longer the
    first time on a machine: inductor caches what it built on disk).
    """

    def __init__(self, model, batch_size: int = 1, *, mode: str | None = None,
                 compile: bool = True):
        if not all(hasattr(model, name) for name in ("next_token_logits", "new_kv_cache")):
            raise ValueError(f"CompiledDecoder needs an llmkit GPT, got {type(model).__name__}.")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")
        self.model, self.batch_size = model, batch_size
        self.cache = model.new_kv_cache(batch_size, static=True)
        device = self.cache.slot.device
        if device.type == "cuda":
            # CUDA graphs replay fixed memory addresses: tell the compiler the cache's tensors
            # stay where they are (they are written in place, never reallocated).
            for tensor in self.cache.tensors():
                torch._dynamo.mark_static_address(tensor)
        self.compile_seconds: float | None = None
        self.step = self.one_token_step
        if compile and mode is not None:
            self.step = torch.compile(self.one_token_step, mode=mode, fullgraph=True)
        elif compile:
            options = {"guard_filter_fn": torch.compiler.skip_guard_on_all_nn_modules_unsafe}
            if device.type == "cuda":
                options["triton.cudagraphs"] = True
            elif device.type == "cpu":
                options["cpp_wrapper"] = True
            self.step = torch.compile(self.one_token_step, options=options, fullgraph=True)

    def one_token_step(self, new_token: torch.Tensor) -> torch.Tensor:
        """new_token: (batch_size, 1) int64 -> next-token logits (batch_size, vocab).

        Static shapes: the token, the cache's tensors and its slot counter (a tensor) are
        the only inputs, so the compiled program is reused for every step.
        """
        return self.model.next_token_logits(new_token, kv_cache=self.cache, check=False)

    def generate(self, idx: torch.Tensor, max_new_tokens: int, **options) -> torch.Tensor:
        """llmkit.generate.generate through the compiled step: (B, T) -> (B, T + n_new).

        idx must have batch_size rows. options: generate's (use_kv_cache is always on).
        The first call that takes a step compiles it; compile_seconds records how long that
        first step took, compilation included.
        """
        if isinstance(idx, torch.Tensor) and idx.dim() == 2 and idx.shape[0] != self.batch_size:
            raise ValueError(
                f"this decoder was built for batches of {self.batch_size}, got idx with "
                f"{idx.shape[0]} rows; make CompiledDecoder(model, batch_size={idx.shape[0]})."
            )
        if options.pop("use_kv_cache", True) is False:
            raise ValueError("CompiledDecoder always decodes with its cache; use "
                             "llmkit.generate.generate(use_kv_cache=False) for the uncached loop.")
        step = self.step
        if self.compile_seconds is None and step is not self.one_token_step:
            step = self.timed_first_step
        return generate(self.model, idx, max_new_tokens, cache=self.cache, step=step, **options)

    def timed_first_step(self, new_token: torch.Tensor) -> torch.Tensor:
        """The compiled step, timing the first call (the one that compiles)."""
        if self.compile_seconds is not None:
            return self.step(new_token)
        started = time.perf_counter()
        logits = self.step(new_token)
        if logits.device.type == "cuda":
            torch.cuda.synchronize(logits.device)
        self.compile_seconds = time.perf_counter() - started
        return logits
