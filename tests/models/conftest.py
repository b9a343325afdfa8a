"""Model tests run torch single-threaded: on a shared 2-core machine, OpenMP threads that wait on
each other under contention make small forward/backward passes 10-20x slower."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def _single_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
