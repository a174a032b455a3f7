"""Training on a handful of synthetic faces: it learns, repeats with a seed, checkpoints, ablates."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

torch = pytest.importorskip("torch")

from seke.train.arrays import FaceArrays, from_feid  # noqa: E402
from seke.train.checkpoint import load_checkpoint, read_latest, resolve_checkpoint, save_checkpoint, write_latest  # noqa: E402
from seke.train.config import TrainConfig  # noqa: E402
from seke.train.evaluate import evaluate_arrays, predict  # noqa: E402
from seke.train.trainer import label_weights, train  # noqa: E402
from tests.baselines import chance_bound, majority_rate  # noqa: E402
from tests.seke.train.synthetic import feid_rows  # noqa: E402

QUIET = dict(aug_rotate_deg=5.0, aug_translate=0.03, aug_scale=(0.95, 1.05), aug_flip=False)


@pytest.fixture(scope="module")
def faces() -> FaceArrays:
    arrays, _ = from_feid(feid_rows(48, seed=3), image_size=24)
    return arrays


def _silent(_: str) -> None:
    pass


def _baseline(cfg: TrainConfig, arrays: FaceArrays) -> float:
    """The better of two baselines on the same faces: always answering the commonest expression
    (class prior) and the same recipe's network before any step (seeded as train() seeds it)."""
    from seke.train.model import build_model

    torch.manual_seed(cfg.seed)
    untrained = evaluate_arrays(build_model(cfg), arrays, "cpu", cfg)["expression"]["accuracy"]
    return max(majority_rate(arrays.expression.tolist()), untrained)


def test_loss_decreases_and_model_learns(faces):
    cfg = TrainConfig.tiny(epochs=8, batch_size=16, lr=0.1, **QUIET)
    result = train(faces, cfg, device="cpu", log=_silent)
    first, last = result.history[0], result.history[-1]
    assert last["loss"] < 0.7 * first["loss"], result.history
    assert last["va"] < first["va"] and last["aus"] < first["aus"]
    scores = evaluate_arrays(result.model, faces, "cpu", cfg)
    # 48 faces: beat the same-run baseline by the margin that n supports (a guesser at the
    # baseline rate passes with p < 1e-6, tests/baselines.py). When written: 1.000 vs class prior
    # 0.3125 (untrained net 0.0), bound 0.646.
    base = _baseline(cfg, faces)
    assert scores["expression"]["accuracy"] > chance_bound(base, len(faces)), (scores["expression"], base)
    assert scores["aus"]["n"] == len(faces) and scores["va"]["n"] == len(faces)


def test_same_seed_same_weights_other_seed_differs(faces):
    cfg = TrainConfig.tiny(max_steps=4, batch_size=8)
    a = train(faces, cfg, device="cpu", log=_silent).model.state_dict()
    b = train(faces, cfg, device="cpu", log=_silent).model.state_dict()
    c = train(faces, TrainConfig.tiny(max_steps=4, batch_size=8, seed=1), device="cpu", log=_silent).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_checkpoint_round_trip(tmp_path, faces):
    cfg = TrainConfig.tiny(max_steps=3, batch_size=8)
    result = train(faces, cfg, device="cpu", log=_silent)
    path = save_checkpoint(result.model, cfg, {"note": "test"}, str(tmp_path / "models/x/data=v/config=c"))
    write_latest(str(tmp_path), "x", path)
    assert read_latest(str(tmp_path), "x")["path"] == path
    model, cfg2, metrics = load_checkpoint(path)
    assert cfg2 == cfg and metrics == {"note": "test"}
    before = predict(result.model, faces.images[:6], "cpu", cfg)
    after = predict(model, faces.images[:6], "cpu", cfg2)
    for k in before:
        assert np.array_equal(before[k], after[k]), k
    (tmp_path / "models/x/data=v/config=c/model.pt").write_bytes(b"corrupt")
    with pytest.raises(ValueError, match="sha256"):
        load_checkpoint(path)


def test_training_output_root_resolves_to_its_newest_checkpoint_even_when_moved(tmp_path, faces):
    cfg = TrainConfig.tiny(max_steps=2, batch_size=8)
    model = train(faces, cfg, device="cpu", log=_silent).model
    root = tmp_path / "out"
    path = save_checkpoint(model, cfg, {"note": "root"}, str(root / "models/x/data=v/config=c"))
    write_latest(str(root), "x", path)
    assert resolve_checkpoint(str(root)) == path
    assert load_checkpoint(str(root))[2] == {"note": "root"}
    moved = tmp_path / "moved"
    root.rename(moved)  # latest.json still names the old absolute path
    assert resolve_checkpoint(str(moved)) == str(moved / "models/x/data=v/config=c")
    assert load_checkpoint(str(moved))[2] == {"note": "root"}
    other = save_checkpoint(model, cfg, {}, str(moved / "models/y/data=v/config=c"))
    write_latest(str(moved), "y", other)
    with pytest.raises(FileNotFoundError, match="2 training runs under models/ \\(x, y\\)"):
        load_checkpoint(str(moved))
    with pytest.raises(FileNotFoundError, match="no manifest.json"):
        load_checkpoint(str(tmp_path / "nothing here"))


def test_time_limit_cuts_epochs(faces):
    cfg = TrainConfig.tiny(epochs=50, batch_size=8, time_limit_s=0.01)
    result = train(faces, cfg, device="cpu", log=_silent)
    assert result.epochs_run < 50


def test_time_limit_is_kept_inside_the_first_epoch(faces):
    # One epoch of 300 steps at a 0.05 s budget: the timed probe must stop the run long before
    # the epoch ends (a full-size net on a CPU can need hours for its first epoch).
    many = FaceArrays.concat([faces] * 50)  # 2400 faces, batch 8 → 300 steps per epoch
    logs: list[str] = []
    cfg = TrainConfig.tiny(epochs=3, batch_size=8, time_limit_s=0.05)
    result = train(many, cfg, device="cpu", log=logs.append)
    assert result.epochs_run == 1 and result.steps < 300, (result.steps, logs)
    assert any("steps instead of 900" in line for line in logs), logs


def test_compact_recipe_is_the_cpu_sized_net():
    from seke.train.model import build_model, count_parameters

    full, compact = TrainConfig(), TrainConfig.compact()
    assert count_parameters(build_model(compact)) < count_parameters(build_model(full)) / 20
    assert compact.image_size == full.image_size and compact.n_aus == full.n_aus


def test_ablation_uses_human_expression_only(faces):
    table = pa.concat_tables([feid_rows(10, seed=5, origin="human"),
                              feid_rows(10, seed=6, origin="generated", start=100)])
    arrays, _ = from_feid(table, image_size=24)
    ew, vw, aw = label_weights(arrays, TrainConfig.tiny().ablation())
    assert (ew > 0).sum() == 10 and vw.sum() == 0 and aw.sum() == 0
    ew_full, vw_full, aw_full = label_weights(arrays, TrainConfig.tiny())
    assert (ew_full > 0).sum() == 20 and (vw_full > 0).sum() == 20 and (aw_full > 0).sum() == 20
    with pytest.raises(ValueError, match="usable label"):
        train(arrays.subset(np.flatnonzero(arrays.expression_origin == "generated")),
              TrainConfig.tiny(use_va=False, use_aus=False, expression_origins=("human",)),
              device="cpu", log=_silent)


def test_mixed_precision_path_runs_on_cpu(faces):
    cfg = TrainConfig.tiny(max_steps=2, batch_size=8, amp="bf16")
    result = train(faces, cfg, device="cpu", log=_silent)
    assert np.isfinite(result.history[-1]["loss"])


def test_adamw_option_trains(faces):
    cfg = TrainConfig.tiny(epochs=4, batch_size=16, lr=3e-3, optimizer="adamw", weight_decay=0.05, **QUIET)
    result = train(faces, cfg, device="cpu", log=_silent)
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    with pytest.raises(ValueError, match="unknown optimizer"):
        train(faces, TrainConfig.tiny(max_steps=1, optimizer="lion"), device="cpu", log=_silent)


def test_model_beats_chance_on_held_out_faces(faces):
    """Scored on faces it never saw (BatchNorm in eval mode, predictions in EXPRESSIONS order)."""
    held_out, _ = from_feid(feid_rows(48, seed=7, start=1000), image_size=24)
    cfg = TrainConfig.tiny(epochs=8, batch_size=16, lr=0.1, **QUIET)
    result = train(faces, cfg, device="cpu", log=_silent)
    scores = evaluate_arrays(result.model, held_out, "cpu", cfg)
    assert scores["expression"]["n"] == len(held_out)
    # same margin rule as above; when written 0.979 vs class prior 0.292 (untrained net 0.0), bound 0.625
    base = _baseline(cfg, held_out)
    assert scores["expression"]["accuracy"] > chance_bound(base, len(held_out)), (scores["expression"], base)


def test_recipe_differences_ignore_the_ablation_switches():
    from seke.train.config import recipe_differences

    cfg = TrainConfig.compact()
    assert recipe_differences(cfg.to_dict(), cfg.ablation().to_dict()) == {}
    other = TrainConfig.compact(epochs=3).ablation()
    assert recipe_differences(cfg.to_dict(), other.to_dict()) == {"epochs": [30, 3]}


def test_cpu_picks_bf16_only_where_it_was_measured_faster():
    from seke.train.tensors import bf16_is_faster_for

    flags = "flags\t\t: fpu sse avx2 avx512f avx512_bf16"
    assert bf16_is_faster_for(f"vendor_id\t: GenuineIntel\n{flags} amx_bf16 amx_tile\n")   # Sapphire Rapids
    assert bf16_is_faster_for(f"vendor_id\t: AuthenticAMD\n{flags}\n")                     # EPYC, AVX512-BF16
    assert not bf16_is_faster_for(f"vendor_id\t: GenuineIntel\n{flags}\n")                 # Intel, no AMX
    assert not bf16_is_faster_for("vendor_id\t: AuthenticAMD\nflags\t\t: fpu sse avx2\n")  # no bf16 at all


def test_tta_views_of_few_faces_in_one_forward_score_as_one_by_one(faces):
    """predict forwards all TTA views of a small batch at once (the offline annotator's one-face
    calls); the scores are those of one forward per view, every head."""
    from dataclasses import replace

    cfg = TrainConfig.tiny(max_steps=3, tta=True)
    model = train(faces, cfg, device="cpu", log=_silent).model
    together = predict(model, faces.images[:3], "cpu", cfg)
    one_by_one = predict(model, faces.images[:3], "cpu", replace(cfg, eval_batch_size=1))
    for k in ("expression_probs", "va", "au_probs"):
        assert together[k].shape == one_by_one[k].shape
        np.testing.assert_allclose(together[k], one_by_one[k], atol=1e-5)
