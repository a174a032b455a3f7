"""The FEID vs human-only ablation: refusals before training, and arms that differ only in labels."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from seke.train import ablation  # noqa: E402
from seke.train.arrays import from_feid  # noqa: E402
from seke.train.config import TrainConfig  # noqa: E402
from tests.seke.train.synthetic import feid_rows  # noqa: E402


def test_feid_without_generated_labels_is_refused() -> None:
    arrays, _ = from_feid(feid_rows(12, with_va=False, with_aus=False), image_size=24)
    with pytest.raises(ablation.AblationError, match="no valence-arousal or AU labels"):
        ablation.check_feid(arrays)


def test_feid_without_human_expressions_is_refused() -> None:
    arrays, _ = from_feid(feid_rows(12, origin="generated"), image_size=24)
    with pytest.raises(ablation.AblationError, match="human-only arm has nothing"):
        ablation.check_feid(arrays)


def test_budget_too_small_for_one_epoch_is_refused_before_training() -> None:
    with pytest.raises(ablation.AblationError, match="too small for one epoch"):
        ablation.plan_steps(budget_s=60, spent_s=5, runs=4, seconds_per_step=0.2, eval_seconds=5,
                            n_faces=28_000, batch_size=128)


def test_budget_is_one_fixed_step_count_for_every_run() -> None:
    plan = ablation.plan_steps(budget_s=2400, spent_s=30, runs=4, seconds_per_step=0.15, eval_seconds=20,
                               n_faces=25_600, batch_size=128)
    assert plan.steps_per_epoch == 200
    # what is left after probe and evaluations, shared by 4 runs, with a 10 % margin
    assert plan.steps == int(0.9 * (2400 - 30 - 4 * 20) / 4 / 0.15)
    assert plan.steps * 0.15 * 4 + 4 * 20 + 30 <= 2400


def test_arms_differ_only_in_labels_and_summaries_pair_by_seed() -> None:
    arrays, _ = from_feid(feid_rows(32, seed=5), image_size=24)
    evals = {"val": from_feid(feid_rows(16, seed=6, start=1000), image_size=24)[0]}
    base = TrainConfig.tiny(epochs=1)
    runs = ablation.run_ablation(arrays, base, seeds=[0, 1], steps=6, evals=evals, device="cpu",
                                 log=lambda _: None)
    assert len(runs) == 2
    for seed, pair in zip((0, 1), runs):
        h, f = pair["human_only"], pair["feid"]
        assert h["seed"] == f["seed"] == seed
        assert h["steps"] == f["steps"] == 6 and h["n_train"] == f["n_train"] == 32
        assert (h["label_counts"]["va"], h["label_counts"]["aus"]) == (0, 0)
        assert f["label_counts"]["va"] == f["label_counts"]["aus"] == 32
        assert h["recipe"]["max_steps"] == 6 and h["recipe"]["time_limit_s"] == 0.0
    acc = ablation.paired(runs, "val", "expression", "accuracy")
    a = [r["human_only"]["evaluation"]["val"]["expression"]["accuracy"] for r in runs]
    b = [r["feid"]["evaluation"]["val"]["expression"]["accuracy"] for r in runs]
    assert acc["delta"] == pytest.approx(np.mean(np.subtract(b, a)))
    assert acc["spread"] == pytest.approx(np.std(np.subtract(b, a), ddof=1))


def test_runs_that_differ_beyond_the_labels_are_not_compared() -> None:
    cfg = TrainConfig.tiny()
    a = {"recipe": cfg.to_dict(), "n_train": 10, "steps": 5}
    b = {"recipe": dataclasses.replace(cfg.ablation(), lr=0.1).to_dict(), "n_train": 10, "steps": 5}
    with pytest.raises(ablation.AblationError, match="lr"):
        ablation.compare_arms(a, b)
    b = {"recipe": cfg.ablation().to_dict(), "n_train": 10, "steps": 4}
    with pytest.raises(ablation.AblationError, match="steps"):
        ablation.compare_arms(a, b)
    ablation.compare_arms(a, {**b, "steps": 5})  # only the ablation switches differ: fine


def test_arms_trained_side_by_side_in_lanes_match_one_after_the_other() -> None:
    """Lanes change where a run trains, not what it computes: same seeds, same steps, same scores
    as the serial runs at the same thread count."""
    arrays, _ = from_feid(feid_rows(32, seed=5), image_size=24)
    evals = {"val": from_feid(feid_rows(16, seed=6, start=1000), image_size=24)[0]}
    base = TrainConfig.tiny(epochs=1)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        serial = ablation.run_ablation(arrays, base, seeds=[0, 1], steps=6, evals=evals, device="cpu",
                                       log=lambda _: None)
    finally:
        torch.set_num_threads(threads)
    with ablation.ArmLanes(arrays, evals, lanes=2, threads=1) as lanes:
        costs = lanes.probe(base, "cpu", steps=3)
        side = ablation.run_ablation(arrays, base, seeds=[0, 1], steps=6, evals=evals, device="cpu",
                                     log=lambda _: None, lanes=lanes)
        assert lanes.rounds(4) == 2
        other = from_feid(feid_rows(30, seed=7), image_size=24)[0]
        with pytest.raises(ablation.AblationError, match="other faces"):
            ablation.run_ablation(other, base, seeds=[0], steps=2, evals=evals, device="cpu", lanes=lanes)
    assert costs["seconds_per_step"] > 0 and costs["eval_seconds"] > 0
    for a, b in zip(serial, side):
        for arm in ablation.ARMS:
            assert (a[arm]["seed"], a[arm]["arm"], a[arm]["steps"]) == (b[arm]["seed"], b[arm]["arm"], b[arm]["steps"])
            assert a[arm]["evaluation"]["val"]["expression"] == b[arm]["evaluation"]["val"]["expression"]
            assert a[arm]["history"][-1]["loss"] == b[arm]["history"][-1]["loss"]


def test_lanes_need_two_workers() -> None:
    arrays, _ = from_feid(feid_rows(8, seed=5), image_size=24)
    with pytest.raises(ValueError, match="at least 2"):
        ablation.ArmLanes(arrays, {}, lanes=1)
