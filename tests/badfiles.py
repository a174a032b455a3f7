"""Generators of deliberately bad (and oddly encoded) image files for ingestion tests."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def png_header_only(width: int, height: int) -> bytes:
    """A valid PNG signature + IHDR claiming ``width``×``height`` with a tiny IDAT: a
    decompression-bomb shape that must be refused before any pixel is allocated."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


def write_bad_files(folder: Path, good_image: Path) -> dict[str, str]:
    """Write bad files next to real faces; returns file name -> expected quarantine reason
    (``None`` for odd-but-valid files that must be ingested)."""
    folder.mkdir(parents=True, exist_ok=True)
    good = good_image.read_bytes()
    expected: dict[str, str | None] = {}
    (folder / "truncated.jpg").write_bytes(good[: len(good) // 3]); expected["truncated.jpg"] = "truncated"
    (folder / "notes.png").write_text("not an image at all\n"); expected["notes.png"] = "unreadable"
    (folder / "bomb.png").write_bytes(png_header_only(20000, 20000)); expected["bomb.png"] = "oversized"
    Image.new("L", (1, 1), 128).save(folder / "one_pixel.png"); expected["one_pixel.png"] = "too_small"
    # A 400x400 grey gradient photo: big enough to need detection, with no face in it (a flat
    # one would be refused earlier, as blank_image).
    ramp = np.tile(np.linspace(90, 150, 400, dtype=np.uint8), (400, 1))
    Image.fromarray(np.stack([ramp] * 3, axis=-1)).save(folder / "wall.jpg"); expected["wall.jpg"] = "no_face"
    # Nothing to label: fully transparent, and one constant value.
    Image.new("RGBA", (48, 48), (0, 0, 0, 0)).save(folder / "transparent.png"); expected["transparent.png"] = "blank_image"
    Image.new("L", (48, 48), 200).save(folder / "flat.png"); expected["flat.png"] = "blank_image"
    # Odd but valid encodings of a real face: must be ingested, not quarantined.
    face = Image.open(good_image).convert("RGB").resize((64, 64))
    face.convert("CMYK").save(folder / "cmyk.jpg"); expected["cmyk.jpg"] = None
    arr16 = (np.asarray(face.convert("L"), dtype=np.uint16) * 257)
    Image.fromarray(arr16).save(folder / "sixteen_bit.png"); expected["sixteen_bit.png"] = None
    buf = io.BytesIO(); face.rotate(3).save(buf, format="WEBP")
    (folder / "webp_named.jpg").write_bytes(buf.getvalue()); expected["webp_named.jpg"] = None
    return expected
