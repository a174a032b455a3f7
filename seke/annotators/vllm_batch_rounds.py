"""Every SV-UAMC round (and verification) through the OpenAI Batch API, online where it must.

Why: a backfill of 100k faces does not need its answers in seconds, and the Batch API costs
about half. The first-round prefill (:mod:`assets.vllm_batch`) only covered round 0; the
adaptive rounds and verification still went online at full price. :class:`BatchRoundAnnotator`
is an :class:`~seke.annotation.Annotator`, so :func:`seke.sv_uamc.run_sampling` — which already
decides, after each round, which faces are still uncertain — drives it unchanged:

* each ``sample_batch`` call (one per round, only for the faces still sampling: a face that
  stopped early is never in it) becomes ONE Batch job for the samples not in the cache;
  ``verify_batch`` becomes one job for the verdicts not in the cache;
* the job is polled until it is terminal; its answers go to the same content-addressed cache
  as online answers (a rerun is free) and are returned with their batch price;
* whatever the job did not return — an expired, failed or cancelled job, a partial output
  file, the error file, a job still running at the deadline (cancelled first) — is asked
  online through the normal rate-limited annotator, which looks in the cache first, so a
  request that did come back is never bought again;
* an answer that came back but cannot be parsed (or is a refusal) is stored as a failed
  sample with its reason (``malformed="quarantine"``): it lands in the quarantine table, the
  face's other samples still vote, and nothing else of the job is affected;
* a job that a crashed or retried step left behind (its manifest is in ``vllm_batches``) is
  waited for and collected before anything of it is submitted again;
* an endpoint without the Batch API (404/405/501 on ``/v1/files`` or ``/v1/batches``: vLLM,
  Ollama) is noticed once and the rest of the run goes online.

Per-item outcomes are counted in the annotator's :class:`RunStats` (``batch_ok``,
``batch_failed``, ``batch_retried_online``, ``batch_jobs``, ``batch_calls``) and in
:attr:`BatchRoundAnnotator.report` (also job statuses), for Dagster metadata.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any, Sequence

import openai

from seke.annotation import Sample, SampleRequest, Verdict, VerifyRequest
from seke.annotators.batch_lines import sample_keys, verify_key
from seke.annotators.vllm import VLLMAnnotator
from seke.annotators.vllm_batch import (TERMINAL, UNSUPPORTED_STATUS, BatchCollection,
                                        BatchSubmission, VLLMBatchRunner)
from seke.lake import Lake

log = logging.getLogger("seke.vllm")


@dataclass(frozen=True)
class BatchSettings:
    """How the Batch API is used for every round (plain values; the asset config mirrors them)."""

    poll_s: float = 30.0
    timeout_s: float = 24 * 3600.0      # then the job is cancelled and the rest goes online
    cancel_grace_s: float = 600.0       # how long a cancellation may take before going online
    verify: bool = True                 # verification jobs too (else verification stays online)
    price_factor: float = 0.5           # Batch API price relative to the online price


@dataclass
class BatchReport:
    """Per-run account of the Batch jobs (JSON-able through :meth:`as_dict`)."""

    jobs: Counter = field(default_factory=Counter)      # terminal status -> jobs
    submitted: int = 0
    already_cached: int = 0
    over_budget: int = 0
    batch_ok: int = 0
    failed: int = 0
    retried_online: int = 0
    cost_usd: float = 0.0
    unsupported: str | None = None
    submit_errors: int = 0
    adopted: int = 0       # jobs left by an earlier (crashed or retried) step, collected here

    def as_dict(self) -> dict[str, Any]:
        return {"jobs": dict(self.jobs), "submitted": self.submitted, "already_cached": self.already_cached,
                "over_budget": self.over_budget, "batch_ok": self.batch_ok, "failed": self.failed,
                "retried_online": self.retried_online, "cost_usd": round(self.cost_usd, 6),
                "unsupported": self.unsupported, "submit_errors": self.submit_errors,
                "adopted_jobs": self.adopted}


class BatchRoundAnnotator:
    """:class:`~seke.annotation.Annotator` over one VLLM endpoint, buying through Batch jobs."""

    backend = "vllm"

    def __init__(self, online: VLLMAnnotator, lake: Lake | None,
                 settings: BatchSettings = BatchSettings()) -> None:
        self.online = online
        self.settings = settings
        self.runner = VLLMBatchRunner(online, lake, settings.price_factor, malformed="quarantine")
        self.report = BatchReport()
        self._round = 0

    # the single-annotator face the pool, the assets and the benches read
    @property
    def model(self) -> str:
        return self.online.model

    @property
    def stats(self) -> Any:
        return self.online.stats

    @property
    def secrets(self) -> tuple[str, ...]:
        return self.online.secrets

    @property
    def cache(self) -> Any:
        return self.online.cache

    def close(self) -> None:
        self.runner.close()
        self.online.close()

    def __enter__(self) -> "BatchRoundAnnotator":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ---- sampling ------------------------------------------------------------------------
    def sample_batch(self, requests: Sequence[SampleRequest]) -> list[list[Sample]]:
        """For each request exactly ``request.n`` samples: the job's answers, then online for
        what it did not return (cache first)."""
        self._round += 1
        adopted = self._adopt({k for req in requests for k in sample_keys(self.online, req).values()})
        got = self._run_job(lambda: self.runner.submit(requests, {"seke_job": f"round-{self._round}"}))
        submitted = set(got[0].keys) if got else set()
        fresh = {**adopted, **(got[1].results if got else {})}
        chosen: list[dict[int, Sample]] = []
        retry: list[tuple[int, SampleRequest]] = []
        used: set[str] = set()
        for ri, req in enumerate(requests):
            mine: dict[int, Sample] = {}
            keys = sample_keys(self.online, req)
            for i, key in keys.items():
                s = fresh.get(key)
                if isinstance(s, Sample) and key not in used:   # a duplicate face reads the cache
                    used.add(key)
                    mine[i] = replace(s, face_id=req.face.face_id, index=i, round=req.round)
            rest = [i for i in range(req.first_index, req.first_index + req.n) if i not in mine]
            retry += [(ri, SampleRequest(req.face, req.prompt, len(run), run[0], req.round))
                      for run in _runs(rest)]
            self.report.retried_online += sum(keys[i] in submitted for i in rest)
            chosen.append(mine)
        if retry:
            online = self.online.sample_batch([r for _, r in retry])
            for (ri, _), samples in zip(retry, online):
                for s in samples:
                    chosen[ri][s.index] = s
                    if not s.ok and not s.cache_hit:
                        self.report.failed += 1
        self._account(fresh)
        return [[mine[i] for i in sorted(mine)] for mine in chosen]

    # ---- verification --------------------------------------------------------------------
    def verify_batch(self, requests: Sequence[VerifyRequest]) -> list[Verdict]:
        """One verdict per request: the job's answers, then online for what it did not return."""
        if not self.settings.verify:
            return self.online.verify_batch(requests)
        adopted = self._adopt({verify_key(self.online, req)[0] for req in requests})
        got = self._run_job(lambda: self.runner.submit_verify(requests, {"seke_job": "verification"}))
        submitted = set(got[0].keys) if got else set()
        fresh = {**adopted, **(got[1].results if got else {})}
        out: list[Verdict | None] = []
        retry: list[int] = []
        used: set[str] = set()
        for j, req in enumerate(requests):
            key, _ = verify_key(self.online, req)
            v = fresh.get(key)
            if isinstance(v, Verdict) and key not in used:
                used.add(key)
                out.append(replace(v, face_id=req.face.face_id))
            else:
                out.append(None)
                retry.append(j)
                self.report.retried_online += key in submitted
        if retry:
            for j, v in zip(retry, self.online.verify_batch([requests[j] for j in retry])):
                out[j] = v
                if not v.cache_hit and not _usable(v):
                    self.report.failed += 1
        self._account(fresh)
        return [v for v in out if v is not None]

    # ---- plumbing ------------------------------------------------------------------------
    def _adopt(self, keys: set[str]) -> dict[str, Sample | Verdict]:
        """Wait for and collect earlier jobs (a crashed step's) holding any of ``keys``."""
        if self.report.unsupported is not None:
            return {}
        found: dict[str, Sample | Verdict] = {}
        s = self.settings
        for bid in self.runner.open_batches(keys):
            try:
                got = self.runner.wait(bid, poll_s=s.poll_s, timeout_s=s.timeout_s,
                                       cancel_on_timeout=True, grace_s=s.cancel_grace_s)
            except (openai.APIError, KeyError) as exc:
                log.warning("VLLM batch %s left by an earlier step cannot be collected (%s)", bid,
                            type(exc).__name__)
                continue
            self.report.adopted += 1
            found.update(got.results)
        return found

    def _run_job(self, submit: Any) -> tuple[BatchSubmission, BatchCollection] | None:
        """Submit, wait, collect; None when nothing went through the Batch API (all cached,
        over budget, no Batch API at this endpoint, or the submission failed)."""
        if self.report.unsupported is not None:
            return None
        try:
            sub = submit()
        except openai.APIStatusError as exc:
            if exc.status_code in UNSUPPORTED_STATUS:
                self.report.unsupported = f"http_{exc.status_code} on the Batch API: the rest of the run goes online"
                log.warning("VLLM endpoint %s has no Batch API (HTTP %s): sampling online",
                            self.online, exc.status_code)
            else:
                self.report.submit_errors += 1
                log.warning("VLLM batch submission failed (HTTP %s): this round goes online", exc.status_code)
            return None
        except openai.APIError as exc:
            self.report.submit_errors += 1
            log.warning("VLLM batch submission failed (%s): this round goes online", type(exc).__name__)
            return None
        self.report.already_cached += sub.cached
        self.report.over_budget += sub.not_submitted
        if sub.batch_id is None:
            return None
        self.report.submitted += sub.samples
        s = self.settings
        got = None
        for attempt in range(3):   # reading the output file can fail like any request
            try:
                got = self.runner.wait(sub.batch_id, poll_s=s.poll_s, timeout_s=s.timeout_s,
                                       cancel_on_timeout=True, grace_s=s.cancel_grace_s)
                break
            except openai.APIError as exc:
                log.warning("VLLM batch %s: collecting failed (%s), attempt %d", sub.batch_id,
                            type(exc).__name__, attempt + 1)
        if got is None:
            got = BatchCollection(status="uncollected")
        self.report.jobs[got.status] += 1
        if got.status not in TERMINAL:
            log.warning("VLLM batch %s is %s after cancelling; its unfinished requests go online "
                        "and may be billed twice if it finishes them later", sub.batch_id, got.status)
        return sub, got

    def _account(self, fresh: dict[str, Sample | Verdict]) -> None:
        ok = sum(_usable(r) for r in fresh.values())
        self.report.batch_ok += ok
        self.report.failed += len(fresh) - ok
        self.report.cost_usd += sum(r.cost_usd for r in fresh.values())
        st = self.online.stats
        st.batch_ok, st.batch_failed = self.report.batch_ok, self.report.failed
        st.batch_retried_online = self.report.retried_online


def _usable(r: Sample | Verdict) -> bool:
    if isinstance(r, Sample):
        return r.ok
    return not any(x.startswith("verification_failed") for x in r.reasons)


def _runs(indices: Sequence[int]) -> list[list[int]]:
    """Consecutive runs of sorted sample indices (a SampleRequest covers one run)."""
    runs: list[list[int]] = []
    for i in indices:
        if runs and runs[-1][-1] == i - 1:
            runs[-1].append(i)
        else:
            runs.append([i])
    return runs


def batch_reports(engine: Any) -> dict[str, dict[str, Any]]:
    """The Batch API account of every annotator of ``engine`` (one annotator or a pool) that
    bought through Batch jobs, by name (empty when none did)."""
    members = getattr(engine, "members", None)
    pairs = ([(e.name, e.annotator) for e in members] if members is not None
             else [(getattr(engine, "name", None) or engine.model, engine)])
    return {str(name): a.report.as_dict() for name, a in pairs if isinstance(a, BatchRoundAnnotator)}
