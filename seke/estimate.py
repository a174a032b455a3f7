"""What a run will cost before it runs: calls, tokens and money per annotator.

Built from the *real* prompts (the knowledge prompts of the faces, the face attached as the
annotator would attach it) and counted like the provider bills:

* text tokens with tiktoken (:mod:`seke.tokens`; offline it counts with cl100k, reported in
  ``encoding``), images by the provider's rule at the configured detail (OpenAI tiles, Qwen-VL
  patches), plus chat framing;
* a request with ``n`` choices bills its prompt once; without ``n`` every sample is a request;
* the expected samples per face, *requests* (rounds) per face, completion tokens per sample,
  the share of faces verified and (for a cascade) the share of faces reaching each member come
  from the stored statistics of earlier runs (``mc_samples`` / ``verified_labels`` in the lake,
  runs of the same strategy) when there are some for that model; a model without history takes
  the completion length of the other models of the history (same prompts, same answer schema)
  before a prior; otherwise stated priors (``source`` says which, per annotator);
* verification is counted with the real verification prompt of each face (a candidate with
  every missing granularity filled), not the sampling prompt; its completion tokens per answer
  are the verifier's mean over the verification and cross-check answers of the history
  (``verified_labels.verify_completion_tokens`` / ``check_completion_tokens``, keyed by the
  member name of ``verified_by`` / ``checked_by``), else the mean of the other verifiers of
  the history (same prompt and answer schema), else ``PRIOR_VERIFY_COMPLETION_TOKENS``; the
  ``source`` of each annotator says which.

Why rounds are counted, not derived: a face that stops after one round of ``k`` costs one
prompt; deriving requests as ``ceil(mean samples / k)`` turned a mean of 3.1 samples (most
faces one round, a few more) into two prompts for *every* face — the over-count behind
bench/vllm_cascade.py's 111 % estimate error.

Nothing here calls a model.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, Sequence

from seke.annotation import FaceItem, PromptSpec
from seke.sv_uamc import SamplingConfig
from seke.tokens import encoding, message_tokens

#: Priors used when the lake has no statistics for a model (stated in the output).
PRIOR_SAMPLES_PER_FACE = 4.5       # sv_uamc with k=3, n_max=10 on the simulated dev seed
PRIOR_COMPLETION_TOKENS = 350      # one JSON answer with expression probs, VA, 23 AUs, rationale
PRIOR_VERIFY_SHARE = 0.25
PRIOR_ESCALATION_SHARE = 0.35      # share of a cascade stage's faces that reach the next one
PRIOR_VERIFY_COMPLETION_TOKENS = 150  # a verdict, its reasons, rarely a correction (no history)


@dataclass(frozen=True)
class EstimateMember:
    """Pricing and billing facts of one annotator."""

    name: str
    model: str
    price_input_per_1m: float = 0.0
    price_output_per_1m: float = 0.0
    price_per_call: float = 0.0
    image_detail: str | None = None
    image_token_rule: str = "openai-tile"
    supports_n: bool = True
    kind: str = "vllm"
    verifies: bool = True


@dataclass
class History:
    """Per-model statistics of earlier runs (from the lake)."""

    samples_per_face: dict[str, float] = field(default_factory=dict)
    rounds_per_face: dict[str, float] = field(default_factory=dict)    # distinct rounds = n-requests
    completion_per_sample: dict[str, float] = field(default_factory=dict)
    face_share: dict[str, float] = field(default_factory=dict)   # share of faces a model sampled
    verify_share: float | None = None
    verify_share_by: dict[str, float] = field(default_factory=dict)  # verifier name -> share of faces
    check_share_by: dict[str, float] | None = None  # cross-check calls per sampled face, by checker
    # completion tokens of the answered verification + cross-check calls, by verifier (member
    # name as in verified_by/checked_by): (sum, count), so means pool over calls, not members
    verify_completion_sums: dict[str, tuple[float, int]] = field(default_factory=dict)
    faces: int = 0

    @staticmethod
    def from_frames(mc_samples: Any | None, verified_labels: Any | None = None,
                    strategy: str | None = None) -> "History":
        """From polars frames of ``mc_samples`` / ``verified_labels`` (any partitions); with
        ``strategy``, only rows of runs with that sampling strategy (where the column exists)."""
        import polars as pl

        h = History()
        if strategy is not None:
            if mc_samples is not None and "strategy" in mc_samples.columns:
                mc_samples = mc_samples.filter(pl.col("strategy") == strategy)
            if verified_labels is not None and "strategy" in verified_labels.columns:
                verified_labels = verified_labels.filter(pl.col("strategy") == strategy)
        if mc_samples is not None and mc_samples.height:
            total = mc_samples["face_id"].n_unique()
            h.faces = total
            rounds = ([pl.struct("face_id", "round").n_unique().alias("rounds")]
                      if "round" in mc_samples.columns else [])
            per = mc_samples.group_by("model").agg(
                pl.len().alias("n"), pl.col("face_id").n_unique().alias("faces"), *rounds,
                pl.col("completion_tokens").filter((pl.col("completion_tokens") > 0)
                                                   & ~pl.col("cache_hit").fill_null(False)).mean().alias("ct"))
            for r in per.iter_rows(named=True):
                h.samples_per_face[r["model"]] = r["n"] / max(1, r["faces"])
                if "rounds" in r:
                    h.rounds_per_face[r["model"]] = r["rounds"] / max(1, r["faces"])
                h.face_share[r["model"]] = r["faces"] / max(1, total)
                if r["ct"] is not None:
                    h.completion_per_sample[r["model"]] = float(r["ct"])
        if verified_labels is not None and verified_labels.height:
            sampled = verified_labels.filter(pl.col("n_samples") > 0)
            if sampled.height:
                verified = pl.col("verdict") != "none"
                if "checked_by" in sampled.columns:
                    # a cascade cross-check that accepted the label is the face's verdict too;
                    # only a call beyond the samples and the checks is a separate verification
                    checks = pl.col("checked_by").list.len().fill_null(0)
                    verified = verified & ((pl.col("n_calls") - pl.col("n_samples") - checks) > 0)
                    by_checker = sampled.select(pl.col("checked_by").explode().drop_nulls())["checked_by"]
                    h.check_share_by = {str(r[0]): r[1] / sampled.height
                                        for r in by_checker.value_counts().iter_rows()}
                h.verify_share = float(sampled.select(verified.sum()).item()) / sampled.height
                if "verified_by" in sampled.columns:
                    by = sampled.filter(verified)["verified_by"].drop_nulls().value_counts()
                    h.verify_share_by = {str(r[0]): r[1] / sampled.height for r in by.iter_rows()}
            h.verify_completion_sums = _verify_completion_sums(verified_labels)
        return h

    def verify_completion(self, name: str) -> tuple[float | None, str]:
        """Mean completion tokens of one verification answer of ``name`` and where it came
        from: ``history`` (its own answers), ``history of other verifiers``, or (None, ``prior``)."""
        if name in self.verify_completion_sums:
            total, n = self.verify_completion_sums[name]
            return total / n, "history"
        others = [v for k, v in self.verify_completion_sums.items() if k != name]
        if others:
            return sum(t for t, _ in others) / sum(n for _, n in others), "history of other verifiers"
        return None, "prior"


    def other_completion(self, model: str) -> float | None:
        """Mean completion tokens per sample of the *other* models (same prompts and schema)."""
        others = [v for m, v in self.completion_per_sample.items() if m != model]
        return sum(others) / len(others) if others else None


def _verify_completion_sums(labels: Any) -> dict[str, tuple[float, int]]:
    """(sum, count) of the completion tokens billed by verification and cross-check calls, by
    verifier; calls without usage (cache hits, unanswered, the offline models' 0) are left out."""
    import polars as pl

    parts = []
    if {"verified_by", "verify_completion_tokens"} <= set(labels.columns):
        parts.append(labels.select(pl.col("verified_by").alias("who"),
                                   pl.col("verify_completion_tokens").cast(pl.Float64).alias("ct")))
    if {"checked_by", "check_completion_tokens"} <= set(labels.columns):
        checks = labels.select("checked_by", "check_completion_tokens").filter(
            pl.col("checked_by").list.len().fill_null(0) > 0,
            pl.col("checked_by").list.len() == pl.col("check_completion_tokens").list.len())
        if checks.height:
            parts.append(checks.explode("checked_by", "check_completion_tokens").select(
                pl.col("checked_by").alias("who"), pl.col("check_completion_tokens").cast(pl.Float64).alias("ct")))
    if not parts:
        return {}
    calls = pl.concat(parts).filter(pl.col("who").is_not_null() & (pl.col("ct") > 0))
    per = calls.group_by("who").agg(pl.col("ct").sum().alias("sum"), pl.len().alias("n"))
    return {str(r["who"]): (float(r["sum"]), int(r["n"])) for r in per.iter_rows(named=True)}


def history_from_lake(lake: Any, strategy: str | None = None) -> History:
    """Statistics of every earlier run stored in the lake (``mc_samples``, ``verified_labels``),
    with ``strategy`` only those of runs with that sampling strategy."""
    mc = lake.read_table("mc_samples") if lake.exists("mc_samples") else None
    vl = lake.read_table("verified_labels") if lake.exists("verified_labels") else None
    return History.from_frames(mc, vl, strategy)


@dataclass
class MemberEstimate:
    name: str
    model: str
    faces: float
    samples: float
    calls: float
    verify_calls: float
    text_tokens: int
    image_tokens: int
    input_tokens: float
    output_tokens: float
    usd: float
    source: str


@dataclass
class Estimate:
    faces: int
    members: list[MemberEstimate]
    encoding: str
    strategy: str

    @property
    def usd(self) -> float:
        return sum(m.usd for m in self.members)

    @property
    def calls(self) -> float:
        return sum(m.calls + m.verify_calls for m in self.members)

    @property
    def input_tokens(self) -> float:
        return sum(m.input_tokens for m in self.members)

    @property
    def output_tokens(self) -> float:
        return sum(m.output_tokens for m in self.members)

    def as_dict(self) -> dict[str, Any]:
        return {"faces": self.faces, "strategy": self.strategy, "encoding": self.encoding,
                "calls": round(self.calls, 1), "input_tokens": round(self.input_tokens),
                "output_tokens": round(self.output_tokens), "usd": round(self.usd, 4),
                "members": [asdict(m) for m in self.members]}

    def table(self) -> str:
        head = (f"{'annotator':<18} {'model':<22} {'faces':>7} {'samples':>8} {'calls':>8} {'verify':>7} "
                f"{'in tok (img)':>18} {'out tok':>9} {'USD':>10}  source")
        rows = [head, "-" * len(head)]
        for m in self.members:
            rows.append(f"{m.name[:18]:<18} {m.model[:22]:<22} {m.faces:>7.0f} {m.samples:>8.0f} {m.calls:>8.0f} "
                        f"{m.verify_calls:>7.0f} {m.input_tokens:>9.0f} ({m.image_tokens:>6}) "
                        f"{m.output_tokens:>9.0f} {m.usd:>10.4f}  {m.source}")
        rows.append(f"{'total':<18} {'':<22} {self.faces:>7} {'':>8} {self.calls:>8.0f} {'':>7} "
                    f"{self.input_tokens:>18.0f} {self.output_tokens:>9.0f} {self.usd:>10.4f}")
        rows.append(f"text tokens counted with tiktoken {self.encoding}; images by each provider's rule")
        return "\n".join(rows)


def _prompt_tokens(face: FaceItem, prompt: PromptSpec, m: EstimateMember) -> tuple[int, int]:
    """(prompt tokens incl. the image, of which image tokens) of one sampling request."""
    from seke.annotators.vllm_support import with_image
    from seke.tokens import image_size, image_tokens

    if m.kind == "offline":
        return 0, 0
    msgs = with_image(prompt.messages, face.image_png, m.image_detail)
    total = message_tokens(msgs, m.model, m.image_detail, m.image_token_rule, image=face.image_png)
    w, h = image_size(face.image_png)
    return total, image_tokens(w, h, m.image_detail, m.image_token_rule)


def _verify_prompt_tokens(face: FaceItem, prompt: PromptSpec, m: EstimateMember, knowledge: Any) -> int:
    """Prompt tokens of one verification request: the real verification prompt with a
    candidate that fills every generated granularity (the prompt lists the candidate)."""
    from seke.annotation import Labels
    from seke.annotators.vllm_support import with_image
    from seke.prompts import build_verification_prompt
    from seke.taxonomy import AU_CATALOGUE

    if m.kind == "offline":
        return 0
    k = face.known
    cand = Labels(k.expression or "neutral", k.valence if k.valence is not None else 0.0,
                  k.arousal if k.arousal is not None else 0.0,
                  k.aus if k.aus is not None else {au: 1.0 for au in AU_CATALOGUE[:3]})
    spec = build_verification_prompt(cand, k, knowledge, tuple(f"uncertain_{g}" for g in prompt.missing))
    msgs = with_image(spec.messages, face.image_png, m.image_detail)
    return message_tokens(msgs, m.model, m.image_detail, m.image_token_rule, image=face.image_png)


def _add_verification(out: list[MemberEstimate], vm: EstimateMember, n_ver: float, todo: Sequence[FaceItem],
                      prompts: Mapping[str, PromptSpec], knowledge: Any, origin: str, share: float,
                      history: History, what: str = "verify") -> None:
    """Add ``n_ver`` verification calls of ``vm`` (real verification prompts) to its estimate."""
    est = next((e for e in out if e.name == vm.name), None)
    if est is None:
        est = MemberEstimate(vm.name, vm.model, 0, 0, 0, 0, 0, 0, 0, 0, 0.0, "verifier")
        out.append(est)
    pt = [_verify_prompt_tokens(f, prompts[f.face_id], vm, knowledge) for f in todo] if n_ver else []
    mean_pt = sum(pt) / len(pt) if pt else 0.0
    if vm.kind == "offline":
        ct, ct_src = 0.0, ""
    else:
        got, ct_origin = history.verify_completion(vm.name)
        ct = got if got is not None else float(PRIOR_VERIFY_COMPLETION_TOKENS)
        ct_src = f", {what} completion:{ct_origin} {ct:.0f}"
    est.verify_calls += n_ver
    est.input_tokens += n_ver * mean_pt
    est.output_tokens += n_ver * ct
    est.usd += (n_ver * mean_pt * vm.price_input_per_1m + n_ver * ct * vm.price_output_per_1m) / 1e6 \
        + n_ver * vm.price_per_call
    est.source += f"; {what} share {origin} {share:.2f}{ct_src}"


def estimate_run(faces: Sequence[FaceItem], prompts: Mapping[str, PromptSpec], members: Sequence[EstimateMember],
                 config: SamplingConfig = SamplingConfig(), history: History | None = None,
                 strategy: str = "single", verifier: str | None = None,
                 knowledge: Any | None = None, cross_check: bool = True) -> Estimate:
    """Expected calls, tokens and USD per annotator for sampling ``faces`` (see module doc).

    ``members`` are in cascade order (cheapest first); a ``jury`` samples with the first and
    verifies with ``verifier`` (default: the second). ``knowledge`` (default v1) renders the
    verification prompts. ``cross_check`` (the pool's): a cascade's cheaper stages' resolved
    faces cost one verification call of another member each (shares from the history's
    ``checked_by``, else every face a stage keeps, by the next stage); a jury verifies every face."""
    history = history or History()
    if knowledge is None:
        from seke.knowledge import knowledge_v1

        knowledge = knowledge_v1()
    todo = [f for f in faces if prompts.get(f.face_id) is not None and prompts[f.face_id].missing]
    gens = list(members) if strategy == "cascade" else list(members[:1])
    if strategy == "jury":
        vname = verifier or next((m.name for m in members[1:] if m.verifies), members[0].name)
    else:
        vname = verifier
    share = 1.0
    out: list[MemberEstimate] = []
    verify_share = history.verify_share if history.verify_share is not None else PRIOR_VERIFY_SHARE
    for i, m in enumerate(gens):
        src = []
        if i > 0:
            if m.model in history.face_share and history.faces:
                share = min(share, history.face_share[m.model])
                src.append("reach:history")
            else:
                share *= PRIOR_ESCALATION_SHARE
                src.append(f"reach:prior {PRIOR_ESCALATION_SHARE}")
        spf = history.samples_per_face.get(m.model)
        if spf is None:
            spf = min(float(config.budget), PRIOR_SAMPLES_PER_FACE if config.strategy == "sv_uamc" else config.budget)
            src.append("samples:prior")
        else:
            src.append("samples:history")
        ct = history.completion_per_sample.get(m.model)
        if m.kind == "offline":
            ct = 0.0
        elif ct is not None:
            src.append("completion:history")
        elif (ct := history.other_completion(m.model)) is not None:
            src.append("completion:history of other models")
        else:
            ct = PRIOR_COMPLETION_TOKENS
            src.append("completion:prior")
        n_faces = share * len(todo)
        rounds = history.rounds_per_face.get(m.model) if "samples:history" in src else None
        if rounds is None:  # expected rounds of k (the last may be short); never more than spf
            rounds = spf / config.round_size if config.round_size else spf
        requests_per_face = rounds if (m.supports_n and config.round_size > 1) else spf
        pt = [_prompt_tokens(f, prompts[f.face_id], m) for f in todo]
        mean_pt = sum(p for p, _ in pt) / len(pt) if pt else 0.0
        mean_img = sum(i_ for _, i_ in pt) / len(pt) if pt else 0.0
        calls = n_faces * requests_per_face
        inp = calls * mean_pt
        outp = n_faces * spf * ct
        usd = (inp * m.price_input_per_1m + outp * m.price_output_per_1m) / 1e6 + calls * m.price_per_call
        out.append(MemberEstimate(m.name, m.model, n_faces, n_faces * spf, calls, 0.0,
                                  int(round(mean_pt * calls)), int(round(mean_img * calls)), inp, outp, usd,
                                  ", ".join(src)))
    if cross_check and strategy == "cascade" and len(gens) > 1 and out:
        # cross-checks: one verification call per face a cheaper stage resolved, by another
        # member (verified_labels.checked_by of the history; else the next stage checks every
        # face its predecessor keeps)
        by_name = {m.name: m for m in members}
        if history.check_share_by is not None and history.faces:
            for name, share_c in history.check_share_by.items():
                if name in by_name:
                    _add_verification(out, by_name[name], len(todo) * share_c, todo, prompts, knowledge,
                                      "history", share_c, history, "check")
        else:
            for i in range(len(gens) - 1):
                kept = out[i].faces - out[i + 1].faces if i + 1 < len(out) else 0.0
                if kept > 0 and gens[i + 1].verifies:
                    _add_verification(out, gens[i + 1], kept, todo, prompts, knowledge, "prior",
                                      kept / max(1, len(todo)), history, "check")
    jury_all = strategy == "jury" and cross_check
    if jury_all:
        verify_share = 1.0  # every face with a candidate goes to another model
    if config.verify and out:
        # verification of the uncertain/inconsistent faces; the shares are over every sampled
        # face of the history, so they apply to every face, whichever stage produced it. Who
        # verified (verified_labels.verified_by) is taken from the history when it names
        # members of this pool (a cascade's producers verify their own faces, often the free
        # offline stage); else the configured / last stage verifies them all.
        by_name = {m.name: m for m in members}
        shares = {} if jury_all else {n: v for n, v in history.verify_share_by.items() if n in by_name}
        if not shares or (vname is not None and vname not in shares):
            vm0 = by_name.get(vname or "", gens[-1])
            shares = {vm0.name: verify_share}
        for name, share_v in shares.items():
            _add_verification(out, by_name[name], len(todo) * share_v, todo, prompts, knowledge,
                              "jury: every face" if jury_all else
                              "history" if history.verify_share is not None else "prior", share_v, history)
    return Estimate(len(todo), out, encoding(members[0].model if members else "gpt-4o").name, strategy)
