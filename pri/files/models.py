"""Model construction and safe checkpoint loading.

Models are timm VisionTransformers: any timm ViT name with a class token (deit_*_patch16_224,
vit_base_patch32_224, ...) or one of the small ViTs below, built through timm's
VisionTransformer for 8-32 px inputs. Weights are never downloaded: they come from a local
checkpoint (.pth/.pt with ``weights_only=True``, or .safetensors), or the model stays at its
random initialisation and every result says so (``random-init``).
"""
from __future__ import annotations

import hashlib
import os

import torch
from torch import nn

from pri.core.engine import Teacher
from pri.core.vit import check_model
from pri.errors import PriError

# Small ViTs for the embedded default (Fashion-MNIST 28 px, digits 8 px, CIFAR 32 px).
SMALL_VITS: dict[str, dict] = {
    # 28 px, 1 channel, 7x7 = 49 patches: the default teacher.
    "vit_pico_patch4_28": dict(img_size=28, patch_size=4, in_chans=1, embed_dim=64, depth=4, num_heads=4),
    # 28 px, 1 channel: the default student (smaller than the teacher).
    "vit_femto_patch4_28": dict(img_size=28, patch_size=4, in_chans=1, embed_dim=64, depth=3, num_heads=2),
    # 28 px, 1 channel: a smaller student (half the width), for fast distillation on a CPU.
    "vit_atto_patch4_28": dict(img_size=28, patch_size=4, in_chans=1, embed_dim=32, depth=3, num_heads=2),
    # 8 px digits (scikit-learn), 4x4 = 16 patches.
    "vit_pico_patch2_8": dict(img_size=8, patch_size=2, in_chans=1, embed_dim=64, depth=3, num_heads=2),
    # 32 px, 3 channels (CIFAR), 8x8 = 64 patches.
    "vit_pico_patch4_32": dict(img_size=32, patch_size=4, in_chans=3, embed_dim=96, depth=4, num_heads=3),
}
SMALL_VIT_MEAN = 0.5
SMALL_VIT_STD = 0.5

SUITE_FORMAT = "pri-checkpoint/1"


def known_model(name: str) -> bool:
    import timm

    return name in SMALL_VITS or timm.is_model(name)


def native_img_size(name: str) -> int:
    """The input side a model is built with by default (small ViTs: theirs; timm: its pretrained config)."""
    if name in SMALL_VITS:
        return int(SMALL_VITS[name]["img_size"])
    import timm

    cfg = timm.models.get_pretrained_cfg(name) if timm.is_model(name) else None
    return int(cfg.input_size[-1]) if cfg is not None and getattr(cfg, "input_size", None) else 224


def build_model(name: str, num_classes: int | None = None, img_size: int | None = None,
                in_chans: int | None = None, option: str = "--model", img_option: str = "--img-size") -> nn.Module:
    """A randomly initialised timm VisionTransformer (no download); errors name ``option``."""
    import timm
    from timm.models.vision_transformer import VisionTransformer

    kw = {}
    if num_classes is not None:
        kw["num_classes"] = int(num_classes)
    if img_size is not None:
        kw["img_size"] = int(img_size)
    if in_chans is not None:
        kw["in_chans"] = int(in_chans)
    if name in SMALL_VITS:
        cfg = dict(SMALL_VITS[name])
        cfg.update(kw)
        cfg.setdefault("num_classes", 10)
        model = VisionTransformer(class_token=True, global_pool="token", **cfg)
        model.pretrained_cfg = {"mean": (SMALL_VIT_MEAN,) * cfg["in_chans"], "std": (SMALL_VIT_STD,) * cfg["in_chans"]}
    elif timm.is_model(name):
        try:
            model = timm.create_model(name, pretrained=False, **kw)
        except Exception as e:  # noqa: BLE001 - timm raises many kinds for bad kwargs
            raise PriError(option, f"timm could not build {name!r} with {kw}: {e}") from e
    else:
        small = ", ".join(sorted(SMALL_VITS))
        raise PriError(option, f"unknown model {name!r}: give a timm ViT name "
                       f"(e.g. deit_tiny_patch16_224) or one of {small}")
    pe = getattr(model, "patch_embed", None)
    p = getattr(pe, "patch_size", None)
    p = p[0] if isinstance(p, (tuple, list)) else p
    if img_size is not None and p and (int(img_size) < int(p) or int(img_size) % int(p)):
        raise PriError(img_option, f"{name} cuts {p}x{p}-px patches: give a multiple of {p} (got {img_size})")
    try:
        check_model(model)
    except ValueError as e:
        if getattr(model, "num_classes", None) == 0 and "num_classes=0" in str(e):
            raise PriError("--num-classes", f"{name} is built without a classifier head (num_classes=0): give "
                           "--num-classes N, the classes of the teacher's head") from e
        raise PriError(option, f"{name!r} cannot be inverted: {e}") from e
    return model


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_checkpoint(path: str, option: str = "--checkpoint") -> dict:
    """Read a checkpoint safely: .safetensors, or a torch file with weights_only=True (a pickle that
    would run code is refused)."""
    if path.endswith(".safetensors"):
        if not os.path.isfile(path):
            raise PriError(option, f"file not found: {path}")
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(path, device="cpu")
        except (SafetensorError, OSError, ValueError) as e:
            raise PriError(option, f"{path} is not a readable .safetensors file ({type(e).__name__})") from e
    from pri.files.io import safe_torch_load

    obj = safe_torch_load(path, option)
    if not isinstance(obj, dict):
        raise PriError(option, f"{path} holds a {type(obj).__name__}, not a state_dict")
    return obj


def head_classes(sd: dict) -> int | None:
    """The classes of a state_dict's classifier head (``head.weight``), if it has one."""
    w = sd.get("head.weight")
    return int(w.shape[0]) if isinstance(w, torch.Tensor) and w.dim() == 2 and w.shape[0] > 0 else None


def resample_pos_embed(model: nn.Module, sd: dict) -> tuple[dict, list | None]:
    """``sd`` with its absolute position embedding resampled to ``model``'s patch grid, as timm
    does when it loads a checkpoint at another image size; also the grid it came from (or None)."""
    from timm.layers import resample_abs_pos_embed

    pe, own = sd.get("pos_embed"), getattr(model, "pos_embed", None)
    if not isinstance(pe, torch.Tensor) or own is None or pe.shape == own.shape or pe.dim() != 3:
        return sd, None
    npre = 0 if model.no_embed_class else model.num_prefix_tokens
    side = int(round((pe.shape[1] - npre) ** 0.5))
    if side * side != pe.shape[1] - npre or pe.shape[2] != own.shape[2]:
        return sd, None  # not a square grid of this width: load_state_dict says what does not fit
    grid = list(model.patch_embed.grid_size)
    out = dict(sd)
    out["pos_embed"] = resample_abs_pos_embed(pe, grid, old_size=[side, side], num_prefix_tokens=npre)
    return out, [side, side]


def state_dict_of(obj: dict) -> dict:
    """The state_dict inside a checkpoint: the suite's format, DeiT's {'model': ...}, or plain."""
    for key in ("state_dict", "model", "state_dict_ema", "model_ema"):
        if key in obj and isinstance(obj[key], dict):
            return obj[key]
    return obj


def load_model(name: str, checkpoint: str | None = None, num_classes: int | None = None,
               img_size: int | None = None, in_chans: int | None = None, option: str = "--checkpoint",
               frozen: bool = True, model_option: str = "--model") -> Teacher:
    """Build ``name`` and load ``checkpoint`` into it (or keep random weights).

    A suite checkpoint (written by ``pri teacher``) carries its own architecture arguments,
    normalisation and provenance; a foreign state_dict must fit the model as built.
    """
    obj = None
    meta: dict = {}
    if checkpoint is not None:
        obj = read_checkpoint(checkpoint, option)
        if obj.get("format") == SUITE_FORMAT:
            meta = obj
            if obj.get("arch") != name:
                raise PriError(model_option, f"{checkpoint} holds a {obj.get('arch')!r}, not {name!r}: "
                               f"pass {model_option} {obj.get('arch')}")
            kw = obj.get("model_kwargs", {})
            num_classes = kw.get("num_classes", num_classes) if num_classes is None else num_classes
            img_size = kw.get("img_size", img_size) if img_size is None else img_size
            in_chans = kw.get("in_chans", in_chans) if in_chans is None else in_chans
    sd = state_dict_of(obj) if obj is not None else None
    if sd is not None and not meta and num_classes is None:
        num_classes = head_classes(sd)
    model = build_model(name, num_classes=num_classes, img_size=img_size, in_chans=in_chans, option=model_option)
    prov = {"model": name, "num_classes": int(model.num_classes),
            "img_size": int(model.patch_embed.img_size[0]), "in_chans": int(model.patch_embed.proj.in_channels)}
    if sd is not None:
        sd, resampled = resample_pos_embed(model, sd)
        if resampled:
            prov["pos_embed_resampled_from"] = resampled
        try:
            model.load_state_dict(sd, strict=True)
        except RuntimeError as e:
            first = [ln.strip() for ln in str(e).splitlines() if ln.strip()][1:3]
            raise PriError(option, f"{checkpoint} does not fit {name} as built "
                           f"(num_classes={prov['num_classes']}, img_size={prov['img_size']}): "
                           f"{'; '.join(first)[:300]}; pass the matching --num-classes/--img-size") from e
        bad = [k for k, v in model.state_dict().items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
        if bad:
            raise PriError(option, f"{checkpoint} holds NaN or infinite weights ({', '.join(bad[:3])}): a diverged or "
                           "damaged checkpoint cannot be inverted")
        prov.update(checkpoint=os.path.basename(checkpoint), sha256=sha256_file(checkpoint))
        if meta.get("provenance"):
            prov["trained"] = meta["provenance"]
    else:
        prov.update(checkpoint=None, sha256="random-init")
    cfg = getattr(model, "pretrained_cfg", None) or {}
    c = prov["in_chans"]
    mean = tuple(meta.get("mean") or cfg.get("mean") or (0.5,) * c)
    std = tuple(meta.get("std") or cfg.get("std") or (0.5,) * c)
    if len(mean) != c:
        mean, std = (sum(mean) / len(mean),) * c, (sum(std) / len(std),) * c
    prov.update(mean=list(mean), std=list(std))
    model.eval()
    if frozen:
        model.requires_grad_(False)
    conf = meta.get("test_confidence")
    return Teacher(model=model, name=name, mean=mean, std=std, provenance=prov,
                   test_confidence=conf if isinstance(conf, torch.Tensor) else None)


def save_checkpoint(path: str, model: nn.Module, name: str, mean, std, provenance: dict,
                    test_confidence: torch.Tensor | None = None) -> str:
    """Write a suite checkpoint atomically; returns its sha256."""
    obj = {
        "test_confidence": test_confidence,
        "format": SUITE_FORMAT,
        "arch": name,
        "model_kwargs": {"num_classes": int(model.num_classes), "img_size": int(model.patch_embed.img_size[0]),
                         "in_chans": int(model.patch_embed.proj.in_channels)},
        "mean": [float(m) for m in mean],
        "std": [float(s) for s in std],
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "provenance": provenance,
    }
    from pri.files.io import atomic_torch_save

    atomic_torch_save(obj, path)
    return sha256_file(path)


HUB = "hub"  # the value of a checkpoint option that means: timm's pretrained weights from the hub


FETCH_HINT = ("fetch them into the hub cache with `python -m pri.workflow.preflight --configfile FILE --fetch-hub` "
              "on a machine that reaches the hub, or give the file's path instead of 'hub'")


def hub_checkpoint(model_name: str, option: str, fetch: bool = True) -> tuple[str, str]:
    """timm's default pretrained weights for ``model_name`` as a local file: downloaded from the
    Hugging Face hub, or found in the local hub cache (HF_HUB_CACHE / HF_HOME) when the machine is
    offline; ``fetch=False`` looks in the cache only. Returns (path, hub id); a clear error naming
    ``option`` otherwise."""
    import timm
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    cfg = timm.models.get_pretrained_cfg(model_name) if model_name not in SMALL_VITS else None
    hub_id = getattr(cfg, "hf_hub_id", None)
    if not hub_id:
        raise PriError(option, f"timm knows no hub weights for {model_name!r}: give a checkpoint path instead of "
                       f"{HUB!r}")
    names = [cfg.hf_hub_filename] if getattr(cfg, "hf_hub_filename", None) else []
    last: Exception | None = None
    for fname in names + ["model.safetensors", "pytorch_model.bin"]:
        try:
            return hf_hub_download(hub_id, fname, local_files_only=not fetch), hub_id
        except EntryNotFoundError as e:  # not in this repository under this name: try the next
            last = e
        except Exception as e:  # noqa: BLE001 - offline, proxy, authentication: one clear message
            last = e
            break
    if not fetch:
        raise PriError(option, f"{hub_id} is not in the local hub cache: {FETCH_HINT}")
    first = str(last).strip().splitlines()[0][:200] if last is not None and str(last).strip() else ""
    raise PriError(option, f"could not get {hub_id} from the Hugging Face hub or its local cache "
                   f"({type(last).__name__}: {first}). Without a network, download the weights on another "
                   "machine and give the file's path instead of 'hub'")
