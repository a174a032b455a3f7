"""Quality gates of one lake partition, as plain results (no Dagster here).

A gate is one named check with a severity: ``blocking`` (a failure must stop FEID/FEAB from
being written) or ``warn``. Two families:

* the GX suite of the table (:mod:`expectations.gx_runner`), rolled up per check named in the
  suite meta (``gx_<table>``, ``label_ranges``, ``parse_failure_rate``, ``row_count``, …);
* for ``verified_labels``, the cross-granularity consistency gates: per-partition rates of the
  per-face flags :func:`seke.consistency.score_consistency` stored in ``consistency_flags``
  (expression vs AUs, expression vs VA region, AUs vs VA) and the share of accepted faces with
  no flag at all, which must stay above a configured floor.

:mod:`expectations.checks` turns these into Dagster ``AssetCheckResult`` objects; the asset can
also look at them *before* writing (``any_blocking_failed``) to keep a bad partition out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import polars as pl

from expectations.gx_runner import MAX_IDS, SAMPLE_SIZE, SuiteResult, load_suite, run_suite
from seke.annotation import Labels
from seke.consistency import FLAGS, score_consistency
from seke.knowledge import Knowledge

#: Consistency gates on verified_labels: check name -> (flag stored per face, description).
CONSISTENCY_FLAG_CHECKS: dict[str, tuple[str, str]] = {
    "consistency_expression_aus": (FLAGS[0], "share of accepted faces whose AU set is unlikely "
                                             "under the expression's AU profile"),
    "consistency_expression_va": (FLAGS[1], "share of accepted faces whose valence/arousal lies "
                                            "outside the expression's circumplex region"),
    "consistency_aus_va": (FLAGS[2], "share of accepted faces whose AUs contradict the valence sign"),
}
CONSISTENCY_RATE = "consistency_rate"


@dataclass(frozen=True)
class GateConfig:
    """Thresholds of the non-GX gates (the GX ones live in the suite meta ``parameters``)."""

    consistency_floor: float = 0.8     # blocking: share of accepted faces with no flag
    flag_rate_ceiling: float = 0.05    # warn: share of accepted faces with a given flag


@dataclass
class GateResult:
    check: str
    blocking: bool
    passed: bool
    description: str
    metadata: dict[str, Any] = field(default_factory=dict)


def check_names(table: str) -> dict[str, tuple[bool, str]]:
    """Every gate of ``table``: name -> (blocking, description)."""
    suite = load_suite(table)
    out = {name: (bool(c["blocking"]), c["description"])
           for name, c in suite["meta"]["checks"].items()}
    if table == "verified_labels":
        out[CONSISTENCY_RATE] = (True, "share of accepted faces with consistent expression, VA "
                                       "and AUs must stay at or above the configured floor")
        for name, (_, desc) in CONSISTENCY_FLAG_CHECKS.items():
            out[name] = (False, desc)
    return out


# ---- GX roll-up --------------------------------------------------------------------------------

def _from_suite(result: SuiteResult) -> list[GateResult]:
    gates = []
    for name, info in result.checks.items():
        outcomes = result.for_check(name)
        failed = [o for o in outcomes if not o.success]
        ids: list[str] = []
        sample: list[dict[str, Any]] = []
        for o in failed:
            for i in o.unexpected_ids:
                if i not in ids:
                    ids.append(i)
            for s in o.sample:
                if len(sample) < SAMPLE_SIZE:
                    sample.append({"expectation": o.expectation, "column": o.column, **s})
        meta: dict[str, Any] = {
            "row_count": result.row_count,
            "expectations_evaluated": len(outcomes),
            "expectations_failed": len(failed),
            "failed_expectations": [
                {"expectation": o.expectation, "column": o.column, "view": o.view,
                 "unexpected_count": o.unexpected_count, "observed_value": o.observed_value,
                 "exception": o.exception, "why": o.why} for o in failed],
            "unexpected_ids": ids[:MAX_IDS],
            "unexpected_id_count": len(ids),
            "sample": sample,
        }
        means = [o for o in outcomes if o.expectation == "expect_column_mean_to_be_between"]
        if means:
            meta["rate"] = means[0].observed_value
            prefix = name.split("_rate")[0]
            meta["ceiling"] = next((v for k, v in result.parameters.items()
                                    if k.startswith(prefix) and k.endswith("_ceiling")), None)
        if name == "row_count":
            meta.update(observed_rows=result.row_count, min_rows=result.parameters.get("min_rows"),
                        max_rows=result.parameters.get("max_rows"))
        gates.append(GateResult(name, bool(info["blocking"]), not failed, info["description"], meta))
    return gates


# ---- cross-granularity consistency -------------------------------------------------------------

def _labels_of(row: Mapping[str, Any]) -> Labels:
    aus = row.get("aus")
    return Labels(expression=row.get("expression"), valence=row.get("valence"),
                  arousal=row.get("arousal"),
                  aus=None if aus is None else {int(a): 1.0 for a in aus})


def face_flags(frame: pl.DataFrame, knowledge: Knowledge | None = None) -> tuple[pl.DataFrame, int]:
    """``face_id``, ``status`` and the per-face flag list; unscored faces are scored with
    ``knowledge`` when given (returns the frame and how many were re-scored)."""
    cols = [c for c in ("face_id", "status", "consistency_flags", "expression", "valence",
                        "arousal", "aus") if c in frame.columns]
    sub = frame.select(cols)
    if "consistency_flags" not in sub.columns:
        sub = sub.with_columns(pl.lit(None, dtype=pl.List(pl.String)).alias("consistency_flags"))
    rescored = 0
    if knowledge is not None and sub["consistency_flags"].null_count():
        flags = []
        for row in sub.iter_rows(named=True):
            if row["consistency_flags"] is None:
                flags.append(list(score_consistency(_labels_of(row), knowledge).flags))
                rescored += 1
            else:
                flags.append(row["consistency_flags"])
        sub = sub.with_columns(pl.Series("consistency_flags", flags, dtype=pl.List(pl.String)))
    return sub, rescored


def consistency_gates(frame: pl.DataFrame, config: GateConfig = GateConfig(),
                      knowledge: Knowledge | None = None) -> list[GateResult]:
    """Per-partition consistency rates over the accepted faces of a verified_labels partition."""
    sub, rescored = face_flags(frame, knowledge)
    if "status" in sub.columns:
        accepted = sub.filter(pl.col("status") == "accepted")
    else:
        accepted = sub
    n = accepted.height
    unscored = accepted.filter(pl.col("consistency_flags").is_null())
    consistent = accepted.filter(pl.col("consistency_flags").list.len() == 0)
    inconsistent_ids = accepted.filter(
        pl.col("consistency_flags").is_null() | (pl.col("consistency_flags").list.len() > 0)
    )["face_id"].to_list()
    rate = consistent.height / n if n else None
    base = {"accepted_faces": n, "partition_faces": frame.height, "unscored_faces": unscored.height,
            "rescored_faces": rescored}
    gates = [GateResult(
        CONSISTENCY_RATE, True, rate is None or rate >= config.consistency_floor,
        check_names("verified_labels")[CONSISTENCY_RATE][1],
        {**base, "rate": rate, "floor": config.consistency_floor,
         "unexpected_ids": inconsistent_ids[:MAX_IDS], "unexpected_id_count": len(inconsistent_ids),
         "note": "unscored accepted faces count as inconsistent" if unscored.height else ""})]
    for name, (flag, desc) in CONSISTENCY_FLAG_CHECKS.items():
        hit = accepted.filter(pl.col("consistency_flags").list.contains(flag).fill_null(False))
        flag_rate = hit.height / n if n else None
        sample = (frame.filter(pl.col("face_id").is_in(hit["face_id"].head(SAMPLE_SIZE).implode()))
                  .select([c for c in ("face_id", "expression", "valence", "arousal", "aus",
                                       "consistency_score") if c in frame.columns])
                  .to_dicts())
        gates.append(GateResult(
            name, False, flag_rate is None or flag_rate <= config.flag_rate_ceiling, desc,
            {**base, "flag": flag, "rate": flag_rate, "ceiling": config.flag_rate_ceiling,
             "unexpected_ids": hit["face_id"].to_list()[:MAX_IDS],
             "unexpected_id_count": hit.height, "sample": sample}))
    return gates


# ---- entry point -------------------------------------------------------------------------------

def evaluate(table: str, frame: pl.DataFrame, input_rows: int | None = None,
             parameters: Mapping[str, Any] | None = None, config: GateConfig = GateConfig(),
             knowledge: Knowledge | None = None) -> list[GateResult]:
    """Every gate of ``table`` on one partition, in :func:`check_names` order."""
    gates = _from_suite(run_suite(table, frame, input_rows=input_rows, parameters=parameters))
    if table == "verified_labels":
        gates += consistency_gates(frame, config, knowledge)
    order = list(check_names(table))
    return sorted(gates, key=lambda g: order.index(g.check))


def any_blocking_failed(gates: list[GateResult]) -> bool:
    return any(g.blocking and not g.passed for g in gates)


def quarantine_rows(gates: list[GateResult], stage: str) -> pl.DataFrame:
    """QUARANTINE rows for every id named by a failed *blocking* gate (reason ``gate:<check>``),
    so a blocked partition's offending faces are queryable next to the other drops."""
    from seke.quarantine import rows

    items = []
    for g in gates:
        if g.blocking and not g.passed:
            detail = "; ".join(f"{f['expectation']}({f['column']})"
                               for f in g.metadata.get("failed_expectations", [])) or g.description
            items += [(i, f"gate:{g.check}", detail) for i in g.metadata.get("unexpected_ids", [])]
    return rows(items, stage)


# ---- FEID/FEAB split leakage (near-duplicates, subjects) ----------------------------------------

#: Blocking check on ``feid`` and ``feab``: no near-duplicate group and no subject of the
#: partition has faces on both sides of the split (benchmark leakage), counting the faces other
#: batches of the source already published.
SPLIT_LEAKAGE = "split_leakage"
SPLIT_LEAKAGE_DESCRIPTION = ("no near-duplicate group (perceptual hash within the threshold, faces "
                             "other batches of the source published included) and no subject has "
                             "faces on both sides of the FEID/FEAB split")


def split_leakage_gate(split: pl.DataFrame, raw_faces: pl.DataFrame,
                       threshold: int | None = None,
                       published: pl.DataFrame | None = None) -> GateResult:
    """Cross-split near-duplicates and subjects of one partition's split (must read 0).

    The groups are recomputed here from ``raw_faces.phash`` (not taken from the split's own
    ``near_dup_group`` column), so a split rule that stopped honouring them is caught.
    ``split`` has ``face_id``, ``bench_split`` and ``subject_id``. ``published`` (faces other
    batches of the source already published: ``face_id``, ``phash``, ``bench_split``, from
    :func:`seke.feab.published_faces`) joins the groups, so a face of this batch whose
    near-duplicate (or identical crop) sits on the other side in an earlier batch counts as
    leaked too; groups made of earlier faces only are not this partition's to report.
    """
    from seke.feab import SPLIT_COLUMN
    from seke.near_dup import PHASH_THRESHOLD, count_groups, cross_split, near_duplicate_groups_across

    t = PHASH_THRESHOLD if threshold is None else threshold
    sides = dict(split.select("face_id", SPLIT_COLUMN).iter_rows()) if split.height else {}
    earlier: dict[str, str | None] = {}
    earlier_sides: dict[str, str] = {}
    if published is not None and published.height:
        earlier = dict(published.select("face_id", "phash").unique("face_id", keep="first").iter_rows())
        earlier_sides = dict(published.select("face_id", SPLIT_COLUMN).unique("face_id", keep="first").iter_rows())
    groups: dict[str, str] = {}
    if "phash" in raw_faces.columns and sides:
        codes = dict(raw_faces.select("face_id", "phash").unique("face_id", keep="first").iter_rows())
        ids = list(sides)
        groups = near_duplicate_groups_across(ids, [codes.get(f) for f in ids], earlier, t)
    # groups holding a face of this partition (all of them, without earlier faces)
    mine = {groups[f] for f in sides if f in groups}
    groups = {f: g for f, g in groups.items() if g in mine}
    leaked = cross_split({**{f: s for f, s in earlier_sides.items() if f not in sides}, **sides}, groups)
    # the same crop published by another batch on the other side (no group needed: one face)
    leaked += [{"group": f"same-crop-{f}", "sides": sorted({s, earlier_sides[f]}), "faces": [f]}
               for f, s in sorted(sides.items()) if f in earlier_sides and earlier_sides[f] != s]
    members: dict[str, set[str]] = {}
    for f, g in groups.items():
        members.setdefault(g, set()).add(f)
    cross_batch = sum(1 for m in members.values() if m - set(sides))
    subjects: list[str] = []
    if "subject_id" in split.columns and split.height:
        per = (split.filter(pl.col("subject_id").is_not_null())
               .group_by("subject_id").agg(pl.col(SPLIT_COLUMN).n_unique().alias("n")))
        subjects = sorted(per.filter(pl.col("n") > 1)["subject_id"].to_list())
    ids = [f for g in leaked for f in g["faces"] if f in sides]  # type: ignore[union-attr]
    return GateResult(SPLIT_LEAKAGE, True, not leaked and not subjects, SPLIT_LEAKAGE_DESCRIPTION, {
        "threshold_bits": t, "near_duplicate_groups": count_groups(groups),
        "faces_in_near_duplicate_groups": len(groups),
        "cross_batch_near_duplicate_groups": cross_batch,
        "published_faces_compared": len(earlier),
        "cross_split_near_duplicate_groups": len(leaked), "cross_split_subjects": len(subjects),
        "unexpected_ids": ids[:MAX_IDS], "unexpected_id_count": len(ids),
        "sample": leaked[:SAMPLE_SIZE] + [{"subject_id": s} for s in subjects[:SAMPLE_SIZE]],
        "phash_available": "phash" in raw_faces.columns,
    })
