"""Write–audit–publish for asset bodies: nothing reaches the lake before its blocking checks pass.

Dagster's ``blocking=True`` only stops *downstream* steps, after the checked data is already
written (DESIGN.md §8). So an asset hands its frames to :func:`publish` instead of writing them:

1. every frame's gates (GX suite, ranges, consistency) are evaluated on the frame in memory;
2. if any blocking gate fails, nothing is committed: the previous table version stays visible,
   each frame and its failing rows are kept under ``<lake>/_audit/<table>/<partition>/<run>…``
   for inspection, and :class:`Blocked` carries the failed check results (with that location
   and samples); :func:`fail_blocked` yields them and fails the step without retries, so the
   downstream steps of the run never start;
3. otherwise every frame (and its side tables, e.g. quarantine rows) is committed, and the
   check results carry the published ``(table_uri, version)``.

WARN gates never block publishing.
"""

from dataclasses import dataclass, field
from typing import Iterator, Mapping, Sequence

import polars as pl
import pyarrow as pa
from dagster import AssetCheckResult, AssetExecutionContext, Failure, MetadataValue

from expectations.checks import to_check_results
from expectations.gates import GateResult, any_blocking_failed, quarantine_rows
from seke.lake import Commit, Lake


@dataclass
class Audited:
    """One table's frame for a partition, with its evaluated gates."""

    table: str
    frame: pl.DataFrame | pa.Table
    gates: list[GateResult] = field(default_factory=list)
    asset_key: str | None = None   # needed when one step publishes several assets

    def polars(self) -> pl.DataFrame:
        df = pl.from_arrow(self.frame) if isinstance(self.frame, pa.Table) else self.frame
        assert isinstance(df, pl.DataFrame)
        return df


class Blocked(Exception):
    """A publication stopped by failed blocking checks (nothing was committed)."""

    def __init__(self, message: str, results: list[AssetCheckResult], audit_paths: dict[str, str]):
        super().__init__(message)
        self.results = results
        self.audit_paths = audit_paths


def publish(context: AssetExecutionContext, store: Lake, partition: Mapping[str, str],
            audited: Sequence[Audited],
            side_tables: Sequence[tuple[str, Mapping[str, str], pl.DataFrame | pa.Table]] = ()
            ) -> tuple[dict[str, Commit], list[AssetCheckResult]]:
    """Audit every frame, then commit all of them (and ``side_tables``) or none.

    Returns the commits by table and the check results to attach to the materializations;
    raises :class:`Blocked` when a blocking gate failed.
    """
    failed = [a for a in audited if any_blocking_failed(a.gates)]
    if failed:
        paths: dict[str, str] = {}
        for a in audited:
            paths[a.table] = store.write_audit(a.table, partition, a.polars(), context.run_id)
            bad = quarantine_rows(a.gates, a.table)
            if bad.height:
                store.write_audit(a.table, partition, bad, f"{context.run_id}-failing-rows")
        results: list[AssetCheckResult] = []
        for a in audited:
            results += to_check_results(a.gates, a.asset_key, {"published": MetadataValue.bool(False),
                                    "audit_location": MetadataValue.path(paths[a.table])})
        names = sorted({f"{a.table}.{g.check}" for a in failed for g in a.gates if g.blocking and not g.passed})
        message = (f"blocking checks failed ({', '.join(names)}): partition {dict(partition)} was not "
                   f"published; the previous version stays visible; frames kept at "
                   + ", ".join(paths.values()))
        context.log.error(message)
        raise Blocked(message, results, paths)
    commits = {a.table: store.write_partition(a.table, partition, a.frame) for a in audited}
    for table, part, frame in side_tables:
        store.write_partition(table, part, frame)
    results = []
    for a in audited:
        c = commits[a.table]
        results += to_check_results(a.gates, a.asset_key, {"published": MetadataValue.bool(True),
                                "table_version": MetadataValue.int(c.version)})
    return commits, results


def fail_blocked(blocked: Blocked) -> Iterator[AssetCheckResult]:
    """Yield a blocked publication's check results, then fail the step (never retried: a
    failed check is not transient), so no downstream step of the run starts."""
    yield from blocked.results
    raise Failure(description=str(blocked), allow_retries=False,
                  metadata={f"audit/{t}": MetadataValue.path(p) for t, p in blocked.audit_paths.items()})
