"""Listing the files of a batch folder: symlinks confined, cycles cut, names made safe text.

Why not ``os.walk(followlinks=True)``: two links pointing at the batch folder itself made that
walk endless, and a file link pointing anywhere on the machine was ingested and exported. Here:

* a symlink (to a file or a folder) is followed only when its real path lies inside one of the
  ``roots`` (the landing zone and any configured allowed roots; the batch folder itself is
  always allowed); otherwise it becomes an ``outside_landing`` row and is never opened;
* a folder whose real path was already walked (a link to an ancestor, or two links to the same
  store) is walked once; later visits become ``symlink_loop`` rows;
* broken links, FIFOs, sockets and devices become ``unreadable`` rows (reading a FIFO blocks);
* every name is turned into text Arrow can store: bytes that are not UTF-8 become backslash
  escapes (``caf\\xe9.jpg``), then the name is NFC-normalised so it matches the manifest.
  The real path is kept separately for opening the file.

Hidden entries (``.``-prefixed) and files named ``manifest.csv`` are skipped, as before.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from seke.manifest import MANIFEST, match_name
from seke.quarantine import OUTSIDE_LANDING, SYMLINK_LOOP, UNREADABLE, Rejected, safe_text


@dataclass(frozen=True)
class BatchFile:
    """A regular file of the batch: where to open it and its name as safe, NFC text."""

    path: Path
    name: str


def text_name(rel: str) -> str:
    """A relative path as storable text: invalid UTF-8 bytes escaped, NFC-normalised."""
    return match_name(safe_text(rel))


def _inside(real: str, roots: Sequence[str]) -> bool:
    for root in roots:
        try:
            if os.path.commonpath([real, root]) == root:
                return True
        except ValueError:  # different drives (Windows)
            continue
    return False


def walk_batch(batch_dir: Path, roots: Sequence[Path] = ()) -> tuple[list[BatchFile], list[Rejected]]:
    """Regular files under ``batch_dir`` (sorted by name) and the entries refused, with reasons.

    ``roots``: folders symlinks may resolve into, besides the batch folder itself.
    """
    batch_dir = Path(batch_dir)
    base = os.path.realpath(batch_dir)
    allowed = [base] + [os.path.realpath(r) for r in roots]
    files: list[BatchFile] = []
    rejected: list[Rejected] = []
    walked: dict[str, str] = {base: ""}
    # Real folders first, linked folders after: a link never claims a folder the real tree holds.
    todo: list[tuple[str, str]] = [(str(batch_dir), "")]
    linked: list[tuple[str, str, str]] = []
    while todo or linked:
        if todo:
            folder, prefix = todo.pop()
        else:
            folder, rel, real = linked.pop(0)
            if real in walked:
                rejected.append(Rejected(text_name(rel), SYMLINK_LOOP,
                                         f"links to a folder already walked ({text_name(walked[real]) or 'the batch folder'}); "
                                         "not walked again"))
                continue
            walked[real] = rel
            prefix = rel + "/"
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as e:
            rejected.append(Rejected(text_name(prefix.rstrip("/") or "."), UNREADABLE,
                                     f"folder cannot be listed: {type(e).__name__}"))
            continue
        for entry in entries:
            if entry.name.startswith(".") or entry.name == MANIFEST:
                continue
            rel = prefix + entry.name
            name = text_name(rel)
            try:
                is_link = entry.is_symlink()
                real = os.path.realpath(entry.path)
                if is_link and not _inside(real, allowed):
                    rejected.append(Rejected(name, OUTSIDE_LANDING,
                                             f"symlink to {safe_text(real)}, outside the landing zone "
                                             "and the allowed roots; not followed"))
                    continue
                if entry.is_dir(follow_symlinks=True):
                    if is_link:
                        linked.append((entry.path, rel, real))
                    elif real not in walked:
                        walked[real] = rel
                        todo.append((entry.path, rel + "/"))
                elif entry.is_file(follow_symlinks=True):
                    files.append(BatchFile(Path(entry.path), name))
                elif is_link and not os.path.exists(entry.path):
                    rejected.append(Rejected(name, UNREADABLE, "broken symlink"))
                else:
                    rejected.append(Rejected(name, UNREADABLE, "not a regular file (FIFO, socket or device)"))
            except OSError as e:
                rejected.append(Rejected(name, UNREADABLE, f"{type(e).__name__}: {e.strerror or e}"))
    return sorted(files, key=lambda f: f.name), rejected
