"""SV-UAMC: uncertainty-aware Monte Carlo sampling with self-verification (DESIGN.md §4).

One loop, three strategies on the same code path so that baselines are comparable:

* ``sv_uamc``: rounds of ``k`` samples for every face still sampling; after each round the
  uncertainty of every *missing* granularity is estimated (:mod:`seke.uncertainty`) and a face
  stops as soon as all of them are at or below their thresholds, or at ``n_max`` samples;
* ``fixed_n``: self-consistency with exactly ``fixed_n`` samples per face (rounds of ``k``);
* ``single_shot``: one sample per face.

Then, per face: aggregate the parsed samples (:mod:`seke.aggregate`), merge them with the
human-known granularities (which are carried through with origin ``human`` and never
overwritten), score consistency with the knowledge tables, and — when ``verify`` is on — send
faces that are still uncertain at ``n_max`` or inconsistent to one ``verify_batch`` call.
A ``reject`` verdict, a failed verification, or a verified result that still carries a
consistency flag or scores below ``consistency_floor`` abstains the
face: it keeps its candidate labels for the review queue but ``status`` is ``abstained`` and
``abstain_reason`` says why, so nothing downstream uses it as a label.

Accounting: every sample counts as one model call (a server that supports ``n=k`` may serve a
round in one request, but the tokens, latency and cost are per sample), and a verification is
one more call. Failed samples are kept in the sample rows and ignored by aggregation; a face
with no parsed sample is abstained with ``all_samples_failed``.

The loop is synchronous and readable; concurrency belongs to the annotator, which receives one
batch per round for all active faces.

**Pools** (:class:`seke.pool.AnnotatorPool` in place of one annotator), same loop:

* ``cascade``: generators in order of price. Every face starts with the cheapest; after its
  stage, a face is *resolved* when every missing granularity is at or below its uncertainty
  threshold and the candidate passes the consistency gate. An unresolved face (uncertain,
  inconsistent, or whose samples all failed — an endpoint down or answering 401) escalates to
  the next generator with a fresh sample budget; earlier samples stay in ``mc_samples`` and in
  the face's call count but do not vote. The last stage's faces follow the normal verify/abstain
  rules. A stage whose whole round fails is marked failed for the rest of the run (its faces
  move on at once, the error lands in ``stats["pool"]``).
* ``jury``: one generator; verification goes to a *different* model (cross-model verification).

Each label row says which annotator produced it (``produced_by``), which verified it
(``verified_by``) and how often it escalated (``escalations``). Cross-check calls that were
answered are listed in ``checked_by`` (and counted in ``n_calls``); one that failed unanswered
(endpoint down, 401, budget: nothing billed) is listed in ``check_failed_by`` instead. The
tokens each verification / check call billed are kept (``verify_*_tokens``,
``check_*_tokens``) so that :mod:`seke.estimate` can price verification from what verifiers
actually answer rather than from a guess.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Callable, Literal, Mapping, Protocol, Sequence

from seke.aggregate import (AUAggregate, ExpressionAggregate, VAAggregate, aggregate_aus,
                            aggregate_expression, aggregate_va)
from seke.annotation import (Annotator, FaceItem, Labels, PromptSpec, Sample, SampleRequest,
                             Verdict, VerifyRequest)
from seke.knowledge import Knowledge
from seke.taxonomy import AU_CATALOGUE, EXPRESSIONS

if TYPE_CHECKING:
    from seke.pool import AnnotatorPool

Strategy = Literal["sv_uamc", "single_shot", "fixed_n"]
STRATEGIES: tuple[str, ...] = ("sv_uamc", "single_shot", "fixed_n")


@dataclass(frozen=True)
class SamplingConfig:
    """Parameters of the sampling loop (flat fields so a Dagster ``Config`` can mirror them).

    Thresholds are on the uncertainties of :mod:`seke.uncertainty`: expression ``1 - P(mode)``,
    VA standard error, AU largest posterior tail mass beyond 0.5. Defaults were chosen with
    ``bench/sv_uamc.py --tune`` on the simulated *dev* seed (never the evaluation seed or a test
    split): the cheapest point of the sweep whose expression accuracy stays within 0.5 points
    of fixed-10. In words: stop after a round of 3 when the expression has a majority
    (2 of 3 passes, 1/1/1 does not), the VA standard error is at most 0.25 and no AU is a
    coin flip (a 2-of-3 AU vote passes, a 1-1 vote does not).
    """

    strategy: Strategy = field(default="sv_uamc", metadata={"help": "sv_uamc | fixed_n | single_shot"})
    k: int = field(default=3, metadata={"help": "samples per round"})
    n_max: int = field(default=10, metadata={"help": "most samples per face (sv_uamc)"})
    fixed_n: int = field(default=10, metadata={"help": "samples per face (fixed_n baseline)"})
    threshold_expression: float = field(default=0.35, metadata={"help": "stop when 1 - P(mode) is at most this"})
    threshold_va: float = field(default=0.25, metadata={"help": "stop when the VA standard error is at most this"})
    threshold_aus: float = field(default=0.30, metadata={"help": "stop when no AU's posterior tail beyond 0.5 exceeds this"})
    expression_method: str = field(default="dirichlet", metadata={"help": "dirichlet | entropy"})
    verify: bool = field(default=True, metadata={"help": "verify uncertain or inconsistent faces"})
    consistency_floor: float = field(default=0.30, metadata={"help": "consistency score below which a face is verified"})
    seed: int = field(default=0, metadata={"help": "seed of the Monte Carlo integral behind the expression posterior"})

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {self.strategy!r}")
        if self.k < 1 or self.n_max < 1 or self.fixed_n < 1:
            raise ValueError("k, n_max and fixed_n must be >= 1")

    @property
    def budget(self) -> int:
        """Most samples one face may receive under this strategy."""
        return {"sv_uamc": self.n_max, "fixed_n": self.fixed_n, "single_shot": 1}[self.strategy]

    @property
    def round_size(self) -> int:
        return 1 if self.strategy == "single_shot" else self.k

    def threshold(self, granularity: str) -> float:
        return {"expression": self.threshold_expression, "va": self.threshold_va,
                "aus": self.threshold_aus}[granularity]

    @staticmethod
    def baseline(strategy: Strategy, **overrides: Any) -> "SamplingConfig":
        """A baseline as in the literature: no early stopping and no verification."""
        return SamplingConfig(strategy=strategy, verify=False, **overrides)


class ConsistencyLike(Protocol):
    score: float
    flags: list[str]
    consistent: bool


ConsistencyFn = Callable[[Labels, Knowledge], ConsistencyLike]


class Calibrator(Protocol):
    """Maps a raw confidence to a calibrated one (see :mod:`seke.calibration`)."""

    def apply(self, confidence: float, granularity: str, source: str | None = None) -> float: ...


@dataclass
class SamplingResult:
    """Rows for ``mc_samples`` and ``verified_labels`` plus run statistics for metadata."""

    samples: list[dict[str, Any]]
    labels: list[dict[str, Any]]
    stats: dict[str, Any]


@dataclass
class _Face:
    """Sampling state of one face."""

    face: FaceItem
    prompt: PromptSpec | None
    missing: tuple[str, ...]
    samples: list[Sample] = field(default_factory=list)
    archived: list[Sample] = field(default_factory=list)  # earlier cascade stages' samples
    produced_by: str | None = None
    escalations: int = 0
    checked_by: list[str] = field(default_factory=list)  # answered cross-check calls, in order
    check_tokens: list[tuple[int | None, int | None]] = field(default_factory=list)  # (prompt, completion) per checked_by
    check_failed_by: list[str] = field(default_factory=list)  # check calls that failed unanswered (not billed)
    stop_reason: str | None = None
    uncertainty: dict[str, float] = field(default_factory=dict)
    expr: ExpressionAggregate | None = None
    va: VAAggregate | None = None
    aus: AUAggregate | None = None

    @property
    def ok_samples(self) -> list[Sample]:
        return [s for s in self.samples if s.ok]

    @property
    def all_samples(self) -> list[Sample]:
        return self.archived + self.samples


# ---- the loop --------------------------------------------------------------------------------

def run_sampling(faces: Sequence[FaceItem], prompts: Mapping[str, PromptSpec], annotator: "Annotator | AnnotatorPool",
                 knowledge: Knowledge, config: SamplingConfig, *,
                 consistency: ConsistencyFn | None = None, calibration: Calibrator | None = None,
                 audit_hidden: Mapping[str, Sequence[str]] | None = None,
                 splits: Mapping[str, str] | None = None,
                 acceptance: Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> SamplingResult:
    """Sample, aggregate, score, verify and decide every face; never raises for one bad face.

    ``prompts`` maps face_id to its rendered knowledge prompt; the prompt's ``missing`` tuple
    says which granularities the annotator must produce (a face without a prompt is abstained
    with ``no_prompt``). ``consistency`` defaults to :func:`seke.consistency.score_consistency`.
    ``audit_hidden`` and ``splits`` only fill the matching output columns. ``acceptance``
    (e.g. :class:`seke.selective.Acceptance`) gets each finished label row and may abstain it
    (certified selective acceptance); statistics count its decisions.
    """
    if consistency is None:
        from seke.consistency import score_consistency as consistency  # noqa: N813
    states = [_Face(f, prompts.get(f.face_id), _missing_of(f, prompts.get(f.face_id))) for f in faces]
    for st in states:
        if st.prompt is None:
            st.stop_reason = "no_prompt"
        elif not st.missing:
            st.stop_reason = "nothing_missing"

    from seke.pool import AnnotatorPool, PoolEntry, entry_for

    pool = annotator if isinstance(annotator, AnnotatorPool) else None
    stages: list[PoolEntry] = pool.generators() if pool is not None else [entry_for(annotator)]
    pool_stats: dict[str, dict[str, Any]] = {e.name: _member_stats() for e in
                                             (pool.members if pool is not None else stages)}
    rounds = 0
    checked: dict[str, tuple[str, Verdict]] = {}  # face -> (checker, its accepting verdict)
    for si, stage in enumerate(stages):
        entering = [st for st in states if st.stop_reason is None]
        if not entering:
            break
        rounds += _run_stage(stage, entering, config, rounds, pool_stats[stage.name],
                             fail_fast=len(stages) > 1)
        for st in entering:
            st.produced_by = stage.name
        if si == len(stages) - 1:
            break
        resolved = [st for st in entering if _resolved(st, config, knowledge, consistency)]
        ids = {id(st) for st in resolved}
        for st in entering:
            if id(st) not in ids:
                _escalate(st, pool_stats[stage.name])
        if pool is not None and pool.cross_check and resolved:
            for st, checker, verdict in _cross_check(pool, stage, resolved, pool_stats):
                if verdict is not None and verdict.verdict == "accept":
                    checked[st.face.face_id] = (checker, verdict)
                    pool_stats[stage.name]["resolved"] += 1
                elif verdict is None:  # no checker answered: the stage's own decision stands
                    pool_stats[stage.name]["resolved"] += 1
                    pool_stats[stage.name]["unchecked"] += 1
                else:  # every other model asked disagrees: the dearer stage samples it afresh
                    pool_stats[stage.name]["check_disagreed"] += 1
                    _escalate(st, pool_stats[stage.name])
        else:
            pool_stats[stage.name]["resolved"] += len(resolved)

    candidates = {st.face.face_id: _candidate(st) for st in states}
    scores = {fid: (consistency(lab, knowledge) if lab is not None else None) for fid, lab in candidates.items()}

    # a face accepted by a cross-check is final (its checker is recorded as its verifier); in a
    # jury with cross_check every face with a candidate goes to another model, not just the
    # uncertain or inconsistent ones
    verify_all = pool is not None and pool.strategy == "jury" and pool.cross_check
    to_verify = [st for st in states if config.verify and st.face.face_id not in checked
                 and (_needs_verification(st, scores[st.face.face_id])
                      or (verify_all and scores[st.face.face_id] is not None and bool(st.missing)))]
    verifier_of = {st.face.face_id: (pool.verifier_for(st.produced_by) if pool is not None else stages[0])
                   for st in to_verify}
    verdict_of: dict[str, Verdict | None] = {}
    for vname in dict.fromkeys(v.name for v in verifier_of.values()):
        group = [st for st in to_verify if verifier_of[st.face.face_id].name == vname]
        entry = verifier_of[group[0].face.face_id]
        verdicts = _verify(entry.annotator, [
            VerifyRequest(st.face, candidates[st.face.face_id], _review_reasons(st, scores[st.face.face_id], config))
            for st in group])
        ms = pool_stats.setdefault(vname, _member_stats())
        ms["verify_calls"] += len(group)
        ms["verify_failed"] += sum(v is None for v in verdicts)
        verdict_of.update({st.face.face_id: v for st, v in zip(group, verdicts)})

    label_rows = []
    for st in states:
        fid = st.face.face_id
        if fid in checked:
            row = _label_row(st, candidates[fid], scores[fid], True, checked[fid][1],
                             knowledge, config, consistency, calibration,
                             list((audit_hidden or {}).get(fid, [])), (splits or {}).get(fid))
            row["n_calls"] -= 1  # the check is one of st.checked_by, counted below
            row["verified_by"] = checked[fid][0]
        else:
            row = _label_row(st, candidates[fid], scores[fid], fid in verdict_of, verdict_of.get(fid),
                             knowledge, config, consistency, calibration,
                             list((audit_hidden or {}).get(fid, [])), (splits or {}).get(fid))
            row["verified_by"] = verifier_of[fid].name if fid in verifier_of else None
        if fid in checked:  # the accepting check's tokens are in check_*_tokens
            row["verify_prompt_tokens"] = row["verify_completion_tokens"] = None
        row["n_calls"] += len(st.checked_by)
        row["produced_by"] = st.produced_by if st.all_samples else None
        row["checked_by"] = list(st.checked_by)
        row["check_prompt_tokens"] = [p for p, _ in st.check_tokens]
        row["check_completion_tokens"] = [c for _, c in st.check_tokens]
        row["check_failed_by"] = list(st.check_failed_by)
        row["escalations"] = st.escalations
        label_rows.append(acceptance(row) if acceptance is not None else row)
    sample_rows = [_sample_row(s, st, config) for st in states for s in st.all_samples]
    stats = _stats(states, label_rows, rounds, len(to_verify), config)
    stats["check_calls"] = sum(len(st.checked_by) for st in states)
    stats["check_failed_calls"] = sum(len(st.check_failed_by) for st in states)
    stats["calls"] += stats["check_calls"]
    n = len(states)
    sampled = sum(1 for st in states if st.all_samples)
    stats["calls_per_face"] = stats["calls"] / n if n else 0.0
    stats["calls_per_sampled_face"] = stats["calls"] / sampled if sampled else 0.0
    stats["pool"] = pool_stats
    stats["cross_check"] = bool(pool is not None and pool.cross_check)
    stats["pool_strategy"] = pool.strategy if pool is not None else "single"
    stats["produced_by"] = dict(Counter(r["produced_by"] for r in label_rows if r["produced_by"]))
    stats["verified_by"] = dict(Counter(r["verified_by"] for r in label_rows if r["verified_by"]))
    stats["escalations"] = sum(st.escalations for st in states)
    return SamplingResult(sample_rows, label_rows, stats)


def _member_stats() -> dict[str, Any]:
    return {"faces": 0, "samples": 0, "failed_samples": 0, "resolved": 0, "escalated": 0,
            "verify_calls": 0, "verify_failed": 0, "check_calls": 0, "check_failed": 0,
            "check_rejected": 0, "check_disagreed": 0, "unchecked": 0, "failed": False, "errors": {}}


def _escalate(st: _Face, ms: dict[str, Any]) -> None:
    """Send a face on to the next cascade stage: its samples are archived (they stay in
    ``mc_samples`` and in its call count, but do not vote) and it samples afresh."""
    st.archived.extend(st.samples)
    st.samples, st.stop_reason, st.uncertainty = [], None, {}
    st.expr = st.va = st.aus = None
    st.escalations += 1
    ms["escalated"] += 1


def _cross_check(pool: "AnnotatorPool", stage: Any, resolved: list[_Face],
                 pool_stats: dict[str, dict[str, Any]]) -> list[tuple[_Face, str | None, Verdict | None]]:
    """One verification call per face a cheaper stage resolved, by another model:
    ``(face, checker, verdict)`` with the first checker that *accepted* the label, or
    ``(face, None, a rejecting verdict)`` when every checker that answered disagreed, or
    ``(face, None, None)`` when no checker answered.

    Checkers are asked in :meth:`AnnotatorPool.checkers_for` order (next dearer stage first).
    A face goes on to the next checker when its checker's call fails (down, 401, budget) and
    when it disagrees: a cheap checker's "no" is weak evidence (it is wrong as often as its
    noise), so the dearer one has the casting vote before the face is sampled again."""
    out: list[tuple[_Face, str | None, Verdict | None]] = []
    pending = list(resolved)
    rejected: dict[int, Verdict] = {}
    for checker in pool.checkers_for(stage.name):
        ms = pool_stats.setdefault(checker.name, _member_stats())
        if not pending:
            break
        if ms["failed"] or ms.get("check_down"):
            continue
        answers = _verify(checker.annotator, [VerifyRequest(st.face, _candidate(st), ()) for st in pending])
        verdicts = [None if _call_failed(v) else v for v in answers]
        ms["check_calls"] += len(pending)
        ms["check_failed"] += sum(v is None for v in verdicts)
        ms["check_rejected"] += sum(v is not None and v.verdict != "accept" for v in verdicts)
        if pending and all(v is None for v in verdicts):
            ms["check_down"] = True  # down or refusing: it gets no more checks this run
        left = []
        for st, raw, v in zip(pending, answers, verdicts):
            if _answered(raw):  # a billed call (or one answered from the cache): in checked_by/n_calls
                st.checked_by.append(checker.name)
                st.check_tokens.append(_tokens(raw))
            else:  # down, 401, budget: nothing answered, nothing billed
                st.check_failed_by.append(checker.name)
            if v is not None and v.verdict == "accept":
                out.append((st, checker.name, v))
            else:
                if v is not None:
                    rejected[id(st)] = v
                left.append(st)
        pending = left
    out.extend((st, None, rejected.get(id(st))) for st in pending)
    return out


def _answered(v: Verdict | None) -> bool:
    """Whether a verification call was answered (and so billed, or served from the cache): a
    failed call with no token usage (transport error, 401, budget) was not; a refusal or an
    unparseable answer was (the model answered and the provider bills it)."""
    if v is None:
        return False
    return not _call_failed(v) or v.cache_hit or bool(v.prompt_tokens or v.completion_tokens)


def _tokens(v: Verdict | None) -> tuple[int | None, int | None]:
    """(prompt, completion) tokens a verification call billed; None for a call answered from
    the cache or not answered (no usage to learn from)."""
    if v is None or v.cache_hit or not _answered(v):
        return None, None
    return int(v.prompt_tokens), int(v.completion_tokens)


def _call_failed(v: Verdict | None) -> bool:
    """No verdict, or one that only says the call failed (VLLM annotators answer a transport,
    401 or budget failure with a ``reject`` whose reason starts ``verification_failed``)."""
    return v is None or any(str(r).startswith("verification_failed") for r in v.reasons)


def _run_stage(stage: Any, entering: list[_Face], config: SamplingConfig, round0: int,
               ms: dict[str, Any], fail_fast: bool) -> int:
    """SV-UAMC rounds for ``entering`` faces with one annotator; returns the rounds run."""
    rounds = 0
    ms["faces"] += len(entering)
    active = list(entering)
    while active:
        requests = [SampleRequest(st.face, st.prompt, min(config.round_size, config.budget - len(st.samples)),
                                  first_index=len(st.all_samples), round=round0 + rounds) for st in active]
        got_all = _sample(stage.annotator, requests)
        for st, got in zip(active, got_all):
            st.samples.extend(got)
            _update(st, config)
        batch = [s for got in got_all for s in got]
        ms["samples"] += len(batch)
        ms["failed_samples"] += sum(not s.ok for s in batch)
        for s in batch:
            if not s.ok and s.error:
                key = s.error[:120]
                if len(ms["errors"]) < 5 or key in ms["errors"]:
                    ms["errors"][key] = ms["errors"].get(key, 0) + 1
        rounds += 1
        if fail_fast and batch and not any(s.ok for s in batch):
            # the whole round failed (endpoint down, 401, budget): do not spend more on it
            ms["failed"] = True
            for st in active:
                if st.stop_reason is None:
                    st.stop_reason = "annotator_failed" if not st.ok_samples else "n_max"
            break
        active = [st for st in active if st.stop_reason is None]
    return rounds


def _resolved(st: _Face, config: SamplingConfig, knowledge: Knowledge, consistency: ConsistencyFn) -> bool:
    """Cascade gate: certain on every missing granularity and consistent with the knowledge."""
    if st.stop_reason in ("no_prompt", "nothing_missing"):
        return True
    if not st.ok_samples or not all(_produced(st, g) for g in st.missing):
        return False
    if any(st.uncertainty.get(g, math.inf) > config.threshold(g) for g in st.missing):
        return False
    candidate = _candidate(st)
    return candidate is not None and bool(consistency(candidate, knowledge).consistent)


def _missing_of(face: FaceItem, prompt: PromptSpec | None) -> tuple[str, ...]:
    """Granularities to generate: what the prompt asks for, minus anything humans already know
    and anything withheld (an invalid human label is never replaced by a guess)."""
    skip = set(face.known.known_granularities()) | set(face.withheld)
    asked = prompt.missing if prompt is not None else ()
    return tuple(g for g in asked if g not in skip)


def _sample(annotator: Annotator, requests: Sequence[SampleRequest]) -> list[list[Sample]]:
    """One batch call; if the batch fails, retry request by request so one face cannot sink it."""
    if not requests:
        return []
    try:
        results = annotator.sample_batch(requests)
        if len(results) != len(requests):
            raise RuntimeError(f"annotator returned {len(results)} results for {len(requests)} requests")
    except Exception:  # noqa: BLE001 - fall back to per-request calls
        results = []
        for req in requests:
            try:
                results.append(annotator.sample_batch([req])[0])
            except Exception as exc:  # noqa: BLE001 - recorded per sample
                results.append([_failed(req, req.first_index + i, f"{type(exc).__name__}: {exc}", annotator)
                                for i in range(req.n)])
    out = []
    for req, got in zip(requests, results):
        got = list(got)[: req.n]
        got += [_failed(req, req.first_index + i, f"annotator returned {len(got)} of {req.n} samples", annotator)
                for i in range(len(got), req.n)]
        out.append(got)
    return out


def _failed(req: SampleRequest, index: int, error: str, annotator: Annotator) -> Sample:
    return Sample(req.face.face_id, index, req.round, Labels(), parse_status="failed", error=error,
                  backend=getattr(annotator, "backend", ""), model=getattr(annotator, "model", ""))


def _update(st: _Face, config: SamplingConfig) -> None:
    """Re-aggregate after a round and decide whether the face stops."""
    ok = st.ok_samples
    st.expr = aggregate_expression(ok, config.expression_method, config.seed) if "expression" in st.missing else None
    st.va = aggregate_va(ok) if "va" in st.missing else None
    st.aus = aggregate_aus(ok) if "aus" in st.missing else None
    st.uncertainty = {}
    if "expression" in st.missing:
        st.uncertainty["expression"] = st.expr.uncertainty if st.expr else 1.0
    if "va" in st.missing:
        st.uncertainty["va"] = st.va.uncertainty if st.va else math.inf
    if "aus" in st.missing:
        st.uncertainty["aus"] = st.aus.uncertainty if st.aus else 1.0
    produced = all(_produced(st, g) for g in st.missing)
    certain = produced and all(st.uncertainty[g] <= config.threshold(g) for g in st.missing)
    if config.strategy == "sv_uamc" and certain:
        st.stop_reason = "confident"
    elif len(st.samples) >= config.budget:
        if not ok:
            st.stop_reason = "all_samples_failed"
        elif not any(_produced(st, g) for g in st.missing):
            st.stop_reason = "nothing_produced"
        else:
            st.stop_reason = {"sv_uamc": "n_max", "fixed_n": "fixed_n", "single_shot": "single_shot"}[config.strategy]


def _produced(st: _Face, g: str) -> bool:
    return {"expression": st.expr, "va": st.va, "aus": st.aus}[g] is not None


def _candidate(st: _Face) -> Labels | None:
    """Human labels where known, aggregated labels for the missing granularities.

    A missing granularity that no sample produced stays ``None`` (the face counted as uncertain
    and spent its budget on it); a face where nothing was produced has no candidate.
    """
    if st.stop_reason in ("no_prompt", "all_samples_failed", "nothing_produced", "annotator_failed"):
        return None
    k = st.face.known
    return Labels(
        expression=k.expression if "expression" not in st.missing else (st.expr.label if st.expr else None),
        valence=k.valence if "va" not in st.missing else (st.va.valence if st.va else None),
        arousal=k.arousal if "va" not in st.missing else (st.va.arousal if st.va else None),
        aus=k.aus if "aus" not in st.missing else ({au: 1.0 for au in st.aus.present} if st.aus else None),
    )


def _needs_verification(st: _Face, score: ConsistencyLike | None) -> bool:
    if score is None or not st.missing:
        return False
    return st.stop_reason == "n_max" or not score.consistent


def _review_reasons(st: _Face, score: ConsistencyLike | None, config: SamplingConfig) -> tuple[str, ...]:
    reasons = [f"uncertain_{g}" for g in st.missing if st.uncertainty.get(g, 1.0) > config.threshold(g)]
    if score is not None:
        reasons += list(score.flags)
    return tuple(reasons)


def _verify(annotator: Annotator, requests: Sequence[VerifyRequest]) -> list[Verdict | None]:
    """One verify_batch call; per-request fallback on failure; None marks a failed verification."""
    if not requests:
        return []
    try:
        got = list(annotator.verify_batch(requests))
        if len(got) == len(requests):
            return got
    except Exception:  # noqa: BLE001 - fall back to per-request calls
        pass
    out: list[Verdict | None] = []
    for req in requests:
        try:
            out.append(annotator.verify_batch([req])[0])
        except Exception:  # noqa: BLE001 - the face is abstained with a reason
            out.append(None)
    return out


# ---- rows ------------------------------------------------------------------------------------

def _label_row(st: _Face, candidate: Labels | None, score: ConsistencyLike | None, was_sent: bool,
               verdict: Verdict | None, knowledge: Knowledge, config: SamplingConfig,
               consistency: ConsistencyFn, calibration: Calibrator | None, audit_hidden: list[str],
               split: str | None) -> dict[str, Any]:
    """One ``verified_labels`` row: decide status from the verdict, merge human and generated."""
    face, known, missing = st.face, st.face.known, st.missing
    status, reason = "accepted", None
    final = candidate
    verdict_name, verdict_reasons = "none", None
    expr_conf = st.expr.confidence if st.expr else None

    if candidate is None:
        status, reason = "abstained", st.stop_reason
    elif was_sent:
        if verdict is None:
            status, reason, verdict_name = "abstained", "verification_failed", "error"
        else:
            verdict_name, verdict_reasons = verdict.verdict, "; ".join(verdict.reasons)
            if verdict.verdict == "reject":
                status, reason = "abstained", "verifier_rejected"
            elif verdict.verdict == "correct" and verdict.corrected is not None:
                final = _apply_correction(candidate, verdict.corrected, missing)
                if final.expression != candidate.expression and st.expr is not None:
                    # the samples' own support for the corrected class, not the verifier's say-so
                    expr_conf = st.expr.probs[EXPRESSIONS.index(final.expression)]
                score = consistency(final, knowledge)
            # DESIGN §4: a face still inconsistent after verification is abstained, not labelled.
            if status == "accepted" and score is not None and (
                    not score.consistent or score.score < config.consistency_floor):
                status, reason = "abstained", "still_inconsistent"

    gen_origin = "verified" if (was_sent and verdict is not None and verdict.verdict != "reject") else "generated"
    row: dict[str, Any] = {
        "face_id": face.face_id, "subject_id": face.subject_id, "split": split,
        "status": status, "abstain_reason": reason, "strategy": config.strategy,
        "n_samples": len(st.all_samples), "n_calls": len(st.all_samples) + (1 if was_sent else 0),
        "verify_prompt_tokens": _tokens(verdict)[0] if was_sent else None,
        "verify_completion_tokens": _tokens(verdict)[1] if was_sent else None,
        "stop_reason": st.stop_reason, "verdict": verdict_name, "verdict_reasons": verdict_reasons,
        "consistency_score": score.score if score is not None else None,
        "consistency_flags": list(score.flags) if score is not None else [],
        "knowledge_version": knowledge.version, "audit_hidden": audit_hidden,
        "withheld": [g for g in face.withheld if g not in missing],
    }
    # expression
    if "expression" not in missing and known.expression is not None:
        row.update(expression=known.expression, expression_confidence=1.0, expression_origin="human",
                   expression_probs=_one_hot(known.expression), uncertainty_expression=0.0)
    elif final is not None and "expression" in missing and final.expression is not None:
        row.update(expression=final.expression, expression_confidence=_cal(calibration, expr_conf, "expression", face.source),
                   expression_origin=gen_origin,
                   expression_probs=st.expr.probs if st.expr else None,
                   uncertainty_expression=st.uncertainty.get("expression"))
    else:
        row.update(expression=None, expression_confidence=None, expression_origin=None,
                   expression_probs=None, uncertainty_expression=st.uncertainty.get("expression"))
    # valence-arousal
    if "va" not in missing and known.valence is not None:
        row.update(valence=known.valence, arousal=known.arousal, va_confidence=1.0, va_origin="human",
                   uncertainty_va=0.0)
    elif final is not None and "va" in missing and final.valence is not None:
        row.update(valence=final.valence, arousal=final.arousal,
                   va_confidence=_cal(calibration, st.va.confidence if st.va else None, "va", face.source),
                   va_origin=gen_origin, uncertainty_va=_finite(st.uncertainty.get("va")))
    else:
        row.update(valence=None, arousal=None, va_confidence=None, va_origin=None,
                   uncertainty_va=_finite(st.uncertainty.get("va")))
    # action units
    if "aus" not in missing and known.aus is not None:
        present = sorted(au for au, p in known.aus.items() if p >= 0.5)
        row.update(aus=present, au_probs=[1.0 if au in present else 0.0 for au in AU_CATALOGUE],
                   au_confidence=1.0, au_origin="human", uncertainty_aus=0.0)
    elif final is not None and "aus" in missing and final.aus is not None:
        row.update(aus=sorted(au for au, p in final.aus.items() if p >= 0.5),
                   au_probs=st.aus.probs if st.aus else None,
                   au_confidence=_cal(calibration, st.aus.confidence if st.aus else None, "aus", face.source),
                   au_origin=gen_origin, uncertainty_aus=st.uncertainty.get("aus"))
    else:
        row.update(aus=None, au_probs=None, au_confidence=None, au_origin=None,
                   uncertainty_aus=st.uncertainty.get("aus"))
    return row


def _apply_correction(candidate: Labels, corrected: Labels, missing: Sequence[str]) -> Labels:
    """Take the verifier's corrections for generated granularities only; human ones stay."""
    out = candidate
    if "expression" in missing and corrected.expression in EXPRESSIONS:
        out = replace(out, expression=corrected.expression)
    if "va" in missing and corrected.valence is not None and corrected.arousal is not None:
        out = replace(out, valence=max(-1.0, min(1.0, corrected.valence)),
                      arousal=max(-1.0, min(1.0, corrected.arousal)))
    if "aus" in missing and corrected.aus is not None:
        out = replace(out, aus={au: p for au, p in corrected.aus.items() if au in AU_CATALOGUE})
    return out


def _cal(calibration: Calibrator | None, conf: float | None, granularity: str, source: str | None) -> float | None:
    if conf is None or calibration is None:
        return conf
    return float(calibration.apply(conf, granularity, source))


def _finite(x: float | None) -> float | None:
    return x if x is None or math.isfinite(x) else None


def _one_hot(expression: str) -> list[float] | None:
    if expression not in EXPRESSIONS:
        return None
    return [1.0 if e == expression else 0.0 for e in EXPRESSIONS]


def _sample_row(s: Sample, st: _Face, config: SamplingConfig) -> dict[str, Any]:
    lab = s.labels
    return {
        "face_id": s.face_id, "prompt_hash": st.prompt.prompt_hash if st.prompt else None,
        "strategy": config.strategy, "round": s.round, "sample_index": s.index,
        "backend": s.backend, "model": s.model, "temperature": s.temperature, "raw_text": s.raw_text,
        "parse_status": s.parse_status, "error": s.error, "expression": lab.expression,
        "expression_probs": ([float(s.expression_probs.get(e, 0.0)) for e in EXPRESSIONS]
                             if s.expression_probs else None),
        "valence": lab.valence, "arousal": lab.arousal,
        "au_probs": [float(lab.aus.get(au, 0.0)) for au in AU_CATALOGUE] if lab.aus is not None else None,
        "rationale": s.rationale, "prompt_tokens": s.prompt_tokens, "completion_tokens": s.completion_tokens,
        "latency_ms": s.latency_ms, "cost_usd": s.cost_usd, "cache_hit": s.cache_hit,
    }


def _stats(states: Sequence[_Face], rows: Sequence[dict[str, Any]], rounds: int, n_verify: int,
           config: SamplingConfig) -> dict[str, Any]:
    """Run statistics for Dagster metadata (plain JSON-able values)."""
    n = len(states)
    n_samples = sum(len(st.all_samples) for st in states)
    n_failed = sum(1 for st in states for s in st.all_samples if not s.ok)
    calls = n_samples + n_verify
    sampled = [st for st in states if st.all_samples]
    return {
        "strategy": config.strategy, "faces": n, "rounds": rounds,
        "samples": n_samples, "failed_samples": n_failed, "verify_calls": n_verify, "calls": calls,
        "calls_per_face": calls / n if n else 0.0,
        "calls_per_sampled_face": calls / len(sampled) if sampled else 0.0,
        "stop_reasons": dict(Counter(st.stop_reason for st in states)),
        "verdicts": dict(Counter(r["verdict"] for r in rows)),
        "status": dict(Counter(r["status"] for r in rows)),
        "abstain_reasons": dict(Counter(r["abstain_reason"] for r in rows if r["abstain_reason"])),
        "abstain_rate": sum(r["status"] == "abstained" for r in rows) / n if n else 0.0,
        "config": {"k": config.k, "n_max": config.n_max, "fixed_n": config.fixed_n,
                   "threshold_expression": config.threshold_expression,
                   "threshold_va": config.threshold_va, "threshold_aus": config.threshold_aus,
                   "verify": config.verify, "consistency_floor": config.consistency_floor},
    }
