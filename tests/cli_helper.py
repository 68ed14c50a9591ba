"""Shared by the tests of the pri command."""
import torch

from pri.cli import main as _main


def main(argv):
    """pri's CLI in-process; --threads sets torch's global thread count, so put it back afterwards."""
    n = torch.get_num_threads()
    try:
        return _main(argv)
    finally:
        torch.set_num_threads(n)
