"""Requests- and tokens-per-minute limits of one endpoint, shared by every request of a step.

Why: a provider's RPM/TPM limit is per key, not per connection; ``max_concurrency`` alone
either under-uses it (slow server) or hits 429s (fast server). :class:`EndpointLimiter` holds
two leaky buckets (``aiolimiter``) and is consulted by *every* HTTP request the annotator's SDK
client sends — first tries, SDK retries, repairs, verifications and capability probes — because
it sits in the httpx request hook of that client (:meth:`hooks`). The token cost of a request
is passed in a context variable set by the caller just before the SDK call
(:data:`REQUEST_TOKENS`), counted as OpenAI does at admission: prompt tokens + ``n`` ×
``max_tokens``.

Providers enforce per-minute limits at a finer granularity (OpenAI: "quantized" — 60 RPM may be
enforced as 1 request per second), so our buckets drain at the limit minus ``HEADROOM`` and
hold only half (``BURST_SHARE``) of the server's ``window_s`` (default 1 s) bucket: the other
half absorbs jitter between when we count a request and when the server does (event-loop
delays, connection reuse), so a steady stream never tips the server's bucket over.

The server's word wins over our buckets: the response hook reads ``retry-after`` (on a 429) and
``x-ratelimit-remaining-requests|tokens`` with ``x-ratelimit-reset-requests|tokens`` (on any
response) and pauses *all* requests of the endpoint until then. The SDK still retries the 429
itself (honouring ``retry-after``); the pause keeps the other in-flight requests from hitting
the same wall.
"""

from __future__ import annotations

import asyncio
import contextvars
import re
import time
from dataclasses import dataclass, field
from typing import Any

from aiolimiter import AsyncLimiter

#: Token cost of the request the current task is about to send (prompt + n * max_tokens).
REQUEST_TOKENS: contextvars.ContextVar[int] = contextvars.ContextVar("seke_request_tokens", default=0)
HEADROOM = 0.03
BURST_SHARE = 0.5

_DURATION = re.compile(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m(?!s))?(?:(\d+(?:\.\d+)?)s)?(?:(\d+(?:\.\d+)?)ms)?$")


def parse_duration(text: str | None) -> float | None:
    """Seconds in an ``x-ratelimit-reset-*`` / ``retry-after`` value: ``1.5``, ``20ms``,
    ``6m0s``, ``1h2m3.5s``; None when absent or unreadable."""
    if text is None:
        return None
    t = text.strip()
    try:
        return max(0.0, float(t))
    except ValueError:
        pass
    m = _DURATION.match(t)
    if not t or m is None or not any(m.groups()):
        return None
    h, mi, s, ms = (float(g) if g else 0.0 for g in m.groups())
    return h * 3600 + mi * 60 + s + ms / 1000


@dataclass
class LimiterStats:
    requests: int = 0
    throttled_429: int = 0
    pauses: int = 0
    waited_s: float = 0.0
    throttle_times: list[float] = field(default_factory=list)

    def as_metadata(self) -> dict[str, float | int]:
        return {"rate_requests": self.requests, "rate_throttled_429": self.throttled_429,
                "rate_pauses": self.pauses, "rate_waited_s": round(self.waited_s, 3)}


def _bucket(per_minute: float, window_s: float) -> AsyncLimiter:
    """A leaky bucket draining at (1 - HEADROOM) x the limit, holding half the server's window:
    the other half absorbs jitter between when we count a request and when the server does."""
    rate = per_minute / 60 * (1 - HEADROOM)
    capacity = max(1.0, per_minute / 60 * window_s * BURST_SHARE)
    return AsyncLimiter(capacity, capacity / rate)


class EndpointLimiter:
    """RPM/TPM buckets plus server-announced pauses for one endpoint (one event loop)."""

    def __init__(self, rpm: float | None, tpm: float | None, window_s: float = 1.0) -> None:
        if window_s <= 0:
            raise ValueError("rate window must be > 0 seconds")
        self.rpm, self.tpm, self.window_s = rpm, tpm, window_s
        self._req = _bucket(rpm, window_s) if rpm else None
        self._tok = _bucket(tpm, window_s) if tpm else None
        self._resume_at = 0.0
        self.stats = LimiterStats()

    @property
    def active(self) -> bool:
        return self._req is not None or self._tok is not None

    async def acquire(self, tokens: int = 0) -> None:
        t0 = time.monotonic()
        while (delay := self._resume_at - time.monotonic()) > 0:
            await asyncio.sleep(delay)
        if self._req is not None:
            await self._req.acquire(1)
        if self._tok is not None and tokens > 0:
            # a request larger than the bucket could never pass: let it through alone
            await self._tok.acquire(min(float(tokens), self._tok.max_rate))
        self.stats.requests += 1
        self.stats.waited_s += time.monotonic() - t0

    def pause_for(self, seconds: float) -> None:
        until = time.monotonic() + seconds
        if until > self._resume_at:
            self._resume_at = until
            self.stats.pauses += 1

    def observe(self, status: int, headers: Any) -> None:
        """Learn from a response: 429 + retry-after, or exhausted x-ratelimit-remaining-*."""
        if status == 429:
            self.stats.throttled_429 += 1
            self.stats.throttle_times.append(time.monotonic())
            wait = parse_duration(headers.get("retry-after-ms"))
            wait = wait / 1000 if wait is not None else parse_duration(headers.get("retry-after"))
            if wait is None:
                wait = max(parse_duration(headers.get("x-ratelimit-reset-requests")) or 0.0,
                           parse_duration(headers.get("x-ratelimit-reset-tokens")) or 0.0) or 1.0
            self.pause_for(min(wait, 60.0))
            return
        for kind in ("requests", "tokens"):
            remaining = headers.get(f"x-ratelimit-remaining-{kind}")
            if remaining is None:
                continue
            try:
                left = float(remaining)
            except ValueError:
                continue
            if left <= 0:
                reset = parse_duration(headers.get(f"x-ratelimit-reset-{kind}"))
                if reset:
                    self.pause_for(min(reset, 60.0))

    def hooks(self) -> dict[str, list[Any]]:
        """httpx ``event_hooks`` that apply this limiter to every request of a client."""

        async def on_request(request: Any) -> None:
            await self.acquire(REQUEST_TOKENS.get())

        async def on_response(response: Any) -> None:
            self.observe(response.status_code, response.headers)

        return {"request": [on_request], "response": [on_response]}
