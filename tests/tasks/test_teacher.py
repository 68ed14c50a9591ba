"""pri teacher: training on digits, checkpoint round trip with provenance, evaluate-only, DeiT fine-tune smoke."""
from __future__ import annotations

import json
import math
import os
import pickle

import numpy as np
import pytest
import torch
from cli_helper import main

from pri.files.io import read_timing
from pri.files.models import load_model, sha256_file
from pri.tasks.teacher import random_hflip, random_translate
from pri.tasks.train import lr_at

DIGITS_RECIPE = ["--dataset", "digits", "--model", "vit_pico_patch2_8", "--limit-train", "300", "--epochs", "30",
                 "--batch", "32", "--lr", "3e-3", "--warmup", "2", "--label-smoothing", "0", "--threads", "1",
                 "--no-progress"]


@pytest.fixture(scope="module")
def digits_teacher(tmp_path_factory):
    d = tmp_path_factory.mktemp("teacher")
    out, metrics = str(d / "t.pt"), str(d / "t.json")
    assert main(["teacher", *DIGITS_RECIPE, "--out", out, "--metrics", metrics]) == 0
    with open(metrics) as f:
        return out, json.load(f)


def test_trains_well_above_chance(digits_teacher):
    out, m = digits_teacher
    assert m["top1"] > 0.45, m["top1"]  # chance is 0.10
    assert m["test_images"] == 355 and len(m["per_class"]) == 10
    assert m["recipe"]["train_images"] == 300 and m["recipe"]["steps"] == 30 * math.ceil(300 / 32)
    assert m["versions"]["torch"] == torch.__version__ and "train_seconds" not in m  # in the timing side file
    assert read_timing(out)["train_seconds"] > 0 and read_timing(out)["eval_seconds"] > 0


def test_checkpoint_roundtrip_with_provenance(digits_teacher, tmp_path):
    out, m = digits_teacher
    assert m["sha256"] == sha256_file(out)
    t = load_model("vit_pico_patch2_8", out)
    assert t.provenance["sha256"] == m["sha256"]
    trained = t.provenance["trained"]
    assert trained["recipe"]["lr"] == 3e-3 and trained["recipe"]["optimizer"] == "AdamW"
    assert trained["test_top1"] == m["top1"] and "load_digits" in trained["test"]["source"]
    assert trained["train"]["num_images"] == 300 and trained["seed"] == 0
    assert list(t.mean) == pytest.approx(m["mean"]) and t.num_classes == 10
    # evaluate-only reproduces the accuracy from the checkpoint
    mj = str(tmp_path / "eval.json")
    assert main(["teacher", "--dataset", "digits", "--model", "vit_pico_patch2_8", "--checkpoint", out,
                 "--metrics", mj, "--no-progress"]) == 0
    with open(mj) as f:
        ev = json.load(f)
    assert ev["top1"] == pytest.approx(m["top1"]) and ev["mode"] == "evaluate" and ev["sha256"] == m["sha256"]


def test_same_seed_same_weights(tmp_path):
    args = ["teacher", "--dataset", "digits", "--model", "vit_pico_patch2_8", "--limit-train", "64",
            "--epochs", "2", "--batch", "16", "--crop-pad", "1", "--hflip", "--no-progress", "--limit-test", "50",
            "--threads", "1"]
    a, b = str(tmp_path / "a.pt"), str(tmp_path / "b.pt")
    assert main([*args, "--out", a]) == 0 and main([*args, "--out", b]) == 0
    sa = torch.load(a, weights_only=True)["state_dict"]
    sb = torch.load(b, weights_only=True)["state_dict"]
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_bad_input_names_option(tmp_path, capsys):
    assert main(["teacher", "--dataset", "nope", "--out", str(tmp_path / "x.pt")]) == 2
    assert "--dataset" in capsys.readouterr().err
    assert main(["teacher", "--dataset", "digits", "--model", "vit_pico_patch2_8"]) == 2
    assert "--out" in capsys.readouterr().err
    assert main(["teacher", "--dataset", "cifar10", "--data-root", str(tmp_path), "--out", str(tmp_path / "x.pt")]) == 2
    err = capsys.readouterr().err
    assert "--data-root" in err and str(tmp_path) in err
    assert not os.path.exists(tmp_path / "x.pt")


def test_schedule_and_augmentation():
    assert lr_at(0, 100, 10, 1.0) == pytest.approx(0.1)
    assert lr_at(9, 100, 10, 1.0) == pytest.approx(1.0)
    assert lr_at(55, 100, 10, 1.0) == pytest.approx(0.5)
    assert lr_at(100, 100, 10, 1.0) == pytest.approx(0.0)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(16, 1, 8, 8)
    y = random_translate(x, 2, g)
    assert y.shape == x.shape
    for i in range(16):  # every output is a zero-filled shift of its input
        found = False
        for dy in range(-2, 3):
            for dx in range(-2, 3):
                ref = torch.zeros(1, 12, 12)
                ref[:, 2 + dy:10 + dy, 2 + dx:10 + dx] = x[i]
                found |= torch.equal(ref[:, 2:10, 2:10], y[i])
        assert found
    f = random_hflip(x, g)
    assert all(torch.equal(f[i], x[i]) or torch.equal(f[i], x[i].flip(-1)) for i in range(16))


def _fake_cifar10(root, n=4, seed=0):
    rng = np.random.default_rng(seed)
    os.makedirs(root, exist_ok=True)
    for fn in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        obj = {b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
               b"labels": rng.integers(0, 10, size=n).tolist()}
        with open(os.path.join(root, fn), "wb") as f:
            pickle.dump(obj, f, protocol=2)


def test_deit_finetune_smoke(tmp_path):
    """The paper-scale recipe on CPU: a random-weight ImageNet-shaped DeiT-Ti, new head, CIFAR at 224 px."""
    import timm

    torch.manual_seed(0)
    imnet = timm.create_model("deit_tiny_patch16_224", pretrained=False)
    init = str(tmp_path / "deit_tiny_imagenet.pth")
    torch.save({"model": imnet.state_dict()}, init)
    data = str(tmp_path / "cifar")
    _fake_cifar10(data, n=2)  # 10 training images, 2 test images
    out, mj = str(tmp_path / "t.pt"), str(tmp_path / "t.json")
    rc = main(["teacher", "--dataset", "cifar10", "--data-root", data, "--model", "deit_tiny_patch16_224",
               "--init-checkpoint", init, "--epochs", "1", "--batch", "2", "--limit-train", "4", "--lr", "1e-4",
               "--warmup", "0", "--limit-test", "2", "--eval-batch", "2", "--threads", "1", "--no-progress", "--out", out,
               "--metrics", mj])
    assert rc == 0
    with open(mj) as f:
        m = json.load(f)
    assert m["recipe"]["mode"] == "fine-tune" and m["recipe"]["img_size"] == 224 and m["steps"] == 2
    assert m["recipe"]["init_checkpoint"]["sha256"] == sha256_file(init)
    assert m["mean"] == pytest.approx([0.485, 0.456, 0.406])  # the ImageNet normalisation of the init weights
    t = load_model("deit_tiny_patch16_224", out)
    assert t.num_classes == 10 and t.model.head.weight.shape == (10, 192)
    # blocks started from the ImageNet weights (they moved only a little at lr 1e-4)
    w0 = imnet.blocks[0].attn.qkv.weight
    w1 = t.model.blocks[0].attn.qkv.weight
    assert (w1 - w0).abs().max() < 0.05 and not torch.equal(w0, w1)


def test_test_images_are_loaded_at_the_models_native_size():
    """Test images are read (ImageFolder: resized and cropped) at the size the model is built with,
    also for timm models that are not 224 px."""
    from pri.files.models import build_model, native_img_size

    for name in ("vit_pico_patch4_28", "deit_tiny_patch16_224", "deit_base_patch16_384"):
        assert native_img_size(name) == build_model(name).patch_embed.img_size[0]
