"""``confidence_calibration``: audit-mode label quality per partition and the confidence map fitted on it.

Reads every ``verified_labels`` partition, keeps the faces whose human labels were hidden from
the annotator (``audit_hidden``), scores them against those labels (:mod:`seke.audit`) and fits
a calibration (:mod:`seke.calibration`) that ``annotate_faces`` can apply to new labels. The
artefact is stored in the lake as ``calibration/version=<content hash>`` (one row holding the
JSON) plus ``calibration_current``, so it works on a local lake and on S3 alike.
"""

import json

import polars as pl
from dagster import (AssetCheckResult, AssetCheckSeverity, AssetCheckSpec, AssetExecutionContext, Config,
                     MaterializeResult, MetadataValue, asset)
from pydantic import Field

from assets.common import OWNERS, tags
from resources.lake import LakeResource
from seke.audit import AUDIT_FLOORS, audit_check, audit_pairs, audit_report, gold_for_hidden
from seke.calibration import fit_calibration
from seke.lake import Lake
from seke.metrics import ece
from seke.records import known_labels

KNOWN_COLUMNS = ["face_id", "known_expression", "known_valence", "known_arousal", "known_aus"]


class CalibrationConfig(Config):
    method: str = Field("isotonic", description="temperature | isotonic")
    min_pairs: int = Field(20, description="fewest audit pairs a granularity needs to get a map")
    expression_accuracy_floor: float = Field(AUDIT_FLOORS["expression_accuracy"],
                                             description="audit check warns below this accuracy")


def _audited_rows(lake: Lake) -> tuple[list[dict], dict]:
    if not lake.exists("verified_labels") or not lake.exists("raw_faces"):
        return [], {}
    labels = lake.read_table("verified_labels")
    labels = labels.filter(pl.col("audit_hidden").list.len() > 0)
    raw = pl.from_arrow(lake.dataset("raw_faces").to_table(columns=KNOWN_COLUMNS))
    known = {r["face_id"]: known_labels(r) for r in raw.iter_rows(named=True)}
    rows = labels.to_dicts()
    return rows, gold_for_hidden(known, {r["face_id"]: r["audit_hidden"] for r in rows})


@asset(deps=["verified_labels", "raw_faces"], group_name="evaluation", kinds={"delta"}, owners=OWNERS, tags=tags("evaluation"),
       check_specs=[AssetCheckSpec("audit_quality", asset="confidence_calibration",
                                   description="audit-mode label quality above its floors in every partition")])
def confidence_calibration(context: AssetExecutionContext, config: CalibrationConfig,
                           lake: LakeResource) -> MaterializeResult:
    """Confidence calibration (temperature or isotonic) fitted on audit-mode faces, with the
    per-partition audit figures (accuracy, macro-F1, AU F1, VA sign/CCC, ECE, Brier)."""
    store = lake.lake()
    rows, gold = _audited_rows(store)
    per_partition = {}
    failing = {}
    floors = {**AUDIT_FLOORS, "expression_accuracy": config.expression_accuracy_floor}
    for key in sorted({(r["source"], r["batch"]) for r in rows}):
        part_rows = [r for r in rows if (r["source"], r["batch"]) == key]
        rep = audit_report(part_rows, gold)
        per_partition[f"{key[0]}__{key[1]}"] = rep
        ok, bad = audit_check(rep, floors)
        if not ok:
            failing[f"{key[0]}__{key[1]}"] = bad
    pairs = audit_pairs(rows, gold)
    cal = fit_calibration(pairs, config.method, min_pairs=config.min_pairs,
                          notes=f"{len(gold)} audited faces in {len(per_partition)} partitions")
    artefact = json.dumps(cal.to_json(), sort_keys=True)
    frame = pl.DataFrame({"version": [cal.version], "method": [cal.method], "created_at": [cal.created_at],
                          "artefact_json": [artefact]})
    path = store.write_partition("calibration", {"version": cal.version}, frame.drop("version"))
    store.write_partition("calibration_current", {}, frame)

    expr = [p for p in pairs if p.granularity == "expression" and p.accepted]
    raw_ece = ece([p.confidence for p in expr], [p.correct for p in expr]) if expr else None
    cal_ece = ece([cal.apply(p.confidence, "expression") for p in expr], [p.correct for p in expr]) if expr else None
    context.log.info(f"calibration {cal.version} on {len(pairs)} audit pairs; {len(failing)} partitions below floors")
    return MaterializeResult(
        metadata={
            "version": MetadataValue.text(cal.version),
            "method": MetadataValue.text(cal.method),
            "path": MetadataValue.path(path.uri),
            "table_version": MetadataValue.int(path.version),
            "audited_faces": MetadataValue.int(len(gold)),
            "fitted_on": MetadataValue.json(cal.fitted_on),
            "expression_ece_raw_in_sample": MetadataValue.float(float(raw_ece)) if raw_ece is not None else MetadataValue.text("n/a"),
            "expression_ece_calibrated_in_sample": MetadataValue.float(float(cal_ece)) if cal_ece is not None else MetadataValue.text("n/a"),
            "audit_per_partition": MetadataValue.json(per_partition),
        },
        check_results=[AssetCheckResult(
            check_name="audit_quality", passed=not failing, severity=AssetCheckSeverity.WARN,
            metadata={"failing": MetadataValue.json(failing), "floors": MetadataValue.json(floors),
                      "partitions": MetadataValue.int(len(per_partition))})],
    )
