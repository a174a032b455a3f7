"""FEID/FEAB, exports, warehouse and evaluator on real labelled faces (../shared/data).

Human labels only (as if every face were accepted with its manifest labels; VA derived from the
circumplex centre of the expression): CK+ (subjects, expression, FACS AUs) and the FER2013
validation split (expression, no subjects). Prints split figures (subject overlap, FEAB share
per expression), build and export throughput, warehouse query time, and the constant-baseline
scores on FEAB. Baseline for the throughput ratio: the bare polars join of labels and crops that
FEID construction starts from, timed in the same run.

    PYTHONPATH=. .venv/bin/python bench/products.py [--fer-limit N]

Without ../shared/data (CK+ and FER2013) it exits 2. RESULT: ``source=human`` (the sets' own
labels; ``source=human+offline`` etc. with ``--annotator``), ``data=`` faces per set, and the
baselines (``baseline_accuracy``: the constant-neutral model on FEAB; ``class_prior_accuracy``:
always the commonest gold expression of the same FEAB faces; ``feid_vs_join_ratio``: FEID build
time over the bare join).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import sys
import tempfile
import time
from pathlib import Path

import polars as pl
import pyarrow as pa
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from seke import exports  # noqa: E402
from seke.bench_data import class_prior_rate  # noqa: E402
from seke.evaluate import constant_baseline, evaluate  # noqa: E402
from seke.feab import SPLIT_COLUMN, build_feab, split_benchmark  # noqa: E402
from seke.feid import build_feid  # noqa: E402
from seke.knowledge import VA_REGIONS_V1  # noqa: E402
from seke.lake import Lake  # noqa: E402
from seke.schemas import RAW_FACES, VERIFIED_LABELS, conform  # noqa: E402
from seke.taxonomy import AU_CATALOGUE, au_column, normalise_expression  # noqa: E402
from seke.warehouse import build_warehouse, connect_readonly  # noqa: E402

DATA = Path(os.environ.get("SEKE_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def _png(path: Path) -> bytes:
    data = path.read_bytes()
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return data
    buf = io.BytesIO()
    Image.open(io.BytesIO(data)).convert("L").save(buf, format="PNG")
    return buf.getvalue()


def load(name: str, limit: int | None = None) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(raw_faces, verified_labels) frames from a shared-data manifest, human labels only."""
    man = pl.read_csv(DATA / name / "manifest.csv")
    if "split" in man.columns:
        man = man.filter(pl.col("split") == "validation")
    if limit:
        man = man.head(limit)
    raw, labels = [], []
    au_cols = [au_column(a) for a in AU_CATALOGUE if au_column(a) in man.columns]
    seen = set()
    for r in man.iter_rows(named=True):
        png = _png(DATA / name / r["image"])
        fid = hashlib.sha256(png).hexdigest()
        if fid in seen:  # byte-identical duplicates (FER2013 has some) are one face
            continue
        seen.add(fid)
        e = normalise_expression(r["expression"])
        aus = [int(c[2:]) for c in au_cols if r[c] == 1] if au_cols else None
        subject = r.get("subject_id")
        raw.append({"face_id": fid, "file_name": r["image"], "face_index": 0, "subject_id": subject,
                    "crop_png": png, "known_expression": e, "known_aus": aus, "detector": "passthrough"})
        region = VA_REGIONS_V1.get(e or "neutral")
        labels.append({"face_id": fid, "subject_id": subject, "status": "accepted" if e else "abstained",
                       "expression": e, "expression_confidence": 1.0, "expression_origin": "human",
                       "valence": region.valence, "arousal": region.arousal, "va_confidence": 0.5,
                       "va_origin": "derived", "aus": aus, "au_confidence": 1.0 if aus is not None else None,
                       "au_origin": "human" if aus is not None else None, "n_samples": 0, "n_calls": 0,
                       "consistency_flags": [], "audit_hidden": []})
    raw_df = pl.from_arrow(conform(pa.Table.from_pylist(raw), RAW_FACES))
    lab_df = pl.from_arrow(conform(pa.Table.from_pylist(labels), VERIFIED_LABELS))
    return raw_df, lab_df


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--fer-limit", type=int, default=None, help="FER2013 validation faces (default all 3,589)")
    ap.add_argument("--annotator", default="", help="also evaluate this annotator spec on FEAB (e.g. offline)")
    ap.add_argument("--eval-limit", type=int, default=0, help="faces for --annotator (0 = all FEAB faces)")
    args = ap.parse_args(argv)
    missing = [s for s in ("ckplus", "fer2013") if not (DATA / s / "manifest.csv").exists()]
    if missing:
        print(f"no data: {', '.join(missing)} not found at {DATA}; set SEKE_SHARED_DATA", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    ck_raw, ck_lab = load("ckplus")
    fer_raw, fer_lab = load("fer2013", args.fer_limit)
    print(f"loaded ckplus {ck_raw.height} faces, fer2013/validation {fer_raw.height} faces "
          f"in {time.perf_counter() - t0:.1f}s")

    # ---- split --------------------------------------------------------------------------------
    ck = split_benchmark(ck_lab)
    sides = ck.group_by("subject_id").agg(pl.col(SPLIT_COLUMN).n_unique().alias("n"))
    overlap = int((sides["n"] > 1).sum())
    ck_share = float((ck[SPLIT_COLUMN] == "feab").mean())
    per_expr = ck.group_by("expression").agg((pl.col(SPLIT_COLUMN) == "feab").mean().alias("s")).sort("expression")
    n_subj = ck["subject_id"].n_unique()
    n_subj_feab = ck.filter(pl.col(SPLIT_COLUMN) == "feab")["subject_id"].n_unique()
    print(f"ckplus: {n_subj} subjects, {n_subj_feab} in FEAB; FEAB share of faces {ck_share:.3f}; "
          f"subjects on both sides: {overlap}")
    print("  FEAB share per expression: " + ", ".join(f"{e} {s:.2f}" for e, s in per_expr.iter_rows()))
    greedy = split_benchmark(ck_lab, subjects="greedy")
    g_expr = greedy.group_by("expression").agg((pl.col(SPLIT_COLUMN) == "feab").mean().alias("s")).sort("expression")
    g_overlap = int((greedy.group_by("subject_id").agg(pl.col(SPLIT_COLUMN).n_unique())[SPLIT_COLUMN] > 1).sum())
    print(f"  greedy (one-shot) mode: FEAB share {float((greedy[SPLIT_COLUMN] == 'feab').mean()):.3f}, "
          f"subjects on both sides {g_overlap}; per expression: "
          + ", ".join(f"{e} {s:.2f}" for e, s in g_expr.iter_rows()))
    ck_dev = float((per_expr["s"] - 0.2).abs().max())
    g_dev = float((g_expr["s"] - 0.2).abs().max())
    fer = split_benchmark(fer_lab)
    fer_expr = fer.group_by("expression").agg((pl.col(SPLIT_COLUMN) == "feab").mean().alias("s"))
    fer_dev = float((fer_expr["s"] - 0.2).abs().max())
    print(f"fer2013: FEAB share {float((fer[SPLIT_COLUMN] == 'feab').mean()):.4f}, "
          f"max per-expression deviation from 0.2: {fer_dev:.4f}")

    # ---- build -------------------------------------------------------------------------------
    raw = pl.concat([ck_raw, fer_raw])
    labels = pl.concat([ck_lab.with_columns(pl.lit("ckplus").alias("source")),
                        fer_lab.with_columns(pl.lit("fer2013").alias("source"))]).with_columns(
        pl.lit("real").alias("batch"))
    t = time.perf_counter()
    base = labels.filter(pl.col("status") == "accepted").join(raw.select("face_id", "crop_png"), on="face_id")
    t_base = time.perf_counter() - t
    t = time.perf_counter()
    feid = build_feid(labels, raw)
    t_feid = time.perf_counter() - t
    t = time.perf_counter()
    feab = build_feab(labels, raw)
    t_feab = time.perf_counter() - t
    assert not set(feid["face_id"]) & set(feab["face_id"])
    print(f"FEID: {feid.height} records of {feid['face_id'].n_unique()} faces in {t_feid:.2f}s "
          f"({feid.height / t_feid:.0f} records/s); baseline join of {base.height} faces {t_base:.3f}s")
    print(f"  templates used per task: " + ", ".join(
        f"{k} {v}" for k, v in feid.group_by("task").agg(pl.col("template_id").n_unique()).sort("task").iter_rows()))
    print(f"FEAB: {feab.height} items of {feab['face_id'].n_unique()} faces in {t_feab:.2f}s; per task "
          + ", ".join(f"{k} {v}" for k, v in feab.group_by("task").len().sort("task").iter_rows()))

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        t = time.perf_counter()
        exports.export_llava(feid, out / "llava")
        t_llava = time.perf_counter() - t
        t = time.perf_counter()
        exports.export_sharegpt(feid, out / "sharegpt")
        t_share = time.perf_counter() - t
        t = time.perf_counter()
        exports.export_hf_parquet(feid, out / "hf", "feid", "train")
        exports.export_hf_parquet(feab, out / "hf", "feab", "test")
        t_hf = time.perf_counter() - t
        hf_mb = sum(p.stat().st_size for p in (out / "hf").rglob("*.parquet")) / 1e6
        print(f"exports: llava {t_llava:.2f}s, sharegpt {t_share:.2f}s, hf parquet {t_hf:.2f}s ({hf_mb:.1f} MB)")

        lake = Lake(str(out / "lake"))
        for src in ("ckplus", "fer2013"):
            part = {"source": src, "batch": "real"}
            lake.write_partition("verified_labels", part, labels.filter(pl.col("source") == src))
            lake.write_partition("feid", part, feid.filter(pl.col("source") == src))
            lake.write_partition("feab", part, feab.filter(pl.col("source") == src))
        t = time.perf_counter()
        build_warehouse(lake, str(out / "w.duckdb"))
        t_wh = time.perf_counter() - t
        con = connect_readonly(str(out / "w.duckdb"))
        qdir = Path(__file__).resolve().parents[1] / "queries"
        t = time.perf_counter()
        names = ("class_balance_per_source", "au_prevalence_by_expression", "label_origin_mix",
                 "feab_gold_composition", "feid_records_by_task")
        for name in names:
            con.execute((qdir / f"{name}.sql").read_text()).fetchall()
        t_q = (time.perf_counter() - t) / len(names)
        au12 = con.execute("SELECT prevalence FROM (" + (qdir / "au_prevalence_by_expression.sql").read_text()
                           .rstrip().rstrip(";") + ") WHERE expression='happiness' AND au='AU12'").fetchone()
        print(f"warehouse: built in {t_wh:.2f}s, mean saved-query time {t_q * 1000:.0f} ms; "
              f"CK+ P(AU12 | happiness) = {au12[0]}")

    gold = feab.filter(pl.col("task") == "expression")["gold_expression"].drop_nulls().to_list()
    prior_acc = class_prior_rate(gold)
    t = time.perf_counter()
    res = evaluate(constant_baseline(), feab, plots=True)
    t_eval = time.perf_counter() - t
    print(f"evaluator (constant-neutral baseline): {feab['face_id'].n_unique()} faces in {t_eval:.2f}s; "
          f"accuracy {res.value('expression', 'accuracy'):.3f}, macro-F1 {res.value('expression', 'macro_f1'):.3f}, "
          f"AU mean F1 {res.value('aus', 'mean_f1'):.3f}")
    extra = ""
    if args.annotator:
        from seke.evaluate import load_annotator
        from seke.knowledge import knowledge_v1

        sub = feab
        if args.eval_limit:
            keep = feab["face_id"].unique(maintain_order=True).head(args.eval_limit)
            sub = feab.filter(pl.col("face_id").is_in(keep))
        ann = load_annotator(args.annotator, knowledge_v1())
        t = time.perf_counter()
        r = evaluate(ann, sub, plots=False)
        t_ann = time.perf_counter() - t
        n = sub["face_id"].n_unique()
        print(f"evaluator ({r.model}): {n} faces in {t_ann:.1f}s ({n / t_ann:.1f} faces/s)")
        for src in ("ckplus", "fer2013"):
            ids = set(sub.filter(pl.col("source") == src)["face_id"])
            if not ids:
                continue
            it = r.items.filter(pl.col("face_id").is_in(list(ids)) & (pl.col("task") == "expression"))
            acc = float(it["correct"].fill_null(False).mean())
            print(f"  {src}: expression accuracy {acc:.3f} on {it.height} faces")
        print("  " + ", ".join(f"{k} {v:.3f}" for k, v in r.summary().items() if v is not None))
        base_acc = evaluate(constant_baseline(), sub, plots=False).value("expression", "accuracy")
        extra = (f" annotator_accuracy={r.value('expression', 'accuracy'):.3f} "
                 f"annotator_macro_f1={r.value('expression', 'macro_f1'):.3f} "
                 f"annotator_au_mean_f1={r.value('aus', 'mean_f1'):.3f} "
                 f"annotator_ece={r.value('expression', 'ece'):.3f} "
                 f"annotator_vs_constant_accuracy_ratio={r.value('expression', 'accuracy') / base_acc:.2f}")
    ratio = t_feid / t_base if t_base > 0 else float("nan")
    print(f"FEID build / baseline join time ratio: {ratio:.1f}")
    source = "human" + (f"+{args.annotator}" if args.annotator else "")
    print(f"RESULT source={source} data=ckplus:{ck_raw.height},fer2013[validation]:{fer_raw.height} "
          f"feab_subject_overlap={overlap} ckplus_feab_face_share={ck_share:.3f} "
          f"ckplus_max_class_dev_hash={ck_dev:.3f} ckplus_max_class_dev_greedy={g_dev:.3f} "
          f"fer_feab_max_class_dev={fer_dev:.4f} feid_records={feid.height} "
          f"feid_records_per_s={feid.height / t_feid:.0f} feid_vs_join_ratio={ratio:.1f} "
          f"feab_items={feab.height} export_llava_s={t_llava:.2f} export_hf_s={t_hf:.2f} "
          f"warehouse_query_ms={t_q * 1000:.0f} baseline_accuracy={res.value('expression', 'accuracy'):.3f} "
          f"class_prior_accuracy={prior_acc:.3f}"
          + extra)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
