"""The nn tests work on tensors small enough that more than one thread only adds synchronisation (on a busy
machine, 25 times the run time); they run single-threaded and restore the setting afterwards."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
