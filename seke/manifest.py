"""Reading a batch's ``manifest.csv`` so that no byte of it can sink the batch or silently
change a human label.

Why it is this careful: the manifest is typed by people and exported by spreadsheets. A BOM,
a Latin-1 byte, an empty file or a missing column used to crash the whole batch; a typo such as
``joyful``, a valence of 5 or an AU coded ``yes`` used to be dropped or misread silently, after
which the annotator filled the gap with a model guess that looked like a fine label. Here:

* **Bytes → text.** A UTF-8 BOM is stripped (UTF-16 with a BOM is decoded as such). Text that
  is not UTF-8 is decoded by the declared fallback :data:`FALLBACK_ENCODINGS` (cp1252, then
  latin-1, which accepts any byte) and reported as a ``manifest_encoding`` warning row.
* **Manifest-level problems** (empty, no ``image`` column, duplicate column names, CSV that
  cannot be parsed, over :data:`MAX_MANIFEST_BYTES`) make the manifest ``bad``: one
  ``bad_manifest`` row, and every image lands unlabelled (unknown, not invalid: nobody said
  anything usable about any face).
* **Per-label validation.** Expression names must be in the taxonomy (aliases accepted);
  valence and arousal finite, in [-1, 1] and given together; AU cells one of
  :data:`AU_PRESENT`/:data:`AU_ABSENT` (case-insensitive, nothing else: ``0.5`` is invalid).
  A bad value gives one ``bad_label`` row naming the line, column and value, and its
  granularity is *withheld* for that image (:attr:`KnownRow.invalid`): the face lands with its
  other labels, and the annotator neither receives nor generates that granularity.
* **Duplicate rows** for one image merge when they agree (an empty cell agrees with anything);
  a granularity on which they disagree gets one ``conflicting_labels`` row and is withheld,
  never decided by row order.
* **Names** are matched after Unicode NFC normalisation (macOS writes NFD file names), with
  a leading ``./`` removed.
* **Subjects from file names.** Where a set's file names say whose face it is (LFW-style
  ``George_W_Bush_0003.jpg``) but its manifest has no ``subject_id``, a per-source pattern
  (:func:`subject_pattern`, :func:`with_subject_from_name`) supplies it; a ``subject_id`` cell
  always wins. Why: faces of one person are not independent, so splits keep a person on one
  side and certification counts persons, not photos, only where the subject is known.
"""

from __future__ import annotations

import codecs
import csv
import io
import math
import re
import unicodedata
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from seke.quarantine import (BAD_LABEL, BAD_MANIFEST, CONFLICTING_LABELS, MANIFEST_ENCODING,
                             Rejected)
from seke.taxonomy import AU_CATALOGUE, EXPRESSIONS, GRANULARITIES, au_column, normalise_expression

MANIFEST = "manifest.csv"
#: Tried in order when the manifest is not UTF-8; latin-1 decodes any byte, so it is the last.
FALLBACK_ENCODINGS: tuple[str, ...] = ("cp1252", "latin-1")
#: A manifest of 1.3 M rows of CK+-style columns; anything larger is not a manifest.
MAX_MANIFEST_BYTES = 256 * 1024 * 1024
#: Accepted AU codes (case-insensitive). ``1.0``/``0.0`` are the same numbers as 1/0 written by
#: float-typed exporters (pandas with gaps); any other number is invalid, not rounded.
AU_PRESENT = frozenset({"1", "1.0", "true", "yes"})
AU_ABSENT = frozenset({"0", "0.0", "false", "no"})

Status = Literal["ok", "absent", "bad"]


@dataclass(frozen=True)
class KnownRow:
    """Human labels and metadata for one image, from the batch's manifest.csv.

    ``invalid`` lists the granularities (``expression``/``va``/``aus``) whose human label was
    invalid or conflicting: they are *withheld* (neither known nor to be generated), unlike a
    granularity that is simply absent from the manifest (unknown: the annotator fills it).
    """

    expression: str | None = None
    valence: float | None = None
    arousal: float | None = None
    aus: tuple[int, ...] | None = None
    subject_id: str | None = None
    split: str | None = None
    invalid: tuple[str, ...] = ()
    licence: str | None = None   # the ``licence`` cell (a key of seke.licences' register)


@dataclass
class Manifest:
    """A parsed manifest: labels per image name (NFC) and the rows to quarantine."""

    rows: dict[str, KnownRow] = field(default_factory=dict)
    issues: list[Rejected] = field(default_factory=list)
    status: Status = "absent"
    encoding: str | None = None
    problem: str | None = None   # why a ``bad`` manifest is bad

    def summary(self) -> dict[str, object]:
        """Plain values for asset metadata and the ``manifest`` warn check."""
        count = {r: sum(i.reason == r for i in self.issues) for r in (BAD_LABEL, CONFLICTING_LABELS)}
        return {"status": self.status, "encoding": self.encoding, "problem": self.problem,
                "labelled_images": len(self.rows), "bad_labels": count[BAD_LABEL],
                "conflicting_labels": count[CONFLICTING_LABELS]}

    @property
    def healthy(self) -> bool:
        """No manifest problem, no encoding fallback, every human label valid and agreeing."""
        return (self.status != "bad" and self.encoding in (None, "utf-8")
                and not any(i.reason in (BAD_LABEL, CONFLICTING_LABELS) for i in self.issues))


def match_name(name: str) -> str:
    """The form under which manifest rows and file names are matched (NFC, no leading ./)."""
    name = unicodedata.normalize("NFC", name.strip())
    while name.startswith("./"):
        name = name[2:]
    return name


# ---- bytes to text -----------------------------------------------------------------------------

def decode_text(data: bytes) -> tuple[str, str, str | None]:
    """``(text, encoding, warning)``: BOM stripped, UTF-8 or the declared fallback."""
    for bom, enc in ((codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be")):
        if data.startswith(bom) and not data.startswith(codecs.BOM_UTF8):
            try:
                return data[len(bom):].decode(enc), enc, None
            except UnicodeDecodeError:
                break
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8):]
    try:
        return data.decode("utf-8"), "utf-8", None
    except UnicodeDecodeError as e:
        first_bad = e.start
    for enc in FALLBACK_ENCODINGS:
        try:
            text = data.decode(enc)
        except UnicodeDecodeError:
            continue
        return text, enc, (f"not UTF-8 (first invalid byte 0x{data[first_bad]:02x} at offset "
                           f"{first_bad}); decoded as {enc}, the declared fallback")
    raise AssertionError("latin-1 decodes every byte")  # pragma: no cover


# ---- one cell ----------------------------------------------------------------------------------

def _cell(row: dict, column: str) -> str:
    v = row.get(column)
    return "" if v is None else str(v).strip()


def _va_value(raw: str) -> float | None:
    """A finite number in [-1, 1], or None when invalid."""
    try:
        v = float(raw)
    except ValueError:
        return None
    return v if math.isfinite(v) and -1.0 <= v <= 1.0 else None


def _au_value(raw: str) -> bool | None:
    key = raw.lower()
    return True if key in AU_PRESENT else False if key in AU_ABSENT else None


@dataclass
class _Parsed:
    """One manifest line's labels; a granularity in ``invalid`` has no value."""

    line: int
    expression: str | None = None
    va: tuple[float, float] | None = None
    aus: tuple[int, ...] | None = None
    subject_id: str | None = None
    split: str | None = None
    invalid: set[str] = field(default_factory=set)
    licence: str | None = None


def _parse_row(row: dict, line: int, name: str, au_cols: list[int],
               issues: list[Rejected]) -> _Parsed:
    p = _Parsed(line, subject_id=_cell(row, "subject_id") or None, split=_cell(row, "split") or None,
                licence=_cell(row, "licence") or _cell(row, "license") or None)

    def bad(granularity: str, column: str, value: str, why: str) -> None:
        p.invalid.add(granularity)
        issues.append(Rejected(name, BAD_LABEL, f"line {line}: {column}={value!r} {why}; "
                                                f"{granularity} withheld for this image"))

    raw = _cell(row, "expression")
    if raw:
        p.expression = normalise_expression(raw)
        if p.expression is None:
            bad("expression", "expression", raw, "is not in the taxonomy (" + ", ".join(EXPRESSIONS) + ")")
    rv, ra = _cell(row, "valence"), _cell(row, "arousal")
    if rv or ra:
        v, a = _va_value(rv) if rv else None, _va_value(ra) if ra else None
        for col, raw_v, val in (("valence", rv, v), ("arousal", ra, a)):
            if not raw_v:
                bad("va", col, raw_v, "is empty while the other of valence/arousal is given")
            elif val is None:
                bad("va", col, raw_v, "is not a finite number in [-1, 1]")
        if "va" not in p.invalid and v is not None and a is not None:
            p.va = (v, a)
    if au_cols:
        cells = {au: _cell(row, au_column(au)) for au in au_cols}
        if any(cells.values()):
            present = []
            for au, raw_au in cells.items():
                if not raw_au:
                    continue  # an empty cell in a coded row: absent (CK+ convention)
                val = _au_value(raw_au)
                if val is None:
                    bad("aus", au_column(au), raw_au, "is not one of 0/1/true/false/yes/no")
                elif val:
                    present.append(au)
            if "aus" not in p.invalid:
                p.aus = tuple(present)
    return p


# ---- duplicates ----------------------------------------------------------------------------------

def _merge(name: str, parsed: list[_Parsed], issues: list[Rejected]) -> KnownRow:
    """One KnownRow from every line naming ``name``: agreeing values merge, conflicts withhold."""
    invalid = set().union(*(p.invalid for p in parsed))
    values: dict[str, object] = {}
    for attr, granularity in (("expression", "expression"), ("va", "va"), ("aus", "aus"),
                              ("subject_id", None), ("split", None), ("licence", None)):
        seen = [(p.line, getattr(p, attr)) for p in parsed if getattr(p, attr) is not None]
        distinct = {v for _, v in seen}
        if granularity in invalid:
            values[attr] = None
        elif len(distinct) > 1 and attr == "licence":
            # Never pick one of two licences: a key no register holds keeps the images restricted.
            shown = "; ".join(f"line {line}: {v!r}" for line, v in seen)
            issues.append(Rejected(name, CONFLICTING_LABELS, f"duplicate rows disagree on licence ({shown}); "
                                                             "the image is treated as restricted"))
            values[attr] = "conflicting:" + "|".join(sorted(str(v) for v in distinct))
        elif len(distinct) > 1:
            shown = "; ".join(f"line {line}: {v!r}" for line, v in seen)
            if granularity is not None:
                invalid.add(granularity)
            issues.append(Rejected(name, CONFLICTING_LABELS,
                                   f"duplicate rows disagree on {attr} ({shown}); "
                                   f"{attr} withheld for this image"))
            values[attr] = None
        else:
            values[attr] = next(iter(distinct), None)
    va = values["va"]
    return KnownRow(expression=values["expression"],  # type: ignore[arg-type]
                    valence=va[0] if va else None, arousal=va[1] if va else None,  # type: ignore[index]
                    aus=values["aus"],  # type: ignore[arg-type]
                    subject_id=values["subject_id"], split=values["split"],  # type: ignore[arg-type]
                    licence=values["licence"],  # type: ignore[arg-type]
                    invalid=tuple(g for g in GRANULARITIES if g in invalid))


# ---- entry points ------------------------------------------------------------------------------

def parse_manifest(data: bytes) -> Manifest:
    """Parse manifest bytes; never raises (problems become ``issues`` and ``status``)."""
    out = Manifest(status="ok")

    def bad(problem: str) -> Manifest:
        out.status, out.problem, out.rows = "bad", problem, {}
        out.issues = [i for i in out.issues if i.reason == MANIFEST_ENCODING]
        out.issues.append(Rejected(MANIFEST, BAD_MANIFEST, problem + "; every image lands unlabelled"))
        return out

    if len(data) > MAX_MANIFEST_BYTES:
        return bad(f"{len(data)} bytes > {MAX_MANIFEST_BYTES}")
    text, out.encoding, warning = decode_text(data)
    if warning:
        out.issues.append(Rejected(MANIFEST, MANIFEST_ENCODING, warning))
    if not text.strip():
        return bad("empty manifest (no header)")
    by_name: dict[str, list[_Parsed]] = {}
    issues: list[Rejected] = []
    try:
        reader = csv.reader(io.StringIO(text, newline=""))
        header = next(reader, None) or []
        columns = [h.strip().lower() for h in header]
        if "image" not in columns:
            return bad(f"no 'image' column (columns: {header[:20]})")
        dupes = sorted({c for c in columns if c and columns.count(c) > 1})
        if dupes:
            return bad(f"duplicate column names {dupes}")
        au_cols = [a for a in AU_CATALOGUE if au_column(a) in columns]
        for cells in reader:
            line = reader.line_num
            if not any(c.strip() for c in cells):
                continue
            row = dict(zip(columns, cells))
            name = match_name(row.get("image") or "")
            if not name:
                issues.append(Rejected(f"{MANIFEST}:{line}", BAD_LABEL,
                                       f"line {line}: a row without an image name; ignored"))
                continue
            by_name.setdefault(name, []).append(_parse_row(row, line, name, au_cols, issues))
    except csv.Error as e:
        return bad(f"not parseable as CSV: {e}")
    out.issues += issues
    out.rows = {name: _merge(name, parsed, out.issues) for name, parsed in by_name.items()}
    return out


def load_manifest(batch_dir: Path) -> Manifest:
    """The batch's manifest (``status='absent'`` when there is none); never raises."""
    path = Path(batch_dir) / MANIFEST
    try:
        if not path.is_file():
            return Manifest()
        size = path.stat().st_size
        if size > MAX_MANIFEST_BYTES:  # checked before reading: a manifest cannot exhaust memory
            return _oversized(size)
        data = path.read_bytes()
    except OSError as e:
        m = Manifest(status="bad", problem=f"cannot read: {type(e).__name__}: {e}")
        m.issues.append(Rejected(MANIFEST, BAD_MANIFEST, m.problem + "; every image lands unlabelled"))
        return m
    return parse_manifest(data)


def _oversized(size: int) -> Manifest:
    problem = f"{size} bytes > {MAX_MANIFEST_BYTES}"
    return Manifest(issues=[Rejected(MANIFEST, BAD_MANIFEST, problem + "; every image lands unlabelled")],
                    status="bad", problem=problem)


def subject_pattern(text: str) -> re.Pattern[str]:
    """A rule that reads the subject from a file name, compiled; ``ValueError`` naming the
    problem when ``text`` is not a regular expression or has no group to hold the subject."""
    try:
        pattern = re.compile(text)
    except re.error as exc:
        raise ValueError(f"subject pattern {text!r} is not a regular expression: {exc}") from None
    if pattern.groups == 0:
        raise ValueError(f"subject pattern {text!r} has no group: put the subject in (?P<subject>...) "
                         "or in the first (...)")
    return pattern


def parse_subject_patterns(spec: str) -> dict[str, str]:
    """``source=regex`` entries separated by ``;`` (``SEKE_SUBJECT_PATTERNS``, the benches'
    ``--subject-patterns``; ``none`` or empty: no source has one), each regex checked by
    :func:`subject_pattern`; ``ValueError`` names the bad entry."""
    out: dict[str, str] = {}
    if spec.strip().lower() in ("", "none"):
        return out
    for entry in filter(None, (e.strip() for e in spec.split(";"))):
        source, sep, text = entry.partition("=")
        if not sep or not source.strip() or not text:
            raise ValueError(f"subject pattern entry {entry!r} is not source=regex")
        subject_pattern(text)
        out[source.strip()] = text
    return out


def with_subject_from_name(known: KnownRow, name: str, pattern: re.Pattern[str] | None) -> KnownRow:
    """``known`` with the subject ``pattern`` reads from the base name of ``name`` (its
    ``subject`` group, else its first, the whole name matching), where the manifest named none;
    unchanged when it did, when there is no pattern or when the name does not match (the face
    stays its own unit)."""
    if pattern is None or known.subject_id is not None:
        return known
    match = pattern.fullmatch(name.rsplit("/", 1)[-1])
    if match is None:
        return known
    subject = match.group("subject") if "subject" in pattern.groupindex else match.group(1)
    return replace(known, subject_id=subject) if subject else known


def read_manifest(batch_dir: Path) -> dict[str, KnownRow]:
    """Labels per image name of the batch's manifest ({} when absent or bad)."""
    return load_manifest(batch_dir).rows
