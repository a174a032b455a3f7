"""VLLMAnnotator against a real local HTTP server speaking the OpenAI protocol (real client)."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from seke.annotation import Annotator, Labels, VerifyRequest
from seke.annotators.vllm import BUDGET_EXHAUSTED, VLLMAnnotator, VLLMConfig, summarise_samples
from seke.cache import ResponseCache
from seke.lake import Lake
from tests.fake_openai_server import Behaviour, FakeOpenAIServer, image_sha_from_body, truth_for

from .conftest import faces, requests

KEY = "sk-test-SECRET-0123456789abcdef"


def make(srv, knowledge, cache=None, **cfg):
    cfg.setdefault("timeout_s", 5.0)
    cfg.setdefault("max_retries", 2)
    return VLLMAnnotator(VLLMConfig(srv.base_url, "fake-vlm", api_key=KEY, **cfg), knowledge, cache)


def test_good_answers_with_n_one_request_per_face(knowledge, caplog):
    caplog.set_level(logging.INFO, logger="seke.vllm")
    with FakeOpenAIServer() as srv, make(srv, knowledge) as ann:
        assert isinstance(ann, Annotator)
        items = faces(4)
        out = ann.sample_batch(requests(items, n=3))
        assert [len(s) for s in out] == [3, 3, 3, 3]
        for face, samples in zip(items, out):
            assert [s.index for s in samples] == [0, 1, 2]
            for s in samples:
                assert s.ok and s.parse_status == "ok" and s.error is None
                assert s.labels.expression == truth_for(__import__("hashlib").sha256(face.image_png).hexdigest())
                assert -1 <= s.labels.valence <= 1 and s.labels.aus is not None
                assert s.backend == "vllm" and s.model == "fake-vlm" and s.prompt_tokens > 0
        img_reqs = srv.chat_requests(with_image=True)
        assert len(img_reqs) == 4 and all(r.body["n"] == 3 for r in img_reqs)
        assert all(r.body["response_format"]["type"] == "json_schema" for r in img_reqs)
    line = [r.getMessage() for r in caplog.records if "capabilities" in r.getMessage()]
    assert len(line) == 1
    assert "n=yes response_format=json_schema logprobs=yes" in line[0]


def test_server_rejecting_n_and_json_schema_falls_back(knowledge, caplog):
    caplog.set_level(logging.INFO, logger="seke.vllm")
    b = Behaviour(supports_n=False, supports_json_schema=False, supports_logprobs=False)
    with FakeOpenAIServer(b) as srv, make(srv, knowledge, seed=100) as ann:
        out = ann.sample_batch(requests(faces(2), n=3))
        assert all(s.parse_status == "ok" for ss in out for s in ss)
        img_reqs = srv.chat_requests(with_image=True)
        assert len(img_reqs) == 6 and all("n" not in r.body for r in img_reqs)
        assert {r.body["response_format"]["type"] for r in img_reqs} == {"json_object"}
        assert sorted(r.body["seed"] for r in img_reqs) == [100, 100, 101, 101, 102, 102]
    msg = " ".join(r.getMessage() for r in caplog.records)
    assert "n=no response_format=json_object logprobs=no" in msg


def test_server_silently_ignoring_n_gets_parallel_requests(knowledge):
    b = Behaviour(supports_n=False, n_unsupported_mode="ignore", supports_json_schema=False,
                  supports_json_object=False)
    with FakeOpenAIServer(b) as srv, make(srv, knowledge, capabilities="n,json_schema") as ann:
        # configured capabilities are wrong: the annotator must notice n was ignored and
        # that json_schema is rejected, and still deliver every sample
        out = ann.sample_batch(requests(faces(2), n=3))
        assert [len(s) for s in out] == [3, 3]
        assert all(s.parse_status == "ok" for ss in out for s in ss)
        assert ann.capabilities.n is False and ann.capabilities.response_format == "none"
        assert ann.stats.probe_calls == 0


def test_malformed_then_repaired_and_failed_after_repair(knowledge):
    with FakeOpenAIServer(Behaviour(supports_n=False)) as srv, make(srv, knowledge) as ann:
        items = faces(3)
        srv.script_for(items[0].image_png, ["malformed", "good"])
        srv.script_for(items[1].image_png, ["fenced"])
        srv.script_for(items[2].image_png, ["bad_values", "bad_values"])
        out = ann.sample_batch(requests(items, n=1))
        a, b, c = (ss[0] for ss in out)
        assert a.parse_status == "repaired" and a.error.startswith("repaired: truncated JSON")
        assert a.labels.expression is not None
        assert b.parse_status == "ok"      # fenced JSON parsed tolerantly, no repair needed
        assert c.parse_status == "failed" and "unknown expression 'bored'" in c.error
        assert "after repair" in c.error and c.labels == Labels()
        assert ann.stats.repair_calls == 2
        repairs = [r.body["messages"] for r in srv.chat_requests(with_image=True)
                   if r.body["messages"][-2]["role"] == "assistant"]
        assert len(repairs) == 2 and all("could not be used" in m[-1]["content"] for m in repairs)


@pytest.mark.parametrize("action", ["refusal", "refusal_field"])
def test_refusals_fail_with_reason_without_repair(knowledge, action):
    with FakeOpenAIServer(Behaviour(supports_n=False)) as srv, make(srv, knowledge) as ann:
        srv.script([action])
        (s,), = ann.sample_batch(requests(faces(1), n=1))
        assert s.parse_status == "failed" and s.error.startswith("refusal: ")
        assert ann.stats.repair_calls == 0 and len(srv.chat_requests(with_image=True)) == 1


def test_429_retry_after_is_honoured(knowledge):
    with FakeOpenAIServer() as srv, make(srv, knowledge) as ann:
        srv.script([("status", 429, {"retry-after": "0.4"}), "good"])
        (s,), = ann.sample_batch(requests(faces(1), n=1))
        assert s.parse_status == "ok"
        t = [r.t for r in srv.chat_requests(with_image=True)]
        assert len(t) == 2 and t[1] - t[0] >= 0.38


def test_persistent_500_and_timeout_fail_only_their_samples(knowledge):
    with FakeOpenAIServer(Behaviour(supports_n=False)) as srv, \
            make(srv, knowledge, max_retries=1, timeout_s=0.5) as ann:
        items = faces(3)
        srv.script_for(items[0].image_png, [("status", 500), ("status", 500)])
        srv.script_for(items[1].image_png, [("sleep", 3), ("sleep", 3)])
        out = ann.sample_batch(requests(items, n=1))
        e500, etime, good = (ss[0] for ss in out)
        assert e500.parse_status == "failed" and e500.error.startswith("http_500")
        assert etime.parse_status == "failed" and etime.error.startswith("timeout")
        assert good.parse_status == "ok"


def test_budget_max_calls_stops_cleanly(knowledge):
    with FakeOpenAIServer(Behaviour(supports_n=False)) as srv, make(srv, knowledge, max_calls=3) as ann:
        out = ann.sample_batch(requests(faces(2), n=3))
        flat = [s for ss in out for s in ss]
        assert len(flat) == 6
        assert sum(s.parse_status == "ok" for s in flat) == 3
        assert sum(s.error == BUDGET_EXHAUSTED for s in flat) == 3
        assert len(srv.chat_requests(with_image=True)) == 3
        # the next batch is refused too (new samples), still without raising; cached ones are free
        again = ann.sample_batch(requests(faces(1), n=1, first_index=5) + requests(faces(1), n=1))
        assert again[0][0].error == BUDGET_EXHAUSTED
        assert again[1][0].cache_hit and again[1][0].ok


def test_budget_max_usd_and_cost_accounting(knowledge):
    prices = dict(price_input_per_1m=2.5, price_output_per_1m=10.0)
    with FakeOpenAIServer(Behaviour(supports_n=False)) as srv, \
            make(srv, knowledge, max_usd=0.02, max_concurrency=1, **prices) as ann:
        out = ann.sample_batch(requests(faces(10), n=1))
        flat = [s for ss in out for s in ss]
        paid = [s for s in flat if s.ok]
        for s in paid:
            assert s.cost_usd == pytest.approx((s.prompt_tokens * 2.5 + s.completion_tokens * 10) / 1e6)
        spent = sum(s.cost_usd for s in flat)
        assert 0 < spent <= 0.02 + max(s.cost_usd for s in paid)
        assert 0 < len(paid) < 10
        assert all(s.error == BUDGET_EXHAUSTED for s in flat if not s.ok)
        summary = summarise_samples(flat)
        assert summary["budget_exhausted"] == 10 - len(paid)
        assert summary["cost_usd"] == pytest.approx(spent, abs=1e-6)


def test_cache_hits_are_free_and_survive_restart(knowledge, tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    with FakeOpenAIServer() as srv:
        with make(srv, knowledge, ResponseCache(lake, model="fake-vlm"), price_input_per_1m=1.0) as ann:
            first = ann.sample_batch(requests(faces(3), n=3))
        assert all(not s.cache_hit and s.cost_usd > 0 for ss in first for s in ss)
        n_before = len(srv.chat_requests(with_image=True))
        with make(srv, knowledge, ResponseCache(lake, model="fake-vlm"), price_input_per_1m=1.0) as ann2:
            second = ann2.sample_batch(requests(faces(3), n=3))
            # a new sample index for the same face is a miss (more MC samples are new samples)
            more = ann2.sample_batch(requests(faces(1), n=2, first_index=3))
        assert len(srv.chat_requests(with_image=True)) == n_before + 1
        for a, b in zip((s for ss in first for s in ss), (s for ss in second for s in ss)):
            assert b.cache_hit and b.cost_usd == 0 and b.prompt_tokens == 0
            assert (a.labels, a.index, a.raw_text) == (b.labels, b.index, b.raw_text)
        assert [s.index for s in more[0]] == [3, 4] and not more[0][0].cache_hit
        # other sampling params are other samples
        with make(srv, knowledge, ResponseCache(lake, model="fake-vlm"), temperature=1.0) as ann3:
            third = ann3.sample_batch(requests(faces(1), n=1))
        assert not third[0][0].cache_hit


def test_transport_failures_are_not_cached(knowledge, tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    with FakeOpenAIServer(Behaviour(supports_n=False)) as srv:
        with make(srv, knowledge, ResponseCache(lake), max_retries=0) as ann:
            srv.script([("status", 500)])
            (s,), = ann.sample_batch(requests(faces(1), n=1))
            assert s.error.startswith("http_500")
        with make(srv, knowledge, ResponseCache(lake)) as ann:
            (s,), = ann.sample_batch(requests(faces(1), n=1))
            assert s.parse_status == "ok" and not s.cache_hit


CRASH_SCRIPT = """
import os, sys
sys.path[:0] = [{root!r}, {tests!r}]
from seke.annotators.vllm import VLLMAnnotator, VLLMConfig
from seke.cache import ResponseCache
from seke.knowledge import knowledge_v1
from seke.lake import Lake
from conftest import faces, requests
ann = VLLMAnnotator(VLLMConfig({url!r}, "fake-vlm", api_key="k"), knowledge_v1(),
                    ResponseCache(Lake({lake!r})))
out = ann.sample_batch(requests(faces(2), n=2))
print("DONE", sum(s.ok for ss in out for s in ss), flush=True)
os._exit(17)   # crash: no close(), no atexit, no finally
"""


def test_finished_samples_are_hits_after_a_crash(knowledge, tmp_path):
    root = Path(__file__).resolve().parents[3]
    lake_dir = str(tmp_path / "lake")
    with FakeOpenAIServer() as srv:
        code = CRASH_SCRIPT.format(root=str(root), tests=str(Path(__file__).parent), url=srv.base_url,
                                   lake=lake_dir)
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 17, proc.stderr[-2000:]
        assert "DONE 4" in proc.stdout
        before = len(srv.chat_requests(with_image=True))
        with make(srv, knowledge, ResponseCache(Lake(lake_dir))) as ann:
            out = ann.sample_batch(requests(faces(2), n=2))
        assert all(s.cache_hit for ss in out for s in ss)
        assert len(srv.chat_requests(with_image=True)) == before


def test_verify_accept_correct_and_failures(knowledge, tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    corrected = ('{"verdict": "correct", "reasons": ["brows lowered, lips pressed"], "corrected": '
                 '{"expression": "anger", "valence": -0.5, "arousal": 0.6, "rationale": "x"}}')
    with FakeOpenAIServer() as srv, make(srv, knowledge, ResponseCache(lake)) as ann:
        items = faces(4)
        for item, acts in zip(items, [["good"], [("text", corrected)], ["refusal"],
                                      [("text", "no idea"), ("text", "still no")]]):
            srv.script_for(item.image_png, acts)
        cand = Labels(expression="happiness", valence=0.7, arousal=0.4)
        vs = ann.verify_batch([VerifyRequest(f, cand, ("uncertain",)) for f in items])
        assert [v.verdict for v in vs] == ["accept", "correct", "reject", "reject"]
        assert vs[1].corrected == Labels("anger", -0.5, 0.6, None)
        assert vs[2].reasons[0].startswith("verification_failed: refusal")
        assert vs[3].reasons[0].startswith("verification_failed: parse")
        body = srv.chat_requests(with_image=True)[0].body
        assert body["temperature"] == 0.0
        assert body["response_format"]["json_schema"]["name"] == "seke_verification"
        again = ann.verify_batch([VerifyRequest(items[1], cand, ("uncertain",))])
        assert again[0].cache_hit and again[0].verdict == "correct"


def test_sync_wrapper_inside_a_running_event_loop(knowledge):
    with FakeOpenAIServer() as srv, make(srv, knowledge) as ann:
        async def inside():
            return ann.sample_batch(requests(faces(2), n=2))
        out = asyncio.run(inside())
        assert all(s.ok for ss in out for s in ss)


# ---- security ------------------------------------------------------------------------------
def test_api_key_never_leaks_and_images_are_data_urls(knowledge, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    lake = Lake(str(tmp_path / "lake"))
    b = Behaviour(required_api_key=KEY)
    with FakeOpenAIServer(b) as srv:
        with make(srv, knowledge, ResponseCache(lake)) as ann:
            items = faces(3)
            srv.script_for(items[0].image_png, ["malformed", "good"])
            srv.script_for(items[1].image_png, [("status", 500)] * 3)
            out = ann.sample_batch(requests(items, n=1))
            vs = ann.verify_batch([VerifyRequest(faces(1)[0], Labels(expression="fear"), ())])
            text = repr(ann) + repr(ann.config) + repr(ann.stats) + repr(out) + repr(vs)
            assert KEY not in text
        # wrong key: the server answers 401; the error must not carry any key
        wrong = VLLMAnnotator(VLLMConfig(srv.base_url, "fake-vlm", api_key="sk-WRONG-key-999",
                                         capabilities="none"), knowledge)
        with wrong:
            (s,), = wrong.sample_batch(requests(faces(1), n=1))
        assert s.error == "http_401: authentication failed" and "sk-WRONG" not in repr(s)
        for r in srv.chat_requests(with_image=True):
            parts = [p for m in r.body["messages"] if isinstance(m["content"], list) for p in m["content"]]
            urls = [p["image_url"]["url"] for p in parts if p["type"] == "image_url"]
            assert len(urls) == 1 and urls[0].startswith("data:image/png;base64,")
            assert image_sha_from_body(r.body) is not None
            assert str(tmp_path) not in str(r.body) and "/work" not in str(r.body)
    logs = "\n".join(r.getMessage() for r in caplog.records) + caplog.text
    # the SDK's own debug logging (request options, retries) was captured and is clean too
    assert any(r.name.startswith("openai") for r in caplog.records)
    assert "Request options" in logs or "Sending HTTP Request" in logs
    assert KEY not in logs and "sk-WRONG" not in logs
    files = [p for p in Path(tmp_path).rglob("*") if p.is_file()]
    assert files and all(KEY.encode() not in p.read_bytes() for p in files)


def test_capabilities_probed_once_per_endpoint_and_downgrades_remembered(knowledge, tmp_path, caplog):
    from seke.cache import CapabilityMemo
    caplog.set_level(logging.INFO, logger="seke.vllm")
    lake = Lake(str(tmp_path / "lake"))
    b = Behaviour(supports_n=False, n_unsupported_mode="ignore")
    with FakeOpenAIServer(b) as srv:
        with VLLMAnnotator(VLLMConfig(srv.base_url, "fake-vlm", api_key=KEY), knowledge,
                           capability_memo=CapabilityMemo(lake)) as ann:
            ann.sample_batch(requests(faces(1), n=2))
            assert ann.stats.probe_calls == 1 and ann.capabilities.n is False
        with VLLMAnnotator(VLLMConfig(srv.base_url, "fake-vlm", api_key=KEY), knowledge,
                           capability_memo=CapabilityMemo(lake)) as ann2:
            out = ann2.sample_batch(requests(faces(2), n=2))
            assert ann2.stats.probe_calls == 0 and all(s.ok for ss in out for s in ss)
            assert ann2.capabilities.source == "remembered"
    assert any("(remembered)" in r.getMessage() for r in caplog.records)


def test_key_echoed_by_a_misbehaving_server_is_scrubbed(knowledge, tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    with FakeOpenAIServer() as srv, make(srv, knowledge, ResponseCache(lake)) as ann:
        items = faces(1)
        srv.script_for(items[0].image_png, [("text", f"Authorization: Bearer {KEY}"), ("text", KEY)])
        (s,), = ann.sample_batch(requests(items, n=1))
        assert s.parse_status == "failed" and KEY not in repr(s) and "***" in s.raw_text
    assert all(KEY.encode() not in p.read_bytes() for p in tmp_path.rglob("*") if p.is_file())
