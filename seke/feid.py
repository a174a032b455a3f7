"""FEID: instruction-tuning records built from accepted labels.

Per accepted face on the FEID side of the benchmark split (:func:`seke.feab.split_benchmark`),
one record per granularity that has a label (expression, va, aus) and one ``combined`` record
("describe this person's emotional state") whose response carries a short rationale citing the
AU evidence, the expression and the valence–arousal reading.

Why several phrasings: a model tuned on one fixed wording learns the wording. Each task has a few
instruction/response templates; the template for a face is a hash of ``(face_id, task)``, so
records are reproducible and re-materializing never reshuffles them. Templates are versioned
(:data:`TEMPLATE_VERSION`): change the text → bump the version → new ``record_id`` values.

Label origin and confidence are kept per record (``origin`` = weakest origin among the labels
the record uses; ``confidence`` = the lowest of their confidences, 1.0 for human labels), so a
user can filter, e.g., to human + verified labels only.
"""

from __future__ import annotations

import hashlib

import polars as pl

from seke.feab import SPLIT_COLUMN, assign_split, prepare_faces, stable_hash
from seke.knowledge import EMFACS_PROTOTYPES, VA_REGIONS_V1
from seke.schemas import FEID, frame_from_rows
from seke.taxonomy import AU_NAMES, normalise_expression

TEMPLATE_VERSION = "feid-v1"

#: Origin strength, strongest first; a record's origin is the weakest of the labels it uses.
ORIGIN_RANK = {"human": 0, "verified": 1, "generated": 2, "derived": 3}

#: (instruction, response) templates per task. Response fields: {expression}, {valence},
#: {arousal}, {va_words}, {au_list}, {rationale}.
TEMPLATES: dict[str, tuple[tuple[str, str], ...]] = {
    "expression": (
        ("What facial expression does this person show?", "The person shows {expression}."),
        ("Classify the facial expression in this image into one of: neutral, happiness, sadness, "
         "surprise, fear, disgust, anger, contempt.", "{expression}"),
        ("Which emotion is expressed on this face?", "This face expresses {expression}."),
        ("Look at the face and name its expression.", "Expression: {expression}."),
    ),
    "va": (
        ("Estimate the valence and arousal of this person's expression, each between -1 and 1.",
         "Valence {valence}, arousal {arousal}."),
        ("How pleasant and how activated does this person look? Give valence and arousal in [-1, 1].",
         "The person looks {va_words}: valence {valence}, arousal {arousal}."),
        ("Rate this face on the valence-arousal circumplex.",
         "valence={valence}, arousal={arousal}"),
    ),
    "aus": (
        ("Which facial action units (FACS AUs) are active on this face?", "{au_list}"),
        ("List the FACS action units you can see on this face.", "Active action units: {au_list}."),
        ("Detect the facial action units present in this image.", "Present AUs: {au_list}."),
    ),
    "combined": (
        ("Describe this person's emotional state.", "{rationale}"),
        ("What is this person feeling, and what in their face shows it?", "{rationale}"),
        ("Analyse the emotion on this face: expression, valence-arousal and action units.",
         "{rationale}"),
    ),
}

_EXPRESSION_ADJ = {
    "neutral": "neutral", "happiness": "happy", "sadness": "sad", "surprise": "surprised",
    "fear": "fearful", "disgust": "disgusted", "anger": "angry", "contempt": "contemptuous",
}


def choose_template(face_id: str, task: str) -> int:
    """Index of the template used for ``(face_id, task)`` — deterministic, spread uniformly."""
    return stable_hash(TEMPLATE_VERSION, face_id, task) % len(TEMPLATES[task])


def _signed(x: float) -> str:
    return f"{x:+.2f}"


def va_words(valence: float, arousal: float) -> str:
    """Plain-language reading of a VA point ("mildly pleasant and highly activated")."""
    def level(x: float) -> str:
        a = abs(x)
        return "slightly" if a < 0.25 else ("moderately" if a < 0.6 else "very")
    if abs(valence) < 0.1:
        v = "neither pleasant nor unpleasant"
    else:
        v = f"{level(valence)} {'pleasant' if valence > 0 else 'unpleasant'}"
    if abs(arousal) < 0.1:
        a = "neither calm nor activated"
    else:
        a = f"{level(arousal)} {'activated' if arousal > 0 else 'calm'}"
    return f"{v} and {a}"


def au_phrase(aus: list[int]) -> str:
    """"AU6 (cheek raiser), AU12 (lip corner puller)" or "none"."""
    if not aus:
        return "none"
    return ", ".join(f"AU{a} ({AU_NAMES.get(a, 'unknown')})" for a in aus)


def rationale(expression: str | None, valence: float | None, arousal: float | None,
              aus: list[int] | None) -> str:
    """A short rationale citing AU evidence, the expression and the VA reading.

    AU evidence is split into AUs of the expression's EMFACS prototype (support) and others;
    the VA sentence says whether the point lies in the expression's circumplex region.
    """
    parts: list[str] = []
    if expression is not None:
        parts.append(f"The person appears {_EXPRESSION_ADJ.get(expression, expression)} ({expression}).")
    if aus is not None:
        proto = set(EMFACS_PROTOTYPES.get(expression or "", ()))
        support = [a for a in aus if a in proto]
        other = [a for a in aus if a not in proto]
        if not aus:
            parts.append("No facial action unit is clearly active"
                         + (", which fits a neutral face." if expression == "neutral" else "."))
        else:
            if support and expression is not None:
                parts.append(f"Evidence: {au_phrase(support)}, typical of {expression}.")
            if other:
                lead = "Also active" if support else "Active action units"
                parts.append(f"{lead}: {au_phrase(other)}.")
    if valence is not None and arousal is not None:
        sentence = (f"Valence {_signed(valence)} and arousal {_signed(arousal)}: "
                    f"{va_words(valence, arousal)}")
        region = VA_REGIONS_V1.get(expression or "")
        if region is not None:
            sentence += (", consistent with " if region.contains(valence, arousal)
                         else ", somewhat outside the usual region of ") + f"{expression}"
        parts.append(sentence + ".")
    return " ".join(parts)


def _finite(x: object) -> float | None:
    if x is None:
        return None
    v = float(x)  # type: ignore[arg-type]
    return v if v == v else None


def face_labels(row: dict) -> dict[str, tuple]:
    """Labels used for FEID per granularity: ``{g: (value, origin, confidence)}``.

    A human label from the manifest wins over the pipeline's value (in audit mode the pipeline
    value of a hidden granularity is generated, while the human one is known).
    """
    out: dict[str, tuple] = {}
    he = normalise_expression(row.get("known_expression"))
    le = normalise_expression(row.get("expression"))
    if he is not None:
        out["expression"] = (he, "human", 1.0)
    elif le is not None:
        out["expression"] = (le, row.get("expression_origin") or "generated",
                             _finite(row.get("expression_confidence")))
    kv, ka = _finite(row.get("known_valence")), _finite(row.get("known_arousal"))
    lv, la = _finite(row.get("valence")), _finite(row.get("arousal"))
    if kv is not None and ka is not None:
        out["va"] = ((kv, ka), "human", 1.0)
    elif lv is not None and la is not None:
        out["va"] = ((lv, la), row.get("va_origin") or "generated", _finite(row.get("va_confidence")))
    if row.get("known_aus") is not None:
        out["aus"] = (sorted({int(a) for a in row["known_aus"]}), "human", 1.0)
    elif row.get("aus") is not None:
        out["aus"] = (sorted({int(a) for a in row["aus"]}), row.get("au_origin") or "generated",
                      _finite(row.get("au_confidence")))
    return out


def _weakest(origins: list[str]) -> str:
    return max(origins, key=lambda o: ORIGIN_RANK.get(o, len(ORIGIN_RANK)))


def _min_conf(confs: list[float | None]) -> float | None:
    known = [c for c in confs if c is not None]
    return min(known) if known else None


def records_for_face(row: dict) -> list[dict]:
    """FEID records (dicts in FEID column order, without image) for one prepared face row."""
    labels = face_labels(row)
    face_id = row["face_id"]
    expression = labels.get("expression", (None,))[0]
    va = labels.get("va", (None,))[0]
    valence, arousal = (va if va is not None else (None, None))
    aus = labels.get("aus", (None,))[0]
    fields = {
        "expression": expression or "",
        "valence": _signed(valence) if valence is not None else "",
        "arousal": _signed(arousal) if arousal is not None else "",
        "va_words": va_words(valence, arousal) if valence is not None and arousal is not None else "",
        "au_list": au_phrase(aus) if aus is not None else "",
        "rationale": rationale(expression, valence, arousal, aus),
    }
    tasks = [g for g in ("expression", "va", "aus") if g in labels]
    if labels:
        tasks.append("combined")
    out = []
    for task in tasks:
        used = list(labels) if task == "combined" else [task]
        idx = choose_template(face_id, task)
        instruction, response = TEMPLATES[task][idx]
        digest = hashlib.sha256(f"{face_id}|{task}|{TEMPLATE_VERSION}".encode()).hexdigest()[:16]
        out.append({
            "record_id": digest, "face_id": face_id, "task": task,
            "template_id": f"{task}/{idx}", "template_version": TEMPLATE_VERSION,
            "instruction": instruction, "response": response.format(**fields),
            "rationale": fields["rationale"] if task == "combined" else None,
            "expression": expression if "expression" in used else None,
            "valence": valence if "va" in used else None,
            "arousal": arousal if "va" in used else None,
            "aus": aus if "aus" in used else None,
            "origin": _weakest([labels[g][1] for g in used]),
            "confidence": _min_conf([labels[g][2] for g in used]),
        })
    return out


def build_feid(labels: pl.DataFrame, raw_faces: pl.DataFrame, *, fraction: float = 0.2,
               seed: int = 0, subjects: str = "hash") -> pl.DataFrame:
    """FEID records (FEID schema, plus ``source``/``batch`` when ``labels`` has them).

    Only accepted faces on the FEID side of the split; when ``labels`` has no ``bench_split``
    column the split is computed with ``fraction``/``seed`` (:func:`seke.feab.assign_split`, same
    defaults as :func:`seke.feab.build_feab`: subjects and near-duplicates on one side). Faces whose crop is missing from ``raw_faces`` are skipped.
    """
    if SPLIT_COLUMN not in labels.columns:
        labels = assign_split(labels, raw_faces, fraction=fraction, seed=seed, subjects=subjects)
    faces = prepare_faces(labels.filter(pl.col(SPLIT_COLUMN) == "feid"), raw_faces)
    extra = [c for c in ("source", "batch") if c in faces.columns]
    rows: list[dict] = []
    for row in faces.iter_rows(named=True):
        if row.get("crop_png") is None:
            continue
        for rec in records_for_face(row):
            rec["image_png"] = row["crop_png"]
            for c in extra:
                rec[c] = row[c]
            rows.append(rec)
    return frame_from_rows(rows, FEID, extra)
