"""The thread choice: the rule, its override, and applying it once (load faked where it matters)."""

import os

import pytest
import torch

from llmkit import device as dev
from llmkit import threads


@pytest.mark.parametrize("cores, load, default, expected", [
    (2, 0.0, 2, 2),     # idle laptop: PyTorch's default
    (2, 0.4, 2, 2),     # a little background noise is no reason to halve the threads
    (2, 1.0, 2, 1),     # one busy program: leave it its core
    (2, 2.0, 2, 1),     # two busy programs: still one thread, never zero
    (2, 7.5, 2, 1),
    (16, 4.0, 8, 8),    # never above PyTorch's default (one per physical core)
    (16, 12.0, 8, 4),
])
def test_thread_choice_leaves_busy_cores_alone(monkeypatch, cores, load, default, expected):
    monkeypatch.delenv(threads.THREADS_ENV, raising=False)
    choice = threads.thread_choice(cores=cores, load=load, default=default)
    assert choice.threads == threads.choose_threads(cores, load, default) == expected
    assert f"{cores} usable cores" in choice.reason


def test_thread_override_and_its_mistakes(monkeypatch):
    monkeypatch.setenv(threads.THREADS_ENV, "3")
    assert threads.choose_threads(cores=2, load=2.0, default=2) == 3
    for wrong in ("0", "two", "-1", "1.5"):
        monkeypatch.setenv(threads.THREADS_ENV, wrong)
        with pytest.raises(ValueError, match="whole number"):
            threads.choose_threads()


def test_other_load_is_at_least_the_load_average():
    load = threads.other_load()
    assert load >= 0.0 and load >= os.getloadavg()[0] - 0.5   # the average can move meanwhile
    assert 1 <= threads.usable_cores() <= (os.cpu_count() or 1)


@pytest.fixture
def fresh_threads(monkeypatch):
    """Thread state as in a new process; the real thread count is restored afterwards."""
    before = torch.get_num_threads()
    monkeypatch.setattr(threads, "_threads_chosen", False)
    monkeypatch.setattr(threads, "_STARTING_THREADS", before)
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", threads.THREADS_ENV):
        monkeypatch.delenv(name, raising=False)
    yield before
    torch.set_num_threads(before)


def test_pick_device_applies_the_choice_once(fresh_threads, monkeypatch):
    monkeypatch.setattr(threads, "other_load", lambda: 99.0)   # a very busy machine: 1 thread
    assert dev.pick_device("cpu").type == "cpu"
    assert torch.get_num_threads() == 1
    torch.set_num_threads(2)
    dev.pick_device("cpu")          # chosen once per process: a later call changes nothing
    assert torch.get_num_threads() == 2


def test_threads_set_by_hand_are_kept(fresh_threads, monkeypatch):
    monkeypatch.setattr(threads, "other_load", lambda: 99.0)
    monkeypatch.setattr(threads, "_STARTING_THREADS", fresh_threads + 1)   # changed since import
    assert threads.use_chosen_threads() is None
    assert torch.get_num_threads() == fresh_threads
    monkeypatch.setattr(threads, "_STARTING_THREADS", fresh_threads)
    monkeypatch.setenv("OMP_NUM_THREADS", str(fresh_threads))
    assert threads.use_chosen_threads(force=True) is None
    monkeypatch.setenv(threads.THREADS_ENV, "1")   # asking llmkit explicitly wins
    assert threads.use_chosen_threads(force=True).threads == 1 == torch.get_num_threads()
