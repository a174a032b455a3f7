"""Near-duplicate faces: a perceptual hash per crop, and groups of crops that are nearly the same.

Why: ``face_id`` is the sha256 of the crop, so it only catches byte-identical crops. CK+ ships
three consecutive frames of every posed sequence; they differ by a few pixels, get three ids,
and — without a subject id — could land on both sides of the FEID/FEAB split, so a model tuned
on FEID would be scored on frames it has practically seen (benchmark leakage). A perceptual
hash (``imagehash.phash``: DCT of the 32×32 grey image, 64 bits) maps such frames to codes a few
bits apart; crops whose codes are within :data:`PHASH_THRESHOLD` bits are joined (single
linkage, union–find) into one near-duplicate group, and groups are kept on one side of the split
like subjects (:func:`seke.feab.split_benchmark`).

Threshold, measured on the dev data with ``python bench/phash_threshold.py`` (crops made as the
ingest makes them; CK+ 750 crops = 250 sequences × 3 frames, 91 subjects; FER2013 validation
3,588 decodable crops; FER2013 train 28,698 for chaining). Hamming distance between codes
(phash distances come out even):

* frames of one CK+ sequence (750 pairs): median 2, 95th percentile 6, 99th 9, max 12;
* one CK+ subject, different sequences (2,529 pairs): median 12;
* different CK+ subjects (277,596 pairs): 0.1st percentile 8, 1st 12, median 22, min 6;
* FER2013 validation, all 6.4 M pairs: 0.1st percentile 16, median 30 (min 0: FER2013 holds
  true duplicates).

Single linkage chains: at T=10 the largest group is 53 faces on FER2013 validation and 4,765 on
train; at T=8 4 and 560; at T=6 3 and 24. :data:`PHASH_THRESHOLD` = 6 joins 95.6 % of
same-sequence frame pairs and puts 96.8 % of CK+ sequences wholly in one group, joins 0.027 % of
different-subject pairs, groups 3.1 % of FER2013 validation faces, and never builds a giant
group (the cost of a larger threshold: a few hundred unrelated faces forced onto one side,
which would distort the stratified split). RESULT line of that run::

    RESULT threshold=6 same_sequence_pairs_within=0.956 ck_sequences_one_group=0.968
    diff_subject_pairs_within=0.00027 fer_val_faces_grouped=0.0309 fer_train_largest_group=24
    data=ckplus:750,fer2013:validation:3588,fer2013:train:28698

The 3 % of CK+ sequences not joined whole have subject ids, which keep them on one side anyway.

Across batches: the assets split one batch at a time, so a face of a new batch that is a
near-duplicate of a face another batch of the same source already published must follow that
face's side. :func:`near_duplicate_groups_across` groups the batch's faces together with those
published faces (their codes and sides read from the lake by the caller), and
:func:`earlier_sides` names, per face of the batch, the side its group already holds.
"""

from __future__ import annotations

import io
from collections import Counter
from typing import Iterable, Mapping, Sequence

import numpy as np

#: Most Hamming bits between two phash codes of one near-duplicate group (bench/phash_threshold.py).
PHASH_THRESHOLD = 6
#: Prefix of group ids (a group id is this + the smallest face_id of the group).
GROUP_PREFIX = "nd-"


class UnhashableImage(ValueError):
    """imagehash could not read the crop (the ingest quarantines it with reason ``unhashable``)."""


def phash_hex(png: bytes) -> str:
    """64-bit perceptual hash of an encoded image, as 16 hex digits.

    Raises :class:`UnhashableImage` for bytes that Pillow or imagehash cannot read (truncated,
    not an image), so the caller can quarantine the file instead of failing the batch.
    """
    import imagehash
    from PIL import Image

    try:
        with Image.open(io.BytesIO(png)) as img:
            return str(imagehash.phash(img))
    except Exception as exc:  # PIL raises OSError/ValueError/SyntaxError; imagehash ValueError
        raise UnhashableImage(f"{type(exc).__name__}: {exc}") from None


def phash_ints(codes: Sequence[str | None]) -> np.ndarray:
    """Hex codes as uint64 (a missing code becomes 0 and must be masked by the caller)."""
    return np.array([int(c, 16) if c else 0 for c in codes], dtype=np.uint64)


def hamming(a: str, b: str) -> int:
    return int(bin(int(a, 16) ^ int(b, 16)).count("1"))


def pairwise_hamming(codes: np.ndarray, others: np.ndarray | None = None) -> np.ndarray:
    """Matrix of Hamming distances (uint8) between ``codes`` and ``others`` (default: itself)."""
    b = codes if others is None else others
    return np.bitwise_count(codes[:, None] ^ b[None, :]).astype(np.uint8)


def _close_pairs(codes: np.ndarray, threshold: int, block: int = 2048) -> Iterable[tuple[int, int]]:
    """Index pairs ``i < j`` within ``threshold`` bits, computed block by block (memory bounded)."""
    n = len(codes)
    for start in range(0, n, block):
        d = pairwise_hamming(codes[start:start + block], codes)
        ii, jj = np.nonzero(d <= threshold)
        for i, j in zip(ii.tolist(), jj.tolist()):
            i += start
            if i < j:
                yield i, j


def near_duplicate_groups(face_ids: Sequence[str], codes: Sequence[str | None],
                          threshold: int = PHASH_THRESHOLD) -> dict[str, str]:
    """face_id → group id for every face that has at least one near-duplicate (single linkage).

    Faces without a code or without a close neighbour are absent from the result. The group id
    is ``nd-`` + the smallest face_id of the group, so it does not depend on row order.
    """
    keep = [i for i, c in enumerate(codes) if c]
    if len(keep) < 2:
        return {}
    ints = phash_ints([codes[i] for i in keep])
    parent = list(range(len(keep)))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for i, j in _close_pairs(ints, threshold):
        ri, rj = find(i), find(j)
        if ri != rj:
            parent[max(ri, rj)] = min(ri, rj)
    members: dict[int, list[str]] = {}
    for k in range(len(keep)):
        members.setdefault(find(k), []).append(face_ids[keep[k]])
    out: dict[str, str] = {}
    for group in members.values():
        if len(group) > 1:
            gid = GROUP_PREFIX + min(group)
            out.update({f: gid for f in group})
    return out


def count_groups(groups: Mapping[str, str]) -> int:
    """Number of near-duplicate groups (of two or more faces)."""
    return len(set(groups.values()))


def cross_split(sides: Mapping[str, str], groups: Mapping[str, str]) -> list[dict[str, object]]:
    """Near-duplicate groups with faces on more than one side of the split.

    ``sides``: face_id → side ("feid"/"feab"); ``groups``: face_id → group id. Each returned
    dict names the group, its sides and up to five member face ids (for the check's metadata).
    """
    by_group: dict[str, dict[str, list[str]]] = {}
    for face, gid in groups.items():
        side = sides.get(face)
        if side is not None:
            by_group.setdefault(gid, {}).setdefault(side, []).append(face)
    return [{"group": gid, "sides": sorted(s), "faces": sorted(f for fs in s.values() for f in fs)[:5]}
            for gid, s in sorted(by_group.items()) if len(s) > 1]


def near_duplicate_groups_across(face_ids: Sequence[str], codes: Sequence[str | None],
                                 earlier: Mapping[str, str | None],
                                 threshold: int = PHASH_THRESHOLD) -> dict[str, str]:
    """:func:`near_duplicate_groups` over a batch's faces plus ``earlier`` faces (face_id → code,
    e.g. those other batches already published). An earlier face whose id is also in the batch
    (the same crop landed twice) is one node, not two."""
    current = set(face_ids)
    extra = [f for f in earlier if f not in current]
    return near_duplicate_groups(list(face_ids) + extra, list(codes) + [earlier[f] for f in extra],
                                 threshold)


def earlier_sides(face_ids: Sequence[str], groups: Mapping[str, str],
                  published: Mapping[str, str]) -> dict[str, str]:
    """face_id → the side (``published``: face_id → "feid"/"feab") that the face's earlier
    near-duplicates already hold, for the batch's faces that have any (a face whose own id is
    published counts as its own near-duplicate). When the earlier faces of a group hold both
    sides (the group already straddles; the leakage check reports it), the side with more of
    them wins, a tie goes to FEID (no further benchmark item that training has seen)."""
    members: dict[str, list[str]] = {}
    for face, gid in groups.items():
        members.setdefault(gid, []).append(face)
    out: dict[str, str] = {}
    for face in face_ids:
        near = members.get(groups[face], []) if face in groups else [face]
        votes = Counter(published[f] for f in set(near) | {face} if f in published)
        if votes:
            out[face] = "feid" if votes["feid"] >= votes["feab"] else "feab"
    return out
