"""FEAB: the held-out Facial Emotion Analysis Benchmark, and the FEID/FEAB split.

Why a split of its own: the benchmark must never share a person with the instruction data a
model is tuned on, otherwise a model can score by recognising identities instead of reading
expressions. So :func:`split_benchmark` assigns whole subjects to one side wherever
``subject_id`` is known, and stratifies by expression (faces without subjects) or approximately
(subjects: each subject's side is a hash of ``(seed, subject)``, so stratified in expectation
and identical in every batch). Every choice is a hash of ``(seed, key)``, so the split does not
depend on row order, and re-materializing one batch never moves faces of another.

:func:`build_feab` turns the benchmark faces into items for the three tasks with gold answers
whose origin is recorded: human labels first; a generated-and-verified label only where no human
label exists for that granularity, and then ``gold_flagged`` is true. Abstained faces are never
used (their labels failed the pipeline's own checks).
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from typing import Iterable

import polars as pl

from seke.near_dup import PHASH_THRESHOLD, earlier_sides, near_duplicate_groups_across
from seke.schemas import FEAB, frame_from_rows
from seke.taxonomy import AU_CATALOGUE, AU_NAMES, EXPRESSIONS, normalise_expression

SPLIT_COLUMN = "bench_split"
#: Optional column of near-duplicate group ids (seke.near_dup); a group is kept on one side.
GROUP_COLUMN = "near_dup_group"
#: Optional column: the side earlier-published near-duplicates of the face hold (seke.near_dup).
EARLIER_SIDE_COLUMN = "near_dup_earlier_side"
NO_EXPRESSION = "__none__"
#: Non-human label origins accepted as (flagged) benchmark gold by default: self-verified only.
DEFAULT_GOLD_ORIGINS: tuple[str, ...] = ("verified",)
FEAB_VERSION = "feab-v1"


def stable_hash(*parts: object) -> int:
    """A 64-bit hash that is the same on every machine and run (unlike ``hash()``)."""
    payload = "\x1f".join(str(p) for p in parts).encode()
    return int.from_bytes(hashlib.sha256(payload).digest()[:8], "big")


def unit_hash(*parts: object) -> float:
    """:func:`stable_hash` mapped to [0, 1)."""
    return stable_hash(*parts) / 2.0 ** 64


def _stratum(expression: object) -> str:
    e = normalise_expression(expression) if isinstance(expression, str) else None
    return e or NO_EXPRESSION


def split_benchmark(labels: pl.DataFrame, fraction: float = 0.2, seed: int = 0,
                    subjects: str = "hash") -> pl.DataFrame:
    """Add ``bench_split`` ("feid" | "feab") to every row of ``labels`` (one row per face).

    * Rows with a ``subject_id``, ``subjects="hash"`` (default): a subject goes to FEAB when
      the hash of ``(seed, subject)`` mapped to [0, 1) is below ``fraction``. All faces of a
      subject land on the same side in every batch, even when batches are split separately
      (which the per-batch assets do); each expression's FEAB share is ``fraction`` only in
      expectation (CK+, 91 subjects: 0.08–0.29 per class at 0.2, the "FEAB share per
      expression" line of ``PYTHONPATH=. python bench/products.py``).
    * ``subjects="greedy"``: subjects visited in hashed order join FEAB when that brings every
      expression's FEAB count closer to ``fraction`` of its faces — much tighter stratification,
      but a subject's side then depends on the other subjects in the frame, so use it only for
      a one-shot build over *all* faces of every subject (never per batch).
    * Rows without: within each expression stratum, the ``round(fraction * n)`` faces with the
      smallest hash of ``(seed, face_id)`` go to FEAB — exact stratification within the frame.

    Near-duplicates (column ``near_dup_group``, see :func:`with_near_dup_groups`) are kept on
    one side like subjects: faces joined by a subject or a group form one unit; a unit with
    subjects follows its lead subject (the one with the smallest hash — for a unit of one
    subject that is the rule above), a unit without is placed whole by the stratified rule.
    A unit without subjects in which a row carries ``near_dup_earlier_side`` (its group
    already published on that side by another batch of the source) is then moved whole to that
    side; the rule above is computed first, so faces without an earlier near-duplicate keep the
    side they would have without the lookup. Units with subjects keep the subject rule (the
    subject's earlier faces hold the same side); a near-duplicate across subjects that
    disagrees is left for the ``split_leakage`` check to block.

    The expression used for stratifying is the row's ``expression`` (missing → its own stratum).
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    if labels.height == 0:
        return labels.with_columns(pl.lit(None, dtype=pl.String).alias(SPLIT_COLUMN))
    face_ids = labels["face_id"].cast(pl.String).to_list()
    subject_ids = (labels["subject_id"].cast(pl.String).to_list() if "subject_id" in labels.columns
                   else [None] * labels.height)
    expressions = (labels["expression"].to_list() if "expression" in labels.columns
                   else [None] * labels.height)
    strata = [_stratum(e) for e in expressions]
    if subjects not in ("hash", "greedy"):
        raise ValueError(f"subjects must be 'hash' or 'greedy', got {subjects!r}")
    groups = (labels[GROUP_COLUMN].cast(pl.String).to_list() if GROUP_COLUMN in labels.columns
              else [None] * labels.height)
    units = _split_units(face_ids, subject_ids, groups)
    assignment: dict[int, str] = {}
    with_subjects = [(sorted(subs, key=lambda s: (stable_hash(seed, "subject", s), s))[0], rows)
                     for subs, rows in units if subs]

    if subjects == "hash":
        # A pure function of (seed, subject) keeps a subject on one side across every batch and
        # re-run (the assets split one batch at a time); stratification holds in expectation.
        # A unit joining several subjects (a near-duplicate across them) follows its lead
        # subject, the one with the smallest hash.
        for lead, rows in with_subjects:
            side = "feab" if unit_hash(seed, "subject", lead) < fraction else "feid"
            for i in rows:
                assignment[i] = side
    else:
        totals: dict[str, int] = defaultdict(int)
        for _, rows in with_subjects:
            for i in rows:
                totals[strata[i]] += 1
        chosen: dict[str, int] = defaultdict(int)
        for lead, rows in sorted(with_subjects, key=lambda u: (stable_hash(seed, "subject", u[0]), u[0])):
            counts: dict[str, int] = defaultdict(int)
            for i in rows:
                counts[strata[i]] += 1
            gain = sum(abs(chosen[e] - fraction * totals[e]) - abs(chosen[e] + c - fraction * totals[e])
                       for e, c in counts.items())
            side = "feab" if gain > 0 else "feid"
            if side == "feab":
                for e, c in counts.items():
                    chosen[e] += c
            for i in rows:
                assignment[i] = side

    # --- units without a subject (single faces, near-duplicate groups): stratified hash ------
    # A unit is keyed and stratified by its smallest face_id; units in hash order join FEAB
    # while the stratum's FEAB count is below round(fraction * faces). For single faces this is
    # exactly "the k faces with the smallest hash"; a group may overshoot by its size - 1.
    by_stratum: dict[str, list[tuple[str, list[int]]]] = defaultdict(list)
    faces_in: dict[str, int] = defaultdict(int)
    for subs, rows in units:
        if subs:
            continue
        key_row = min(rows, key=lambda i: face_ids[i])
        by_stratum[strata[key_row]].append((face_ids[key_row], rows))
        faces_in[strata[key_row]] += len(rows)
    for stratum, stratum_units in by_stratum.items():
        ordered = sorted(stratum_units, key=lambda u: (stable_hash(seed, "face", u[0]), u[0]))
        k = int(round(fraction * faces_in[stratum]))
        taken = 0
        for _, rows in ordered:
            side = "feab" if taken < k else "feid"
            if side == "feab":
                taken += len(rows)
            for i in rows:
                assignment[i] = side

    # --- units whose near-duplicates other batches already published: follow them ------------
    if EARLIER_SIDE_COLUMN in labels.columns:
        earlier = labels[EARLIER_SIDE_COLUMN].to_list()
        for subs, rows in units:
            votes = [earlier[i] for i in rows if earlier[i] in ("feid", "feab")]
            if votes and not subs:
                side = "feid" if votes.count("feid") >= votes.count("feab") else "feab"
                for i in rows:
                    assignment[i] = side

    return labels.with_columns(
        pl.Series(SPLIT_COLUMN, [assignment[i] for i in range(labels.height)], dtype=pl.String))


def _split_units(face_ids: list[str], subject_ids: list, groups: list) -> list[tuple[set[str], list[int]]]:
    """Rows joined by a shared subject or near-duplicate group (union–find): (subjects, rows)."""
    parent = list(range(len(face_ids)))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    first: dict[tuple[str, str], int] = {}
    for i, (s, g) in enumerate(zip(subject_ids, groups)):
        for kind, key in (("s", s), ("g", g)):
            if key is not None and str(key).strip():
                j = first.setdefault((kind, str(key).strip()), i)
                ri, rj = find(i), find(j)
                if ri != rj:
                    parent[max(ri, rj)] = min(ri, rj)
    units: dict[int, tuple[set[str], list[int]]] = {}
    for i in range(len(face_ids)):
        subs, rows = units.setdefault(find(i), (set(), []))
        rows.append(i)
        s = subject_ids[i]
        if s is not None and str(s).strip():
            subs.add(str(s).strip())
    return list(units.values())


def with_near_dup_groups(labels: pl.DataFrame, raw_faces: pl.DataFrame,
                         threshold: int = PHASH_THRESHOLD,
                         published: pl.DataFrame | None = None) -> pl.DataFrame:
    """``labels`` plus ``near_dup_group`` from the crops' perceptual hashes in ``raw_faces``
    (null for faces without a near-duplicate, or when ``raw_faces`` has no ``phash``), and
    ``near_dup_earlier_side``: the side that near-duplicates among ``published`` (faces other
    batches of the source already published: ``face_id``, ``phash``, ``bench_split``, see
    :func:`published_faces`) hold, null where there are none."""
    groups: dict[str, str] = {}
    sides: dict[str, str] = {}
    if "phash" in raw_faces.columns and labels.height:
        codes = dict(raw_faces.select("face_id", "phash").unique("face_id", keep="first").iter_rows())
        ids = labels["face_id"].cast(pl.String).to_list()
        earlier = _published_codes(published)
        groups = near_duplicate_groups_across(ids, [codes.get(f) for f in ids], earlier, threshold)
        if earlier:
            sides = earlier_sides(ids, groups, _published_sides(published))
    ids = labels["face_id"].to_list()
    return labels.with_columns(pl.Series(GROUP_COLUMN, [groups.get(f) for f in ids], dtype=pl.String),
                               pl.Series(EARLIER_SIDE_COLUMN, [sides.get(f) for f in ids], dtype=pl.String))


def _published_codes(published: pl.DataFrame | None) -> dict[str, str | None]:
    if published is None or not published.height:
        return {}
    return dict(published.select("face_id", "phash").unique("face_id", keep="first").iter_rows())


def _published_sides(published: pl.DataFrame | None) -> dict[str, str]:
    if published is None or not published.height:
        return {}
    return dict(published.select("face_id", SPLIT_COLUMN).unique("face_id", keep="first").iter_rows())


def published_faces(feid_ids: pl.DataFrame, feab_ids: pl.DataFrame, raw_faces: pl.DataFrame) -> pl.DataFrame:
    """Faces published by other batches: ``face_id``, ``phash`` (from ``raw_faces``) and the
    side (``bench_split``) whose table holds them. ``feid_ids``/``feab_ids`` have a
    ``face_id`` column (the published rows of those batches); a face in neither is not
    published (abstained, no gold) and binds nothing."""
    frames = [f.select(pl.col("face_id").cast(pl.String)).unique().with_columns(pl.lit(side).alias(SPLIT_COLUMN))
              for f, side in ((feid_ids, "feid"), (feab_ids, "feab")) if f.height and "face_id" in f.columns]
    if not frames or "phash" not in raw_faces.columns:
        return pl.DataFrame(schema={"face_id": pl.String, "phash": pl.String, SPLIT_COLUMN: pl.String})
    codes = raw_faces.select(pl.col("face_id").cast(pl.String), "phash").unique("face_id", keep="first")
    return pl.concat(frames).join(codes, on="face_id", how="left").select("face_id", "phash", SPLIT_COLUMN)


def assign_split(labels: pl.DataFrame, raw_faces: pl.DataFrame, *, fraction: float = 0.2,
                 seed: int = 0, subjects: str = "hash",
                 threshold: int = PHASH_THRESHOLD,
                 published: pl.DataFrame | None = None) -> pl.DataFrame:
    """The FEID/FEAB split of ``labels`` with near-duplicates (from ``raw_faces.phash``) kept
    together, and faces whose near-duplicates other batches already published (``published``,
    :func:`published_faces`) on their side: ``labels`` + ``near_dup_group`` +
    ``near_dup_earlier_side`` + ``bench_split``. FEID and FEAB both call it with the same
    defaults and ``published``, so each asset computes the same split."""
    return split_benchmark(with_near_dup_groups(labels, raw_faces, threshold, published),
                           fraction=fraction, seed=seed, subjects=subjects)


# ---- items -------------------------------------------------------------------------------

def expression_question() -> str:
    return ("Which facial expression does this person show? "
            f"Answer with exactly one of: {', '.join(EXPRESSIONS)}.")


def va_question() -> str:
    return ("Estimate this person's emotional valence (-1 very unpleasant … +1 very pleasant) and "
            "arousal (-1 very calm … +1 very excited). Answer as: valence=<number>, arousal=<number>.")


def au_options() -> list[str]:
    return [f"AU{a}" for a in AU_CATALOGUE]


def au_question() -> str:
    listing = "; ".join(f"AU{a} {AU_NAMES[a]}" for a in AU_CATALOGUE)
    return ("Which facial action units (FACS) are present on this face? "
            f"Answer with the list of present AUs among: {listing}.")


def _finite(x: object) -> float | None:
    if x is None:
        return None
    try:
        v = float(x)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return v if v == v else None


def _aus(x: object) -> list[int] | None:
    if x is None:
        return None
    return sorted({int(a) for a in x})  # type: ignore[union-attr]


def prepare_faces(labels: pl.DataFrame, raw_faces: pl.DataFrame) -> pl.DataFrame:
    """Accepted label rows joined with their crop and human labels from ``raw_faces``.

    Raw columns are prefixed ``raw_`` where they clash. Duplicated face ids in ``raw_faces``
    (the same crop in two batches) keep the first row, since the bytes are identical.
    """
    keep = ["face_id", "crop_png", "known_expression", "known_valence", "known_arousal",
            "known_aus", "subject_id"]
    raw = raw_faces.select([c for c in keep if c in raw_faces.columns]).unique("face_id", keep="first")
    if "subject_id" in raw.columns:
        raw = raw.rename({"subject_id": "raw_subject_id"})
    for col, dtype in (("known_expression", pl.String), ("known_valence", pl.Float64),
                       ("known_arousal", pl.Float64), ("known_aus", pl.List(pl.Int32)),
                       ("crop_png", pl.Binary), ("raw_subject_id", pl.String)):
        if col not in raw.columns:
            raw = raw.with_columns(pl.lit(None, dtype=dtype).alias(col))
    accepted = labels.filter(pl.col("status") == "accepted") if "status" in labels.columns else labels
    out = accepted.join(raw, on="face_id", how="left")
    if "subject_id" not in out.columns:
        out = out.with_columns(pl.col("raw_subject_id").alias("subject_id"))
    else:
        out = out.with_columns(pl.coalesce("subject_id", "raw_subject_id").alias("subject_id"))
    return out


def item_id(face_id: str, task: str) -> str:
    """Stable benchmark item id: version + hash of face and task."""
    digest = hashlib.sha256(f"{face_id}|{task}".encode()).hexdigest()[:16]
    return f"{FEAB_VERSION}-{digest}"


def gold_for(row: dict, gold_origins: Iterable[str] = DEFAULT_GOLD_ORIGINS,
             exclude_label_issues: bool = True) -> dict[str, tuple]:
    """Gold per task for one prepared row: ``{task: (value, origin)}``; tasks without gold absent.

    Human first: the manifest's known label (it is the truth even when audit mode hid it from the
    annotator), then a label whose origin is ``human`` (e.g. from review). Otherwise a label whose
    origin is in ``gold_origins`` (default: self-verified only). A human expression the
    label-noise audit suspects (``label_issue``) gives no expression gold while
    ``exclude_label_issues`` (default): the benchmark must not score models against it.
    """
    allowed = set(gold_origins)
    out: dict[str, tuple] = {}
    expr_h = normalise_expression(row.get("known_expression"))
    expr_l = normalise_expression(row.get("expression"))
    if exclude_label_issues and row.get("label_issue"):
        pass
    elif expr_h is not None:
        out["expression"] = (expr_h, "human")
    elif expr_l is not None and row.get("expression_origin") == "human":
        out["expression"] = (expr_l, "human")
    elif expr_l is not None and row.get("expression_origin") in allowed:
        out["expression"] = (expr_l, row["expression_origin"])

    kv, ka = _finite(row.get("known_valence")), _finite(row.get("known_arousal"))
    lv, la = _finite(row.get("valence")), _finite(row.get("arousal"))
    if kv is not None and ka is not None:
        out["va"] = ((kv, ka), "human")
    elif lv is not None and la is not None and row.get("va_origin") == "human":
        out["va"] = ((lv, la), "human")
    elif lv is not None and la is not None and row.get("va_origin") in allowed:
        out["va"] = ((lv, la), row["va_origin"])

    ku, lu = _aus(row.get("known_aus")), _aus(row.get("aus"))
    if ku is not None:
        out["aus"] = (ku, "human")
    elif lu is not None and row.get("au_origin") == "human":
        out["aus"] = (lu, "human")
    elif lu is not None and row.get("au_origin") in allowed:
        out["aus"] = (lu, row["au_origin"])
    return out


def build_feab(labels: pl.DataFrame, raw_faces: pl.DataFrame, *, fraction: float = 0.2,
               seed: int = 0, subjects: str = "hash",
               gold_origins: Iterable[str] = DEFAULT_GOLD_ORIGINS,
               exclude_label_issues: bool = True) -> pl.DataFrame:
    """Benchmark items (FEAB schema, plus ``source``/``batch`` when ``labels`` has them).

    ``labels`` are verified labels; when they carry no ``bench_split`` column the split is
    computed here (:func:`assign_split`: subjects and near-duplicates kept on one side) with
    ``fraction``/``seed`` (the same defaults as :func:`seke.feid.build_feid`,
    so both sides agree). One item per face and task that has gold.
    """
    if SPLIT_COLUMN not in labels.columns:
        labels = assign_split(labels, raw_faces, fraction=fraction, seed=seed, subjects=subjects)
    bench = prepare_faces(labels.filter(pl.col(SPLIT_COLUMN) == "feab"), raw_faces)
    extra = [c for c in ("source", "batch") if c in bench.columns]
    rows: list[dict] = []
    questions = {"expression": expression_question(), "va": va_question(), "aus": au_question()}
    options = {"expression": list(EXPRESSIONS), "va": None, "aus": au_options()}
    for row in bench.iter_rows(named=True):
        if row.get("crop_png") is None:
            continue  # no image, no item: a face without its crop cannot be asked about
        for task, (value, origin) in gold_for(row, gold_origins, exclude_label_issues).items():
            item = {
                "item_id": item_id(row["face_id"], task),
                "face_id": row["face_id"], "subject_id": row.get("subject_id"), "task": task,
                "question": questions[task], "options": options[task],
                "gold_expression": value if task == "expression" else None,
                "gold_valence": value[0] if task == "va" else None,
                "gold_arousal": value[1] if task == "va" else None,
                "gold_aus": value if task == "aus" else None,
                "gold_origin": origin, "gold_flagged": origin != "human",
                "image_png": row["crop_png"],
            }
            for c in extra:
                item[c] = row[c]
            rows.append(item)
    return frame_from_rows(rows, FEAB, extra)
