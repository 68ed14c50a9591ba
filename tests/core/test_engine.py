"""The inversion engine and its schedules: invariants of DMI, SMI and PRI."""
import os

import pytest
import torch
from timm.models.vision_transformer import VisionTransformer

from pri.core.engine import Augment, InversionConfig, Inverter, Teacher, invert, to_uint8
from pri.core.schedules import DMI, PRI, SMI, matched_ratio, scaled_prune_at
from pri.core.vit import patchify
from pri.files.models import load_model


def _teacher(name="vit_pico_patch4_28"):
    torch.manual_seed(0)
    return load_model(name)


def _teacher_196():
    """A very small random ViT with 14 x 14 = 196 patches (the DeiT patch count), for fast runs."""
    torch.manual_seed(0)
    m = VisionTransformer(img_size=56, patch_size=4, in_chans=3, embed_dim=32, depth=1, num_heads=2,
                          num_classes=10).eval().requires_grad_(False)
    return Teacher(model=m, name="test_vit_196", mean=(0.5,) * 3, std=(0.5,) * 3,
                   provenance={"model": "test_vit_196", "sha256": "random-init"})


def _cfg(**kw):
    base = dict(iterations=14, batch=8, seed=0, device="cpu", progress=False)
    base.update(kw)
    return InversionConfig(**base)


# ---------------------------------------------------------------- augmentation
@pytest.mark.parametrize("h,p,expected", [(224, 16, 2), (28, 4, 1), (32, 4, 1), (8, 2, 1)])
def test_roll_is_rounded_to_whole_patches(h, p, expected):
    aug = Augment(h, h, p, 0.125, True, "cpu")
    shifts = {abs(dy) for dy, dx, f in aug.combos} | {abs(dx) for dy, dx, f in aug.combos}
    assert max(shifts) == expected  # in patches: 1/8 of the side, rounded to whole patches
    assert len(aug) == (2 * expected + 1) ** 2 * 2


def test_augmentation_is_roll_and_flip_and_remaps_the_active_set():
    h, p = 28, 4
    aug = Augment(h, h, p, 0.125, True, "cpu")
    x = torch.randn(2, 1, h, h)
    for a, (dy, dx, f) in enumerate(aug.combos):
        ref = torch.roll(x, shifts=(dy * p, dx * p), dims=(2, 3))
        if f:
            ref = ref.flip(3)
        out = Augment.apply(x, aug.pixel_src[a])
        assert torch.equal(out, ref)
        # patch j of the original lands at patch_dst[j] of the augmented image (mirrored if flipped)
        po, pa = patchify(x, p).view(2, 49, p, p), patchify(out, p).view(2, 49, p, p)
        moved = pa[:, aug.patch_dst[a]]
        assert torch.equal(moved, po.flip(-1) if f else po)


def test_augmented_active_set_covers_exactly_the_active_pixels():
    h, p = 28, 4
    aug = Augment(h, h, p, 0.125, True, "cpu")
    idx = torch.tensor([[0, 6, 7, 20, 48]])
    pm = torch.zeros(1, 49, dtype=torch.bool).scatter_(1, idx, True)
    x = to_uint8(torch.rand(1, 1, h, h) + 0.01, torch.zeros(1, 1, 1, 1), torch.ones(1, 1, 1, 1), pm, p).float()
    for a in range(len(aug)):
        xa = patchify(Augment.apply(x, aug.pixel_src[a]), p)
        dst = aug.patch_dst[a][idx]
        live = torch.zeros(1, 49, dtype=torch.bool).scatter_(1, dst, True)
        assert (xa[~live] == 0).all() and (xa[live].abs().sum(-1) > 0).all()


# ---------------------------------------------------------------- schedules
def test_smi_public_default_counts_on_196_patches():
    counts = SMI().active_counts(196, 400)
    assert counts[0] == 196 and counts[49] == 196
    assert set(counts[50:100]) == {137} and set(counts[100:200]) == {95}
    assert set(counts[200:300]) == {66} and set(counts[300:]) == {46}


def test_smi_run_follows_the_public_default_and_keeps_the_optimised_set():
    teacher = _teacher_196()
    final = {}
    pool = invert(teacher, SMI(), _cfg(iterations=310, batch=2),
                  callback=lambda t, x, emitted: final.setdefault("idx", emitted[0].clone()) if t == 310 else None)
    c = pool["ledger"]["active_tokens"]
    assert len(c) == 310
    assert c[:50] == [196] * 50 and c[50:100] == [137] * 50 and c[100:200] == [95] * 100
    assert c[200:300] == [66] * 100 and c[300:] == [46] * 10
    masks = pool["masks"]
    assert masks.shape == (2, 196) and (masks.sum(1) == 46).all()
    expect = torch.zeros(2, 196, dtype=torch.bool).scatter_(1, final["idx"], True)
    assert torch.equal(masks, expect)


def test_matched_and_scaled_smi():
    assert [round(matched_ratio(v), 3) for v in (2, 4, 7)] == [0.159, 0.293, 0.385]
    assert scaled_prune_at(4000) == [50, 100, 200, 300]
    assert scaled_prune_at(400) == [5, 10, 20, 30]
    s = scaled_prune_at(20)
    assert s == sorted(set(s)) and all(0 < p < 20 for p in s)


def test_dmi_keeps_every_patch():
    pool = invert(_teacher(), DMI(), _cfg())
    assert pool["masks"].all() and pool["masks"].shape == (8, 49)
    assert pool["ledger"]["active_tokens"] == [49] * 14
    assert (pool["stage"] == 0).all() and torch.equal(pool["trajectory"], torch.arange(8))


@pytest.mark.parametrize("v,score", [(2, "cls_attn"), (4, "cls_attn"), (7, "cls_attn"), (4, "random"), (1, "cls_attn")])
def test_pri_invariants(v, score):
    teacher = _teacher()
    n, T, trajectories = 49, 15, 3
    snaps = {}

    def grab(t, x, emitted):
        snaps[t] = x.clone()

    inv = Inverter(teacher, PRI(v, score=score), _cfg(iterations=T, batch=trajectories * v + (v - 1)))
    assert inv.trajectories == trajectories  # batch counts output images: trajectories = batch // v
    pool = inv.run(callback=grab)
    M = trajectories * v
    assert pool["images"].shape == (M, 1, 28, 28) and pool["images"].dtype == torch.uint8
    assert pool["masks"].shape == (M, n) and pool["masks"].dtype == torch.bool
    for name in ("labels", "trajectory", "stage"):
        assert pool[name].dtype == torch.int64 and pool[name].shape == (M,)
    interval = T // v
    detach_at = [k * interval for k in range(1, v + 1)]
    assert sorted(snaps) == detach_at
    counts = pool["ledger"]["active_tokens"]
    assert len(counts) == T and counts[detach_at[-1]:] == [0] * (T - detach_at[-1])
    expected_sizes = [n // v] * (v - 1) + [n - (v - 1) * (n // v)]
    mean, std = torch.tensor(teacher.mean).view(1, -1, 1, 1), torch.tensor(teacher.std).view(1, -1, 1, 1)
    for b in range(trajectories):
        rows = (pool["trajectory"] == b).nonzero().flatten()
        assert len(rows) == v
        assert pool["stage"][rows].tolist() == list(range(v))
        assert len(set(pool["labels"][rows].tolist())) == 1
        m = pool["masks"][rows]
        assert m.sum(1).tolist() == expected_sizes
        assert (m.sum(0) == 1).all()  # pairwise disjoint, union = all N patches
        for s, r in enumerate(rows):
            x_at = snaps[detach_at[s]][b: b + 1]
            want = to_uint8(x_at, mean, std, m[s: s + 1], 4)
            assert torch.equal(pool["images"][r: r + 1], want)  # kept pixels as at t_k, 0 elsewhere
            off = patchify(pool["images"][r: r + 1].float(), 4)[0][~m[s]]
            assert (off == 0).all()
    # ranked counts agree with the analytic schedule
    assert counts == PRI(v).active_counts(n, T)


def test_pri_cls_attn_picks_differ_from_random():
    a = invert(_teacher(), PRI(4), _cfg(batch=8))
    b = invert(_teacher(), PRI(4, score="random"), _cfg(batch=8))
    assert not torch.equal(a["masks"], b["masks"])


def test_same_seed_gives_bit_identical_pool_and_other_seed_differs():
    runs = [invert(_teacher(), PRI(4), _cfg(batch=8, seed=s)) for s in (3, 3, 4)]
    for k in ("images", "masks", "labels", "trajectory", "stage"):
        assert torch.equal(runs[0][k], runs[1][k])
    assert not torch.equal(runs[0]["images"], runs[2]["images"])


def test_teacher_is_frozen_and_labels_balanced():
    teacher = _teacher()
    pool = invert(teacher, DMI(), _cfg(batch=20))
    assert all(p.grad is None and not p.requires_grad for p in teacher.model.parameters())
    counts = torch.bincount(pool["labels"], minlength=10)
    assert counts.max() - counts.min() <= 1


def test_inversion_raises_teacher_confidence_in_the_target():
    """Loss goes down: after inversion the teacher classifies the (dense) images as their labels."""
    teacher = _teacher()
    pool = invert(teacher, DMI(), _cfg(iterations=40, batch=10))
    x = (pool["images"].float() / 255 - 0.5) / 0.5
    with torch.no_grad():
        pred = teacher.model(x).argmax(1)
    assert (pred == pool["labels"]).float().mean() >= 0.9


def test_ledger_contents():
    pool = invert(_teacher(), SMI([3, 6], ratios=[0.5, 0.5]), _cfg(iterations=10))
    led = pool["ledger"]
    for key in ("method", "prune_at", "prune_ratio", "score", "iterations", "active_tokens", "images_out",
                "wall_seconds", "peak_memory_mb", "device", "torch", "timm", "dtype", "seed", "teacher"):
        assert key in led, key
    assert led["teacher"]["sha256"] == "random-init"
    assert led["active_tokens"] == [49] * 3 + [24] * 3 + [12] * 4
    assert led["images_out"] == 8 and led["wall_seconds"] > 0


def test_bf16_autocast_keeps_the_invariants():
    pool = invert(_teacher(), PRI(4), _cfg(batch=8, dtype="bf16"))
    assert pool["ledger"]["dtype"] == "bf16"
    m = pool["masks"].view(2, 4, 49)
    assert (m.sum(1) == 1).all()


def _stage_moments(teacher, graphs, steps=8, **kw):
    """Adam's moments after ``steps`` steps at lr 0 (the image stays put; every step sees another
    augmentation): a smooth function of the gradients, so graph and eager can be compared."""
    inv = Inverter(teacher, DMI(), _cfg(iterations=10, batch=16, seed=3, device="cuda", lr=0.0, graphs=graphs, **kw))
    st = inv.stage_stepper(12)
    for _ in range(steps):
        st()
    torch.cuda.synchronize(inv.device)
    state = inv.opt.state[inv.x]
    return inv, state["exp_avg"].float(), state["exp_avg_sq"].float()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU: CUDA-graph capture of each stage")
@pytest.mark.parametrize("dtype,tol", [("fp32", 1e-3), ("bf16", 3e-2)])
def test_cuda_graph_stage_computes_the_eager_gradients(dtype, tol):
    """Warm-up, capture and replays (each with its own augmentation written into the static
    buffers) accumulate the same gradients as the eager loop, to float tolerance."""
    teacher = _teacher()
    g, mg, vg = _stage_moments(teacher, "auto", dtype=dtype)
    e, me, ve = _stage_moments(teacher, "off", dtype=dtype)
    assert g.use_graphs and not e.use_graphs
    assert float((mg - me).norm() / me.norm()) < tol
    assert float((vg - ve).norm() / ve.norm()) < tol
    assert torch.equal(g.x, e.x)  # lr 0: no pixel moved


_DETERMINISTIC_RUN = """
import sys, torch
sys.path.insert(0, {tests!r})
torch.use_deterministic_algorithms(True)
from test_engine import _teacher, _cfg, invert
from pri.core.schedules import PRI
pools = [invert(_teacher(), PRI(4), _cfg(batch=16, iterations=24, device="cuda", dtype={dtype!r}, graphs=g))
         for g in ("auto", "off")]
assert pools[0]["ledger"]["cuda_graphs"] and not pools[1]["ledger"]["cuda_graphs"]
assert torch.equal(pools[0]["masks"], pools[1]["masks"]), "masks differ"
d = (pools[0]["images"].int() - pools[1]["images"].int()).abs().max()
assert d <= 1, f"images differ by {{d}}"
print("ok")
"""


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU: CUDA-graph capture of each stage")
@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_cuda_graph_run_matches_the_eager_run_with_deterministic_algorithms(dtype):
    """With deterministic kernels, a whole PRI run gives the same masks and images captured or not
    (without them, tiny run-to-run differences are amplified by Adam and by the top-k choice)."""
    import subprocess
    import sys

    env = dict(os.environ, CUBLAS_WORKSPACE_CONFIG=":4096:8")
    code = _DETERMINISTIC_RUN.format(tests=os.path.dirname(os.path.abspath(__file__)), dtype=dtype)
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "ok" in r.stdout, r.stdout[-2000:] + r.stderr[-3000:]


def test_detached_and_pruned_pixels_stay_frozen():
    """Pixels of a patch that left the forward pass keep their value from that moment on."""
    snaps = {}
    inv = Inverter(_teacher(), PRI(4), _cfg(iterations=16, batch=8))
    inv.run(callback=lambda t, x, emitted: snaps.setdefault(t, (x.clone(), [e.clone() for e in emitted])))
    x4, (first,) = snaps[4]
    x16, _ = snaps[16]
    pm = torch.zeros(2, 49, dtype=torch.bool).scatter_(1, first, True)
    px = pm.view(2, 1, 7, 1, 7, 1).expand(2, 1, 7, 4, 7, 4).reshape(2, 1, 28, 28)
    assert torch.equal(x16[px], x4[px])  # frozen since t_1
    assert not torch.equal(x16[~px], x4[~px])  # the rest kept evolving


# ---------------------------------------------------------------- invariants of the controls
def test_pri_with_v1_is_dmi():
    """PRI with one detach point never scores and emits every patch at T: DMI's images exactly."""
    a = invert(_teacher(), DMI(), _cfg(batch=6))
    b = invert(_teacher(), PRI(1), _cfg(batch=6))
    for k in ("images", "masks", "labels", "updates"):
        assert torch.equal(a[k], b[k]), k


def test_smi_rerank_beyond_T_is_smi():
    from pri.core.schedules import SMIRerank

    a = invert(_teacher(), SMI([2, 4, 6, 8], keep=[30, 20, 12, 7]), _cfg(iterations=14))
    b = invert(_teacher(), SMIRerank([2, 4, 6, 8], keep=[30, 20, 12, 7], every=100), _cfg(iterations=14))
    for k in ("images", "masks", "updates"):
        assert torch.equal(a[k], b[k]), k
    c = invert(_teacher(), SMIRerank([2, 4, 6, 8], keep=[30, 20, 12, 7], every=3), _cfg(iterations=14))
    assert c["masks"].sum(1).tolist() == [7] * 8 and c["ledger"]["rerank_every"] == 3
    assert not torch.equal(a["masks"], c["masks"])  # re-ranking over all patches chose others


def test_updates_count_the_steps_each_kept_patch_received():
    T = 16
    dmi = invert(_teacher(), DMI(), _cfg(iterations=T))
    assert (dmi["updates"] == T).all() and dmi["updates"].dtype == torch.int32
    pri = invert(_teacher(), PRI(4), _cfg(iterations=T, batch=8))
    for i in range(8):
        stage = int(pri["stage"][i])
        kept = pri["masks"][i]
        assert (pri["updates"][i][kept] == (stage + 1) * (T // 4)).all() and (pri["updates"][i][~kept] == 0).all()
    assert PRI(4).mean_updates(49, T) == pytest.approx(sum(12 * (k + 1) * 4 for k in range(3)) / 49 + 13 * 16 / 49)
    smi = invert(_teacher(), SMI([3, 6], keep=[20, 9]), _cfg(iterations=T))
    assert (smi["updates"][smi["masks"]] == T).all() and (smi["updates"][~smi["masks"]] == 0).all()
    from pri.core.schedules import SMIRerank, build

    ctl = build("dmi_updates_v4", 49, T)
    assert ctl.run_length(T) == round(PRI(4).mean_updates(49, T))
    rr = invert(_teacher(), SMIRerank([3, 6], keep=[20, 9], every=2), _cfg(iterations=T))
    u = rr["updates"][rr["masks"]]
    assert (u <= T).all() and (u >= 1).all() and (rr["updates"][~rr["masks"]] == 0).all()


class _Planted:
    """A score per patch that only depends on the patch: patch j scores PLANT[j]."""

    def __init__(self, n, seed=0):
        self.values = torch.rand(n, generator=torch.Generator().manual_seed(seed))

    def __call__(self, inv, active, t):
        return self.values[active]


@pytest.mark.parametrize("descending", [True, False])
def test_planted_scores_pri_detaches_and_smi_keeps_the_top_patches(monkeypatch, descending):
    """With known scores PRI's first image is exactly the N // v top-scoring patches and SMI keeps
    exactly its top ones; a schedule that ranked the other way round fails this test."""
    import pri.core.schedules as S

    plant = _Planted(49)
    monkeypatch.setattr(Inverter, "score", lambda inv, active, t: plant(inv, active, t))
    if not descending:  # the sort order flipped: the test must notice
        monkeypatch.setattr(S, "_rank", lambda score: torch.sort(score, dim=1, descending=False, stable=True).indices)
    top = torch.argsort(plant.values, descending=True)
    pri = invert(_teacher(), PRI(4), _cfg(iterations=8, batch=8))
    first = pri["masks"][pri["stage"] == 0]
    want_pri = torch.zeros(49, dtype=torch.bool).scatter_(0, top[:12], True)
    smi = invert(_teacher(), SMI([2, 5], keep=[20, 9]), _cfg(iterations=8, batch=4))
    want_smi = torch.zeros(49, dtype=torch.bool).scatter_(0, top[:9], True)
    ok = bool((first == want_pri).all()) and bool((smi["masks"] == want_smi).all())
    assert ok == descending


def test_random_weights_are_seeded(tmp_path):
    """Without a checkpoint the teacher's random weights come from --seed: two identical runs give
    identical pools (they did not, before), and the ledger records the seed."""
    from pri.cli import main

    args = ["invert", "--model", "deit_tiny_patch16_224", "--num-classes", "10", "--device", "cpu", "--seed", "3",
            "--method", "pri", "--v", "4", "--iterations", "8", "--batch", "4", "--threads", "1", "--no-progress"]
    pools = []
    for name in ("a.pt", "b.pt"):
        assert main(args + ["--out", str(tmp_path / name)]) == 0
        pools.append(torch.load(tmp_path / name, weights_only=True))
    assert torch.equal(pools[0]["images"], pools[1]["images"]) and torch.equal(pools[0]["masks"], pools[1]["masks"])
    assert pools[0]["ledger"]["teacher"]["sha256"] == "random-init" and "init_seed" in pools[0]["ledger"]["teacher"]


def test_a_method_registered_twice_is_refused_and_the_first_stays():
    from pri.core.schedules import REGISTRY, Method, register

    before = REGISTRY["pri"]
    with pytest.raises(ValueError, match="'pri' is already registered"):
        register(Method("pri", "PRI (again)", "required", lambda v, n, T, o: None))
    assert REGISTRY["pri"] is before
    new = register(Method("pri_test_only", "PRI (test)", "required", lambda v, n, T, o: None))
    try:
        assert REGISTRY["pri_test_only"] is new
    finally:
        del REGISTRY["pri_test_only"]
