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
* **Security**: the API key is only handed to the SDK and never logged. Every text that comes
  back from the server (answers, refusals, error bodies, exceptions) goes through
  :func:`seke.scrub.scrub` *before* anything truncates it, so neither the key nor any 6+
  character piece of it (servers echo keys cut short) reaches samples, the cache or the lake.
  Images travel as base64 data URLs, never as paths.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time
from typing import Any, Awaitable, Callable, Sequence, TypeVar

import openai

from seke.annotation import Labels, Sample, SampleRequest, Verdict, VerifyRequest
from seke.annotators.rate_limit import REQUEST_TOKENS, EndpointLimiter
from seke.annotators.vllm_records import (fill_sample, params_text, sample_from_record,
                                         sample_to_record, verdict_from_record, verdict_to_record)
from seke.annotators.vllm_support import (BUDGET_EXHAUSTED, Budget, CallResult, Capabilities,
                                          RunStats, VLLMConfig, image_data_url, redact_url,
                                          split_evenly, summarise_samples, with_image)
from seke.cache import CacheEntry, CapabilityMemo, ResponseCache, cache_key, endpoint_id, image_sha256
from seke.knowledge import Knowledge
from seke.prompts import (answer_json_schema, build_verification_prompt, response_format,
                          verification_json_schema)
from seke.response_schema import (ParseError, detect_refusal, parse_annotation, parse_verdict,
                                  repair_messages)
from seke.scrub import scrub, scrub_exception, scrub_optional, secret_list
from seke.tokens import message_tokens

log = logging.getLogger("seke.vllm")
T = TypeVar("T")


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
        self._budget = Budget(config.max_calls, config.max_usd)
        self.limiter = EndpointLimiter(config.rpm, config.tpm, config.rate_window_s)
        self.stats.rate = self.limiter.stats
        self.secrets: tuple[str, ...] = secret_list([config.api_key])
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
        try:
            return asyncio.run_coroutine_threadsafe(make(), loop).result()  # type: ignore[arg-type]
        except Exception as exc:
            # callers record exception texts (sv_uamc stores them as sample errors, Dagster in
            # its event log): never let one that quotes the key leave the annotator
            clean = scrub_exception(exc, self.secrets)
            if clean is exc:
                raise
            raise clean from None

    def _ensure_client(self) -> openai.AsyncOpenAI:
        if self._client is None:
            # the limiter sits in httpx's hooks: every request the SDK sends (retries included)
            # waits for the endpoint's RPM/TPM buckets, every response updates them
            self._client = openai.AsyncOpenAI(
                base_url=self.config.base_url, api_key=self.config.api_key or "EMPTY",
                timeout=self.config.timeout_s, max_retries=self.config.max_retries,
                http_client=openai.DefaultAsyncHttpxClient(event_hooks=self.limiter.hooks()))
            self._sem = asyncio.Semaphore(self.config.max_concurrency)
            self._caps_lock = asyncio.Lock()
        return self._client

    def _scrub(self, text: str) -> str:
        """``text`` without the key or any 6+ character piece of it (see :mod:`seke.scrub`)."""
        return scrub(text, self.secrets)

    # ---- capability detection ------------------------------------------------------------
    async def _probe(self, **kwargs: Any) -> tuple[bool, Any]:
        client = self._ensure_client()
        self.stats.probe_calls += 1
        messages = [{"role": "user", "content": 'Reply with the JSON object {"ok": true}.'}]
        if self.limiter.tpm:
            REQUEST_TOKENS.set(self.request_tokens(messages, int(kwargs.get("n", 1)), 16))
        try:
            resp = await client.chat.completions.create(
                model=self.model, max_tokens=16, temperature=0.0, messages=messages, **kwargs)
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

    def request_tokens(self, messages: list[dict[str, Any]], n: int, max_tokens: int) -> int:
        """TPM cost of one request as OpenAI counts it at admission: prompt + n * max_tokens."""
        return message_tokens(messages, self.model, self.config.image_detail,
                              self.config.image_token_rule) + n * max_tokens

    # ---- one chat call -------------------------------------------------------------------
    async def _chat(self, messages: list[dict[str, Any]], *, n: int, schema: dict[str, Any],
                    schema_name: str, temperature: float, seed: int | None) -> CallResult:
        """One budgeted, semaphore-bounded call; failures come back in ``CallResult.error``."""
        client = self._ensure_client()
        caps = self.capabilities or Capabilities(False, "none", False, "unknown")
        assert self._sem is not None
        async with self._sem:
            if not self._budget.acquire():
                self.stats.budget_exhausted += 1
                return CallResult(error=BUDGET_EXHAUSTED)
            cost = 0.0
            try:
                for _attempt in range(3):  # at most two capability downgrades
                    rf_mode = caps.response_format
                    kwargs = self.request_body(messages, n=n, schema=schema, schema_name=schema_name,
                                               temperature=temperature, seed=seed, rf_mode=rf_mode)
                    if self.limiter.tpm:
                        REQUEST_TOKENS.set(self.request_tokens(messages, n, self.config.max_tokens))
                    t0 = time.perf_counter()
                    try:
                        resp = await client.chat.completions.create(**kwargs)
                    except openai.BadRequestError as exc:
                        if self._downgrade(exc, caps, n, rf_mode):
                            if n > 1 and not caps.n:
                                return CallResult(error="n_unsupported")
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
                    # (refusals too: they are cut to 200 characters later, so scrub them whole now)
                    texts = [(scrub_optional(c.message.content, self.secrets),
                              scrub_optional(getattr(c.message, "refusal", None), self.secrets))
                             for c in sorted(resp.choices, key=lambda c: c.index)]
                    return CallResult(texts, pt, ct, latency)
                return CallResult(error="bad_request: capability negotiation failed")
            except openai.APITimeoutError:
                self.stats.failed_calls += 1
                return CallResult(error=f"timeout after {self.config.timeout_s:g}s "
                                   f"({self.config.max_retries} retries)")
            except openai.APIConnectionError:
                self.stats.failed_calls += 1
                return CallResult(error="connection_error")
            except openai.RateLimitError:
                self.stats.failed_calls += 1
                return CallResult(error=f"rate_limited: HTTP 429 after {self.config.max_retries} retries")
            except (openai.AuthenticationError, openai.PermissionDeniedError) as exc:
                self.stats.failed_calls += 1  # never echo the server's text: it may quote the key
                return CallResult(error=f"http_{exc.status_code}: authentication failed")
            except openai.APIStatusError as exc:
                self.stats.failed_calls += 1
                # scrub the whole server text first, then cut: cutting first can leave a piece
                # of the key that no longer matches the whole key
                return CallResult(error=f"http_{exc.status_code}: {self._scrub(str(exc.message))[:200]}")
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
                out[i] = sample_from_record(hit, req, i, self.model)
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

    async def _finish(self, req: SampleRequest, idxs: list[int], call: CallResult,
                      messages: list[dict[str, Any]], schema: dict[str, Any], img_sha: str,
                      keys: dict[int, str]) -> list[Sample]:
        k = len(call.texts)
        pts, cts = split_evenly(call.prompt_tokens, k), split_evenly(call.completion_tokens, k)
        results = await asyncio.gather(*(
            self._parse_or_repair(req, idx, text, refusal, messages, schema, pts[j], cts[j],
                                  call.latency_ms)
            for j, (idx, (text, refusal)) in enumerate(zip(idxs, call.texts))))
        out = []
        for idx, (sample, cacheable) in zip(idxs, results):
            if cacheable:
                self.cache.put(CacheEntry(keys[idx], "sample", self.model, req.prompt.prompt_hash,
                                          img_sha, idx, params_text(self._params(self.config.temperature)),
                                          sample_to_record(sample)))
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
            fill_sample(s, parse_annotation(text, req.prompt.missing))
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
            fill_sample(s, parse_annotation(fixed_text, req.prompt.missing))
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
            return verdict_from_record(hit, req.face, self.model)
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
                                  params_text(params), verdict_to_record(v)))
        return v


__all__ = ["VLLMAnnotator", "VLLMConfig", "Capabilities", "RunStats", "summarise_samples",
           "image_data_url", "with_image", "redact_url", "BUDGET_EXHAUSTED"]
