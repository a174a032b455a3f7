"""Prompt templates: known facts in, only missing granularities asked, stable versioned hashes."""

import json

import pytest

from seke.annotation import Labels
from seke.knowledge import knowledge_v1, knowledge_with_estimate
from seke.prompts import (ANNOTATE_VERSION, VERIFY_VERSION, answer_json_schema,
                          build_annotation_prompt, build_verification_prompt,
                          verification_json_schema)
from seke.taxonomy import AU_CATALOGUE, EXPRESSIONS


def _text(spec):
    return "\n".join(m["content"] for m in spec.messages)


def test_known_expression_is_a_fact_and_only_missing_are_asked():
    spec = build_annotation_prompt(Labels(expression="happiness"), knowledge_v1())
    assert spec.version == ANNOTATE_VERSION
    assert spec.missing == ("va", "aus")
    text = _text(spec)
    assert "- expression: happiness" in text
    assert '"valence"' in text and '"aus"' in text
    assert '"expression_probs"' not in text          # expression is known: not asked
    assert "AU12: lip corner puller" in text            # AU definitions
    assert "happiness: " in text and "AU12 (0.75)" in text  # expression->AU table
    assert "valence +0.80" in text                      # VA region
    # the image is attached by the annotator at call time: messages are plain text only
    assert all(isinstance(m["content"], str) for m in spec.messages)
    assert "image_url" not in json.dumps(spec.messages) and "base64" not in json.dumps(spec.messages)


def test_all_unknown_asks_everything_and_hash_is_stable():
    k = knowledge_v1()
    a = build_annotation_prompt(Labels(), k)
    b = build_annotation_prompt(Labels(), k)
    assert a.missing == ("expression", "va", "aus")
    assert a.prompt_hash == b.prompt_hash and len(a.prompt_hash) == 16
    c = build_annotation_prompt(Labels(expression="anger"), k)
    assert c.prompt_hash != a.prompt_hash


def test_knowledge_change_changes_hash():
    import polars as pl
    k1 = knowledge_v1()
    rows = pl.DataFrame({"expression": ["happiness"] * 4, **{f"au{a}": [1 if a == 25 else 0] * 4
                                                            for a in AU_CATALOGUE}})
    k2 = knowledge_with_estimate(rows, "toy")
    assert k1.fingerprint() != k2.fingerprint()
    h1 = build_annotation_prompt(Labels(), k1).prompt_hash
    h2 = build_annotation_prompt(Labels(), k2).prompt_hash
    assert h1 != h2
    assert k2.fingerprint() in _text(build_annotation_prompt(Labels(), k2))


def test_known_aus_listed_as_facts():
    spec = build_annotation_prompt(Labels(expression="surprise", aus={1: 1.0, 2: 1.0, 26: 1.0, 4: 0.0}),
                                   knowledge_v1())
    assert spec.missing == ("va",)
    assert "action units present: AU1, AU2, AU26" in _text(spec)


def test_answer_schema_only_missing_fields():
    s = answer_json_schema(["va"])
    assert set(s["properties"]) == {"valence", "arousal", "rationale"}
    assert s["properties"]["valence"]["minimum"] == -1 and s["properties"]["valence"]["maximum"] == 1
    full = answer_json_schema(["expression", "va", "aus"])
    assert full["properties"]["expression"]["enum"] == list(EXPRESSIONS)
    assert set(full["properties"]["aus"]["required"]) == {f"AU{a}" for a in AU_CATALOGUE}
    assert set(full["required"]) == set(full["properties"])
    with pytest.raises(ValueError):
        answer_json_schema(["emotion"])


def test_verification_prompt_and_schema():
    k = knowledge_v1()
    cand = Labels(expression="fear", valence=0.5, arousal=0.6)
    spec = build_verification_prompt(cand, Labels(aus={1: 1, 2: 1}), k, ["inconsistent: fear with positive valence"])
    assert spec.version == VERIFY_VERSION
    assert spec.missing == ("expression", "va")
    text = _text(spec)
    assert "inconsistent: fear with positive valence" in text and "- expression: fear" in text
    sch = verification_json_schema(spec.missing)
    assert sch["properties"]["verdict"]["enum"] == ["accept", "correct", "reject"]
    other = build_verification_prompt(cand, Labels(aus={1: 1, 2: 1}), k, ["low confidence"])
    assert other.prompt_hash != spec.prompt_hash
