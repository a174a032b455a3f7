"""RPM/TPM limits of one endpoint, against the local OpenAI-protocol server enforcing them."""

from __future__ import annotations

import asyncio
import time

import pytest

from seke.annotators.rate_limit import EndpointLimiter, parse_duration
from seke.annotators.vllm import VLLMAnnotator, VLLMConfig
from tests.fake_openai_server import Behaviour, FakeOpenAIServer, ServerProcess

from .conftest import faces, requests

KEY = "sk-test-RATE-0123456789abcdef"


def make(srv, knowledge, **cfg):
    cfg.setdefault("timeout_s", 10.0)
    cfg.setdefault("capabilities", "n,json_schema")
    return VLLMAnnotator(VLLMConfig(srv.base_url, "gpt-4o", api_key=KEY, **cfg), knowledge)


@pytest.mark.parametrize("text,seconds", [("1", 1.0), ("0.25", 0.25), ("20ms", 0.02), ("1.5s", 1.5),
                                          ("6m0s", 360.0), ("1h2m3s", 3723.0), (None, None), ("soon", None)])
def test_parse_duration(text, seconds):
    got = parse_duration(text)
    assert got == (None if seconds is None else pytest.approx(seconds))


def test_retry_after_and_exhausted_headers_pause_every_request():
    async def main() -> tuple[float, float]:
        lim = EndpointLimiter(None, None)
        lim.observe(429, {"retry-after-ms": "400"})
        t0 = time.monotonic()
        await asyncio.gather(lim.acquire(), lim.acquire())
        first = time.monotonic() - t0
        lim.observe(200, {"x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "300ms"})
        t0 = time.monotonic()
        await lim.acquire()
        return first, time.monotonic() - t0

    first, second = asyncio.run(main())
    assert 0.38 <= first < 1.0 and 0.28 <= second < 1.0


def test_limits_must_be_positive_numbers():
    with pytest.raises(ValueError, match="rpm=-5"):
        VLLMConfig(rpm=-5)
    with pytest.raises(ValueError, match="price_input_per_1m"):
        VLLMConfig(price_input_per_1m=-1.0)
    with pytest.raises(ValueError, match="tpm=0"):
        VLLMConfig(tpm=0)


def test_rpm_bucket_shared_by_all_concurrent_requests(knowledge):
    """Server allows 1200 RPM (20 per 1 s window). Without a limit, 32 in-flight requests hit
    429s; with rpm=1200 none does and the rate stays at the limit. The server runs in its own
    process, as a real endpoint does: a server thread sharing the client's GIL can receive
    requests that the client spaced out in a clump (this test failed once that way)."""
    b = Behaviour(rpm=1200, latency_s=0.01)
    items = faces(50)
    with ServerProcess(b) as srv:
        with make(srv, knowledge, max_concurrency=32, max_retries=0) as ann:
            out = ann.sample_batch(requests(items, n=1))
        unlimited_429 = len(srv.throttled)
        assert unlimited_429 > 0
        assert any(s.error and s.error.startswith("rate_limited") for ss in out for s in ss)
    with ServerProcess(b) as srv:
        with make(srv, knowledge, max_concurrency=32, max_retries=0, rpm=1200) as ann:
            t0 = time.monotonic()
            out = ann.sample_batch(requests(items, n=1))
            dt = time.monotonic() - t0
            meta = ann.stats.as_metadata()
        assert srv.throttled == []
        assert all(s.ok for ss in out for s in ss)
        # 50 requests, 19.4 may burst, the rest at 19.4/s: >= ~1.5 s, and not much slower
        assert 1.4 <= dt < 6.0
        assert meta["rate_throttled_429"] == 0 and meta["rate_requests"] == 50


def test_tpm_bucket_counts_prompt_and_max_tokens(knowledge):
    """TPM enforced as OpenAI does (prompt tokens + n*max_tokens, tiktoken + image tiles)."""
    per_request = None
    items = faces(24)
    with FakeOpenAIServer(Behaviour(usage_rule="openai")) as srv:
        with make(srv, knowledge, max_tokens=300) as ann:
            ann.sample_batch(requests(items[:1], n=2))
        per_request = srv.request_tokens(srv.chat_requests(with_image=True)[0].body)
    assert per_request > 600  # prompt (text + 255 image tokens) + 2 * 300
    tpm = per_request * 8 * 60  # 8 requests per second
    b = Behaviour(tpm=tpm, usage_rule="openai")
    with ServerProcess(b) as srv:
        with make(srv, knowledge, max_concurrency=24, max_retries=0, max_tokens=300) as ann:
            ann.sample_batch(requests(items, n=2))
        assert len(srv.throttled) > 0
    with ServerProcess(b) as srv:
        with make(srv, knowledge, max_concurrency=24, max_retries=0, max_tokens=300, tpm=tpm) as ann:
            t0 = time.monotonic()
            out = ann.sample_batch(requests(items, n=2))
            dt = time.monotonic() - t0
        assert srv.throttled == [] and all(s.ok for ss in out for s in ss)
        assert dt >= 1.5  # 24 requests at 8/s after a burst of ~7.8


def test_server_429_retry_after_is_honoured_by_all(knowledge):
    """A client that believes in a higher RPM than the server's: the SDK retries the 429s, the
    retry-after pauses every other request, and every sample arrives."""
    b = Behaviour(rpm=600)
    with ServerProcess(b) as srv:
        with make(srv, knowledge, max_concurrency=16, max_retries=6, rpm=6000) as ann:
            out = ann.sample_batch(requests(faces(30), n=1))
            meta = ann.stats.as_metadata()
        assert all(s.ok for ss in out for s in ss)
        assert meta["rate_throttled_429"] == len(srv.throttled) > 0
        assert meta["rate_pauses"] > 0
        assert len(srv.throttled) < 60  # paused, not hammering
