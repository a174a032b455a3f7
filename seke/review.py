"""Human review of abstained faces through Label Studio, and the way back in as knowledge.

Round trip (no face ever changes id, so nothing already sampled is paid for twice):

1. :func:`export_tasks` turns the abstained rows of a ``verified_labels`` partition plus their
   crops from ``raw_faces`` into Label Studio *import* JSON: one task per face with
   ``data.image`` (a ``data:image/png;base64`` URL, or a path served by Label Studio's local
   file storage) and ``predictions`` pre-filled with the annotator's candidates at the three
   granularities (choices for the expression, numbers for valence/arousal, choices for AUs).
   :func:`labeling_config` is the matching project configuration (XML).
2. Reviewers correct or confirm in Label Studio and export the project as JSON.
3. :func:`import_export` reads that *export* JSON (``annotations[].result``), validates every
   answer against the taxonomy (a bad annotation becomes an error, never a failed batch),
   takes every reviewer's annotation as a vote and returns the majority consensus
   (:mod:`seke.review_agreement`: ties sent back, contradictory answers of one reviewer and
   tasks for unknown faces reported, not merged) in the ``review_labels`` table layout
   (:data:`REVIEW_LABELS`), one partition per ``source``/``batch``, with Krippendorff's alpha
   per granularity.
4. ``raw_faces`` merges them with :func:`merge_review_labels` into its ``known_*`` columns, so the
   next materialization treats them like any other human label: the knowledge prompt injects
   them, SV-UAMC only samples what is still missing, and FEID/FEAB carry ``human`` origin.
   Faces a reviewer marked unusable are dropped to quarantine (:func:`unusable_ids`).

Label Studio formats: https://labelstud.io/guide/tasks (import, predictions) and
https://labelstud.io/guide/export#Label-Studio-JSON-format-of-annotated-tasks (export).
"""

from __future__ import annotations

import base64
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Collection, Iterable, Mapping
from xml.sax.saxutils import quoteattr

import polars as pl
import pyarrow as pa

from seke.quarantine import REVIEW_CONTRADICTORY, REVIEW_INVALID, REVIEW_UNKNOWN_FACE
from seke.review_agreement import VA_TOLERANCE, Agreement, Annotation, FaceConsensus, agreement, consensus
from seke.taxonomy import AU_CATALOGUE, AU_NAMES, EXPRESSIONS, normalise_expression

#: Names of the Label Studio controls (``from_name``) and the image object (``to_name``).
IMAGE, EXPRESSION, VALENCE, AROUSAL, AUS, QUALITY, NOTES = (
    "image", "expression", "valence", "arousal", "aus", "quality", "notes")
USABLE, UNUSABLE = "usable", "unusable"
#: AU choice meaning "AUs were judged and none is present" (no choice at all = not judged).
NO_AU = "none"

#: Layout of the ``review_labels`` lake table (partition columns source/batch live in the path).
#: One row per reviewed face: the reviewers' consensus (:mod:`seke.review_agreement`). Null label =
#: no reviewer answered that granularity, or it is undecided (listed in ``sent_back``: a tie, sent
#: for one more review); ``aus`` [] = "no AU present"; ``unusable`` null = usability tied.
#: ``reviewer`` lists every reviewer of the face (comma-separated), ``task_id``/``annotation_id``/
#: ``reviewed_at`` are the newest annotation's, ``lead_time_s`` the reviewers' total time.
REVIEW_LABELS = pa.schema([
    ("face_id", pa.string()),
    ("expression", pa.string()),
    ("valence", pa.float64()),
    ("arousal", pa.float64()),
    ("aus", pa.list_(pa.int32())),
    ("unusable", pa.bool_()),
    ("notes", pa.string()),
    ("reviewer", pa.string()),
    ("task_id", pa.int64()),
    ("annotation_id", pa.int64()),
    ("reviewed_at", pa.string()),
    ("lead_time_s", pa.float64()),
    ("n_reviewers", pa.int32()),
    ("sent_back", pa.list_(pa.string())),
])


def au_choice(au: int) -> str:
    return f"AU{au}"


# ---- export ------------------------------------------------------------------------------------

def labeling_config(step: float = 0.05) -> str:
    """Label Studio labeling config: image, expression (single choice), valence and arousal
    (numbers in [-1, 1]), AUs (multiple choice, FACS names as hints), usability, notes."""
    expr = "\n".join(f'    <Choice value="{e}"/>' for e in EXPRESSIONS)
    aus = "\n".join(f'    <Choice value="{au_choice(a)}" hint={quoteattr(AU_NAMES[a])}/>'
                    for a in AU_CATALOGUE)
    return f"""<View>
  <Image name="{IMAGE}" value="$image" zoom="true"/>
  <Header value="Expression"/>
  <Choices name="{EXPRESSION}" toName="{IMAGE}" choice="single" showInline="true">
{expr}
  </Choices>
  <Header value="Valence (-1 unpleasant … +1 pleasant) and arousal (-1 calm … +1 excited)"/>
  <Number name="{VALENCE}" toName="{IMAGE}" min="-1" max="1" step="{step}"/>
  <Number name="{AROUSAL}" toName="{IMAGE}" min="-1" max="1" step="{step}"/>
  <Header value="Action units present (choose 'none' if the face shows none)"/>
  <Choices name="{AUS}" toName="{IMAGE}" choice="multiple" showInline="true">
    <Choice value="{NO_AU}" hint="no action unit present"/>
{aus}
  </Choices>
  <Choices name="{QUALITY}" toName="{IMAGE}" choice="single" showInline="true">
    <Choice value="{USABLE}"/>
    <Choice value="{UNUSABLE}" hint="no face, occluded, or not judgeable"/>
  </Choices>
  <TextArea name="{NOTES}" toName="{IMAGE}" placeholder="why (optional)" maxSubmissions="1"/>
</View>
"""


def _num(v: Any) -> float | None:
    if v is None:
        return None
    f = float(v)
    return None if math.isnan(f) else f


def _predictions(row: Mapping[str, Any], model_version: str) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = []
    if row.get("expression") in EXPRESSIONS:
        result.append({"from_name": EXPRESSION, "to_name": IMAGE, "type": "choices",
                       "value": {"choices": [row["expression"]]}})
    for name in (VALENCE, AROUSAL):
        v = _num(row.get(name))
        if v is not None:
            result.append({"from_name": name, "to_name": IMAGE, "type": "number",
                           "value": {"number": round(max(-1.0, min(1.0, v)), 3)}})
    if row.get("aus") is not None:
        choices = [au_choice(a) for a in row["aus"] if a in AU_NAMES] or [NO_AU]
        result.append({"from_name": AUS, "to_name": IMAGE, "type": "choices",
                       "value": {"choices": choices}})
    if not result:
        return []
    score = _num(row.get("expression_confidence"))
    pred: dict[str, Any] = {"model_version": model_version, "result": result}
    if score is not None:
        pred["score"] = score
    return [pred]


def _image_ref(face_id: str, png: bytes, image_mode: str, image_dir: Path | None,
               url_prefix: str) -> str:
    if image_mode == "data_url":
        return "data:image/png;base64," + base64.b64encode(png).decode("ascii")
    if image_dir is None:
        raise ValueError(f"image_mode={image_mode!r} needs image_dir")
    image_dir.mkdir(parents=True, exist_ok=True)
    path = image_dir / f"{face_id}.png"
    if not path.exists():
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(png)
        tmp.replace(path)
    if image_mode == "local_files":  # Label Studio local file storage (document root = image_dir's parent)
        return f"/data/local-files/?d={image_dir.name}/{path.name}"
    if image_mode == "url_prefix":
        return f"{url_prefix.rstrip('/')}/{path.name}"
    raise ValueError(f"unknown image_mode {image_mode!r} (data_url | local_files | url_prefix)")


def export_tasks(labels: pl.DataFrame, faces: pl.DataFrame, *, source: str, batch: str,
                 model_version: str = "seke", image_mode: str = "data_url",
                 image_dir: Path | None = None, url_prefix: str = "",
                 statuses: Iterable[str] = ("abstained",),
                 label_issues: bool = True, reasons: Mapping[str, str] | None = None,
                 blind: Collection[str] = ()) -> list[dict[str, Any]]:
    """Label Studio import tasks for the faces of ``labels`` whose status is in ``statuses``,
    the suspected human-label errors, and the faces of ``reasons`` (face id -> why: a QA
    sample, a tie sent back); ``data.review_reason`` says which.

    ``labels`` is a verified_labels partition, ``faces`` the matching raw_faces partition (for
    ``crop_png``). Faces without a crop are skipped (they cannot be reviewed). The candidate
    labels, even of abstained faces, become predictions the reviewer only has to correct;
    faces in ``blind`` get none, because a QA review must not be anchored on the answer it checks.
    """
    reasons = dict(reasons or {})
    sel = pl.col("status").is_in(list(statuses)) | pl.col("face_id").is_in(list(reasons))
    if label_issues and "label_issue" in labels.columns:   # suspected human-label errors, with evidence
        sel = sel | pl.col("label_issue").fill_null(False)
    want = labels.filter(sel)
    crops = {r["face_id"]: r["crop_png"] for r in
             faces.select("face_id", "crop_png").iter_rows(named=True) if r["crop_png"]}
    blind = set(blind)
    tasks = []
    for row in want.sort("face_id").iter_rows(named=True):
        png = crops.get(row["face_id"])
        if png is None:
            continue
        why = reasons.get(row["face_id"]) or ("label_issue" if row.get("label_issue") else row["status"])
        data = {
            IMAGE: _image_ref(row["face_id"], png, image_mode, image_dir, url_prefix),
            "face_id": row["face_id"], "source": source, "batch": batch,
            "subject_id": row.get("subject_id") or "",
            "review_reason": why,
            "abstain_reason": row.get("abstain_reason") or "",
            "consistency_flags": ",".join(row.get("consistency_flags") or []),
            "label_issue_evidence": row.get("label_issue_evidence") or "",
        }
        preds = [] if row["face_id"] in blind else _predictions(row, model_version)
        tasks.append({"data": data, "predictions": preds})
    return tasks


def write_tasks(tasks: list[dict[str, Any]], path: Path) -> Path:
    """Write import JSON atomically (Label Studio: Import → upload this file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(tasks, ensure_ascii=False), encoding="utf-8")
    tmp.replace(path)
    return path


# ---- import ------------------------------------------------------------------------------------

@dataclass
class ReviewError:
    """One rejected task or annotation; ``reason`` is its quarantine reason."""

    task_id: Any
    face_id: str | None
    error: str
    source: str | None = None
    batch: str | None = None
    reason: str = REVIEW_INVALID
    reviewer: str | None = None
    annotation_id: int | None = None

    def detail(self) -> str:
        who = [f"annotation {self.annotation_id}" if self.annotation_id is not None else "",
               f"by {self.reviewer}" if self.reviewer else ""]
        prefix = " ".join(w for w in who if w)
        return f"{prefix}: {self.error}" if prefix else self.error


@dataclass
class ReviewImport:
    """Consensus labels per (source, batch) partition, the agreement behind them, and every
    rejected task or annotation (invalid, unknown face, contradictory) with its reason."""

    partitions: dict[tuple[str, str], pl.DataFrame] = field(default_factory=dict)
    errors: list[ReviewError] = field(default_factory=list)
    agreement: dict[tuple[str, str], dict[str, Agreement]] = field(default_factory=dict)

    @property
    def n_labels(self) -> int:
        return sum(f.height for f in self.partitions.values())


def _reviewer(ann: Mapping[str, Any]) -> str:
    who = ann.get("completed_by")
    if isinstance(who, Mapping):
        return str(who.get("email") or who.get("id") or "")
    return "" if who is None else str(who)


def parse_annotation(result: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Label values from one annotation's ``result`` list; raises ValueError on bad values."""
    out: dict[str, Any] = {"expression": None, "valence": None, "arousal": None, "aus": None,
                           "unusable": False, "notes": None}
    for item in result:
        name, value = item.get("from_name"), item.get("value") or {}
        if name == EXPRESSION:
            choices = value.get("choices") or []
            if len(choices) != 1:
                raise ValueError(f"expression needs exactly one choice, got {choices}")
            e = normalise_expression(choices[0])
            if e is None:
                raise ValueError(f"unknown expression {choices[0]!r}")
            out["expression"] = e
        elif name in (VALENCE, AROUSAL):
            v = _num(value.get("number"))
            if v is None or not -1.0 <= v <= 1.0:
                raise ValueError(f"{name} {value.get('number')!r} outside [-1, 1]")
            out[name] = v
        elif name == AUS:
            aus = []
            choices = value.get("choices") or []
            if NO_AU in choices and len(choices) > 1:
                raise ValueError(f"AU choice {NO_AU!r} combined with AUs {choices}")
            for c in choices:
                if c == NO_AU:
                    continue
                s = str(c).strip().upper().removeprefix("AU")
                if not s.isdigit() or int(s) not in AU_NAMES:
                    raise ValueError(f"unknown action unit {c!r}")
                aus.append(int(s))
            out["aus"] = sorted(set(aus))
        elif name == QUALITY:
            out["unusable"] = UNUSABLE in (value.get("choices") or [])
        elif name == NOTES:
            text = value.get("text") or []
            out["notes"] = " ".join(text) if isinstance(text, list) else str(text)
    if (out["valence"] is None) != (out["arousal"] is None):
        raise ValueError("valence and arousal must be given together")
    return out


def import_exports(paths: Iterable[str | Path], *,
                   known_faces: Mapping[tuple[str, str], Collection[str]] | None = None,
                   va_tolerance: float = VA_TOLERANCE) -> ReviewImport:
    """Human labels from several export files (e.g. a drop folder): every annotation of a face
    in any file is a vote (the same annotation id in two files counts once, newest version).
    A file that is not valid JSON is one error."""
    tasks: list[Mapping[str, Any]] = []
    errors: list[ReviewError] = []
    for p in paths:
        try:
            loaded = json.loads(Path(p).read_text(encoding="utf-8"))
            if not isinstance(loaded, list):
                raise ValueError("a Label Studio JSON export is a list of tasks")
            tasks += loaded
        except (OSError, ValueError) as exc:
            errors.append(ReviewError(str(p), None, f"unreadable export: {exc}"))
    result = import_export(tasks, known_faces=known_faces, va_tolerance=va_tolerance)
    result.errors[:0] = errors
    return result


def _annotation(face_id: str, task_id: Any, ann: Mapping[str, Any], labels: dict[str, Any]) -> Annotation:
    return Annotation(face_id=face_id, reviewer=_reviewer(ann), labels=labels,
                      annotation_id=None if ann.get("id") is None else int(ann["id"]),
                      task_id=None if task_id is None else int(task_id),
                      reviewed_at=str(ann.get("updated_at") or ann.get("created_at") or ""),
                      lead_time_s=_num(ann.get("lead_time")))


def _row(face: FaceConsensus, anns: list[Annotation]) -> dict[str, Any]:
    """A ``review_labels`` row: the consensus, who reviewed, and the newest annotation's ids."""
    newest = max(anns, key=lambda a: (a.reviewed_at, a.annotation_id or 0))
    notes = list(dict.fromkeys(a.labels["notes"] for a in anns if a.labels.get("notes")))
    times = [a.lead_time_s for a in anns if a.lead_time_s is not None]
    return {"face_id": face.face_id, "expression": face.expression, "valence": face.valence,
            "arousal": face.arousal, "aus": face.aus, "unusable": face.unusable,
            "notes": " | ".join(notes) or None, "reviewer": ",".join(face.reviewers),
            "task_id": newest.task_id, "annotation_id": newest.annotation_id,
            "reviewed_at": newest.reviewed_at, "lead_time_s": sum(times) if times else None,
            "n_reviewers": len(face.reviewers), "sent_back": face.sent_back}


def import_export(export: list[Mapping[str, Any]] | str | Path, *,
                  known_faces: Mapping[tuple[str, str], Collection[str]] | None = None,
                  va_tolerance: float = VA_TOLERANCE) -> ReviewImport:
    """Consensus labels from a Label Studio JSON export (a list of tasks, or a path to one).

    Every non-cancelled annotation of a task is one reviewer's vote
    (:mod:`seke.review_agreement`: majority per granularity, ties sent back, contradictory
    answers of one reviewer excluded). Tasks with no annotation are skipped silently (not
    reviewed yet). Reported, never merged: a task whose data lacks its keys, an annotation that
    fails validation (``review_invalid``), a task for a face id that ``known_faces`` does not
    list for its partition (``review_unknown_face``; partitions absent from ``known_faces`` are
    not checked), and contradictory answers (``review_contradictory``).
    """
    if isinstance(export, (str, Path)):
        export = json.loads(Path(export).read_text(encoding="utf-8"))
    result = ReviewImport()
    # partition -> face -> annotation key -> newest version of that annotation
    seen: dict[tuple[str, str], dict[str, dict[Any, Annotation]]] = {}
    for t_index, task in enumerate(export):
        data = task.get("data") or {}
        face_id, task_id = data.get("face_id"), task.get("id")
        where = {"source": data.get("source"), "batch": data.get("batch")}
        if not face_id or not data.get("source") or not data.get("batch"):
            result.errors.append(ReviewError(task_id, face_id, "task data lacks face_id/source/batch",
                                             **where))
            continue
        anns = [a for a in task.get("annotations") or [] if not a.get("was_cancelled")]
        if not anns:
            continue
        key = (str(data["source"]), str(data["batch"]))
        if known_faces is not None and key in known_faces and face_id not in known_faces[key]:
            who = sorted({_reviewer(a) for a in anns})
            result.errors.append(ReviewError(
                task_id, face_id, f"face id unknown in {key[0]}/{key[1]}: {len(anns)} annotation(s) "
                f"by {who} not merged", reason=REVIEW_UNKNOWN_FACE, **where))
            continue
        faces = seen.setdefault(key, {}).setdefault(face_id, {})
        for a_index, ann in enumerate(anns):
            try:
                labels = parse_annotation(ann.get("result") or [])
            except (ValueError, TypeError) as exc:
                result.errors.append(ReviewError(
                    task_id, face_id, str(exc), reviewer=_reviewer(ann) or None,
                    annotation_id=None if ann.get("id") is None else int(ann["id"]), **where))
                continue
            parsed = _annotation(face_id, task_id, ann, labels)
            ident = parsed.annotation_id if parsed.annotation_id is not None else ("task", t_index, a_index)
            prev = faces.get(ident)
            if prev is None or parsed.reviewed_at >= prev.reviewed_at:
                faces[ident] = parsed  # one annotation edited in place: its newest version counts
    for key, by_face in seen.items():
        rows, decided = [], []
        for face_id in sorted(by_face):
            anns = list(by_face[face_id].values())
            if not anns:
                continue
            face, contradictions = consensus(face_id, anns, va_tolerance)
            result.errors += [ReviewError(None, c.face_id, c.detail(), source=key[0], batch=key[1],
                                          reason=REVIEW_CONTRADICTORY, reviewer=c.reviewer or None)
                              for c in contradictions]
            rows.append(_row(face, anns))
            decided.append(face)
        if not rows:
            continue
        frame = pl.from_arrow(pa.Table.from_pylist(rows, schema=REVIEW_LABELS))
        assert isinstance(frame, pl.DataFrame)
        result.partitions[key] = frame.sort("face_id")
        result.agreement[key] = agreement(decided)
    return result


# ---- back into the graph -----------------------------------------------------------------------

def merge_review_labels(raw_faces: pl.DataFrame, review: pl.DataFrame) -> pl.DataFrame:
    """``raw_faces`` with reviewed labels written into ``known_*`` (reviewer answers win over
    the source's labels granularity by granularity; unanswered granularities keep the source's).

    face_id, crops and every other column are untouched, so prompts for granularities that
    stay missing, and their cached samples, are unchanged.
    """
    if review.height == 0:
        return raw_faces
    rv = review.filter(~pl.col("unusable").fill_null(False)).select(
        "face_id",
        pl.col("expression").alias("_r_expression"),
        pl.col("valence").alias("_r_valence"),
        pl.col("arousal").alias("_r_arousal"),
        pl.col("aus").alias("_r_aus"))
    merged = raw_faces.join(rv, on="face_id", how="left")
    aus_dtype = raw_faces.schema["known_aus"]
    if "invalid_labels" in merged.columns:
        # A reviewer's answer replaces an invalid manifest label: no longer withheld.
        answered = pl.concat_list(
            pl.when(pl.col("_r_expression").is_not_null()).then(pl.lit("expression")),
            pl.when(pl.col("_r_valence").is_not_null() & pl.col("_r_arousal").is_not_null()).then(pl.lit("va")),
            pl.when(pl.col("_r_aus").is_not_null()).then(pl.lit("aus")))
        merged = merged.with_columns(pl.col("invalid_labels").list.set_difference(answered.list.drop_nulls())
                                     .alias("invalid_labels"))
    return merged.with_columns(
        pl.coalesce("_r_expression", "known_expression").alias("known_expression"),
        pl.coalesce("_r_valence", "known_valence").alias("known_valence"),
        pl.coalesce("_r_arousal", "known_arousal").alias("known_arousal"),
        pl.coalesce(pl.col("_r_aus").cast(aus_dtype), "known_aus").alias("known_aus"),
    ).drop("_r_expression", "_r_valence", "_r_arousal", "_r_aus").select(raw_faces.columns)


def unusable_ids(review: pl.DataFrame) -> list[str]:
    """Faces a reviewer marked unusable (raw_faces should quarantine them: ``review_unusable``)."""
    if review.height == 0:
        return []
    return review.filter(pl.col("unusable").fill_null(False))["face_id"].to_list()
