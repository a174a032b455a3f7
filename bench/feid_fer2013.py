"""Build a FEID from the FER2013 train split through the real platform, for training runs.

Lands ``../shared/data/fer2013`` (split ``train``, human expression labels) as one landing
batch, then runs the ``refresh_knowledge`` and ``annotate_batch`` jobs on a real Dagster
instance with the offline annotator — the path a user's batch takes. The human expression is
carried through; valence–arousal and AUs are generated, verified and confidence-scored by
SV-UAMC. The result is a lake whose ``feid`` table is what ``bench/pack_fer.py --feid-lake``
packs for ``bench/train_fer.py`` (the FEID-vs-human-labels ablation).

    PYTHONPATH=. .venv/bin/python bench/feid_fer2013.py --work .data/fer_feid [--limit N]

Prints how many faces landed, were quarantined and reached FEID/FEAB, and the annotation rate.
Baseline measured in the same run: a plain walk over the landed files that only reads and
decodes each image (the floor any ingest pays), as images/s. Without the data folder it exits 2.
Last line: ``RESULT source=… data=fer2013[train]:N faces=… feid_faces=… feab_faces=…
quarantined=… accepted=… faces_per_s=… decode_only_faces_per_s=…`` (``source=`` the annotator
the jobs used: ``SEKE_ANNOTATOR``, default offline).
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def land(data_dir: Path, landing: Path, batch: str, limit: int | None) -> tuple[Path, int]:
    """``landing/fer2013/<batch>/`` with a train-only manifest and the images linked, not copied."""
    with open(data_dir / "manifest.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["split"] == "train"]
    if limit:
        rows = rows[:limit]
    folder = landing / "fer2013" / batch
    land_rows(data_dir, folder, rows, ["image", "split", "expression"])
    return folder, len(rows)


def land_rows(data_dir: Path, folder: Path, rows: list[dict[str, str]], columns: list[str]) -> None:
    """A landing batch at ``folder`` holding ``rows`` of ``data_dir``'s manifest (``columns`` of
    it) with one symlink per image, so the batch holds exactly the manifest's files."""
    folder.mkdir(parents=True, exist_ok=True)
    for r in rows:
        link = folder / r["image"]
        if not link.is_symlink():
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to((data_dir / r["image"]).resolve())
    with open(folder / "manifest.csv", "w", newline="") as fh:  # written last: the batch is landed
        w = csv.DictWriter(fh, fieldnames=columns)
        w.writeheader()
        w.writerows({k: r[k] for k in columns} for r in rows)


def use_work_dir(work: Path, data_dirs: list[Path]) -> None:
    """Point the platform (landing, lake, warehouse, review, Dagster instance) at ``work``; the
    landed batches link into ``data_dirs``, which the landing guard must therefore allow."""
    os.environ["SEKE_LANDING_DIR"] = str(work / "landing")
    os.environ["SEKE_LAKE_URI"] = str(work / "lake")
    os.environ["SEKE_DUCKDB_PATH"] = str(work / "lake" / "warehouse.duckdb")
    os.environ["SEKE_REVIEW_DIR"] = str(work / "review")
    os.environ["SEKE_LANDING_ALLOWED_ROOTS"] = os.pathsep.join(str(d.resolve()) for d in data_dirs)
    os.environ["DAGSTER_HOME"] = str(work / ".dagster")
    (work / ".dagster").mkdir(parents=True, exist_ok=True)
    (work / ".dagster" / "dagster.yaml").write_text((ROOT / "infra" / "dagster.yaml").read_text())


def main(argv: list[str] | None = None) -> int:
    from seke.train.run import shared_data_dir

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=str(shared_data_dir() / "fer2013"))
    ap.add_argument("--work", default=".data/fer_feid", help="holds landing/, lake/ and .dagster/")
    ap.add_argument("--limit", type=int, default=None, help="first N train faces only")
    args = ap.parse_args(argv)
    data_dir = Path(args.data_dir)
    if not (data_dir / "manifest.csv").is_file():
        print(f"no data: {data_dir}/manifest.csv not found (../shared/data absent?)", file=sys.stderr)
        return 2
    work = Path(args.work).resolve()
    use_work_dir(work, [data_dir])

    from dagster import DagsterInstance

    import polars as pl

    from pipelines.ingest import run_batch
    from seke.lake import Lake
    from resources.landing import partition_key

    from seke.faces import BadImage, decode_image, read_file

    batch = f"train-{args.limit}" if args.limit else "train"
    folder, n = land(data_dir, work / "landing", batch, args.limit)
    if not n:
        print(f"no data: no split=train row in {data_dir}/manifest.csv", file=sys.stderr)
        return 2
    # baseline: read and decode every landed image, nothing else
    with open(folder / "manifest.csv", newline="") as fh:
        names = [r["image"] for r in csv.DictReader(fh)]
    t0 = time.perf_counter()
    for name in names:
        try:
            decode_image(read_file(folder / name), name)
        except BadImage:
            pass
    decode_rate = n / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    if not run_batch(DagsterInstance.get(), partition_key("fer2013", batch)):
        return 1
    secs = time.perf_counter() - t0
    lake = work / "lake"
    store = Lake(str(lake))
    raw, feid, feab = (store.read_table(t)["face_id"].n_unique() for t in ("raw_faces", "feid", "feab"))
    quarantined = store.read_table("quarantine")["item_id"].n_unique()
    accepted = store.read_table("verified_labels").filter(pl.col("status") == "accepted").height
    print(f"{n} train images landed at {folder}; {raw} faces, {quarantined} quarantined, "
          f"{accepted} accepted; FEID {feid} faces, FEAB {feab} faces; {secs:.0f} s "
          f"({n / secs:.1f} images/s) → lake {lake}")
    print(f"baseline: reading and decoding the same {n} files alone {decode_rate:.1f} images/s "
          f"(platform / baseline {n / secs / decode_rate:.3f})")
    print(f"RESULT source={os.environ.get('SEKE_ANNOTATOR', 'offline')} data=fer2013[train]:{n} faces={raw} "
          f"feid_faces={feid} feab_faces={feab} quarantined={quarantined} accepted={accepted} "
          f"faces_per_s={n / secs:.1f} decode_only_faces_per_s={decode_rate:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
