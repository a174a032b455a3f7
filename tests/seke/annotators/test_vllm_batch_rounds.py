"""Every SV-UAMC round and verification through the Batch API (real client, real sockets).

The fake server answers /v1/files + /v1/batches like OpenAI, including jobs that expire, fail,
never finish, or return a partial output file; ``srv.billed`` lists every request it would
charge for, so "nothing is paid twice" is checked at the server, not trusted from the client.
"""

import hashlib
import json
from collections import Counter

import polars as pl

from seke.annotation import Labels, VerifyRequest
from seke.annotators.vllm import VLLMAnnotator, VLLMConfig
from seke.annotators.vllm_batch_rounds import BatchRoundAnnotator, BatchSettings, batch_reports
from seke.cache import ResponseCache
from seke.lake import Lake
from seke.prompts import build_annotation_prompt
from seke.quarantine import from_samples
from seke.sv_uamc import SamplingConfig, run_sampling
from tests.fake_openai_server import Behaviour, FakeOpenAIServer, image_sha_from_body
from tests.fake_openai_server import scripted_answer as answer

from .conftest import faces, requests

KEY = "sk-rounds-SECRET-4242"
FAST = BatchSettings(poll_s=0.01, timeout_s=5.0, cancel_grace_s=1.0)


def online(srv, knowledge, lake, caps="json_schema", **kw) -> VLLMAnnotator:
    return VLLMAnnotator(VLLMConfig(srv.base_url, "fake-vlm", api_key=KEY, price_input_per_1m=2.0,
                                    price_output_per_1m=8.0, capabilities=caps, seed=0, **kw),
                         knowledge, ResponseCache(lake, model="fake-vlm"))


def batched(srv, knowledge, lake, settings=FAST, **kw) -> BatchRoundAnnotator:
    return BatchRoundAnnotator(online(srv, knowledge, lake, **kw), lake, settings)


def job_lines(srv) -> list[list[dict]]:
    """The request lines of every batch job, in creation order."""
    out = []
    for b in sorted(srv.batches.values(), key=lambda b: b["created_at"]):
        text = srv.files[b["input_file_id"]]["content"].decode()
        out.append([json.loads(ln) for ln in text.splitlines() if ln.strip()])
    return out


def paid_once(srv) -> Counter:
    ids = srv.billed_identities()
    twice = [i for i, n in Counter(ids).items() if n > 1]
    assert not twice, f"{len(twice)} requests were billed more than once"
    return Counter(kind for kind, b in srv.billed if image_sha_from_body(b) is not None)


def test_every_round_is_one_job_and_only_unresolved_faces_are_resubmitted(knowledge, tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    items = faces(6)
    spread = ["happiness", "sadness", "anger", "fear", "surprise", "disgust", "contempt", "neutral"]
    with FakeOpenAIServer(Behaviour(required_api_key=KEY)) as srv:
        # face 0 never agrees with itself: every round, then verification at n_max
        srv.script_for(items[0].image_png, [answer(spread[i % 8]) for i in range(10)])
        # face 1 disagrees in its first round only
        srv.script_for(items[1].image_png, [answer("happiness"), answer("sadness"), answer("anger")])
        prompts = {f.face_id: build_annotation_prompt(f.known, knowledge) for f in items}
        with batched(srv, knowledge, lake) as ann:
            res = run_sampling(items, prompts, ann, knowledge, SamplingConfig())
            report = batch_reports(ann)["fake-vlm"]
        assert not srv.chat_requests(with_image=True)          # nothing bought online
        jobs = job_lines(srv)
        sample_jobs = [j for j in jobs if not j[0]["custom_id"].startswith("seke-v-")]
        verify_jobs = [j for j in jobs if j[0]["custom_id"].startswith("seke-v-")]
        sha = {f.face_id: hashlib.sha256(f.image_png).hexdigest() for f in items}
        per_job = [{image_sha_from_body(ln["body"]) for ln in j} for j in sample_jobs]
        assert per_job[0] == set(sha.values())
        for earlier, later in zip(per_job, per_job[1:]):
            assert later <= earlier                            # a face that stopped never returns
        labels = {r["face_id"]: r for r in res.labels}
        stopped_first = {sha[f] for f, r in labels.items() if r["n_samples"] == 3}
        assert stopped_first and not (stopped_first & set().union(*per_job[1:]))
        assert sha[items[0].face_id] in per_job[-1] and len(sample_jobs) == res.stats["rounds"] == 4
        # a face's sample lines across jobs are exactly the samples it received (no n: one each)
        lines_of = Counter(image_sha_from_body(ln["body"]) for j in sample_jobs for ln in j)
        assert all(lines_of[sha[f]] == r["n_samples"] for f, r in labels.items())
        # verification went through a job of its own
        assert labels[items[0].face_id]["verdict"] != "none" and len(verify_jobs) == 1
        assert {image_sha_from_body(ln["body"]) for ln in verify_jobs[0]} == {
            sha[f] for f, r in labels.items() if r["verdict"] != "none"}
        assert all(not s["cache_hit"] and s["cost_usd"] > 0 for s in res.samples)
        assert report["batch_ok"] == len(res.samples) + len(verify_jobs[0])
        assert report["retried_online"] == 0 and report["jobs"] == {"completed": 5}
        paid_once(srv)
        # a rerun finds every answer (samples and verdicts) in the lake cache: no job, no call
        n_files = len(srv.files)
        with batched(srv, knowledge, Lake(str(tmp_path / "lake"))) as again:
            res2 = run_sampling(items, prompts, again, knowledge, SamplingConfig())
        assert len(srv.files) == n_files and not srv.chat_requests(with_image=True)
        assert all(s["cache_hit"] for s in res2.samples)
        assert [r["status"] for r in res2.labels] == [r["status"] for r in res.labels]


def test_partial_output_file_missing_lines_go_online_exactly_once(knowledge, tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    items = faces(6)
    with FakeOpenAIServer(Behaviour()) as srv:
        srv.script_batches([{"drop_every": 4}])                # 18 lines, 4 silently absent
        with batched(srv, knowledge, lake) as ann:
            out = ann.sample_batch(requests(items, n=3))
            assert ann.stats.batch_ok == 14 and ann.stats.batch_retried_online == 4
            assert ann.report.jobs == {"completed": 1}
        flat = [s for ss in out for s in ss]
        assert len(flat) == 18 and all(s.ok and not s.cache_hit for s in flat)
        assert [[s.index for s in ss] for ss in out] == [[0, 1, 2]] * 6
        assert paid_once(srv) == {"batch": 14, "online": 4}
        # everything, batch or online, is in the cache
        with batched(srv, knowledge, Lake(str(tmp_path / "lake"))) as again:
            hits = again.sample_batch(requests(items, n=3))
        assert all(s.cache_hit for ss in hits for s in ss) and len(srv.batches) == 1
        assert paid_once(srv) == {"batch": 14, "online": 4}


def test_expired_job_keeps_its_answers_and_the_budget_pays_only_what_was_billed(knowledge, tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    items = faces(6)
    with FakeOpenAIServer(Behaviour()) as srv:
        srv.script_batches([{"expire_after": 2}])              # n=3 lines: 2 of 6 finish in time
        # the call budget fits exactly one request per face: the 4 expired lines are given back
        with batched(srv, knowledge, lake, caps="n,json_schema", max_calls=6) as ann:
            out = ann.sample_batch(requests(items, n=3))
            assert ann.report.jobs == {"expired": 1}
            assert ann.stats.batch_ok == 6 and ann.stats.batch_retried_online == 12
        assert all(s.ok for ss in out for s in ss)             # no budget_exhausted
        assert paid_once(srv) == {"batch": 2, "online": 4}
        assert all(r.body.get("n") == 3 for r in srv.chat_requests(with_image=True))


def test_failed_or_stuck_jobs_go_online_and_an_endpoint_without_batches_is_asked_once(knowledge, tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    items = faces(3)
    with FakeOpenAIServer(Behaviour()) as srv:
        srv.script_batches([{"status": "failed"}, {"never": True}])
        with batched(srv, knowledge, lake, BatchSettings(poll_s=0.01, timeout_s=0.2, cancel_grace_s=1.0)) as ann:
            first = ann.sample_batch(requests(items[:2], n=3))
            second = ann.sample_batch(requests(items[2:], n=3))
            assert ann.report.jobs == {"failed": 1, "cancelled": 1}
            assert ann.report.retried_online == 9 and ann.report.batch_ok == 0
        assert all(s.ok for ss in first + second for s in ss)
        assert paid_once(srv) == {"online": 9}
    with FakeOpenAIServer(Behaviour(supports_batch=False)) as srv:
        with batched(srv, knowledge, Lake(str(tmp_path / "lake2"))) as ann:
            ann.sample_batch(requests(items[:1], n=3))
            ann.sample_batch(requests(items[1:], n=3))
            assert ann.report.unsupported and "404" in ann.report.unsupported
            assert ann.report.submit_errors == 0
        assert paid_once(srv) == {"online": 9}


def test_a_malformed_answer_is_quarantined_not_bought_again_and_the_job_survives(knowledge, tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    items = faces(3)
    with FakeOpenAIServer(Behaviour()) as srv:
        srv.script_for(items[1].image_png, ["malformed"])
        with batched(srv, knowledge, lake) as ann:
            out = ann.sample_batch(requests(items, n=3))
            assert ann.stats.batch_ok == 8 and ann.stats.batch_failed == 1
            assert ann.stats.batch_retried_online == 0
        bad = [s for ss in out for s in ss if not s.ok]
        assert len(bad) == 1 and bad[0].face_id == items[1].face_id and "Batch API answer" in bad[0].error
        assert paid_once(srv) == {"batch": 9}                  # no repair, no second purchase
        rows = pl.DataFrame([{"face_id": s.face_id, "sample_index": s.index, "round": s.round,
                              "parse_status": s.parse_status, "error": s.error} for ss in out for s in ss])
        q = from_samples(rows, [KEY])
        assert q.height == 1 and q["item_id"][0].startswith(items[1].face_id)
        with batched(srv, knowledge, Lake(str(tmp_path / "lake"))) as again:
            cached = again.sample_batch(requests(items, n=3))
        assert sum(not s.ok for ss in cached for s in ss) == 1 and len(srv.batches) == 1


def test_verification_job_with_a_partial_file(knowledge, tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    items = faces(4)
    reqs = [VerifyRequest(f, Labels("happiness", 0.6, 0.4, {6: 1.0, 12: 1.0}), ("uncertain_expression",))
            for f in items]
    with FakeOpenAIServer(Behaviour()) as srv:
        srv.script_batches([{"drop_every": 2}])
        with batched(srv, knowledge, lake) as ann:
            verdicts = ann.verify_batch(reqs)
            assert ann.report.batch_ok == 2 and ann.report.retried_online == 2
        assert [v.face_id for v in verdicts] == [f.face_id for f in items]
        assert all(v.verdict == "accept" for v in verdicts)
        assert paid_once(srv) == {"batch": 2, "online": 2}
        with batched(srv, knowledge, Lake(str(tmp_path / "lake"))) as again:
            assert all(v.cache_hit for v in again.verify_batch(reqs))
        assert paid_once(srv) == {"batch": 2, "online": 2}


def test_a_job_left_by_a_crashed_step_is_collected_not_bought_again(knowledge, tmp_path):
    from seke.annotators.vllm_batch import VLLMBatchRunner

    lake = Lake(str(tmp_path / "lake"))
    items = faces(3)
    with FakeOpenAIServer(Behaviour(batch_polls_until_done=2)) as srv:
        crashed = online(srv, knowledge, lake)
        VLLMBatchRunner(crashed, lake).submit(requests(items, n=3))   # the step dies while it runs
        crashed.close()
        with batched(srv, knowledge, Lake(str(tmp_path / "lake"))) as retry:
            out = retry.sample_batch(requests(items, n=3))
            assert retry.report.adopted == 1 and retry.report.submitted == 0
        assert len(srv.batches) == 1 and all(s.ok and not s.cache_hit and s.cost_usd > 0
                                               for ss in out for s in ss)
        assert paid_once(srv) == {"batch": 9}
