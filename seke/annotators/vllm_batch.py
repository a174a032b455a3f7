"""OpenAI Batch API mode for large backfills: JSONL submit, poll, collect into the cache.

Why: the Batch API is about half the price of online calls and has its own, larger rate
limits, at the cost of latency (up to 24 h). For a backfill the SEKE loop does not need the
answers now: submit the first round of every face as one batch, collect the output into the
content-addressed response cache (:mod:`seke.cache`), then run the normal online
``sample_batch`` — every collected sample is a free cache hit, and only what the batch did not
deliver (errors, unparseable answers, later adaptive rounds, verification) goes online.

The same runner serves every SV-UAMC round (:mod:`seke.annotators.vllm_batch_rounds`): what a
line asks for and how its answer is stored live in :mod:`seke.annotators.batch_lines`, shared
with verification lines.

The manifest (which custom_id stands for which cache keys) is written to the lake table
``vllm_batches`` (one partition per batch), so a sensor or a later step in another process can
poll and collect. A collection reports, per cache key, what came back; lines missing from the
output file (an expired, failed or cancelled job, a partial file, the error file) are left for
the online path and their calls are given back to the run's budget (they were never billed).
Unparseable answers follow the ``malformed`` policy of :mod:`seke.annotators.batch_lines`.

Secrets: batch answers are scrubbed of the API key (:mod:`seke.scrub`) before they are parsed or
cached, and an SDK error whose text quotes the key is re-raised scrubbed, so neither the cache
nor Dagster's event log can receive it.
"""

from __future__ import annotations

import json
import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import openai
import polars as pl

from seke.annotation import Sample, SampleRequest, Verdict, VerifyRequest
from seke.annotators.batch_lines import BatchLine, Malformed, sample_lines, store_answer, verify_lines
from seke.annotators.vllm import VLLMAnnotator
from seke.annotators.vllm_support import Capabilities, redact_url
from seke.lake import Lake
from seke.scrub import scrub_exception

log = logging.getLogger("seke.vllm")

BATCH_TABLE = "vllm_batches"
TERMINAL = ("completed", "failed", "expired", "cancelled")
#: Statuses in which the Batch API endpoint itself is missing (vLLM, Ollama, LM Studio).
UNSUPPORTED_STATUS = (404, 405, 501)


@dataclass
class BatchSubmission:
    batch_id: str | None
    input_file_id: str | None
    lines: int
    samples: int           # results asked for (samples, or verdicts for a verification job)
    cached: int
    not_submitted: int     # results left out because of the per-run call budget
    keys: list[str] = field(default_factory=list)   # cache keys of the submitted lines


@dataclass
class BatchCollection:
    status: str
    collected: int = 0     # results written to the cache (parsed, refused, or quarantined)
    unparsed: int = 0      # left for the online path (not cached; policy "online")
    errors: int = 0        # request lines the batch failed (error file, non-200): not cached
    missing: int = 0       # request lines with no trace in either file (a partial output)
    malformed: int = 0     # answers stored as failed results (refused, or unparseable with "quarantine")
    cost_usd: float = 0.0
    results: dict[str, Sample | Verdict] = field(default_factory=dict)  # cache key -> what came back

    @property
    def usable(self) -> int:
        return self.collected - self.malformed


class VLLMBatchRunner:
    """Submit / poll / collect OpenAI batches for an annotator's endpoint, model and cache."""

    def __init__(self, annotator: VLLMAnnotator, lake: Lake | None, price_factor: float = 0.5,
                 malformed: Malformed = "online") -> None:
        self.ann = annotator
        self.lake = lake
        self.price_factor = price_factor
        self.malformed = malformed
        self._manifests: dict[str, pl.DataFrame] = {}
        self._collected: dict[str, BatchCollection] = {}
        self._submitted: set[str] = set()   # jobs whose calls this runner took from the budget
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
    def _caps(self) -> Capabilities:
        ann = self.ann
        return ann.capabilities or ann._run(ann.detect_capabilities)

    def submit(self, requests: Sequence[SampleRequest], metadata: dict[str, str] | None = None) -> BatchSubmission:
        """Write the JSONL of every uncached sample, upload it and create the batch."""
        lines, cached = sample_lines(self.ann, requests, self._caps())
        return self.submit_lines(lines, cached, {"seke": "mc_samples", **(metadata or {})})

    def submit_verify(self, requests: Sequence[VerifyRequest],
                      metadata: dict[str, str] | None = None) -> BatchSubmission:
        """The same for verification requests (one line per uncached verdict)."""
        lines, cached = verify_lines(self.ann, requests, self._caps())
        return self.submit_lines(lines, cached, {"seke": "verification", **(metadata or {})})

    def submit_lines(self, planned: Sequence[BatchLine], cached: int,
                     metadata: dict[str, str]) -> BatchSubmission:
        """Upload the lines the call budget allows and create the batch (one job).

        Each line takes one call from the run's budget now; if the upload or the job creation
        fails, the calls are given back and the error is raised (scrubbed of the key)."""
        budget = self.ann._budget
        lines: list[BatchLine] = []
        skipped = 0
        for line in planned:
            if not budget.acquire():
                skipped += len(line.keys)
                continue
            budget.settle(0.0)
            lines.append(line)
        if not lines:
            return BatchSubmission(None, None, 0, 0, cached, skipped)
        payload = ("\n".join(line.jsonl() for line in lines) + "\n").encode()
        try:
            with self._scrubbed_errors():
                f = self._client.files.create(file=("seke-batch.jsonl", payload, "application/jsonl"),
                                              purpose="batch")
                batch = self._client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions",
                                                    completion_window="24h", metadata=metadata)
        except BaseException:
            budget.release(len(lines))
            raise
        manifest = pl.DataFrame([line.row for line in lines]).with_columns(
            pl.lit(self.ann.model).alias("model"), pl.lit(time.time()).alias("submitted_at"))
        self._manifests[batch.id] = manifest
        self._submitted.add(batch.id)
        if self.lake is not None:
            self.lake.write_partition(BATCH_TABLE, {"batch": batch.id}, manifest)
        self.ann.stats.batch_jobs += 1
        n = sum(len(line.keys) for line in lines)
        log.info("VLLM batch %s submitted to %s: %d requests, %d results (%d cached, %d over budget)",
                 batch.id, redact_url(self.ann.config.base_url), len(lines), n, cached, skipped)
        return BatchSubmission(batch.id, f.id, len(lines), n, cached, skipped,
                               [k for line in lines for k in line.keys])

    # ---- poll / collect ------------------------------------------------------------------
    def status(self, batch_id: str) -> str:
        with self._scrubbed_errors():
            return str(self._client.batches.retrieve(batch_id).status)

    def cancel(self, batch_id: str) -> str:
        """Ask the endpoint to stop the job (what it finished stays in its output file)."""
        with self._scrubbed_errors():
            return str(self._client.batches.cancel(batch_id).status)

    def _manifest(self, batch_id: str) -> pl.DataFrame:
        if batch_id not in self._manifests:
            if self.lake is None or not self.lake.exists(BATCH_TABLE, {"batch": batch_id}):
                raise KeyError(f"no manifest for batch {batch_id}")
            self._manifests[batch_id] = self.lake.read_partition(BATCH_TABLE, {"batch": batch_id})
        return self._manifests[batch_id]

    def collect(self, batch_id: str) -> BatchCollection:
        """If the batch is finished, parse its output into the cache (idempotent: a batch this
        runner already collected is not parsed, counted or given back to the budget again)."""
        if batch_id in self._collected:
            return self._collected[batch_id]
        with self._scrubbed_errors():
            out = self._collect(batch_id)
        if out.status in TERMINAL:
            self._collected[batch_id] = out
        return out

    def _collect(self, batch_id: str) -> BatchCollection:
        ann = self.ann
        batch = self._client.batches.retrieve(batch_id)
        out = BatchCollection(status=str(batch.status))
        if batch.status not in TERMINAL:
            return out
        manifest = {r["custom_id"]: r for r in self._manifest(batch_id).iter_rows(named=True)}
        seen: set[str] = set()
        if batch.output_file_id:
            for rec in self._records(batch.output_file_id):
                row = manifest.get(rec.get("custom_id"))
                if row is None or row["custom_id"] in seen:
                    continue
                seen.add(row["custom_id"])
                resp = rec.get("response") or {}
                if resp.get("status_code") != 200 or not isinstance(resp.get("body"), dict):
                    out.errors += 1
                    continue
                if all(ann.cache.has(k) for k in json.loads(row["keys"])):
                    continue   # collected before (another process, an earlier run): not counted twice
                got = store_answer(ann, row, resp["body"], self.price_factor, self.malformed)
                out.results.update(got.results)
                out.collected += len(got.results)
                out.malformed += got.malformed
                out.unparsed += got.unparsed
                out.cost_usd += got.cost_usd
                body = resp["body"]
                usage = body.get("usage") or {}
                ann.stats.batch_calls += 1
                ann.stats.prompt_tokens += int(usage.get("prompt_tokens", 0))
                ann.stats.completion_tokens += int(usage.get("completion_tokens", 0))
        if batch.error_file_id:
            for rec in self._records(batch.error_file_id):
                if rec.get("custom_id") in manifest and rec["custom_id"] not in seen:
                    seen.add(rec["custom_id"])
                    out.errors += 1
        out.missing = len(manifest) - len(seen)
        # lines that never came back were never billed: their calls return to the run's budget
        if batch_id in self._submitted:
            ann._budget.release(out.errors + out.missing)
        ann._budget.usd += out.cost_usd
        ann.stats.cost_usd += out.cost_usd
        ann.cache.flush()
        log.info("VLLM batch %s %s: %d results cached (%d malformed), %d unparsed, %d failed lines, "
                 "%d missing lines, $%.4f", batch_id, out.status, out.collected, out.malformed,
                 out.unparsed, out.errors, out.missing, out.cost_usd)
        return out

    def _records(self, file_id: str) -> Iterator[dict]:
        """The JSON records of an output/error file; a broken line is skipped, never fatal."""
        text = self._client.files.content(file_id).text
        for line in text.splitlines():
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                log.warning("VLLM batch file %s: a line is not JSON; its request counts as missing", file_id)
                continue
            if isinstance(rec, dict):
                yield rec

    def open_batches(self, keys: set[str]) -> list[str]:
        """Batches in the manifest table that hold any of ``keys`` and that this runner has not
        collected: a job submitted by a step that crashed (or was retried) while it ran. Waiting
        for it, instead of submitting the same requests again, is what keeps a retried step from
        paying twice."""
        if self.lake is None or not keys or not self.lake.exists(BATCH_TABLE):
            return []
        m = self.lake.read_table(BATCH_TABLE)
        if m.is_empty() or "batch" not in m.columns:
            return []
        m = m.filter(pl.col("model") == self.ann.model).select("batch", "keys")
        found: list[str] = []
        for bid, ks in m.iter_rows():
            if bid not in self._collected and bid not in found and not keys.isdisjoint(json.loads(ks)):
                found.append(bid)
        return found

    def wait(self, batch_id: str, poll_s: float = 30.0, timeout_s: float = 24 * 3600,
             cancel_on_timeout: bool = False, grace_s: float = 600.0) -> BatchCollection:
        """Poll until the batch is terminal (or ``timeout_s``), then collect.

        ``cancel_on_timeout``: a job still running at the deadline is cancelled, and its
        cancellation awaited for up to ``grace_s``, so that what it did not finish can be asked
        online without buying it twice. A poll that fails (network) is retried until the
        deadline."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                status = self.status(batch_id)
            except openai.APIError as exc:
                log.warning("VLLM batch %s: poll failed (%s); retrying", batch_id, type(exc).__name__)
                status = "unknown"
            if status in TERMINAL:
                return self.collect(batch_id)
            if time.monotonic() > deadline:
                if not cancel_on_timeout:
                    return self.collect(batch_id)
                return self._cancel_and_collect(batch_id, poll_s, grace_s)
            time.sleep(poll_s)

    def _cancel_and_collect(self, batch_id: str, poll_s: float, grace_s: float) -> BatchCollection:
        log.warning("VLLM batch %s: not finished in time; cancelling it", batch_id)
        end = time.monotonic() + grace_s
        try:
            status = self.cancel(batch_id)
            while status not in TERMINAL and time.monotonic() < end:
                time.sleep(poll_s)
                status = self.status(batch_id)
        except openai.APIError as exc:
            log.warning("VLLM batch %s: cancel failed (%s)", batch_id, type(exc).__name__)
        return self.collect(batch_id)
