"""OpenAI Batch API mode for large backfills: JSONL submit, poll, collect into the cache.

Why: the Batch API is about half the price of online calls and has its own, larger rate
limits, at the cost of latency (up to 24 h). For a backfill the SEKE loop does not need the
answers now: submit the first round of every face as one batch, collect the output into the
content-addressed response cache (:mod:`seke.cache`), then run the normal online
``sample_batch`` — every collected sample is a free cache hit, and only what the batch did not
deliver (errors, unparseable answers, later adaptive rounds, verification) goes online.

The manifest (which custom_id stands for which cache keys) is written to the lake table
``vllm_batches`` (one partition per batch), so a sensor or a later step in another process can
poll and collect. Unparseable batch answers are not cached and not repaired here: the online
path asks again with its one repair attempt.

Secrets: batch answers are scrubbed of the API key (:mod:`seke.scrub`) before they are parsed or
cached, and an SDK error whose text quotes the key is re-raised scrubbed, so neither the cache
nor Dagster's event log can receive it.
"""

from __future__ import annotations

import json
import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import openai
import polars as pl

from seke.annotation import Labels, Sample, SampleRequest
from seke.annotators.vllm import VLLMAnnotator
from seke.annotators.vllm_records import fill_sample, params_text, sample_to_record
from seke.annotators.vllm_support import redact_url, with_image
from seke.cache import CacheEntry, cache_key, image_sha256
from seke.lake import Lake
from seke.prompts import answer_json_schema
from seke.response_schema import ParseError, detect_refusal, parse_annotation
from seke.scrub import scrub_exception, scrub_optional

log = logging.getLogger("seke.vllm")

BATCH_TABLE = "vllm_batches"
TERMINAL = ("completed", "failed", "expired", "cancelled")


@dataclass
class BatchSubmission:
    batch_id: str | None
    input_file_id: str | None
    lines: int
    samples: int
    cached: int
    not_submitted: int     # samples left out because of the per-run call budget


@dataclass
class BatchCollection:
    status: str
    collected: int = 0     # samples written to the cache (parsed, or refused: the model's answer)
    unparsed: int = 0      # left for the online path (not cached)
    errors: int = 0        # request lines the batch failed (not cached)
    cost_usd: float = 0.0


class VLLMBatchRunner:
    """Submit / poll / collect OpenAI batches for an annotator's endpoint, model and cache."""

    def __init__(self, annotator: VLLMAnnotator, lake: Lake | None,
                 price_factor: float = 0.5) -> None:
        self.ann = annotator
        self.lake = lake
        self.price_factor = price_factor
        self._manifests: dict[str, pl.DataFrame] = {}
        cfg = annotator.config
        self._client = openai.OpenAI(base_url=cfg.base_url, api_key=cfg.api_key or "EMPTY",
                                     timeout=cfg.timeout_s, max_retries=cfg.max_retries)

    def close(self) -> None:
        self._client.close()

    @contextmanager
    def _scrubbed_errors(self) -> Iterator[None]:
        """Re-raise SDK errors whose text quotes the key (a 4xx/5xx body echoing it) scrubbed."""
        try:
            yield
        except Exception as exc:
            clean = scrub_exception(exc, self.ann.secrets)
            if clean is exc:
                raise
            raise clean from None

    # ---- submit --------------------------------------------------------------------------
    def submit(self, requests: Sequence[SampleRequest], metadata: dict[str, str] | None = None) -> BatchSubmission:
        """Write the JSONL of every uncached sample, upload it and create the batch."""
        ann = self.ann
        caps = ann.capabilities or ann._run(ann.detect_capabilities)
        params = ann._params(ann.config.temperature)
        lines, rows = [], []
        n_samples = cached = skipped = 0
        budget = ann._budget
        for req in requests:
            img_sha = image_sha256(req.face.image_png)
            keys = {i: cache_key(ann.model, req.prompt.prompt_hash, img_sha, params, i)
                    for i in range(req.first_index, req.first_index + req.n)}
            misses = [i for i, k in keys.items() if ann.cache.get(k) is None]
            cached += len(keys) - len(misses)
            if not misses:
                continue
            groups = [misses] if (caps.n and len(misses) > 1) else [[i] for i in misses]
            messages = with_image(req.prompt.messages, req.face.image_png, ann.config.image_detail)
            schema = answer_json_schema(req.prompt.missing)
            for g in groups:
                if not budget.acquire():
                    skipped += len(g)
                    continue
                budget.settle(0.0)
                seed = None if ann.config.seed is None else ann.config.seed + g[0]
                body = ann.request_body(messages, n=len(g), schema=schema, schema_name="seke_annotation",
                                        temperature=ann.config.temperature, seed=seed,
                                        rf_mode=caps.response_format)
                custom_id = f"seke-{keys[g[0]][:24]}-{len(g)}"
                lines.append(json.dumps({"custom_id": custom_id, "method": "POST",
                                         "url": "/v1/chat/completions", "body": body},
                                        separators=(",", ":")))
                rows.append({"custom_id": custom_id, "face_id": req.face.face_id,
                             "keys": json.dumps([keys[i] for i in g]),
                             "indices": json.dumps(g), "round": req.round,
                             "prompt_hash": req.prompt.prompt_hash, "image_sha256": img_sha,
                             "missing": json.dumps(list(req.prompt.missing)),
                             "params": params_text(params)})
                n_samples += len(g)
        if not lines:
            return BatchSubmission(None, None, 0, 0, cached, skipped)
        payload = ("\n".join(lines) + "\n").encode()
        with self._scrubbed_errors():
            f = self._client.files.create(file=("seke-batch.jsonl", payload, "application/jsonl"),
                                          purpose="batch")
            batch = self._client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions",
                                                completion_window="24h",
                                                metadata={"seke": "mc_samples", **(metadata or {})})
        manifest = pl.DataFrame(rows).with_columns(pl.lit(ann.model).alias("model"),
                                                   pl.lit(time.time()).alias("submitted_at"))
        self._manifests[batch.id] = manifest
        if self.lake is not None:
            self.lake.write_partition(BATCH_TABLE, {"batch": batch.id}, manifest)
        log.info("VLLM batch %s submitted to %s: %d requests, %d samples (%d cached, %d over budget)",
                 batch.id, redact_url(ann.config.base_url), len(lines), n_samples, cached, skipped)
        return BatchSubmission(batch.id, f.id, len(lines), n_samples, cached, skipped)

    # ---- poll / collect ------------------------------------------------------------------
    def status(self, batch_id: str) -> str:
        with self._scrubbed_errors():
            return str(self._client.batches.retrieve(batch_id).status)

    def _manifest(self, batch_id: str) -> pl.DataFrame:
        if batch_id not in self._manifests:
            if self.lake is None or not self.lake.exists(BATCH_TABLE, {"batch": batch_id}):
                raise KeyError(f"no manifest for batch {batch_id}")
            self._manifests[batch_id] = self.lake.read_partition(BATCH_TABLE, {"batch": batch_id})
        return self._manifests[batch_id]

    def collect(self, batch_id: str) -> BatchCollection:
        """If the batch is finished, parse its output into the cache (idempotent)."""
        with self._scrubbed_errors():
            return self._collect(batch_id)

    def _collect(self, batch_id: str) -> BatchCollection:
        ann = self.ann
        batch = self._client.batches.retrieve(batch_id)
        out = BatchCollection(status=str(batch.status))
        if batch.status not in TERMINAL:
            return out
        manifest = {r["custom_id"]: r for r in self._manifest(batch_id).iter_rows(named=True)}
        if batch.output_file_id:
            text = self._client.files.content(batch.output_file_id).text
            for line in text.splitlines():
                if not line.strip():
                    continue
                rec = json.loads(line)
                row = manifest.get(rec.get("custom_id"))
                resp = rec.get("response") or {}
                if row is None:
                    continue
                if resp.get("status_code") != 200:
                    out.errors += 1
                    continue
                self._collect_one(row, resp["body"], out)
        if batch.error_file_id:
            text = self._client.files.content(batch.error_file_id).text
            out.errors += sum(1 for line in text.splitlines() if line.strip())
        ann.cache.flush()
        log.info("VLLM batch %s %s: %d samples cached, %d unparsed, %d failed lines, $%.4f",
                 batch_id, out.status, out.collected, out.unparsed, out.errors, out.cost_usd)
        return out

    def _collect_one(self, row: dict[str, Any], body: dict[str, Any], out: BatchCollection) -> None:
        ann = self.ann
        keys, indices = json.loads(row["keys"]), json.loads(row["indices"])
        missing = tuple(json.loads(row["missing"]))
        choices = sorted(body.get("choices", []), key=lambda c: c.get("index", 0))
        usage = body.get("usage") or {}
        k = max(1, len(choices))
        pt, ct = int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0))
        for j, (key, idx) in enumerate(zip(keys, indices)):
            if j >= len(choices):
                out.unparsed += 1
                continue
            msg = choices[j].get("message") or {}
            # scrubbed whole, before the refusal is cut to 200 characters or anything is cached
            text = scrub_optional(msg.get("content"), ann.secrets)
            refusal = scrub_optional(msg.get("refusal"), ann.secrets)
            s = Sample(face_id=row["face_id"], index=idx, round=int(row["round"]), labels=Labels(),
                       raw_text=text or "", backend=ann.backend, model=ann.model,
                       temperature=ann.config.temperature, prompt_tokens=pt // k,
                       completion_tokens=ct // k)
            s.cost_usd = ann.config.cost(s.prompt_tokens, s.completion_tokens) * self.price_factor
            refused = detect_refusal(text, refusal)
            if refused is not None:
                s.parse_status, s.error = "failed", f"refusal: {refused[:200]}"
            else:
                try:
                    fill_sample(s, parse_annotation(text, missing))
                except ParseError:
                    out.unparsed += 1   # the online path will ask again, with its repair attempt
                    continue
            ann.cache.put(CacheEntry(key, "sample", ann.model, row["prompt_hash"], row["image_sha256"],
                                     idx, row["params"], sample_to_record(s)))
            out.collected += 1
            out.cost_usd += s.cost_usd

    def wait(self, batch_id: str, poll_s: float = 30.0, timeout_s: float = 24 * 3600) -> BatchCollection:
        """Poll until the batch is terminal (or ``timeout_s``), then collect."""
        deadline = time.monotonic() + timeout_s
        while True:
            status = self.status(batch_id)
            if status in TERMINAL or time.monotonic() > deadline:
                return self.collect(batch_id)
            time.sleep(poll_s)
