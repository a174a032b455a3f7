"""End-to-end speed of the offline annotator on this machine.

    python bench/annotator_speed.py [--data DIR] [--faces N] [--samples K] [--simulated]

End-to-end per face: decode the image bytes, detect the face (BlazeFace, with the padded retry
and mesh verification for tight crops), then the annotator's sample(s): landmarks, blendshapes,
expression model (with mirror averaging), AU models, VA, JSON answer. Baseline measured in the
same run: the bare model invocations only (expression + landmarks + blendshapes on pre-decoded
arrays, one view). Times ``--faces`` faces sampled (seed 0) from ../shared/data/fer2013 (or
``--data DIR``); without them it exits 2, unless ``--simulated`` asks for the cached sample photo
(astronaut.png at 128×128) repeated instead.
Ends with ``RESULT source=offline data=fer2013:N faces_per_s=... model_only_faces_per_s=...``
(``data=sample_photo:N`` with ``--simulated``).
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from seke.annotation import FaceItem, PromptSpec, SampleRequest  # noqa: E402
from seke.annotators.offline import OfflineAnnotator, decode_crop  # noqa: E402
from seke.knowledge import knowledge_v1  # noqa: E402
from seke.vision.au_evidence import with_au_calibration  # noqa: E402
from seke.vision.detect import detect_faces  # noqa: E402
from seke.vision.expression import expression_probs_fer  # noqa: E402
from seke.vision.landmarks import blendshapes, mesh_for_crop  # noqa: E402
from seke.weights import samples_dir  # noqa: E402

SHARED = Path(os.environ.get("SEKE_SHARED_DATA", ROOT / ".." / "shared" / "data"))


def face_blobs(d: Path, n: int) -> list[bytes]:
    """``n`` image files of the set at ``d`` (a seeded sample; all of them when fewer)."""
    man = pl.read_csv(d / "manifest.csv")
    if man.height > n:
        man = man.sample(n, seed=0, with_replacement=False, shuffle=True)
    return [(d / p).read_bytes() for p in man["image"]]


def sample_photo_blobs(n: int) -> list[bytes]:
    photo = Image.open(samples_dir() / "astronaut.png").convert("RGB")
    buf = io.BytesIO()
    photo.resize((128, 128)).save(buf, format="PNG")
    return [buf.getvalue()] * n


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=None)
    ap.add_argument("--faces", type=int, default=300)
    ap.add_argument("--samples", type=int, default=1)
    ap.add_argument("--simulated", action="store_true",
                    help="time the cached sample photo instead of real faces (RESULT data=sample_photo)")
    args = ap.parse_args(argv)
    if args.simulated:
        blobs, data = sample_photo_blobs(args.faces), f"sample_photo:{args.faces}"
    else:
        d = args.data or SHARED / "fer2013"
        if not (d / "manifest.csv").exists():
            print(f"no data: {d}/manifest.csv not found; pass --data DIR, or --simulated for the sample photo",
                  file=sys.stderr)
            return 2
        blobs = face_blobs(d, args.faces)
        data = f"{d.name}:{len(blobs)}"
    ann = OfflineAnnotator(with_au_calibration(knowledge_v1()), seed=0, cache_size=0)
    spec = PromptSpec.make("speed", [], ["expression", "va", "aus"])
    # warm-up: build every interpreter once
    ann.sample_batch([SampleRequest(FaceItem("warm", blobs[0]), spec, 1)])
    detect_faces(np.asarray(decode_crop(blobs[0])))

    arrays = [np.asarray(decode_crop(b)) for b in blobs]
    t0 = time.perf_counter()
    for a in arrays:
        expression_probs_fer(a)
        blendshapes(mesh_for_crop(a, refine=False))
    model_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    found = 0
    for i, b in enumerate(blobs):
        img = decode_crop(b)
        found += bool(detect_faces(np.asarray(img)))
        ss = ann.sample_batch([SampleRequest(FaceItem(f"f{i}", b), spec, args.samples)])[0]
        assert len(ss) == args.samples
    e2e_s = time.perf_counter() - t0
    n = len(blobs)
    e2e, model = n / e2e_s, n / model_s
    print(f"faces: {n}  samples per face: {args.samples}  detector found a face in {found}/{n}")
    print(f"end-to-end (decode, detect, {args.samples} sample(s)): {e2e:8.1f} faces/s  ({1000 * e2e_s / n:.1f} ms/face)")
    print(f"bare models (expression + landmarks + blendshapes): {model:8.1f} faces/s  ({1000 * model_s / n:.1f} ms/face)")
    print(f"ratio end-to-end / bare models: {e2e / model:.3f}")
    print(f"RESULT source=offline data={data} faces_per_s={e2e:.1f} model_only_faces_per_s={model:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
