"""(De)serialisation of VLLM samples and verdicts as cache records (JSON in ``vllm_cache``).

A cached record holds what the model answered and what it cost when it was paid for; a hit
is rebuilt for the asking face/index/round with zero cost and ``cache_hit=True``.
"""

from __future__ import annotations

import json
from typing import Any

from seke.annotation import FaceItem, Labels, Sample, SampleRequest, Verdict
from seke.response_schema import PARSER_VERSION, ParsedAnswer

BACKEND = "vllm"

def params_text(params: dict[str, Any]) -> str:
    """Canonical text of sampling parameters (stored beside each record)."""
    return json.dumps(params, sort_keys=True)


def fill_sample(s: Sample, parsed: ParsedAnswer) -> None:
    s.labels = parsed.labels
    s.expression_probs = parsed.expression_probs
    s.rationale = parsed.rationale
    s.parse_status = "ok"
    s.error = None


def labels_to_json(labels: Labels) -> dict[str, Any]:
    """Like ``Labels.to_json`` without ``dataclasses.asdict`` (which deep-copies: hot path)."""
    return {"expression": labels.expression, "valence": labels.valence, "arousal": labels.arousal,
            "aus": None if labels.aus is None else {str(k): v for k, v in sorted(labels.aus.items())}}


def labels_from_json(d: dict[str, Any] | None) -> Labels | None:
    if d is None:
        return None
    aus = d.get("aus")
    return Labels(d.get("expression"), d.get("valence"), d.get("arousal"),
                  {int(k): float(v) for k, v in aus.items()} if aus is not None else None)


def sample_to_record(s: Sample) -> dict[str, Any]:
    return {"labels": labels_to_json(s.labels), "expression_probs": s.expression_probs,
            "rationale": s.rationale, "parse_status": s.parse_status, "error": s.error,
            "raw_text": s.raw_text, "temperature": s.temperature, "prompt_tokens": s.prompt_tokens,
            "completion_tokens": s.completion_tokens, "latency_ms": s.latency_ms,
            "cost_usd": s.cost_usd, "parser": PARSER_VERSION}


def sample_from_record(d: dict[str, Any], req: SampleRequest, index: int, model: str) -> Sample:
    """A cached answer for this face and index: free, instantaneous, marked as a hit."""
    return Sample(face_id=req.face.face_id, index=index, round=req.round,
                  labels=labels_from_json(d["labels"]) or Labels(),
                  expression_probs=d.get("expression_probs"), rationale=d.get("rationale", ""),
                  parse_status=d["parse_status"], error=d.get("error"), raw_text=d.get("raw_text", ""),
                  backend=BACKEND, model=model,
                  temperature=d.get("temperature"), cache_hit=True)


def verdict_to_record(v: Verdict) -> dict[str, Any]:
    return {"verdict": v.verdict, "reasons": v.reasons,
            "corrected": labels_to_json(v.corrected) if v.corrected else None, "raw_text": v.raw_text,
            "prompt_tokens": v.prompt_tokens, "completion_tokens": v.completion_tokens,
            "cost_usd": v.cost_usd, "parser": PARSER_VERSION}


def verdict_from_record(d: dict[str, Any], face: FaceItem, model: str) -> Verdict:
    return Verdict(face_id=face.face_id, verdict=d["verdict"], reasons=list(d["reasons"]),
                   corrected=labels_from_json(d.get("corrected")), raw_text=d.get("raw_text", ""),
                   backend=BACKEND, model=model, cache_hit=True)
