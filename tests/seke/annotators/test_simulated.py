"""The simulated annotator: reproducible draws and noise that behaves as configured."""

from __future__ import annotations

from seke.annotation import Annotator, Labels, PromptSpec, SampleRequest, VerifyRequest
from seke.annotators.simulated import NoiseModel, SimulatedAnnotator, simulate_faces
from seke.knowledge import knowledge_v1

KN = knowledge_v1()
ALL = PromptSpec.make("t", [], ["expression", "va", "aus"])


def test_implements_the_protocol_and_draws_are_order_independent():
    faces, truth = simulate_faces(20, KN, seed=1)
    ann = SimulatedAnnotator(truth, seed=4, knowledge=KN)
    assert isinstance(ann, Annotator)
    one = ann.sample_batch([SampleRequest(f, ALL, 3) for f in faces])
    # the same samples asked in a different order and split differently
    rev = SimulatedAnnotator(truth, seed=4, knowledge=KN).sample_batch(
        [SampleRequest(f, ALL, 2, first_index=1) for f in reversed(faces)])[::-1]
    assert [[s.labels for s in row[1:]] for row in one] == [[s.labels for s in row] for row in rev]


def test_noise_free_annotator_returns_the_truth():
    faces, truth = simulate_faces(30, KN, seed=2)
    quiet = NoiseModel(mode_error_base=0, mode_error_slope=0, sample_noise_base=0, sample_noise_slope=0,
                       va_sd_base=0, va_sd_slope=0, au_flip_base=0, au_flip_slope=0, parse_failure_rate=0)
    ann = SimulatedAnnotator(truth, quiet, knowledge=KN)
    for f, row in zip(faces, ann.sample_batch([SampleRequest(f, ALL, 2) for f in faces])):
        for s in row:
            assert s.labels.expression == truth[f.face_id].expression
            assert s.labels.valence == truth[f.face_id].valence
            assert {a for a, p in s.labels.aus.items() if p} == {a for a, p in truth[f.face_id].aus.items() if p}


def test_noise_rates_show_up_in_samples():
    faces, truth = simulate_faces(400, KN, seed=3)
    noisy = NoiseModel(parse_failure_rate=0.2, mode_error_base=0.0, mode_error_slope=0.0,
                       sample_noise_base=0.3, sample_noise_slope=0.0)
    ann = SimulatedAnnotator(truth, noisy, knowledge=KN)
    rows = ann.sample_batch([SampleRequest(f, ALL, 5) for f in faces])
    samples = [s for row in rows for s in row]
    failed = sum(not s.ok for s in samples) / len(samples)
    ok = [(f, s) for f, row in zip(faces, rows) for s in row if s.ok]
    wrong = sum(s.labels.expression != truth[f.face_id].expression for f, s in ok) / len(ok)
    assert 0.16 < failed < 0.24 and 0.25 < wrong < 0.35


def test_verifier_accuracy_is_controllable():
    faces, truth = simulate_faces(300, KN, seed=5)
    perfect = SimulatedAnnotator(truth, NoiseModel(verifier_accuracy_base=1.0, verifier_accuracy_slope=0.0,
                                                   verifier_correct_share=0.0), knowledge=KN)
    reqs = [VerifyRequest(f, Labels("happiness" if i % 2 else truth[f.face_id].expression))
            for i, f in enumerate(faces)]
    verdicts = perfect.verify_batch(reqs)
    for req, v in zip(reqs, verdicts):
        right = req.candidate.expression == truth[req.face.face_id].expression
        assert v.verdict == ("accept" if right else "reject")
    coin = SimulatedAnnotator(truth, NoiseModel(verifier_accuracy_base=0.5, verifier_accuracy_slope=0.0,
                                                verifier_correct_share=0.0), knowledge=KN)
    agree = sum((v.verdict == "accept") == (r.candidate.expression == truth[r.face.face_id].expression)
                for r, v in zip(reqs, coin.verify_batch(reqs))) / len(reqs)
    assert 0.4 < agree < 0.6
