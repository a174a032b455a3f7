"""Turn a vision LLM's answer text into validated :class:`~seke.annotation.Labels`.

Why: servers differ. With ``response_format=json_schema`` the text is valid JSON of the right
shape; with JSON mode it is JSON of any shape; with neither it may be wrapped in code fences,
prefixed by chatter, use single quotes or trailing commas. One parser handles all three:
tolerant extraction -> schema validation -> normalisation to the platform taxonomy. When that
fails the caller makes ONE repair request (:func:`repair_messages`) and parses again; what
still fails ends ``failed`` with a reason, and refusals are detected and never parsed as labels.

Only the *requested* granularities are taken from an answer; anything else the model says is
ignored, so known human labels are never overwritten by generated ones.
"""

from __future__ import annotations

import ast
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, Sequence

from seke.annotation import Labels, VerdictKind
from seke.taxonomy import AU_CATALOGUE, EXPRESSIONS, normalise_expression

#: Bumped when parsing rules change (stored beside cached answers).
PARSER_VERSION = "parse-v1"

#: Small overshoots of [-1, 1] (e.g. 1.02) are clamped; anything beyond is rejected.
VA_CLAMP_TOLERANCE = 0.05

_INTENSITY_P = {"0": 0.0, "a": 0.6, "b": 0.7, "c": 0.8, "d": 0.9, "e": 0.95}

_REFUSAL_PATTERNS = [
    r"\bI(?:'m| am) (?:sorry|afraid)\b.*\b(?:can(?:no|')t|unable|not able)\b",
    r"\bI (?:can(?:no|')t|cannot|won't|will not|am unable to|am not able to) "
    r"(?:help|assist|comply|provide|analy[sz]e|identify|determine|do that|fulfil)",
    r"\bas an AI\b.*\b(?:can(?:no|')t|unable|not able)\b",
    r"\bI'm not able to (?:help|assist|analy[sz]e)",
]
_REFUSAL_RE = re.compile("|".join(_REFUSAL_PATTERNS), re.IGNORECASE | re.DOTALL)


class ParseError(ValueError):
    """An answer that could not be turned into labels; the message is the per-item reason."""


@dataclass
class ParsedAnswer:
    """The outcome of parsing one annotation answer."""

    labels: Labels
    expression_probs: dict[str, float] | None = None
    rationale: str = ""
    extraction: str = "json"      # json | fenced | embedded | lenient
    au_intensity: dict[int, str] = field(default_factory=dict)


@dataclass
class ParsedVerdict:
    verdict: VerdictKind
    reasons: list[str]
    corrected: Labels | None


# ---- refusals ------------------------------------------------------------------------------
def detect_refusal(text: str | None, refusal_field: str | None = None) -> str | None:
    """The refusal message if the model declined (OpenAI's ``message.refusal`` or a refusal-like
    answer without any JSON object), else ``None``."""
    if refusal_field:
        return refusal_field.strip()[:300] or "refused"
    if not text:
        return None
    if "{" in text and "}" in text:
        return None  # an answer with JSON content is parsed, not treated as a refusal
    if _REFUSAL_RE.search(text):
        return text.strip()[:300]
    return None


# ---- tolerant JSON extraction --------------------------------------------------------------
_FENCE_RE = re.compile(r"```(?:json|JSON)?\s*(.*?)```", re.DOTALL)


def _is_apostrophe(text: str, i: int) -> bool:
    return 0 < i < len(text) - 1 and text[i - 1].isalnum() and text[i + 1].isalnum()


def _balanced_objects(text: str) -> list[str]:
    """Every top-level ``{...}`` span, respecting strings (so braces in rationales are fine)."""
    out, depth, start, quote, esc = [], 0, -1, "", False
    for i, ch in enumerate(text):
        if quote:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == quote and not (ch == "'" and _is_apostrophe(text, i)):
                quote = ""
            continue
        if ch in "\"'" and depth > 0:
            # a single quote inside a word (don't, it's) is an apostrophe, not a string
            if ch == "'" and _is_apostrophe(text, i):
                continue
            quote = ch
        elif ch == "{":
            if depth == 0:
                start = i
            depth += 1
        elif ch == "}" and depth > 0:
            depth -= 1
            if depth == 0:
                out.append(text[start:i + 1])
    return out


def _lenient_loads(s: str) -> Any:
    """JSON with the usual LLM slips: trailing commas, single quotes, Python literals, comments."""
    t = re.sub(r"//[^\n\"']*$", "", s, flags=re.MULTILINE)
    t = re.sub(r",\s*([}\]])", r"\1", t)
    try:
        return json.loads(t)
    except json.JSONDecodeError:
        pass
    py = re.sub(r"\btrue\b", "True", t)
    py = re.sub(r"\bfalse\b", "False", py)
    py = re.sub(r"\bnull\b", "None", py)
    try:
        return ast.literal_eval(py)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        pass
    # single-quoted strings containing apostrophes: {'rationale': 'it's a smile'}
    dq = re.sub(r"(?<=[{\[,:])(\s*)'|'(?=\s*[:,}\]])", lambda m: (m.group(1) or "") + '"', t)
    try:
        return json.loads(dq)
    except json.JSONDecodeError:
        pass
    # unquoted keys: {expression: "anger"}
    q = re.sub(r"([{,]\s*)([A-Za-z_][A-Za-z0-9_]*)\s*:", r'\1"\2":', t)
    return json.loads(q)


def extract_json(text: str | None) -> tuple[dict[str, Any], str]:
    """Find the JSON object in an answer; returns it and how it was found.

    Raises :class:`ParseError` with a short reason when no object can be recovered.
    """
    if text is None or not text.strip():
        raise ParseError("empty answer")
    s = text.strip()
    try:
        obj = json.loads(s)
        if isinstance(obj, dict):
            return obj, "json"
        if isinstance(obj, list) and len(obj) == 1 and isinstance(obj[0], dict):
            return obj[0], "json"
    except (json.JSONDecodeError, RecursionError):
        pass
    candidates: list[tuple[str, str]] = []
    for m in _FENCE_RE.finditer(s):
        candidates.append((m.group(1).strip(), "fenced"))
    if s.startswith("```"):  # unterminated fence (truncated answer)
        candidates.append((s.strip("`").removeprefix("json").strip(), "fenced"))
    for span in _balanced_objects(s):
        candidates.append((span, "embedded"))
    for cand, how in candidates:
        try:
            obj = json.loads(cand)
        except (json.JSONDecodeError, RecursionError):
            try:
                obj = _lenient_loads(cand)
                how = "lenient"
            except (json.JSONDecodeError, ValueError, SyntaxError, RecursionError):
                continue
        if isinstance(obj, dict):
            return obj, how
    if "{" in s and not _balanced_objects(s):
        raise ParseError("truncated JSON (unbalanced braces)")
    raise ParseError("no JSON object found in answer")


# ---- validation + normalisation ------------------------------------------------------------
def _get(obj: dict[str, Any], *names: str) -> Any:
    for n in names:  # fast path: the exact key (structured outputs always use it)
        if n in obj:
            return obj[n]
    lower = {str(k).strip().lower(): v for k, v in obj.items()}
    for n in names:
        if n in lower:
            return lower[n]
    return None


def _number(value: Any, name: str) -> float:
    if isinstance(value, bool) or value is None:
        raise ParseError(f"{name} is not a number: {value!r}")
    try:
        x = float(str(value).strip()) if isinstance(value, str) else float(value)
    except (TypeError, ValueError):
        raise ParseError(f"{name} is not a number: {str(value)[:40]!r}") from None
    if not math.isfinite(x):
        raise ParseError(f"{name} is not finite")
    return x


def _va_value(value: Any, name: str) -> float:
    x = _number(value, name)
    if abs(x) > 1.0 + VA_CLAMP_TOLERANCE:
        raise ParseError(f"{name} {x:g} outside [-1, 1]")
    return max(-1.0, min(1.0, x))


def _au_id(key: Any) -> int:
    m = re.fullmatch(r"\s*(?:au)?\s*_?(\d+)\s*[a-e]?\s*", str(key), flags=re.IGNORECASE)
    if not m:
        raise ParseError(f"bad AU id {str(key)[:20]!r}")
    au = int(m.group(1))
    if au not in AU_CATALOGUE:
        raise ParseError(f"AU{au} is not in the AU catalogue")
    return au


def _au_entry(value: Any) -> tuple[float, str | None]:
    """One AU's answer -> (presence probability, intensity code or None)."""
    if isinstance(value, bool):
        return (1.0 if value else 0.0), None
    if isinstance(value, (int, float)):
        p = _number(value, "AU probability")
        if not 0.0 <= p <= 1.0:
            raise ParseError(f"AU probability {p:g} outside [0, 1]")
        return p, None
    if isinstance(value, str):
        code = value.strip().lower()
        if code in _INTENSITY_P:
            return _INTENSITY_P[code], code.upper()
        if code in ("present", "yes", "true"):
            return 1.0, None
        if code in ("absent", "no", "false"):
            return 0.0, None
        return _au_entry(_number(value, "AU probability"))
    if isinstance(value, dict):
        raw_p = _get(value, "p", "prob", "probability", "presence", "present", "confidence")
        inten = _get(value, "intensity", "level")
        code = str(inten).strip().upper() if inten is not None else None
        if code is not None and code.lower() not in _INTENSITY_P:
            raise ParseError(f"bad AU intensity {code[:10]!r}")
        if raw_p is None:
            if code is None:
                raise ParseError("AU entry without probability or intensity")
            return _INTENSITY_P[code.lower()], code
        p, _ = _au_entry(raw_p)
        return p, code
    raise ParseError(f"bad AU entry {str(value)[:30]!r}")


def _parse_aus(value: Any) -> tuple[dict[int, float], dict[int, str]]:
    """AUs as an object keyed by id, a list of entries, or a list of present ids.

    AUs the answer does not mention are absent (probability 0).
    """
    probs: dict[int, float] = {}
    intensity: dict[int, str] = {}
    if isinstance(value, dict):
        for k, v in value.items():
            au = _au_id(k)
            probs[au], code = _au_entry(v)
            if code:
                intensity[au] = code
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, dict):
                au = _au_id(_get(item, "au", "id", "action_unit", "name"))
                probs[au], code = _au_entry({k: v for k, v in item.items()
                                             if str(k).lower() not in ("au", "id", "action_unit", "name")}
                                            or True)
                if code:
                    intensity[au] = code
            else:
                probs[_au_id(item)] = 1.0
    else:
        raise ParseError("aus is neither an object nor a list")
    return {au: probs.get(au, 0.0) for au in AU_CATALOGUE}, intensity


def _parse_expression_probs(value: Any) -> dict[str, float] | None:
    if not isinstance(value, dict):
        return None
    out: dict[str, float] = {}
    for k, v in value.items():
        e = normalise_expression(str(k))
        if e is None:
            continue
        p = _number(v, f"probability of {k}")
        if p < 0:
            raise ParseError(f"negative probability for {e}")
        out[e] = out.get(e, 0.0) + p
    total = sum(out.values())
    if total <= 0:
        return None
    return {e: out.get(e, 0.0) / total for e in EXPRESSIONS}


def labels_from_object(obj: dict[str, Any], missing: Sequence[str]) -> ParsedAnswer:
    """Validate a decoded answer object and normalise the requested granularities."""
    expression = valence = arousal = None
    aus: dict[int, float] | None = None
    probs = None
    intensity: dict[int, str] = {}
    if "expression" in missing:
        raw = _get(obj, "expression", "emotion", "label", "facial_expression")
        probs = _parse_expression_probs(_get(obj, "expression_probs", "probabilities", "probs"))
        if raw is None and probs:
            raw = max(probs, key=probs.__getitem__)
        if raw is None:
            raise ParseError("missing field: expression")
        expression = normalise_expression(str(raw))
        if expression is None:
            raise ParseError(f"unknown expression {str(raw)[:30]!r}")
    if "va" in missing:
        va = _get(obj, "va", "valence_arousal")
        v_raw = _get(obj, "valence")
        a_raw = _get(obj, "arousal")
        if isinstance(va, dict):
            v_raw = _get(va, "valence", "v") if v_raw is None else v_raw
            a_raw = _get(va, "arousal", "a") if a_raw is None else a_raw
        elif isinstance(va, (list, tuple)) and len(va) == 2:
            v_raw, a_raw = va
        if v_raw is None or a_raw is None:
            raise ParseError("missing field: valence/arousal")
        valence = _va_value(v_raw, "valence")
        arousal = _va_value(a_raw, "arousal")
    if "aus" in missing:
        raw_aus = _get(obj, "aus", "action_units", "au")
        if raw_aus is None:
            raise ParseError("missing field: aus")
        aus, intensity = _parse_aus(raw_aus)
    rationale = _get(obj, "rationale", "reason", "reasoning", "explanation")
    return ParsedAnswer(Labels(expression, valence, arousal, aus), probs,
                        str(rationale).strip()[:2000] if rationale is not None else "",
                        au_intensity=intensity)


def parse_annotation(text: str | None, missing: Sequence[str]) -> ParsedAnswer:
    """Extract + validate + normalise one annotation answer; raises :class:`ParseError`."""
    obj, how = extract_json(text)
    parsed = labels_from_object(obj, missing)
    parsed.extraction = how
    return parsed


def parse_verdict(text: str | None, under_review: Sequence[str]) -> ParsedVerdict:
    """Extract + validate one verification answer; raises :class:`ParseError`."""
    obj, _ = extract_json(text)
    raw = _get(obj, "verdict", "decision")
    verdict = str(raw).strip().lower() if raw is not None else ""
    verdict = {"accepted": "accept", "corrected": "correct", "rejected": "reject"}.get(verdict, verdict)
    if verdict not in ("accept", "correct", "reject"):
        raise ParseError(f"bad verdict {str(raw)[:20]!r}")
    reasons_raw = _get(obj, "reasons", "reason")
    if isinstance(reasons_raw, str):
        reasons = [reasons_raw]
    elif isinstance(reasons_raw, list):
        reasons = [str(r) for r in reasons_raw]
    else:
        reasons = []
    corrected = None
    if verdict == "correct":
        c = _get(obj, "corrected", "correction")
        if not isinstance(c, dict):
            raise ParseError("verdict is correct but no corrected labels given")
        present = [g for g in under_review
                   if (g == "expression" and _get(c, "expression") is not None)
                   or (g == "va" and _get(c, "valence") is not None)
                   or (g == "aus" and _get(c, "aus") is not None)]
        if not present:
            raise ParseError("corrected labels contain none of the granularities under review")
        corrected = labels_from_object(c, present).labels
    return ParsedVerdict(verdict, reasons, corrected)  # type: ignore[arg-type]


# ---- repair --------------------------------------------------------------------------------
def repair_messages(messages: Sequence[dict[str, Any]], bad_answer: str, error: str,
                    schema: dict[str, Any]) -> list[dict[str, Any]]:
    """The follow-up conversation asking the model to fix its answer (one attempt only)."""
    return [
        *messages,
        {"role": "assistant", "content": bad_answer[:4000]},
        {"role": "user", "content": (
            f"Your answer could not be used: {error}. Reply again with only one valid JSON object "
            "(no code fences, no other text) that follows this JSON schema exactly:\n"
            + json.dumps(schema, separators=(",", ":")))},
    ]
