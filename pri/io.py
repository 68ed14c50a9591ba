"""Atomic writes (every output appears complete under its final name, or not at all), the
runtime set-up the commands share (threads, device, bf16 autocast), provenance and progress."""
from __future__ import annotations

import json
import os
import tempfile

import torch

from .errors import PriError


def resolve_device(device: str) -> torch.device:
    """auto | cpu | cuda[:N] -> a torch.device; a clear error when CUDA is asked for but absent."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise PriError("--device", "CUDA was asked for but no GPU is visible to torch; use --device cpu "
                           "(or auto)")
        return torch.device(device)
    if device == "cpu":
        return torch.device("cpu")
    raise PriError("--device", f"unknown device {device!r}: choose auto, cpu or cuda")


def set_threads(threads: int | None) -> None:
    """torch's CPU threads (None: torch's own choice)."""
    if threads is not None:
        if threads < 1:
            raise PriError("--threads", f"must be >= 1, got {threads}")
        torch.set_num_threads(threads)


def setup_runtime(threads: int | None, device: str, amp: str = "off") -> tuple[torch.device, bool]:
    """Threads, device, and whether bf16 autocast is on (amp: on | off | auto = on for CUDA)."""
    set_threads(threads)
    dev = resolve_device(device)
    return dev, amp == "on" or (amp == "auto" and dev.type == "cuda")


def _tmp_for(path: str) -> str:
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".part", dir=d)
    os.close(fd)
    return tmp


def atomic_torch_save(obj, path: str) -> None:
    tmp = _tmp_for(path)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def atomic_write_text(path: str, text: str) -> None:
    tmp = _tmp_for(path)
    try:
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def atomic_write_json(path: str, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def versions() -> dict:
    import platform

    import timm

    return {"torch": str(torch.__version__), "timm": str(timm.__version__), "python": str(platform.python_version())}


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform

    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def progress(total, enabled=True, desc=None, **kw):
    """A tqdm progress bar. On a terminal it refreshes every second; in a log file (a workflow
    rule) it writes a line every TQDM_MININTERVAL seconds (default 15) so logs stay readable."""
    import sys

    from tqdm.auto import tqdm

    every = float(os.environ.get("TQDM_MININTERVAL", 1.0 if sys.stderr.isatty() else 15.0))
    kw.setdefault("dynamic_ncols", True)
    return tqdm(total=total, disable=not enabled, desc=desc, mininterval=every, **kw)
