"""Fixtures shared by the tests in this folder."""

import pytest


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny sizes gain nothing from threads, and on a busy 2-core machine MKL/OpenMP threads
    waiting on each other made a test file take 25 s instead of 4 s."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
