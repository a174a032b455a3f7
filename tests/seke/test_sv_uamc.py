"""Pins the SV-UAMC loop's behaviour with a scripted annotator and the real consistency scorer."""

from __future__ import annotations

import pyarrow as pa
import pytest

from seke.annotation import FaceItem, Labels, PromptSpec
from seke.annotators.simulated import ScriptedAnnotator, tiny_png
from seke.knowledge import knowledge_v1
from seke.schemas import MC_SAMPLES, VERIFIED_LABELS
from seke.sv_uamc import SamplingConfig, run_sampling

KN = knowledge_v1()
SMILE = {6: 1.0, 12: 1.0}
HAPPY_VA = dict(valence=0.8, arousal=0.5)


def face(fid: str, known: Labels = Labels()) -> FaceItem:
    return FaceItem(fid, tiny_png(hash(fid) % 1000), known, source="test", subject_id="s1")


def prompt_for(f: FaceItem) -> PromptSpec:
    return PromptSpec.make("test-v1", [{"role": "user", "content": "label"}], f.known.missing_granularities())


def run(faces, annotator, config=SamplingConfig(), prompts=None):
    prompts = prompts if prompts is not None else {f.face_id: prompt_for(f) for f in faces}
    return run_sampling(faces, prompts, annotator, KN, config)


def by_id(result):
    return {r["face_id"]: r for r in result.labels}


# Faces whose only missing granularity is the expression (VA and AUs known, smiling).
def smiling(fid: str) -> FaceItem:
    return face(fid, Labels(None, aus=SMILE, **HAPPY_VA))


def test_stops_early_on_unanimous_samples():
    f = smiling("a")
    ann = ScriptedAnnotator({"a": [Labels("happiness")]})
    res = run([f], ann)
    row = by_id(res)["a"]
    assert row["n_samples"] == 3 and row["n_calls"] == 3
    assert row["stop_reason"] == "confident" and row["verdict"] == "none"
    assert row["status"] == "accepted" and row["expression"] == "happiness"
    assert row["expression_origin"] == "generated"
    assert len(ann.sample_log) == 1 and ann.verify_log == []


def test_spends_n_max_on_split_samples_and_verifies():
    f = face("b")  # nothing known: consistency has nothing to contradict, only uncertainty drives
    script = [Labels("happiness", 0.5, 0.3, {12: 1.0}), Labels("neutral", 0.0, 0.0, {}),
              Labels("sadness", -0.5, -0.3, {15: 1.0})]
    ann = ScriptedAnnotator({"b": script})
    res = run([f], ann, SamplingConfig(k=3, n_max=10))
    row = by_id(res)["b"]
    assert row["n_samples"] == 10 and row["stop_reason"] == "n_max"
    assert [entry[0][2] for entry in ann.sample_log] == [3, 3, 3, 1]
    assert ann.verify_log == [["b"]] and row["verdict"] == "accept"
    assert row["n_calls"] == 11 and row["expression_origin"] == "verified"


def test_rounds_batch_all_active_faces_together():
    faces = [smiling("u"), face("s")]
    ann = ScriptedAnnotator({"u": [Labels("happiness")],
                             "s": [Labels("fear", -0.6, 0.6, {}), Labels("surprise", 0.3, 0.7, {})]})
    run(faces, ann)
    assert [sorted(fid for fid, _, _ in entry) for entry in ann.sample_log][:2] == [["s", "u"], ["s"]]


def test_verifies_inconsistent_faces_even_when_confident():
    f = smiling("c")  # smile AUs and positive VA, but every sample says anger
    ann = ScriptedAnnotator({"c": [Labels("anger")]}, verdicts={"c": "accept"})
    row = by_id(run([f], ann))["c"]
    assert row["stop_reason"] == "confident" and row["n_samples"] == 3
    assert row["consistency_flags"] and row["consistency_score"] < 1.0
    assert ann.verify_log == [["c"]] and row["verdict"] == "accept" and row["n_calls"] == 4


def test_abstains_on_rejection_but_keeps_candidate():
    f = smiling("d")
    ann = ScriptedAnnotator({"d": [Labels("anger")]}, verdicts={"d": "reject"})
    row = by_id(run([f], ann))["d"]
    assert row["status"] == "abstained" and row["abstain_reason"] == "verifier_rejected"
    assert row["verdict"] == "reject" and "scripted reject" in row["verdict_reasons"]
    assert row["expression"] == "anger"  # candidate kept for the review queue


def test_correction_replaces_generated_labels_only():
    known = Labels(None, aus=SMILE, **HAPPY_VA)
    f = face("e", known)
    ann = ScriptedAnnotator({"e": [Labels("anger", -0.9, 0.9, {4: 1.0})]}, verdicts={"e": "correct"},
                            corrections={"e": Labels("happiness", -1.0, -1.0, {})})
    row = by_id(run([f], ann))["e"]
    assert row["verdict"] == "correct" and row["status"] == "accepted"
    assert row["expression"] == "happiness" and row["expression_origin"] == "verified"
    assert (row["valence"], row["arousal"], row["va_origin"]) == (0.8, 0.5, "human")
    assert row["aus"] == [6, 12] and row["au_origin"] == "human"
    assert row["consistency_flags"] == []  # re-scored after the correction


def test_carries_human_labels_through():
    f = face("h", Labels("fear"))
    # The annotator echoes a different expression; only VA and AUs were asked for.
    fear_aus = {au: 1.0 for au in (1, 2, 4, 5, 7, 20, 26)}
    ann = ScriptedAnnotator({"h": [Labels("happiness", -0.6, 0.6, fear_aus)]})
    res = run([f], ann)
    row = by_id(res)["h"]
    assert row["expression"] == "fear" and row["expression_origin"] == "human"
    assert row["expression_confidence"] == 1.0
    assert row["va_origin"] == "generated" and row["valence"] == pytest.approx(-0.6)
    assert row["aus"] == [1, 2, 4, 5, 7, 20, 26] and row["verdict"] == "none"


def test_nothing_missing_costs_no_call():
    f = face("n", Labels("happiness", aus=SMILE, **HAPPY_VA))
    ann = ScriptedAnnotator({})
    row = by_id(run([f], ann))["n"]
    assert row["n_calls"] == 0 and row["stop_reason"] == "nothing_missing" and row["status"] == "accepted"
    assert ann.sample_log == []


def test_parse_failures_are_kept_and_ignored():
    f = smiling("p")
    ann = ScriptedAnnotator({"p": [None] + [Labels("happiness")] * 9})
    res = run([f], ann, SamplingConfig(threshold_expression=0.10))  # 2 agreeing votes are not enough
    row = by_id(res)["p"]
    statuses = [s["parse_status"] for s in res.samples]
    assert statuses.count("failed") == 1 and row["expression"] == "happiness"
    assert row["n_samples"] == 6 and row["stop_reason"] == "confident"  # 2 ok after round 1: one more round


def test_all_failed_face_is_abstained_without_verification():
    f = smiling("x")
    ann = ScriptedAnnotator({"x": [None]})
    row = by_id(run([f], ann))["x"]
    assert row["status"] == "abstained" and row["abstain_reason"] == "all_samples_failed"
    assert row["n_samples"] == 10 and ann.verify_log == []


def test_one_failing_face_does_not_sink_the_batch():
    faces = [smiling("ok"), smiling("boom")]
    ann = ScriptedAnnotator({"ok": [Labels("happiness")], "boom": [Labels("happiness")]},
                            raise_for=frozenset({"boom"}))
    rows = by_id(run(faces, ann))
    assert rows["ok"]["status"] == "accepted"
    assert rows["boom"]["status"] == "abstained" and rows["boom"]["abstain_reason"] == "all_samples_failed"


def test_face_without_prompt_is_abstained():
    f = smiling("q")
    row = by_id(run([f], ScriptedAnnotator({}), prompts={}))["q"]
    assert row["status"] == "abstained" and row["abstain_reason"] == "no_prompt"


@pytest.mark.parametrize("strategy, n", [("single_shot", 1), ("fixed_n", 10)])
def test_baselines_share_the_code_path(strategy, n):
    f = smiling("z")
    ann = ScriptedAnnotator({"z": [Labels("anger")]})
    res = run([f], ann, SamplingConfig.baseline(strategy))
    row = by_id(res)["z"]
    assert row["n_samples"] == n and row["strategy"] == strategy and row["stop_reason"] == strategy
    assert row["verdict"] == "none" and ann.verify_log == []  # baselines do not verify
    assert {s["strategy"] for s in res.samples} == {strategy}


def test_rows_match_lake_schemas():
    faces = [smiling("a"), face("b"), face("h", Labels("fear"))]
    ann = ScriptedAnnotator({"a": [Labels("happiness")], "b": [None, Labels("neutral", 0.0, 0.0, {})],
                             "h": [Labels(None, -0.5, 0.5, {4: 0.9})]})
    res = run(faces, ann)
    samples = pa.Table.from_pylist(res.samples, schema=MC_SAMPLES)
    labels = pa.Table.from_pylist(res.labels, schema=VERIFIED_LABELS)
    assert samples.num_rows == sum(r["n_samples"] for r in res.labels)
    assert labels.num_rows == 3
    assert res.stats["calls"] == sum(r["n_calls"] for r in res.labels)
    assert set(res.stats["stop_reasons"]) <= {"confident", "n_max"}


def test_unproduced_granularity_stays_null_and_spends_budget():
    f = face("g", Labels(aus=SMILE))  # expression and VA missing; the annotator only names expressions
    ann = ScriptedAnnotator({"g": [Labels("happiness")]})
    row = by_id(run([f], ann, SamplingConfig(verify=False)))["g"]
    assert row["n_samples"] == 10 and row["stop_reason"] == "n_max"
    assert row["expression"] == "happiness" and row["valence"] is None and row["va_origin"] is None
    assert row["status"] == "accepted" and row["aus"] == [6, 12]


def test_default_thresholds_stop_on_a_majority_only():
    faces = [smiling("m"), smiling("t")]
    ann = ScriptedAnnotator({"m": [Labels("happiness"), Labels("happiness"), Labels("contempt")],
                             "t": [Labels("happiness"), Labels("contempt"), Labels("neutral")]})
    rows = by_id(run(faces, ann))
    assert rows["m"]["n_samples"] == 3 and rows["m"]["stop_reason"] == "confident"
    assert rows["t"]["n_samples"] > 3
