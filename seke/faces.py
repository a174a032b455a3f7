"""Face image I/O for ingestion: decode and validate files, detect and crop faces, hash crops.

Why it is strict: one bad file must never sink a batch. Every file ends either as one or more
normalised face crops or as a quarantine row with a machine-readable reason:

``unreadable`` (not an image / cannot be identified), ``truncated`` (decoding stopped early),
``oversized`` (file bytes or pixel count above the limits — decompression bombs included),
``too_small`` (below the minimum side), ``no_face`` (a photo where the detector finds none),
``duplicate`` (the same normalised crop was already seen in this batch).

Pre-cropped faces (both sides <= ``PRECROP_MAX_SIDE``, as in FER2013/CK+) pass through;
larger images go through face detection and an aligned square crop. The face id is the sha256
of the normalised crop's PNG bytes, so the same face gets the same id wherever it comes from.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from seke.taxonomy import AU_CATALOGUE, au_column, normalise_expression

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"}
MAX_FILE_BYTES = 50 * 1024 * 1024
MAX_PIXELS = 40_000_000
MIN_SIDE = 16
PRECROP_MAX_SIDE = 160
CROP_SIZE = 192
CROP_MARGIN = 1.4  # square side = margin × max(bbox w, h)


class BadImage(ValueError):
    """A file that cannot become a face crop; ``reason`` is the quarantine code."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class KnownRow:
    """Human labels and metadata for one image, from the batch's manifest.csv."""

    expression: str | None = None
    valence: float | None = None
    arousal: float | None = None
    aus: tuple[int, ...] | None = None
    subject_id: str | None = None
    split: str | None = None


@dataclass
class FaceCrop:
    face_id: str
    file_name: str
    face_index: int
    crop_png: bytes
    crop_size: int
    image_width: int
    image_height: int
    detector: str
    det_score: float
    bbox: list[float]
    known: KnownRow = field(default_factory=KnownRow)


@dataclass
class Rejected:
    item_id: str
    reason: str
    detail: str


Detector = Callable[[np.ndarray], Sequence]  # rgb uint8 -> detections with .bbox and .score


def _float_or_none(v: str | None) -> float | None:
    if v is None or str(v).strip() == "":
        return None
    try:
        return float(v)
    except ValueError:
        return None


def read_manifest(batch_dir: Path) -> dict[str, KnownRow]:
    """Read ``manifest.csv`` (format of ../shared/data/*/manifest.csv) keyed by image path.

    Recognised columns: ``image`` (required), ``expression``, ``valence``, ``arousal``,
    ``subject_id``, ``split``, ``au<N>`` (0/1). Unknown columns are ignored. Returns {} when
    the batch has no manifest.
    """
    path = batch_dir / "manifest.csv"
    if not path.exists():
        return {}
    out: dict[str, KnownRow] = {}
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if "image" not in (reader.fieldnames or []):
            raise ValueError(f"{path}: manifest needs an 'image' column, got {reader.fieldnames}")
        au_cols = [a for a in AU_CATALOGUE if au_column(a) in (reader.fieldnames or [])]
        for row in reader:
            aus: tuple[int, ...] | None = None
            if au_cols:
                vals = {a: row.get(au_column(a), "") for a in au_cols}
                if any(str(v).strip() != "" for v in vals.values()):
                    aus = tuple(a for a, v in vals.items() if _float_or_none(v) and float(v) > 0)
            out[row["image"].strip()] = KnownRow(
                expression=normalise_expression(row.get("expression")),
                valence=_float_or_none(row.get("valence")),
                arousal=_float_or_none(row.get("arousal")),
                aus=aus,
                subject_id=(row.get("subject_id") or None),
                split=(row.get("split") or None),
            )
    return out


def list_images(batch_dir: Path) -> list[Path]:
    """Every file under the batch folder except the manifest and hidden files, sorted.

    Symlinked sub-folders are followed (an uploader may link a shared image store into a batch).
    """
    out = []
    for root, _dirs, names in os.walk(batch_dir, followlinks=True):
        for name in names:
            p = Path(root) / name
            if p.is_file() and name != "manifest.csv" and not name.startswith("."):
                out.append(p)
    return sorted(out)


def decode_image(data: bytes, name: str = "") -> Image.Image:
    """Decode bytes to an 8-bit RGB or L image, or raise :class:`BadImage`.

    Handles EXIF rotation, CMYK, 16-bit and palette images, alpha; identifies the format by
    content, so a WebP named .jpg decodes (its real format is what counts).
    """
    if len(data) > MAX_FILE_BYTES:
        raise BadImage("oversized", f"{len(data)} bytes > {MAX_FILE_BYTES}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            w, h = img.size
            if w * h > MAX_PIXELS:
                raise BadImage("oversized", f"{w}x{h} pixels > {MAX_PIXELS}")
            img.load()
    except BadImage:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        reason = "oversized" if "ecompression" in type(e).__name__ else "unreadable"
        raise BadImage(reason, f"{type(e).__name__}: {e}") from None
    except (OSError, SyntaxError, ValueError) as e:
        msg = str(e)
        reason = "truncated" if ("truncated" in msg.lower() or "end of file" in msg.lower()) else "unreadable"
        raise BadImage(reason, f"{type(e).__name__}: {msg}") from None
    w, h = img.size
    if min(w, h) < MIN_SIDE:
        raise BadImage("too_small", f"{w}x{h} pixels, minimum side {MIN_SIDE}")
    img = ImageOps.exif_transpose(img)
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        top = arr.max() or 1.0
        img = Image.fromarray((arr * (255.0 / (65535.0 if top > 255 else 255.0))).clip(0, 255).astype(np.uint8), "L")
    elif img.mode in ("L", "RGB"):
        pass
    elif img.mode in ("LA", "P", "PA", "RGBA", "CMYK", "YCbCr", "1", "F", "LAB", "HSV"):
        img = img.convert("RGB") if img.mode not in ("LA", "1", "F") else img.convert("L")
    else:
        img = img.convert("RGB")
    return img


def encode_png(img: Image.Image) -> bytes:
    """Deterministic PNG encoding (fixed compression, no metadata) so hashes are stable."""
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()


def face_id_of(png: bytes) -> str:
    return hashlib.sha256(png).hexdigest()


def square_crop(img: Image.Image, bbox: Sequence[float], margin: float = CROP_MARGIN,
                size: int = CROP_SIZE) -> Image.Image:
    """Square crop centred on ``bbox`` (x, y, w, h), padded with edge pixels, resized to ``size``."""
    x, y, w, h = bbox
    side = max(w, h) * margin
    cx, cy = x + w / 2, y + h / 2
    left, top = int(round(cx - side / 2)), int(round(cy - side / 2))
    side_i = int(round(side))
    arr = np.asarray(img)
    pad = max(0, -left, -top, left + side_i - img.width, top + side_i - img.height)
    if pad:
        widths = ((pad, pad), (pad, pad)) + (((0, 0),) if arr.ndim == 3 else ())
        arr = np.pad(arr, widths, mode="edge")
        left, top = left + pad, top + pad
    crop = Image.fromarray(arr[top:top + side_i, left:left + side_i])
    return crop.resize((size, size), Image.Resampling.BILINEAR)


def faces_from_image(img: Image.Image, file_name: str, known: KnownRow,
                     detector: Detector | None) -> list[FaceCrop]:
    """Normalised crops for one decoded image: pass-through or detect-and-crop."""
    w, h = img.size
    if max(w, h) <= PRECROP_MAX_SIDE:
        png = encode_png(img)
        return [FaceCrop(face_id_of(png), file_name, 0, png, max(w, h), w, h, "passthrough", 1.0,
                         [0.0, 0.0, float(w), float(h)], known)]
    if detector is None:
        raise BadImage("no_detector", "photo needs face detection but no detector is configured")
    rgb = np.asarray(img.convert("RGB"))
    dets = list(detector(rgb))
    if not dets:
        raise BadImage("no_face", f"no face found in {w}x{h} image")
    out = []
    for i, d in enumerate(dets):
        crop = square_crop(img.convert("RGB"), d.bbox)
        png = encode_png(crop)
        out.append(FaceCrop(face_id_of(png), file_name, i, png, CROP_SIZE, w, h, "blazeface",
                            float(d.score), [float(v) for v in d.bbox],
                            # Manifest labels describe the image: only meaningful for a single face.
                            known if len(dets) == 1 else KnownRow(subject_id=known.subject_id, split=known.split)))
    return out


def default_detector() -> Detector:
    """The offline BlazeFace detector (needs the fetched weights), loaded on first use so that
    batches of pre-cropped faces never load the model."""

    def detect(rgb: np.ndarray) -> Sequence:
        from seke.vision.detect import detect_faces

        return detect_faces(rgb)

    return detect


def ingest_folder(batch_dir: Path, detector: Detector | None = None,
                  files: Iterable[Path] | None = None) -> tuple[list[FaceCrop], list[Rejected]]:
    """Turn every file of a batch folder into face crops or quarantine rows; never raises per file."""
    batch_dir = Path(batch_dir)
    manifest = read_manifest(batch_dir)
    crops: list[FaceCrop] = []
    rejected: list[Rejected] = []
    seen: dict[str, str] = {}
    listed = list(files) if files is not None else list_images(batch_dir)
    for path in listed:
        rel = path.relative_to(batch_dir).as_posix()
        known = manifest.get(rel, KnownRow())
        try:
            data = path.read_bytes()
            img = decode_image(data, rel)
            found = faces_from_image(img, rel, known, detector)
        except BadImage as e:
            rejected.append(Rejected(rel, e.reason, e.detail))
            continue
        except Exception as e:  # a detector/model failure on one file must not sink the batch
            rejected.append(Rejected(rel, "processing_error", f"{type(e).__name__}: {e}"))
            continue
        for c in found:
            if c.face_id in seen:
                rejected.append(Rejected(f"{rel}#{c.face_index}", "duplicate",
                                         f"same normalised crop as {seen[c.face_id]} (face_id {c.face_id[:12]})"))
                continue
            seen[c.face_id] = f"{rel}#{c.face_index}"
            crops.append(c)
    if files is None:
        # A manifest row whose file never arrived is a lost item: say so instead of dropping it.
        present = {p.relative_to(batch_dir).as_posix() for p in listed}
        rejected += [Rejected(rel, "missing_file", "listed in manifest.csv but not in the batch folder")
                     for rel in sorted(set(manifest) - present)]
    return crops, rejected
