"""Choose the near-duplicate threshold (Hamming bits between phash codes) on dev data.

    python bench/phash_threshold.py [--ckplus DIR] [--fer DIR] [--threshold T]

Crops are made exactly as ingestion makes them (:func:`seke.faces.decode_image` → normalised
PNG → :func:`seke.near_dup.phash_hex`). Distances measured:

* ``same_sequence``: frames of one CK+ sequence (the near-duplicates that must be grouped);
* ``same_subject``: one CK+ subject, different sequences (different expressions of one person:
  grouping them is harmless, the subject rule already keeps them together);
* ``diff_subject``: different CK+ subjects (must not be grouped);
* ``fer_val``: every pair of FER2013 validation crops (unrelated faces, plus the true duplicates
  FER2013 is known to contain).

Prints percentiles per kind, then for each threshold the share of pairs within it, the share of
CK+ sequences that single linkage joins into one group, and the number of groups and grouped
faces on FER2013 validation. Ends with one RESULT line for the chosen threshold:
``source=human`` (the sets' own sequence and subject ids, no annotator), ``data=`` the crops
hashed per set, and ``diff_subject_pairs_within`` (unrelated faces joined) beside the
same-sequence figures as their baseline. Without CK+ or FER2013 it exits 2.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from seke.faces import BadImage, decode_image, encode_png, read_file  # noqa: E402
from seke.near_dup import (PHASH_THRESHOLD, near_duplicate_groups, pairwise_hamming,  # noqa: E402
                           phash_hex, phash_ints)

SHARED = Path(os.environ.get("SEKE_SHARED_DATA", ROOT / ".." / "shared" / "data"))


def codes_of(folder: Path, images: list[str]) -> tuple[list[str], list[str]]:
    """(kept image names, their phash codes); files ingestion would quarantine are skipped."""
    kept, codes = [], []
    for p in images:
        try:
            codes.append(phash_hex(encode_png(decode_image(read_file(folder / p), p))))
        except BadImage:
            continue
        kept.append(p)
    return kept, codes


def pct(d: np.ndarray) -> str:
    q = np.percentile(d, [0.1, 1, 5, 50, 90, 95, 99]) if d.size else []
    return " ".join(f"p{k}={v:.0f}" for k, v in zip(("0.1", "1", "5", "50", "90", "95", "99"), q)) + \
        (f" min={d.min()} max={d.max()} n={d.size}" if d.size else " n=0")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ckplus", type=Path, default=SHARED / "ckplus")
    ap.add_argument("--fer", type=Path, default=SHARED / "fer2013")
    ap.add_argument("--threshold", type=int, default=PHASH_THRESHOLD)
    ap.add_argument("--chain-split", default="train",
                    help="FER2013 split on which to measure chaining (largest single-linkage group) "
                         "at the chosen threshold; '' skips it (~20 s for train)")
    args = ap.parse_args(argv)
    for name, folder in (("CK+", args.ckplus), ("FER2013", args.fer)):
        if not (folder / "manifest.csv").exists():
            print(f"no data: no {name} manifest under {folder}", file=sys.stderr)
            return 2
    t0 = time.perf_counter()
    ck = pl.read_csv(args.ckplus / "manifest.csv", infer_schema_length=0)
    kept, ck_hex = codes_of(args.ckplus, ck["image"].to_list())
    ck = ck.filter(pl.col("image").is_in(kept))
    ck_codes = phash_ints(ck_hex)
    seq = np.array(ck["sequence"].to_list())
    subj = np.array(ck["subject_id"].to_list())
    d = pairwise_hamming(ck_codes)
    iu = np.triu_indices(len(ck_codes), 1)
    dist = d[iu]
    same_seq = seq[iu[0]] == seq[iu[1]]
    same_subj = subj[iu[0]] == subj[iu[1]]
    kinds = {"same_sequence": dist[same_seq], "same_subject": dist[same_subj & ~same_seq],
             "diff_subject": dist[~same_subj]}
    fer_dist = np.array([], dtype=np.uint8)
    fer_ids: list[str] = []
    fer_codes: list[str] = []
    if (args.fer / "manifest.csv").exists():
        fer = pl.read_csv(args.fer / "manifest.csv", infer_schema_length=0).filter(pl.col("split") == "validation")
        fer_ids, fer_codes = codes_of(args.fer, fer["image"].to_list())
        fd = pairwise_hamming(phash_ints(fer_codes))
        fer_dist = fd[np.triu_indices(len(fer_codes), 1)]
        kinds["fer_val"] = fer_dist
    print(f"CK+ {len(ck_codes)} crops, {len(set(seq))} sequences, {len(set(subj))} subjects; "
          f"FER2013 validation {len(fer_codes)} crops; hashing+distances {time.perf_counter() - t0:.1f}s")
    for k, v in kinds.items():
        print(f"{k:14s} {pct(v)}")
    print("\nthreshold  same_seq<=T  same_subj<=T  diff_subj<=T  fer_val<=T  ck_seqs_one_group  fer_groups fer_grouped_faces fer_largest_group")
    ck_ids = ck["image"].to_list()
    chosen: dict[str, float] = {}
    for t in range(4, 19, 2):
        share = {k: float((v <= t).mean()) if v.size else float("nan") for k, v in kinds.items()}
        groups = near_duplicate_groups(ck_ids, ck_hex, t)
        by_seq: dict[str, set] = defaultdict(set)
        for img, s in zip(ck_ids, seq):
            by_seq[s].add(groups.get(img, img))
        one = sum(len(g) == 1 for g in by_seq.values()) / len(by_seq)
        fg = near_duplicate_groups(fer_ids, fer_codes, t) if fer_codes else {}
        n_fg = len(set(fg.values()))
        largest = max(np.unique(list(fg.values()), return_counts=True)[1], default=0) if fg else 0
        print(f"{t:9d}  {share['same_sequence']:11.3f}  {share['same_subject']:12.3f}  "
              f"{share['diff_subject']:12.5f}  {share.get('fer_val', float('nan')):10.6f}  "
              f"{one:17.3f}  {n_fg:10d} {len(fg):17d} {largest:17d}")
        if t == args.threshold:
            chosen = {"same_seq": share["same_sequence"], "diff_subj": share["diff_subject"],
                      "fer_pairs": share.get("fer_val", float("nan")), "ck_seqs_one_group": one,
                      "fer_grouped": len(fg) / max(1, len(fer_ids))}
    largest_chain, chain_n = 0, 0
    if args.chain_split and (args.fer / "manifest.csv").exists():
        big = pl.read_csv(args.fer / "manifest.csv", infer_schema_length=0).filter(pl.col("split") == args.chain_split)
        big_ids, big_codes = codes_of(args.fer, big["image"].to_list())
        bg = near_duplicate_groups(big_ids, big_codes, args.threshold)
        chain_n = len(big_ids)
        largest_chain = int(max(np.unique(list(bg.values()), return_counts=True)[1], default=0)) if bg else 0
        print(f"\nFER2013 {args.chain_split} ({chain_n} crops) at T={args.threshold}: {len(bg)} faces in "
              f"{len(set(bg.values()))} groups, largest group {largest_chain}")
    print(f"RESULT threshold={args.threshold} same_sequence_pairs_within={chosen.get('same_seq', float('nan')):.3f} "
          f"ck_sequences_one_group={chosen.get('ck_seqs_one_group', float('nan')):.3f} "
          f"diff_subject_pairs_within={chosen.get('diff_subj', float('nan')):.5f} "
          f"fer_val_faces_grouped={chosen.get('fer_grouped', float('nan')):.4f} "
          f"fer_{args.chain_split or 'none'}_largest_group={largest_chain} "
          f"source=human data=ckplus:{len(ck_codes)},fer2013[validation]:{len(fer_codes)}"
          + (f",fer2013[{args.chain_split}]:{chain_n}" if args.chain_split else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
