"""Run an expectation suite (``expectations/suites/<table>.json``) on a polars frame with GX 1.x.

GX is called directly (ephemeral context, pandas data source, ``ExpectationSuite`` +
``ValidationDefinition``) because dagster-ge pins GX < 1 and pandas < 3 (DESIGN.md §8). The
result is a plain, Dagster-free structure: per expectation its success, unexpected counts, the
ids of the unexpected rows and a small sample of them, so an asset check (or a CLI, or a test)
can report *which* faces failed and not just that something did.

Frames are prepared before they reach pandas (see :mod:`expectations.suite_builder` for the
conventions): the ``rows`` view replaces list columns by their length and binary columns by
their byte size, ``explode`` views hold one row per list element, and derived 0/1 columns turn
rates into column means. Expectations whose column is missing fail with the GX exception text
rather than crashing the run.
"""

from __future__ import annotations

import json
import math
import os
import threading
import uuid
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

import polars as pl  # noqa: E402

SUITES_DIR = Path(__file__).resolve().parent / "suites"
SAMPLE_SIZE = 10
#: Aggregate expectations that are undefined, not failed, on an empty row set (a rate over no
#: samples): they pass with ``note`` set instead of failing a legitimately empty partition.
_UNDEFINED_WHEN_EMPTY = {"expect_column_mean_to_be_between"}
MAX_IDS = 200

_LOCK = threading.Lock()  # the GX ephemeral context is not safe to mutate concurrently


@dataclass
class ExpectationOutcome:
    """One expectation's result, flattened for metadata."""

    expectation: str
    column: str | None
    view: str
    check: str
    severity: str  # blocking | warn
    why: str
    success: bool
    element_count: int | None = None
    unexpected_count: int | None = None
    unexpected_percent: float | None = None
    observed_value: Any = None
    unexpected_ids: list[str] = field(default_factory=list)
    sample: list[dict[str, Any]] = field(default_factory=list)
    exception: str | None = None
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SuiteResult:
    """A whole suite run on one frame (one partition)."""

    suite: str
    success: bool
    row_count: int
    parameters: dict[str, Any]
    outcomes: list[ExpectationOutcome]
    checks: dict[str, dict[str, Any]]  # suite meta: check name -> {blocking, description}

    def failed(self) -> list[ExpectationOutcome]:
        return [o for o in self.outcomes if not o.success]

    def for_check(self, check: str) -> list[ExpectationOutcome]:
        return [o for o in self.outcomes if o.check == check]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["outcomes"] = [o.to_dict() for o in self.outcomes]
        return d


# ---- suites ------------------------------------------------------------------------------------

@lru_cache(maxsize=None)
def _load_cached(path: str) -> str:
    return Path(path).read_text(encoding="utf-8")


def load_suite(table: str, directory: Path | None = None) -> dict[str, Any]:
    """The suite JSON for ``table`` (a fresh dict each call)."""
    path = (directory or SUITES_DIR) / f"{table}.json"
    if not path.exists():
        raise FileNotFoundError(f"no expectation suite for table {table!r} at {path}")
    return json.loads(_load_cached(str(path)))


def resolve_parameters(suite: Mapping[str, Any], input_rows: int | None = None,
                       overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Run-time values for every ``$PARAMETER`` of the suite.

    ``min_rows``/``max_rows`` come from ``input_rows`` × the suite's ratios; without an input
    size the row count is only required to be non-negative. ``overrides`` win over both.
    """
    meta = suite.get("meta", {})
    params = {k: v for k, v in meta.get("parameters", {}).items()
              if not k.endswith("_ratio") and k != "input_rows_is"}
    lo_r = meta.get("parameters", {}).get("min_rows_ratio")
    hi_r = meta.get("parameters", {}).get("max_rows_ratio")
    if input_rows is not None and lo_r is not None:
        params["min_rows"] = int(math.floor(input_rows * lo_r))
        params["max_rows"] = None if hi_r is None else int(math.ceil(input_rows * hi_r))
    else:
        params["min_rows"], params["max_rows"] = 0, None
    params.update(overrides or {})
    return params


# ---- frame preparation -------------------------------------------------------------------------

def _derive(frame: pl.DataFrame, derived: Mapping[str, Mapping[str, Any]]) -> pl.DataFrame:
    exprs = []
    for name, spec in derived.items():
        if spec["op"] not in ("equals", "contains"):
            raise ValueError(f"unknown derived-column op {spec['op']!r} for {name}")
        col = spec["column"]
        if col not in frame.columns:
            # the column_to_exist expectation reports it; row conditions on a ``contains``
            # column still need it (0 = the list does not hold the value)
            if spec["op"] == "contains":
                exprs.append(pl.lit(0, dtype=pl.Int8).alias(name))
            continue
        hit = (pl.col(col).list.contains(spec["value"]) if spec["op"] == "contains"
               else pl.col(col) == spec["value"])
        exprs.append(hit.fill_null(False).cast(pl.Int8).alias(name))
    return frame.with_columns(exprs) if exprs else frame


def _rows_view(frame: pl.DataFrame) -> pl.DataFrame:
    exprs = []
    for name, dtype in frame.schema.items():
        if isinstance(dtype, (pl.List, pl.Array)):
            exprs.append(pl.col(name).list.len().cast(pl.Int64).alias(name))
        elif dtype == pl.Binary:
            exprs.append(pl.col(name).bin.size().cast(pl.Int64).alias(name))
    return frame.with_columns(exprs) if exprs else frame


def prepare_views(frame: pl.DataFrame, suite: Mapping[str, Any]) -> dict[str, pl.DataFrame]:
    """The row sets the suite's expectations run on, keyed by view name."""
    meta = suite.get("meta", {})
    id_col = meta.get("id_column")
    views = {"rows": _rows_view(_derive(frame, meta.get("derived", {})))}
    for name, spec in meta.get("views", {}).items():
        col = spec["explode"]
        if col not in frame.columns:
            views[name] = pl.DataFrame({col: []})
            continue
        keep = [c for c in (id_col, col) if c and c in frame.columns]
        views[name] = frame.select(keep).explode(col).filter(pl.col(col).is_not_null())
    return views


# ---- GX ----------------------------------------------------------------------------------------

@lru_cache(maxsize=1)
def _context():
    import great_expectations as gx

    ctx = gx.get_context(mode="ephemeral")
    try:  # progress bars would flood Dagster's compute logs
        from great_expectations.data_context.types.base import ProgressBarsConfig

        ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
    except Exception:  # pragma: no cover - older/newer GX without this knob
        pass
    return ctx


def _expectation(cfg: Mapping[str, Any], idx: int):
    from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

    exp = ExpectationConfiguration(type=cfg["type"], kwargs=dict(cfg["kwargs"]),
                                   meta={**cfg.get("meta", {}), "_idx": idx}).to_domain_obj()
    if cfg.get("severity"):
        exp.severity = cfg["severity"]
    return exp


def _jsonable(v: Any) -> Any:
    if isinstance(v, float) and (math.isnan(v) or math.isinf(v)):
        return None
    if v is None or isinstance(v, str):
        return v
    if isinstance(v, bool):
        return bool(v)
    if isinstance(v, int):
        return int(v)
    if isinstance(v, float):
        return float(v)
    if isinstance(v, (bytes, bytearray)):
        return f"<{len(v)} bytes>"
    if isinstance(v, Mapping):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    try:
        return _jsonable(v.item())  # numpy scalar
    except Exception:
        return str(v)


def _run_view(name: str, frame: pl.DataFrame, configs: list[dict[str, Any]], id_col: str | None,
              params: Mapping[str, Any]) -> list[Any]:
    import great_expectations as gx

    ctx = _context()
    tag = f"{name}-{uuid.uuid4().hex[:8]}"
    result_format: dict[str, Any] = {"result_format": "COMPLETE",
                                     "partial_unexpected_count": SAMPLE_SIZE}
    if id_col and id_col in frame.columns:
        result_format["unexpected_index_column_names"] = [id_col]
    with _LOCK:
        source = ctx.data_sources.add_pandas(f"src-{tag}")
        try:
            batch_def = source.add_dataframe_asset(f"asset-{tag}").add_batch_definition_whole_dataframe("all")
            suite = ctx.suites.add(gx.ExpectationSuite(name=f"suite-{tag}",
                                                       expectations=[_expectation(c, i) for i, c in enumerate(configs)]))
            vd = ctx.validation_definitions.add(gx.ValidationDefinition(name=f"vd-{tag}",
                                                                        data=batch_def, suite=suite))
            res = vd.run(batch_parameters={"dataframe": frame.to_pandas()},
                         expectation_parameters=dict(params), result_format=result_format)
        finally:
            for remove in (lambda: ctx.validation_definitions.delete(f"vd-{tag}"),
                           lambda: ctx.suites.delete(f"suite-{tag}"),
                           lambda: ctx.data_sources.delete(f"src-{tag}")):
                try:
                    remove()
                except Exception:
                    pass
    return list(res.results)


def _outcome(cfg: Mapping[str, Any], r: Any, id_col: str | None) -> ExpectationOutcome:
    meta = cfg.get("meta", {})
    res = r.result or {}
    exc = None
    if r.exception_info and r.exception_info.get("raised_exception"):
        exc = str(r.exception_info.get("exception_message") or "exception")[:500]
    ids: list[str] = []
    sample: list[dict[str, Any]] = []
    for row in res.get("unexpected_index_list") or []:
        if isinstance(row, Mapping):
            if id_col and row.get(id_col) is not None and str(row[id_col]) not in ids:
                ids.append(str(row[id_col]))
            if len(sample) < SAMPLE_SIZE:
                sample.append(_jsonable(dict(row)))
    if not sample and res.get("partial_unexpected_list"):
        sample = [{"value": _jsonable(v)} for v in res["partial_unexpected_list"][:SAMPLE_SIZE]]
    return ExpectationOutcome(
        expectation=cfg["type"], column=cfg["kwargs"].get("column"),
        view=meta.get("view", "rows"), check=meta.get("check", ""),
        severity=meta.get("severity", "warn"), why=meta.get("why", ""),
        success=bool(r.success) and exc is None,
        element_count=res.get("element_count"), unexpected_count=res.get("unexpected_count"),
        unexpected_percent=_jsonable(res.get("unexpected_percent")),
        observed_value=_jsonable(res.get("observed_value")),
        unexpected_ids=ids, sample=sample, exception=exc)


def run_suite(table: str, frame: pl.DataFrame, input_rows: int | None = None,
              parameters: Mapping[str, Any] | None = None,
              suite: Mapping[str, Any] | None = None) -> SuiteResult:
    """Validate one partition of ``table`` against its suite.

    ``input_rows`` sizes the row-count bounds (e.g. the number of faces in the upstream
    partition); ``parameters`` override suite parameters such as ``parse_failure_ceiling``.
    """
    suite = dict(suite) if suite is not None else load_suite(table)
    meta = suite.get("meta", {})
    id_col = meta.get("id_column")
    params = resolve_parameters(suite, input_rows, parameters)
    views = prepare_views(frame, suite)
    by_view: dict[str, list[dict[str, Any]]] = {}
    for cfg in suite["expectations"]:
        by_view.setdefault(cfg.get("meta", {}).get("view", "rows"), []).append(cfg)
    outcomes: list[ExpectationOutcome] = []
    for view, configs in by_view.items():
        results = _run_view(view, views[view], configs, id_col, params)
        by_idx = {(r.expectation_config.meta or {}).get("_idx"): r for r in results}
        for i, cfg in enumerate(configs):
            match = by_idx.get(i)
            if match is None:
                outcomes.append(ExpectationOutcome(
                    cfg["type"], cfg["kwargs"].get("column"), view, cfg["meta"].get("check", ""),
                    cfg["meta"].get("severity", "warn"), cfg["meta"].get("why", ""), False,
                    exception="GX returned no result for this expectation"))
                continue
            outcome = _outcome(cfg, match, id_col)
            if (not outcome.success and outcome.exception is None and views[view].height == 0
                    and cfg["type"] in _UNDEFINED_WHEN_EMPTY):
                outcome.success, outcome.note = True, "no rows: rate undefined"
            outcomes.append(outcome)
    return SuiteResult(suite=suite["name"], success=all(o.success for o in outcomes),
                       row_count=frame.height, parameters=_jsonable(params), outcomes=outcomes,
                       checks=dict(meta.get("checks", {})))
