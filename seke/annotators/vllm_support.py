"""Plain pieces of the VLLM path: endpoint config, capabilities, budget, accounting, messages.

Kept apart from the annotator so each can be read (and tested) on its own: none of it does
I/O. The annotator (:mod:`seke.annotators.vllm`) and the Batch API runner share them.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any, Sequence
from urllib.parse import urlsplit, urlunsplit

from seke.annotation import Sample

BUDGET_EXHAUSTED = "budget_exhausted"


# ---- configuration -------------------------------------------------------------------------
@dataclass(frozen=True)
class VLLMConfig:
    """Everything that defines one endpoint and one run's sampling and limits (the Dagster
    resource ``VLLMResource`` is derived from these fields and their ``help``)."""

    base_url: str = field(default="https://api.openai.com/v1",
                          metadata={"help": "chat-completions base URL (env SEKE_VLLM_BASE_URL)"})
    model: str = field(default="gpt-4o", metadata={"help": "model name (env SEKE_VLLM_MODEL)"})
    api_key: str = field(default="EMPTY", repr=False)
    timeout_s: float = field(default=60.0, metadata={"help": "per-request timeout in seconds"})
    max_retries: int = field(default=2, metadata={"help": "SDK retries on 408/409/429/5xx/timeouts, "
                                                          "honouring retry-after (0 = none)"})
    max_concurrency: int = field(default=8, metadata={"help": "in-flight requests per step"})
    temperature: float = field(default=0.7, metadata={"help": "sampling temperature of the Monte Carlo samples"})
    top_p: float | None = field(default=None, metadata={"help": "nucleus sampling (None: the endpoint's)"})
    seed: int | None = field(default=None, metadata={"help": "base seed; sample i uses seed + i"})
    max_tokens: int = field(default=1200, metadata={"help": "completion token cap"})
    verify_temperature: float = field(default=0.0, metadata={"help": "temperature of verification calls"})
    max_calls: int | None = field(default=None, metadata={"help": "per-run cap on model calls"})
    max_usd: float | None = field(default=None, metadata={"help": "per-run cap on spend in USD"})
    price_input_per_1m: float = field(default=0.0, metadata={"help": "USD per 1M prompt tokens"})
    price_output_per_1m: float = field(default=0.0, metadata={"help": "USD per 1M completion tokens"})
    capabilities: str = field(default="auto", metadata={
        "help": "auto (probe) or a comma list among n,json_schema,json_object,logprobs"})
    image_detail: str | None = field(default=None, metadata={"help": "image detail hint (low|high|auto)"})
    rpm: float | None = field(default=None, metadata={
        "help": "requests per minute allowed by the endpoint (None: unlimited); honoured across "
                "all concurrent requests of a step"})
    tpm: float | None = field(default=None, metadata={
        "help": "tokens per minute allowed by the endpoint (prompt + n*max_tokens per request, "
                "as OpenAI counts them; None: unlimited)"})
    rate_window_s: float = field(default=1.0, metadata={
        "help": "granularity at which the provider enforces RPM/TPM (OpenAI quantizes per second)"})
    image_token_rule: str = field(default="openai-tile", metadata={
        "help": "how the provider counts image tokens: openai-tile | qwen-vl | a fixed integer"})

    def __post_init__(self) -> None:
        problems = []
        for name in ("price_input_per_1m", "price_output_per_1m", "max_usd", "rpm", "tpm"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, (int, float)) or v < 0 or v != v):
                problems.append(f"{name}={v!r} must be a number >= 0")
        for name in ("rpm", "tpm"):
            v = getattr(self, name)
            if v is not None and isinstance(v, (int, float)) and v == 0:
                problems.append(f"{name}=0 would never allow a request (leave it unset for no limit)")
        if self.max_calls is not None and self.max_calls < 0:
            problems.append(f"max_calls={self.max_calls} must be >= 0")
        if self.max_concurrency < 1:
            problems.append(f"max_concurrency={self.max_concurrency} must be >= 1")
        if self.rate_window_s <= 0:
            problems.append(f"rate_window_s={self.rate_window_s} must be > 0")
        if self.image_token_rule not in ("openai-tile", "qwen-vl") and not self.image_token_rule.isdigit():
            problems.append(f"image_token_rule={self.image_token_rule!r}: use openai-tile, qwen-vl or an integer")
        if problems:
            raise ValueError(f"VLLM endpoint {self.model!r}: " + "; ".join(problems))

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.price_input_per_1m
                + completion_tokens * self.price_output_per_1m) / 1e6


@dataclass
class Capabilities:
    """What an endpoint supports (``response_format``: json_schema | json_object | none)."""

    n: bool
    response_format: str
    logprobs: bool
    source: str = "probe"

    def to_json(self) -> dict[str, Any]:
        return {"n": self.n, "response_format": self.response_format, "logprobs": self.logprobs}

    def describe(self) -> str:
        yn = {True: "yes", False: "no"}
        return (f"n={yn[self.n]} response_format={self.response_format} "
                f"logprobs={yn[self.logprobs]} ({self.source})")

    @staticmethod
    def parse(spec: str) -> "Capabilities":
        feats = {f.strip().lower() for f in spec.split(",") if f.strip()}
        rf = "json_schema" if "json_schema" in feats else ("json_object" if "json_object" in feats else "none")
        return Capabilities("n" in feats, rf, "logprobs" in feats, source="configured")


@dataclass
class RunStats:
    """Accounting of one annotator over its lifetime (per-partition metadata comes from here
    or from :func:`summarise_samples`)."""

    calls: int = 0
    probe_calls: int = 0
    repair_calls: int = 0
    failed_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    cache_hits: int = 0
    budget_exhausted: int = 0
    # Batch API (seke.annotators.vllm_batch): jobs created, answered lines billed, and per-item
    # outcomes of the every-round mode: usable answers, answers stored failed (malformed or
    # refused: quarantined), items the batch did not return that went online instead
    batch_jobs: int = 0
    batch_calls: int = 0
    batch_ok: int = 0
    batch_failed: int = 0
    batch_retried_online: int = 0
    latency_ms_total: float = 0.0
    rate: Any = None  # the endpoint's LimiterStats (seke.annotators.rate_limit), when attached

    def as_metadata(self) -> dict[str, float | int]:
        d = dict(self.__dict__)
        d["mean_call_latency_ms"] = self.latency_ms_total / self.calls if self.calls else 0.0
        d.pop("latency_ms_total")
        rate = d.pop("rate")
        if rate is not None:
            d.update(rate.as_metadata())
        return d


def summarise_samples(samples: Sequence[Sample]) -> dict[str, float | int]:
    """Per-partition accounting from samples: tokens, latency, cost, cache hits, parse status."""
    n = len(samples)
    paid = [s for s in samples if not s.cache_hit]
    return {
        "samples": n,
        "parse_ok": sum(s.parse_status == "ok" for s in samples),
        "parse_repaired": sum(s.parse_status == "repaired" for s in samples),
        "parse_failed": sum(s.parse_status == "failed" for s in samples),
        "budget_exhausted": sum(s.error == BUDGET_EXHAUSTED for s in samples),
        "cache_hits": sum(s.cache_hit for s in samples),
        "prompt_tokens": sum(s.prompt_tokens for s in samples),
        "completion_tokens": sum(s.completion_tokens for s in samples),
        "cost_usd": round(sum(s.cost_usd for s in samples), 6),
        "mean_latency_ms": (sum(s.latency_ms for s in paid) / len(paid)) if paid else 0.0,
    }


# ---- helpers -------------------------------------------------------------------------------
def redact_url(url: str) -> str:
    """Drop credentials and query strings (Azure-style ``?api-key=``) before logging a URL."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def image_data_url(png_or_jpeg: bytes) -> str:
    """The image as a base64 data URL (the only way images leave the platform)."""
    mime = "image/jpeg" if png_or_jpeg[:3] == b"\xff\xd8\xff" else "image/png"
    return f"data:{mime};base64,{base64.b64encode(png_or_jpeg).decode('ascii')}"


def with_image(messages: Sequence[dict[str, Any]], image: bytes,
               detail: str | None = None) -> list[dict[str, Any]]:
    """Attach the image to the last user message as an ``image_url`` content part."""
    out = [dict(m) for m in messages]
    for i in range(len(out) - 1, -1, -1):
        if out[i]["role"] == "user":
            url: dict[str, Any] = {"url": image_data_url(image)}
            if detail:
                url["detail"] = detail
            text = out[i]["content"]
            parts = text if isinstance(text, list) else [{"type": "text", "text": text}]
            out[i]["content"] = [*parts, {"type": "image_url", "image_url": url}]
            return out
    raise ValueError("prompt has no user message to attach the image to")


class Budget:
    """Per-run limits; used only from the annotator's event-loop thread (no locking needed)."""

    def __init__(self, max_calls: int | None, max_usd: float | None) -> None:
        self.max_calls = max_calls
        self.max_usd = max_usd
        self.calls = 0
        self.usd = 0.0
        self.in_flight = 0

    def acquire(self) -> bool:
        if self.max_calls is not None and self.calls >= self.max_calls:
            return False
        if self.max_usd is not None:
            avg = self.usd / self.calls if self.calls else 0.0
            if self.usd + (self.in_flight + 1) * avg > self.max_usd or self.usd >= self.max_usd:
                return False
        self.calls += 1
        self.in_flight += 1
        return True

    def settle(self, usd: float) -> None:
        self.in_flight -= 1
        self.usd += usd

    def release(self, calls: int) -> None:
        """Give back calls that were counted but never billed (Batch API lines that did not
        come back): the online retry of those requests must not find the budget spent."""
        self.calls = max(0, self.calls - calls)


@dataclass
class CallResult:
    """One finished chat call (or why it failed)."""

    texts: list[tuple[str | None, str | None]] = field(default_factory=list)  # (content, refusal)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_ms: float = 0.0
    error: str | None = None

    @property
    def cost_share(self) -> int:
        return max(1, len(self.texts))


def split_evenly(total: int, parts: int) -> list[int]:
    base, rest = divmod(total, parts)
    return [base + (1 if i < rest else 0) for i in range(parts)]
