"""The licence register: which face images may leave the platform inside a published dataset.

Why: CK+ and FER2013 are research-use data whose terms forbid redistributing the images, and
an Apache-2.0 repository of news photos (``wild``) does not make the photos Apache-2.0. A
dataset pushed to the Hub with their crops inside would redistribute them. So every face carries
a licence key (``raw_faces.licence``): the manifest's ``licence`` cell when given, else its
source name. The register (``seke/knowledge_data/licences_v<N>.csv``, versioned like the other
knowledge tables) maps a key to the licence, whether redistribution is allowed, the attribution
and a URL. Exports embed only images whose licence allows redistribution; the others are
referenced by id and relative path (:func:`withheld_images`), unless the user passes
``--allow-restricted`` for a private copy.

A key that is not in the register — unknown or misspelt (``cc-by-4`` for ``cc-by-4.0``) — is
*restricted*, never guessed, and reported with a warning naming it.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Iterable, Mapping

import polars as pl

if TYPE_CHECKING:
    from seke.quarantine import Rejected

REGISTER_VERSION = "v1"
DATA_PACKAGE = "seke.knowledge_data"


@dataclass(frozen=True)
class Licence:
    key: str
    licence: str
    hub_licence: str                 # Hugging Face Hub licence id ("other" when none fits)
    redistribution_allowed: bool
    attribution: str
    url: str
    notes: str


def normalise_key(value: object) -> str | None:
    """Lower-case, trimmed key; None for an empty cell."""
    if value is None:
        return None
    text = str(value).strip().lower()
    return text or None


def load_register(version: str = REGISTER_VERSION) -> dict[str, Licence]:
    """The bundled register ``licences_<version>.csv`` as key → :class:`Licence`."""
    text = resources.files(DATA_PACKAGE).joinpath(f"licences_{version}.csv").read_text(encoding="utf-8")
    out = {}
    for row in csv.DictReader(text.splitlines()):
        key = normalise_key(row["key"])
        assert key, "licence register rows need a key"
        out[key] = Licence(key, row["licence"], row.get("hub_licence") or "other",
                           row["redistribution_allowed"].strip().lower() == "true",
                           row.get("attribution") or "", row.get("url") or "", row.get("notes") or "")
    return out


def licence_key(manifest_value: object, source: str) -> str:
    """The key a face is registered under: the manifest's licence cell, else the source name."""
    return normalise_key(manifest_value) or normalise_key(source) or ""


def is_restricted(key: str | None, register: Mapping[str, Licence]) -> bool:
    """True unless the register knows ``key`` and allows redistribution."""
    entry = register.get(normalise_key(key) or "")
    return entry is None or not entry.redistribution_allowed


def unknown_keys(keys: Iterable[object], register: Mapping[str, Licence]) -> list[str]:
    """Keys (as given, de-duplicated, sorted) that the register does not know."""
    return sorted({str(k) for k in keys if (normalise_key(k) or "") not in register})


def unknown_warning(key: str, version: str = REGISTER_VERSION, where: str = "") -> str:
    return (f"licence {key!r}{' (' + where + ')' if where else ''} is not in the licence register "
            f"licences_{version}.csv: treated as restricted (images not redistributed); fix the "
            f"spelling or add it to the register")


@dataclass
class LicencePolicy:
    """What an export may embed: per-face keys, the restricted faces and the warnings."""

    keys: dict[str, str]                      # face_id -> licence key
    restricted: set[str]                      # face_ids whose images must not be embedded
    faces_per_key: dict[str, int]
    unknown: list[str]
    warnings: list[str]
    allow_restricted: bool = False

    def withheld(self) -> set[str]:
        """Faces whose images the export leaves out (none with ``allow_restricted``)."""
        return set() if self.allow_restricted else set(self.restricted)


def face_licences(faces: pl.DataFrame) -> dict[str, str]:
    """face_id → licence key from raw_faces columns ``face_id``, ``licence`` (may be absent or
    null in lakes written before the register) and ``source``."""
    has_lic = "licence" in faces.columns
    out: dict[str, str] = {}
    for row in faces.iter_rows(named=True):
        out.setdefault(row["face_id"], licence_key(row.get("licence") if has_lic else None,
                                                   row.get("source") or ""))
    return out


def policy_for(face_ids: Iterable[str], keys: Mapping[str, str], register: Mapping[str, Licence],
               allow_restricted: bool = False, version: str = REGISTER_VERSION) -> LicencePolicy:
    """The licence policy for exporting ``face_ids`` (a face with no key is restricted)."""
    per: dict[str, str] = {f: keys.get(f, "") for f in face_ids}
    counts: dict[str, int] = {}
    for k in per.values():
        counts[k] = counts.get(k, 0) + 1
    unknown = unknown_keys(counts, register)
    return LicencePolicy(per, {f for f, k in per.items() if is_restricted(k, register)}, counts, unknown,
                         [unknown_warning(k or "<none>", version, f"{counts[k]} faces") for k in unknown],
                         allow_restricted)


def withheld_images(policy: LicencePolicy, faces: pl.DataFrame) -> dict[str, str]:
    """face_id → the reference written instead of an image: ``<source>/<batch>/<file_name>``
    (relative to the landing zone, so a licence holder can point the loader at their own copy),
    or the face id when the file is unknown."""
    wanted = policy.withheld()
    if not wanted:
        return {}
    refs: dict[str, str] = {}
    cols = set(faces.columns)
    for row in faces.iter_rows(named=True):
        f = row["face_id"]
        if f in wanted and f not in refs:
            parts = [row.get(c) for c in ("source", "batch", "file_name") if c in cols]
            refs[f] = "/".join(str(p) for p in parts) if parts and all(parts) else f
    return {f: refs.get(f, f) for f in wanted}


def batch_licences(manifest_values: list[object], source: str,
                   register: Mapping[str, Licence] | None = None,
                   version: str = REGISTER_VERSION) -> tuple[list[str], list["Rejected"], list[str]]:
    """Licence keys for a batch's crops (manifest cell, else the source), one
    ``unknown_licence`` warning row per *manifest* licence the register does not know (a typo
    someone must fix; the faces still land, restricted), and every unknown key with its warning
    text (a source missing from the register is only logged: its images are restricted until
    it is registered)."""
    from seke.quarantine import UNKNOWN_LICENCE, Rejected

    reg = load_register(version) if register is None else register
    keys = [licence_key(v, source) for v in manifest_values]
    counts: dict[str, int] = {}
    for k in keys:
        counts[k] = counts.get(k, 0) + 1
    unknown = unknown_keys(counts, reg)
    from_manifest = {normalise_key(v) for v in manifest_values if normalise_key(v)}
    rows = [Rejected(f"licence:{k}", UNKNOWN_LICENCE, unknown_warning(k, version, f"{counts[k]} faces"))
            for k in unknown if k in from_manifest]
    return keys, rows, [unknown_warning(k, version, f"{counts[k]} faces") for k in unknown]
