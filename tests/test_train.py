"""The trainer: schedule, decay groups, accumulation, clipping, callbacks, exact resume.

References are computed here independently: the schedule from its formula, the decay split
from the module types, accumulated gradients from one plain forward/backward on the whole
batch, the gradient norm with torch.linalg.vector_norm.
"""

import copy
import math
import time

import pytest
import torch
from torch import nn

from llmkit import device as llmkit_device
from llmkit.data.batches import get_batch
from llmkit.model import GPT, GPTConfig
from llmkit.train import (TrainConfig, Trainer, decay_parameter_names, learning_rate, make_optimizer,
                          stream_loss)

VOCAB = 12


def tiny_model(seed=0, dropout=0.0, **overrides) -> GPT:
    torch.manual_seed(seed)
    shape = dict(vocab_size=VOCAB, context_length=16, n_layer=2, n_head=2, d_model=32, dropout=dropout)
    return GPT(GPTConfig(**{**shape, **overrides}))


def token_stream(n=3000, seed=0) -> torch.Tensor:
    """A learnable stream: counting 0..VOCAB-1 upwards, with a few random tokens mixed in."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.arange(n) % VOCAB
    noise = torch.rand(n, generator=generator) < 0.1
    return torch.where(noise, torch.randint(0, VOCAB, (n,), generator=generator), ids)


def quick_config(**overrides) -> TrainConfig:
    values = dict(max_steps=30, batch_size=4, warmup_steps=5, eval_interval=10, eval_iters=2,
                  progress=False, device="cpu", lr=3e-3, min_lr=3e-4)
    return TrainConfig(**{**values, **overrides})


def make_trainer(model=None, **overrides) -> Trainer:
    ids = token_stream()
    return Trainer(model or tiny_model(), ids[:2500], ids[2500:], quick_config(**overrides))


# --- the schedule and the optimizer ----------------------------------------------------------


def test_learning_rate_follows_warmup_then_cosine():
    config = TrainConfig(lr=1e-3, min_lr=1e-4, warmup_steps=10, lr_decay_steps=110, max_steps=200)
    for step in range(200):
        if step < 10:
            expected = 1e-3 * (step + 1) / 10
        elif step <= 110:
            expected = 1e-4 + (1e-3 - 1e-4) * (1 + math.cos(math.pi * (step - 10) / 100)) / 2
        else:
            expected = 1e-4
        assert learning_rate(step, config) == pytest.approx(expected, rel=1e-12), step


def test_learning_rate_warmup_is_capped_by_a_short_run():
    config = TrainConfig(lr=1e-3, min_lr=1e-4, warmup_steps=100, max_steps=20)
    assert learning_rate(19, config) == pytest.approx(1e-3)
    assert learning_rate(20, config) == pytest.approx(1e-4)


def test_matrices_decay_and_biases_and_norms_do_not():
    model = tiny_model()
    expected_decay, expected_plain = set(), set()
    for module_name, module in model.named_modules():
        for name, _ in module.named_parameters(recurse=False):
            full = f"{module_name}.{name}" if module_name else name
            if isinstance(module, (nn.Linear, nn.Embedding)) and name == "weight":
                expected_decay.add(full)
            else:
                expected_plain.add(full)
    # The tied head weight is the token embedding: named once, under the embedding.
    expected_decay.discard("lm_head.weight")
    decay, plain = decay_parameter_names(model)
    assert set(decay) == expected_decay
    assert set(plain) == expected_plain
    assert any("norm" in name for name in plain) and any(name.endswith("bias") for name in plain)

    optimizer = make_optimizer(model, TrainConfig(weight_decay=0.1))
    groups = {group["weight_decay"]: group["params"] for group in optimizer.param_groups}
    params = dict(model.named_parameters())
    assert {id(p) for p in groups[0.1]} == {id(params[n]) for n in decay}
    assert {id(p) for p in groups[0.0]} == {id(params[n]) for n in plain}
    assert sum(p.numel() for g in groups.values() for p in g) == model.num_params()


# --- one step ----------------------------------------------------------------------------


def test_two_micro_batches_give_the_gradient_of_one_double_batch():
    model = tiny_model()
    reference = copy.deepcopy(model)
    trainer = make_trainer(model, batch_size=4, grad_accum_steps=2, seed=7)
    trainer.compute_gradients()

    generator = torch.Generator().manual_seed(7)   # the trainer's batch stream, replayed
    batches = [get_batch(trainer.train_ids, 4, 16, generator=generator) for _ in range(2)]
    x = torch.cat([b[0] for b in batches])
    y = torch.cat([b[1] for b in batches])
    _, loss = reference(x, y)
    loss.backward()
    for (name, mine), (_, expected) in zip(model.named_parameters(), reference.named_parameters()):
        torch.testing.assert_close(mine.grad, expected.grad, rtol=1e-5, atol=1e-7, msg=name)


def test_clipping_scales_the_global_norm_down_to_the_limit():
    trainer = make_trainer(grad_clip=0.05)
    trainer.compute_gradients()
    grads = [p.grad.clone() for p in trainer.model.parameters()]
    norm_before = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
    assert norm_before > 0.05, "the fixture should need clipping"

    reported = trainer.clip_gradients()
    torch.testing.assert_close(reported, norm_before)
    clipped = [p.grad for p in trainer.model.parameters()]
    norm_after = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in clipped]))
    torch.testing.assert_close(norm_after, torch.tensor(0.05), rtol=1e-4, atol=0)
    for before, after in zip(grads, clipped):   # same direction, shorter
        torch.testing.assert_close(after, before * (0.05 / norm_before), rtol=1e-4, atol=1e-9)


def test_no_clipping_leaves_gradients_alone():
    trainer = make_trainer(grad_clip=None)
    trainer.compute_gradients()
    grads = [p.grad.clone() for p in trainer.model.parameters()]
    reported = trainer.clip_gradients()
    norm = torch.linalg.vector_norm(torch.cat([g.flatten() for g in grads]))
    torch.testing.assert_close(reported, norm)
    for before, param in zip(grads, trainer.model.parameters()):
        torch.testing.assert_close(param.grad, before, rtol=0, atol=0)


# --- evaluation ----------------------------------------------------------------------------


def test_stream_loss_is_the_mean_over_every_whole_window():
    model = tiny_model(dropout=0.1).train()
    ids = token_stream(n=16 * 9 + 5)    # 9 whole windows of 16, 4 targets left over
    losses = []
    with torch.no_grad():
        model.eval()
        for w in range(9):
            window = ids[16 * w : 16 * w + 17]
            logits = model(window[None, :-1])[0][0]
            losses.append(torch.nn.functional.cross_entropy(logits, window[1:], reduction="none"))
        model.train()
    expected = torch.cat(losses).double().mean().item()
    assert stream_loss(model, ids, 16, batch_size=4) == pytest.approx(expected, rel=1e-6)
    assert model.training   # left as it was found
    with pytest.raises(ValueError, match="context_length \\+ 1"):
        stream_loss(model, ids[:10], 16)


# --- precision ------------------------------------------------------------------------------


def linear_output_dtypes(trainer) -> set:
    """Run one training step and collect the dtypes the model's Linear layers produced."""
    seen = set()
    hooks = [module.register_forward_hook(lambda m, args, out: seen.add(out.dtype))
             for module in trainer.model.modules() if isinstance(module, nn.Linear)]
    trainer.train_step()
    for hook in hooks:
        hook.remove()
    return seen


@pytest.mark.parametrize("native", [True, False])
def test_bf16_runs_matmuls_in_bf16_only_where_the_cpu_has_it(monkeypatch, native):
    monkeypatch.setattr(llmkit_device, "cpu_has_native_bf16", lambda: native)
    if native:
        trainer = make_trainer(precision="bf16")
        assert linear_output_dtypes(trainer) == {torch.bfloat16}
    else:
        with pytest.warns(UserWarning, match="training in float32"):
            trainer = make_trainer(precision="bf16")
        assert linear_output_dtypes(trainer) == {torch.float32}
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())   # master weights
    assert linear_output_dtypes(make_trainer(precision="fp32")) == {torch.float32}


def test_bf16_loss_and_gradients_stay_close_to_float32(monkeypatch):
    monkeypatch.setattr(llmkit_device, "cpu_has_native_bf16", lambda: True)
    model = tiny_model()
    reference = copy.deepcopy(model)
    trainer = make_trainer(model, precision="bf16", seed=3)
    loss = trainer.compute_gradients()

    x, y = get_batch(trainer.train_ids, 4, 16, generator=torch.Generator().manual_seed(3))
    _, expected = reference(x, y)    # plain float32, no autocast
    expected.backward()
    # bf16 keeps 8 significant bits: about 0.4% per rounding, so a percent or two overall.
    torch.testing.assert_close(loss, expected.detach(), rtol=2e-2, atol=0)
    for (name, mine), (_, theirs) in zip(model.named_parameters(), reference.named_parameters()):
        cosine = torch.nn.functional.cosine_similarity(mine.grad.flatten(), theirs.grad.flatten(), dim=0)
        assert cosine > 0.99, name


def test_configs_saved_before_precision_still_load():
    old = {**TrainConfig().to_dict(), "autocast": False}
    del old["precision"]
    assert TrainConfig.from_dict(old).precision == "fp32"
    old["autocast"] = True
    assert TrainConfig.from_dict(old).precision == "auto"


# --- the loop ----------------------------------------------------------------------------


def test_loss_goes_down_on_a_learnable_stream():
    trainer = make_trainer(max_steps=60)
    history = trainer.fit()
    evals = [r for r in history if "val_loss" in r]
    assert evals[0]["step"] == 0 and evals[-1]["step"] == 60
    assert evals[0]["val_loss"] == pytest.approx(math.log(VOCAB), abs=0.2)   # uniform guess at start
    assert evals[-1]["val_loss"] < 0.6 * evals[0]["val_loss"]


class Recorder:
    def __init__(self, stop_at=None):
        self.events, self.steps, self.evals, self.stop_at = [], [], [], stop_at

    def on_train_start(self, trainer):
        self.events.append("start")

    def on_step(self, trainer, record):
        self.steps.append(record)
        if record["step"] == self.stop_at:
            trainer.should_stop = True

    def on_eval(self, trainer, record):
        self.evals.append(record)

    def on_train_end(self, trainer):
        self.events.append("end")


def test_callbacks_see_every_record_in_order():
    recorder = Recorder()
    trainer = make_trainer(max_steps=12, eval_interval=5)
    trainer.callbacks.append(recorder)
    history = trainer.fit()
    assert recorder.events == ["start", "end"]
    assert [r["step"] for r in recorder.steps] == list(range(1, 13))
    assert [r["step"] for r in recorder.evals] == [0, 5, 10, 12]
    for record in recorder.steps:
        assert set(record) >= {"step", "loss", "lr", "tokens_per_sec", "elapsed"}
        assert record["lr"] == pytest.approx(learning_rate(record["step"] - 1, trainer.config))
        assert math.isfinite(record["loss"]) and record["tokens_per_sec"] > 0
    assert set(recorder.evals[0]) >= {"step", "train_loss", "val_loss"}
    assert history == trainer.history and len(history) == 12 + 4


def test_a_callback_can_stop_training():
    recorder = Recorder(stop_at=4)
    trainer = make_trainer(max_steps=30)
    trainer.callbacks.append(recorder)
    trainer.fit()
    assert trainer.step == 4


def test_time_budget_stops_the_run():
    trainer = make_trainer(max_steps=10**6, eval_interval=0, time_budget_s=0.3)
    trainer.fit()
    assert 1 <= trainer.step < 10**6


def test_failed_compile_falls_back_to_eager(monkeypatch):
    def broken_compile(model, **kwargs):
        def fail(*args, **kw):
            raise RuntimeError("no C++ compiler")
        return fail

    monkeypatch.setattr(torch, "compile", broken_compile)
    trainer = make_trainer(max_steps=3, eval_interval=0, compile=True)
    with pytest.warns(UserWarning, match="torch.compile failed"):
        trainer.fit()
    assert trainer.step == 3 and trainer.forward is trainer.model


class FailsBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        raise RuntimeError("backward graph failed to compile")


def test_compile_failing_in_backward_falls_back_for_the_whole_step(monkeypatch):
    def compile_that_breaks_backward(model, **kwargs):
        return lambda x, y: (None, FailsBackward.apply(model(x, y)[1]))

    eager = make_trainer(tiny_model(dropout=0.1), max_steps=4, eval_interval=0)
    eager.fit()
    monkeypatch.setattr(torch, "compile", compile_that_breaks_backward)
    trainer = make_trainer(tiny_model(dropout=0.1), max_steps=4, eval_interval=0, compile=True)
    with pytest.warns(UserWarning, match="torch.compile failed .*backward graph failed") as caught:
        trainer.fit()
    assert len([w for w in caught if "torch.compile" in str(w.message)]) == 1   # one warning
    assert trainer.forward is trainer.model
    # The failed attempt left no trace: same batches, dropout draws and losses as eager.
    assert step_losses(trainer.history) == step_losses(eager.history)


# --- exact resume ------------------------------------------------------------------------------


def step_losses(history):
    return [(r["step"], r["loss"]) for r in history if "loss" in r]


@pytest.mark.parametrize("stop_at", [13, 14])   # 14: on an evaluation step (eval_interval 7)
def test_resume_reproduces_an_uninterrupted_run_bit_for_bit(tmp_path, stop_at):
    # Dropout on, so the global generator's state matters too.
    straight = make_trainer(tiny_model(dropout=0.1), max_steps=30, eval_interval=7)
    straight.fit()

    first = make_trainer(tiny_model(dropout=0.1), max_steps=30, eval_interval=7,
                         out_dir=str(tmp_path / "run"))
    first.callbacks.append(Recorder(stop_at=stop_at))
    first.fit()
    assert first.step == stop_at

    torch.manual_seed(12345)   # whatever happens in between must not matter
    second = make_trainer(tiny_model(seed=99, dropout=0.1), max_steps=30, eval_interval=7,
                          out_dir=str(tmp_path / "run"))
    second.resume(tmp_path / "run")
    assert second.step == stop_at
    second.fit()

    assert step_losses(second.history) == step_losses(straight.history)   # exact, not approx
    eval_steps = [r["step"] for r in second.history if "val_loss" in r]
    assert eval_steps == sorted(set([0, 7, 14, 21, 28, 30, stop_at]))
    straight_evals = {r["step"]: r["val_loss"] for r in straight.history if "val_loss" in r}
    for record in second.history:
        if "val_loss" in record and record["step"] in straight_evals:
            assert record["val_loss"] == straight_evals[record["step"]]
    for a, b in zip(straight.model.parameters(), second.model.parameters()):
        assert torch.equal(a, b)


# --- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize("overrides, message", [
    (dict(lr=0), "lr must be positive"),
    (dict(min_lr=1.0, lr=1e-3), "min_lr must be between"),
    (dict(batch_size=0), "batch_size must be a positive integer"),
    (dict(grad_accum_steps=1.5), "grad_accum_steps must be a positive integer"),
    (dict(warmup_steps=50, lr_decay_steps=10), "lr_decay_steps"),
    (dict(beta2=1.0), "beta2 must be in"),
    (dict(time_budget_s=-1), "time_budget_s must be positive"),
    (dict(precision="fp8"), "precision must be one of"),
    (dict(lr=float("inf")), "lr must be a finite number"),
    (dict(lr=float("nan")), "lr must be a finite number"),
    (dict(min_lr=float("nan")), "min_lr must be a finite number"),
    (dict(grad_clip=float("inf")), "grad_clip must be a finite number or None"),
    (dict(time_budget_s=float("nan")), "time_budget_s must be a finite number or None"),
    (dict(seed=2**70), "seed must be an integer from 0 to 2\\*\\*63 - 1"),
    (dict(seed=-1), "seed must be an integer from 0"),
    (dict(lr="fast"), "lr must be a finite number, got 'fast'"),
    (dict(log_interval=0), "log_interval must be a positive integer or None"),
    (dict(compile="yes"), "compile must be True or False"),
])
def test_bad_configs_say_what_is_wrong(overrides, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**overrides)


def test_bad_trainer_inputs_say_what_to_do():
    ids = token_stream()
    with pytest.raises(ValueError, match="context_length \\+ 1"):
        Trainer(tiny_model(), ids, ids[:10], quick_config())
    with pytest.raises(ValueError, match="vocab_size"):
        Trainer(tiny_model(), ids + VOCAB, ids, quick_config())
    with pytest.raises(ValueError, match="longer than the model's context_length"):
        Trainer(tiny_model(), ids, ids, quick_config(context_length=64))
    with pytest.raises(ValueError, match="has none of the methods"):
        Trainer(tiny_model(), ids, ids, quick_config(), callbacks=[object()])


# --- the device path ------------------------------------------------------------------------


def test_clipping_lets_pytorch_choose_the_implementation(monkeypatch):
    seen = {}
    real = nn.utils.clip_grad_norm_

    def spy(params, max_norm, *args, **kwargs):
        seen.update(kwargs)
        return real(params, max_norm, *args, **kwargs)

    monkeypatch.setattr(nn.utils, "clip_grad_norm_", spy)
    trainer = make_trainer(grad_clip=1.0)
    trainer.compute_gradients()
    trainer.clip_gradients()
    # foreach=True raises on Apple's MPS; None lets PyTorch pick what the device has.
    assert "foreach" in seen and seen["foreach"] is None


def fp16_everywhere(monkeypatch):
    """Pretend this CPU is a GPU that trains in float16 with a gradient scaler."""
    monkeypatch.setattr(llmkit_device, "autocast_dtype",
                        lambda device, precision="auto": None if precision == "fp32" else torch.float16)
    monkeypatch.setattr(llmkit_device, "needs_grad_scaler",
                        lambda device, precision="auto": precision != "fp32", raising=False)


def test_float16_trains_with_a_gradient_scaler_unscaled_before_clipping(monkeypatch):
    fp16_everywhere(monkeypatch)
    model = tiny_model()
    reference = copy.deepcopy(model)
    trainer = make_trainer(model, seed=3, grad_clip=0.05)
    assert trainer.scaler.is_enabled()
    assert linear_output_dtypes(make_trainer(tiny_model())) == {torch.float16}
    trainer.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)   # no overflow at step 1

    x, y = get_batch(trainer.train_ids, 4, 16, generator=torch.Generator().manual_seed(3))
    _, expected = reference(x, y)     # float32, unscaled
    expected.backward()
    true_norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in reference.parameters()]))
    loss, _, grad_norm = trainer.train_step()
    # The reported norm is the true one (float16 rounding aside), not 1024 times it.
    torch.testing.assert_close(grad_norm, true_norm, rtol=3e-2, atol=0)
    torch.testing.assert_close(loss, expected.detach(), rtol=1e-2, atol=0)
    assert trainer.scaler.get_scale() == 2.0**10    # a finite step keeps the scale


def test_the_gradient_scaler_state_is_saved_and_resumed(monkeypatch, tmp_path):
    fp16_everywhere(monkeypatch)
    trainer = make_trainer(max_steps=4, eval_interval=0, out_dir=str(tmp_path / "run"))
    trainer.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**20, growth_interval=2)
    trainer.fit()
    scale = trainer.scaler.get_scale()
    assert scale != 2.0**20    # overflowing steps halved it, finite ones grew it
    assert torch.load(tmp_path / "run" / "state.pt", weights_only=True)["scaler"]["scale"] == scale

    resumed = make_trainer(max_steps=4, eval_interval=0)
    assert resumed.scaler.get_scale() != scale
    resumed.resume(tmp_path / "run")
    assert resumed.scaler.get_scale() == scale and resumed.step == 4


def test_log_interval_is_chosen_by_device():
    assert make_trainer().log_interval == 1            # CPU: a sync costs nothing
    assert make_trainer(log_interval=5).log_interval == 5
    history = make_trainer(max_steps=7, eval_interval=0, log_interval=3).fit()
    assert [r["step"] for r in history] == list(range(1, 8))   # every step, in batches


def test_tokens_per_second_does_not_dip_after_an_evaluation(monkeypatch):
    trainer = make_trainer(max_steps=12, eval_interval=4)
    slow_eval = 0.4

    def slow(*args, **kwargs):
        time.sleep(slow_eval)
        return {"train_loss": 1.0, "val_loss": 1.0}

    monkeypatch.setattr(trainer, "estimate_loss", slow)
    history = trainer.fit()
    rates = {r["step"]: r["tokens_per_sec"] for r in history if "loss" in r}
    tokens_per_step = 4 * 16
    # The time each step after an evaluation was charged: a few ms of training, not the 0.4 s
    # of evaluation before it (which would show as a rate 50 times lower).
    for step in (1, 5, 9):
        assert tokens_per_step / rates[step] < slow_eval / 2, step


def test_resuming_with_more_steps_keeps_the_saved_schedule(tmp_path):
    first = make_trainer(max_steps=10, warmup_steps=2, eval_interval=0, out_dir=str(tmp_path / "run"))
    first.fit()
    longer = make_trainer(max_steps=16, warmup_steps=2, eval_interval=0)
    with pytest.warns(UserWarning, match="keeping that schedule"):
        longer.resume(tmp_path / "run")
    longer.fit()
    lrs = [r["lr"] for r in longer.history if "loss" in r]
    reference = TrainConfig(max_steps=10, warmup_steps=2, lr=3e-3, min_lr=3e-4)
    # the first 10 steps as saved, then min_lr: no jump back up to a new cosine
    assert lrs[:10] == [learning_rate(step, reference) for step in range(10)]
    assert lrs[10:] == [3e-4] * 6
