"""Pack FER2013 (train + validation, 48×48 grey) — or a lake's FEID plus fer2013 validation —
into one lossless compressed ``.npz`` that travels with the repository to a GPU machine.

    python bench/pack_fer.py                          # ../shared/data/fer2013 → .data/fer2013_48.npz
    python bench/pack_fer.py --feid-lake lake         # FEID faces (split=train) + fer2013 validation

The file is read by ``bench/train_fer.py --npz`` and ``bench/train_throughput.py --npz``;
format in :mod:`seke.train.packing` (MED residuals + LZMA, ≈ 55 MB for all of FER2013).
"""

from __future__ import annotations

import argparse
import sys
import time
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
    t0 = time.perf_counter()
    meta: dict = {"source": args.data_dir}
    if args.feid_lake:
        from seke.lake import Lake

        lake = Lake(args.feid_lake)
        version = lake.version("feid")
        train, errors = from_feid(lake.dataset("feid", version).to_table())
        train.split[:] = "train"
        parts = lake.partition_names("feid", version)
        meta.update(feid_lake=args.feid_lake, feid_version=version, partitions=parts,
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
    t1 = time.perf_counter()
    out = save_npz(arrays, args.out, meta)
    t2 = time.perf_counter()
    back, _ = load_npz(out)
    t3 = time.perf_counter()
    assert np.array_equal(back.images, arrays.images), "round trip changed pixels"
    size = out.stat().st_size
    print(f"{len(arrays)} faces {dict(zip(*np.unique(arrays.split.astype(str), return_counts=True)))} "
          f"decode {t1 - t0:.1f}s, pack {t2 - t1:.1f}s, unpack {t3 - t2:.1f}s")
    print(f"{out}: {size / 2**20:.1f} MiB ({size / arrays.images.nbytes:.3f} of raw pixels), "
          f"data_version={meta.get('data_version')}")
    print(f"RESULT npz_mib={size / 2**20:.2f} faces={len(arrays)} ratio_vs_raw={size / arrays.images.nbytes:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
