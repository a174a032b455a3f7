"""Face image I/O for ingestion: decode and validate files, detect and crop faces, hash crops.

Why it is strict: one bad file must never sink a batch, and no file may make the process
allocate more than a budget. Every file ends either as one or more normalised face crops or as
a quarantine row with a machine-readable reason (:mod:`seke.quarantine`):

``unreadable`` (not an image / cannot be identified), ``truncated`` (decoding stopped early),
``oversized`` (file bytes from ``os.stat`` before any read, or pixel count from the header
before any pixel is decoded — decompression bombs and sparse multi-GB files included),
``extreme_aspect`` (width/height ratio over :data:`MAX_ASPECT`, from the header),
``too_small`` (below the minimum side), ``blank_image`` (fully transparent or one constant
value: nothing to label, yet a model would still "see" an expression), ``no_face`` (a photo
where the detector finds none), ``duplicate`` (the same normalised crop was already seen in
this batch), ``unhashable`` (imagehash cannot read the crop, so the near-duplicate guard of
:mod:`seke.near_dup` could not see it); plus the listing reasons of :mod:`seke.batch_files` and the manifest reasons of
:mod:`seke.manifest`.

Pre-cropped faces (both sides <= ``PRECROP_MAX_SIDE``, as in FER2013/CK+) pass through;
larger images go through face detection and an aligned square crop. The face id is the sha256
of the normalised crop's PNG bytes, so the same face gets the same id wherever it comes from.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from seke.batch_files import BatchFile, text_name, walk_batch
from seke.manifest import KnownRow, Manifest, load_manifest, read_manifest, with_subject_from_name  # noqa: F401  (re-exported)
from seke.near_dup import UnhashableImage, phash_hex
from seke.quarantine import (BLANK_IMAGE, DUPLICATE, EXTREME_ASPECT, MISSING_FILE, OVERSIZED,
                             PROCESSING_ERROR, UNHASHABLE, Rejected)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"}
MAX_FILE_BYTES = 50 * 1024 * 1024
MAX_PIXELS = 40_000_000
#: Longest/shortest side. Faces, portraits and panoramas of groups fit; a 200x40000 strip does
#: not (it made the detector's letterbox and the crop padding allocate tens of GB).
MAX_ASPECT = 8.0
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
    phash: str | None = None   # perceptual hash of the crop (seke.near_dup), set by ingest_batch


Detector = Callable[[np.ndarray], Sequence]  # rgb uint8 -> detections with .bbox and .score


def list_images(batch_dir: Path, roots: Sequence[Path] = ()) -> list[Path]:
    """Every regular file of the batch folder except the manifest and hidden files, sorted
    (symlinks only where :func:`seke.batch_files.walk_batch` allows them)."""
    return [f.path for f in walk_batch(batch_dir, roots)[0]]


def check_header(img: Image.Image) -> None:
    """Pixel and aspect-ratio budget from the header alone (nothing decoded yet)."""
    w, h = img.size
    if w * h > MAX_PIXELS:
        raise BadImage(OVERSIZED, f"{w}x{h} pixels > {MAX_PIXELS}")
    if min(w, h) >= 1 and max(w, h) / min(w, h) > MAX_ASPECT:
        raise BadImage(EXTREME_ASPECT, f"{w}x{h} pixels: aspect ratio {max(w, h) / min(w, h):.1f} > {MAX_ASPECT:g}")


def check_not_blank(img: Image.Image) -> None:
    """Refuse images with nothing in them: fully transparent, or one constant value."""
    has_alpha = img.mode in ("RGBA", "LA", "PA", "La", "RGBa") or (
        img.mode == "P" and "transparency" in img.info)
    if has_alpha:
        alpha = (img.convert("RGBA") if img.mode == "P" else img).getchannel("A")
        if alpha.getextrema()[1] == 0:
            raise BadImage(BLANK_IMAGE, f"fully transparent {img.width}x{img.height} {img.mode} image")
    extrema = img.getextrema()
    bands = extrema if isinstance(extrema[0], tuple) else (extrema,)
    if all(lo == hi for lo, hi in bands):  # type: ignore[misc]
        raise BadImage(BLANK_IMAGE, f"every pixel has the same value {tuple(lo for lo, _ in bands)}")  # type: ignore[misc]


def decode_image(data: bytes, name: str = "") -> Image.Image:
    """Decode bytes to an 8-bit RGB or L image, or raise :class:`BadImage`.

    Handles EXIF rotation, CMYK, 16-bit and palette images, alpha; identifies the format by
    content, so a WebP named .jpg decodes (its real format is what counts). Budgets (bytes,
    pixels, aspect ratio) are checked before any pixel is decoded; blank images are refused.
    """
    if len(data) > MAX_FILE_BYTES:
        raise BadImage(OVERSIZED, f"{len(data)} bytes > {MAX_FILE_BYTES}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            check_header(img)
            img.load()
    except BadImage:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        reason = OVERSIZED if "ecompression" in type(e).__name__ else "unreadable"
        raise BadImage(reason, f"{type(e).__name__}: {e}") from None
    except (OSError, SyntaxError, ValueError) as e:
        msg = str(e)
        reason = "truncated" if ("truncated" in msg.lower() or "end of file" in msg.lower()) else "unreadable"
        raise BadImage(reason, f"{type(e).__name__}: {msg}") from None
    w, h = img.size
    if min(w, h) < MIN_SIDE:
        raise BadImage("too_small", f"{w}x{h} pixels, minimum side {MIN_SIDE}")
    check_not_blank(img)
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


def read_file(path: Path) -> bytes:
    """The file's bytes; the size comes from ``os.stat`` first, so a multi-GB (or sparse) file
    is refused without reading, and at most ``MAX_FILE_BYTES + 1`` bytes are ever read."""
    size = os.stat(path).st_size
    if size > MAX_FILE_BYTES:
        raise BadImage(OVERSIZED, f"{size} bytes > {MAX_FILE_BYTES} (from the file size; not read)")
    with open(path, "rb") as fh:
        data = fh.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:  # grew since the stat
        raise BadImage(OVERSIZED, f"more than {MAX_FILE_BYTES} bytes")
    return data


def encode_png(img: Image.Image) -> bytes:
    """Deterministic PNG encoding (fixed compression, no metadata) so hashes are stable."""
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()


def face_id_of(png: bytes) -> str:
    return hashlib.sha256(png).hexdigest()


def square_crop(img: Image.Image, bbox: Sequence[float], margin: float = CROP_MARGIN,
                size: int = CROP_SIZE) -> Image.Image:
    """Square crop centred on ``bbox`` (x, y, w, h), edges replicated where the square leaves the
    image, resized to ``size``.

    Memory is bounded by the image and ``size``², never by the box: only the in-bounds part of
    the square is cropped and resized (to its share of the output), then the output canvas is
    edge-padded. (The previous version padded the whole image to the box first: a huge box made
    that allocate tens of GB.) A square fully inside the image gives exactly the plain
    crop-and-resize.
    """
    x, y, w, h = (float(v) for v in bbox)
    side = max(w, h) * margin
    cx, cy = x + w / 2, y + h / 2
    left, top = int(round(cx - side / 2)), int(round(cy - side / 2))
    side_i = max(1, int(round(side)))
    W, H = img.size
    # The in-bounds part of the square, at least one pixel (a box beside the image gets its
    # nearest edge pixels replicated, as edge padding would).
    x0 = min(max(left, 0), W - 1)
    y0 = min(max(top, 0), H - 1)
    x1 = max(min(left + side_i, W), x0 + 1)
    y1 = max(min(top + side_i, H), y0 + 1)
    if (x0, y0, x1, y1) == (left, top, left + side_i, top + side_i):
        return img.crop((x0, y0, x1, y1)).resize((size, size), Image.Resampling.BILINEAR)
    scale = size / side_i

    def span(a: int, b: int, origin: int) -> tuple[int, int]:
        lo = min(max(int(round((a - origin) * scale)), 0), size - 1)
        hi = min(max(int(round((b - origin) * scale)), lo + 1), size)
        return lo, hi

    ox0, ox1 = span(x0, x1, left)
    oy0, oy1 = span(y0, y1, top)
    part = np.asarray(img.crop((x0, y0, x1, y1)).resize((ox1 - ox0, oy1 - oy0), Image.Resampling.BILINEAR))
    widths = ((oy0, size - oy1), (ox0, size - ox1)) + (((0, 0),) if part.ndim == 3 else ())
    return Image.fromarray(np.pad(part, widths, mode="edge"))


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
    rgb_img = img.convert("RGB")
    dets = list(detector(np.asarray(rgb_img)))
    if not dets:
        raise BadImage("no_face", f"no face found in {w}x{h} image")
    out = []
    for i, d in enumerate(dets):
        crop = square_crop(rgb_img, d.bbox)
        png = encode_png(crop)
        out.append(FaceCrop(face_id_of(png), file_name, i, png, CROP_SIZE, w, h, "blazeface",
                            float(d.score), [float(v) for v in d.bbox],
                            # Manifest labels describe the image: only meaningful for a single face.
                            # Withheld granularities stay withheld on every face of the photo.
                            known if len(dets) == 1 else KnownRow(subject_id=known.subject_id, split=known.split,
                                                                  invalid=known.invalid, licence=known.licence)))
    return out


def default_detector() -> Detector:
    """The offline BlazeFace detector (needs the fetched weights), loaded on first use so that
    batches of pre-cropped faces never load the model."""

    def detect(rgb: np.ndarray) -> Sequence:
        from seke.vision.detect import detect_faces

        return detect_faces(rgb)

    return detect


@dataclass
class IngestResult:
    """Everything one batch folder became: crops, quarantine rows and the parsed manifest."""

    crops: list[FaceCrop]
    rejected: list[Rejected]
    manifest: Manifest


def ingest_batch(batch_dir: Path, detector: Detector | None = None,
                 files: Iterable[Path] | None = None, roots: Sequence[Path] = (),
                 hasher: Callable[[bytes], str] = phash_hex,
                 subject_pattern: re.Pattern[str] | None = None) -> IngestResult:
    """Turn every file of a batch folder into face crops or quarantine rows; never raises per
    file or for the manifest.

    ``roots``: folders that symlinks in the batch may resolve into (the landing zone and any
    allowed shared stores; the batch folder itself is always allowed). ``files``: ingest only
    these paths (no listing, no ``missing_file`` rows). ``hasher``: the perceptual hash of a
    crop's PNG bytes (:func:`seke.near_dup.phash_hex`); a crop it cannot read is quarantined
    (``unhashable``), never landed without a hash (it would escape the near-duplicate guard).
    ``subject_pattern``: reads the subject from a file's name where the manifest names none
    (:func:`seke.manifest.with_subject_from_name`).
    """
    batch_dir = Path(batch_dir)
    manifest = load_manifest(batch_dir)
    rejected: list[Rejected] = list(manifest.issues)
    crops: list[FaceCrop] = []
    seen: dict[str, str] = {}
    if files is None:
        listed, refused = walk_batch(batch_dir, roots)
        rejected += refused
    else:
        listed = [BatchFile(Path(p), text_name(os.fsdecode(os.path.relpath(p, batch_dir)).replace(os.sep, "/")))
                  for p in files]
        refused = []
    for f in listed:
        rel = f.name
        known = with_subject_from_name(manifest.rows.get(rel, KnownRow()), rel, subject_pattern)
        try:
            img = decode_image(read_file(f.path), rel)
            found = faces_from_image(img, rel, known, detector)
        except BadImage as e:
            rejected.append(Rejected(rel, e.reason, e.detail))
            continue
        except Exception as e:  # a detector/model failure on one file must not sink the batch
            rejected.append(Rejected(rel, PROCESSING_ERROR, f"{type(e).__name__}: {e}"))
            continue
        for c in found:
            if c.face_id in seen:
                rejected.append(Rejected(f"{rel}#{c.face_index}", DUPLICATE,
                                         f"same normalised crop as {seen[c.face_id]} (face_id {c.face_id[:12]})"))
                continue
            try:
                c.phash = hasher(c.crop_png)
            except UnhashableImage as e:
                rejected.append(Rejected(f"{rel}#{c.face_index}", UNHASHABLE,
                                         f"imagehash cannot read the crop: {e}"))
                continue
            seen[c.face_id] = f"{rel}#{c.face_index}"
            crops.append(c)
    if files is None:
        # A manifest row whose file never arrived is a lost item: say so instead of dropping it.
        present = {f.name for f in listed} | {r.item_id for r in refused}
        rejected += [Rejected(rel, MISSING_FILE, "listed in manifest.csv but not in the batch folder")
                     for rel in sorted(set(manifest.rows) - present)]
    return IngestResult(crops, rejected, manifest)


def ingest_folder(batch_dir: Path, detector: Detector | None = None,
                  files: Iterable[Path] | None = None,
                  roots: Sequence[Path] = (),
                  subject_pattern: re.Pattern[str] | None = None) -> tuple[list[FaceCrop], list[Rejected]]:
    """:func:`ingest_batch` as ``(crops, rejected)``."""
    r = ingest_batch(batch_dir, detector, files, roots, subject_pattern=subject_pattern)
    return r.crops, r.rejected
