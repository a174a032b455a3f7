"""Dagster glue: the quality gates of a table as asset checks emitted from the asset body.

Usage in an asset (DESIGN.md §8: results come from the asset body, so a check never loads
other partitions)::

    @dg.asset(partitions_def=faces_partitions,
              check_specs=check_specs("verified_labels", "verified_labels", faces_partitions))
    def verified_labels(context, ...):
        frame = ...                                  # the partition, as written
        results = check_results("verified_labels", frame, input_rows=n_faces,
                                knowledge=knowledge)
        lake.write_partition("verified_labels", partition, frame)
        return dg.MaterializeResult(metadata=..., check_results=results)

Blocking checks (``blocking=True`` + severity ERROR) stop every downstream asset of the same
run when they fail (e.g. FEID/FEAB are not written); WARN checks only show in the UI.
"""

from __future__ import annotations

import warnings
from typing import Any, Mapping, Sequence

import dagster as dg
import polars as pl

from expectations.gates import GateConfig, GateResult, check_names, evaluate
from seke.knowledge import Knowledge


def _key(asset_key: dg.AssetKey | str | Sequence[str]) -> dg.AssetKey:
    return dg.AssetKey.from_coercible(asset_key)


def check_specs(table: str, asset_key: dg.AssetKey | str | Sequence[str],
                partitions_def: dg.PartitionsDefinition | None = None) -> list[dg.AssetCheckSpec]:
    """One ``AssetCheckSpec`` per gate of ``table`` (names from the suite meta, plus the
    consistency checks for ``verified_labels``), ``blocking`` as the suite says."""
    key = _key(asset_key)
    specs = []
    for name, (blocking, description) in check_names(table).items():
        kw: dict[str, Any] = {}
        if partitions_def is not None:
            kw["partitions_def"] = partitions_def
        with warnings.catch_warnings():  # per-partition check specs are a "preview" API in 1.13
            warnings.simplefilter("ignore", dg.PreviewWarning)
            specs.append(dg.AssetCheckSpec(name, asset=key, blocking=blocking,
                                           description=f"[{'blocking' if blocking else 'warn'}] {description}",
                                           **kw))
    return specs


def _metadata(gate: GateResult) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in gate.metadata.items():
        if v is None or v == "":
            continue
        if isinstance(v, (list, dict)):
            out[k] = dg.MetadataValue.json(v)
        elif isinstance(v, bool):
            out[k] = dg.MetadataValue.bool(v)
        elif isinstance(v, float):
            out[k] = dg.MetadataValue.float(v)
        elif isinstance(v, int):
            out[k] = dg.MetadataValue.int(v)
        else:
            out[k] = dg.MetadataValue.text(str(v))
    return out


def to_check_results(gates: Sequence[GateResult],
                     asset_key: dg.AssetKey | str | Sequence[str] | None = None,
                     extra_metadata: Mapping[str, Any] | None = None
                     ) -> list[dg.AssetCheckResult]:
    """Dagster results for already-evaluated gates (blocking → ERROR, else WARN);
    ``extra_metadata`` (e.g. whether the partition was published) goes on every result."""
    key = None if asset_key is None else _key(asset_key)
    return [dg.AssetCheckResult(
        check_name=g.check, asset_key=key, passed=g.passed, metadata={**_metadata(g), **(extra_metadata or {})},
        severity=dg.AssetCheckSeverity.ERROR if g.blocking else dg.AssetCheckSeverity.WARN,
        description=g.description) for g in gates]


def check_results(table: str, frame: pl.DataFrame, *, input_rows: int | None = None,
                  parameters: Mapping[str, Any] | None = None,
                  config: GateConfig = GateConfig(), knowledge: Knowledge | None = None,
                  asset_key: dg.AssetKey | str | Sequence[str] | None = None
                  ) -> list[dg.AssetCheckResult]:
    """Evaluate every gate of ``table`` on one partition and return the check results.

    ``input_rows`` sizes the row-count bounds (see the suite's ``parameters``); ``parameters``
    override suite parameters (``parse_failure_ceiling``, ``abstain_rate_ceiling``,
    ``min_rows``/``max_rows``); ``config`` holds the consistency floor/ceiling; ``knowledge``
    scores faces whose ``consistency_flags`` are null. ``asset_key`` is only needed in a
    multi-asset.
    """
    return to_check_results(evaluate(table, frame, input_rows=input_rows, parameters=parameters,
                                     config=config, knowledge=knowledge), asset_key)
