"""Annotator pools on the SV-UAMC path: cascade escalation, cross-model jury, failing members."""

from __future__ import annotations

import json
import socket

import pyarrow as pa
import pytest

from seke.annotation import Labels
from seke.annotators.simulated import ScriptedAnnotator
from seke.annotators.vllm import VLLMAnnotator, VLLMConfig
from seke.pool import AnnotatorPool, PoolEntry, PoolMember, validate_members
from seke.schemas import VERIFIED_LABELS
from tests.fake_openai_server import Behaviour, FakeOpenAIServer

from .test_sv_uamc import KN, by_id, face, run, smiling

HAPPY, NEUTRAL, SAD = Labels("happiness"), Labels("neutral"), Labels("sadness")


def pool(*members, strategy="cascade", verifier=None):
    return AnnotatorPool([PoolEntry(name, ann, unit_cost=cost) for name, ann, cost in members],
                         strategy, verifier)


def test_cascade_escalates_only_unresolved_faces():
    faces = [smiling("easy"), smiling("hard")]
    cheap = ScriptedAnnotator({"easy": [HAPPY], "hard": [HAPPY, NEUTRAL, SAD]}, model="cheap")
    dear = ScriptedAnnotator({"hard": [HAPPY]}, model="dear")
    # given dearest first: the pool orders by unit cost
    res = run(faces, pool(("dear", dear, 1.0), ("cheap", cheap, 0.01)))
    rows = by_id(res)
    assert rows["easy"]["produced_by"] == "cheap" and rows["easy"]["escalations"] == 0
    assert rows["easy"]["n_samples"] == 3 and rows["easy"]["status"] == "accepted"
    assert rows["hard"]["produced_by"] == "dear" and rows["hard"]["escalations"] == 1
    # the dear model saw the hard face only, and its votes alone decided (cheap votes archived)
    assert [fid for batch in dear.sample_log for fid, _, _ in batch] == ["hard"]
    assert rows["hard"]["expression"] == "happiness" and rows["hard"]["stop_reason"] == "confident"
    assert rows["hard"]["n_samples"] == 10 + 3  # cheap spent its n_max, dear stopped after a round
    # sample indices continue across stages: no duplicate (face, index)
    idx = [(r["face_id"], r["sample_index"]) for r in res.samples]
    assert len(idx) == len(set(idx))
    assert {r["model"] for r in res.samples if r["face_id"] == "hard"} == {"cheap", "dear"}
    st = res.stats
    assert st["pool"]["cheap"]["escalated"] == 1 and st["pool"]["cheap"]["resolved"] == 1
    assert st["produced_by"] == {"cheap": 1, "dear": 1} and st["escalations"] == 1
    pa.Table.from_pylist(res.labels, schema=VERIFIED_LABELS)  # columns fit the contract


def test_cascade_escalates_inconsistent_faces_too():
    # VA and AUs known as a smile; the cheap model says "anger" confidently: inconsistent
    f = smiling("x")
    cheap = ScriptedAnnotator({"x": [Labels("anger")]}, model="cheap")
    dear = ScriptedAnnotator({"x": [HAPPY]}, model="dear")
    row = by_id(run([f], pool(("cheap", cheap, 0.0), ("dear", dear, 1.0))))["x"]
    assert row["produced_by"] == "dear" and row["escalations"] == 1 and row["expression"] == "happiness"


def test_single_annotator_rows_name_it():
    ann = ScriptedAnnotator({"a": [HAPPY]})
    row = by_id(run([smiling("a")], ann))["a"]
    assert row["produced_by"] == "scripted/script" and row["verified_by"] is None
    assert row["escalations"] == 0


def test_jury_verifies_with_another_model():
    f = face("b")
    split = [Labels("happiness", 0.5, 0.3, {12: 1.0}), Labels("neutral", 0.0, 0.0, {}),
             Labels("sadness", -0.5, -0.3, {15: 1.0})]
    gen = ScriptedAnnotator({"b": split}, model="gen")
    judge = ScriptedAnnotator({}, verdicts={"b": "reject"}, model="judge")
    other = ScriptedAnnotator({}, model="other")
    res = run([f], pool(("gen", gen, 0.01), ("judge", judge, 0.5), ("other", other, 2.0),
                        strategy="jury"))
    row = by_id(res)["b"]
    assert row["produced_by"] == "gen" and row["verified_by"] == "judge"
    assert row["verdict"] == "reject" and row["status"] == "abstained"
    assert gen.verify_log == [] and judge.verify_log == [["b"]]
    assert judge.sample_log == [] and other.sample_log == []  # jury: one generator only
    # self-verification (cascade of one) for comparison: the generator verifies itself
    gen2 = ScriptedAnnotator({"b": split}, model="gen")
    row2 = by_id(run([f], pool(("gen", gen2, 0.01))))["b"]
    assert row2["verified_by"] == "gen" and gen2.verify_log == [["b"]]


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_down_and_unauthorised_members_pass_faces_on_without_leaking_the_key():
    key = "sk-live-POOLSECRET-abcdef0123456789"
    faces = [smiling(f"f{i}") for i in range(3)]
    dear = ScriptedAnnotator({f.face_id: [HAPPY] for f in faces}, model="dear")
    with FakeOpenAIServer(Behaviour(required_api_key="sk-right-key-000000", echo_key_in_401=True)) as srv:
        unauth = VLLMAnnotator(VLLMConfig(srv.base_url, "m401", api_key=key, max_retries=0,
                                          capabilities="n,json_schema"), KN)
        down = VLLMAnnotator(VLLMConfig(f"http://127.0.0.1:{_closed_port()}/v1", "mdown", api_key=key,
                                        max_retries=0, timeout_s=2, capabilities="n,json_schema"), KN)
        try:
            res = run(faces, pool(("down", down, 0.0), ("unauth", unauth, 0.001), ("dear", dear, 1.0)))
        finally:
            unauth.close()
            down.close()
        # each failing member got one round, not n_max
        assert len(srv.chat_requests(with_image=True)) == 3
    rows = by_id(res)
    assert all(r["produced_by"] == "dear" and r["status"] == "accepted" for r in rows.values())
    assert all(r["escalations"] == 2 for r in rows.values())
    st = res.stats["pool"]
    assert st["down"]["failed"] and st["unauth"]["failed"] and not st["dear"]["failed"]
    assert any("connection_error" in e for e in st["down"]["errors"])
    assert any("401" in e for e in st["unauth"]["errors"])
    text = json.dumps([res.stats, res.labels, res.samples], default=str)
    assert key not in text and key[8:20] not in text and "POOLSECRET" not in text


def test_pool_configuration_errors_are_clear_and_complete():
    ok = [PoolMember("a", price_input_per_1m=0.1, price_output_per_1m=0.4),
          PoolMember("off", kind="offline")]
    validate_members(ok, "cascade")
    with pytest.raises(ValueError) as e:
        validate_members([PoolMember("a", price_input_per_1m=None, price_output_per_1m=-1.0),
                          PoolMember("a", kind="gpu", price_input_per_1m=1, price_output_per_1m=1)],
                         "cascade", limits={"a": {"rpm": -3}})
    msg = str(e.value)
    for part in ("price_input_per_1m is missing", "price_output_per_1m=-1.0", "used twice",
                 "kind 'gpu'", "rpm=-3"):
        assert part in msg
    with pytest.raises(ValueError, match="jury needs a verifier other than the generator"):
        validate_members([PoolMember("only", price_input_per_1m=1, price_output_per_1m=1)], "jury")
    with pytest.raises(ValueError, match="strategy 'vote'"):
        validate_members(ok, "vote")
