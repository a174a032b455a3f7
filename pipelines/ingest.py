"""``seke ingest DIR``: land a folder as a batch and run ``annotate_batch`` for it, in-process,
on the persistent instance (``$DAGSTER_HOME``), so the runs show in the UI.

For a user without the UI (or a script): the folder is copied into the configured landing zone
(``<landing>/<source>/<batch>/``; uploaded, manifest last, when the zone is on S3), its dynamic
partition is added, ``refresh_knowledge`` runs when the lake has no knowledge yet, then
``annotate_batch``; the summary ``make demo`` prints follows. Exit status 1 when a run fails.
Like the demo it starts with the recovery sweep (:mod:`pipelines.recovery`), so a run killed
earlier never blocks this one.
"""

import argparse
import shutil
import sys
import time
from datetime import date
from pathlib import Path
from typing import Any

import polars as pl
from dagster import DagsterInstance

from assets.partitions import batches
from pipelines.recovery import in_process_run_tags, recover_dead_runs
from resources.landing import partition_key
from seke.landing import MANIFEST
from seke.lake import Lake


def configured_resources() -> dict[str, Any]:
    """The code location's resources with their configuration resolved (EnvVars read)."""
    from dagster import build_resources

    from pipelines.definitions import defs

    with build_resources(defs.resources) as res:
        return {k: getattr(res, k) for k in defs.resources}


def land(folder: Path, landing: Any, source: str, batch: str) -> str:
    """Copy ``folder`` into the landing zone as ``<source>/<batch>/``; returns where it went.
    The manifest (the batch's completeness marker) is written last; a folder without one gets
    a header-only manifest, so the batch lands unlabelled."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST)
    manifest = folder / MANIFEST
    if landing.path.startswith("s3://"):
        bucket, _, prefix = landing.path[len("s3://"):].partition("/")
        base = "/".join(p for p in (prefix.strip("/"), source, batch) if p)
        client = landing.s3_client()
        for p in files:
            client.upload_file(str(p), bucket, f"{base}/{p.relative_to(folder).as_posix()}")
        body = manifest.read_bytes() if manifest.exists() else b"image\n"
        client.put_object(Bucket=bucket, Key=f"{base}/{MANIFEST}", Body=body)
        return f"s3://{bucket}/{base}"
    dest = Path(landing.path) / source / batch
    if dest.resolve() != folder.resolve():
        for p in files:
            target = dest / p.relative_to(folder)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(p, target)
        if manifest.exists():
            shutil.copy2(manifest, dest / MANIFEST)
    if not (dest / MANIFEST).exists():
        (dest / MANIFEST).write_text("image\n", encoding="utf-8")
    return str(dest)


def run_batch(instance: DagsterInstance, key: str, indent: str = "") -> bool:
    """Register partition ``key`` and run ``refresh_knowledge``, ``annotate_batch`` for it and
    ``refresh_warehouse`` on ``instance``; False, with a message, when a job fails.

    Starts with the recovery sweep (runs of dead processes failed, their pool slots freed) and
    tags its runs with this process's pid and host so a later sweep can do the same for them."""
    from pipelines.definitions import defs

    recovered = recover_dead_runs(instance)
    if recovered.failed_runs or recovered.freed_runs:
        print(f"{indent}recovery: {recovered.describe()}")
    if not instance.has_dynamic_partition(batches.name, key):
        try:
            instance.add_dynamic_partitions(batches.name, [key])
        except Exception:  # noqa: BLE001 - another process added it first (unique key): fine
            if not instance.has_dynamic_partition(batches.name, key):
                raise
    for job_name, pkey in (("refresh_knowledge", None), ("annotate_batch", key), ("refresh_warehouse", None)):
        result = defs.resolve_job_def(job_name).execute_in_process(
            instance=instance, partition_key=pkey, raise_on_error=False, tags=in_process_run_tags(),
            run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}})
        print(f"{indent}{job_name}: run {result.run_id} {'succeeded' if result.success else 'FAILED'}")
        if not result.success:
            print(f"{job_name} failed", file=sys.stderr)
            return False
    return True


def batch_summary(lake: Lake, db_path: str, source: str, batch: str, folder: str, seconds: float,
                  title: str = "SEKE") -> str:
    """What the batch became: faces, quarantine reasons, accepted/abstained, FEID/FEAB rows,
    where everything is, and one DuckDB query over the warehouse."""
    part = {"source": source, "batch": batch}

    def rows(table: str) -> pl.DataFrame:
        return lake.read_partition(table, part) if lake.exists(table) else pl.DataFrame()

    faces, labels, quarantine = rows("raw_faces"), rows("verified_labels"), rows("quarantine")
    reasons = (", ".join(f"{r}: {n}" for r, n in quarantine.group_by("reason").len().sort("reason").iter_rows())
               if quarantine.height else "none")
    lines = [f"{title} — batch {source}__{batch} from {folder}",
             f"  faces found: {faces.height}; files/items quarantined: {quarantine.height} ({reasons})"]
    if labels.height:
        n_acc = labels.filter(pl.col("status") == "accepted").height
        lines.append(f"  labels accepted: {n_acc}, abstained: {labels.height - n_acc}")
    for t in ("feid", "feab"):
        if lake.exists(t):
            lines.append(f"  {t.upper()} rows: {rows(t).height}  ->  {lake.display_path(t)}  (version {lake.version(t)})")
    lines.append(f"  lake: {lake.uri}   DuckDB: {db_path}")
    if Path(db_path).exists():
        from seke.warehouse import connect_readonly

        con = connect_readonly(db_path)
        q = ("SELECT expression, count(*) AS faces, round(avg(valence), 2) AS mean_valence "
             f"FROM verified_labels WHERE status = 'accepted' AND batch = '{batch}' GROUP BY 1 ORDER BY 2 DESC")
        lines.append(f"  DuckDB> {q}")
        lines += [f"    {row}" for row in con.execute(q).fetchall()]
        con.close()
    lines.append(f"  wall time: {seconds:.1f} s. See the runs: make ui (http://127.0.0.1:3000)")
    return "\n".join(lines)


def ingest(folder: Path, source: str, batch: str, instance: DagsterInstance | None = None,
           title: str = "SEKE ingest") -> int:
    """Land ``folder``, run the batch, print the summary; 0 on success, 1 when a run failed."""
    t0 = time.time()
    res = configured_resources()
    where = land(folder, res["landing"], source, batch)
    instance = instance or DagsterInstance.get()
    ok = run_batch(instance, partition_key(source, batch), indent="  ")
    print(batch_summary(res["lake"].lake(), res["duckdb"].path, source, batch, where, time.time() - t0, title))
    return 0 if ok else 1


def add_ingest_command(sub: Any) -> None:
    """The ``ingest`` sub-command of the ``seke`` CLI (see :mod:`pipelines.cli`)."""
    p = sub.add_parser("ingest", help="land a folder as a batch and run annotate_batch on the "
                                      "persistent instance (the run shows in the UI)")
    p.add_argument("folder", type=Path, help="images and an optional manifest.csv")
    p.add_argument("--source", help="source name (default: the folder's parent's name)")
    p.add_argument("--batch", help="batch name (default: the folder's name, or today's date)")


def ingest_command(args: argparse.Namespace) -> int:
    folder = args.folder.resolve()
    if not folder.is_dir():
        print(f"seke ingest: {folder} is not a folder", file=sys.stderr)
        return 2
    source = args.source or folder.parent.name or "local"
    batch = args.batch or folder.name or date.today().isoformat()
    try:
        partition_key(source, batch)
    except ValueError as exc:
        print(f"seke ingest: {exc}", file=sys.stderr)
        return 2
    return ingest(folder, source, batch)
