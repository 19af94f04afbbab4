"""The checks of exercise notebook 11 (scaling up): instant and hidden cases.

Every expected value is computed before the learner's function runs, by a plainer
computation than the task asks for:

- the accumulation plan: every (micro-batch, steps) pair tried, the valid one with the fewest
  steps kept;
- the memory per GPU: the tensors themselves: a small llmkit GPT's parameters (a bfloat16
  copy under bf16), its gradients, the states torch.optim.AdamW creates in a real step (and
  the float32 master copy under bf16), each kind concatenated into one flat buffer, padded
  and cut into world_size shards with torch.chunk; the bytes of GPU 0's shards;
- the size for a target loss: the exact power law the points were drawn from (the points lie
  on it, so the best fit is that law), inverted;
- the compute-optimal size: the loss along the budget line 6 N D = C, minimised over log N by
  a grid and a golden-section search (no closed form).

While the learner's function runs, llmkit.scaling, llmkit.distributed and llmkit.bench are off
limits (they hold the lesson's finished fit, memory formula, batch split and FLOP counts).

A task earns its points only when every hidden case passes, and every hidden case is one a
usual shortcut fails: batches that the processes cannot share, micro-batch limits that do not
divide a process's rows; parameter counts that do not divide by the number of GPUs, every
ZeRO stage in both precisions; targets close to the loss floor (where a coarse fit is far
off) and below it (no size reaches them); budgets and laws with alpha != beta.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from llmkit.grading.exercise import Assignment, Case, Exercise, compare_numbers, describe_type
from llmkit.grading.exercise import random_int as _int
from llmkit.model import GPT, GPTConfig

SETUP = "import math\nimport numpy as np\nimport torch\nfrom llmkit.grading import check\n"

FINISHED = ("llmkit.scaling", "llmkit.distributed", "llmkit.bench")


def _uniform(generator, low, high) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator, dtype=torch.float64))


def _log_uniform(generator, low, high) -> float:
    return math.exp(_uniform(generator, math.log(low), math.log(high)))


def _as_int(value):
    """An int, or None when value is not a whole number (floats like 12.0 are accepted)."""
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


# --- 1. gradient accumulation for a world size ----------------------------------------------

def _plan_case(global_batch, world_size, max_micro, note=""):
    best = None
    for micro in range(1, max_micro + 1):
        for steps in range(1, global_batch + 1):
            if micro * steps * world_size == global_batch and (best is None or steps < best[1]):
                best = (micro, steps)
    return Case((global_batch, world_size, max_micro), best, note)


def _plan_cases(generator, hidden):
    if not hidden:
        return [_plan_case(96, 4, 10, "24 rows per process, at most 10 at once"),
                _plan_case(56, 4, 5, "14 rows per process, at most 5 at once"),
                _plan_case(64, 2, 64, "everything fits at once"),
                _plan_case(100, 3, 16, "a batch of 100 that 3 processes cannot share")]
    cases = []
    # Rows a process cannot split into micro-batches of the largest size that fits, nor into
    # ceil(rows / max) equal ones: the micro-batch is a divisor of the rows below the limit.
    for rows, max_micro in [(14, 5), (18, 4), (45, 7), (22, 6)]:
        world = _int(generator, 2, 9)
        cases.append(_plan_case(rows * world, world, max_micro,
                                f"{rows} rows per process, at most {max_micro} at once"))
    world = _int(generator, 3, 8)
    cases.append(_plan_case(world * _int(generator, 10, 30) + _int(generator, 1, world), world,
                            _int(generator, 2, 9), "a batch the processes cannot share"))
    cases.append(_plan_case(6, 8, 4, "fewer rows than processes"))
    rows = _int(generator, 3, 40) * 2 + 1
    cases.append(_plan_case(rows, 1, rows - 1, "one process, an odd batch"))
    world = _int(generator, 2, 6)
    cases.append(_plan_case(world * 12, world, 12 + _int(generator, 0, 5),
                            "a process's rows fit at once"))
    return cases


def _compare_plan(answer, case):
    global_batch, world_size, max_micro = case.args
    expected = case.expected
    if expected is None:
        if answer is None:
            return None
        return (f"a batch of {global_batch} does not divide among {world_size} processes, so "
                f"there is no plan: return None (got {answer!r}).")
    if answer is None:
        return (f"{global_batch} rows divide among {world_size} processes "
                f"({global_batch // world_size} each), so a plan exists; got None.")
    if not isinstance(answer, (tuple, list)) or len(answer) != 2:
        return ("accumulation_plan should return (micro_batch, accum_steps) or None, but it "
                f"returned {describe_type(answer)}.")
    micro, steps = (_as_int(value) for value in answer)
    if micro is None or steps is None:
        return f"micro_batch and accum_steps should be whole numbers, got {tuple(answer)!r}."
    if (micro, steps) == expected:
        return None
    problem = f"got (micro_batch, accum_steps) = ({micro}, {steps}), expected {expected}."
    if micro * steps * world_size != global_batch:
        problem += (f" {micro} x {steps} x {world_size} processes = {micro * steps * world_size} "
                    f"rows per optimizer step, not the global batch of {global_batch}.")
    elif micro > max_micro:
        problem += f" A micro-batch of {micro} rows does not fit (at most {max_micro})."
    elif micro < 1 or steps < 1:
        problem += " Both must be at least 1."
    else:
        problem += " That plan works, but it takes more accumulation steps than needed."
    return problem


# --- 2. memory per GPU: mixed precision and ZeRO sharding -----------------------------------

def _shard_bytes(tensors, world_size) -> int:
    """Bytes of GPU 0's shard of the tensors, concatenated, padded to a multiple of world_size."""
    flat = torch.cat([t.reshape(-1) for t in tensors])
    flat = torch.cat([flat, flat.new_zeros((-flat.numel()) % world_size)])
    shard = flat.chunk(world_size)[0]
    return shard.numel() * shard.element_size()


def _memory_case(config, world_size, stage, precision, note=""):
    """The bytes GPU 0 holds, counted on the tensors of a real (small) llmkit GPT."""
    torch.manual_seed(0)
    weights = [p.detach() for p in GPT(GPTConfig(**config)).parameters()]
    if precision == "bf16":
        held = [w.to(torch.bfloat16) for w in weights]               # what runs forward
        master = [w.clone().requires_grad_() for w in weights]       # what AdamW updates
    else:
        held, master = weights, [w.requires_grad_() for w in weights]
    grads = [torch.zeros_like(w) for w in held]
    for p in master:
        p.grad = torch.zeros_like(p)
    optimizer = torch.optim.AdamW(master, foreach=False)
    optimizer.step()                                                 # creates its states
    n_params = sum(w.numel() for w in weights)
    moments = [[s[name] for s in optimizer.state.values()] for name in ("exp_avg", "exp_avg_sq")]
    optimizer_buffers = moments + ([master] if precision == "bf16" else [])

    def size(tensors, sharded):
        return _shard_bytes(tensors, world_size if sharded else 1)

    expected = {"parameters": size(held, stage >= 3), "gradients": size(grads, stage >= 2),
                "optimizer": sum(size(buffer, stage >= 1) for buffer in optimizer_buffers)}
    return Case((n_params, world_size, stage, precision), expected, note)


def _gpt(generator):
    heads = _int(generator, 1, 5)
    return dict(vocab_size=_int(generator, 40, 400), context_length=_int(generator, 8, 80),
                n_layer=_int(generator, 1, 4), n_head=heads, d_model=heads * _int(generator, 4, 17))


def _memory_case_not_dividing(generator, stage, precision, note):
    """A case whose parameter count does not divide by the number of GPUs."""
    while True:
        config = _gpt(generator)
        with torch.device("meta"):                                   # the count, for free
            n_params = GPT(GPTConfig(**config)).num_params()
        worlds = [world for world in range(3, 9) if n_params % world]
        if worlds:
            world = worlds[_int(generator, 0, len(worlds))]
            return _memory_case(config, world, stage, precision, note)


def _memory_cases(generator, hidden):
    if not hidden:
        return [
            _memory_case(_gpt(generator), 1, 0, "fp32", "fp32 on one GPU (the lesson's 16 N)"),
            _memory_case(_gpt(generator), 1, 0, "bf16", "bf16 mixed precision on one GPU"),
            _memory_case_not_dividing(generator, 1, "bf16", "bf16, ZeRO stage 1"),
            _memory_case_not_dividing(generator, 2, "fp32", "fp32, ZeRO stage 2"),
            _memory_case_not_dividing(generator, 3, "bf16", "bf16, ZeRO stage 3"),
        ]
    cases = [_memory_case_not_dividing(generator, stage, precision,
                                       f"{precision}, ZeRO stage {stage}, N not a multiple of "
                                       "the GPUs")
             for stage in (0, 1, 2, 3) for precision in ("fp32", "bf16")]
    return cases


def _compare_memory(answer, case):
    n, world, stage, precision = case.args
    expected = case.expected
    if not isinstance(answer, dict):
        return f"memory_per_gpu should return a dict, but it returned {describe_type(answer)}."
    if set(answer) != set(expected):
        return (f"the dict should have the keys {sorted(expected)}, got "
                f"{sorted(map(str, answer))}.")
    wrong = []
    for key in expected:
        value = _as_int(answer[key])
        if value is None:
            return (f"{key} should be a whole number of bytes, got {answer[key]!r} (a GPU holds "
                    "whole values: round a shard up).")
        if value != expected[key]:
            wrong.append((key, value))
    if not wrong:
        return None
    key, value = wrong[0]
    problem = (f"{len(wrong)} of 3 entries differ; {key} is {value:,} bytes, expected "
               f"{expected[key]:,} (N = {n:,} parameters, {world} GPUs, stage {stage}, "
               f"{precision}).")
    per_value = {"parameters": 2 if precision == "bf16" else 4,
                 "gradients": 2 if precision == "bf16" else 4,
                 "optimizer": 12 if precision == "bf16" else 8}[key]
    sharded = stage >= {"optimizer": 1, "gradients": 2, "parameters": 3}[key]
    if value == per_value * n and sharded:
        problem += f" That is all of it: at stage {stage} each GPU keeps only its shard."
    elif value == per_value * math.ceil(n / world) and not sharded:
        problem += f" That is a shard, but stage {stage} does not shard the {key}."
    elif sharded and value == per_value * (n // world):
        problem += (f" {n:,} values do not split evenly over {world} GPUs: the buffer is padded, "
                    "so a shard holds the count rounded up.")
    elif key == "optimizer" and precision == "bf16" and value in (8 * n, 8 * math.ceil(n / world),
                                                                  4 * n, 4 * math.ceil(n / world)):
        problem += (" Under bf16 mixed precision the optimizer keeps a float32 master copy of "
                    "the weights as well as the two moments, all in float32.")
    return problem


# --- 3. the model size that reaches a target loss -------------------------------------------

def _law_points(generator, offset, count):
    """(N, L, A, alpha): count sizes from 1e3 to 1e8, unsorted, on L = offset + A N^-alpha."""
    sizes = sorted(_log_uniform(generator, 1e3, 1e8) for _ in range(count))
    alpha = _uniform(generator, 0.1, 0.7)
    scale = _uniform(generator, 0.05, 0.5) * sizes[-1] ** alpha   # reducible part at the largest
    order = torch.randperm(count, generator=generator).tolist()
    sizes = [sizes[i] for i in order]
    return sizes, [offset + scale * n ** -alpha for n in sizes], scale, alpha


def _size_case(generator, where, offset=None, note=""):
    """where: share of the gap between the floor and the smallest loss (< 0: below the floor),
    or "above" (higher than every point's loss)."""
    offset = _uniform(generator, 0.5, 3.0) if offset is None else offset
    sizes, losses, scale, alpha = _law_points(generator, offset, _int(generator, 4, 9))
    if where == "above":
        target = max(losses) * _uniform(generator, 1.05, 1.3)
    else:
        target = offset + where * (min(losses) - offset)
    expected = math.inf if target <= offset else (scale / (target - offset)) ** (1 / alpha)
    return Case((sizes, losses, target), expected, note)


def _size_cases(generator, hidden):
    u = lambda low, high: _uniform(generator, low, high)  # noqa: E731
    if not hidden:
        return [_size_case(generator, u(0.3, 0.5), note="a target close to the floor"),
                _size_case(generator, u(-0.5, -0.1), note="a target below the floor"),
                _size_case(generator, u(0.2, 0.5), offset=0.0, note="a law with no floor"),
                _size_case(generator, "above", note="a target above every measured loss")]
    cases = [_size_case(generator, u(0.1, 0.5), note="a target close to the floor")
             for _ in range(4)]
    cases += [_size_case(generator, u(-0.5, -0.05), note="a target below the floor"),
              _size_case(generator, u(-0.1, -0.01), note="a target just below the floor"),
              _size_case(generator, u(0.1, 0.5), offset=0.0, note="a law with no floor"),
              _size_case(generator, "above", note="a target above every measured loss"),
              _size_case(generator, u(0.6, 0.9), note="a target between the floor and the points")]
    return cases


def _fit_on_grid(sizes, losses, offsets):
    """The lesson's search over the given offsets: (A, alpha, E) of the best."""
    log_n, log_l = np.log(np.asarray(sizes)), np.log(np.asarray(losses))
    best = None
    for offset in offsets:
        slope, intercept = np.polyfit(log_n, np.log(np.asarray(losses) - offset), 1)
        error = np.sum((np.log(offset + np.exp(intercept + slope * log_n)) - log_l) ** 2)
        if best is None or error < best[0]:
            best = (error, math.exp(intercept), -slope, offset)
    return best[1:]


def _invert(scale, alpha, offset, target):
    return math.inf if target <= offset else (scale / (target - offset)) ** (1 / alpha)


def _compare_size(answer, case):
    sizes, losses, target = case.args
    expected = case.expected
    if isinstance(answer, torch.Tensor) and answer.numel() == 1:
        answer = answer.item()
    if isinstance(answer, bool) or not isinstance(answer, (int, float)):
        return f"size_for_loss should return a number, but it returned {describe_type(answer)}."
    if math.isinf(expected):
        if answer == math.inf:
            return None
        return (f"got {answer:.6g}, but the target {target:.6g} is below the floor the points "
                "lie on: no size reaches it (return math.inf).")
    if answer == math.inf:
        return (f"got inf, but the target {target:.6g} is above the fitted floor: some size "
                f"reaches it (expected about {expected:.6g}).")
    problem = compare_numbers(answer, expected, name="the size", rel=1e-3, abs_=0.0)
    if problem is None:
        return None
    straight = _fit_on_grid(sizes, losses, [0.0])
    coarse = _fit_on_grid(sizes, losses, np.linspace(0, min(losses), 400, endpoint=False))
    if math.isclose(answer, _invert(*straight, target), rel_tol=1e-6):
        problem += (" It is what a straight line through log L against log N gives: the fit "
                    "needs the offset (the floor).")
    elif math.isclose(answer, _invert(*coarse, target), rel_tol=1e-6):
        problem += (" It is what the 400 offsets of the lesson give: near the floor a small "
                    "error in E is a large error in N, so refine the search.")
    return problem


# --- 4. stretch: the compute-optimal size for a budget --------------------------------------

_CHINCHILLA = {"E": 1.69, "A": 406.4, "alpha": 0.34, "B": 410.7, "beta": 0.28}


def _optimal_reference(budget, law):
    """argmin over N of L(N, C / (6 N)), searched on log N (the loss is convex there)."""
    tokens_times_params = budget / 6

    def loss(log_n):
        return (law["A"] * math.exp(-law["alpha"] * log_n)
                + law["B"] * math.exp(-law["beta"] * (math.log(tokens_times_params) - log_n)))

    grid = np.linspace(0.0, math.log(tokens_times_params), 2001)
    best = int(np.argmin([loss(u) for u in grid]))
    low, high = grid[max(best - 1, 0)], grid[min(best + 1, len(grid) - 1)]
    ratio = (math.sqrt(5) - 1) / 2
    for _ in range(200):
        left, right = high - ratio * (high - low), low + ratio * (high - low)
        if loss(left) < loss(right):
            high = right
        else:
            low = left
    n_opt = math.exp((low + high) / 2)
    return (n_opt, tokens_times_params / n_opt)


def _optimal_case(budget, law, note=""):
    return Case((budget, dict(law)), _optimal_reference(budget, law), note)


def _random_law(generator, faster):
    """faster: "N" makes alpha > beta, "D" beta > alpha (by at least 0.05)."""
    low, high = sorted([_uniform(generator, 0.1, 0.75), _uniform(generator, 0.1, 0.75)])
    high = max(high, low + 0.05)
    alpha, beta = (high, low) if faster == "N" else (low, high)
    return {"E": _uniform(generator, 0.5, 2.5), "A": _log_uniform(generator, 20, 2000),
            "alpha": alpha, "B": _log_uniform(generator, 20, 2000), "beta": beta}


def _optimal_cases(generator, hidden):
    if not hidden:
        return [_optimal_case(5.76e23, _CHINCHILLA, "Chinchilla's fit at Gopher's budget"),
                _optimal_case(_log_uniform(generator, 1e16, 1e22), _random_law(generator, "D"),
                              "a law with beta > alpha")]
    cases = [_optimal_case(_log_uniform(generator, 1e15, 1e25), _random_law(generator, faster))
             for faster in ("N", "D", "N", "D", "N", "D")]
    cases.append(_optimal_case(_log_uniform(generator, 1e18, 1e22), _CHINCHILLA,
                               "Chinchilla's fit"))
    return cases


def _compare_optimal(answer, case):
    budget, law = case.args
    if not isinstance(answer, (tuple, list)) or len(answer) != 2:
        return f"compute_optimal should return (N, D), but it returned {describe_type(answer)}."
    values = []
    for value in answer:
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            value = value.item()
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"N and D should be numbers, got {describe_type(value)}."
        values.append(float(value))
    n, d = values
    want_n, want_d = case.expected
    if math.isclose(n, want_n, rel_tol=1e-3) and math.isclose(d, want_d, rel_tol=1e-3):
        return None
    problem = f"got N = {n:.4g}, D = {d:.4g}; expected N = {want_n:.4g}, D = {want_d:.4g}."
    if n > 0 and d > 0 and not math.isclose(6 * n * d, budget, rel_tol=1e-3):
        problem += (f" 6 N D = {6 * n * d:.4g}, but the budget is C = {budget:.4g}: the pair "
                    "must spend exactly the budget.")
    elif n > 0 and d > 0:
        a_term = law["A"] * n ** -law["alpha"]
        b_term = law["B"] * d ** -law["beta"]
        if math.isclose(a_term, b_term, rel_tol=1e-3):
            problem += (" The two terms are equal there, but equal terms are not the minimum: "
                        "it is where their rates of change balance.")
        elif math.isclose(d / n, 20, rel_tol=1e-3):
            problem += (" That is 20 tokens per parameter, Chinchilla's rule of thumb; this law's "
                        "own optimum is elsewhere.")
    return problem


EXERCISES = [
    Exercise("scaling.accumulation_plan", "accumulation_plan", 2,
             "Gradient accumulation for a world size",
             _plan_cases, _compare_plan, forbidden=FINISHED,
             hint="First the share of each process (it must be whole, or there is no plan), then "
                  "split that share into equal micro-batches no bigger than what fits. The "
                  "largest size that fits need not divide the share, and neither need "
                  "share / (the fewest steps that could hold it)."),
    Exercise("scaling.memory_per_gpu", "memory_per_gpu", 3,
             "Memory per GPU: mixed precision and ZeRO sharding",
             _memory_cases, _compare_memory, forbidden=FINISHED,
             hint="Count bytes per parameter for each of the three, in each precision (under "
                  "bf16 the optimizer also keeps the float32 weights it updates), then decide "
                  "for each whether this stage shards it: each stage shards one more thing than "
                  "the one before. A shard of N values over W GPUs is rounded up."),
    Exercise("scaling.size_for_loss", "size_for_loss", 3,
             "The model size that reaches a target loss",
             _size_cases, _compare_size, forbidden=FINISHED,
             hint="Near the floor E, the size you need depends on target - E, so a small error "
                  "in E becomes a large one in N: keep narrowing the search around the best "
                  "offset until it stops moving. And a target at or below E is never reached."),
    Exercise("scaling.compute_optimal", "compute_optimal", 3,
             "Stretch: the compute-optimal size for a budget",
             _optimal_cases, _compare_optimal, forbidden=FINISHED,
             hint="On the budget line D = C / (6 N) the loss depends on N alone. At its minimum "
                  "the rates at which the two terms change with log N cancel, which is not the "
                  "point where the two terms are equal (unless alpha = beta)."),
]

ASSIGNMENT = Assignment("11_scaling_up", "Exercises 11: scaling up", SETUP, EXERCISES)
