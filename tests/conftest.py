"""Fixtures shared by the test modules."""
from __future__ import annotations

import os

import pytest

FMNIST_ROOT = "/usr/share/datasets/fashion-mnist"  # where Debian's dataset-fashion-mnist puts it


@pytest.fixture
def fmnist_root() -> str:
    """Fashion-MNIST's folder; the test is skipped, saying how to install it, where it is missing."""
    if not os.path.isdir(FMNIST_ROOT):
        pytest.skip("dataset-fashion-mnist not installed (apt-get install dataset-fashion-mnist)")
    return FMNIST_ROOT
