"""What a run will cost before it runs: calls, tokens and money per annotator.

Built from the *real* prompts (the knowledge prompts of the faces, the face attached as the
annotator would attach it) and counted like the provider bills:

* text tokens with tiktoken (:mod:`seke.tokens`; offline it counts with cl100k, reported in
  ``encoding``), images by the provider's rule at the configured detail (OpenAI tiles, Qwen-VL
  patches), plus chat framing;
* a request with ``n`` choices bills its prompt once; without ``n`` every sample is a request;
* the expected samples per face, completion tokens per sample, the share of faces verified and
  (for a cascade) the share of faces reaching each member come from the stored statistics of
  earlier runs (``mc_samples`` / ``verified_labels`` in the lake) when there are some for that
  model; otherwise from stated priors (``source`` says which, per annotator).

Nothing here calls a model.
"""

from __future__ import annotations

import math
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
    completion_per_sample: dict[str, float] = field(default_factory=dict)
    face_share: dict[str, float] = field(default_factory=dict)   # share of faces a model sampled
    verify_share: float | None = None
    faces: int = 0

    @staticmethod
    def from_frames(mc_samples: Any | None, verified_labels: Any | None = None) -> "History":
        """From polars frames of ``mc_samples`` / ``verified_labels`` (any partitions)."""
        import polars as pl

        h = History()
        if mc_samples is not None and mc_samples.height:
            total = mc_samples["face_id"].n_unique()
            h.faces = total
            per = mc_samples.group_by("model").agg(
                pl.len().alias("n"), pl.col("face_id").n_unique().alias("faces"),
                pl.col("completion_tokens").filter((pl.col("completion_tokens") > 0)
                                                   & ~pl.col("cache_hit").fill_null(False)).mean().alias("ct"))
            for r in per.iter_rows(named=True):
                h.samples_per_face[r["model"]] = r["n"] / max(1, r["faces"])
                h.face_share[r["model"]] = r["faces"] / max(1, total)
                if r["ct"] is not None:
                    h.completion_per_sample[r["model"]] = float(r["ct"])
        if verified_labels is not None and verified_labels.height:
            sampled = verified_labels.filter(pl.col("n_samples") > 0)
            if sampled.height:
                h.verify_share = float((sampled["verdict"] != "none").sum()) / sampled.height
        return h


def history_from_lake(lake: Any) -> History:
    """Statistics of every earlier run stored in the lake (``mc_samples``, ``verified_labels``)."""
    mc = lake.read_table("mc_samples") if lake.exists("mc_samples") else None
    vl = lake.read_table("verified_labels") if lake.exists("verified_labels") else None
    return History.from_frames(mc, vl)


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


def estimate_run(faces: Sequence[FaceItem], prompts: Mapping[str, PromptSpec], members: Sequence[EstimateMember],
                 config: SamplingConfig = SamplingConfig(), history: History | None = None,
                 strategy: str = "single", verifier: str | None = None) -> Estimate:
    """Expected calls, tokens and USD per annotator for sampling ``faces`` (see module doc).

    ``members`` are in cascade order (cheapest first); a ``jury`` samples with the first and
    verifies with ``verifier`` (default: the second)."""
    history = history or History()
    todo = [f for f in faces if prompts.get(f.face_id) is not None and prompts[f.face_id].missing]
    gens = list(members) if strategy == "cascade" else list(members[:1])
    if strategy == "jury":
        vname = verifier or next((m.name for m in members[1:] if m.verifies), members[0].name)
    else:
        vname = verifier
    share = 1.0
    out: list[MemberEstimate] = []
    verify_share = history.verify_share if history.verify_share is not None else PRIOR_VERIFY_SHARE
    last_faces = 0.0
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
        if ct is None:
            ct = PRIOR_COMPLETION_TOKENS
            src.append("completion:prior")
        else:
            src.append("completion:history")
        n_faces = share * len(todo)
        rounds = math.ceil(spf / config.round_size) if config.round_size else spf
        requests_per_face = rounds if (m.supports_n and config.round_size > 1) else spf
        pt = [_prompt_tokens(f, prompts[f.face_id], m) for f in todo]
        mean_pt = sum(p for p, _ in pt) / len(pt) if pt else 0.0
        mean_img = sum(i_ for _, i_ in pt) / len(pt) if pt else 0.0
        calls = n_faces * requests_per_face
        inp = calls * mean_pt
        outp = n_faces * spf * (ct if m.kind != "offline" else 0)
        usd = (inp * m.price_input_per_1m + outp * m.price_output_per_1m) / 1e6 + calls * m.price_per_call
        out.append(MemberEstimate(m.name, m.model, n_faces, n_faces * spf, calls, 0.0,
                                  int(round(mean_pt * calls)), int(round(mean_img * calls)), inp, outp, usd,
                                  ", ".join(src)))
        last_faces = n_faces
    if config.verify and out:
        # verification of the last stage's uncertain/inconsistent faces
        vm = next((m for m in members if m.name == vname), gens[-1])
        est = next((e for e in out if e.name == vm.name), None)
        if est is None:
            est = MemberEstimate(vm.name, vm.model, 0, 0, 0, 0, 0, 0, 0, 0, 0.0, "verifier")
            out.append(est)
        n_ver = last_faces * verify_share
        pt = [_prompt_tokens(f, prompts[f.face_id], vm) for f in todo]
        mean_pt = (sum(p for p, _ in pt) / len(pt) if pt else 0.0) + (200 if vm.kind != "offline" else 0)
        ct = 150 if vm.kind != "offline" else 0
        est.verify_calls += n_ver
        est.input_tokens += n_ver * mean_pt
        est.output_tokens += n_ver * ct
        est.usd += (n_ver * mean_pt * vm.price_input_per_1m + n_ver * ct * vm.price_output_per_1m) / 1e6 \
            + n_ver * vm.price_per_call
        est.source += f"; verify share {'history' if history.verify_share is not None else 'prior'} {verify_share:.2f}"
    return Estimate(len(todo), out, encoding(members[0].model if members else "gpt-4o").name, strategy)
