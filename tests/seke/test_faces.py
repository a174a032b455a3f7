"""Decoding, validation, pass-through crops, file listing and manifest reading (no models needed)."""

import os
import resource
import unicodedata
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from seke.faces import (CROP_SIZE, BadImage, decode_image, ingest_batch, ingest_folder, read_manifest,
                        square_crop)
from tests.badfiles import png_header_only, write_bad_files

GIB = 1024 ** 3


def _maxrss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


@pytest.fixture
def face_png(tmp_path) -> Path:
    import numpy as np

    rng = np.random.default_rng(0)
    p = tmp_path / "face.png"
    Image.fromarray(rng.integers(0, 255, (48, 48), dtype=np.uint8), "L").save(p)
    return p


def test_bomb_is_refused_before_decoding():
    with pytest.raises(BadImage) as e:
        decode_image(png_header_only(20000, 20000))
    assert e.value.reason == "oversized"


def test_every_bad_file_gets_its_reason_and_the_rest_lands(tmp_path, face_png):
    batch = tmp_path / "batch"
    expected = write_bad_files(batch, face_png)
    (batch / "good.png").write_bytes(face_png.read_bytes())
    (batch / "copy_of_good.png").write_bytes(face_png.read_bytes())

    def no_faces(rgb):  # a detector that never finds a face: photos end as no_face
        return []

    crops, rejected = ingest_folder(batch, detector=no_faces)
    reasons = {r.item_id.split("#")[0]: r.reason for r in rejected}
    for name, reason in expected.items():
        if reason is None:
            assert name not in reasons, f"{name} should have been ingested, got {reasons.get(name)}"
        else:
            assert reasons.get(name) == reason, f"{name}: {reasons.get(name)} != {reason}"
    assert sum(r == "duplicate" for r in reasons.values()) == 1
    names = {c.file_name for c in crops}
    assert {"cmyk.jpg", "sixteen_bit.png", "webp_named.jpg"} <= names
    assert len({c.face_id for c in crops}) == len(crops)
    assert all(len(c.face_id) == 64 for c in crops)


def test_manifest_in_shared_format_is_read_as_is(shared_data):
    m = read_manifest(shared_data / "ckplus")
    row = next(iter(m.values()))
    assert row.expression in {"anger", "contempt", "disgust", "fear", "happiness", "sadness", "surprise"}
    assert row.aus is not None and row.subject_id
    fer = read_manifest(shared_data / "fer2013")
    assert next(iter(fer.values())).split in {"train", "validation"}
    assert next(iter(fer.values())).aus is None


def test_manifest_rows_without_a_file_are_quarantined(tmp_path, face_png):
    batch = tmp_path / "batch"
    batch.mkdir()
    (batch / "here.png").write_bytes(face_png.read_bytes())
    (batch / "manifest.csv").write_text("image,expression\nhere.png,happiness\ngone.png,anger\n")
    crops, rejected = ingest_folder(batch, detector=lambda rgb: [])
    assert [c.file_name for c in crops] == ["here.png"]
    assert [(r.item_id, r.reason) for r in rejected] == [("gone.png", "missing_file")]


def test_symlinked_image_folders_are_followed(tmp_path, face_png):
    store = tmp_path / "store"
    store.mkdir()
    (store / "a.png").write_bytes(face_png.read_bytes())
    batch = tmp_path / "batch"
    batch.mkdir()
    (batch / "images").symlink_to(store, target_is_directory=True)
    (batch / "manifest.csv").write_text("image,expression\nimages/a.png,sadness\n")
    crops, rejected = ingest_folder(batch, detector=lambda rgb: [], roots=[store])
    assert [(c.file_name, c.known.expression) for c in crops] == [("images/a.png", "sadness")]
    assert rejected == []


# ---- symlinks: confined to the landing zone, cycles cut -------------------------------------

def test_symlinks_outside_the_allowed_roots_are_quarantined_not_read(tmp_path, face_png):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "secret.png").write_bytes(face_png.read_bytes())
    landing = tmp_path / "landing"
    batch = landing / "src" / "b1"
    batch.mkdir(parents=True)
    (batch / "linked_file.png").symlink_to(elsewhere / "secret.png")
    (batch / "linked_dir").symlink_to(elsewhere, target_is_directory=True)
    (batch / "manifest.csv").write_text("image,expression\nlinked_file.png,anger\n")
    r = ingest_batch(batch, detector=lambda rgb: [], roots=[landing])
    assert r.crops == []
    reasons = {x.item_id: x.reason for x in r.rejected}
    assert reasons == {"linked_file.png": "outside_landing", "linked_dir": "outside_landing"}


def test_symlinks_inside_the_landing_zone_are_followed(tmp_path, face_png):
    landing = tmp_path / "landing"
    store = landing / "store"
    store.mkdir(parents=True)
    (store / "a.png").write_bytes(face_png.read_bytes())
    batch = landing / "src" / "b1"
    batch.mkdir(parents=True)
    (batch / "a.png").symlink_to(store / "a.png")
    crops, rejected = ingest_folder(batch, detector=lambda rgb: [], roots=[landing])
    assert [c.file_name for c in crops] == ["a.png"] and rejected == []


def test_symlink_loops_end_and_are_reported(tmp_path, face_png):
    batch = tmp_path / "batch"
    (batch / "images").mkdir(parents=True)
    (batch / "images" / "a.png").write_bytes(face_png.read_bytes())
    (batch / "loop1").symlink_to(batch, target_is_directory=True)
    (batch / "images" / "loop2").symlink_to(batch, target_is_directory=True)
    (batch / "again").symlink_to(batch / "images", target_is_directory=True)  # sorts before images
    crops, rejected = ingest_folder(batch, detector=lambda rgb: [])
    assert [c.file_name for c in crops] == ["images/a.png"]  # the real folder wins over the link
    assert sorted((x.item_id, x.reason) for x in rejected) == [
        ("again", "symlink_loop"), ("images/loop2", "symlink_loop"), ("loop1", "symlink_loop")]


def test_fifo_is_refused_without_blocking(tmp_path, face_png):
    batch = tmp_path / "batch"
    batch.mkdir()
    os.mkfifo(batch / "pipe.png")
    crops, rejected = ingest_folder(batch, detector=lambda rgb: [])
    assert [(x.item_id, x.reason) for x in rejected] == [("pipe.png", "unreadable")]


# ---- names -----------------------------------------------------------------------------------

def test_nfd_file_name_matches_nfc_manifest_row(tmp_path, face_png):
    batch = tmp_path / "batch"
    batch.mkdir()
    nfd = unicodedata.normalize("NFD", "café.png")
    (batch / nfd).write_bytes(face_png.read_bytes())
    (batch / "manifest.csv").write_text("image,expression\n" + unicodedata.normalize("NFC", "café.png")
                                        + ",happiness\n", encoding="utf-8")
    crops, rejected = ingest_folder(batch, detector=lambda rgb: [])
    assert [(c.file_name, c.known.expression) for c in crops] == [("café.png", "happiness")]
    assert rejected == []


def test_file_name_with_invalid_utf8_is_escaped_text(tmp_path, face_png):
    batch = tmp_path / "batch"
    batch.mkdir()
    raw = os.fsencode(str(batch)) + b"/bad\xff\xfename.png"
    with open(raw, "wb") as fh:
        fh.write(face_png.read_bytes())
    crops, rejected = ingest_folder(batch, detector=lambda rgb: [])
    assert [c.file_name for c in crops] == ["bad\\xff\\xfename.png"]
    pa.array([c.file_name for c in crops], pa.string())  # no surrogate left for Arrow to choke on


# ---- budgets: nothing big is read or allocated --------------------------------------------------

def test_sparse_multi_gigabyte_file_is_refused_from_its_size(tmp_path, face_png, monkeypatch):
    batch = tmp_path / "batch"
    batch.mkdir()
    with open(batch / "huge.png", "wb") as fh:
        fh.truncate(6 * GIB)  # sparse: no disk used
    opened = []
    real_open = open

    def spy(path, *a, **k):
        opened.append(str(path))
        return real_open(path, *a, **k)

    monkeypatch.setattr("builtins.open", spy)
    crops, rejected = ingest_folder(batch, detector=lambda rgb: [])
    assert [(x.item_id, x.reason) for x in rejected] == [("huge.png", "oversized")]
    assert not any(p.endswith("huge.png") for p in opened)


def test_extreme_aspect_png_is_refused_from_its_header(tmp_path):
    strip = tmp_path / "strip.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40000, 200), dtype=np.uint8)).save(strip)
    before = _maxrss_bytes()
    with pytest.raises(BadImage) as e:
        decode_image(strip.read_bytes())
    assert e.value.reason == "extreme_aspect"
    assert _maxrss_bytes() - before < 256 * 1024 ** 2


def test_square_crop_memory_is_bounded_by_the_crop_not_the_box():
    img = Image.fromarray(np.random.default_rng(1).integers(0, 255, (400, 2000, 3), dtype=np.uint8))
    before = _maxrss_bytes()
    # A box 100k px wide: padding the image to it would need ~60 GB.
    out = square_crop(img, (-50_000.0, -50_000.0, 100_000.0, 100_000.0))
    assert out.size == (CROP_SIZE, CROP_SIZE)
    assert _maxrss_bytes() - before < GIB


def test_square_crop_inside_the_image_is_the_plain_crop():
    img = Image.fromarray(np.random.default_rng(2).integers(0, 255, (300, 300, 3), dtype=np.uint8))
    out = square_crop(img, (100.0, 100.0, 50.0, 50.0), margin=1.4, size=64)
    want = img.crop((90, 90, 160, 160)).resize((64, 64), Image.Resampling.BILINEAR)
    assert np.array_equal(np.asarray(out), np.asarray(want))


def test_square_crop_replicates_edges_where_the_square_leaves_the_image():
    arr = np.zeros((100, 100), dtype=np.uint8)
    arr[:, 0] = 255  # the left edge column is white
    out = np.asarray(square_crop(Image.fromarray(arr), (0.0, 30.0, 40.0, 40.0), margin=1.5, size=60))
    # the square starts 10 px left of the image: those output columns repeat the edge
    assert out.shape == (60, 60) and (out[:, :5] == out[:, 5:6]).all() and out[:, 0].min() > 100


# ---- blank images ------------------------------------------------------------------------------

@pytest.mark.parametrize("img", [Image.new("RGBA", (48, 48), (0, 0, 0, 0)),
                                 Image.new("RGBA", (48, 48), (200, 10, 10, 0)),
                                 Image.new("L", (48, 48), 0), Image.new("RGB", (300, 300), (9, 9, 9))],
                         ids=["transparent-black", "transparent-red", "black", "flat-photo"])
def test_blank_images_are_refused(img):
    import io

    buf = io.BytesIO()
    img.save(buf, format="PNG")
    with pytest.raises(BadImage) as e:
        decode_image(buf.getvalue())
    assert e.value.reason == "blank_image"


# ---- manifest problems never sink the batch --------------------------------------------------

@pytest.mark.parametrize("manifest", [b"", b"  \n", b"file,expression\nface.png,anger\n"],
                         ids=["empty", "blank", "no-image-column"])
def test_bad_manifest_lands_images_unlabelled(tmp_path, face_png, manifest):
    batch = tmp_path / "batch"
    batch.mkdir()
    (batch / "face.png").write_bytes(face_png.read_bytes())
    (batch / "manifest.csv").write_bytes(manifest)
    r = ingest_batch(batch, detector=lambda rgb: [])
    assert [(c.file_name, c.known.expression, c.known.invalid) for c in r.crops] == [("face.png", None, ())]
    assert [(x.item_id, x.reason) for x in r.rejected] == [("manifest.csv", "bad_manifest")]
    assert r.manifest.status == "bad" and not r.manifest.healthy


def test_invalid_labels_are_withheld_per_granularity(tmp_path, face_png):
    batch = tmp_path / "batch"
    batch.mkdir()
    (batch / "face.png").write_bytes(face_png.read_bytes())
    (batch / "manifest.csv").write_text("image,expression,valence,arousal,au1,au12\n"
                                        "face.png,joyful,0.5,0.2,yes,0.5\n")
    r = ingest_batch(batch, detector=lambda rgb: [])
    (c,) = r.crops
    assert c.known.expression is None and c.known.aus is None
    assert (c.known.valence, c.known.arousal) == (0.5, 0.2)
    assert c.known.invalid == ("expression", "aus")
    bad = sorted(x.detail for x in r.rejected if x.reason == "bad_label")
    assert len(bad) == 2 and "au12='0.5'" in bad[0] and "expression='joyful'" in bad[1]


def test_subject_pattern_gives_subjects_to_faces_the_manifest_did_not(tmp_path, face_png):
    from seke.manifest import subject_pattern

    batch = tmp_path / "batch"
    batch.mkdir()
    rng = np.random.default_rng(1)
    for name in ("Ann_Lee_0001.png", "Ann_Lee_0002.png", "Bo_0001.png", "odd.png"):
        Image.fromarray(rng.integers(0, 255, (48, 48), dtype=np.uint8), "L").save(batch / name)
    (batch / "manifest.csv").write_text("image,expression,subject_id\nAnn_Lee_0001.png,anger,\n"
                                        "Bo_0001.png,fear,S7\n")
    r = ingest_batch(batch, detector=lambda rgb: [], subject_pattern=subject_pattern(r"(?P<subject>.+)_\d+\.\w+"))
    subjects = {c.file_name: c.known.subject_id for c in r.crops}
    # the manifest's subject wins; a file the manifest does not list still gets one; no match: none
    assert subjects == {"Ann_Lee_0001.png": "Ann_Lee", "Ann_Lee_0002.png": "Ann_Lee", "Bo_0001.png": "S7",
                        "odd.png": None}
    assert {c.file_name: c.known.expression for c in r.crops}["Ann_Lee_0001.png"] == "anger"
    plain = ingest_batch(batch, detector=lambda rgb: [])
    assert {c.known.subject_id for c in plain.crops} == {None, "S7"}
