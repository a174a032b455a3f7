"""Pack FER2013 (train + validation, 48×48 grey) — or a lake's FEID plus fer2013 validation —
into one lossless compressed ``.npz`` that travels with the repository to a GPU machine.

    python bench/pack_fer.py                          # ../shared/data/fer2013 → .data/fer2013_48.npz
    python bench/pack_fer.py --feid-lake lake         # FEID faces (split=train) + fer2013 validation

The file is read by ``bench/train_fer.py --npz`` and ``bench/train_throughput.py --npz``;
format in :mod:`seke.train.packing` (MED residuals + LZMA). Baselines measured in the same run:
zlib (level 6) on the raw pixels, and the original image files (manifest sets only). A data
folder without ``manifest.csv`` (or a lake without FEID) exits 2.

Last line: ``RESULT source=… data=… npz_mib=… faces=… ratio_vs_raw=… zlib_ratio=… files_ratio=…``
(ratios are bytes over the raw 8-bit pixels; ``source=human`` for a set's own labels,
``feid`` for a lake's FEID).
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
import zlib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from seke.train.arrays import FaceArrays, data_version, from_feid, from_manifest  # noqa: E402
from seke.train.packing import load_npz, save_npz  # noqa: E402
from seke.train.run import shared_data_dir  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=str(shared_data_dir() / "fer2013"))
    ap.add_argument("--feid-lake", default=None, help="pack FEID from this lake as the train split")
    ap.add_argument("--out", default=".data/fer2013_48.npz")
    ap.add_argument("--limit", type=int, default=None, help="at most this many faces per split")
    args = ap.parse_args(argv)
    data_dir = Path(args.data_dir)
    if not (data_dir / "manifest.csv").is_file():
        print(f"no data: {data_dir}/manifest.csv not found", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    meta: dict = {"source": args.data_dir, "set": "fer2013", "labels": "human"}
    file_bytes = float("nan")
    if args.feid_lake:
        from seke.lake import Lake

        lake = Lake(args.feid_lake)
        if not lake.exists("feid"):
            print(f"no data: no feid table in {args.feid_lake}", file=sys.stderr)
            return 2
        version = lake.version("feid")
        train, errors = from_feid(lake.dataset("feid", version).to_table())
        train.split[:] = "train"
        parts = lake.partition_names("feid", version)
        meta.update(set="feid", labels="feid", feid_lake=args.feid_lake, feid_version=version, partitions=parts,
                    data_version=data_version(parts, train.face_id), feid_errors=len(errors))
        val, _ = from_manifest(args.data_dir, splits=["validation"], limit=args.limit)
        arrays = FaceArrays.concat([train if args.limit is None else train.subset(slice(0, args.limit)), val])
    else:
        parts_ = []
        for split in ("train", "validation"):
            a, errors = from_manifest(args.data_dir, splits=[split], limit=args.limit)
            if errors:
                print(f"{split}: {len(errors)} unreadable files, e.g. {errors[0]}")
            parts_.append(a)
        arrays = FaceArrays.concat(parts_)
        meta["data_version"] = data_version(["fer2013"], arrays.face_id)
        file_bytes = sum(source_file_sizes(data_dir, split, args.limit) for split in ("train", "validation"))
    t1 = time.perf_counter()
    out = save_npz(arrays, args.out, meta)
    t2 = time.perf_counter()
    back, _ = load_npz(out)
    t3 = time.perf_counter()
    assert np.array_equal(back.images, arrays.images), "round trip changed pixels"
    size = out.stat().st_size
    raw = arrays.images.nbytes
    zlib_ratio = len(zlib.compress(arrays.images.tobytes(), 6)) / raw
    counts = {str(k): int(v) for k, v in zip(*np.unique(arrays.split.astype(str), return_counts=True))}
    print(f"{len(arrays)} faces {counts} decode {t1 - t0:.1f}s, pack {t2 - t1:.1f}s, unpack {t3 - t2:.1f}s")
    print(f"{out}: {size / 2**20:.1f} MiB ({size / raw:.3f} of raw pixels, {raw / 1e6:.1f} MB), "
          f"data_version={meta.get('data_version')}; baselines: zlib on raw pixels {zlib_ratio:.3f}, "
          f"original files {file_bytes / raw:.3f}")
    names = {"train": meta["set"], "validation": "fer2013"}
    data = ",".join(f"{names.get(k, meta['set'])}[{k}]:{int(v)}" for k, v in counts.items())
    print(f"RESULT source={meta['labels']} data={data} npz_mib={size / 2**20:.2f} faces={len(arrays)} "
          f"ratio_vs_raw={size / raw:.3f} zlib_ratio={zlib_ratio:.3f} files_ratio={file_bytes / raw:.3f}")
    return 0


def source_file_sizes(folder: Path, split: str, limit: int | None) -> int:
    """Bytes of the original image files :func:`from_manifest` reads for ``split`` (same rows)."""
    with open(folder / "manifest.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r.get("split", "") == split]
    if limit is not None and limit < len(rows):  # the same seeded sample as from_manifest
        rows = [rows[i] for i in np.sort(np.random.default_rng(0).choice(len(rows), size=limit, replace=False))]
    return sum((folder / r["image"]).stat().st_size for r in rows)


if __name__ == "__main__":
    raise SystemExit(main())
