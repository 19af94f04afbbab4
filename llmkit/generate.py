"""Generation: turn a model's next-token logits into text, one token at a time (lesson 08).

The loop is always the same: run the model on the tokens so far, take the logits of the
last position, reshape them into a probability distribution, pick a token, append it,
repeat. The lesson builds the reshaping step by step, and so does this file:

1. the pure helpers, each (batch, vocab) logits -> (batch, vocab) logits:
   `apply_repetition_penalty`, `apply_temperature`, `top_k_filter`, `top_p_filter`,
   combined by `next_token_probs` in that order (the order of Hugging Face's generate);
2. the loop: `generate` (a batch, returns a tensor), `stream` (yields tokens as they come)
   and `generate_text` (str in, str out), with a KV cache so each step feeds one token;
   greedy decoding (temperature 0) skips the distribution and takes the argmax directly;
   `generate_batch` and `generate_texts` run prompts of different lengths as one batch
   (left padding, masked out of attention, positions counted from each row's first token).

The chat template of lessons 09-10 is `llmkit.chat_template`, a conversation that streams
its replies `llmkit.chat.ChatSession`, and the compiled fast path `llmkit.fast_decode`.

Temperature 0 means greedy decoding (always the most likely token).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from llmkit.evaluate import eval_mode

# --- 1. shaping the distribution ---------------------------------------------------------


def check_logits(logits: torch.Tensor) -> None:
    """Raise a ValueError unless logits is a floating (batch, vocab) tensor."""
    if not isinstance(logits, torch.Tensor):
        raise ValueError(f"expected a logits tensor, got {type(logits).__name__}.")
    if logits.dim() != 2 or not logits.is_floating_point():
        got = f"{tuple(logits.shape)} {logits.dtype}"
        raise ValueError(
            f"expected float logits shaped (batch, vocab), got {got}; for a model's output "
            "take the last position: logits[:, -1, :]."
        )


def apply_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """(B, V) -> (B, V) logits / temperature: below 1 sharpens the distribution, above 1
    flattens it. temperature must be > 0 (temperature 0, greedy, is next_token_probs' job).
    """
    check_logits(logits)
    if temperature <= 0:
        raise ValueError(
            f"temperature must be > 0 here, got {temperature}; use 0 in generate() for greedy."
        )
    return logits / temperature


def top_k_filter(logits: torch.Tensor, k: int | None) -> torch.Tensor:
    """(B, V) -> (B, V): every logit below the k-th largest of its row becomes -inf.

    Ties with the k-th largest are kept. k None, or k >= V, keeps everything.
    """
    check_logits(logits)
    if k is None or k >= logits.shape[-1]:
        return logits
    if k < 1:
        raise ValueError(f"top_k must be a positive integer or None, got {k}.")
    kth_largest = torch.topk(logits, k, dim=-1).values[:, -1:]
    return logits.masked_fill(logits < kth_largest, float("-inf"))


def top_p_filter(logits: torch.Tensor, p: float | None) -> torch.Tensor:
    """(B, V) -> (B, V): nucleus sampling (Holtzman et al. 2019).

    Keeps the smallest set of most likely tokens whose probabilities add up to at least p,
    and sets the others to -inf. The most likely token is always kept. p None or 1 keeps all.
    """
    check_logits(logits)
    if p is None or p >= 1.0:
        return logits
    if p <= 0.0:
        raise ValueError(f"top_p must be in (0, 1], got {p}.")
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    probs = sorted_logits.softmax(dim=-1)
    # A token is dropped when the tokens ranked above it already reach p.
    mass_before = probs.cumsum(dim=-1) - probs
    drop_sorted = mass_before >= p
    drop = drop_sorted.scatter(-1, order, drop_sorted)  # back to vocabulary order
    return logits.masked_fill(drop, float("-inf"))


def apply_repetition_penalty(logits: torch.Tensor, previous: torch.Tensor,
                             penalty: float) -> torch.Tensor:
    """(B, V) logits, previous: (B, T) token ids -> (B, V), the CTRL repetition penalty.

    For every token already in the row's `previous` tokens, a positive logit is divided by
    `penalty` and a negative one multiplied by it, so penalty > 1 makes repeats less likely
    (Keskar et al. 2019, as in Hugging Face). penalty 1 changes nothing.
    """
    check_logits(logits)
    if penalty <= 0:
        raise ValueError(f"repetition_penalty must be > 0 (1 = off), got {penalty}.")
    if previous.dim() != 2 or previous.shape[0] != logits.shape[0]:
        raise ValueError(
            f"previous must be (batch, T) token ids with batch {logits.shape[0]} like the "
            f"logits, got shape {tuple(previous.shape)}."
        )
    if penalty == 1.0 or previous.numel() == 0:
        return logits
    seen = torch.gather(logits, -1, previous)
    seen = torch.where(seen > 0, seen / penalty, seen * penalty)
    return logits.scatter(-1, previous, seen)


def next_token_probs(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
                     top_p: float | None = None, repetition_penalty: float = 1.0,
                     previous: torch.Tensor | None = None) -> torch.Tensor:
    """(B, V) logits -> (B, V) probabilities to sample the next token from.

    Applies, in order: the repetition penalty (over `previous`, (B, T) ids), temperature,
    top-k, top-p. temperature 0 puts all the probability on the most likely token.
    """
    check_logits(logits)
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0 (0 = greedy), got {temperature}.")
    logits = logits.float()
    if previous is not None:
        logits = apply_repetition_penalty(logits, previous, repetition_penalty)
    if temperature == 0:
        return torch.nn.functional.one_hot(logits.argmax(-1), logits.shape[-1]).float()
    logits = top_p_filter(top_k_filter(apply_temperature(logits, temperature), top_k), top_p)
    return logits.softmax(dim=-1)


# --- 2. the decoding loop --------------------------------------------------------------


PAST_CONTEXT = ("slide", "halve")


def padding_in_window(n_pad: torch.Tensor | None, window_start: int) -> torch.Tensor | None:
    """(B,) left padding of whole rows -> the padding left in the window from window_start on."""
    return None if n_pad is None else (n_pad - window_start).clamp(min=0)


def sample_tokens(model, idx: torch.Tensor, max_new_tokens: int, *, temperature: float = 1.0,
                  top_k: int | None = None, top_p: float | None = None,
                  repetition_penalty: float = 1.0, use_kv_cache: bool = True,
                  generator: torch.Generator | None = None, n_pad: torch.Tensor | None = None,
                  past_context: str = "slide", cache=None, step=None) -> Iterator[torch.Tensor]:
    """Yield max_new_tokens next tokens, each (B,) int64, for the (B, T) prompt idx.

    The model must be in eval mode and gradients off (generate and stream see to both,
    with inference_mode). The prompt is checked once; the steps after it skip the checks.
    n_pad: (B,) int64, how many padding tokens start each row (left padding), or None.

    The model reads at most context_length tokens: the window. Once the text outgrows it,
    `past_context` says which tokens a step sees:

    - "slide": always the last context_length tokens, the textbook loop. With learned
      positions a cache cannot slide (see llmkit.model.kv_cache), so past the window every
      step refills it with the whole window: context_length tokens of work per token.
    - "halve": when the window is full, keep its newest half and go on from there, so a
      step sees every token since the last cut (between half a window and a full one).
      The cache is refilled once per half window: amortised, a few tokens of work per token.

    use_kv_cache only changes the speed: with or without it, each step sees the same tokens.
    `cache` (e.g. a StaticKVCache) replaces the KVCache the loop would make, and `step`,
    new tokens (B, 1) -> logits (B, vocab), replaces the one-token forward through it (a
    compiled one, see llmkit.fast_decode).
    """
    if past_context not in PAST_CONTEXT:
        raise ValueError(f"past_context must be one of {PAST_CONTEXT}, got {past_context!r}.")
    limit = model.config.context_length
    # Validate the prompt once, here. Every later input is a token this loop chose from the
    # model's own vocabulary, so the per-step forward skips its checks (and, on a GPU, the
    # read-back that checking token ids costs).
    model.check_input(idx[:, -limit:])
    greedy = temperature == 0 and repetition_penalty == 1.0
    tokens = idx
    if use_kv_cache and cache is None:
        cache = model.new_kv_cache(idx.shape[0])
    if cache is not None and step is None:
        def step(new_input):
            return model.next_token_logits(new_input, kv_cache=cache, check=False)
    window_start = max(0, idx.shape[1] - limit)   # the first token the model sees
    refill = True                                 # (re)fill the cache with the whole window
    for _ in range(max_new_tokens):
        if cache is None:
            logits = model.next_token_logits(tokens[:, window_start:], check=False,
                                             n_pad=padding_in_window(n_pad, window_start))
        elif refill:
            cache.reset(padding_in_window(n_pad, window_start))
            logits = model.next_token_logits(tokens[:, window_start:], kv_cache=cache,
                                             check=False)
        else:
            logits = step(tokens[:, -1:])
        if greedy:
            # The most likely token needs no probabilities: next_token_probs would build a
            # one-hot distribution only for argmax to read the same token back out of it.
            next_token = logits.argmax(-1)
        else:
            probs = next_token_probs(logits, temperature, top_k, top_p, repetition_penalty,
                                     previous=tokens if repetition_penalty != 1.0 else None)
            if temperature == 0:
                next_token = probs.argmax(-1)
            elif generator is not None and generator.device != probs.device:
                # Draw where the generator lives (e.g. a CPU generator from seed_everything
                # while the model is on a GPU): the same seed then gives the same tokens on
                # every device.
                drawn = torch.multinomial(probs.cpu(), 1, generator=generator)
                next_token = drawn.squeeze(-1).to(probs.device)
            else:
                next_token = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
        tokens = torch.cat([tokens, next_token[:, None]], dim=1)
        refill = tokens.shape[1] - window_start > limit    # the new token does not fit
        if refill:
            keep = limit if past_context == "slide" else max(1, limit // 2)
            window_start = tokens.shape[1] - keep
        yield next_token


def check_prompt(model, idx: torch.Tensor, max_new_tokens: int) -> None:
    """Raise a ValueError unless idx is a non-empty (batch, T) integer tensor, max_new_tokens
    a non-negative int and model an llmkit GPT."""
    if not isinstance(idx, torch.Tensor):
        raise ValueError(f"idx must be a (batch, T) tensor of token ids, got {type(idx).__name__}.")
    if idx.dim() != 2 or idx.shape[1] == 0 or idx.is_floating_point():
        got = f"{tuple(idx.shape)} {idx.dtype}"
        raise ValueError(
            f"idx must be a (batch, T) integer tensor with T >= 1, got {got}; "
            "for one prompt use torch.tensor([token_ids])."
        )
    if not isinstance(max_new_tokens, int) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be a non-negative integer, got {max_new_tokens!r}.")
    if not all(hasattr(model, name) for name in ("next_token_logits", "check_input", "config")):
        raise ValueError(f"generate needs an llmkit GPT, got {type(model).__name__}.")


def check_padding(n_pad, idx: torch.Tensor) -> torch.Tensor:
    """n_pad as a (B,) int64 tensor on idx's device, or a ValueError unless each row of idx
    keeps at least one real token."""
    n_pad = torch.as_tensor(n_pad, dtype=torch.long, device=idx.device)
    if n_pad.shape != (idx.shape[0],) or bool((n_pad < 0).any() | (n_pad >= idx.shape[1]).any()):
        raise ValueError(
            f"n_pad must hold one count per row, each in 0..{idx.shape[1] - 1} (a row needs at "
            f"least one real token), got {n_pad.tolist()} for idx shaped {tuple(idx.shape)}."
        )
    return n_pad


def generate(model, idx: torch.Tensor, max_new_tokens: int, *, temperature: float = 1.0,
             top_k: int | None = None, top_p: float | None = None,
             repetition_penalty: float = 1.0, stop_tokens=None, use_kv_cache: bool = True,
             generator: torch.Generator | None = None, n_pad: torch.Tensor | None = None,
             past_context: str = "slide", cache=None, step=None) -> torch.Tensor:
    """Continue each row of idx: (B, T) int64 -> (B, T + n_new) int64, n_new <= max_new_tokens.

    temperature 0 is greedy. stop_tokens (ids): generation ends early once every row has
    produced one; rows that stopped sooner are padded with the stop token they produced.
    `generator` (a torch.Generator, e.g. from llmkit.device.seed_everything) makes sampling
    repeatable. n_pad: (B,) int64, the left padding of each row (generate_batch makes it);
    past_context, cache, step: see sample_tokens. idx is moved to the model's device. Runs
    in eval mode without gradients and restores the model's mode afterwards.
    """
    check_prompt(model, idx, max_new_tokens)
    idx = idx.to(device=next(model.parameters()).device, dtype=torch.long)
    if n_pad is not None:
        n_pad = check_padding(n_pad, idx)
    stop = None if not stop_tokens else torch.tensor(list(stop_tokens), device=idx.device)
    new_tokens = []
    # inference_mode, not just eval_mode's no_grad: it also skips autograd's bookkeeping on
    # every tensor, which is a real share of the time of a small model's decoding step.
    with eval_mode(model), torch.inference_mode():
        finished = torch.zeros(idx.shape[0], dtype=torch.bool, device=idx.device)
        tokens = sample_tokens(model, idx, max_new_tokens, temperature=temperature,
                               top_k=top_k, top_p=top_p, repetition_penalty=repetition_penalty,
                               use_kv_cache=use_kv_cache, generator=generator, n_pad=n_pad,
                               past_context=past_context, cache=cache, step=step)
        for token in tokens:
            if stop is not None:
                previous = new_tokens[-1] if new_tokens else token
                token = torch.where(finished, previous, token)
                finished |= torch.isin(token, stop)
            new_tokens.append(token)
            if stop is not None and bool(finished.all()):
                break
    # Joined outside inference mode, so the result is an ordinary tensor that later code
    # may train on (autograd refuses to save inference-mode tensors for backward).
    if not new_tokens:
        return idx.clone()
    return torch.cat([idx, torch.stack(new_tokens, dim=1)], dim=1)


@torch.inference_mode()  # on a generator function it holds only while it runs, not between yields
def stream(model, idx: torch.Tensor, max_new_tokens: int, *, stop_tokens=None,
           **options) -> Iterator[int]:
    """Yield the new token ids of one prompt, idx: (1, T), one at a time as they are chosen.

    Takes generate's options. A stop token is yielded, then the stream ends. The model is
    in eval mode while the stream runs and back in its own mode when it ends.
    """
    check_prompt(model, idx, max_new_tokens)
    if idx.shape[0] != 1:
        raise ValueError(
            f"stream takes one prompt, idx shaped (1, T); got a batch of {idx.shape[0]}. "
            "Use generate() for several."
        )
    stop = set(stop_tokens or ())
    # Not eval_mode: its no_grad would stay switched on in the caller's code between
    # yields, where the decorator's inference mode is lifted. So the mode by hand.
    was_training = model.training
    model.eval()
    try:
        idx = idx.to(device=next(model.parameters()).device, dtype=torch.long)
        for token in sample_tokens(model, idx, max_new_tokens, **options):
            token_id = int(token.item())
            yield token_id
            if token_id in stop:
                return
    finally:
        model.train(was_training)


def generate_text(model, tokenizer, prompt: str, max_new_tokens: int, **options) -> str:
    """The text the model writes after `prompt` (the prompt itself is not included).

    options are generate's (temperature, top_k, top_p, repetition_penalty, stop_tokens,
    use_kv_cache, generator). A stop token that ends the text is left out of it.
    """
    if not isinstance(prompt, str):
        raise ValueError(
            f"prompt must be a str, got {type(prompt).__name__}; for token ids use generate()."
        )
    prompt_ids = tokenizer.encode(prompt)
    if not prompt_ids:
        raise ValueError("the prompt encodes to no tokens; give at least one character of text.")
    device = next(model.parameters()).device
    idx = torch.tensor([prompt_ids], dtype=torch.long, device=device)
    new_ids = generate(model, idx, max_new_tokens, **options)[0, len(prompt_ids):].tolist()
    stop = set(options.get("stop_tokens") or ())
    for position, token_id in enumerate(new_ids):
        if token_id in stop:
            new_ids = new_ids[:position]
            break
    return tokenizer.decode(new_ids)


def left_pad(prompts, pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompts of different lengths -> idx (B, T_max) int64, left-padded with pad_id, and
    n_pad (B,) int64, each row's number of padding tokens.

    Left, not right: every row's last token is then in the last column, so one step of the
    decoding loop appends each row's next token in the same column.
    """
    if isinstance(prompts, torch.Tensor) or not prompts:
        raise ValueError(
            "prompts must be a non-empty list of token id lists (or 1-D tensors), one per "
            f"prompt, got {type(prompts).__name__ if not isinstance(prompts, list) else '[]'}."
        )
    rows = [p.tolist() if isinstance(p, torch.Tensor) else list(p) for p in prompts]
    for number, row in enumerate(rows):
        if not row:
            raise ValueError(f"prompt {number} has no tokens; every prompt needs at least one.")
    width = max(len(row) for row in rows)
    idx = torch.tensor([[pad_id] * (width - len(row)) + row for row in rows], dtype=torch.long)
    n_pad = torch.tensor([width - len(row) for row in rows], dtype=torch.long)
    return idx, n_pad


def generate_batch(model, prompts, max_new_tokens: int, *, pad_id: int = 0, stop_tokens=None,
                   **options) -> list[list[int]]:
    """Continue several prompts of different lengths at once; the new token ids of each.

    prompts: a list of token id lists (or 1-D tensors). They are left-padded into one
    batch (see left_pad) and decoded together: padding is masked out of attention and every
    row's first real token is at position 0, so each row gets the tokens it would get alone
    (greedy: the same, token for token; a test holds them together). A row ends at its
    first stop token (kept, as stream yields it) while the others go on. options: generate's.
    """
    idx, n_pad = left_pad(prompts, pad_id)
    out = generate(model, idx, max_new_tokens, n_pad=n_pad, stop_tokens=stop_tokens, **options)
    stop = set(stop_tokens or ())
    rows = []
    for row in out[:, idx.shape[1]:].tolist():
        end = next((i + 1 for i, token in enumerate(row) if token in stop), len(row))
        rows.append(row[:end])
    return rows


def generate_texts(model, tokenizer, prompts: list[str], max_new_tokens: int,
                   **options) -> list[str]:
    """generate_text for several prompts at once, batched by generate_batch.

    Returns the text written after each prompt, without its stop token. options: generate's,
    and pad_id (any id: padding is never attended to).
    """
    if isinstance(prompts, str) or not all(isinstance(p, str) for p in prompts):
        raise ValueError("prompts must be a list of str; for one prompt use generate_text().")
    stop = set(options.get("stop_tokens") or ())
    rows = generate_batch(model, [tokenizer.encode(p) for p in prompts], max_new_tokens, **options)
    return [tokenizer.decode(row[:-1] if row and row[-1] in stop else row) for row in rows]
