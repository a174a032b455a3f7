"""The offline annotator on real CK+ crops: samples, determinism, knowledge fusion, verdicts."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from seke import weights
from seke.annotation import Annotator, FaceItem, Labels, PromptSpec, SampleRequest, VerifyRequest
from seke.taxonomy import AU_CATALOGUE, EXPRESSIONS

ROOT = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("SEKE_SHARED_DATA", ROOT / ".." / "shared" / "data"))
SPEC = PromptSpec.make("test", [], ["expression", "va", "aus"])


@pytest.fixture(scope="module")
def ckplus():
    manifest = SHARED / "ckplus" / "manifest.csv"
    if not manifest.exists():
        pytest.skip(f"shared data missing: {manifest}")
    try:
        weights.path_of("face_landmarker.task")
        weights.path_of("emotion_model_quantized.tflite")
    except weights.WeightsMissing as exc:
        pytest.skip(f"offline weights not fetched: {exc}")
    import polars as pl

    return pl.read_csv(manifest)


@pytest.fixture(scope="module")
def annotator(ckplus):
    from seke.annotators.offline import OfflineAnnotator
    from seke.knowledge import knowledge_with_estimate

    return OfflineAnnotator(knowledge_with_estimate(ckplus, "ckplus"), seed=7)


def _face(ckplus, expression: str, known: Labels | None = None, k: int = 0) -> FaceItem:
    import polars as pl

    row = ckplus.filter(pl.col("expression") == expression).row(k, named=True)
    data = (SHARED / "ckplus" / row["image"]).read_bytes()
    return FaceItem(face_id=f"ck-{row['image']}", image_png=data, known=known or Labels(), source="ckplus")


def test_is_an_annotator_with_n_valid_samples(annotator, ckplus):
    assert isinstance(annotator, Annotator) and annotator.backend == "offline" and "au_calibration" in annotator.model
    face = _face(ckplus, "happiness")
    (samples,) = annotator.sample_batch([SampleRequest(face, SPEC, n=4, first_index=2, round=1)])
    assert [s.index for s in samples] == [2, 3, 4, 5]
    for s in samples:
        assert s.ok and s.round == 1 and s.face_id == face.face_id
        assert set(s.expression_probs) == set(EXPRESSIONS) and abs(sum(s.expression_probs.values()) - 1) < 1e-6
        assert s.labels.expression in EXPRESSIONS
        assert -1 <= s.labels.valence <= 1 and -1 <= s.labels.arousal <= 1
        assert set(s.labels.aus) == set(AU_CATALOGUE) and all(0 <= p <= 1 for p in s.labels.aus.values())
        answer = json.loads(s.raw_text)
        assert answer["expression"] == s.labels.expression and answer["origin"]["va"] == "derived"
        assert s.rationale
    # the happy face is seen as happy, smiling, positive
    s0 = samples[0]
    assert s0.labels.expression == "happiness" and s0.labels.aus[12] >= 0.5 and s0.labels.valence > 0.2


def test_samples_are_deterministic_and_augmented(annotator, ckplus):
    from seke.annotators.offline import OfflineAnnotator

    face = _face(ckplus, "surprise")
    a = annotator.sample_batch([SampleRequest(face, SPEC, n=3)])[0]
    fresh = OfflineAnnotator(annotator.knowledge, seed=7)
    b = fresh.sample_batch([SampleRequest(face, SPEC, n=3)])[0]
    assert [s.raw_text for s in a] == [s.raw_text for s in b]
    other = OfflineAnnotator(annotator.knowledge, seed=8).sample_batch([SampleRequest(face, SPEC, n=3)])[0]
    assert other[0].raw_text == a[0].raw_text  # index 0 is the identity view for every seed
    assert other[1].raw_text != a[1].raw_text
    assert json.loads(a[0].raw_text)["view"] == "identity" and json.loads(a[1].raw_text)["view"] != "identity"


def test_known_expression_is_fused_with_the_au_prior(annotator, ckplus):
    face = _face(ckplus, "sadness")
    blind = annotator.sample_batch([SampleRequest(face, SPEC, n=1)])[0][0]
    known_face = FaceItem(face.face_id, face.image_png, known=Labels(expression="sadness"))
    known = annotator.sample_batch([SampleRequest(known_face, SPEC, n=1)])[0][0]
    assert known.labels.expression == "sadness" and known.expression_probs["sadness"] == 1.0
    # AU15 (lip corner depressor) is part of the sadness profile: knowing the expression raises it
    assert known.labels.aus[15] > blind.labels.aus[15]
    assert json.loads(known.raw_text)["origin"]["aus"] == "image+knowledge"
    # the same expression known on another face still gives image-dependent AUs
    happy_as_sad = annotator.sample_batch([SampleRequest(
        FaceItem("x", _face(ckplus, "happiness").image_png, known=Labels(expression="sadness")), SPEC, n=1)])[0][0]
    assert happy_as_sad.labels.aus != known.labels.aus


def test_verification_accepts_corrects_rejects(annotator, ckplus):
    happy = _face(ckplus, "happiness")
    good = annotator.sample_batch([SampleRequest(happy, SPEC, n=1)])[0][0].labels
    wrong = Labels(expression="anger", valence=-0.5, arousal=0.6, aus={4: 1.0, 7: 1.0, 23: 1.0, 12: 0.0})
    human = FaceItem(happy.face_id, happy.image_png, known=Labels(expression="happiness"))
    v = annotator.verify_batch([VerifyRequest(happy, good), VerifyRequest(happy, wrong), VerifyRequest(human, wrong),
                                VerifyRequest(FaceItem("bad", b"not an image"), good)])
    assert [x.verdict for x in v] == ["accept", "correct", "correct", "reject"]
    assert v[1].corrected.expression == "happiness" and v[1].corrected.aus[12] >= 0.5
    assert v[1].corrected.valence > 0 and v[1].reasons
    assert v[2].corrected.expression == "happiness" and any("human label" in r for r in v[2].reasons)
    assert "cannot" in v[3].reasons[0] and all(json.loads(x.raw_text)["verdict"] == x.verdict for x in v)


def _png(img: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def test_bad_input_gives_per_item_outcomes(annotator, ckplus):
    good = _face(ckplus, "happiness")
    grey = Image.open(io.BytesIO(good.image_png))
    sixteen = Image.fromarray((np.asarray(grey.convert("L"), dtype=np.uint16) * 257))
    faces = {
        "tiny": _png(Image.new("RGB", (1, 1))),
        "cmyk": _png(grey.convert("CMYK"), "JPEG"),
        "16bit": _png(sixteen),
        "webp": _png(grey.convert("RGB"), "WEBP"),
        "noise": _png(Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))),
        "garbage": b"\x89PNG\r\n\x1a\nbroken",
        "good": good.image_png,
    }
    out = annotator.sample_batch([SampleRequest(FaceItem(k, v), SPEC, n=2) for k, v in faces.items()])
    by = dict(zip(faces, out))
    assert all(len(v) == 2 for v in out)
    assert not by["tiny"][0].ok and "smaller than" in by["tiny"][0].error
    assert not by["garbage"][0].ok and "cannot decode" in by["garbage"][0].error
    for k in ("cmyk", "16bit", "webp", "good"):
        assert by[k][0].ok, (k, by[k][0].error)
        assert by[k][0].labels.expression == "happiness", k
    assert by["noise"][0].ok  # no face: still an answer, flagged by low mesh presence in the rationale


def test_oversized_image_is_refused_without_decoding(annotator):
    # a 20000x20000 PNG would need 1.2 GB decoded: refused from the header
    import struct
    import zlib

    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    header = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0, 0, 0))
    blob = header + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")
    (samples,) = annotator.sample_batch([SampleRequest(FaceItem("huge", blob), SPEC, n=1)])
    assert not samples[0].ok and "pixel limit" in samples[0].error


class _FixedModel:
    """A second expression model that always answers the same probabilities."""

    def __init__(self, probs, version="fixed-v1"):
        self.version, self._p = version, np.asarray(probs, dtype=float)

    def probs(self, image):
        return self._p


def _one_hot(expression: str) -> list[float]:
    return [float(e == expression) for e in EXPRESSIONS]


def test_second_model_is_pooled_into_every_view_and_named_in_the_version(annotator, ckplus):
    from seke.annotators.offline import OfflineAnnotator

    face = _face(ckplus, "happiness")
    alone = annotator.sample_batch([SampleRequest(face, SPEC, n=3)])[0]
    pooled_ann = OfflineAnnotator(annotator.knowledge, seed=7, second_model=_FixedModel(_one_hot("surprise")),
                                  second_weight=0.25)
    assert pooled_ann.model.endswith(f"; second model fixed-v1 weight 0.25; knowledge {annotator.knowledge.version}")
    assert pooled_ann.source == "offline+checkpoint" and annotator.source == "offline"
    pooled = pooled_ann.sample_batch([SampleRequest(face, SPEC, n=3)])[0]
    for a, b in zip(alone, pooled):   # same seed, same views: pooled = 0.75 fused + 0.25 second
        for e in EXPRESSIONS:
            want = 0.75 * a.expression_probs[e] + 0.25 * (e == "surprise")
            assert b.expression_probs[e] == pytest.approx(want, abs=2e-4)
    with pytest.raises(ValueError, match="second_weight"):
        OfflineAnnotator(annotator.knowledge, second_model=_FixedModel(_one_hot("anger")), second_weight=1.5)


def test_second_model_weight_per_source_and_zero_means_unused(annotator, ckplus):
    """A source at weight 0 answers exactly as the annotator without a second model (pooling
    and verification); other sources are pooled at the default weight."""
    from dataclasses import replace

    from seke.annotators.offline import OfflineAnnotator

    face = _face(ckplus, "happiness")
    per_source = OfflineAnnotator(annotator.knowledge, seed=7, second_model=_FixedModel(_one_hot("surprise")),
                                  second_weight="ckplus=0, *=0.25")
    assert "; second model fixed-v1 weights ckplus=0,*=0.25; " in per_source.model
    assert per_source.second_weight_for("ckplus") == 0.0 and per_source.second_weight_for("wild") == 0.25
    alone = annotator.sample_batch([SampleRequest(face, SPEC, n=2)])[0]
    posed = per_source.sample_batch([SampleRequest(replace(face, source="ckplus"), SPEC, n=2)])[0]
    wild = per_source.sample_batch([SampleRequest(replace(face, source="wild"), SPEC, n=2)])[0]
    for a, p, w in zip(alone, posed, wild):
        assert p.expression_probs == a.expression_probs
        assert w.expression_probs["surprise"] == pytest.approx(0.75 * a.expression_probs["surprise"] + 0.25, abs=2e-4)
    cand = Labels(expression="happiness")
    (v_alone,) = annotator.verify_batch([VerifyRequest(face, cand)])
    (v_posed,) = per_source.verify_batch([VerifyRequest(replace(face, source="ckplus"), cand)])
    assert v_posed.verdict == v_alone.verdict and v_posed.reasons == v_alone.reasons


@pytest.mark.parametrize("spec, want", [
    (None, {"*": 0.4}), ("", {"*": 0.4}), (0.3, {"*": 0.3}), ("0.2", {"*": 0.2}),
    ("ckplus=0", {"ckplus": 0.0, "*": 0.4}), ("ckplus=0,wild=0.5,*=0.3", {"ckplus": 0.0, "wild": 0.5, "*": 0.3}),
    ({"fer2013": 1}, {"fer2013": 1.0, "*": 0.4}),
])
def test_parse_second_weights(spec, want):
    from seke.annotators.offline import format_second_weights, parse_second_weights

    assert parse_second_weights(spec) == want
    assert parse_second_weights(format_second_weights(want)) == want


@pytest.mark.parametrize("spec, match", [
    ("ckplus=1.5", "must be in \\[0, 1\\]"), ("ckplus=x", "not a number"), ("=0.3", "empty source"),
    (float("nan"), "must be in"), ("-0.1", "must be in"),
])
def test_bad_second_weights_are_refused_with_the_part_named(spec, match):
    from seke.annotators.offline import build_offline_annotator, parse_second_weights
    from seke.knowledge import knowledge_v1

    with pytest.raises(ValueError, match=match):
        parse_second_weights(spec)
    with pytest.raises(ValueError, match=match):   # before any checkpoint is looked for
        build_offline_annotator(knowledge_v1(), expression_checkpoint="/no/such/checkpoint", checkpoint_weights=spec)


def test_second_model_without_a_distribution_fails_the_item_not_the_batch(annotator, ckplus):
    from seke.annotators.offline import OfflineAnnotator

    bad = OfflineAnnotator(annotator.knowledge, seed=7, second_model=_FixedModel([float("nan")] * len(EXPRESSIONS)))
    face = _face(ckplus, "happiness")
    (samples,) = bad.sample_batch([SampleRequest(face, SPEC, n=2)])
    assert [s.parse_status for s in samples] == ["failed", "failed"]
    assert all("second expression model fixed-v1 gave no valid probabilities" in s.error for s in samples)
    (verdict,) = bad.verify_batch([VerifyRequest(face, Labels(expression="happiness"))])
    assert verdict.verdict == "reject" and "second expression model" in verdict.reasons[0]


def _fer(top: str) -> np.ndarray:
    """FER-order probabilities (angry, disgust, fear, happy, sad, surprise, neutral) with ``top`` at 0.7."""
    from seke.vision.expression import FER_CLASSES

    return np.array([0.7 if c == top else 0.05 for c in FER_CLASSES])


@pytest.mark.parametrize("geometry, aligned, second, support, want", [
    ("happy", "happy", "anger", 0.5, None),            # one voter against: no objection
    ("happy", "sad", "anger", 0.5, "reject"),          # two against, weak support: reject
    ("happy", "sad", "anger", 0.7, None),              # two against, strong support: keep
    ("sad", "sad", "sadness", 0.5, "sadness"),         # every voter and the bare model agree: correct
    ("sad", "sad", None, 0.5, "sadness"),              # no second model: the two-voter rule of before
    ("sad", "happy", None, 0.5, None),
])
def test_independent_voters_decide_reject_and_correct(annotator, geometry, aligned, second, support, want):
    """The verification rule with the voters' answers fixed (geometry, aligned crop, second model)."""
    from dataclasses import replace

    from seke.vision.features import ViewEvidence

    class Geometry:
        def probs(self, g, bs):
            return _fer(geometry)

    ann = annotator.__class__(annotator.knowledge, seed=7,
                              second_model=_FixedModel(_one_hot("anger")) if second is not None else None)
    ann.geometry = Geometry()
    ev = ViewEvidence(fer_probs=_fer("sad"), blendshapes=np.zeros(52), presence=0.9, geometry=np.zeros(3),
                      fer_aligned=_fer(aligned))
    if second is not None:
        ev = replace(ev, second_probs=np.array([0.65 if e == second else 0.05 for e in EXPRESSIONS]))
    model_probs = {e: (support if e == "happiness" else (1 - support) / 7) for e in EXPRESSIONS}
    raw = ann._raw_probs(ev)
    reasons: list[str] = []
    assert ann._independent_check(ev, "happiness", model_probs, raw, reasons) == want
    assert reasons and ("second model P(happiness)" in reasons[0]) == (second is not None)
