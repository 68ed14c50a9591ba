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


def config_dict(base: str = "test.yaml", **changes) -> dict:
    """A config of config/ with dotted keys changed (``**{"inversion.images": 8}``)."""
    from pathlib import Path

    import yaml

    cfg = yaml.safe_load((Path(__file__).resolve().parents[1] / "config" / base).read_text())
    for dotted, value in changes.items():
        node = cfg
        *parents, last = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    return cfg
