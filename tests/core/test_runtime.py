"""pri.core.runtime: derived seeds, devices and the progress bar's cadence in a log file."""
from __future__ import annotations

import io

import pytest
import torch

from pri.core import runtime
from pri.errors import PriError


def test_derived_seeds_are_stable_distinct_and_in_range():
    a = runtime.derive_seed("inversion", 0, "main", 0)
    assert a == runtime.derive_seed("inversion", 0, "main", 0)
    assert a != runtime.derive_seed("inversion", 0, "main", 1) != runtime.derive_seed("inversion", 1, "main", 0)
    assert 0 <= a <= 2**63 - 1


def test_devices_are_resolved_or_refused_naming_the_option():
    assert runtime.resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(PriError) as e:
        runtime.resolve_device("tpu")
    assert e.value.option == "--device"
    if not torch.cuda.is_available():
        with pytest.raises(PriError, match="no GPU"):
            runtime.resolve_device("cuda:1")


def test_a_bar_in_a_log_file_writes_on_its_interval_only(monkeypatch):
    """Not on a terminal (a rule's log): one frame per TQDM_MININTERVAL seconds (15 by default), a
    postfix change does not force one, and tqdm's monitor thread is off. The slow end-to-end test
    (tests/workflow/test_workflow.py) watches the real clock; this one counts frames of a fast loop."""
    monkeypatch.delenv("TQDM_MININTERVAL", raising=False)
    log = io.StringIO()
    bar = runtime.progress(1000, True, "x", file=log)
    assert bar.mininterval == 15.0 and type(bar).monitor_interval == 0
    for i in range(1000):
        bar.set_postfix(loss=f"{i}")
        bar.set_postfix_str(f"active={i}")
        bar.update(1)
    frames_before_close = [f for f in log.getvalue().replace("\r", "\n").splitlines() if f.strip()]
    bar.close()
    frames = [f for f in log.getvalue().replace("\r", "\n").splitlines() if f.strip()]
    assert len(frames_before_close) == 1, frames_before_close  # the opening frame only
    assert len(frames) == 2 and "1000/1000" in frames[-1], frames
    monkeypatch.setenv("TQDM_MININTERVAL", "2")
    assert runtime.progress(10, True, "y", file=io.StringIO()).mininterval == 2.0
