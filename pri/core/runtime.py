"""What every job shares at run time, and nothing it reads or writes: derived seeds, threads and
device (with bf16 autocast), device synchronisation, the versions and device recorded as
provenance, a weights hash that does not depend on how a file was written, and progress bars."""
from __future__ import annotations

import os

import torch

from pri.checks import SEED_MAX
from pri.errors import PriError


def derive_seed(*parts) -> int:
    """A 63-bit seed derived from ``parts`` (ints and strings) by hashing: distinct parts give
    unrelated streams (unlike seed + 1), the same parts always the same seed."""
    import hashlib

    h = hashlib.sha256("/".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(h[:8], "big") & SEED_MAX


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


def versions() -> dict:
    import platform

    import timm

    return {"torch": str(torch.__version__), "timm": str(timm.__version__), "python": str(platform.python_version())}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform

    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def progress(total, enabled=True, desc=None, **kw):
    """A tqdm progress bar. On a terminal it refreshes every second; in a log file (a workflow
    rule) it writes a line at most every TQDM_MININTERVAL seconds (default 15) so logs stay
    readable: a postfix update then waits for the next regular refresh instead of forcing one."""
    import sys

    from tqdm.auto import tqdm

    tty = sys.stderr.isatty()
    every = float(os.environ.get("TQDM_MININTERVAL", 1.0 if tty else 15.0))

    class Bar(tqdm):
        # tqdm's monitor thread forces a refresh of a bar quiet for 10 s: in a log file that is
        # a second line within a second of a regular one
        monitor_interval = 10 if tty else 0

        def set_postfix(self, ordered_dict=None, refresh=True, **kwargs):
            super().set_postfix(ordered_dict, refresh=refresh and tty, **kwargs)

        def set_postfix_str(self, s="", refresh=True):
            super().set_postfix_str(s, refresh=refresh and tty)

    kw.setdefault("dynamic_ncols", True)
    return Bar(total=total, disable=not enabled, desc=desc, mininterval=every, **kw)


def weights_sha256(model_or_state_dict) -> str:
    """The sha256 of a model's weights (its state_dict): every tensor's name, dtype, shape and bytes,
    in sorted key order. Unlike a file's hash it does not change with how (or when) the file was
    written, so it says whether two teachers are the same."""
    import hashlib

    sd = model_or_state_dict.state_dict() if hasattr(model_or_state_dict, "state_dict") else model_or_state_dict
    h = hashlib.sha256()
    for k in sorted(sd):
        v = sd[k]
        if not isinstance(v, torch.Tensor):
            continue
        t = v.detach().cpu().contiguous()
        h.update(f"{k}\t{t.dtype}\t{tuple(t.shape)}\n".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()
