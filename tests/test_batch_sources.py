"""Training on examples: the collator's contract, accumulation weighted by tokens, evaluation
on a fixed set, exact resume, and checkpoints of any model kind.

References are computed here: one cross_entropy call over every counted target of one big
batch (PyTorch's own op), gradients from a plain forward/backward on that batch.
"""

import copy
import json
import sys
import types

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from llmkit import checkpoint as ckpt
from llmkit.data.batches import IGNORE_INDEX, ExampleSet, TokenStream, collate
from llmkit.evaluate import fixed_set_loss
from llmkit.model import GPT, GPTConfig
from llmkit.train import TrainConfig, Trainer

VOCAB, PAD = 16, 0


def tiny_model(seed=0, dropout=0.0) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=VOCAB, context_length=24, n_layer=2, n_head=2, d_model=32,
                         dropout=dropout))


def lm_examples(n=40, seed=0) -> list[dict]:
    """Examples of very different lengths (3..24 tokens), their first tokens masked like a prompt."""
    generator = torch.Generator().manual_seed(seed)
    examples = []
    for _ in range(n):
        length = int(torch.randint(3, 25, (1,), generator=generator))
        ids = torch.randint(1, VOCAB, (length + 1,), generator=generator).tolist()
        prompt = int(torch.randint(0, length - 1, (1,), generator=generator))
        labels = [IGNORE_INDEX] * prompt + ids[prompt + 1 :]
        examples.append({"input_ids": ids[:-1], "labels": labels})
    return examples


def config(**changes) -> TrainConfig:
    values = dict(max_steps=20, batch_size=2, warmup_steps=2, eval_interval=5, eval_iters=3,
                  progress=False, device="cpu", lr=3e-3, min_lr=3e-4)
    return TrainConfig(**{**values, **changes})


# --- the collator ------------------------------------------------------------------------------


def test_collate_pads_inputs_on_the_right_and_labels_with_ignore_index():
    x, y = collate([{"input_ids": [5, 6, 7], "labels": [6, 7, 8]},
                    {"input_ids": [9], "labels": [IGNORE_INDEX]}], pad_id=3)
    assert x.tolist() == [[5, 6, 7], [9, 3, 3]] and x.dtype == torch.long
    assert y.tolist() == [[6, 7, 8], [IGNORE_INDEX] * 3]
    x, y = collate([{"input_ids": [5, 6], "label": 1}, {"input_ids": [4, 4, 4], "label": 0}], pad_id=0)
    assert x.tolist() == [[5, 6, 0], [4, 4, 4]] and y.tolist() == [1, 0] and y.shape == (2,)


@pytest.mark.parametrize("examples, message", [
    ([{"input_ids": [1, 2]}], "either 'labels' .* or 'label'"),
    ([{"input_ids": [1, 2], "labels": [1]}], "one per input id"),
    ([{"input_ids": [], "labels": []}], "non-empty list of ints"),
    ([{"input_ids": [1], "label": 0}, {"input_ids": [1], "labels": [1]}], "mixes"),
    ([{"input_ids": [1, 2.0], "labels": [1, 2]}], "non-empty list of ints"),
])
def test_collate_says_what_an_example_must_be(examples, message):
    with pytest.raises(ValueError, match=message):
        collate(examples, pad_id=0)


def test_examples_longer_than_the_context_are_refused_by_number():
    examples = [{"input_ids": [1] * 5, "labels": [1] * 5}, {"input_ids": [1] * 30, "labels": [1] * 30}]
    with pytest.raises(ValueError, match="1 example\\(s\\) are longer than the context_length 24 "
                                         "\\(e.g. example 1: 30 tokens\\)"):
        Trainer(tiny_model(), examples_set(examples), examples_set(examples[:1]), config())


def examples_set(examples):
    return ExampleSet(examples, pad_id=PAD)


# --- accumulation weighted by tokens ----------------------------------------------------------


def largest_accumulation_difference() -> tuple[float, float]:
    """(largest |gradient difference| between 3 unequal micro-batches and one big batch,
    the same for the plain mean of the micro-batch losses), on the same examples."""
    examples = lm_examples()
    model = tiny_model()
    reference = copy.deepcopy(model)
    naive = copy.deepcopy(model)
    trainer = Trainer(model, examples_set(examples), examples_set(examples),
                      config(batch_size=2, grad_accum_steps=3, seed=5))
    trainer.compute_gradients()

    generator = torch.Generator().manual_seed(5)    # the trainer's draws, replayed
    picks = [torch.randint(0, len(examples), (2,), generator=generator).tolist() for _ in range(3)]
    micro = [collate([examples[i] for i in pick], PAD) for pick in picks]
    counts = [int((y != IGNORE_INDEX).sum()) for _, y in micro]
    assert len(set(counts)) > 1, "the fixture should give micro-batches of unequal size"

    x, y = collate([examples[i] for pick in picks for i in pick], PAD)   # one big batch
    logits, _ = reference(x)
    F.cross_entropy(logits.reshape(-1, VOCAB), y.reshape(-1), ignore_index=IGNORE_INDEX).backward()
    for xs, ys in micro:   # what dividing by the number of micro-batches would give
        (naive(xs, ys)[1] / 3).backward()

    def largest(other):
        return max((a.grad - b.grad).abs().max().item()
                   for a, b in zip(model.parameters(), other.parameters()))

    return largest(reference), largest(naive)


def test_unequal_micro_batches_give_the_gradient_of_one_big_batch():
    weighted, naive = largest_accumulation_difference()
    assert weighted < 1e-6, weighted
    assert naive > 100 * max(weighted, 1e-9)   # the plain mean of the micro-batch losses is off


def test_the_reported_loss_is_the_big_batchs_loss():
    examples = lm_examples()
    model = tiny_model()
    trainer = Trainer(copy.deepcopy(model), examples_set(examples), examples_set(examples),
                      config(batch_size=3, grad_accum_steps=2, seed=2))
    loss = trainer.compute_gradients()
    generator = torch.Generator().manual_seed(2)
    picks = [i for _ in range(2) for i in torch.randint(0, len(examples), (3,), generator=generator).tolist()]
    x, y = collate([examples[i] for i in picks], PAD)
    logits, _ = model(x)
    expected = F.cross_entropy(logits.reshape(-1, VOCAB), y.reshape(-1), ignore_index=IGNORE_INDEX)
    torch.testing.assert_close(loss, expected.detach(), rtol=1e-5, atol=1e-6)


# --- evaluation on a fixed set ------------------------------------------------------------------


def test_evaluation_uses_the_same_examples_every_time():
    examples = lm_examples()
    trainer = Trainer(tiny_model(dropout=0.2), examples_set(examples[:30]), examples_set(examples[30:]),
                      config(eval_iters=2, batch_size=3))
    first = trainer.estimate_loss()
    assert trainer.estimate_loss() == first            # dropout is off while measuring
    assert trainer.model.training                       # and back on afterwards
    # The validation figure: the first eval_iters * batch_size = 6 validation examples in order.
    model = trainer.model.eval()
    x, y = collate(examples[30:36], PAD)
    with torch.no_grad():
        logits, _ = model(x)
    expected = F.cross_entropy(logits.reshape(-1, VOCAB), y.reshape(-1), ignore_index=IGNORE_INDEX)
    assert first["val_loss"] == pytest.approx(expected.item(), rel=1e-5)


def test_fixed_set_loss_weighs_batches_by_their_counted_targets():
    model = tiny_model().eval()
    examples = lm_examples(9)
    batches = [collate(examples[:2], PAD), collate(examples[2:9], PAD)]   # very unequal
    x, y = collate(examples, PAD)
    with torch.no_grad():
        logits, _ = model(x)
    expected = F.cross_entropy(logits.reshape(-1, VOCAB), y.reshape(-1), ignore_index=IGNORE_INDEX)
    assert fixed_set_loss(model, batches) == pytest.approx(expected.item(), rel=1e-5)


# --- exact resume on examples --------------------------------------------------------------------


class StopAt:
    def __init__(self, step):
        self.step = step

    def on_step(self, trainer, record):
        if record["step"] == self.step:
            trainer.should_stop = True


def test_resume_on_examples_reproduces_an_uninterrupted_run_bit_for_bit(tmp_path):
    examples = lm_examples()
    data = dict(train_ids=examples_set(examples[:30]), val_ids=examples_set(examples[30:]))
    straight = Trainer(tiny_model(dropout=0.1), config=config(grad_accum_steps=2), **data)
    straight.fit()
    first = Trainer(tiny_model(dropout=0.1), config=config(grad_accum_steps=2, out_dir=str(tmp_path / "r")),
                    callbacks=[StopAt(7)], **data)
    first.fit()
    torch.manual_seed(99)
    second = Trainer(tiny_model(seed=3, dropout=0.1), config=config(grad_accum_steps=2), **data)
    second.resume(tmp_path / "r")
    second.fit()
    losses = [(r["step"], r["loss"]) for r in second.history if "loss" in r]
    assert losses == [(r["step"], r["loss"]) for r in straight.history if "loss" in r]
    for a, b in zip(straight.model.parameters(), second.model.parameters()):
        assert torch.equal(a, b)


def test_a_token_stream_source_is_what_a_stream_of_ids_gives():
    ids = torch.arange(500) % VOCAB
    a = Trainer(tiny_model(), ids, ids, config(max_steps=3, eval_interval=0)).fit()
    b = Trainer(tiny_model(), TokenStream(ids, 24), TokenStream(ids, 24), config(max_steps=3, eval_interval=0)).fit()
    assert [r["loss"] for r in a] == [r["loss"] for r in b]


# --- checkpoints of any model kind --------------------------------------------------------------


class Toy(nn.Module):
    """A model that is not a GPT: embeddings, mean pooling and a linear head over classes."""

    def __init__(self, vocab_size=VOCAB, n_classes=3, width=8):
        super().__init__()
        self.settings = dict(vocab_size=vocab_size, n_classes=n_classes, width=width)
        self.embed = nn.Embedding(vocab_size, width)
        self.head = nn.Linear(width, n_classes)

    def forward(self, x, y=None):
        logits = self.head(self.embed(x).mean(1))
        return logits, None if y is None else F.cross_entropy(logits, y, ignore_index=IGNORE_INDEX)

    def checkpoint_config(self):
        return dict(self.settings)

    @classmethod
    def from_checkpoint_config(cls, values):
        return cls(**values)


@pytest.fixture
def toy_module(monkeypatch):
    """Toy, as if it lived in a module of llmkit (the only place a checkpoint may name)."""
    module = types.ModuleType("llmkit.toy_models")
    module.Toy = Toy
    monkeypatch.setitem(sys.modules, "llmkit.toy_models", module)
    monkeypatch.setattr(Toy, "__module__", "llmkit.toy_models")
    return module


def test_any_model_with_the_protocol_trains_saves_and_resumes(tmp_path, toy_module):
    examples = [{"input_ids": [1 + i % 5, 2, 3][: 1 + i % 3], "label": i % 3} for i in range(30)]
    data = dict(train_ids=ExampleSet(examples, PAD), val_ids=ExampleSet(examples[:6], PAD))
    torch.manual_seed(0)
    straight = Trainer(Toy(), config=config(max_steps=10, context_length=4), **data)
    straight.fit()
    torch.manual_seed(0)
    first = Trainer(Toy(), config=config(max_steps=10, context_length=4, out_dir=str(tmp_path / "t")),
                    callbacks=[StopAt(4)], **data)
    first.fit()
    saved = json.loads((tmp_path / "t" / ckpt.CONFIG_FILE).read_text())
    assert saved["model_class"] == "llmkit.toy_models:Toy" and saved["saved_by"] == "llmkit"
    assert saved["model"] == {"vocab_size": VOCAB, "n_classes": 3, "width": 8}

    loaded = ckpt.load_checkpoint(tmp_path / "t")
    assert isinstance(loaded.model, Toy) and loaded.config == saved["model"]
    assert torch.equal(loaded.model.head.weight, first.model.head.weight)
    second = Trainer(Toy(), config=config(max_steps=10, context_length=4), **data).resume(tmp_path / "t")
    second.fit()
    assert [r["loss"] for r in second.history if "loss" in r] == \
           [r["loss"] for r in straight.history if "loss" in r]


def test_checkpoints_saved_before_the_protocol_still_load(tmp_path):
    model = tiny_model()
    ckpt.save_checkpoint(tmp_path / "c", model)
    data = json.loads((tmp_path / "c" / ckpt.CONFIG_FILE).read_text())
    assert data["model_class"] == "llmkit.model.gpt:GPT"
    data["model_class"] = "GPT"
    del data["saved_by"]
    (tmp_path / "c" / ckpt.CONFIG_FILE).write_text(json.dumps(data))
    loaded = ckpt.load_checkpoint(tmp_path / "c")
    assert isinstance(loaded.model, GPT) and loaded.config == model.config
    assert ckpt.is_llmkit_checkpoint(tmp_path / "c")   # and may still be replaced by a save
