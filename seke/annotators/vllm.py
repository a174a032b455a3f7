"""The VLLM annotator: any OpenAI-compatible vision chat endpoint behind the Annotator contract.

Why it looks like this:

* **Async inside, sync outside.** SV-UAMC calls ``sample_batch`` once per round for every face
  still sampling; inside, requests run concurrently on ``openai.AsyncOpenAI`` bounded by an
  ``asyncio.Semaphore`` (``max_concurrency``). The event loop lives in one private background
  thread for the annotator's lifetime, so the sync wrappers work from plain code, from a
  Dagster step and even from a thread that already runs an event loop, and HTTP connections
  are reused across rounds.
* **Endpoints differ** (OpenAI, Azure, vLLM, Ollama, LM Studio): ``n``, ``response_format``
  json_schema / json_object and ``logprobs`` are probed once per endpoint with a tiny text-only
  request and logged in one line; a later 400 naming a feature, or a server that silently
  returns fewer choices than ``n``, downgrades the capability on the fly.
* **Retries** (408/409/429/5xx, timeouts, connection errors) are the SDK's own, which honour
  ``retry-after``; what still fails becomes a failed sample with a short reason, never an
  exception that loses the batch.
* **Budget**: a per-run cap on model calls and money. When it runs out, remaining samples come
  back ``failed`` with error ``budget_exhausted`` (cleanly, the batch still returns).
* **Cache**: every finished answer is stored under its content address (model, prompt hash,
  image sha256, sampling params, sample index) and flushed to the lake before a batch returns;
  hits cost nothing and are marked ``cache_hit``.
* **Security**: the API key is only handed to the SDK; it is scrubbed from every error text and
  never logged. Images travel as base64 data URLs, never as paths.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Sequence, TypeVar
from urllib.parse import urlsplit, urlunsplit

import openai

from seke.annotation import (FaceItem, Labels, PromptSpec, Sample, SampleRequest, Verdict,
                             VerifyRequest)
from seke.cache import CacheEntry, CapabilityMemo, ResponseCache, cache_key, endpoint_id, image_sha256
from seke.knowledge import Knowledge
from seke.prompts import (answer_json_schema, build_verification_prompt, response_format,
                          verification_json_schema)
from seke.response_schema import (PARSER_VERSION, ParseError, detect_refusal, parse_annotation,
                                  parse_verdict, repair_messages)

log = logging.getLogger("seke.vllm")
T = TypeVar("T")

BUDGET_EXHAUSTED = "budget_exhausted"


# ---- configuration -------------------------------------------------------------------------
@dataclass(frozen=True)
class VLLMConfig:
    """Everything that defines one endpoint and one run's sampling and limits."""

    base_url: str
    model: str
    api_key: str = field(default="EMPTY", repr=False)
    timeout_s: float = 60.0
    max_retries: int = 2
    max_concurrency: int = 8
    temperature: float = 0.7
    top_p: float | None = None
    seed: int | None = None
    max_tokens: int = 1200
    verify_temperature: float = 0.0
    max_calls: int | None = None
    max_usd: float | None = None
    price_input_per_1m: float = 0.0
    price_output_per_1m: float = 0.0
    #: "auto" (probe) or a comma list of supported features among n,json_schema,json_object,logprobs
    capabilities: str = "auto"
    image_detail: str | None = None

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
    latency_ms_total: float = 0.0

    def as_metadata(self) -> dict[str, float | int]:
        d = dict(self.__dict__)
        d["mean_call_latency_ms"] = self.latency_ms_total / self.calls if self.calls else 0.0
        d.pop("latency_ms_total")
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


class _Budget:
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


@dataclass
class _Call:
    """One finished chat call (or why it failed)."""

    texts: list[tuple[str | None, str | None]] = field(default_factory=list)  # (content, refusal)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_ms: float = 0.0
    error: str | None = None

    @property
    def cost_share(self) -> int:
        return max(1, len(self.texts))


def _split(total: int, parts: int) -> list[int]:
    base, rest = divmod(total, parts)
    return [base + (1 if i < rest else 0) for i in range(parts)]


# ---- the annotator -------------------------------------------------------------------------
class VLLMAnnotator:
    """:class:`seke.annotation.Annotator` over an OpenAI-compatible chat-completions endpoint."""

    backend = "vllm"

    def __init__(self, config: VLLMConfig, knowledge: Knowledge,
                 cache: ResponseCache | None = None,
                 capability_memo: CapabilityMemo | None = None) -> None:
        self.config = config
        self.capability_memo = capability_memo
        self.endpoint_id = endpoint_id(config.base_url, config.model)
        self.model = config.model
        self.knowledge = knowledge
        self.cache = cache if cache is not None else ResponseCache(None)
        self.stats = RunStats()
        self.capabilities: Capabilities | None = (
            None if config.capabilities == "auto" else Capabilities.parse(config.capabilities))
        self._budget = _Budget(config.max_calls, config.max_usd)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._client: openai.AsyncOpenAI | None = None
        self._sem: asyncio.Semaphore | None = None
        self._caps_lock: asyncio.Lock | None = None
        self._start_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"VLLMAnnotator(model={self.model!r}, base_url={redact_url(self.config.base_url)!r})"

    # ---- public sync API (the Annotator protocol) ---------------------------------------
    def sample_batch(self, requests: Sequence[SampleRequest]) -> list[list[Sample]]:
        """For each request, exactly ``request.n`` samples (failed ones included)."""
        return self._run(lambda: self.asample_batch(requests))

    def verify_batch(self, requests: Sequence[VerifyRequest]) -> list[Verdict]:
        """One verdict per request; failures become ``reject`` with the reason."""
        return self._run(lambda: self.averify_batch(requests))

    def close(self) -> None:
        """Flush the cache, close HTTP connections and stop the loop thread."""
        if self._loop is not None and self._thread is not None:
            if self._client is not None:
                asyncio.run_coroutine_threadsafe(self._client.close(), self._loop).result(timeout=10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            self._loop = self._thread = self._client = None
        self.cache.flush()

    def __enter__(self) -> "VLLMAnnotator":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ---- loop plumbing -------------------------------------------------------------------
    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        with self._start_lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                ready = threading.Event()

                def runner() -> None:
                    asyncio.set_event_loop(loop)
                    loop.call_soon(ready.set)
                    loop.run_forever()
                    loop.close()

                self._thread = threading.Thread(target=runner, name="seke-vllm-loop", daemon=True)
                self._thread.start()
                ready.wait()
                self._loop = loop
            return self._loop

    def _run(self, make: Callable[[], Awaitable[T]]) -> T:
        loop = self._ensure_loop()
        if threading.current_thread() is self._thread:
            raise RuntimeError("VLLMAnnotator sync methods cannot be called from its own loop; "
                               "await asample_batch/averify_batch instead")
        return asyncio.run_coroutine_threadsafe(make(), loop).result()  # type: ignore[arg-type]

    def _ensure_client(self) -> openai.AsyncOpenAI:
        if self._client is None:
            self._client = openai.AsyncOpenAI(
                base_url=self.config.base_url, api_key=self.config.api_key or "EMPTY",
                timeout=self.config.timeout_s, max_retries=self.config.max_retries)
            self._sem = asyncio.Semaphore(self.config.max_concurrency)
            self._caps_lock = asyncio.Lock()
        return self._client

    def _scrub(self, text: str) -> str:
        key = self.config.api_key
        if key and key != "EMPTY" and key in text:
            text = text.replace(key, "***")
        return text

    # ---- capability detection ------------------------------------------------------------
    async def _probe(self, **kwargs: Any) -> tuple[bool, Any]:
        client = self._ensure_client()
        self.stats.probe_calls += 1
        try:
            resp = await client.chat.completions.create(
                model=self.model, max_tokens=16, temperature=0.0,
                messages=[{"role": "user", "content": 'Reply with the JSON object {"ok": true}.'}],
                **kwargs)
        except openai.BadRequestError:
            return False, None
        except (openai.UnprocessableEntityError, openai.NotFoundError):
            return False, None
        if resp.usage is not None:
            self.stats.prompt_tokens += resp.usage.prompt_tokens
            self.stats.completion_tokens += resp.usage.completion_tokens
            c = self.config.cost(resp.usage.prompt_tokens, resp.usage.completion_tokens)
            self.stats.cost_usd += c
            self._budget.usd += c
        return True, resp

    async def detect_capabilities(self) -> Capabilities:
        """Probe the endpoint once (cheap text-only calls) and log what it supports."""
        self._ensure_client()
        assert self._caps_lock is not None
        async with self._caps_lock:
            if self.capabilities is not None:
                return self.capabilities
            remembered = (await asyncio.to_thread(self.capability_memo.get, self.endpoint_id)
                          if self.capability_memo is not None else None)
            if remembered is not None:
                self.capabilities = Capabilities(bool(remembered["n"]), str(remembered["response_format"]),
                                                 bool(remembered["logprobs"]), source="remembered")
                log.info("VLLM endpoint %s model=%s capabilities: %s", redact_url(self.config.base_url),
                         self.model, self.capabilities.describe())
                return self.capabilities
            schema = {"type": "object", "properties": {"ok": {"type": "boolean"}},
                      "required": ["ok"], "additionalProperties": False}
            try:
                ok, resp = await self._probe(n=2, logprobs=True, top_logprobs=1,
                                             response_format=response_format(schema, "probe", "json_schema"))
                if ok:
                    caps = Capabilities(len(resp.choices) >= 2, "json_schema",
                                        resp.choices[0].logprobs is not None)
                else:
                    (n_ok, n_resp), (js_ok, _), (lp_ok, lp_resp) = await asyncio.gather(
                        self._probe(n=2),
                        self._probe(response_format=response_format(schema, "probe", "json_schema")),
                        self._probe(logprobs=True, top_logprobs=1))
                    rf = "json_schema"
                    if not js_ok:
                        jo_ok, _ = await self._probe(response_format={"type": "json_object"})
                        rf = "json_object" if jo_ok else "none"
                    caps = Capabilities(bool(n_ok and len(n_resp.choices) >= 2), rf,
                                        bool(lp_ok and lp_resp.choices[0].logprobs is not None))
            except openai.APIError as exc:
                # endpoint unreachable or failing: assume the least and try again next batch
                log.warning("VLLM capability probe failed (%s); assuming n=no response_format=none",
                            self._scrub(type(exc).__name__))
                return Capabilities(False, "none", False, source="probe failed")
            self.capabilities = caps
            self._remember()
            log.info("VLLM endpoint %s model=%s capabilities: %s",
                     redact_url(self.config.base_url), self.model, caps.describe())
            return caps

    def _downgrade(self, exc: openai.BadRequestError, caps: Capabilities, asked_n: int,
                   rf_mode: str) -> bool:
        """Turn off the feature a 400 complains about; True when something changed."""
        param = str(getattr(exc, "param", "") or "").lower()
        text = f"{param} {exc.message}".lower()
        changed = False
        if asked_n > 1 and caps.n and (param == "n" or re.search(r"(?<![a-z_])n(?![a-z_])", text)):
            caps.n = False
            changed = True
        if rf_mode != "none" and ("response_format" in text or "json_schema" in text
                                  or "json_object" in text):
            caps.response_format = "json_object" if rf_mode == "json_schema" else "none"
            changed = True
        if changed:
            caps.source = "downgraded after 400"
            self._remember()
            log.info("VLLM endpoint %s model=%s capabilities: %s", redact_url(self.config.base_url),
                     self.model, caps.describe())
        return changed

    def _remember(self) -> None:
        if self.capability_memo is not None and self.capabilities is not None:
            try:
                self.capability_memo.put(self.endpoint_id, self.capabilities.to_json())
            except OSError as exc:  # a memo is an optimisation: never fail a batch for it
                log.warning("could not store VLLM capabilities: %s", exc)

    def request_body(self, messages: list[dict[str, Any]], *, n: int, schema: dict[str, Any],
                     schema_name: str, temperature: float, seed: int | None,
                     rf_mode: str) -> dict[str, Any]:
        """The chat-completions request body (shared by online calls and Batch API lines)."""
        body: dict[str, Any] = {"model": self.model, "messages": messages,
                                "temperature": temperature, "max_tokens": self.config.max_tokens}
        if n > 1:
            body["n"] = n
        if self.config.top_p is not None:
            body["top_p"] = self.config.top_p
        if seed is not None:
            body["seed"] = seed
        rf = response_format(schema, schema_name, rf_mode)
        if rf is not None:
            body["response_format"] = rf
        return body

    # ---- one chat call -------------------------------------------------------------------
    async def _chat(self, messages: list[dict[str, Any]], *, n: int, schema: dict[str, Any],
                    schema_name: str, temperature: float, seed: int | None) -> _Call:
        """One budgeted, semaphore-bounded call; failures come back in ``_Call.error``."""
        client = self._ensure_client()
        caps = self.capabilities or Capabilities(False, "none", False, "unknown")
        assert self._sem is not None
        async with self._sem:
            if not self._budget.acquire():
                self.stats.budget_exhausted += 1
                return _Call(error=BUDGET_EXHAUSTED)
            cost = 0.0
            try:
                for _attempt in range(3):  # at most two capability downgrades
                    rf_mode = caps.response_format
                    kwargs = self.request_body(messages, n=n, schema=schema, schema_name=schema_name,
                                               temperature=temperature, seed=seed, rf_mode=rf_mode)
                    t0 = time.perf_counter()
                    try:
                        resp = await client.chat.completions.create(**kwargs)
                    except openai.BadRequestError as exc:
                        if self._downgrade(exc, caps, n, rf_mode):
                            if n > 1 and not caps.n:
                                return _Call(error="n_unsupported")
                            continue
                        raise
                    latency = (time.perf_counter() - t0) * 1000
                    usage = resp.usage
                    pt = usage.prompt_tokens if usage else 0
                    ct = usage.completion_tokens if usage else 0
                    cost = self.config.cost(pt, ct)
                    self.stats.calls += 1
                    self.stats.prompt_tokens += pt
                    self.stats.completion_tokens += ct
                    self.stats.cost_usd += cost
                    self.stats.latency_ms_total += latency
                    # scrubbed too: a misbehaving server could echo request headers into content
                    texts = [(self._scrub(c.message.content) if c.message.content else c.message.content,
                              getattr(c.message, "refusal", None))
                             for c in sorted(resp.choices, key=lambda c: c.index)]
                    return _Call(texts, pt, ct, latency)
                return _Call(error="bad_request: capability negotiation failed")
            except openai.APITimeoutError:
                self.stats.failed_calls += 1
                return _Call(error=f"timeout after {self.config.timeout_s:g}s "
                                   f"({self.config.max_retries} retries)")
            except openai.APIConnectionError:
                self.stats.failed_calls += 1
                return _Call(error="connection_error")
            except openai.RateLimitError:
                self.stats.failed_calls += 1
                return _Call(error=f"rate_limited: HTTP 429 after {self.config.max_retries} retries")
            except (openai.AuthenticationError, openai.PermissionDeniedError) as exc:
                self.stats.failed_calls += 1  # never echo the server's text: it may quote the key
                return _Call(error=f"http_{exc.status_code}: authentication failed")
            except openai.APIStatusError as exc:
                self.stats.failed_calls += 1
                return _Call(error=self._scrub(f"http_{exc.status_code}: {str(exc.message)[:200]}"))
            finally:
                self._budget.settle(cost)

    # ---- sampling ------------------------------------------------------------------------
    def _params(self, temperature: float) -> dict[str, Any]:
        return {"temperature": temperature, "top_p": self.config.top_p, "seed": self.config.seed,
                "max_tokens": self.config.max_tokens}

    async def asample_batch(self, requests: Sequence[SampleRequest]) -> list[list[Sample]]:
        self._ensure_client()
        if self.capabilities is None:
            await self.detect_capabilities()
        try:
            return list(await asyncio.gather(*(self._sample_one(r) for r in requests)))
        finally:
            await asyncio.to_thread(self.cache.flush)

    async def _sample_one(self, req: SampleRequest) -> list[Sample]:
        """All ``req.n`` samples of one face: cache hits first, then as few calls as possible."""
        cfg = self.config
        temp = cfg.temperature
        img_sha = image_sha256(req.face.image_png)
        params = self._params(temp)
        keys = {i: cache_key(self.model, req.prompt.prompt_hash, img_sha, params, i)
                for i in range(req.first_index, req.first_index + req.n)}
        out: dict[int, Sample] = {}
        for i, k in keys.items():
            hit = self.cache.get(k)
            if hit is not None:
                self.stats.cache_hits += 1
                out[i] = _sample_from_cache(hit, req, i, self.model)
        misses = [i for i in keys if i not in out]
        if misses:
            messages = with_image(req.prompt.messages, req.face.image_png, cfg.image_detail)
            schema = answer_json_schema(req.prompt.missing)
            caps = self.capabilities
            groups = [misses] if (caps and caps.n and len(misses) > 1) else [[i] for i in misses]
            done = await asyncio.gather(*(self._sample_group(req, g, messages, schema, img_sha, keys)
                                          for g in groups))
            for group in done:
                for s in group:
                    out[s.index] = s
        return [out[i] for i in sorted(out)]

    async def _sample_group(self, req: SampleRequest, idxs: list[int], messages: list[dict[str, Any]],
                            schema: dict[str, Any], img_sha: str, keys: dict[int, str]) -> list[Sample]:
        seed = None if self.config.seed is None else self.config.seed + idxs[0]
        call = await self._chat(messages, n=len(idxs), schema=schema, schema_name="seke_annotation",
                                temperature=self.config.temperature, seed=seed)
        if call.error == "n_unsupported" or (call.error is None and 1 < len(idxs)
                                             and len(call.texts) < len(idxs)):
            # the server rejected or ignored n: keep what came back, ask for the rest one by one
            if call.error is None and self.capabilities and self.capabilities.n:
                self.capabilities.n = False
                self.capabilities.source = f"server returned {len(call.texts)} of n={len(idxs)} choices"
                self._remember()
                log.info("VLLM endpoint %s model=%s capabilities: %s", redact_url(self.config.base_url),
                         self.model, self.capabilities.describe())
            got = [] if call.error else await self._finish(req, idxs[:len(call.texts)], call,
                                                            messages, schema, img_sha, keys)
            rest = idxs[len(got):]
            more = await asyncio.gather(*(self._sample_group(req, [i], messages, schema, img_sha, keys)
                                          for i in rest))
            return got + [s for g in more for s in g]
        if call.error is not None:
            return [self._failed(req, i, call.error) for i in idxs]
        return await self._finish(req, idxs, call, messages, schema, img_sha, keys)

    def _failed(self, req: SampleRequest, index: int, error: str) -> Sample:
        return Sample(face_id=req.face.face_id, index=index, round=req.round, labels=Labels(),
                      parse_status="failed", error=error, backend=self.backend, model=self.model,
                      temperature=self.config.temperature)

    async def _finish(self, req: SampleRequest, idxs: list[int], call: _Call,
                      messages: list[dict[str, Any]], schema: dict[str, Any], img_sha: str,
                      keys: dict[int, str]) -> list[Sample]:
        k = len(call.texts)
        pts, cts = _split(call.prompt_tokens, k), _split(call.completion_tokens, k)
        results = await asyncio.gather(*(
            self._parse_or_repair(req, idx, text, refusal, messages, schema, pts[j], cts[j],
                                  call.latency_ms)
            for j, (idx, (text, refusal)) in enumerate(zip(idxs, call.texts))))
        out = []
        for idx, (sample, cacheable) in zip(idxs, results):
            if cacheable:
                self.cache.put(CacheEntry(keys[idx], "sample", self.model, req.prompt.prompt_hash,
                                          img_sha, idx, _params_text(self._params(self.config.temperature)),
                                          _sample_to_cache(sample)))
            out.append(sample)
        return out

    async def _parse_or_repair(self, req: SampleRequest, idx: int, text: str | None,
                               refusal: str | None, messages: list[dict[str, Any]],
                               schema: dict[str, Any], pt: int, ct: int,
                               latency_ms: float) -> tuple[Sample, bool]:
        """Parse one choice; on a parse error make ONE repair call. Returns (sample, cacheable)."""
        s = Sample(face_id=req.face.face_id, index=idx, round=req.round, labels=Labels(),
                   raw_text=text or "", backend=self.backend, model=self.model,
                   temperature=self.config.temperature, prompt_tokens=pt, completion_tokens=ct,
                   latency_ms=latency_ms, cost_usd=self.config.cost(pt, ct))
        refused = detect_refusal(text, refusal)
        if refused is not None:
            s.parse_status, s.error = "failed", f"refusal: {refused[:200]}"
            return s, True
        try:
            _fill(s, parse_annotation(text, req.prompt.missing))
            return s, True
        except ParseError as exc:
            first_error = str(exc)
        self.stats.repair_calls += 1
        fix = await self._chat(repair_messages(messages, text or "", first_error, schema), n=1,
                               schema=schema, schema_name="seke_annotation", temperature=0.0, seed=None)
        if fix.error is not None:
            s.parse_status, s.error = "failed", f"parse: {first_error}; repair failed: {fix.error}"
            # a transport/budget failure of the repair is not the model's final word: do not cache
            return s, False
        s.prompt_tokens += fix.prompt_tokens
        s.completion_tokens += fix.completion_tokens
        s.latency_ms += fix.latency_ms
        s.cost_usd += self.config.cost(fix.prompt_tokens, fix.completion_tokens)
        fixed_text, fixed_refusal = fix.texts[0] if fix.texts else (None, None)
        refused = detect_refusal(fixed_text, fixed_refusal)
        if refused is not None:
            s.parse_status, s.error = "failed", f"parse: {first_error}; repair refused: {refused[:120]}"
            return s, True
        try:
            _fill(s, parse_annotation(fixed_text, req.prompt.missing))
        except ParseError as exc:
            s.parse_status, s.error = "failed", f"parse: {first_error}; after repair: {exc}"
            s.raw_text = f"{text or ''}\n--- repair ---\n{fixed_text or ''}"
            return s, True
        s.parse_status, s.error = "repaired", f"repaired: {first_error}"
        s.raw_text = fixed_text or ""
        return s, True

    # ---- verification --------------------------------------------------------------------
    async def averify_batch(self, requests: Sequence[VerifyRequest]) -> list[Verdict]:
        self._ensure_client()
        if self.capabilities is None:
            await self.detect_capabilities()
        try:
            return list(await asyncio.gather(*(self._verify_one(r) for r in requests)))
        finally:
            await asyncio.to_thread(self.cache.flush)

    async def _verify_one(self, req: VerifyRequest) -> Verdict:
        cfg = self.config
        spec = build_verification_prompt(req.candidate, req.face.known, self.knowledge,
                                         req.reasons_for_review)
        schema = verification_json_schema(spec.missing)
        img_sha = image_sha256(req.face.image_png)
        params = self._params(cfg.verify_temperature)
        key = cache_key(self.model, spec.prompt_hash, img_sha, params, 0, kind="verify")
        hit = self.cache.get(key)
        if hit is not None:
            self.stats.cache_hits += 1
            return _verdict_from_cache(hit, req.face, self)
        messages = with_image(spec.messages, req.face.image_png, cfg.image_detail)
        v = Verdict(face_id=req.face.face_id, verdict="reject", reasons=[], backend=self.backend,
                    model=self.model)
        text: str | None = None
        for attempt in range(2):  # the answer + at most one repair
            call = await self._chat(messages, n=1, schema=schema, schema_name="seke_verification",
                                    temperature=cfg.verify_temperature, seed=cfg.seed)
            if call.error is not None:
                v.reasons = [f"verification_failed: {call.error}"]
                return v  # not cached: transport/budget failures are retried on re-run
            v.prompt_tokens += call.prompt_tokens
            v.completion_tokens += call.completion_tokens
            v.latency_ms += call.latency_ms
            v.cost_usd += cfg.cost(call.prompt_tokens, call.completion_tokens)
            text, refusal = call.texts[0] if call.texts else (None, None)
            v.raw_text = text or ""
            refused = detect_refusal(text, refusal)
            if refused is not None:
                v.reasons = [f"verification_failed: refusal: {refused[:200]}"]
                break
            try:
                pv = parse_verdict(text, spec.missing)
            except ParseError as exc:
                if attempt == 0:
                    self.stats.repair_calls += 1
                    messages = repair_messages(messages, text or "", str(exc), schema)
                    continue
                v.reasons = [f"verification_failed: parse: {exc}"]
                break
            v.verdict, v.reasons, v.corrected = pv.verdict, pv.reasons, pv.corrected
            break
        self.cache.put(CacheEntry(key, "verify", self.model, spec.prompt_hash, img_sha, 0,
                                  _params_text(params), _verdict_to_cache(v)))
        return v


# ---- (de)serialisation of cached results ---------------------------------------------------
def _params_text(params: dict[str, Any]) -> str:
    import json
    return json.dumps(params, sort_keys=True)


def _fill(s: Sample, parsed: Any) -> None:
    s.labels = parsed.labels
    s.expression_probs = parsed.expression_probs
    s.rationale = parsed.rationale
    s.parse_status = "ok"
    s.error = None


def _labels_from_json(d: dict[str, Any] | None) -> Labels | None:
    if d is None:
        return None
    aus = d.get("aus")
    return Labels(d.get("expression"), d.get("valence"), d.get("arousal"),
                  {int(k): float(v) for k, v in aus.items()} if aus is not None else None)


def _sample_to_cache(s: Sample) -> dict[str, Any]:
    return {"labels": s.labels.to_json(), "expression_probs": s.expression_probs,
            "rationale": s.rationale, "parse_status": s.parse_status, "error": s.error,
            "raw_text": s.raw_text, "temperature": s.temperature, "prompt_tokens": s.prompt_tokens,
            "completion_tokens": s.completion_tokens, "latency_ms": s.latency_ms,
            "cost_usd": s.cost_usd, "parser": PARSER_VERSION}


def _sample_from_cache(d: dict[str, Any], req: SampleRequest, index: int, model: str) -> Sample:
    """A cached answer for this face and index: free, instantaneous, marked as a hit."""
    return Sample(face_id=req.face.face_id, index=index, round=req.round,
                  labels=_labels_from_json(d["labels"]) or Labels(),
                  expression_probs=d.get("expression_probs"), rationale=d.get("rationale", ""),
                  parse_status=d["parse_status"], error=d.get("error"), raw_text=d.get("raw_text", ""),
                  backend=VLLMAnnotator.backend, model=model,
                  temperature=d.get("temperature"), cache_hit=True)


def _verdict_to_cache(v: Verdict) -> dict[str, Any]:
    return {"verdict": v.verdict, "reasons": v.reasons,
            "corrected": v.corrected.to_json() if v.corrected else None, "raw_text": v.raw_text,
            "prompt_tokens": v.prompt_tokens, "completion_tokens": v.completion_tokens,
            "cost_usd": v.cost_usd, "parser": PARSER_VERSION}


def _verdict_from_cache(d: dict[str, Any], face: FaceItem, ann: VLLMAnnotator) -> Verdict:
    return Verdict(face_id=face.face_id, verdict=d["verdict"], reasons=list(d["reasons"]),
                   corrected=_labels_from_json(d.get("corrected")), raw_text=d.get("raw_text", ""),
                   backend=ann.backend, model=ann.model, cache_hit=True)


__all__ = ["VLLMAnnotator", "VLLMConfig", "Capabilities", "RunStats", "summarise_samples",
           "image_data_url", "with_image", "redact_url", "BUDGET_EXHAUSTED", "PromptSpec"]
