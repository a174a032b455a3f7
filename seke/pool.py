"""An annotator pool: several annotators (VLLM endpoints and/or the offline one) on one SV-UAMC run.

Why: at 100k faces money and rate limits decide. A cheap annotator (the offline models, a small
self-hosted VLM) can settle the easy faces; only the faces it leaves uncertain or inconsistent
need the expensive model (``cascade``). And a model checking its own answers shares its own
blind spots, so ``jury`` sends verification to a different model.

A cheap stage can also be *confidently wrong* (its samples agree, the knowledge tables find
nothing inconsistent), and uncertainty cannot catch that. So by default (``cross_check``) a face
a cheaper cascade stage resolved is re-checked by a different model — the next, dearer stage, or
the configured verifier — with one verification call before it is final; if it does not accept
the label, the next dearer checker is asked, and only when every checker asked disagrees does
the face escalate like an unresolved one. In a ``jury`` with ``cross_check``
every face is verified by another model. ``verified_labels.checked_by`` lists the check calls.

:class:`PoolMember` is the plain description of one member (name, kind, roles, price); the
Dagster resource (:mod:`resources.annotator`) derives its config from it and from
:class:`seke.annotators.vllm_support.VLLMConfig`, validates every member with
:func:`validate_members` *before* building any client, and hands :func:`seke.sv_uamc.run_sampling`
an :class:`AnnotatorPool` in place of a single annotator.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

from seke.annotation import Annotator

STRATEGIES = ("cascade", "jury")
KINDS = ("vllm", "offline")
ROLES = ("generate", "verify")

#: Tokens of one typical SEKE request, used only to *order* members by price (the estimate in
#: seke.estimate uses the real prompts): a knowledge prompt plus one face, and one answer.
TYPICAL_PROMPT_TOKENS = 1500
TYPICAL_COMPLETION_TOKENS = 350


@dataclass(frozen=True)
class PoolMember:
    """One annotator of the pool (endpoint fields live in ``VLLMConfig``)."""

    name: str = field(metadata={"help": "unique name; recorded in verified_labels.produced_by/verified_by"})
    kind: str = field(default="vllm", metadata={"help": "vllm (an OpenAI-compatible endpoint) | offline"})
    roles: str = field(default="generate,verify", metadata={"help": "comma list among generate, verify"})
    price_input_per_1m: float | None = field(default=None, metadata={
        "help": "USD per 1M prompt tokens (required for vllm members; 0 for a free endpoint)"})
    price_output_per_1m: float | None = field(default=None, metadata={
        "help": "USD per 1M completion tokens (required for vllm members)"})
    price_per_call: float = field(default=0.0, metadata={
        "help": "fixed USD per call (e.g. the compute of a self-hosted or offline model)"})

    def role_set(self) -> frozenset[str]:
        return frozenset(r.strip() for r in self.roles.split(",") if r.strip())

    def unit_cost(self) -> float:
        """Expected USD of one typical call (orders the cascade: cheapest first)."""
        return ((self.price_input_per_1m or 0.0) * TYPICAL_PROMPT_TOKENS
                + (self.price_output_per_1m or 0.0) * TYPICAL_COMPLETION_TOKENS) / 1e6 + self.price_per_call


def validate_members(members: Sequence[PoolMember], strategy: str, verifier: str | None = None,
                     limits: dict[str, dict[str, Any]] | None = None) -> None:
    """Every problem of the pool's configuration at once, as one ValueError (no call made).

    ``limits`` maps member name to its endpoint's rpm/tpm/max_usd (checked for sign)."""
    problems: list[str] = []
    if strategy not in STRATEGIES:
        problems.append(f"strategy {strategy!r} must be one of {STRATEGIES}")
    if not members:
        problems.append("the pool has no member")
    names = [m.name for m in members]
    for dup in sorted({n for n in names if names.count(n) > 1}):
        problems.append(f"member name {dup!r} is used twice")
    for m in members:
        who = f"member {m.name!r}"
        if not m.name:
            problems.append("a member has no name")
        if m.kind not in KINDS:
            problems.append(f"{who}: kind {m.kind!r} must be one of {KINDS}")
        bad_roles = m.role_set() - set(ROLES)
        if bad_roles or not m.role_set():
            problems.append(f"{who}: roles {m.roles!r} must be a non-empty comma list among {ROLES}")
        for price in ("price_input_per_1m", "price_output_per_1m"):
            v = getattr(m, price)
            if v is None:
                if m.kind == "vllm":
                    problems.append(f"{who}: {price} is missing (give 0 for a free endpoint)")
            elif not isinstance(v, (int, float)) or v != v or v < 0:
                problems.append(f"{who}: {price}={v!r} must be a number >= 0")
        if not isinstance(m.price_per_call, (int, float)) or m.price_per_call < 0:
            problems.append(f"{who}: price_per_call={m.price_per_call!r} must be a number >= 0")
        for lim, v in (limits or {}).get(m.name, {}).items():
            if v is not None and (not isinstance(v, (int, float)) or v != v or v <= 0):
                problems.append(f"{who}: {lim}={v!r} must be a number > 0 (or unset)")
    gens = [m for m in members if "generate" in m.role_set()]
    vers = [m for m in members if "verify" in m.role_set()]
    if members and not gens:
        problems.append("no member can generate")
    if verifier is not None and verifier not in names:
        problems.append(f"verifier {verifier!r} is not a member ({names})")
    elif verifier is not None and "verify" not in next(m for m in members if m.name == verifier).role_set():
        problems.append(f"verifier {verifier!r} does not have the verify role")
    if strategy == "jury" and gens:
        generator = sorted(gens, key=PoolMember.unit_cost)[0]
        others = [m for m in vers if m.name != generator.name]
        if verifier == generator.name or not others:
            problems.append(f"jury needs a verifier other than the generator {generator.name!r}")
    if problems:
        raise ValueError("annotator pool: " + "; ".join(problems))


@dataclass
class PoolEntry:
    """A built member: its name, annotator, roles and unit cost."""

    name: str
    annotator: Annotator
    roles: frozenset[str] = frozenset(ROLES)
    unit_cost: float = 0.0


def entry_for(annotator: Annotator) -> PoolEntry:
    """A single annotator as a one-member pool entry (named ``backend/model``)."""
    name = getattr(annotator, "name", None) or f"{getattr(annotator, 'backend', '')}/{getattr(annotator, 'model', '')}"
    return PoolEntry(str(name), annotator)


@dataclass
class AnnotatorPool:
    """Members in the order they were given; :meth:`generators` orders by unit cost."""

    members: list[PoolEntry]
    strategy: str = "cascade"
    verifier: str | None = None
    #: cascade: a face a cheaper stage resolved is re-checked by another model (one verification
    #: call, see :meth:`checkers_for`) before it is final, and escalates if that model disagrees;
    #: jury: *every* face is verified by another model, not only the uncertain/inconsistent ones
    cross_check: bool = True

    def generators(self) -> list[PoolEntry]:
        gens = sorted((e for e in self.members if "generate" in e.roles), key=lambda e: e.unit_cost)
        return gens if self.strategy == "cascade" else gens[:1]

    def verifier_for(self, produced_by: str | None) -> PoolEntry:
        """Who verifies a face produced by ``produced_by``: the configured verifier; else, in a
        cascade, the producer itself; in a jury, the cheapest verifier that is another model."""
        by_name = {e.name: e for e in self.members}
        if self.verifier is not None:
            return by_name[self.verifier]
        if self.strategy == "cascade" and produced_by in by_name and "verify" in by_name[produced_by].roles:
            return by_name[produced_by]
        others = sorted((e for e in self.members if "verify" in e.roles and e.name != produced_by),
                        key=lambda e: e.unit_cost)
        if others:
            return others[0]
        return by_name[produced_by] if produced_by in by_name else self.members[0]

    def checkers_for(self, produced_by: str) -> list[PoolEntry]:
        """Who re-checks a face that the cascade stage ``produced_by`` resolved, in order of
        preference (the next is asked when the previous one fails or disagrees): the configured
        verifier when it is another model, then the dearer generators in cascade order, then
        verify-only members, cheapest first. Only members with the verify role; never the
        producer itself (a model re-checking itself shares its blind spots) nor a cheaper stage."""
        out: list[PoolEntry] = []
        by_name = {e.name: e for e in self.members}
        if self.verifier is not None and self.verifier != produced_by:
            out.append(by_name[self.verifier])
        gens = sorted((e for e in self.members if "generate" in e.roles), key=lambda e: e.unit_cost)
        names = [e.name for e in gens]
        later = gens[names.index(produced_by) + 1:] if produced_by in names else gens
        # never a cheaper stage: its "no" would overrule the dearer model that already answered
        rest = sorted((e for e in self.members if "generate" not in e.roles), key=lambda e: e.unit_cost)
        for e in later + rest:
            if "verify" in e.roles and e.name != produced_by and e.name not in {o.name for o in out}:
                out.append(e)
        return out

    def close(self) -> None:
        for e in self.members:
            close = getattr(e.annotator, "close", None)
            if close is not None:
                close()

    # the single-annotator face of the pool (what assets log and read)
    @property
    def backend(self) -> str:
        return "pool"

    @property
    def model(self) -> str:
        return f"{self.strategy}(" + ",".join(e.name for e in self.members) + ")"

    @property
    def secrets(self) -> tuple[str, ...]:
        return tuple(s for e in self.members for s in getattr(e.annotator, "secrets", ()))

    def member_stats(self) -> dict[str, dict[str, float | int]]:
        return {e.name: e.annotator.stats.as_metadata() for e in self.members
                if hasattr(getattr(e.annotator, "stats", None), "as_metadata")}


def billed_usd(engine: Any) -> float | None:
    """What a run's annotator(s) were billed, verification, repairs and Batch jobs included
    (their own accounting); None when no annotator keeps one (the offline models)."""
    members = getattr(engine, "members", None)
    anns = [e.annotator for e in members] if members is not None else [engine]
    costs = [float(a.stats.cost_usd) for a in anns if hasattr(getattr(a, "stats", None), "cost_usd")]
    return sum(costs) if costs else None
