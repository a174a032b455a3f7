"""Which human labels audit mode hides, chosen deterministically per face.

Hashing (seed, face_id) instead of random sampling keeps the choice stable across re-runs and
backfills, so a re-materialized partition hides the same labels and hits the same cache entries.
"""

from __future__ import annotations

import hashlib

from seke.annotation import Labels


def audit_draw(face_id: str, seed: int = 0) -> float:
    """A stable pseudo-random number in [0, 1) for a face."""
    h = hashlib.sha256(f"audit:{seed}:{face_id}".encode()).digest()
    return int.from_bytes(h[:8], "big") / 2**64


def choose_hidden(face_id: str, known: Labels, fraction: float, seed: int = 0) -> list[str]:
    """All known granularities of the face when it falls in the audit share, else none."""
    if fraction <= 0 or not known.known_granularities():
        return []
    return known.known_granularities() if audit_draw(face_id, seed) < fraction else []
