"""The plan of a run: pairing and independence of seeds, balanced labels, the controls' image
counts, and config mistakes found before any job (naming the key)."""
import copy
from pathlib import Path

import pytest
import torch
from cli_helper import config_dict

from pri.core.engine import assign_labels
from pri.core.schedules import Spec
from pri.errors import PriError
from pri.workflow.jobs import inversion_seed
from pri.workflow.plan import Plan

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = ROOT / "workflow" / "schemas" / "config.schema.yaml"


def config(name: str, **changes) -> dict:
    """A config file with the schema's defaults filled in (pri.workflow.config.checked, as the
    Snakefile reads it)."""
    from pri.workflow.config import checked

    return checked(config_dict(name, **changes), str(SCHEMA))


def invert_jobs(plan: Plan):
    for tid in plan.active:
        for s in plan.sweeps(tid):
            for seed in s.seeds:
                for b in range(s.batches):
                    yield tid, s, seed, b


@pytest.mark.parametrize("name", ["config.yaml", "test.yaml", "paper.yaml"])
@pytest.mark.parametrize("batches", [1, 4, 100])
def test_no_two_jobs_share_an_inversion_seed(name, batches, monkeypatch):
    """Every (sweep, seed, batch) inverts from its own seed; the tags of one share it (pairing).
    (config/paper.yaml: its data is absent here, so its plan is checked with the seeds alone.)"""
    cfg = config(name, **{"inversion.batches": batches, "on_missing": "skip"})
    seeds = [int(s) for s in cfg["inversion"]["seeds"]]
    sweeps = ["main", "iso112", "iso56", "class0", "class3"]
    got = {}
    for sw in sweeps:
        for s in seeds:
            for b in range(batches):
                got.setdefault(inversion_seed(s, sw, b), []).append((sw, s, b))
    assert all(len(v) == 1 for v in got.values()), [v for v in got.values() if len(v) > 1]
    # the old rule (batch b of seed s: s * 1000 + b, batch 0: s) made seed 0 batch 1 equal seed 1 batch 0
    assert inversion_seed(0, "main", 1) != inversion_seed(1, "main", 0)
    if name != "paper.yaml":
        plan = Plan(cfg)
        args = {}
        for tid, s, seed, b in invert_jobs(plan):
            per_tag = {tag: plan.invert_args(tid, s.name, tag, seed, b) for tag in s.tags}
            seed_of = {tag: a[a.index("--seed") + 1] for tag, a in per_tag.items()}
            assert len(set(seed_of.values())) == 1  # every method of a seed inverts from the same seed
            args.setdefault(next(iter(seed_of.values())), []).append((tid, s.name, seed, b))
        assert all(len(v) == 1 for v in args.values())


def test_labels_are_balanced_and_paired_across_methods():
    """Trajectories get floor or ceil of their share per class, across all the batches of a seed;
    with M a multiple of C * v for every v, every method has the same label per output image."""
    C, M = 10, 280
    per_image = {}
    for v in (1, 2, 4, 7):
        labels = torch.cat([assign_labels(M // v // 2, C, label_seed=5, part=p, parts=2) for p in range(2)])
        counts = torch.bincount(labels, minlength=C)
        assert int(counts.max() - counts.min()) <= 1, (v, counts)
        per_image[v] = labels.repeat_interleave(v)
    assert all(torch.equal(per_image[1], per_image[v]) for v in (2, 4, 7))
    # an image count that is not such a multiple: still balanced per trajectory, for every v
    for v in (2, 4, 7):
        for total in (112, 126, 1000):
            counts = torch.bincount(assign_labels(total // v, C, label_seed=1), minlength=C)
            assert int(counts.max() - counts.min()) <= 1
    # another seed, another class order; classes restricted to one (one-class inversion)
    assert not torch.equal(assign_labels(20, C, 1), assign_labels(20, C, 2))
    assert set(assign_labels(20, C, 1, classes=[3]).tolist()) == {3}


def test_balance_comes_from_continuing_class_runs_across_jobs():
    """The balance check above is not vacuous: the same four jobs of 16 trajectories, each labelled
    as if it were alone (part 0 of 1), leave some classes with twice the trajectories of others;
    labelled as parts of one seed (part p of 4), they are balanced."""
    C, b, jobs = 10, 16, 4
    alone = torch.cat([assign_labels(b, C, label_seed=5) for _ in range(jobs)])
    parts = torch.cat([assign_labels(b, C, label_seed=5, part=p, parts=jobs) for p in range(jobs)])
    spread = lambda labels: int(torch.bincount(labels, minlength=C).max() - torch.bincount(labels, minlength=C).min())  # noqa: E731
    assert spread(alone) > 1 and spread(parts) <= 1


def test_iso_compute_image_counts_equal_budget_over_cost_within_a_trajectory():
    from pri.measure.cost import schedule_cost

    cfg = config("config.yaml", **{"controls.iso_compute.budgets": [56, 112],
                                   "controls.iso_compute.tags": ["dmi", "smi_v7", "pri_v4", "pri_v7"]})
    plan = Plan(cfg)
    tid = plan.active[0]
    d, T = plan._dims(tid), cfg["inversion"]["iterations"]
    cost = {t: schedule_cost(d, Spec.parse(t).build(d.num_patches, T), T)["total"] for t in ("dmi", "smi_v7", "pri_v4",
                                                                                            "pri_v7")}
    for budget in (56, 112):
        s = plan.sweep(tid, f"iso{budget}")
        for tag, n in s.images.items():
            k = Spec.parse(tag).build(d.num_patches, T).images_per_trajectory()
            exact = budget * cost["dmi"] / cost[tag]
            assert n % k == 0 and exact - k < n <= exact + 1e-6, (tag, n, exact)
    assert plan.sweep(tid, "iso112").images["dmi"] == 112
    assert plan.sweep(tid, "iso112").images["pri_v7"] > 10 * 112  # about 12x DMI's images at v = 7


@pytest.mark.parametrize("change,key", [
    ({"distill.student": "not_a_vit"}, "distill.student"),
    ({"teachers.digits.student": "nope_vit"}, "teachers.digits.student"),
    ({"efficiency.models": ["deit_tiny_patch16_224", "not_a_vit"]}, "efficiency.models.1"),
    ({"inversion.methods": ["dmi", "pri_v17"]}, "inversion.methods"),  # 16 patches
    ({"inversion.methods": ["dmi", "pri_v4"], "inversion.iterations": 3}, "inversion.iterations"),
    ({"inversion.images": 3}, "inversion.images"),  # fewer than v = 4
    ({"distill.images": 17}, "distill.images"),  # the pools hold 16
    ({"inversion.iterations": 1}, "inversion.iterations"),  # SMI's prune points do not fit
    ({"inversion.methods": ["dmi", "dmi"]}, "inversion.methods"),
    ({"inversion.methods": ["dmi", "pri_vx"]}, "inversion.methods"),
    ({"quantize.calib_images": 400}, "quantize.calib_images"),  # more of a class than the pools hold
    ({"quantize.calib_images": 10}, "quantize.calib_images"),  # not whole v = 4 trajectories
    ({"distill.images": 30}, "distill.images"),  # not 4 images of every one of 10 classes
    ({"distill.images": 80}, "distill.images"),  # 8 of each class: the pools hold 4
    ({"teachers.digits.classes": [0, 1]}, "teachers.digits.classes"),  # a teacher that distils inverts every class
    ({"controls.one_class.class": 12}, "controls.one_class.class"),
    ({"efficiency.time_tags": ["dmi", "nope"]}, "efficiency.time_tags.1"),
])
def test_config_mistakes_are_found_when_planning(change, key):
    cfg = config("test.yaml", **change)
    with pytest.raises(PriError) as e:
        Plan(cfg)
    assert e.value.option == key, e.value


def test_a_teacher_runs_only_the_tasks_it_can():
    cfg = config("test.yaml", **{"distill.head_only": True})
    plan = Plan(cfg)
    assert plan.tasks["digits"] == ["quantize"] and plan.distill_targets() == []
    (m,) = plan.missing
    assert m.task == "distill" and m.key == "distill.student_checkpoint" and "head_only" in m.reason
    assert plan.quantize_targets() and plan.all_pools()  # its pools still serve quantisation
    cfg = config("test.yaml", **{"teachers.digits.tasks": ["distill"]})
    assert Plan(cfg).quantize_targets() == []


def test_plan_is_cheap_and_loads_no_dataset(monkeypatch):
    import pri.files.data

    def refuse(*a, **k):
        raise AssertionError("the plan loaded a dataset")

    monkeypatch.setattr(pri.files.data, "load_dataset", refuse)
    cfg = copy.deepcopy(config("config.yaml"))
    plan = Plan(cfg)
    assert plan.active == ["fmnist"] and plan.all_pools()


def test_efficiency_batch_too_small_for_a_tag_is_found_when_planning():
    cfg = config("test.yaml", **{"efficiency.time_batch": 3, "efficiency.time_tags": ["dmi", "pri_v4"]})
    with pytest.raises(PriError) as e:
        Plan(cfg)
    assert e.value.option == "efficiency.time_batch" and "pri_v4" in e.value.message


def test_quantisation_baselines_take_their_own_draws():
    """The real-vs-noise control (claim 4b's gate) draws quantize.baseline_draws calibrations, the
    pools quantize.draws; without baseline_draws both take draws."""
    cfg = config("test.yaml", **{"quantize.draws": 3, "quantize.baseline_draws": 7})
    plan = Plan(cfg)
    pool = plan.quantize_job("digits", 0, "t.pt", 1)
    base = plan.quantize_baseline_job("digits", "t.pt", 1)
    assert pool[pool.index("--draws") + 1] == "3" and base[base.index("--draws") + 1] == "7"
    assert base.count("--draws") == 2 and all(base[i + 1] == "7" for i, a in enumerate(base) if a == "--draws")
    cfg = config("test.yaml", **{"quantize.draws": 3, "quantize.baseline_draws": None})
    base = Plan(cfg).quantize_baseline_job("digits", "t.pt", 1)
    assert base[base.index("--draws") + 1] == "3"


def test_paper_counts_of_before_balancing_are_refused_with_the_count_that_works():
    """config/paper.yaml's earlier counts (504 images of 4 jobs of 128) cannot give every CIFAR-100
    class the same images in whole trajectories for v = 2, 4 and 7; the plan names the key and 2800."""
    cfg = config("paper.yaml", **{"distill.images": 504})
    with pytest.raises(PriError) as e:
        Plan(cfg, check_inputs=False)
    assert e.value.option == "distill.images" and "nearest that work: 2800" in e.value.message
    cfg = config("paper.yaml", **{"inversion.batches": 4})
    with pytest.raises(PriError) as e:
        Plan(cfg, check_inputs=False)
    assert e.value.option == "distill.images" and "raise inversion.images" in e.value.message
    Plan(config("paper.yaml"), check_inputs=False)


def test_every_method_of_a_seed_gets_the_same_class_histogram():
    """benchmarks/class_balance.py deals each method's labels as pri invert does and selects as pri
    distill and pri quantize do: the default's and paper.yaml's histograms are identical across
    methods, every class covered for distillation."""
    import sys

    sys.path.insert(0, str(ROOT))
    from benchmarks.class_balance import histograms

    for name in ("config.yaml", "paper.yaml"):
        plan = Plan(config(name), check_inputs=False)
        for tid in plan.active:
            rows = histograms(plan, tid, plan.seeds[0])
            for task in {r["task"] for r in rows}:
                hs = {r["histogram"] for r in rows if r["task"] == task}
                assert len(hs) == 1, (name, tid, task)
                if task == "distill":
                    assert min(hs.pop()) > 0, (name, tid)


def test_a_quantise_only_teacher_inverts_its_classes_and_calibrates_on_them():
    cfg = config("test.yaml", **{"teachers.digits.tasks": ["quantize"], "teachers.digits.classes": [2, 5],
                                 "quantize.calib_images": 16})
    plan = Plan(cfg, check_inputs=False)
    assert plan.sweep("digits", "main").classes == (2, 5)
    args = plan.invert_args("digits", "main", "pri_v4", 0, 0)
    assert args[args.index("--classes") + 1:args.index("--classes") + 3] == ["2", "5"]
    q = plan.quantize_args("digits", 0)
    assert q[q.index("--classes") + 1:q.index("--classes") + 3] == ["2", "5"]
    assert q[q.index("--balance-unit") + 1] == "4"
    with pytest.raises(PriError) as e:  # 2 classes x 40 images: 20 of each, not 24
        Plan(config("test.yaml", **{"teachers.digits.tasks": ["quantize"], "teachers.digits.classes": [2, 5],
                                    "quantize.calib_images": 48}), check_inputs=False)
    assert e.value.option == "quantize.calib_images"
    with pytest.raises(PriError) as e:
        Plan(config("test.yaml", **{"teachers.digits.tasks": ["quantize"], "teachers.digits.classes": [2, 12]}),
             check_inputs=False)
    assert e.value.option == "teachers.digits.classes"


def test_sweep_names_are_written_and_read_by_one_vocabulary():
    """pri.workflow.layout names the sweeps (main, iso<B>, class<C>) and reads their kind back, for
    the plan, the analysis and the GPU-hours benchmark alike."""
    from pri.workflow.layout import SWEEP_KINDS, sweep_kind, sweep_name

    plan = Plan(config("test.yaml"), check_inputs=False)
    sweeps = plan.sweeps("digits")
    assert {s.kind for s in sweeps} == set(SWEEP_KINDS) and len(sweeps) == 3
    for s in sweeps:
        assert sweep_kind(s.name) == s.kind
    assert sweep_name("iso", 8) == "iso8" and sweep_name("oneclass", 3) == "class3" and sweep_name("main") == "main"
