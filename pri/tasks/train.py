"""What training a teacher and distilling a student share: the optimiser (timm's parameter groups:
no weight decay on norms, biases, position embedding and CLS), the learning-rate schedule (linear
warm-up, then cosine to 0, stepped every iteration), evaluation on real images and device
synchronisation."""
from __future__ import annotations

import math

import torch

from pri.core.runtime import progress as progress_bar
from pri.errors import PriError

OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("cosine", "constant")


def make_optimizer(model: torch.nn.Module, name: str, lr: float, weight_decay: float, momentum: float = 0.9,
                   option: str = "--optimizer") -> torch.optim.Optimizer:
    """AdamW (betas 0.9, 0.999) or SGD with momentum over the trainable parameters, weight decay on
    weight matrices only (timm's ``param_groups_weight_decay``)."""
    from timm.optim import param_groups_weight_decay

    skip = model.no_weight_decay() if hasattr(model, "no_weight_decay") else ()
    groups = param_groups_weight_decay(model, weight_decay, no_weight_decay_list=skip)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999))
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum)
    raise PriError(option, f"unknown optimizer {name!r}: choose {' or '.join(OPTIMIZERS)}")


def lr_at(step: int, total: int, warmup: int, peak: float, schedule: str = "cosine") -> float:
    """Learning rate of step ``step`` (0-based) of ``total``: linear warm-up over ``warmup`` steps
    reaching ``peak`` at step ``warmup - 1``, then cosine from ``peak`` to 0 at ``total``
    (``constant``: ``peak`` after the warm-up)."""
    if warmup > 0 and step < warmup:
        return peak * (step + 1) / warmup
    if schedule == "constant":
        return peak
    t = (step - warmup) / max(1, total - warmup)
    return 0.5 * peak * (1.0 + math.cos(math.pi * min(1.0, t)))


def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    for g in opt.param_groups:
        g["lr"] = lr


@torch.no_grad()
def evaluate(model, images, labels, num_classes: int, img_size: int, mean, std, device, batch: int = 512,
             amp: bool = False, workers: int = 0, progress: bool = False, forward=None) -> dict:
    """Dense top-1, top-5, per-class top-1, each image's max-softmax confidence, whether it is
    classified correctly (``correct``) and its logits (``logits``), in the order of ``images``, of ``model`` on (images in
    [0, 1], labels).

    ``forward(x) -> logits`` replaces ``model(x)`` (e.g. a fake-quantised forward); images are
    resized to ``img_size`` and normalised with ``mean``/``std`` per batch."""
    from pri.files.data import batches, prepare

    was_training = model.training
    model.eval()
    fwd = forward or model
    correct = torch.zeros(num_classes, dtype=torch.long)
    count = torch.zeros(num_classes, dtype=torch.long)
    top5, conf, hits, outs = 0, [], [], []
    it = batches(images, labels, batch, num_workers=workers)
    for x, y in progress_bar(math.ceil(len(labels) / batch), progress, "eval", iterable=it, leave=False):
        x = prepare(x.to(device), img_size, mean, std)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            logits = fwd(x).float().cpu()
        pred = logits.argmax(-1)
        conf.append(logits.softmax(-1).max(-1).values)
        hits.append(pred == y)
        outs.append(logits)
        k = min(5, logits.shape[-1])
        top5 += int((logits.topk(k, dim=-1).indices == y[:, None]).any(-1).sum())
        count += torch.bincount(y, minlength=num_classes)[:num_classes]
        correct += torch.bincount(y[pred == y], minlength=num_classes)[:num_classes]
    model.train(was_training)
    n = int(count.sum())
    per_class = [(float(c) / float(k)) if k else None for c, k in zip(correct.tolist(), count.tolist())]
    return {"top1": float(correct.sum()) / max(1, n), "top5": top5 / max(1, n), "per_class": per_class,
            "num_images": n, "confidence": torch.cat(conf) if conf else torch.empty(0),
            "correct": torch.cat(hits) if hits else torch.empty(0, dtype=torch.bool),
            "logits": torch.cat(outs) if outs else torch.empty(0, num_classes)}
