"""Partition overwrite/commit time: the Delta lake (seke.lake.Lake) beside the old hive writer.

What it measures, locally and on a real S3 server (SeaweedFS, started here on loopback ports;
``--no-s3`` skips it): the wall time of replacing one partition of ``--rows`` rows
(verified_labels-shaped, synthetic) ``--repeats`` times, after a warm-up write.

* ``delta``: :meth:`seke.lake.Lake.write_partition` — ``mode="overwrite"`` with a predicate on the
  partition, one atomic commit (plus reading back the version it got).
* ``hive`` (baseline, the writer the lake used before Delta): one Parquet file per partition,
  written to a temp file and renamed locally, one complete PUT on S3, stale files deleted.

Prints medians and ends with
``RESULT source=simulated data=synthetic:ROWS local_delta_ms=… local_hive_ms=… s3_delta_ms=… s3_hive_ms=…
rows=…`` (the ``*_hive_ms`` figures are the baseline; the rows are generated, no face data).
Usage: ``python bench/lake_commit.py [--rows 1000] [--repeats 30] [--no-s3]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def frame(rows: int, seed: int):
    import numpy as np
    import polars as pl

    rng = np.random.default_rng(seed)
    return pl.DataFrame({
        "face_id": [f"{seed:03d}-{i:07d}" for i in range(rows)],
        "status": rng.choice(["accepted", "abstained"], rows).tolist(),
        "expression": rng.choice(["happiness", "sadness", "anger", "neutral"], rows).tolist(),
        "valence": rng.uniform(-1, 1, rows), "arousal": rng.uniform(-1, 1, rows),
        "aus": [[6, 12]] * rows,
    })


def hive_write(fs, root: str, table: str, partition: dict[str, str], df, is_s3: bool) -> None:
    """The pre-Delta writer: one ``part-0.parquet`` per partition, atomic by rename / single PUT."""
    import pyarrow.fs as pafs
    import pyarrow.parquet as pq

    folder = f"{root}/{table}/" + "/".join(f"{k}={v}" for k, v in partition.items())
    final = f"{folder}/part-0.parquet"
    fs.create_dir(folder, recursive=True)
    if is_s3:
        pq.write_table(df.to_arrow(), final, filesystem=fs, compression="zstd")
    else:
        tmp = f"{folder}/.tmp-{uuid.uuid4().hex}.parquet"
        pq.write_table(df.to_arrow(), tmp, filesystem=fs, compression="zstd")
        os.replace(tmp, final)
    for info in fs.get_file_info(pafs.FileSelector(folder)):
        if info.type == pafs.FileType.File and info.path != final and info.base_name.endswith(".parquet"):
            fs.delete_file(info.path)


def measure(lake, rows: int, repeats: int) -> tuple[float, float]:
    """Median ms of a Delta partition overwrite and of the hive baseline on the same storage."""
    part = {"source": "bench", "batch": "b1"}
    fs, root = lake.filesystem()
    frames = [frame(rows, s) for s in range(repeats + 1)]
    lake.write_partition("verified_labels", part, frames[0])            # warm-up: table exists
    hive_write(fs, root, "hive_baseline", part, frames[0], lake.is_s3)
    delta_ms, hive_ms = [], []
    for df in frames[1:]:
        t = time.perf_counter()
        commit = lake.write_partition("verified_labels", part, df)
        delta_ms.append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        hive_write(fs, root, "hive_baseline", part, df, lake.is_s3)
        hive_ms.append((time.perf_counter() - t) * 1000)
    assert lake.read_partition("verified_labels", part).height == rows and commit.version == repeats + 1
    return statistics.median(delta_ms), statistics.median(hive_ms)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--no-s3", action="store_true", help="skip the SeaweedFS measurement")
    args = ap.parse_args(argv)

    from seke.lake import Lake

    results = {}
    with tempfile.TemporaryDirectory(prefix="seke-commit-") as tmp:
        local = measure(Lake(str(Path(tmp) / "lake")), args.rows, args.repeats)
        results["local"] = local
        print(f"local: delta overwrite median {local[0]:.1f} ms vs hive file {local[1]:.1f} ms "
              f"(ratio {local[0] / local[1]:.2f}x), {args.rows} rows, {args.repeats} repeats")
        if not args.no_s3:
            from tests.fixtures_services import _start_weed, _stop

            proc, server = _start_weed(Path(tmp) / "weed", bucket="bench", access_key="bench-key",
                                       secret_key="bench-secret")
            try:
                os.environ.update(server.env())
                s3 = measure(Lake("s3://bench/lake", s3_endpoint=server.endpoint), args.rows, args.repeats)
                results["s3"] = s3
                print(f"s3 (SeaweedFS, loopback): delta overwrite median {s3[0]:.1f} ms vs hive PUT "
                      f"{s3[1]:.1f} ms (ratio {s3[0] / s3[1]:.2f}x)")
            finally:
                _stop(proc)
    s3 = results.get("s3", (float("nan"), float("nan")))
    print(f"RESULT source=simulated data=synthetic:{args.rows} local_delta_ms={local[0]:.1f} "
          f"local_hive_ms={local[1]:.1f} s3_delta_ms={s3[0]:.1f} s3_hive_ms={s3[1]:.1f} rows={args.rows}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
