"""Cascade cross-check and the all-faces jury, over the local OpenAI-protocol server.

A cheap stage that is *confidently wrong* (its samples agree, the label is consistent with the
knowledge tables) passes SV-UAMC's uncertainty gate; the cross-check has a different model
re-check it with one verification call before it is final. The dear models here are real
``VLLMAnnotator`` clients over sockets to tests/fake_openai_server.py, whose simulated models
believe the ground truth except with their stated noise and verify by comparing the candidate
with their own belief.
"""

from __future__ import annotations

import hashlib
import json

import polars as pl
import pyarrow as pa

from seke.annotation import Labels
from seke.annotators.simulated import ScriptedAnnotator
from seke.annotators.vllm import VLLMAnnotator, VLLMConfig
from seke.estimate import EstimateMember, History, estimate_run
from seke.pool import AnnotatorPool, PoolEntry
from seke.schemas import VERIFIED_LABELS
from tests.fake_openai_server import _AUS, _VA, Behaviour, FakeOpenAIServer

from .test_pool import _closed_port
from .test_sv_uamc import KN, by_id, face, run


def proto(expr: str) -> Labels:
    """A full, knowledge-consistent label for ``expr`` (prototype VA and AUs)."""
    v, a = _VA[expr]
    return Labels(expr, v, a, {au: 1.0 for au in _AUS[expr]})


def sha(f) -> str:
    return hashlib.sha256(f.image_png).hexdigest()


def vllm(srv: FakeOpenAIServer, model: str, key: str = "test", **kw) -> VLLMAnnotator:
    return VLLMAnnotator(VLLMConfig(srv.base_url, model, api_key=key, max_retries=0, capabilities="n,json_schema",
                                    price_input_per_1m=2.5, price_output_per_1m=10.0, **kw), KN)


def pool(*members, strategy="cascade", verifier=None, cross_check=True):
    return AnnotatorPool([PoolEntry(name, ann, unit_cost=cost) for name, ann, cost in members],
                         strategy, verifier, cross_check)


def verify_requests(srv: FakeOpenAIServer, model: str | None = None) -> list[dict]:
    out = []
    for r in srv.chat_requests(with_image=True):
        body = r.body if isinstance(r.body, dict) else json.loads(r.body)
        text = json.dumps(body.get("messages", []))
        if "Candidate labels" in text and (model is None or body.get("model") == model):
            out.append(body)
    return out


def sample_requests(srv: FakeOpenAIServer, model: str) -> list[dict]:
    out = []
    for r in srv.chat_requests(with_image=True):
        body = r.body if isinstance(r.body, dict) else json.loads(r.body)
        if "Candidate labels" not in json.dumps(body.get("messages", [])) and body.get("model") == model:
            out.append(body)
    return out


def _cheap_and_faces():
    right, wrong = face("right"), face("wrong")
    # confidently wrong on one face: unanimous and consistent (prototype VA and AUs of sadness)
    cheap = ScriptedAnnotator({"right": [proto("happiness")], "wrong": [proto("sadness")]}, model="cheap")
    truth = {sha(right): "happiness", sha(wrong): "happiness"}
    return cheap, [right, wrong], truth


def test_confidently_wrong_cheap_label_is_caught_by_the_cross_check():
    cheap, faces, truth = _cheap_and_faces()
    with FakeOpenAIServer(Behaviour(truth=truth, model_noise={"dear": 0.0})) as srv:
        dear = vllm(srv, "dear")
        try:
            res = run(faces, pool(("cheap", cheap, 0.0), ("dear", dear, 1.0)))
        finally:
            dear.close()
        # one check per face the cheap stage resolved, by the dear model; it sampled the wrong one only
        assert len(verify_requests(srv, "dear")) == 2
        assert len(sample_requests(srv, "dear")) >= 1
    rows = by_id(res)
    assert rows["right"]["produced_by"] == "cheap" and rows["right"]["verified_by"] == "dear"
    assert rows["right"]["checked_by"] == ["dear"] and rows["right"]["verdict"] == "accept"
    assert rows["right"]["status"] == "accepted" and rows["right"]["escalations"] == 0
    assert rows["right"]["n_calls"] == rows["right"]["n_samples"] + 1
    # the wrong one: the dear model rejected it, the face escalated and the dear model labelled it
    assert rows["wrong"]["produced_by"] == "dear" and rows["wrong"]["escalations"] == 1
    assert rows["wrong"]["expression"] == "happiness" and rows["wrong"]["status"] == "accepted"
    assert rows["wrong"]["checked_by"] == ["dear"]
    assert rows["wrong"]["n_calls"] >= rows["wrong"]["n_samples"] + 1
    st = res.stats
    assert st["check_calls"] == 2 and st["pool"]["cheap"]["check_disagreed"] == 1
    assert st["pool"]["dear"]["check_calls"] == 2 and st["cross_check"] is True
    pa.Table.from_pylist(res.labels, schema=VERIFIED_LABELS)  # columns fit the contract


def test_cross_check_off_reproduces_the_old_cascade():
    cheap, faces, truth = _cheap_and_faces()
    with FakeOpenAIServer(Behaviour(truth=truth, model_noise={"dear": 0.0})) as srv:
        dear = vllm(srv, "dear")
        try:
            res = run(faces, pool(("cheap", cheap, 0.0), ("dear", dear, 1.0), cross_check=False))
        finally:
            dear.close()
        assert srv.chat_requests(with_image=True) == []  # the dear model was never asked
    rows = by_id(res)
    assert rows["wrong"]["produced_by"] == "cheap" and rows["wrong"]["expression"] == "sadness"
    assert rows["wrong"]["status"] == "accepted"  # confidently wrong, and accepted
    assert all(r["verified_by"] is None and r["checked_by"] == [] for r in rows.values())
    assert res.stats["check_calls"] == 0 and res.stats["cross_check"] is False


def test_simulated_cheap_model_errors_drop_with_the_cross_check():
    faces = [face(f"s{i}") for i in range(30)]
    expressions = list(_VA)
    truth = {sha(f): expressions[i % len(expressions)] for i, f in enumerate(faces)}
    errors = {}
    for on in (True, False):
        with FakeOpenAIServer(Behaviour(truth=truth, model_noise={"mini": 0.4, "big": 0.0})) as srv:
            mini, big = vllm(srv, "mini", seed=0), vllm(srv, "big", seed=0)
            try:
                res = run(faces, pool(("mini", mini, 0.001), ("big", big, 0.01), cross_check=on))
            finally:
                mini.close()
                big.close()
        acc = [r for r in res.labels if r["status"] == "accepted"]
        errors[on] = sum(r["expression"] != truth[sha(f)] for f in faces for r in acc
                         if r["face_id"] == f.face_id)
        if on:
            # every face the mini model kept was re-checked by big
            assert all(r["checked_by"] == ["big"] for r in res.labels if r["produced_by"] == "mini")
            assert all(r["verified_by"] == "big" for r in acc if r["produced_by"] == "mini")
    assert errors[False] >= 3  # the mini model's confident mistakes are accepted without it
    assert errors[True] == 0   # big (noise 0) rejects each of them and labels the face itself


def test_jury_verifies_every_face_with_another_model():
    faces = [face(f"j{i}") for i in range(4)]
    truth = {sha(f): "happiness" for f in faces}
    for on, expected in ((True, 4), (False, 0)):
        with FakeOpenAIServer(Behaviour(truth=truth, model_noise={"gen": 0.0, "judge": 0.0})) as srv:
            gen, judge = vllm(srv, "gen"), vllm(srv, "judge")
            try:
                res = run(faces, pool(("gen", gen, 0.01), ("judge", judge, 0.5), strategy="jury",
                                      cross_check=on))
            finally:
                gen.close()
                judge.close()
            # the generator is confident on every face: only the cross-check sends them to the judge
            assert len(verify_requests(srv, "judge")) == expected
            assert verify_requests(srv, "gen") == [] and sample_requests(srv, "judge") == []
        rows = res.labels
        assert all(r["produced_by"] == "gen" and r["status"] == "accepted" for r in rows)
        assert [r["verified_by"] for r in rows] == (["judge"] * 4 if on else [None] * 4)
        # the verification answers' billed tokens are recorded (what the estimate learns from)
        if on:
            assert all(r["verify_completion_tokens"] > 0 and r["verify_prompt_tokens"] > 0 for r in rows)
            hist = History.from_frames(pl.DataFrame(res.samples), pl.DataFrame(res.labels))
            mean = sum(r["verify_completion_tokens"] for r in rows) / 4
            assert hist.verify_completion("judge") == (mean, "history")
        else:
            assert all(r["verify_completion_tokens"] is None for r in rows)


def test_a_failing_checker_passes_the_check_on_and_the_key_stays_secret():
    key = "sk-live-CHECKSECRET-0123456789abcdef"
    cheap, faces, truth = _cheap_and_faces()
    with FakeOpenAIServer(Behaviour(truth=truth, model_noise={"dear": 0.0}, required_api_key="sk-right-000000",
                                    echo_key_in_401=True)) as srv:
        unauth = vllm(srv, "mid", key=key)
        dear = vllm(srv, "dear", key="sk-right-000000")
        try:
            res = run(faces, pool(("cheap", cheap, 0.0), ("mid", unauth, 0.1), ("dear", dear, 1.0)))
        finally:
            unauth.close()
            dear.close()
    rows = by_id(res)
    # mid answered 401 to its checks: dear checked instead; the unanswered call is recorded as
    # failed, not billed (not in checked_by, not in n_calls)
    assert rows["right"]["checked_by"] == ["dear"] and rows["right"]["verified_by"] == "dear"
    assert rows["right"]["check_failed_by"] == ["mid"]
    assert rows["right"]["n_calls"] == rows["right"]["n_samples"] + 1
    assert rows["right"]["check_completion_tokens"][0] > 0
    assert rows["right"]["produced_by"] == "cheap" and rows["right"]["status"] == "accepted"
    # the wrong face escalated to mid (401: one round, then on) and dear labelled it
    assert rows["wrong"]["produced_by"] == "dear" and rows["wrong"]["escalations"] == 2
    assert rows["wrong"]["expression"] == "happiness"
    st = res.stats["pool"]
    assert st["mid"]["check_failed"] == 2 and st["mid"]["failed"] and st["dear"]["check_calls"] == 2
    text = json.dumps([res.stats, res.labels, res.samples], default=str)
    assert "CHECKSECRET" not in text


def test_when_no_checker_answers_the_cheap_stage_decision_stands():
    faces = [face("a")]
    cheap = ScriptedAnnotator({"a": [proto("happiness")]}, model="cheap")
    down = VLLMAnnotator(VLLMConfig(f"http://127.0.0.1:{_closed_port()}/v1", "down", api_key="k", max_retries=0,
                                    timeout_s=2, capabilities="n,json_schema"), KN)
    try:
        res = run(faces, pool(("cheap", cheap, 0.0), ("down", down, 1.0)))
    finally:
        down.close()
    row = by_id(res)["a"]
    assert row["produced_by"] == "cheap" and row["status"] == "accepted" and row["verified_by"] is None
    assert row["checked_by"] == [] and row["check_failed_by"] == ["down"] and row["escalations"] == 0
    assert row["n_calls"] == row["n_samples"]  # the unanswered check was not billed
    assert res.stats["check_calls"] == 0 and res.stats["check_failed_calls"] == 1
    assert res.stats["pool"]["cheap"]["unchecked"] == 1 and res.stats["pool"]["down"]["check_failed"] == 1


def test_check_calls_are_billed_and_in_the_estimate():
    cheap, faces, truth = _cheap_and_faces()
    with FakeOpenAIServer(Behaviour(truth=truth, model_noise={"dear": 0.0}, usage_rule="openai")) as srv:
        dear = vllm(srv, "dear")
        try:
            res = run(faces, pool(("cheap", cheap, 0.0), ("dear", dear, 1.0)))
            billed = dear.stats.cost_usd
        finally:
            dear.close()
    sampled_usd = sum(s["cost_usd"] or 0.0 for s in res.samples)
    assert billed > sampled_usd > 0  # the checks are billed on top of the samples
    hist = History.from_frames(pl.DataFrame(res.samples), pl.DataFrame(res.labels))
    assert hist.check_share_by == {"dear": 1.0}
    assert hist.verify_share == 0.0  # the accepted check is no separate verification call
    members = [EstimateMember("cheap", "cheap", kind="offline"), EstimateMember("dear", "dear", 2.5, 10.0)]
    from .test_sv_uamc import prompt_for

    prompts = {f.face_id: prompt_for(f) for f in faces}
    on = estimate_run(faces, prompts, members, history=hist, strategy="cascade")
    off = estimate_run(faces, prompts, members, history=hist, strategy="cascade", cross_check=False)
    dear_on = next(m for m in on.members if m.name == "dear")
    assert dear_on.verify_calls == 2 and "check share history 1.00" in dear_on.source
    # the checks' own answers price them: the recorded completion tokens, not the prior
    check_ct = [c for r in res.labels for c in r["check_completion_tokens"]]
    assert len(check_ct) == 2 and all(c > 0 for c in check_ct)
    assert hist.verify_completion("dear") == (sum(check_ct) / 2, "history")
    assert f"check completion:history {sum(check_ct) / 2:.0f}" in dear_on.source
    assert on.usd > off.usd
    # no checked_by in the history: one check per face a stage keeps, by the next stage
    prior = estimate_run(faces, prompts, members, history=History(), strategy="cascade")
    assert next(m for m in prior.members if m.name == "dear").verify_calls > 0


def test_checkers_are_other_dearer_members_never_a_cheaper_stage():
    a, b, c = (ScriptedAnnotator({}, model=m) for m in "abc")
    judge = ScriptedAnnotator({}, model="judge")
    p = AnnotatorPool([PoolEntry("c", c, unit_cost=1.0), PoolEntry("a", a, unit_cost=0.0),
                       PoolEntry("judge", judge, frozenset({"verify"}), 5.0), PoolEntry("b", b, unit_cost=0.1)])
    assert [e.name for e in p.checkers_for("a")] == ["b", "c", "judge"]
    assert [e.name for e in p.checkers_for("b")] == ["c", "judge"]  # a (cheaper) never re-checks b
    p.verifier = "judge"
    assert [e.name for e in p.checkers_for("a")] == ["judge", "b", "c"]


def test_resource_setting_turns_the_cross_check_off(monkeypatch):
    from resources.settings import default_resources as resources_from_env

    members = json.dumps([{"name": "off", "kind": "offline"}])
    monkeypatch.setenv("SEKE_ANNOTATOR", "pool")
    monkeypatch.setenv("SEKE_ANNOTATOR_POOL", members)
    assert resources_from_env()["annotator"].pool_cross_check is True
    monkeypatch.setenv("SEKE_POOL_CROSS_CHECK", "0")
    assert resources_from_env()["annotator"].pool_cross_check is False
