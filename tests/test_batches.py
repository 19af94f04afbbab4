"""Batching: windows and their shifted targets, cut in one gather."""

import numpy as np
import pytest
import torch

from llmkit.data.batches import as_token_tensor, get_batch, split_train_val


def test_split_is_by_position():
    ids = torch.arange(100)
    train, val = split_train_val(ids, val_fraction=0.1)
    assert torch.equal(train, torch.arange(90)) and torch.equal(val, torch.arange(90, 100))


def test_batch_targets_are_inputs_shifted_by_one():
    ids = torch.arange(1000)  # token i has value i, so windows are easy to check
    x, y = get_batch(ids, batch_size=8, context_length=16, generator=torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (8, 16) and x.dtype == torch.long
    # Brute force: each row is a run of consecutive ids, and y is x + 1.
    for row_x, row_y in zip(x.tolist(), y.tolist()):
        assert row_x == list(range(row_x[0], row_x[0] + 16))
        assert row_y == [v + 1 for v in row_x]


def test_batches_repeat_with_a_seeded_generator_and_cover_the_stream():
    ids = torch.arange(50)
    a = get_batch(ids, 4, 8, generator=torch.Generator().manual_seed(1))
    b = get_batch(ids, 4, 8, generator=torch.Generator().manual_seed(1))
    assert all(torch.equal(p, q) for p, q in zip(a, b))
    x, y = get_batch(ids, 2000, 8, generator=torch.Generator().manual_seed(2))
    assert x[:, 0].min() == 0 and y[:, -1].max() == 49  # first and last tokens are reachable


def test_numpy_memmap_and_lists_become_int64():
    array = np.arange(10, dtype=np.uint16)
    assert as_token_tensor(array).dtype == torch.long
    assert as_token_tensor([1, 2, 3]).tolist() == [1, 2, 3]


def test_too_short_stream_is_a_clear_error():
    with pytest.raises(ValueError, match="context_length"):
        get_batch(torch.arange(5), 2, 8)
    with pytest.raises(ValueError, match="one flat sequence"):
        as_token_tensor(torch.zeros(2, 3))


def test_a_batch_is_one_buffer_with_x_and_y_as_views():
    ids = torch.arange(100)
    x, y = get_batch(ids, 4, 8, generator=torch.Generator().manual_seed(0))
    # One contiguous gather holds both, so a device copy moves one buffer once.
    assert x.untyped_storage().data_ptr() == y.untyped_storage().data_ptr()
    assert torch.equal(x[:, 1:], y[:, :-1])


def test_float_ids_are_refused_not_truncated():
    for ids in (torch.tensor([1.0, 2.7]), np.array([1.5, 2.0]), [1, 2.7]):
        with pytest.raises(ValueError, match="token ids must be integers"):
            as_token_tensor(ids)
    assert as_token_tensor(np.array([1, 2], dtype=np.int32)).dtype == torch.int64
    assert as_token_tensor([]).shape == (0,)
