"""Batch API lines: what one JSONL line asks for, and what its answer becomes in the cache.

Why a module of its own: the Batch API runner (:mod:`seke.annotators.vllm_batch`) only moves
files and polls; *what* is asked (the same request body as an online call, so the same cache
key) and *how* an answer becomes a :class:`~seke.annotation.Sample` or a
:class:`~seke.annotation.Verdict` must match the online annotator exactly, or a rerun would not
find the batch's answers in the cache. Both sample lines (one SV-UAMC round of a face, ``n``
choices where the endpoint supports ``n``) and verification lines are built here.

A line's manifest row (lake table ``vllm_batches``) names the cache keys it stands for, so a
later process can collect a batch it did not submit.

Answers that cannot be parsed: with ``malformed="online"`` (the first-round prefill) they are
not cached and the online path asks again with its one repair attempt; with
``malformed="quarantine"`` (every round through the Batch API) the answer is stored as a failed
sample (or a ``reject`` verdict) with its reason — it was paid for, it is never bought again,
and the sample lands in the quarantine table like any failed sample.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Sequence

from seke.annotation import Labels, Sample, SampleRequest, Verdict, VerifyRequest
from seke.annotators.vllm_records import (fill_sample, params_text, sample_to_record,
                                         verdict_to_record)
from seke.annotators.vllm_support import Capabilities, with_image
from seke.cache import CacheEntry, cache_key, image_sha256
from seke.prompts import answer_json_schema, build_verification_prompt, verification_json_schema
from seke.response_schema import ParseError, detect_refusal, parse_annotation, parse_verdict
from seke.scrub import scrub_optional

if TYPE_CHECKING:
    from seke.annotators.vllm import VLLMAnnotator

Malformed = Literal["online", "quarantine"]


@dataclass
class BatchLine:
    """One JSONL request line, the cache keys it fills and its manifest row."""

    custom_id: str
    body: dict[str, Any]
    keys: list[str]
    row: dict[str, Any]

    def jsonl(self) -> str:
        return json.dumps({"custom_id": self.custom_id, "method": "POST", "url": "/v1/chat/completions",
                           "body": self.body}, separators=(",", ":"))


def sample_keys(ann: "VLLMAnnotator", req: SampleRequest) -> dict[int, str]:
    """Sample index -> cache key, exactly as the online annotator computes them."""
    img_sha = image_sha256(req.face.image_png)
    params = ann._params(ann.config.temperature)
    return {i: cache_key(ann.model, req.prompt.prompt_hash, img_sha, params, i)
            for i in range(req.first_index, req.first_index + req.n)}


def sample_lines(ann: "VLLMAnnotator", requests: Sequence[SampleRequest],
                 caps: Capabilities) -> tuple[list[BatchLine], int]:
    """Lines for every uncached sample of ``requests`` (grouped into one ``n`` request per face
    where the endpoint supports ``n``), and how many samples were already cached."""
    params = ann._params(ann.config.temperature)
    lines: list[BatchLine] = []
    seen: set[str] = set()
    cached = 0
    for req in requests:
        img_sha = image_sha256(req.face.image_png)
        keys = sample_keys(ann, req)
        misses = [i for i, k in keys.items() if k not in seen and ann.cache.get(k) is None]
        cached += sum(1 for k in keys.values() if k not in seen) - len(misses)
        if not misses:
            continue
        seen.update(keys[i] for i in misses)
        groups = [misses] if (caps.n and len(misses) > 1) else [[i] for i in misses]
        messages = with_image(req.prompt.messages, req.face.image_png, ann.config.image_detail)
        schema = answer_json_schema(req.prompt.missing)
        for g in groups:
            seed = None if ann.config.seed is None else ann.config.seed + g[0]
            body = ann.request_body(messages, n=len(g), schema=schema, schema_name="seke_annotation",
                                    temperature=ann.config.temperature, seed=seed,
                                    rf_mode=caps.response_format)
            gkeys = [keys[i] for i in g]
            custom_id = f"seke-{gkeys[0][:24]}-{len(g)}"
            lines.append(BatchLine(custom_id, body, gkeys, {
                "custom_id": custom_id, "kind": "sample", "face_id": req.face.face_id,
                "keys": json.dumps(gkeys), "indices": json.dumps(g), "round": req.round,
                "prompt_hash": req.prompt.prompt_hash, "image_sha256": img_sha,
                "missing": json.dumps(list(req.prompt.missing)), "params": params_text(params)}))
    return lines, cached


def verify_key(ann: "VLLMAnnotator", req: VerifyRequest) -> tuple[str, Any]:
    """(cache key, prompt spec) of a verification, exactly as the online annotator computes it."""
    spec = build_verification_prompt(req.candidate, req.face.known, ann.knowledge, req.reasons_for_review)
    params = ann._params(ann.config.verify_temperature)
    return cache_key(ann.model, spec.prompt_hash, image_sha256(req.face.image_png), params, 0,
                     kind="verify"), spec


def verify_lines(ann: "VLLMAnnotator", requests: Sequence[VerifyRequest],
                 caps: Capabilities) -> tuple[list[BatchLine], int]:
    """Lines for every uncached verification, and how many were already cached."""
    params = ann._params(ann.config.verify_temperature)
    lines: list[BatchLine] = []
    seen: set[str] = set()
    cached = 0
    for req in requests:
        key, spec = verify_key(ann, req)
        if key in seen:
            continue
        seen.add(key)
        if ann.cache.get(key) is not None:
            cached += 1
            continue
        messages = with_image(spec.messages, req.face.image_png, ann.config.image_detail)
        body = ann.request_body(messages, n=1, schema=verification_json_schema(spec.missing),
                                schema_name="seke_verification", temperature=ann.config.verify_temperature,
                                seed=ann.config.seed, rf_mode=caps.response_format)
        custom_id = f"seke-v-{key[:24]}"
        lines.append(BatchLine(custom_id, body, [key], {
            "custom_id": custom_id, "kind": "verify", "face_id": req.face.face_id,
            "keys": json.dumps([key]), "indices": json.dumps([0]), "round": -1,
            "prompt_hash": spec.prompt_hash, "image_sha256": image_sha256(req.face.image_png),
            "missing": json.dumps(list(spec.missing)), "params": params_text(params)}))
    return lines, cached


@dataclass
class Answered:
    """What one answered line put in the cache (``results``: cache key -> Sample | Verdict)."""

    results: dict[str, Sample | Verdict]
    usable: int = 0        # parsed answers
    malformed: int = 0     # unparseable or refused, stored as failed (policy "quarantine")
    unparsed: int = 0      # unparseable, not stored: left for the online path (policy "online")
    cost_usd: float = 0.0


def store_answer(ann: "VLLMAnnotator", row: dict[str, Any], body: dict[str, Any], price_factor: float,
                 malformed: Malformed) -> Answered:
    """Parse one 200 answer of the output file into cache entries (scrubbed before anything)."""
    keys, indices = json.loads(row["keys"]), json.loads(row["indices"])
    missing = tuple(json.loads(row["missing"]))
    choices = sorted(body.get("choices", []), key=lambda c: c.get("index", 0))
    usage = body.get("usage") or {}
    k = max(1, len(choices))
    pt, ct = int(usage.get("prompt_tokens", 0)) // k, int(usage.get("completion_tokens", 0)) // k
    cost = ann.config.cost(pt, ct) * price_factor
    out = Answered({})
    kind = row.get("kind") or "sample"
    for j, (key, idx) in enumerate(zip(keys, indices)):
        if j >= len(choices):
            out.unparsed += 1           # the server returned fewer choices than n: ask online
            continue
        msg = choices[j].get("message") or {}
        # scrubbed whole, before the refusal is cut to 200 characters or anything is cached
        text = scrub_optional(msg.get("content"), ann.secrets)
        refusal = detect_refusal(text, scrub_optional(msg.get("refusal"), ann.secrets))
        if kind == "verify":
            result, ok = _verdict(ann, row, text, refusal, missing, pt, ct, cost)
        else:
            result, ok = _sample(ann, row, idx, text, refusal, missing, pt, ct, cost)
        if not ok and refusal is None and malformed == "online":
            out.unparsed += 1           # the online path will ask again, with its repair attempt
            continue
        record = verdict_to_record(result) if isinstance(result, Verdict) else sample_to_record(result)
        ann.cache.put(CacheEntry(key, kind, ann.model, row["prompt_hash"], row["image_sha256"], idx,
                                 row["params"], record))
        out.results[key] = result
        out.usable += ok
        out.malformed += not ok
        out.cost_usd += cost
    return out


def _sample(ann: "VLLMAnnotator", row: dict[str, Any], idx: int, text: str | None, refusal: str | None,
            missing: tuple[str, ...], pt: int, ct: int, cost: float) -> tuple[Sample, bool]:
    s = Sample(face_id=row["face_id"], index=idx, round=int(row["round"]), labels=Labels(),
               raw_text=text or "", backend=ann.backend, model=ann.model,
               temperature=ann.config.temperature, prompt_tokens=pt, completion_tokens=ct, cost_usd=cost)
    if refusal is not None:
        s.parse_status, s.error = "failed", f"refusal: {refusal[:200]}"
        return s, False
    try:
        fill_sample(s, parse_annotation(text, missing))
        return s, True
    except ParseError as exc:
        s.parse_status, s.error = "failed", f"parse: {exc} (Batch API answer, quarantined, not bought again)"
        return s, False


def _verdict(ann: "VLLMAnnotator", row: dict[str, Any], text: str | None, refusal: str | None,
             missing: tuple[str, ...], pt: int, ct: int, cost: float) -> tuple[Verdict, bool]:
    v = Verdict(face_id=row["face_id"], verdict="reject", reasons=[], raw_text=text or "",
                backend=ann.backend, model=ann.model, prompt_tokens=pt, completion_tokens=ct, cost_usd=cost)
    if refusal is not None:
        v.reasons = [f"verification_failed: refusal: {refusal[:200]}"]
        return v, False
    try:
        pv = parse_verdict(text, missing)
    except ParseError as exc:
        v.reasons = [f"verification_failed: parse: {exc} (Batch API answer)"]
        return v, False
    v.verdict, v.reasons, v.corrected = pv.verdict, pv.reasons, pv.corrected
    return v, True
