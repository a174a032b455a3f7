"""Tolerant parsing, validation and normalisation of VLLM answers."""

import json

import pytest

from seke.prompts import answer_json_schema
from seke.response_schema import (ParseError, detect_refusal, extract_json, parse_annotation,
                                  parse_verdict, repair_messages)
from seke.taxonomy import AU_CATALOGUE

ALL = ("expression", "va", "aus")


def good(**over):
    d = {"expression": "happiness",
         "expression_probs": {"happiness": 0.8, "neutral": 0.2},
         "valence": 0.7, "arousal": 0.4,
         "aus": {"AU6": {"p": 0.9, "intensity": "C"}, "AU12": {"p": 0.95, "intensity": "D"}},
         "rationale": "cheeks raised, lip corners pulled up"}
    d.update(over)
    return d


def test_strict_json():
    p = parse_annotation(json.dumps(good()), ALL)
    assert p.labels.expression == "happiness"
    assert p.labels.valence == 0.7 and p.labels.arousal == 0.4
    assert p.labels.aus[12] == 0.95 and p.labels.aus[6] == 0.9
    assert set(p.labels.aus) == set(AU_CATALOGUE) and p.labels.aus[4] == 0.0
    assert p.au_intensity == {6: "C", 12: "D"}
    assert abs(sum(p.expression_probs.values()) - 1) < 1e-9
    assert p.rationale.startswith("cheeks") and p.extraction == "json"


@pytest.mark.parametrize("text,how", [
    ("```json\n" + json.dumps(good()) + "\n```", "fenced"),
    ("Sure! Here is the annotation:\n" + json.dumps(good()) + "\nLet me know if you need more.", "embedded"),
    ("{'expression': 'happy', 'valence': 0.7, 'arousal': 0.4, 'aus': [6, 12], 'rationale': 'it's a smile {grin}'}", "lenient"),
    ('{"expression": "Happy", "valence": "0.7", "arousal": 0.4, "aus": {"12": true, "6": "B"},}', "lenient"),
    ('{expression: "joy", valence: 0.7, arousal: 0.4, aus: ["AU12", "AU6"]}', "lenient"),
])
def test_tolerant_extraction(text, how):
    p = parse_annotation(text, ALL)
    assert p.labels.expression == "happiness"
    assert p.labels.aus[12] == 1.0 or p.labels.aus[12] > 0.5
    assert p.labels.aus[6] > 0.5 and p.labels.aus[1] == 0.0
    assert p.extraction == how


def test_only_missing_granularities_are_taken():
    p = parse_annotation(json.dumps(good()), ["va"])
    assert p.labels.expression is None and p.labels.aus is None
    assert p.labels.valence == 0.7


@pytest.mark.parametrize("obj,reason", [
    (good(expression="bored"), "unknown expression"),
    (good(valence=3.0), "valence 3 outside"),
    (good(arousal="high"), "arousal is not a number"),
    (good(aus={"AU43": 1.0}), "AU43 is not in the AU catalogue"),
    (good(aus={"AU12": 1.7}), r"outside \[0, 1\]"),
    ({"rationale": "x"}, "missing field: expression"),
])
def test_validation_errors_have_reasons(obj, reason):
    with pytest.raises(ParseError, match=reason):
        parse_annotation(json.dumps(obj), ALL)


def test_small_overshoot_is_clamped():
    p = parse_annotation(json.dumps(good(valence=1.03, arousal=-1.04)), ALL)
    assert p.labels.valence == 1.0 and p.labels.arousal == -1.0


@pytest.mark.parametrize("text,reason", [
    ("", "empty answer"), ("the person looks happy", "no JSON object"),
    ('{"expression": "happiness", "valence": 0.', "truncated"),
])
def test_unrecoverable(text, reason):
    with pytest.raises(ParseError, match=reason):
        extract_json(text)


def test_refusals():
    assert detect_refusal("I'm sorry, but I can't help with identifying people in images.")
    assert detect_refusal("", refusal_field="I cannot assist with that.") == "I cannot assist with that."
    assert detect_refusal(json.dumps(good())) is None
    assert detect_refusal("The face shows a smile.") is None


def test_verdicts():
    v = parse_verdict('{"verdict": "accept", "reasons": ["smile visible"], "corrected": null}', ["expression"])
    assert v.verdict == "accept" and v.reasons == ["smile visible"] and v.corrected is None
    v = parse_verdict('{"verdict": "correct", "reasons": ["brows lowered"], '
                      '"corrected": {"expression": "angry", "rationale": "x"}}', ["expression", "va"])
    assert v.verdict == "correct" and v.corrected.expression == "anger" and v.corrected.valence is None
    with pytest.raises(ParseError, match="no corrected labels"):
        parse_verdict('{"verdict": "correct", "reasons": []}', ["expression"])
    with pytest.raises(ParseError, match="bad verdict"):
        parse_verdict('{"verdict": "maybe"}', ["expression"])


def test_repair_messages_carry_error_and_schema():
    msgs = repair_messages([{"role": "user", "content": "q"}], "bad", "unknown expression 'bored'",
                           answer_json_schema(["expression"]))
    assert msgs[-2] == {"role": "assistant", "content": "bad"}
    assert "unknown expression" in msgs[-1]["content"] and '"enum"' in msgs[-1]["content"]
