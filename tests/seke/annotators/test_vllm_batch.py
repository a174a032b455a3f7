"""Batch API mode against the fake server's /v1/files + /v1/batches (real client, real sockets)."""

from seke.annotators.vllm import VLLMAnnotator, VLLMConfig
from seke.annotators.vllm_batch import BATCH_TABLE, VLLMBatchRunner
from seke.cache import ResponseCache
from seke.lake import Lake
from tests.fake_openai_server import Behaviour, FakeOpenAIServer

from .conftest import faces, requests

KEY = "sk-batch-SECRET-777"


def annotator(srv, knowledge, lake, **kw):
    return VLLMAnnotator(VLLMConfig(srv.base_url, "fake-vlm", api_key=KEY, price_input_per_1m=2.0,
                                    price_output_per_1m=8.0, **kw), knowledge,
                         ResponseCache(lake, model="fake-vlm"))


def test_submit_poll_collect_then_online_hits(knowledge, tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    items = faces(3)
    with FakeOpenAIServer(Behaviour(batch_polls_until_done=3, required_api_key=KEY)) as srv:
        srv.script_for(items[2].image_png, ["malformed"])
        with annotator(srv, knowledge, lake) as ann:
            runner = VLLMBatchRunner(ann, lake)
            sub = runner.submit(requests(items, n=3))
            assert sub.batch_id and sub.lines == 3 and sub.samples == 9 and sub.cached == 0
            assert runner.status(sub.batch_id) in ("validating", "in_progress")
            assert runner.collect(sub.batch_id).collected == 0      # not finished: nothing yet
            runner.close()
        assert lake.exists(BATCH_TABLE, {"batch": sub.batch_id})
        # a later step (new process in production) collects from the manifest in the lake
        with annotator(srv, knowledge, lake) as ann2:
            runner2 = VLLMBatchRunner(ann2, lake)
            got = runner2.wait(sub.batch_id, poll_s=0.01, timeout_s=5)
            assert got.status == "completed" and got.collected == 6 and got.unparsed == 3
            assert got.cost_usd > 0
            again = runner2.collect(sub.batch_id)                   # idempotent
            assert again.collected == 6
            runner2.close()
        online_before = len(srv.chat_requests(with_image=True))
        with annotator(srv, knowledge, lake) as ann3:
            out = ann3.sample_batch(requests(items, n=3))
            flat = [s for ss in out for s in ss]
            assert all(s.ok for s in flat)
            assert [s.cache_hit for s in flat] == [True] * 6 + [False] * 3
            assert all(s.cost_usd == 0 for s in flat[:6])
        # only the face whose batch answers were unparseable went online (one n=3 request)
        assert len(srv.chat_requests(with_image=True)) == online_before + 1
        # resubmitting finds everything cached: no batch is created
        with annotator(srv, knowledge, lake) as ann4:
            sub2 = VLLMBatchRunner(ann4, lake).submit(requests(items, n=3))
            assert sub2.batch_id is None and sub2.cached == 9
        uploaded = [f for f in srv.files.values() if f["purpose"] == "batch"]
        assert len(uploaded) == 1
        lines = uploaded[0]["content"].decode().splitlines()
        assert all('"url":"/v1/chat/completions"' in ln and "data:image/png;base64," in ln for ln in lines)
        assert all(KEY not in ln for ln in lines)
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert all(KEY.encode() not in p.read_bytes() for p in files)


def test_batch_respects_call_budget_and_no_n(knowledge, tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    with FakeOpenAIServer(Behaviour(supports_n=False)) as srv:
        with annotator(srv, knowledge, lake, max_calls=4) as ann:
            runner = VLLMBatchRunner(ann, lake)
            sub = runner.submit(requests(faces(2), n=3))
            assert sub.lines == 4 and sub.samples == 4 and sub.not_submitted == 2
            got = runner.wait(sub.batch_id, poll_s=0.01, timeout_s=5)
            assert got.collected == 4
            runner.close()


def test_batch_answers_and_errors_quoting_the_key_are_scrubbed(knowledge, tmp_path):
    """Batch output echoing the key (a refusal cut at 200 characters after the key was quoted
    at position 190+) is scrubbed before caching; an upload refused with a 401 that quotes the
    presented key (OpenAI style, ``sk-abcdef****wxyz``) raises a scrubbed error."""
    from seke.scrub import ScrubbedError

    def leaks(text: str, key: str) -> list[str]:
        return [key[i:i + 6] for i in range(len(key) - 5) if key[i:i + 6] in text]

    lake = Lake(str(tmp_path / "lake"))
    items = faces(2)
    refusal = "I'm sorry, but I can't help with that. " + "p" * 160 + KEY
    with FakeOpenAIServer(Behaviour(required_api_key=KEY, echo_key_in_401=True)) as srv:
        srv.script_for(items[0].image_png, [("text", refusal)])
        srv.script_for(items[1].image_png, [("text", f"Authorization: Bearer {KEY}")])
        with annotator(srv, knowledge, lake, capabilities="none") as ann:
            runner = VLLMBatchRunner(ann, lake)
            sub = runner.submit(requests(items, n=1))
            got = runner.wait(sub.batch_id, poll_s=0.01, timeout_s=5)
            runner.close()
        assert got.collected == 1 and got.unparsed == 1     # the refusal is the model's answer
        cached = [str(v) for v in ann.cache._entries.values()]
        assert cached and "***" in cached[0] and not leaks(cached[0], KEY)

        wrong = "sk-WRONG-presented-key-1234567"
        bad = VLLMAnnotator(VLLMConfig(srv.base_url, "fake-vlm", api_key=wrong, capabilities="none"),
                            knowledge, ResponseCache(lake, model="fake-vlm"))
        with bad:
            runner = VLLMBatchRunner(bad, lake)
            try:
                runner.submit(requests(faces(3)[2:], n=1))    # not cached yet: must upload
                raise AssertionError("the upload should have been refused")
            except ScrubbedError as exc:
                assert "401" in str(exc) and not leaks(str(exc), wrong)
                assert exc.__cause__ is None and exc.__suppress_context__
            finally:
                runner.close()
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert files and not any(leaks(p.read_bytes().decode("latin-1"), KEY) for p in files)
