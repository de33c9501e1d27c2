"""How a run shares a machine's cores: the fetch makes its views in a thread of lower priority
than the training step."""

from __future__ import annotations

import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from adasim_ray.train.fetcher import (
    FETCH_NICENESS,
    _fetch_thread_setup,
    lower_this_threads_priority,
)

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="a thread's own niceness is a Linux feature")


def _own_niceness() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


@linux_only
def test_a_threads_priority_is_lowered_for_that_thread_only():
    before = _own_niceness()
    with ThreadPoolExecutor(1) as pool:
        inside = pool.submit(lambda: (lower_this_threads_priority(FETCH_NICENESS),
                                      _own_niceness())[1]).result()
    assert inside == max(before, FETCH_NICENESS) == FETCH_NICENESS
    assert _own_niceness() == before  # the calling thread, and so the process, keep theirs


@linux_only
def test_a_thread_already_lower_keeps_its_priority():
    with ThreadPoolExecutor(1) as pool:
        def twice():
            lower_this_threads_priority(FETCH_NICENESS)
            lower_this_threads_priority(5)  # never raises a priority (only root may)
            return _own_niceness()

        assert pool.submit(twice).result() == FETCH_NICENESS


@linux_only
def test_the_fetch_thread_runs_one_torch_thread_at_the_fetch_niceness():
    threads_before = torch.get_num_threads()
    with ThreadPoolExecutor(1, initializer=_fetch_thread_setup) as pool:
        inside = pool.submit(lambda: (torch.get_num_threads(), _own_niceness())).result()
    assert inside == (1, FETCH_NICENESS)
    assert torch.get_num_threads() == threads_before
