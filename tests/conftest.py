"""Fixtures shared by the test modules."""
from __future__ import annotations

import os

import pytest
import torch

FMNIST_ROOT = "/usr/share/datasets/fashion-mnist"  # where Debian's dataset-fashion-mnist puts it


@pytest.fixture
def fmnist_root() -> str:
    """Fashion-MNIST's folder; the test is skipped, saying how to install it, where it is missing."""
    if not os.path.isdir(FMNIST_ROOT):
        pytest.skip("dataset-fashion-mnist not installed (apt-get install dataset-fashion-mnist)")
    return FMNIST_ROOT


@pytest.fixture
def one_thread():
    """One torch thread for the test (as the workflow runs its jobs), then the old count back: on a
    busy 2-core machine more threads oversubscribe the cores and small ops slow down tenfold."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def pytest_addoption(parser):
    parser.addoption("--all", action="store_true",
                     help="also run the slow end-to-end Snakemake tests and the Slurm test (what CI runs)")


def pytest_collection_modifyitems(config, items):
    """`pytest` runs the fast set; `pytest --all` (CI) or an explicit -m adds the slow and Slurm tests."""
    if config.getoption("--all") or config.option.markexpr:
        return
    slow = [i for i in items if i.get_closest_marker("slow") or i.get_closest_marker("slurm")]
    if slow:
        config.hook.pytest_deselected(items=slow)
        items[:] = [i for i in items if i not in slow]
