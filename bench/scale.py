"""Scale benchmark: 1M labelled faces through label -> FEID/FEAB, and DuckDB over the lake.

What it measures (targets: peak RSS <= 1 GiB, query <= 0.2 s; the lake is Delta tables):

1. Generates a synthetic lake of ``--rows`` faces (default 1,000,000) split into ``--batches``
   partitions: ``verified_labels`` rows in the real schema (``seke.schemas.VERIFIED_LABELS``)
   and matching ``raw_faces`` rows whose ``crop_png`` is a tiny placeholder (no images needed;
   FEID/FEAB builders skip faces without a crop, so a placeholder keeps every face in play).
2. Runs the label -> FEID/FEAB stage the way the assets do -- one partition at a time with
   ``seke.feid.build_feid`` / ``seke.feab.build_feab``, each partition written with
   ``seke.lake.Lake`` -- in a *child process*, and reports that process's peak RSS
   (``resource.getrusage(RUSAGE_SELF).ru_maxrss``). Baseline: the peak RSS of a child that only
   imports the same libraries, measured in the same run.
3. Builds the analysts' warehouse (``seke.warehouse.build_warehouse``: views over the current
   Delta files) and times DuckDB through it (``connect_readonly``, the sandboxed connection
   ``seke sql`` uses) over all ``verified_labels`` partitions (1M rows): per-class counts + mean
   valence/arousal of accepted faces; median of ``--repeats`` runs, plus the first (cold) run.
   Baseline: the same aggregation with polars' ``scan_delta``, same run.

Last line: ``RESULT source=simulated data=synthetic:ROWS peak_rss_gib=... query_s=... polars_query_s=...
baseline_rss_gib=... rows=...`` (generated rows, no face data; ``polars_query_s`` and
``baseline_rss_gib`` are the baselines).
Usage: ``python bench/scale.py [--rows 1000000] [--batches 100] [--lake DIR] [--keep]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

EXPRESSIONS = ["neutral", "happiness", "sadness", "surprise", "fear", "disgust", "anger", "contempt"]
PLACEHOLDER_PNG = b"\x89PNG\r\n\x1a\n" + bytes(56)   # 64 bytes: stands in for a 48x48 crop
QUERY = """
SELECT expression, count(*) AS n, avg(valence) AS mean_valence, avg(arousal) AS mean_arousal
FROM verified_labels
WHERE status = 'accepted'
GROUP BY expression ORDER BY expression
"""


# ---- 1. synthetic lake ---------------------------------------------------------------------

def synth_partition(batch_index: int, n: int, seed: int = 0):
    """(verified_labels, raw_faces) Arrow tables for one partition of ``n`` faces."""
    import numpy as np
    import pyarrow as pa

    from seke import schemas

    rng = np.random.default_rng(seed * 100_003 + batch_index)
    ids = [f"f{batch_index:04d}{i:07d}" for i in range(n)]
    expr_idx = rng.choice(len(EXPRESSIONS), size=n, p=[.25, .25, .1, .1, .08, .07, .1, .05])
    expression = [EXPRESSIONS[i] for i in expr_idx]
    probs = rng.dirichlet(np.ones(8), size=n)
    valence = np.clip(rng.normal(0, 0.5, n), -1, 1)
    arousal = np.clip(rng.normal(0, 0.4, n), -1, 1)
    au_ids = np.array([1, 2, 4, 5, 6, 7, 9, 10, 11, 12, 15, 17, 20, 23, 24, 25, 26], dtype=np.int32)
    au_mask = rng.random((n, len(au_ids))) < 0.2
    aus = [au_ids[m].tolist() for m in au_mask]
    status = np.where(rng.random(n) < 0.85, "accepted", "abstained")
    subjects = [f"s{batch_index:04d}{i // 8:05d}" for i in range(n)]
    origin = np.where(rng.random(n) < 0.3, "human", "verified")
    labels = pa.table({
        "face_id": ids, "subject_id": subjects, "split": ["train"] * n,
        "status": status.tolist(),
        "abstain_reason": [None if s == "accepted" else "uncertain" for s in status],
        "strategy": ["sv_uamc"] * n, "expression": expression,
        "expression_confidence": rng.uniform(0.5, 1, n), "expression_origin": origin.tolist(),
        "expression_probs": pa.array(list(probs), type=pa.list_(pa.float64())),
        "valence": valence, "arousal": arousal, "va_confidence": rng.uniform(0.4, 1, n),
        "va_origin": ["verified"] * n, "aus": pa.array(aus, type=pa.list_(pa.int32())),
        "au_confidence": rng.uniform(0.4, 1, n), "au_origin": ["generated"] * n,
        "n_samples": rng.integers(3, 11, n).astype(np.int32),
        "n_calls": rng.integers(3, 12, n).astype(np.int32),
        "stop_reason": ["confident"] * n, "verdict": ["accept"] * n,
        "consistency_score": rng.uniform(0, 1, n), "knowledge_version": ["k-v1"] * n,
    })
    labels = schemas.conform(labels, schemas.VERIFIED_LABELS)
    raw = schemas.conform(pa.table({
        "face_id": ids, "file_name": [f"{i}.png" for i in ids], "face_index": np.zeros(n, np.int32),
        "subject_id": subjects, "crop_png": pa.array([PLACEHOLDER_PNG] * n, type=pa.binary()),
        "crop_size": np.full(n, 48, np.int32), "detector": ["passthrough"] * n,
    }), schemas.RAW_FACES)
    return labels, raw


def generate(lake_root: Path, rows: int, batches: int) -> list[dict[str, str]]:
    from seke.lake import Lake

    lake = Lake(str(lake_root))
    per = rows // batches
    parts = []
    for b in range(batches):
        n = per + (1 if b < rows % batches else 0)
        part = {"source": "synth", "batch": f"b{b:04d}"}
        labels, raw = synth_partition(b, n)
        lake.write_partition("verified_labels", part, labels)
        lake.write_partition("raw_faces", part, raw)
        parts.append(part)
    return parts


# ---- 2. label -> FEID/FEAB in a child process ----------------------------------------------

def _child_stage(lake_root: str, parts_json: str) -> None:
    """Runs in the child: the per-partition FEID/FEAB stage; prints a JSON line of figures."""
    import resource

    from seke.feab import build_feab
    from seke.feid import build_feid
    from seke.lake import Lake

    lake = Lake(lake_root)
    t0 = time.perf_counter()
    feid_rows = feab_rows = 0
    for part in json.loads(parts_json):
        labels = lake.read_partition("verified_labels", part)
        raw = lake.read_partition("raw_faces", part)
        feid = build_feid(labels, raw)
        feab = build_feab(labels, raw)
        lake.write_partition("feid", part, feid)
        lake.write_partition("feab", part, feab)
        feid_rows += feid.height
        feab_rows += feab.height
        del labels, raw, feid, feab
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"peak_rss_gib": peak_kib / 2**20, "stage_s": time.perf_counter() - t0,
                      "feid_rows": feid_rows, "feab_rows": feab_rows}))


def _child_baseline() -> None:
    import resource

    import duckdb  # noqa: F401
    import polars  # noqa: F401
    import pyarrow.parquet  # noqa: F401

    import seke.feab  # noqa: F401
    import seke.feid  # noqa: F401
    import seke.lake  # noqa: F401
    print(json.dumps({"peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}))


def run_child(*args: str) -> dict:
    out = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    if out.returncode != 0:
        raise RuntimeError(f"child {args[:1]} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# ---- 3. DuckDB query ------------------------------------------------------------------------

def time_queries(lake_root: Path, repeats: int) -> tuple[float, float, float, list[tuple]]:
    """(cold_s, median_s, polars_median_s, rows) for the per-class aggregation."""
    import polars as pl

    from seke.lake import Lake
    from seke.warehouse import build_warehouse, connect_readonly

    db = str(lake_root / "warehouse.duckdb")
    build_warehouse(Lake(str(lake_root)), db)
    con = connect_readonly(db)
    times, result = [], []
    for _ in range(repeats):
        t = time.perf_counter()
        result = con.execute(QUERY).fetchall()
        times.append(time.perf_counter() - t)
    ptimes = []
    for _ in range(repeats):
        t = time.perf_counter()
        frame = (pl.scan_delta(str(lake_root / "verified_labels"))
                 .filter(pl.col("status") == "accepted")
                 .group_by("expression")
                 .agg(pl.len().alias("n"), pl.col("valence").mean(), pl.col("arousal").mean())
                 .sort("expression").collect())
        ptimes.append(time.perf_counter() - t)
    # Both engines must agree, or the timing is meaningless.
    assert [r[1] for r in result] == frame["n"].to_list(), (result, frame)
    return times[0], statistics.median(times), statistics.median(ptimes), result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--batches", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--lake", type=Path, default=None, help="lake dir (default: a temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the generated lake")
    args = ap.parse_args(argv)

    lake_root = args.lake or Path(tempfile.mkdtemp(prefix="seke-scale-")) / "lake"
    try:
        t = time.perf_counter()
        parts = generate(lake_root, args.rows, args.batches)
        gen_s = time.perf_counter() - t
        print(f"generated {args.rows:,} faces in {len(parts)} partitions at {lake_root} in {gen_s:.1f}s")

        base = run_child("--child-baseline")
        stage = run_child("--child-stage", str(lake_root), json.dumps(parts))
        print(f"label->FEID/FEAB stage (per partition, seke.feid.build_feid/seke.feab.build_feab): "
              f"{stage['stage_s']:.1f}s, feid rows {stage['feid_rows']:,}, feab rows {stage['feab_rows']:,}")
        print(f"peak RSS: stage {stage['peak_rss_gib']:.3f} GiB vs import-only baseline "
              f"{base['peak_rss_gib']:.3f} GiB (ratio {stage['peak_rss_gib'] / base['peak_rss_gib']:.2f}x); "
              f"target <= 1 GiB: {'met' if stage['peak_rss_gib'] <= 1 else 'MISSED'}")

        cold, med, pmed, result = time_queries(lake_root, args.repeats)
        n = sum(r[1] for r in result)
        print(f"DuckDB per-class counts + mean VA over {args.rows:,} rows ({n:,} accepted): "
              f"cold {cold:.3f}s, median {med:.3f}s of {args.repeats}; polars lazy scan baseline "
              f"median {pmed:.3f}s (DuckDB/polars ratio {med / pmed:.2f}); target <= 0.2 s: "
              f"{'met' if med <= 0.2 else 'MISSED'}")
        for expr, cnt, v, a in result:
            print(f"  {expr:<10} n={cnt:>7,} valence={v:+.3f} arousal={a:+.3f}")
        print(f"RESULT source=simulated data=synthetic:{args.rows} peak_rss_gib={stage['peak_rss_gib']:.3f} "
              f"query_s={med:.3f} polars_query_s={pmed:.3f} baseline_rss_gib={base['peak_rss_gib']:.3f} "
              f"rows={args.rows} lake=delta")
        return 0
    finally:
        if not args.keep and args.lake is None:
            shutil.rmtree(lake_root.parent, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child-stage":
        _child_stage(sys.argv[2], sys.argv[3])
    elif len(sys.argv) > 1 and sys.argv[1] == "--child-baseline":
        _child_baseline()
    else:
        raise SystemExit(main())
