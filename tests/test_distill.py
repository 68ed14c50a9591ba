"""pri distill: masked feeding, bucketing by mask size, determinism, budgets, class filter, confidence."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from cli_helper import main

from pri.distill import BucketSampler, kd_loss
from pri.engine import Augment
from pri.models import build_model, load_model, save_checkpoint

MODEL = "vit_pico_patch2_8"  # 8 px digits, 4x4 = 16 patches of 2 px
GRID, P, N = 4, 2, 16
TIMING = ("train_seconds", "wall_seconds")


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    """A suite checkpoint of a (random-weight) digits teacher; its provenance names the dataset."""
    d = tmp_path_factory.mktemp("teacher")
    torch.manual_seed(0)
    model = build_model(MODEL, num_classes=10)
    path = str(d / "teacher.pt")
    save_checkpoint(path, model, MODEL, (0.3,), (0.4,), {"recipe": {"dataset": "digits"}, "test_top1": None})
    return path, load_model(MODEL, path).provenance


def pixel_mask(mask: torch.Tensor) -> torch.Tensor:
    """[M, N] patch mask -> [M, 1, 8, 8] pixel mask."""
    m = mask.view(-1, 1, GRID, GRID)
    return m.repeat_interleave(P, 2).repeat_interleave(P, 3)


def make_pool(path, teacher_prov, ks=(4, 8, 16), per_k=6, seed=0, labels=None, fill_outside=False, method="pri"):
    g = torch.Generator().manual_seed(seed)
    masks = []
    for k in ks:
        for _ in range(per_k):
            m = torch.zeros(N, dtype=torch.bool)
            m[torch.randperm(N, generator=g)[:k]] = True
            masks.append(m)
    masks = torch.stack(masks)
    M = len(masks)
    images = torch.randint(0, 256, (M, 1, 8, 8), generator=g, dtype=torch.uint8)
    inside = pixel_mask(masks)
    images = torch.where(inside, images, torch.zeros_like(images))
    if fill_outside:  # garbage where the mask is off: must not matter
        noise = torch.randint(1, 256, images.shape, generator=torch.Generator().manual_seed(seed + 99), dtype=torch.uint8)
        images = torch.where(inside, images, noise)
    if labels is None:
        labels = torch.arange(M) % 10
    ledger = {"method": method, "v": 4, "score": "cls_attn", "iterations": 24, "images_out": M, "seed": seed,
              "active_per_iteration": list(range(200)), "teacher": teacher_prov}
    torch.save({"images": images, "masks": masks, "labels": torch.as_tensor(labels, dtype=torch.int64),
                "trajectory": torch.arange(M), "stage": torch.zeros(M, dtype=torch.int64), "ledger": ledger}, path)
    return path


def distill(tmp_path, teacher_path, pools, *extra, name="m.json"):
    out = str(tmp_path / name)
    args = ["distill", "--pool", *pools, "--teacher", teacher_path, "--student", MODEL, "--dataset", "digits", "--steps", "12",
            "--batch", "8", "--warmup", "2", "--limit-test", "60", "--threads", "1", "--no-progress",
            "--out", out, *extra]
    rc = main(args)
    if rc != 0:
        return rc, None
    with open(out) as f:
        return rc, json.load(f)


def strip(m):
    return {k: v for k, v in m.items() if k not in TIMING + ("pools",)}


def test_only_masked_patches_matter(tmp_path, teacher):
    tpath, tprov = teacher
    a = make_pool(str(tmp_path / "a.pt"), tprov)
    b = make_pool(str(tmp_path / "b.pt"), tprov, fill_outside=True)
    pa, pb = torch.load(a, weights_only=True), torch.load(b, weights_only=True)
    assert not torch.equal(pa["images"], pb["images"])
    _, ma = distill(tmp_path, tpath, [a], name="a.json")
    _, mb = distill(tmp_path, tpath, [b], name="b.json")
    for key in ("top1", "per_class", "history", "confidence", "final_loss_ema", "label_counts", "mask_sizes"):
        assert ma[key] == mb[key], key  # bit for bit
    assert ma["pools"][0]["sha256"] != mb["pools"][0]["sha256"]


def test_mixed_mask_sizes_and_metrics(tmp_path, teacher):
    tpath, tprov = teacher
    pool = make_pool(str(tmp_path / "p.pt"), tprov, ks=(3, 5, 16), per_k=(7))
    rc, m = distill(tmp_path, tpath, [pool], "--eval-every", "5")
    assert rc == 0
    assert m["mask_sizes"] == {"3": 7, "5": 7, "16": 7} and m["images"] == 21 and m["steps"] == 12
    assert [h["step"] for h in m["history"]] == [5, 10, 12]
    assert m["top1"] == m["history"][-1]["top1"] and m["top1_best"] == max(h["top1"] for h in m["history"])
    assert len(m["per_class"]) == 10 and m["method"] == "pri" and m["pool_params"]["v"] == 4
    assert "active_per_iteration" not in m["pool_params"]  # long series are left out
    assert m["teacher"]["provenance"]["sha256"] == tprov["sha256"]
    assert m["student"]["name"] == MODEL and m["student"]["provenance"]["init"] == "random"
    conf = m["confidence"]
    assert conf["synthetic"]["n"] == 21 and conf["real_test"]["n"] == 60
    assert conf["wasserstein1"] >= 0 and 0 <= conf["ks"] <= 1
    hp = m["hyperparameters"]
    assert hp["temperature"] == 4.0 and hp["optimizer"] == "adamw" and hp["seed"] == 0
    assert m["versions"]["torch"] == torch.__version__ and m["wall_seconds"] > 0


def test_same_seed_identical_other_seed_differs(tmp_path, teacher):
    tpath, tprov = teacher
    pool = make_pool(str(tmp_path / "p.pt"), tprov)
    _, m1 = distill(tmp_path, tpath, [pool], "--images", "12", name="1.json")
    _, m2 = distill(tmp_path, tpath, [pool], "--images", "12", name="2.json")
    _, m3 = distill(tmp_path, tpath, [pool], "--images", "12", "--seed", "1", name="3.json")
    assert strip(m1) == strip(m2)
    assert m1["final_loss_ema"] != m3["final_loss_ema"]


def test_images_budget(tmp_path, teacher, capsys):
    tpath, tprov = teacher
    pool = make_pool(str(tmp_path / "p.pt"), tprov)  # 18 images
    rc, _ = distill(tmp_path, tpath, [pool], "--images", "19")
    assert rc == 2 and "--images" in capsys.readouterr().err
    # two pools are concatenated
    pool2 = make_pool(str(tmp_path / "q.pt"), tprov, seed=1)
    rc, m = distill(tmp_path, tpath, [pool, pool2], "--images", "30")
    assert rc == 0 and m["images"] == 30 and m["images_available"] == 36 and len(m["pools"]) == 2
    assert sum(m["label_counts"]) == 30


def test_classes_filter(tmp_path, teacher, capsys):
    tpath, tprov = teacher
    labels = [3] * 5 + [7] * 13
    pool = make_pool(str(tmp_path / "p.pt"), tprov, labels=labels)
    rc, m = distill(tmp_path, tpath, [pool], "--classes", "3")
    assert rc == 0 and m["images"] == 5 and m["images_available"] == 5 and m["classes"] == [3]
    assert m["label_counts"][3] == 5 and sum(m["label_counts"]) == 5
    assert len(m["per_class"]) == 10  # still evaluated on every class
    rc, _ = distill(tmp_path, tpath, [pool], "--classes", "3", "--images", "6")
    assert rc == 2 and "--images" in capsys.readouterr().err
    rc, _ = distill(tmp_path, tpath, [pool], "--classes", "12")
    assert rc == 2 and "--classes" in capsys.readouterr().err


def test_bad_inputs_name_options(tmp_path, teacher, capsys):
    tpath, tprov = teacher
    pool = make_pool(str(tmp_path / "p.pt"), tprov)
    other = dict(tprov, sha256="0" * 64)
    foreign = make_pool(str(tmp_path / "f.pt"), other)
    rc, _ = distill(tmp_path, tpath, [foreign])
    assert rc == 2 and "--teacher" in capsys.readouterr().err
    rc, _ = distill(tmp_path, tpath, [foreign], "--allow-other-teacher")
    assert rc == 0
    rc, _ = distill(tmp_path, tpath, [str(tmp_path / "missing.pt")])
    assert rc == 2 and "--pool" in capsys.readouterr().err
    torch.save({"images": torch.zeros(2, 1, 8, 8)}, tmp_path / "notpool.pt")
    rc, _ = distill(tmp_path, tpath, [str(tmp_path / "notpool.pt")])
    assert rc == 2 and "--pool" in capsys.readouterr().err
    rc, _ = distill(tmp_path, tpath, [pool], "--head-only")
    assert rc == 2 and "--head-only" in capsys.readouterr().err
    rc, _ = distill(tmp_path, tpath, [pool], "--student", "vit_femto_patch4_28")
    assert rc == 2 and "--student" in capsys.readouterr().err
    rc, _ = distill(tmp_path, tpath, [pool], "--student", "not_a_vit")
    err = capsys.readouterr().err
    assert rc == 2 and "--student: unknown model 'not_a_vit'" in err, err
    rc, _ = distill(tmp_path, tpath, [pool], "--teacher-model", "vit_femto_patch4_28")
    err = capsys.readouterr().err
    assert rc == 2 and "--teacher-model" in err and "--model" not in err, err


def test_dataset_from_teacher_provenance(tmp_path, teacher):
    tpath, tprov = teacher
    pool = make_pool(str(tmp_path / "p.pt"), tprov, ks=(16,))
    out = str(tmp_path / "m.json")
    assert main(["distill", "--pool", pool, "--teacher", tpath, "--student", MODEL, "--steps", "2", "--batch", "4", "--threads", "1",
                 "--no-progress", "--limit-test", "10", "--augment", "--out", out]) == 0
    with open(out) as f:
        m = json.load(f)
    assert m["test"]["dataset"] == "digits" and m["hyperparameters"]["augment"] is True


def test_head_only_trains_only_the_head(tmp_path, teacher):
    tpath, tprov = teacher
    torch.manual_seed(1)
    pre = build_model(MODEL, num_classes=10)
    spath = str(tmp_path / "student.pt")
    save_checkpoint(spath, pre, MODEL, (0.3,), (0.4,), {"pretrained": "test"})
    pool = make_pool(str(tmp_path / "p.pt"), tprov)
    sout = str(tmp_path / "s_out.pt")
    rc, m = distill(tmp_path, tpath, [pool], "--student", MODEL, "--student-checkpoint", spath, "--head-only",
                    "--optimizer", "sgd", "--lr", "0.1", "--momentum", "0.9", "--weight-decay", "1e-4",
                    "--temperature", "20", "--eval-every", "4", "--student-out", sout)
    assert rc == 0
    assert m["student"]["provenance"]["new_head"] is True
    assert m["student"]["provenance"]["trainable_params"] == 64 * 10 + 10
    after = torch.load(sout, weights_only=True)["state_dict"]
    before = pre.state_dict()
    for k, v in before.items():
        if k.startswith("head."):
            assert not torch.equal(v, after[k]), k
        else:
            assert torch.equal(v, after[k]), k


def test_bucket_sampler():
    ks = torch.tensor([4] * 30 + [8] * 10 + [16] * 60)
    s = BucketSampler(ks, 8, torch.Generator().manual_seed(0))
    counts = {4: 0, 8: 0, 16: 0}
    seen = {4: set(), 8: set(), 16: set()}
    for _ in range(600):
        k, b = s.next()
        assert len(b) == 8 and bool((ks[b] == k).all()) and len(set(b.tolist())) == 8
        counts[k] += 1
        seen[k] |= set(b.tolist())
    assert counts[16] > counts[4] > counts[8]
    assert abs(counts[16] / 600 - 0.6) < 0.08 and abs(counts[4] / 600 - 0.3) < 0.08
    assert all(len(seen[k]) == int((ks == k).sum()) for k in seen)  # every image is visited
    s2 = BucketSampler(ks, 8, torch.Generator().manual_seed(0))
    s3 = BucketSampler(ks, 8, torch.Generator().manual_seed(0))
    assert all(torch.equal(s2.next()[1], s3.next()[1]) for _ in range(20))
    small = BucketSampler(torch.tensor([5, 5, 5]), 8, torch.Generator().manual_seed(0))
    assert len(small.next()[1]) == 3


def test_augment_moves_the_mask_with_the_pixels():
    g = torch.Generator().manual_seed(0)
    masks = torch.zeros(8, N, dtype=torch.bool)
    for i in range(8):
        masks[i, torch.randperm(N, generator=g)[:5]] = True
    x = torch.randint(1, 256, (8, 1, 8, 8), dtype=torch.uint8, generator=g)
    x = torch.where(pixel_mask(masks), x, torch.zeros_like(x))
    aug = Augment(8, 8, P, 0.0, True, "cpu", shift=1)  # the inversion engine's roll-and-flip
    combo = aug.draw(8, g)
    xa, ma = aug.apply_each(x, combo), aug.move_masks(masks, combo)
    assert (ma.sum(1) == 5).all()
    inside = pixel_mask(ma)
    assert (xa[~inside] == 0).all() and (xa[inside] > 0).all()
    assert sorted(xa.flatten().tolist()) == sorted(x.flatten().tolist())
    # each image is one roll by whole patches (at most 1 per axis), maybe flipped, and most moved
    moved = 0
    for i in range(8):
        cands = [torch.roll(x[i], (dy * P, dx * P), (-2, -1)) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
        cands += [c.flip(-1) for c in cands]
        assert any(torch.equal(xa[i], c) for c in cands)
        moved += not torch.equal(xa[i], x[i])
    assert moved >= 4


def test_kd_loss():
    s = torch.randn(4, 10)
    assert float(kd_loss(s, s, 4.0)) == pytest.approx(0.0, abs=1e-6)
    t = torch.randn(4, 10)
    T = 3.0
    pt = (t / T).softmax(-1)
    want = (pt * (pt.log() - (s / T).log_softmax(-1))).sum(-1).mean() * T * T
    assert float(kd_loss(s, t, T)) == pytest.approx(float(want), rel=1e-5)
