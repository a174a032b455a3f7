"""``confidence_calibration``: audit-mode label quality per partition and the confidence map fitted on it.

Reads every ``verified_labels`` partition, keeps the faces whose human labels were hidden from
the annotator (``audit_hidden``), scores them against those labels (:mod:`seke.audit`) and fits
a calibration (:mod:`seke.calibration`) that ``annotate_faces`` can apply to new labels. The
artefact is stored in the lake as ``calibration/version=<content hash>`` (one row holding the
JSON) plus ``calibration_current``, so it works on a local lake and on S3 alike.

The same run certifies selective acceptance (:mod:`seke.selective`, issue 15): per source and
granularity, a score threshold above which the error of accepted labels stays below the run
config's target with the asked confidence, fitted on the same audit faces and tied to the
annotator, knowledge and prompt versions that labelled them. The certificates are one more
versioned artefact (``certificates/version=<hash>`` and ``certificates_current``) that
``annotate_faces`` applies. Per partition, the metadata carries the certified bound, the
realized error and coverage on its audit faces (in sample: the faces the threshold was fitted
on) and a risk–coverage curve. Bad settings or data (a target outside (0, 1), NaN scores, too
few audit faces) never fail the run: the metadata says what was not certified and why.
"""

import base64
import io
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
from seke.selective import (GRANULARITIES, CertificateSet, SelectiveTargets, audit_points, fit_certificates,
                            risk_coverage)
from resources.config_models import derived

KNOWN_COLUMNS = ["face_id", "known_expression", "known_valence", "known_arousal", "known_aus"]


class _CalibrationBase(Config):
    def targets(self) -> SelectiveTargets:
        from resources.config_models import values_for

        return SelectiveTargets(**values_for(SelectiveTargets, self))


CalibrationConfig = derived(
    "CalibrationConfig", _CalibrationBase, SelectiveTargets,
    "Confidence calibration and certified selective acceptance (targets from seke.selective.SelectiveTargets).",
    method=(str, Field("isotonic", description="temperature | isotonic")),
    min_pairs=(int, Field(20, description="fewest audit pairs a granularity needs to get a map")),
    min_source_pairs=(int, Field(400, description="fewest audit pairs of one source a granularity needs to get "
                                                  "that source its own map (fewer: the pooled map)")),
    expression_accuracy_floor=(float, Field(AUDIT_FLOORS["expression_accuracy"],
                                            description="audit check warns below this accuracy")),
)


def _face_versions(lake: Lake, rows: list[dict]) -> dict[str, tuple[tuple[str, str], ...]]:
    """Per audited face, the versions that produced its labels: annotator (mc_samples backend/model),
    knowledge (the label row) and prompt (knowledge_prompts)."""
    faces = {r["face_id"] for r in rows}
    annot, prompt = {}, {}
    if lake.exists("mc_samples"):
        s = pl.from_arrow(lake.dataset("mc_samples").to_table(columns=["face_id", "backend", "model"]))
        for r in s.filter(pl.col("face_id").is_in(list(faces))).unique("face_id", keep="first").iter_rows(named=True):
            annot[r["face_id"]] = f"{r['backend']}/{r['model']}"
    if lake.exists("knowledge_prompts"):
        p = pl.from_arrow(lake.dataset("knowledge_prompts").to_table(columns=["face_id", "prompt_version"]))
        for r in p.filter(pl.col("face_id").is_in(list(faces))).unique("face_id", keep="last").iter_rows(named=True):
            prompt[r["face_id"]] = r["prompt_version"]
    return {r["face_id"]: tuple(sorted({"annotator": annot.get(r["face_id"], "unknown"),
                                        "knowledge": r.get("knowledge_version") or "unknown",
                                        "prompt": prompt.get(r["face_id"], "unknown")}.items())) for r in rows}


def _curve_md(title: str, curves: dict[str, tuple], marks: dict[str, tuple]) -> str:
    """A risk–coverage plot (matplotlib, PNG) as markdown with a data-URL image."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.2, 3.0), dpi=80)
    for g, (cov, risk) in curves.items():
        line, = ax.plot(cov, risk, marker=".", label=g)
        if g in marks:
            c, r, t = marks[g]
            ax.axhline(t, color=line.get_color(), ls="--", lw=0.8)
            if c is not None and r is not None:
                ax.plot([c], [r], "o", color=line.get_color(), ms=8, mfc="none")
    ax.set_xlabel("coverage (accepted share)")
    ax.set_ylabel("error among accepted")
    ax.set_xlim(0, 1.02)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    data = base64.b64encode(buf.getvalue()).decode()
    return (f"**{title}**: error vs coverage as the score threshold falls; dashed: target; circle: the "
            f"certified threshold (in sample).\n\n![risk-coverage {title}](data:image/png;base64,{data})\n")


def _certify(store: Lake, rows: list[dict], gold: dict, targets: SelectiveTargets, context) -> tuple[dict, dict, str]:
    """Fit, store and describe the certificates; returns (per-partition figures, report, markdown)."""
    fv = _face_versions(store, rows)
    groups: dict = {}
    for r in rows:
        groups.setdefault((r["source"], fv[r["face_id"]]), []).append(r)
    certs, report = fit_certificates(groups, gold, targets)
    cset = CertificateSet.make(certs, {k: v for k, v in targets.__dict__.items()})
    frame = pl.DataFrame({"version": [cset.version], "created_at": [cset.created_at],
                          "artefact_json": [json.dumps(cset.to_json(), sort_keys=True)]})
    store.write_partition("certificates", {"version": cset.version}, frame.drop("version"))
    store.write_partition("certificates_current", {}, frame)
    per_part: dict = {}
    md = []
    for key in sorted({(r["source"], r["batch"]) for r in rows}):
        part = [r for r in rows if (r["source"], r["batch"]) == key]
        name = f"{key[0]}__{key[1]}"
        figs, curves, marks = {}, {}, {}
        for g in GRANULARITIES:
            if targets.target(g) is None:
                continue
            sc, ls, dropped, _ = audit_points(part, gold, g, targets.va_tolerance)
            cert = next((c for c in certs if c.source == key[0] and c.granularity == g
                         and c.versions == dict(fv[part[0]["face_id"]])), None)
            entry = {"audit_faces": int(len(sc)), "dropped_non_finite": dropped,
                     "status": (report.get(f"{key[0]}/{g}") or {}).get("status", "not certified")}
            if cert is None:
                entry["reason"] = (report.get(f"{key[0]}/{g}") or {}).get("reason", "no certificate")
            else:
                acc = sc >= cert.threshold if cert.threshold is not None else sc < -1
                entry.update(certified_bound=cert.target, confidence=1 - cert.delta, threshold=cert.threshold,
                             realized_error_in_sample=float(ls[acc].mean()) if acc.any() else None,
                             coverage=float(acc.mean()) if len(sc) else None, certificate=cert.version,
                             transferred_from=cert.transferred_from, procedure=cert.procedure)
            figs[g] = entry
            if len(sc):
                _, cov, risk = risk_coverage(sc, ls)
                curves[g] = (cov, risk)
                if cert is not None:
                    marks[g] = (entry.get("coverage"), entry.get("realized_error_in_sample"), cert.target)
        per_part[name] = figs
        if curves:
            md.append(_curve_md(name, curves, marks))
    context.log.info(f"certificates {cset.version}: {len(certs)} certificates; "
                     + "; ".join(f"{k}: {v['status']}" for k, v in report.items()))
    return per_part, {"version": cset.version, **report}, "\n".join(md) or "no audit faces: no curve"


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
    cal = fit_calibration(pairs, config.method, min_pairs=config.min_pairs, min_source_pairs=config.min_source_pairs,
                          notes=f"{len(gold)} audited faces in {len(per_partition)} partitions")
    artefact = json.dumps(cal.to_json(), sort_keys=True)
    frame = pl.DataFrame({"version": [cal.version], "method": [cal.method], "created_at": [cal.created_at],
                          "artefact_json": [artefact]})
    path = store.write_partition("calibration", {"version": cal.version}, frame.drop("version"))
    store.write_partition("calibration_current", {}, frame)

    expr = [p for p in pairs if p.granularity == "expression" and p.accepted]
    raw_ece = ece([p.confidence for p in expr], [p.correct for p in expr]) if expr else None
    cal_ece = ece([cal.apply(p.confidence, "expression", p.source) for p in expr], [p.correct for p in expr]) if expr else None
    context.log.info(f"calibration {cal.version} on {len(pairs)} audit pairs; {len(failing)} partitions below floors")
    per_part_sel, sel_report, curves_md = _certify(store, rows, gold, config.targets(), context)
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
            "certificates_version": MetadataValue.text(sel_report["version"]),
            "certification": MetadataValue.json(json.loads(json.dumps(sel_report, default=str))),
            "certified_per_partition": MetadataValue.json(json.loads(json.dumps(per_part_sel, default=str))),
            "risk_coverage": MetadataValue.md(curves_md),
            "target_problems": MetadataValue.json(config.targets().problems()),
        },
        check_results=[AssetCheckResult(
            check_name="audit_quality", passed=not failing, severity=AssetCheckSeverity.WARN,
            metadata={"failing": MetadataValue.json(failing), "floors": MetadataValue.json(floors),
                      "partitions": MetadataValue.int(len(per_partition))})],
    )
