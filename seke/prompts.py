"""Knowledge-enhanced prompt templates for a vision LLM (SEKE §3.1) and their answer schemas.

Why this module exists: SEKE's quality comes from telling the model what humans already know
about a face (the *known* granularities, stated as facts) and how the granularities correlate
(AU definitions, P(AU | expression), circumplex regions), then asking only for the *missing*
granularities. Every template is versioned and the rendered messages are hashed
(:meth:`seke.annotation.PromptSpec.make`), and the knowledge fingerprint is part of the hashed
text, so a cache keyed on the prompt hash never reuses an answer produced under other knowledge
or another template.

The messages never contain the image: the annotator attaches it at call time as a base64 data
URL (never a local path), so prompts can be stored in the lake without image bytes.
"""

from __future__ import annotations

import functools
import json
from typing import TYPE_CHECKING, Any, Sequence

from seke.annotation import Labels, PromptSpec
from seke.knowledge import Knowledge
from seke.taxonomy import AU_CATALOGUE, AU_NAMES, EXPRESSIONS, GRANULARITIES

if TYPE_CHECKING:
    import polars as pl

#: Bump when the wording/structure of the annotation template changes (changes every hash).
ANNOTATE_VERSION = "annotate-v1"
#: Bump when the verification template changes.
VERIFY_VERSION = "verify-v1"

#: FACS intensity codes; "0" means absent.
AU_INTENSITIES: tuple[str, ...] = ("0", "A", "B", "C", "D", "E")
#: AUs listed in the expression -> AU table are those at least this likely under the expression.
_TABLE_MIN_P = 0.30

_GRANULARITY_TEXT = {
    "expression": "the discrete facial expression (one of: " + ", ".join(EXPRESSIONS) + ")",
    "va": "valence and arousal, each a number in [-1, 1]",
    "aus": "the facial action units (FACS AUs): for each AU listed, the probability that it is "
           "present and its intensity",
}


# ---- knowledge as text ---------------------------------------------------------------------
def _au_definitions() -> str:
    return "\n".join(f"- AU{au}: {AU_NAMES[au]}" for au in AU_CATALOGUE)


def _expression_au_table(knowledge: Knowledge) -> str:
    lines = []
    for e in EXPRESSIONS:
        table = knowledge.expression_au.get(e, {})
        likely = sorted(((p, au) for au, p in table.items() if p >= _TABLE_MIN_P), reverse=True)
        body = ", ".join(f"AU{au} ({p:.2f})" for p, au in likely) or "no AU is typical"
        lines.append(f"- {e}: {body}")
    return "\n".join(lines)


def _va_regions(knowledge: Knowledge) -> str:
    lines = []
    for e in EXPRESSIONS:
        r = knowledge.va_regions.get(e)
        if r is None:
            continue
        lines.append(f"- {e}: valence {r.valence:+.2f} ± {r.valence_tol:.2f}, "
                     f"arousal {r.arousal:+.2f} ± {r.arousal_tol:.2f}")
    return "\n".join(lines)


def knowledge_text(knowledge: Knowledge) -> str:
    """The correlation knowledge block shared by the annotation and verification prompts."""
    return (
        f"Emotion knowledge (version {knowledge.version}, fingerprint {knowledge.fingerprint()}):\n"
        "Facial action units (FACS):\n" + _au_definitions() + "\n\n"
        "Expression -> typical AUs, with P(AU present | expression):\n"
        + _expression_au_table(knowledge) + "\n\n"
        "Expression -> region on the valence-arousal circumplex (centre ± tolerance; "
        "valence: negative..positive, arousal: calm..excited, both in [-1, 1]):\n"
        + _va_regions(knowledge)
    )


def _labels_lines(labels: Labels, *, human_facts: bool) -> list[str]:
    """One line per granularity present. Human facts state that unlisted AUs are absent;
    candidate labels show each present AU's probability instead."""
    out = []
    if labels.expression is not None:
        out.append(f"- expression: {labels.expression}")
    if labels.valence is not None and labels.arousal is not None:
        out.append(f"- valence: {labels.valence:+.2f}, arousal: {labels.arousal:+.2f}")
    if labels.aus is not None:
        present = sorted((au, p) for au, p in labels.aus.items() if p >= 0.5)
        if human_facts:
            out.append("- action units present: " + (", ".join(f"AU{a}" for a, _ in present) or "none")
                       + " (all other AUs absent)")
        else:
            out.append("- action units present: "
                       + (", ".join(f"AU{a} (p={p:.2f})" for a, p in present) or "none"))
    return out


def _known_facts(known: Labels) -> list[str]:
    return _labels_lines(known, human_facts=True)


def _labels_text(labels: Labels) -> list[str]:
    return _labels_lines(labels, human_facts=False)


def _answer_fields_text(missing: Sequence[str]) -> str:
    parts = []
    if "expression" in missing:
        parts.append('"expression": one of ' + ", ".join(f'"{e}"' for e in EXPRESSIONS)
                     + '; "expression_probs": a probability for each of these expressions '
                       "(summing to 1)")
    if "va" in missing:
        parts.append('"valence" and "arousal": numbers in [-1, 1]')
    if "aus" in missing:
        parts.append('"aus": an object with one entry per AU id ("AU1", "AU2", ...) for every AU '
                     'in the list above, each {"p": probability present in [0, 1], '
                     '"intensity": one of "0" (absent), "A", "B", "C", "D", "E"}')
    parts.append('"rationale": one or two sentences citing the visible facial evidence '
                 "(brows, eyes, nose, cheeks, mouth) that supports your answer")
    return "\n".join(f"- {p}" for p in parts)


# ---- public builders -----------------------------------------------------------------------
SYSTEM_ANNOTATE = (
    "You are an expert facial-expression annotator trained in the Facial Action Coding System "
    "(FACS) and the circumplex model of affect. You look carefully at the face in the image and "
    "report only what the visible evidence supports. Answer with a single JSON object and "
    "nothing else."
)

SYSTEM_VERIFY = (
    "You are a senior facial-expression annotator reviewing labels proposed by another "
    "annotator. You check them against the face in the image and against expert knowledge of "
    "how expressions, action units and valence/arousal correlate. Answer with a single JSON "
    "object and nothing else."
)


def build_annotation_prompt(known: Labels, knowledge: Knowledge,
                            withheld: Sequence[str] = ()) -> PromptSpec:
    """Render the annotation prompt for a face with ``known`` human labels.

    The known granularities are stated as facts the model must not contradict; only the
    missing ones are requested (``PromptSpec.missing``). ``withheld`` granularities (an invalid
    human label) are neither stated nor requested. The image is not part of the messages.
    Without ``withheld`` the text (and hash) is exactly that of earlier versions.
    """
    missing = tuple(g for g in known.missing_granularities() if g not in set(withheld))
    facts = _known_facts(known)
    asked = "\n".join(f"- {_GRANULARITY_TEXT[g]}" for g in missing) or (
        "- nothing (all labels known)" if not withheld else "- nothing (every label is known or withheld)")
    user = (
        knowledge_text(knowledge) + "\n\n"
        + ("Facts established by human annotators for this face (treat them as correct and keep "
           "your answer consistent with them):\n" + "\n".join(facts) + "\n\n"
           if facts else "No human labels are known for this face.\n\n")
        + "Task: look at the face in the image and estimate only the following:\n" + asked + "\n\n"
        + "Use the knowledge above as a prior, but let the visible evidence decide.\n"
        + "Reply with one JSON object with exactly these fields:\n" + _answer_fields_text(missing)
    )
    messages = [{"role": "system", "content": SYSTEM_ANNOTATE},
                {"role": "user", "content": user}]
    return PromptSpec.make(ANNOTATE_VERSION, messages, missing)


def build_verification_prompt(candidate: Labels, known: Labels, knowledge: Knowledge,
                              reasons: Sequence[str]) -> PromptSpec:
    """Render the self-verification prompt: candidate labels + knowledge (+ image at call time).

    The model answers accept / correct / reject with reasons; ``PromptSpec.missing`` lists the
    granularities under review (those not known from humans).
    """
    under_review = tuple(g for g in known.missing_granularities()
                         if g in candidate.known_granularities()) or tuple(
        candidate.known_granularities())
    facts = _known_facts(known)
    cand = _labels_text(Labels(
        expression=candidate.expression if "expression" in under_review else None,
        valence=candidate.valence if "va" in under_review else None,
        arousal=candidate.arousal if "va" in under_review else None,
        aus=candidate.aus if "aus" in under_review else None))
    why = "\n".join(f"- {r}" for r in reasons) or "- routine check"
    user = (
        knowledge_text(knowledge) + "\n\n"
        + ("Facts established by human annotators (correct by definition):\n"
           + "\n".join(facts) + "\n\n" if facts else "")
        + "Candidate labels proposed for this face:\n" + ("\n".join(cand) or "- none") + "\n\n"
        + "Why the candidate is under review:\n" + why + "\n\n"
        + "Task: check the candidate labels against the face in the image and the knowledge. "
          "Answer \"accept\" if they are right, \"correct\" if you can fix them (give the "
          "corrected values for the granularities under review), or \"reject\" if the face does "
          "not allow a reliable label.\n"
        + "Reply with one JSON object with exactly these fields:\n"
        + '- "verdict": "accept", "correct" or "reject"\n'
        + '- "reasons": a list of short reasons citing visible evidence\n'
        + '- "corrected": null unless the verdict is "correct"; otherwise an object with the '
          "corrected fields among:\n" + _answer_fields_text(under_review)
    )
    messages = [{"role": "system", "content": SYSTEM_VERIFY},
                {"role": "user", "content": user}]
    return PromptSpec.make(VERIFY_VERSION, messages, under_review)


# ---- answer schemas (OpenAI ``response_format: json_schema``, strict-compatible) -----------
def au_key(au: int) -> str:
    """Key of an AU in the answer object (``AU12``)."""
    return f"AU{au}"


def _labels_properties(missing: Sequence[str]) -> dict[str, Any]:
    props: dict[str, Any] = {}
    if "expression" in missing:
        props["expression"] = {"type": "string", "enum": list(EXPRESSIONS)}
        props["expression_probs"] = {
            "type": "object",
            "properties": {e: {"type": "number", "minimum": 0, "maximum": 1} for e in EXPRESSIONS},
            "required": list(EXPRESSIONS), "additionalProperties": False,
        }
    if "va" in missing:
        props["valence"] = {"type": "number", "minimum": -1, "maximum": 1}
        props["arousal"] = {"type": "number", "minimum": -1, "maximum": 1}
    if "aus" in missing:
        au_item = {"type": "object",
                   "properties": {"p": {"type": "number", "minimum": 0, "maximum": 1},
                                  "intensity": {"type": "string", "enum": list(AU_INTENSITIES)}},
                   "required": ["p", "intensity"], "additionalProperties": False}
        props["aus"] = {"type": "object",
                        "properties": {au_key(a): au_item for a in AU_CATALOGUE},
                        "required": [au_key(a) for a in AU_CATALOGUE],
                        "additionalProperties": False}
    return props


def answer_json_schema(missing: Sequence[str]) -> dict[str, Any]:
    """JSON schema of an annotation answer asking for the ``missing`` granularities.

    Memoised per granularity set (it is built for every request); treat the result as read-only.
    """
    return _answer_json_schema(tuple(missing))


@functools.lru_cache(maxsize=16)
def _answer_json_schema(missing: tuple[str, ...]) -> dict[str, Any]:
    unknown = [g for g in missing if g not in GRANULARITIES]
    if unknown:
        raise ValueError(f"unknown granularities {unknown}; expected a subset of {GRANULARITIES}")
    props = _labels_properties(missing)
    props["rationale"] = {"type": "string"}
    return {"type": "object", "properties": props, "required": list(props),
            "additionalProperties": False}


def verification_json_schema(under_review: Sequence[str]) -> dict[str, Any]:
    """JSON schema of a verification answer; ``corrected`` is null unless verdict is correct."""
    corrected = _labels_properties(under_review)
    corrected["rationale"] = {"type": "string"}
    return {
        "type": "object",
        "properties": {
            "verdict": {"type": "string", "enum": ["accept", "correct", "reject"]},
            "reasons": {"type": "array", "items": {"type": "string"}},
            "corrected": {"anyOf": [
                {"type": "object", "properties": corrected, "required": list(corrected),
                 "additionalProperties": False},
                {"type": "null"}]},
        },
        "required": ["verdict", "reasons", "corrected"],
        "additionalProperties": False,
    }


def response_format(schema: dict[str, Any], name: str, mode: str) -> dict[str, Any] | None:
    """The ``response_format`` request field for a capability ``mode``.

    ``json_schema`` (structured outputs), ``json_object`` (JSON mode) or ``none``.
    """
    if mode == "json_schema":
        return {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}}
    if mode == "json_object":
        return {"type": "json_object"}
    return None


def schema_fingerprint(schema: dict[str, Any]) -> str:
    """Stable text of a schema (for cache keys and logs)."""
    return json.dumps(schema, sort_keys=True, separators=(",", ":"))


def prompt_specs(prompts: "pl.DataFrame") -> dict[str, PromptSpec]:
    """The stored ``knowledge_prompts`` rows as prompt specs by face id."""
    return {r["face_id"]: PromptSpec(r["prompt_version"], tuple(json.loads(r["messages_json"])),
                                     tuple(r["missing"]), r["prompt_hash"])
            for r in prompts.iter_rows(named=True)}
