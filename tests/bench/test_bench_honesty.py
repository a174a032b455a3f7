"""Quality benches measure what they say and refuse to measure nothing (issue 15, item 5)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import polars as pl
import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def _fer_like(root: Path, split: str) -> Path:
    d = root / "fer2013"
    d.mkdir(parents=True)
    pl.DataFrame({"image": ["a.png"], "split": [split], "expression": ["happy"]}).write_csv(d / "manifest.csv")
    return root


def test_sv_uamc_without_real_data_exits_non_zero_instead_of_simulating(tmp_path, capsys):
    sv = _load("sv_uamc")
    assert sv.main(["--data", str(tmp_path / "nowhere")]) == 2
    # a FER-like set without the named split: an error naming its splits, not 0 faces
    root = _fer_like(tmp_path / "d", "PublicTest")
    assert sv.main(["--data", str(root), "--split", "validation"]) == 2
    out = capsys.readouterr()
    assert "RESULT" not in out.out and "PublicTest" in out.err and "--simulated" in out.err
    # the default (auto) takes that held-out split: its one row is tried (its image is absent)
    assert sv.main(["--data", str(root)]) == 2
    out = capsys.readouterr()
    assert "RESULT" not in out.out and "fer2013: 0 faces, 1 rejected" in out.err


def test_sv_uamc_simulated_result_says_so(capsys):
    sv = _load("sv_uamc")
    assert sv.main(["--simulated", "--faces", "40", "--regimes", "default"]) == 0
    result = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("RESULT ")]
    assert len(result) == 1
    kv = dict(x.split("=", 1) for x in result[0].split()[1:])
    assert kv["source"] == "simulated" and kv["data"] == "simulated-default:40@seed23"
    for key in ("calls_ratio", "accepted_error_ratio", "fixed10_calls", "fixed10_acc",
                "single_shot_accepted_error", "sv_calls"):
        float(kv[key])
    assert float(kv["calls_ratio"]) == float(kv["sv_calls"]) / float(kv["fixed10_calls"]) or \
        abs(float(kv["calls_ratio"]) - float(kv["sv_calls"]) / float(kv["fixed10_calls"])) < 2e-3


def test_annotator_quality_without_the_asked_data_exits_non_zero(tmp_path, capsys):
    aq = _load("annotator_quality")
    assert aq.main(["--data", str(tmp_path / "missing")]) == 2
    root = _fer_like(tmp_path / "d", "train")
    assert aq.main(["--data", str(root / "fer2013"), "--split", "validation"]) == 2
    assert "split='validation'" in capsys.readouterr().err
    assert aq.main(["--data", str(tmp_path / "d" / "nothing_here")]) == 2  # a folder of no sets
    assert "no manifest.csv" in capsys.readouterr().err


# ---- issue 19 item 3: every RESULT says source=, data= and its baselines; no data -> exit 2 ----

def _result(out: str) -> dict[str, str]:
    lines = [ln for ln in out.splitlines() if ln.startswith("RESULT ")]
    assert len(lines) == 1, out[-2000:]
    return dict(x.split("=", 1) for x in lines[0].split()[1:])


def test_benches_asked_for_absent_data_exit_non_zero(tmp_path, monkeypatch, capsys):
    nowhere = tmp_path / "nowhere"
    fer_like = _fer_like(tmp_path / "d", "train") / "fer2013"  # a set without a validation split
    assert _load("label_noise").main(["--data", str(nowhere)]) == 2
    assert _load("label_noise").main(["--data", str(fer_like)]) == 2
    assert _load("annotator_speed").main(["--data", str(nowhere)]) == 2
    assert _load("feid_fer2013").main(["--data-dir", str(nowhere), "--work", str(tmp_path / "w")]) == 2
    assert _load("pack_fer").main(["--data-dir", str(nowhere), "--out", str(tmp_path / "x.npz")]) == 2
    assert _load("phash_threshold").main(["--ckplus", str(nowhere)]) == 2
    assert _load("au_features").main(["--data", str(nowhere)]) == 2
    cascade = _load("vllm_cascade")
    monkeypatch.setattr(cascade, "SHARED", nowhere)
    assert cascade.main(["--faces", "2"]) == 2
    ce = _load("checkpoint_eval")
    monkeypatch.setattr(ce, "load_fer_validation", lambda *a, **k: None)
    monkeypatch.setattr(ce, "load_ckplus", lambda *a, **k: None)
    assert ce.main([str(tmp_path / "ckpt")]) == 2
    monkeypatch.setenv("SEKE_SHARED_DATA", str(nowhere))
    assert _load("products").main([]) == 2
    out = capsys.readouterr()
    assert "RESULT" not in out.out and out.err.count("no data") == 10, out.err
    assert _load("second_model_weight").main(["--data", str(nowhere), "--expression-checkpoint",
                                              str(tmp_path / "ckpt")]) == 2
    out = capsys.readouterr()
    assert "RESULT" not in out.out and "no real data" in out.err, out.err
    assert _load("verifier_signals").main(["--data", str(nowhere)]) == 2
    out = capsys.readouterr()
    assert "RESULT" not in out.out and "no real data" in out.err, out.err
    assert _load("au_features").main(["--data", str(fer_like)]) == 2  # no AU columns: not FACS-coded
    out = capsys.readouterr()
    assert "RESULT" not in out.out and "not a FACS-coded set" in out.err, out.err


def test_synthetic_benches_say_so_with_their_baselines(capsys):
    assert _load("lake_commit").main(["--rows", "50", "--repeats", "1", "--no-s3"]) == 0
    kv = _result(capsys.readouterr().out)
    assert kv["source"] == "simulated" and kv["data"] == "synthetic:50"
    assert float(kv["local_hive_ms"]) > 0  # the baseline, measured in the same run
    assert _load("vllm_throughput").main(["--faces", "4", "--n", "2", "--repeats", "1", "--latency", "0.02"]) == 0
    kv = _result(capsys.readouterr().out)
    assert kv["source"] == "simulated" and kv["data"] == "synthetic:4x2" and float(kv["bare_samples_per_s"]) > 0
    assert _load("vllm_cascade").main(["--simulated", "--faces", "3", "--requests", "20", "--rpm", "6000"]) == 0
    kv = _result(capsys.readouterr().out)
    assert kv["source"] in ("simulated", "offline+simulated") and kv["data"] == "synthetic:6"
    float(kv["big_alone_usd_per_accepted"]), float(kv["big_alone_error"])


def test_selective_refuses_bad_targets_before_measuring(tmp_path, capsys):
    sel = _load("selective")
    for targets in ("0", "0.1,1.0", "x"):
        assert sel.main(["--data", str(tmp_path / "nowhere"), "--targets", targets]) == 2
        assert "bad targets" in capsys.readouterr().err
    assert sel.main(["--data", str(tmp_path / "nowhere")]) == 2  # no data: no simulated fallback
    assert "no real data" in capsys.readouterr().err


def test_selective_halves_keep_each_subject_on_one_side():
    from seke.annotation import FaceItem

    half = _load("selective").half
    frames = [FaceItem(f"ck{i}", b"", source="ckplus", subject_id=f"S{i // 3:03d}") for i in range(300)]
    by_subject: dict[str, set[int]] = {}
    for f in frames:
        by_subject.setdefault(f.subject_id, set()).add(half(f))
    assert all(len(sides) == 1 for sides in by_subject.values())  # no person in both halves
    assert 0.3 < sum(half(f) for f in frames) / len(frames) < 0.7
    loose = [FaceItem(f"fer{i}", b"", source="fer2013") for i in range(300)]  # no subjects: by face id
    assert 0.4 < sum(half(f) for f in loose) / len(loose) < 0.6


def test_selective_ceiling_is_the_largest_untied_prefix_within_the_target():
    from seke.annotation import Labels

    ceiling = _load("selective").ceiling
    scores, right = [0.9, 0.8, 0.8, 0.5, 0.4], [True, True, False, False, True]
    rows = [{"face_id": f"f{i}", "status": "accepted" if i < 4 else "rejected", "expression_confidence": sc,
             "expression": "happy" if ok else "sad"} for i, (sc, ok) in enumerate(zip(scores, right))]
    gold = {r["face_id"]: Labels(expression="happy") for r in rows}
    src = {r["face_id"]: "a" for r in rows}
    # prefixes 1..4 of the accepted faces have error 0, 0 (splits the tie at 0.8: no), 1/3, 1/2;
    # the rejected fifth face counts in the coverage denominator only
    assert ceiling(rows, gold, src, "expression", "a", 0.2) == 1 / 5
    assert ceiling(rows, gold, src, "expression", "a", 0.4) == 3 / 5
    assert ceiling(rows, gold, src, "expression", "a", 0.5) == 4 / 5
    rows[0]["expression"] = "sad"
    assert ceiling(rows, gold, src, "expression", "a", 0.2) == 0.0


def test_selective_perfect_rejector_rejects_wrong_labels_first():
    from seke.annotation import Labels

    floor = _load("selective").perfect_rejector_error
    rows = [{"face_id": f"{s}{i}", "expression": "happy" if i < 2 else "sad"} for s in "ab" for i in range(4)]
    gold = {r["face_id"]: Labels(expression="happy") for r in rows}
    src = {r["face_id"]: r["face_id"][0] for r in rows}
    # source a keeps 3 of 4 (one of its two wrong labels rejected), b keeps all 4 (both wrong stay)
    assert floor(rows, gold, {"a": (0, 0.75, 4), "b": (0, 1.0, 4)}, src, ["a", "b"]) == 3 / 7
    assert floor(rows, gold, {"a": (0, 0.5, 4), "b": (0, 0.5, 4)}, src, ["a", "b"]) == 0.0


def test_bad_checkpoint_weights_are_refused_by_every_bench_that_takes_them(tmp_path, capsys):
    for name in ("selective", "sv_uamc", "annotator_quality", "verifier_signals"):
        with pytest.raises(SystemExit) as exc:
            _load(name).main(["--data", str(tmp_path / "nowhere"), "--expression-checkpoint-weights", "ckplus=2"])
        assert exc.value.code == 2
        assert "second model weight for 'ckplus' must be in [0, 1]" in capsys.readouterr().err


def test_selective_rows_out_keeps_every_face_and_strategy(tmp_path):
    import duckdb
    from seke.annotation import Labels

    write_rows = _load("selective").write_rows
    probs = [0.02, 0.9, 0.02, 0.02, 0.01, 0.01, 0.01, 0.01]  # in EXPRESSIONS order
    sv = [{"face_id": "a", "status": "accepted", "expression": "happy", "expression_confidence": 0.9, "verdict": "none",
           "expression_probs": probs, "consistency_score": 0.8, "n_samples": 3, "subject_id": "S005"},
          {"face_id": "b", "status": "abstained", "abstain_reason": "verifier_rejected", "expression": "sad",
           "expression_confidence": 0.4, "verdict": "reject"}]
    base = {"single_shot": [{"face_id": "b", "status": "accepted", "expression": "happy", "expression_confidence": 0.7}]}
    gold = {"a": Labels(expression="happy"), "b": Labels(expression="happy")}
    path = write_rows(tmp_path / "r" / "rows.parquet", sv, base, gold, {"a": "fer2013", "b": "ckplus"}, {"a": 0, "b": 1})
    got = duckdb.sql(f"select strategy, face_id, source, half, status, abstain_reason, expression_loss, expression_score "
                     f"from '{path}' order by strategy desc, face_id").fetchall()
    assert got == [("sv_uamc", "a", "fer2013", 0, "accepted", None, 0.0, 0.9),
                   ("sv_uamc", "b", "ckplus", 1, "abstained", "verifier_rejected", 1.0, 0.4),
                   ("single_shot", "b", "ckplus", 1, "accepted", None, 0.0, 0.7)]
    extra = duckdb.sql(f"select expression_probs, consistency_score, n_samples, subject_id from '{path}' "
                       f"where strategy = 'sv_uamc' order by face_id").fetchall()
    assert [e[1:] for e in extra] == [(0.8, 3, "S005"), (None, None, None)]
    assert extra[0][0] == pytest.approx(probs) and extra[1][0] is None


def test_certification_methods_bench_refuses_bad_arguments_and_measures_against_the_truth(capsys):
    import numpy as np

    bench = _load("certification_methods")
    assert bench.main(["--draws", "0"]) == 2 and "--draws must be" in capsys.readouterr().err
    score, p_wrong = np.array([0.2, 0.5, 0.9, 0.95]), np.array([0.6, 0.3, 0.1, 0.0])
    assert bench.truth(score, p_wrong, None) == (0.0, 0.0)  # nothing certified: nothing accepted
    assert bench.truth(score, p_wrong, 0.9) == (0.5, 0.05)
    with pytest.raises(ValueError):
        bench.population("nope", np.random.default_rng(0))
    score, p_wrong, subject, sequence = bench.clustered_population(np.random.default_rng(0), subjects=200)
    frames = np.bincount(subject)
    assert len(frames) == 200 and set(frames) <= {3, 6, 9, 12, 15} and len(score) == len(p_wrong) == frames.sum()
    assert ((0 < p_wrong) & (p_wrong < 1)).all() and (np.diff(subject) >= 0).all()
    assert set(np.bincount(sequence)) == {3} and all(len(set(score[sequence == q])) == 1 for q in range(5))


def test_verifier_signals_replay_credits_a_voter_only_for_what_it_changes():
    """The replayed rule: voters that name the gold correct or reject wrong candidates; the
    baseline is single-shot's error among its most confident candidates at the same coverage."""
    vs = _load("verifier_signals")

    def dist(top: str) -> dict[str, float]:
        return {e: (0.9 if e == top else 0.1 / 7) for e in ("neutral", "happiness", "sadness", "surprise",
                                                           "fear", "disgust", "anger", "contempt")}

    def face(gold: str, cand: str, support: float, votes: dict[str, str], bare: str | None = None):
        return vs.ScoredFace("s", gold, cand, support, bare or cand, {n: dist(v) for n, v in votes.items()})

    faces = [face("happiness", "happiness", 0.9, {"geometry": "happiness", "aligned crop": "happiness"}),
             face("anger", "sadness", 0.4, {"geometry": "anger", "aligned crop": "fear"}),   # two against: reject
             face("anger", "sadness", 0.4, {"geometry": "anger", "aligned crop": "anger"}, bare="anger"),  # correct
             face("fear", "fear", 0.5, {"geometry": "anger", "aligned crop": "fear"}),       # one against: keep
             face("sadness", "neutral", 0.8, {})]                                             # no voters: kept
    none = vs.replay(faces, [])
    assert none.coverage == 1.0 and none.accepted_error == pytest.approx(3 / 5) and none.corrected == 0
    full = vs.replay(faces, ["geometry", "aligned crop"])
    assert full.reject_share == pytest.approx(1 / 5) and full.reject_error == 1.0
    assert (full.corrected, full.corrected_right) == (1, 1)
    assert full.accepted_error == pytest.approx(1 / 4)          # only the voter-less neutral face is wrong
    # single-shot's 4 most confident candidates: 0.9 right, 0.8 wrong, 0.5 right, one 0.4 wrong
    assert full.baseline_error == pytest.approx(2 / 4) and full.ratio == pytest.approx(0.5)
    alone = vs.replay(faces, ["geometry"])                      # one voter can neither reject nor outvote
    assert alone.reject_share == 0.0 and alone.corrected == 1   # ...but it corrects with the bare model
    ev = vs.voter_evidence(faces, "geometry")
    assert ev["faces"] == 4 and ev["acc"] == pytest.approx(3 / 4) and ev["error_if_disagree"] == pytest.approx(2 / 3)


def test_verifier_signals_stacked_ranking_uses_what_the_voters_know():
    """When a voter's agreement, not the pooled confidence, tells right from wrong, the stacked
    ranking fitted on one half keeps fewer wrong labels on the other than the pooled confidence."""
    import random

    vs = _load("verifier_signals")
    exprs = ("neutral", "happiness", "sadness", "surprise", "fear", "disgust", "anger", "contempt")
    rng = random.Random(0)

    def faces(n: int):
        out = []
        for _ in range(n):
            right = rng.random() < 0.6
            gold = "happiness" if right else "anger"
            vote = {e: (0.9 if e == gold else 0.1 / 7) for e in exprs}   # the voter names the gold
            out.append(vs.ScoredFace("s", gold, "happiness", rng.uniform(0.3, 0.9), "happiness", {"geometry": vote}))
        return out

    errors = vs.stacked_errors(faces(300), faces(300))
    pooled, stacked = errors["pooled"], errors["stacked"]
    assert stacked[0] < 0.05 < pooled[0] and stacked[1] < pooled[1]
    one_class = [f for f in faces(50) if f.gold == f.candidate]
    assert all(e != e for e in vs.stacked_errors(one_class, faces(20))["stacked"])  # NaN: nothing to fit
