"""Balanced classes by construction: every method of a seed gives a downstream task the same class
histogram, in whole trajectories, with the same label at every position."""
import argparse

import pytest
import torch

from pri.core.engine import assign_labels
from pri.errors import PriError
from pri.files.pool import balanced_order, check_unit, class_histogram, images_per_trajectory, trajectory_ids
from pri.tasks.distill import select_images


def fake_pool(trajectories: int, v: int, num_classes: int = 10, seed: int = 0) -> dict:
    """A pool as pri invert writes it: one class per trajectory (assign_labels), v images each."""
    labels = assign_labels(trajectories, num_classes, seed).repeat_interleave(v)
    n = len(labels)
    return {"images": torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 1, 2, 2).contiguous(),
            "masks": torch.ones(n, 4, dtype=torch.bool), "labels": labels,
            "trajectory": torch.arange(trajectories).repeat_interleave(v), "ledger": {}}


def test_histogram_depends_on_count_unit_classes_and_seed_alone():
    h = class_histogram(140, 14, range(10), 3)
    assert h == class_histogram(140, 14, range(10), 3) and sum(h.values()) == 140 and set(h.values()) == {14}
    h = class_histogram(35, 7, range(10), 3)  # fewer units than classes: 5 classes of 7, drawn from the seed
    assert sorted(h.values()) == [0] * 5 + [7] * 5
    assert class_histogram(35, 7, range(10), 4) != h
    h = class_histogram(12, 1, range(10), 0)  # within one unit from class to class
    assert sorted(h.values()) == [1] * 8 + [2] * 2


@pytest.mark.parametrize("v", [2, 7])
def test_a_pri_pool_and_a_dmi_pool_give_the_same_label_at_every_position(v):
    pri, dmi = fake_pool(140 // v, v), fake_pool(140, 1)
    hist = class_histogram(140, 14, range(10), 5)
    o_pri = balanced_order(pri["labels"], pri["trajectory"], hist, 5, "--images")
    o_dmi = balanced_order(dmi["labels"], dmi["trajectory"], hist, 5, "--images")
    assert torch.equal(pri["labels"][o_pri], dmi["labels"][o_dmi])
    assert torch.bincount(pri["labels"][o_pri], minlength=10).tolist() == [14] * 10
    per_traj = torch.bincount(pri["trajectory"][o_pri])
    assert set(per_traj[per_traj > 0].tolist()) == {v}  # whole trajectories only
    assert len(set(o_pri.tolist())) == 140


def test_a_class_short_of_images_is_refused_naming_the_option():
    pool = fake_pool(35, 4)  # 3 or 4 trajectories per class: 12 of some class
    with pytest.raises(PriError) as e:
        balanced_order(pool["labels"], pool["trajectory"], class_histogram(160, 16, range(10), 0), 0, "--images")
    assert e.value.option == "--images" and "16 are needed" in e.value.message


def test_units_that_split_a_trajectory_are_refused_with_the_counts_that_work():
    with pytest.raises(PriError) as e:
        check_unit(140, 6, 4, "--images")
    assert e.value.option == "--balance-unit" and "multiple of 4" in e.value.message
    with pytest.raises(PriError) as e:
        check_unit(32, 7, 7, "--calib-images")
    assert e.value.option == "--calib-images" and "28 or 35" in e.value.message
    with pytest.raises(PriError):
        images_per_trajectory(torch.tensor([0, 0, 1]))
    check_unit(70, 14, 7, "--images")


def test_distill_selection_balances_and_pairs_methods():
    """pri distill --images N --balance-unit U over the pools of two methods of one seed."""
    def args(**kw):
        return argparse.Namespace(images=140, balance_unit=14, classes=None, seed=2, **kw)

    pools = {v: [fake_pool(70 // v, v, seed=9), fake_pool(70 // v, v, seed=9)] for v in (1, 7)}
    sel = {v: select_images(args(), ps, [], 10) for v, ps in pools.items()}
    assert torch.equal(sel[1].labels, sel[7].labels)
    assert sel[7].histogram == {c: 14 for c in range(10)}
    ids = trajectory_ids(pools[7])[sel[7].order]
    assert set(torch.bincount(ids)[torch.bincount(ids) > 0].tolist()) == {7}  # across two pools: whole trajectories
    with pytest.raises(PriError) as e:
        select_images(argparse.Namespace(images=150, balance_unit=None, classes=None, seed=2), pools[7], [], 10)
    assert e.value.option == "--images" and "nearest that work" in e.value.message
