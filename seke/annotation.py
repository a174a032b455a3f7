"""The annotator contract: what every annotator (offline, VLLM, simulated) takes and returns.

SV-UAMC, verification and every downstream asset only see these types, so the offline
annotator and a vision LLM behind the OpenAI protocol are interchangeable.

Batch methods take many requests at once so that a networked annotator can run them
concurrently (bounded by its own semaphore) while the sampling loop stays synchronous and
readable: one call per round for all faces still sampling.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol, Sequence, runtime_checkable

from seke.taxonomy import GRANULARITIES

ParseStatus = Literal["ok", "repaired", "failed"]
VerdictKind = Literal["accept", "correct", "reject"]


@dataclass(frozen=True)
class Labels:
    """Labels at the three granularities; ``None`` means unknown / not produced.

    ``aus`` maps AU id -> presence probability (or 0/1 for human codes). An empty dict means
    "AUs were coded and none is present", which differs from ``None`` (not coded).
    """

    expression: str | None = None
    valence: float | None = None
    arousal: float | None = None
    aus: dict[int, float] | None = None

    def known_granularities(self) -> list[str]:
        out = []
        if self.expression is not None:
            out.append("expression")
        if self.valence is not None and self.arousal is not None:
            out.append("va")
        if self.aus is not None:
            out.append("aus")
        return out

    def missing_granularities(self) -> list[str]:
        known = set(self.known_granularities())
        return [g for g in GRANULARITIES if g not in known]

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        if self.aus is not None:
            d["aus"] = {str(k): v for k, v in sorted(self.aus.items())}
        return d


@dataclass(frozen=True)
class FaceItem:
    """One normalised face crop plus what humans already know about it.

    ``withheld``: granularities whose human label was invalid at ingest. They are neither known
    (not stated as facts) nor missing (never generated): a guess must not stand in for a label
    a human gave and we could not read.
    """

    face_id: str
    image_png: bytes
    known: Labels = field(default_factory=Labels)
    source: str = ""
    subject_id: str | None = None
    withheld: tuple[str, ...] = ()


@dataclass(frozen=True)
class PromptSpec:
    """A rendered knowledge prompt: chat messages (without the image) and their identity."""

    version: str
    messages: tuple[dict[str, Any], ...]
    missing: tuple[str, ...]
    prompt_hash: str

    @staticmethod
    def make(version: str, messages: Sequence[dict[str, Any]], missing: Sequence[str]) -> "PromptSpec":
        payload = json.dumps({"v": version, "m": list(messages), "g": list(missing)}, sort_keys=True)
        return PromptSpec(version, tuple(messages), tuple(missing),
                          hashlib.sha256(payload.encode()).hexdigest()[:16])


@dataclass(frozen=True)
class SampleRequest:
    """Ask for ``n`` samples for one face; sample indices are ``first_index … first_index+n-1``."""

    face: FaceItem
    prompt: PromptSpec
    n: int
    first_index: int = 0
    round: int = 0


@dataclass
class Sample:
    """One Monte Carlo sample: a full structured answer, parsed, with its accounting."""

    face_id: str
    index: int
    round: int
    labels: Labels
    expression_probs: dict[str, float] | None = None
    rationale: str = ""
    parse_status: ParseStatus = "ok"
    error: str | None = None
    raw_text: str = ""
    backend: str = ""
    model: str = ""
    temperature: float | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_ms: float = 0.0
    cost_usd: float = 0.0
    cache_hit: bool = False

    @property
    def ok(self) -> bool:
        return self.parse_status != "failed"


@dataclass(frozen=True)
class VerifyRequest:
    """Ask the annotator to check candidate labels for one face against image and knowledge."""

    face: FaceItem
    candidate: Labels
    reasons_for_review: tuple[str, ...] = ()


@dataclass
class Verdict:
    """Self-verification outcome in one format for every annotator."""

    face_id: str
    verdict: VerdictKind
    reasons: list[str]
    corrected: Labels | None = None
    raw_text: str = ""
    backend: str = ""
    model: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_ms: float = 0.0
    cost_usd: float = 0.0
    cache_hit: bool = False


@runtime_checkable
class Annotator(Protocol):
    """What SV-UAMC needs from an annotator."""

    backend: str
    model: str

    def sample_batch(self, requests: Sequence[SampleRequest]) -> list[list[Sample]]:
        """Return, for each request, exactly ``request.n`` samples (failed ones included)."""
        ...

    def verify_batch(self, requests: Sequence[VerifyRequest]) -> list[Verdict]:
        """Return one verdict per request."""
        ...
