"""Build the GX 1.x expectation suites (``expectations/suites/<table>.json``) from the contracts.

The suites are *data*: GX's own suite JSON (``name``, ``expectations[{type, kwargs, meta,
severity}]``, ``meta``) so they can be read, diffed and reviewed without running code. This
module only regenerates them from :mod:`seke.schemas` and :mod:`seke.taxonomy`, so a change to a
column contract or to the taxonomy shows up as a diff of the JSON (a test keeps the committed
files equal to the generated ones)::

    python -m expectations.suite_builder        # rewrite expectations/suites/*.json

Conventions the runner (:mod:`expectations.gx_runner`) understands, recorded in the suite meta:

* ``meta.checks``: the Dagster asset checks this suite feeds, each with ``blocking`` (a failure
  must stop downstream assets such as FEID/FEAB) and a description. Every expectation's
  ``meta.check`` names one of them and ``meta.severity`` repeats the check's severity
  (``blocking`` | ``warn``; also mapped onto GX's own ``severity``: critical | warning).
* ``meta.views``: extra row sets an expectation may run on (``meta.view``). ``rows`` is the
  table itself, with list columns replaced by their length and binary columns by their byte
  size (so non-null and length checks work without shipping crops to pandas). A view with
  ``explode`` holds one row per list element, with the id column kept, so value sets and
  ranges apply to list items (AU ids, probabilities).
* ``meta.derived``: derived 0/1 columns added to ``rows`` (e.g. ``parse_failed``) so rates
  become column means (``op`` ``equals``: column == value; ``contains``: list column holds value).
* ``meta.parameters``: run-time parameters (``{"$PARAMETER": name}`` in kwargs) with their
  defaults; ``min_rows``/``max_rows`` are computed from the caller's ``input_rows`` and the
  ratios given here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa

from seke import schemas
from seke.taxonomy import AU_CATALOGUE, EXPRESSIONS, GRANULARITIES

SUITES_DIR = Path(__file__).resolve().parent / "suites"
SUITE_TABLES = ("raw_faces", "mc_samples", "verified_labels", "feid", "feab")

BLOCKING, WARN = "blocking", "warn"
_GX_SEVERITY = {BLOCKING: "critical", WARN: "warning"}


class _Suite:
    def __init__(self, table: str, id_column: str):
        self.table = table
        self.id_column = id_column
        self.checks: dict[str, dict[str, Any]] = {}
        self.views: dict[str, dict[str, Any]] = {}
        self.derived: dict[str, dict[str, Any]] = {}
        self.parameters: dict[str, Any] = {}
        self.expectations: list[dict[str, Any]] = []

    def check(self, name: str, severity: str, description: str) -> None:
        self.checks[name] = {"blocking": severity == BLOCKING, "description": description}

    def expect(self, check: str, type_: str, why: str, view: str = "rows", **kwargs: Any) -> None:
        severity = BLOCKING if self.checks[check]["blocking"] else WARN
        self.expectations.append({
            "type": type_,
            "kwargs": kwargs,
            "meta": {"check": check, "severity": severity, "view": view, "why": why},
            "severity": _GX_SEVERITY[severity],
        })

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.table,
            "meta": {
                "table": self.table,
                "id_column": self.id_column,
                "contract": f"seke.schemas.{self.table.upper()}",
                "checks": self.checks,
                "views": self.views,
                "derived": self.derived,
                "parameters": self.parameters,
            },
            "expectations": self.expectations,
        }


# ---- building blocks ---------------------------------------------------------------------------

def _schema(s: _Suite, schema: pa.Schema, check: str) -> None:
    for f in schema:
        s.expect(check, "expect_column_to_exist", f"column contract seke.schemas ({f.type})",
                 column=f.name)


def _not_null(s: _Suite, check: str, *columns: str, row_condition: str | None = None) -> None:
    for c in columns:
        kw: dict[str, Any] = {"column": c}
        why = "key column"
        if row_condition:
            kw.update(row_condition=row_condition, condition_parser="pandas")
            why = f"required when {row_condition}"
        s.expect(check, "expect_column_values_to_not_be_null", why, **kw)


def _in_set(s: _Suite, check: str, column: str, values: list[Any], why: str,
            view: str = "rows") -> None:
    s.expect(check, "expect_column_values_to_be_in_set", why, view=view,
             column=column, value_set=values)


def _between(s: _Suite, check: str, column: str, lo: float | None, hi: float | None, why: str,
             view: str = "rows") -> None:
    s.expect(check, "expect_column_values_to_be_between", why, view=view,
             column=column, min_value=lo, max_value=hi)


def _explode(s: _Suite, column: str) -> str:
    name = f"{column}_items"
    s.views[name] = {"explode": column}
    return name


def _row_count(s: _Suite, min_ratio: float, max_ratio: float | None, input_is: str) -> None:
    s.check("row_count", WARN, f"row count relative to the input ({input_is}); "
                               "min_rows/max_rows = input_rows × ratio at run time")
    s.parameters.update({"min_rows_ratio": min_ratio, "max_rows_ratio": max_ratio,
                         "input_rows_is": input_is})
    s.expect("row_count", "expect_table_row_count_to_be_between",
             f"between {min_ratio}× and {max_ratio}× {input_is}",
             min_value={"$PARAMETER": "min_rows"}, max_value={"$PARAMETER": "max_rows"})


_AUS = list(AU_CATALOGUE)
_EXPR = list(EXPRESSIONS)
_ORIGINS = list(schemas.ORIGINS)
_VA = "valence and arousal live in [-1, 1] (circumplex)"
_PROB = "probabilities / confidences live in [0, 1]"


# ---- one builder per table ---------------------------------------------------------------------

def raw_faces() -> _Suite:
    s = _Suite("raw_faces", "face_id")
    s.check("gx_raw_faces", BLOCKING, "schema, non-null keys, one row per face (unique face_id)")
    s.check("label_ranges", BLOCKING, "known human labels inside the taxonomy and their ranges")
    _schema(s, schemas.RAW_FACES, "gx_raw_faces")
    _not_null(s, "gx_raw_faces", "face_id", "file_name", "crop_png")
    s.expect("gx_raw_faces", "expect_column_values_to_be_unique", "one row per face", column="face_id")
    _in_set(s, "gx_raw_faces", "detector", ["blazeface", "passthrough"], "known detectors")
    _between(s, "gx_raw_faces", "crop_size", 1, None, "a crop has pixels")
    _between(s, "gx_raw_faces", "det_score", 0.0, 1.0, _PROB)
    _in_set(s, "label_ranges", "known_expression", _EXPR, "AffectNet-8 taxonomy")
    _between(s, "label_ranges", "known_valence", -1.0, 1.0, _VA)
    _between(s, "label_ranges", "known_arousal", -1.0, 1.0, _VA)
    _in_set(s, "label_ranges", "known_aus", _AUS, "AU ids from AU_CATALOGUE",
            view=_explode(s, "known_aus"))
    _in_set(s, "label_ranges", "invalid_labels", list(GRANULARITIES), "granularity names",
            view=_explode(s, "invalid_labels"))
    _row_count(s, 0.5, 4.0, "manifest rows of the batch (photos may hold several faces, "
                            "or none)")
    return s


def mc_samples() -> _Suite:
    s = _Suite("mc_samples", "face_id")
    s.check("gx_mc_samples", BLOCKING, "schema, non-null keys, unique sample key, known vocabularies")
    s.check("label_ranges", BLOCKING, "parsed sample values inside the taxonomy and their ranges")
    s.check("parse_failure_rate", WARN, "share of samples whose answer could not be parsed "
                                        "(failed samples are not aggregated, but cost money)")
    _schema(s, schemas.MC_SAMPLES, "gx_mc_samples")
    _not_null(s, "gx_mc_samples", "face_id", "prompt_hash", "sample_index", "parse_status", "backend")
    s.expect("gx_mc_samples", "expect_compound_columns_to_be_unique", "one row per sample",
             column_list=["face_id", "prompt_hash", "strategy", "round", "sample_index"])
    _in_set(s, "gx_mc_samples", "parse_status", ["ok", "repaired", "failed"], "parser outcomes")
    _in_set(s, "gx_mc_samples", "strategy", ["sv_uamc", "single_shot", "fixed_n"], "strategies")
    _between(s, "gx_mc_samples", "temperature", 0.0, 2.0, "OpenAI temperature range")
    _in_set(s, "label_ranges", "expression", _EXPR, "AffectNet-8 taxonomy")
    _between(s, "label_ranges", "valence", -1.0, 1.0, _VA)
    _between(s, "label_ranges", "arousal", -1.0, 1.0, _VA)
    _in_set(s, "label_ranges", "expression_probs", [len(EXPRESSIONS)],
            "aligned to EXPRESSIONS (length in the rows view)")
    _in_set(s, "label_ranges", "au_probs", [len(AU_CATALOGUE)],
            "aligned to AU_CATALOGUE (length in the rows view)")
    _between(s, "label_ranges", "expression_probs", 0.0, 1.0, _PROB,
             view=_explode(s, "expression_probs"))
    _between(s, "label_ranges", "au_probs", 0.0, 1.0, _PROB, view=_explode(s, "au_probs"))
    s.derived["parse_failed"] = {"op": "equals", "column": "parse_status", "value": "failed"}
    s.parameters["parse_failure_ceiling"] = 0.2
    s.expect("parse_failure_rate", "expect_column_mean_to_be_between",
             "parse-failure rate at most parse_failure_ceiling",
             column="parse_failed", min_value=0.0,
             max_value={"$PARAMETER": "parse_failure_ceiling"})
    _row_count(s, 0.0, 11.0, "faces sent to sampling (N_max samples each, plus a verification "
                             "round; faces with every granularity known need none)")
    return s


def verified_labels() -> _Suite:
    s = _Suite("verified_labels", "face_id")
    acc = 'status == "accepted"'
    s.check("gx_verified_labels", BLOCKING, "schema, non-null keys, one row per face, vocabularies")
    s.check("label_ranges", BLOCKING, "every label inside the taxonomy and its range")
    s.check("abstain_rate", WARN, "share of faces abstained into the review queue")
    _schema(s, schemas.VERIFIED_LABELS, "gx_verified_labels")
    _not_null(s, "gx_verified_labels", "face_id", "status", "knowledge_version")
    s.expect("gx_verified_labels", "expect_column_values_to_be_unique", "one row per face",
             column="face_id")
    _in_set(s, "gx_verified_labels", "status", list(schemas.LABEL_STATUS), "label status")
    for g in ("expression", "va", "au"):
        _in_set(s, "gx_verified_labels", f"{g}_origin", _ORIGINS, "label origins")
    _in_set(s, "gx_verified_labels", "verdict", ["none", "accept", "correct", "reject"],
            "self-verification verdicts")
    _not_null(s, "gx_verified_labels", "abstain_reason", row_condition='status == "abstained"')
    _between(s, "gx_verified_labels", "escalations", 0, None, "cascade escalations are a count")
    # An accepted face carries every granularity, except one withheld on purpose (its human
    # label was invalid at ingest, and no guess may stand in for it).
    for g, columns in (("expression", ("expression",)), ("va", ("valence", "arousal")), ("aus", ("aus",))):
        s.derived[f"withheld_{g}"] = {"op": "contains", "column": "withheld", "value": g}
        _not_null(s, "label_ranges", *columns, row_condition=f"{acc} and withheld_{g} == 0")
    _in_set(s, "label_ranges", "expression", _EXPR, "AffectNet-8 taxonomy")
    _between(s, "label_ranges", "valence", -1.0, 1.0, _VA)
    _between(s, "label_ranges", "arousal", -1.0, 1.0, _VA)
    for c in ("expression_confidence", "va_confidence", "au_confidence", "consistency_score"):
        _between(s, "label_ranges", c, 0.0, 1.0, _PROB)
    for c in ("uncertainty_expression", "uncertainty_va", "uncertainty_aus"):
        _between(s, "label_ranges", c, 0.0, None, "uncertainties are non-negative")
    _in_set(s, "label_ranges", "aus", _AUS, "AU ids from AU_CATALOGUE", view=_explode(s, "aus"))
    _between(s, "label_ranges", "au_probs", 0.0, 1.0, _PROB, view=_explode(s, "au_probs"))
    _in_set(s, "label_ranges", "audit_hidden", list(GRANULARITIES), "granularity names",
            view=_explode(s, "audit_hidden"))
    _in_set(s, "label_ranges", "withheld", list(GRANULARITIES), "granularity names",
            view=_explode(s, "withheld"))
    s.derived["abstained"] = {"op": "equals", "column": "status", "value": "abstained"}
    s.parameters["abstain_rate_ceiling"] = 0.5
    s.expect("abstain_rate", "expect_column_mean_to_be_between",
             "abstain rate at most abstain_rate_ceiling", column="abstained",
             min_value=0.0, max_value={"$PARAMETER": "abstain_rate_ceiling"})
    _row_count(s, 1.0, 1.0, "faces of the raw_faces partition (one label row per face)")
    return s


def feid() -> _Suite:
    s = _Suite("feid", "record_id")
    s.check("gx_feid", BLOCKING, "schema, non-null keys, unique record_id, vocabularies")
    s.check("label_ranges", BLOCKING, "every answer label inside the taxonomy and its range")
    _schema(s, schemas.FEID, "gx_feid")
    _not_null(s, "gx_feid", "record_id", "face_id", "task", "instruction", "response",
              "origin", "image_png")
    s.expect("gx_feid", "expect_column_values_to_be_unique", "one row per record",
             column="record_id")
    _in_set(s, "gx_feid", "task", ["expression", "va", "aus", "combined"], "FEID tasks")
    _in_set(s, "gx_feid", "origin", _ORIGINS, "label origins")
    _in_set(s, "label_ranges", "expression", _EXPR, "AffectNet-8 taxonomy")
    _between(s, "label_ranges", "valence", -1.0, 1.0, _VA)
    _between(s, "label_ranges", "arousal", -1.0, 1.0, _VA)
    _between(s, "label_ranges", "confidence", 0.0, 1.0, _PROB)
    _in_set(s, "label_ranges", "aus", _AUS, "AU ids from AU_CATALOGUE", view=_explode(s, "aus"))
    _row_count(s, 1.0, 12.0, "accepted faces (one record per task and template)")
    return s


def feab() -> _Suite:
    s = _Suite("feab", "item_id")
    s.check("gx_feab", BLOCKING, "schema, non-null keys, unique item_id, vocabularies, gold present")
    s.check("label_ranges", BLOCKING, "every gold label inside the taxonomy and its range")
    _schema(s, schemas.FEAB, "gx_feab")
    _not_null(s, "gx_feab", "item_id", "face_id", "task", "question", "gold_origin", "image_png")
    s.expect("gx_feab", "expect_column_values_to_be_unique", "one row per benchmark item",
             column="item_id")
    _in_set(s, "gx_feab", "task", ["expression", "va", "aus"], "FEAB tasks")
    _in_set(s, "gx_feab", "gold_origin", _ORIGINS, "label origins")
    _not_null(s, "gx_feab", "gold_expression", row_condition='task == "expression"')
    _not_null(s, "gx_feab", "gold_valence", "gold_arousal", row_condition='task == "va"')
    _not_null(s, "gx_feab", "gold_aus", row_condition='task == "aus"')
    _in_set(s, "label_ranges", "gold_expression", _EXPR, "AffectNet-8 taxonomy")
    _between(s, "label_ranges", "gold_valence", -1.0, 1.0, _VA)
    _between(s, "label_ranges", "gold_arousal", -1.0, 1.0, _VA)
    _in_set(s, "label_ranges", "gold_aus", _AUS, "AU ids from AU_CATALOGUE",
            view=_explode(s, "gold_aus"))
    _row_count(s, 0.0, 3.0, "accepted faces held out for the benchmark (≤ one item per task)")
    return s


BUILDERS = {"raw_faces": raw_faces, "mc_samples": mc_samples, "verified_labels": verified_labels,
            "feid": feid, "feab": feab}


def build(table: str) -> dict[str, Any]:
    """The suite for ``table`` as GX suite JSON (a dict)."""
    return BUILDERS[table]().to_json()


def render(table: str) -> str:
    return json.dumps(build(table), indent=2, ensure_ascii=False) + "\n"


def write_all(directory: Path = SUITES_DIR) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    out = []
    for t in SUITE_TABLES:
        p = directory / f"{t}.json"
        p.write_text(render(t), encoding="utf-8")
        out.append(p)
    return out


if __name__ == "__main__":
    for path in write_all():
        print(path)
