"""Annotators with known, controllable behaviour, for benchmarks and tests of SV-UAMC.

Why: the efficiency benchmark needs a clean ground truth and noise we can name, and the loop's
tests need exact control of what each sample says. Two annotators implement
:class:`seke.annotation.Annotator`:

* :class:`SimulatedAnnotator` — a noisy model of a VLLM. Per face it holds a *belief* (what the
  model "thinks" at temperature 0): correct with probability ``1 - mode_error(d)``, otherwise a
  systematic confusion (fear↔surprise, disgust↔anger, contempt→neutral, …) of the true label,
  where ``d`` is the face's difficulty in [0, 1]. Each sample departs from the belief with
  probability ``sample_noise(d)``; VA gets Gaussian noise, AUs per-AU flips; a share of samples
  fail to parse. Verbalised class probabilities are over-confident, as VLLMs' are. The verifier
  judges the candidate right with probability ``verifier_accuracy(d)`` (harder faces are harder
  to verify too) and, when it rejects a wrong candidate, offers a correction with probability
  ``verifier_correct_share``; the correction is itself right with probability
  ``verifier_accuracy(d)`` and carries the samples' VA noise and AU flips (the verifier never
  copies the ground truth).
  Every random draw is keyed on (seed, face_id, sample index), so sample *i* of a face is the
  same whichever strategy asks for it and in whatever batch order: strategies are compared on
  common random numbers.
  **What it can show:** how the sampling loop, verification routing, cascades, caching, cost
  accounting and rate limits behave under noise of a named shape, with an exact ground truth.
  **What it cannot show:** how good a real model's labels are, or whether a real verifier's
  errors are independent of the generator's (here they are independent by construction, which
  flatters verification); and since :class:`seke.sv_uamc.SamplingConfig`'s defaults were tuned
  on this simulator (on a separate seed), its headline figures partly restate the noise model.
  Quality claims come from the offline annotator on real faces (``bench/sv_uamc.py --data``).
* :class:`ScriptedAnnotator` — answers each face from a fixed script of sample labels and a fixed
  verdict; records every call, so tests can pin the loop's behaviour exactly.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from seke.annotation import FaceItem, Labels, Sample, SampleRequest, Verdict, VerifyRequest
from seke.knowledge import Knowledge
from seke.taxonomy import AU_CATALOGUE, EXPRESSIONS

#: Systematic confusions of expression recognisers and VLLMs (e.g. Barsoum et al. 2016 FER+
#: confusion matrices; Mollahosseini et al. 2017 AffectNet): where a wrong answer usually goes.
CONFUSIONS: dict[str, tuple[str, ...]] = {
    "neutral": ("sadness", "contempt"),
    "happiness": ("neutral", "contempt"),
    "sadness": ("neutral", "fear"),
    "surprise": ("fear", "happiness"),
    "fear": ("surprise", "sadness"),
    "disgust": ("anger", "sadness"),
    "anger": ("disgust", "neutral"),
    "contempt": ("neutral", "happiness"),
}


@dataclass(frozen=True)
class NoiseModel:
    """Controllable noise; rates are ``base + slope · difficulty`` (clipped to [0, 1])."""

    mode_error_base: float = 0.10
    mode_error_slope: float = 0.45
    sample_noise_base: float = 0.08
    sample_noise_slope: float = 0.55
    systematic_share: float = 0.7        # wrong answers that follow CONFUSIONS (rest uniform)
    va_sd_base: float = 0.08
    va_sd_slope: float = 0.30
    au_flip_base: float = 0.01
    au_flip_slope: float = 0.12
    parse_failure_rate: float = 0.03
    confidence_low: float = 0.6          # verbalised top-class probability ~ U(low, high)
    confidence_high: float = 0.95
    verifier_accuracy_base: float = 0.92  # P(verifier judges right) = base - slope · difficulty
    verifier_accuracy_slope: float = 0.25
    verifier_correct_share: float = 0.3   # a rejected wrong candidate comes with a correction
    difficulty_a: float = 1.2            # face difficulty ~ Beta(a, b) when not given
    difficulty_b: float = 2.5

    def rate(self, base: float, slope: float, d: float) -> float:
        return float(min(1.0, max(0.0, base + slope * d)))


def _rng(*key: object) -> np.random.Generator:
    h = hashlib.sha256(":".join(map(str, key)).encode()).digest()
    return np.random.default_rng(int.from_bytes(h[:8], "big"))


def _wrong_class(truth: str, rng: np.random.Generator, systematic_share: float) -> str:
    if rng.random() < systematic_share:
        return CONFUSIONS[truth][0] if rng.random() < 0.75 else CONFUSIONS[truth][1]
    others = [e for e in EXPRESSIONS if e != truth]
    return others[int(rng.integers(len(others)))]


@dataclass
class _Belief:
    expression: str | None
    valence: float | None
    arousal: float | None
    aus: dict[int, float] | None


class SimulatedAnnotator:
    """A noisy VLLM stand-in with ground truth; see the module docstring for the noise model."""

    backend = "simulated"

    def __init__(self, truth: Mapping[str, Labels], noise: NoiseModel = NoiseModel(), seed: int = 0,
                 difficulty: Mapping[str, float] | None = None, knowledge: Knowledge | None = None,
                 model: str = "sim-v1") -> None:
        self.truth = dict(truth)
        self.noise = noise
        self.seed = seed
        self.model = model
        self._difficulty = dict(difficulty or {})
        self._knowledge = knowledge
        self.sample_calls = 0
        self.verify_calls = 0

    # ---- hidden state ------------------------------------------------------------------------
    def difficulty(self, face_id: str) -> float:
        if face_id not in self._difficulty:
            r = _rng(self.seed, face_id, "difficulty")
            self._difficulty[face_id] = float(r.beta(self.noise.difficulty_a, self.noise.difficulty_b))
        return self._difficulty[face_id]

    def _belief(self, face_id: str) -> _Belief:
        t = self.truth[face_id]
        d, n = self.difficulty(face_id), self.noise
        r = _rng(self.seed, face_id, "belief")
        expr = t.expression
        wrong = expr is not None and r.random() < n.rate(n.mode_error_base, n.mode_error_slope, d)
        if wrong:
            expr = _wrong_class(t.expression, r, n.systematic_share)
        v, a = t.valence, t.arousal
        if wrong and self._knowledge is not None and v is not None:
            reg = self._knowledge.va_regions[expr]  # the model's VA follows its wrong belief
            v, a = 0.5 * v + 0.5 * reg.valence, 0.5 * a + 0.5 * reg.arousal
        aus = dict(t.aus) if t.aus is not None else None
        if wrong and aus is not None and self._knowledge is not None:
            prior = self._knowledge.au_prior(expr)
            aus = {au: (1.0 if r.random() < 0.5 * (prior[au] + aus.get(au, 0.0)) else 0.0) for au in AU_CATALOGUE}
        return _Belief(expr, v, a, aus)

    # ---- protocol ----------------------------------------------------------------------------
    def sample_batch(self, requests: Sequence[SampleRequest]) -> list[list[Sample]]:
        self.sample_calls += 1
        return [[self._sample(req, req.first_index + i) for i in range(req.n)] for req in requests]

    def _sample(self, req: SampleRequest, index: int) -> Sample:
        fid = req.face.face_id
        base = dict(face_id=fid, index=index, round=req.round, backend=self.backend, model=self.model,
                    temperature=0.7, prompt_tokens=900, completion_tokens=160, latency_ms=0.0)
        if fid not in self.truth:
            return Sample(labels=Labels(), parse_status="failed", error="no ground truth for face", **base)
        n, d = self.noise, self.difficulty(fid)
        r = _rng(self.seed, fid, "sample", index)
        if r.random() < n.parse_failure_rate:
            return Sample(labels=Labels(), parse_status="failed", error="simulated unparseable answer",
                          raw_text="I think the person looks", **base)
        b = self._belief(fid)
        missing = set(req.prompt.missing)
        expr, probs = None, None
        if "expression" in missing and b.expression is not None:
            expr = b.expression
            if r.random() < n.rate(n.sample_noise_base, n.sample_noise_slope, d):
                expr = _wrong_class(b.expression, r, n.systematic_share)
            top = float(r.uniform(n.confidence_low, n.confidence_high))
            second = CONFUSIONS[expr][0]
            probs = {e: (1 - top) * 0.1 / 6 for e in EXPRESSIONS}
            probs[expr], probs[second] = top, (1 - top) * 0.9
        v = a = None
        if "va" in missing and b.valence is not None:
            sd = n.rate(n.va_sd_base, n.va_sd_slope, d)
            v = float(np.clip(b.valence + r.normal(0, sd), -1, 1))
            a = float(np.clip(b.arousal + r.normal(0, sd), -1, 1))
        aus = None
        if "aus" in missing and b.aus is not None:
            flip = n.rate(n.au_flip_base, n.au_flip_slope, d)
            aus = {}
            for au in AU_CATALOGUE:
                x = b.aus.get(au, 0.0) >= 0.5
                if r.random() < flip:
                    x = not x
                aus[au] = 1.0 if x else 0.0
        return Sample(labels=Labels(expr, v, a, aus), expression_probs=probs,
                      rationale="simulated", raw_text="{}", parse_status="ok", **base)

    def _correction(self, fid: str, missing: Sequence[str], r: np.random.Generator, accuracy: float) -> Labels:
        """The verifier's own answer, under the same noise model as a sample: right with
        probability ``accuracy`` (else a confusion of the true class, with VA and AUs pulled
        towards it as a wrong belief's are), VA with the samples' Gaussian noise and AUs with
        their flips — never a copy of the ground truth."""
        t, n, d = self.truth[fid], self.noise, self.difficulty(fid)
        expr = t.expression
        wrong = expr is not None and r.random() >= accuracy
        if wrong:
            expr = _wrong_class(t.expression, r, n.systematic_share)
        v = a = None
        if "va" in missing and t.valence is not None:
            v, a = t.valence, t.arousal
            if wrong and self._knowledge is not None:
                reg = self._knowledge.va_regions[expr]
                v, a = 0.5 * v + 0.5 * reg.valence, 0.5 * a + 0.5 * reg.arousal
            sd = n.rate(n.va_sd_base, n.va_sd_slope, d)
            v, a = float(np.clip(v + r.normal(0, sd), -1, 1)), float(np.clip(a + r.normal(0, sd), -1, 1))
        aus = None
        if "aus" in missing and t.aus is not None:
            prior = self._knowledge.au_prior(expr) if (wrong and self._knowledge is not None) else None
            flip = n.rate(n.au_flip_base, n.au_flip_slope, d)
            aus = {}
            for au in AU_CATALOGUE:
                x = t.aus.get(au, 0.0) >= 0.5
                if prior is not None:
                    x = r.random() < 0.5 * (prior[au] + (1.0 if x else 0.0))
                if r.random() < flip:
                    x = not x
                aus[au] = 1.0 if x else 0.0
        return Labels(expr if "expression" in missing else None, v, a, aus)

    def verify_batch(self, requests: Sequence[VerifyRequest]) -> list[Verdict]:
        self.verify_calls += 1
        return [self._verify(req) for req in requests]

    def candidate_is_right(self, face_id: str, cand: Labels, missing: Sequence[str]) -> bool:
        """The verifier's notion of right: generated expression correct, VA close, AUs mostly right."""
        t = self.truth[face_id]
        if "expression" in missing and cand.expression != t.expression:
            return False
        if "va" in missing and t.valence is not None and cand.valence is not None:
            if abs(cand.valence - t.valence) + abs(cand.arousal - t.arousal) > 0.6:
                return False
        if "aus" in missing and t.aus is not None and cand.aus is not None:
            tp = {a for a, p in t.aus.items() if p >= 0.5}
            cp = {a for a, p in cand.aus.items() if p >= 0.5}
            if tp or cp:
                f1 = 2 * len(tp & cp) / (len(tp) + len(cp))
                if f1 < 0.5:
                    return False
        return True

    def _verify(self, req: VerifyRequest) -> Verdict:
        fid = req.face.face_id
        base = dict(face_id=fid, backend=self.backend, model=self.model, prompt_tokens=1100, completion_tokens=80)
        if fid not in self.truth:
            return Verdict(verdict="reject", reasons=["no ground truth for face"], **base)
        r = _rng(self.seed, fid, "verify")
        missing = req.face.known.missing_granularities()
        right = self.candidate_is_right(fid, req.candidate, missing)
        n, d = self.noise, self.difficulty(fid)
        accuracy = n.rate(n.verifier_accuracy_base, -n.verifier_accuracy_slope, d)
        judged_right = right if r.random() < accuracy else not right
        if judged_right:
            return Verdict(verdict="accept", reasons=["labels match the face"], **base)
        if not right and r.random() < n.verifier_correct_share:
            corrected = self._correction(fid, missing, r, accuracy)
            return Verdict(verdict="correct", reasons=["candidate does not match the face"],
                           corrected=corrected, **base)
        return Verdict(verdict="reject", reasons=["candidate does not match the face"], **base)


# ---- synthetic faces --------------------------------------------------------------------------

def tiny_png(seed: int) -> bytes:
    """A valid 16×16 grey PNG, distinct per seed (simulated faces need image bytes, not pixels)."""
    from PIL import Image

    arr = _rng("png", seed).integers(0, 256, size=(16, 16), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr, mode="L").save(buf, format="PNG")
    return buf.getvalue()


def simulate_faces(n: int, knowledge: Knowledge, seed: int = 0, known: Sequence[str] = (),
                   class_weights: Mapping[str, float] | None = None) -> tuple[list[FaceItem], dict[str, Labels]]:
    """``n`` synthetic faces with full ground truth drawn from the knowledge tables.

    Expression ~ ``class_weights`` (default: uniform, contempt at half weight); VA ~ the class's
    circumplex region (centre ± tolerance/2); each AU present with P(AU | expression).
    ``known`` lists the granularities given to the annotator as human labels.
    """
    w = dict(class_weights or {e: (0.5 if e == "contempt" else 1.0) for e in EXPRESSIONS})
    names = [e for e in EXPRESSIONS if w.get(e, 0) > 0]
    p = np.array([w[e] for e in names], dtype=float)
    p /= p.sum()
    faces, truth = [], {}
    for i in range(n):
        r = _rng(seed, "face", i)
        e = names[int(r.choice(len(names), p=p))]
        reg = knowledge.va_regions[e]
        v = float(np.clip(reg.valence + r.uniform(-0.5, 0.5) * reg.valence_tol, -1, 1))
        a = float(np.clip(reg.arousal + r.uniform(-0.5, 0.5) * reg.arousal_tol, -1, 1))
        prior = knowledge.au_prior(e)
        aus = {au: (1.0 if r.random() < prior[au] else 0.0) for au in AU_CATALOGUE}
        t = Labels(e, v, a, aus)
        fid = hashlib.sha256(f"sim:{seed}:{i}".encode()).hexdigest()
        truth[fid] = t
        k = Labels(e if "expression" in known else None, v if "va" in known else None,
                   a if "va" in known else None, aus if "aus" in known else None)
        faces.append(FaceItem(fid, tiny_png(i), k, source="simulated", subject_id=f"sim{i % 97}"))
    return faces, truth


# ---- scripted annotator (tests) ---------------------------------------------------------------

@dataclass
class ScriptedAnnotator:
    """Answers from a script: ``answers[face_id][i]`` is sample *i* (cycled); ``None`` = parse failure.

    ``verdicts[face_id]`` is the verdict for that face (default accept); ``corrections`` the
    labels a ``correct`` verdict carries. ``raise_for`` lists face ids whose requests raise, to
    test per-item isolation. Calls are recorded in ``sample_log`` / ``verify_log``.
    """

    answers: Mapping[str, Sequence[Labels | None]]
    verdicts: Mapping[str, str] = field(default_factory=dict)
    corrections: Mapping[str, Labels] = field(default_factory=dict)
    raise_for: frozenset[str] = frozenset()
    backend: str = "scripted"
    model: str = "script"
    sample_log: list[list[tuple[str, int, int]]] = field(default_factory=list)
    verify_log: list[list[str]] = field(default_factory=list)

    def sample_batch(self, requests: Sequence[SampleRequest]) -> list[list[Sample]]:
        bad = [r.face.face_id for r in requests if r.face.face_id in self.raise_for]
        if bad:
            raise RuntimeError(f"scripted failure for {bad}")
        self.sample_log.append([(r.face.face_id, r.first_index, r.n) for r in requests])
        out = []
        for req in requests:
            script = self.answers[req.face.face_id]
            row = []
            for i in range(req.first_index, req.first_index + req.n):
                lab = script[i % len(script)]
                if lab is None:
                    row.append(Sample(req.face.face_id, i, req.round, Labels(), parse_status="failed",
                                      error="scripted parse failure", backend=self.backend, model=self.model))
                else:
                    row.append(Sample(req.face.face_id, i, req.round, lab, backend=self.backend, model=self.model))
            out.append(row)
        return out

    def verify_batch(self, requests: Sequence[VerifyRequest]) -> list[Verdict]:
        self.verify_log.append([r.face.face_id for r in requests])
        out = []
        for req in requests:
            v = self.verdicts.get(req.face.face_id, "accept")
            out.append(Verdict(req.face.face_id, v, [f"scripted {v}"] + list(req.reasons_for_review),
                               corrected=self.corrections.get(req.face.face_id)))
        return out

