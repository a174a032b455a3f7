"""The real ``annotate_batch`` job on a batch built by a hostile tester: no single bad item may
sink the batch, and nothing may silently change a human label.

One landing batch holds every file- and label-level case (a BOM'd manifest with a Latin-1 byte,
invalid VA/expression/AU labels, duplicate rows, an NFD file name, a name that is not UTF-8, a
200x40000 PNG, a sparse 6 GB file, symlink loops, a symlink leaving the landing zone, a blank
RGBA image); two tiny batches hold the manifest-level cases that cannot share one manifest (a
0-byte manifest, one without an ``image`` column). Real CK+ faces from ../shared/data; the job
runs on a temporary Dagster instance with the offline annotator.
"""

from __future__ import annotations

import csv
import os
import resource
import shutil
import unicodedata
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from dagster import DagsterInstance, Definitions
from PIL import Image

MAIN, EMPTY, NO_IMAGE = "hostile__main", "hostile__empty", "hostile__noimage"
GIB = 1024 ** 3
BAD_UTF8_NAME = b"bad\xffname.png"
ESCAPED_NAME = "bad\\xffname.png"
CAFE = unicodedata.normalize("NFC", "café.png")


def _ck_rows(shared: Path, n: int) -> tuple[list[dict], list[str]]:
    """The last frame of ``n`` distinct CK+ sequences (distinct faces, so no duplicate crops)."""
    with open(shared / "ckplus" / "manifest.csv", newline="") as fh:
        reader = csv.DictReader(fh)
        rows = list(reader)
        aus = [c for c in reader.fieldnames or [] if c.startswith("au")]
    last = {}
    for r in rows:
        last[r["sequence"]] = r
    return list(last.values())[:n], aus


def _row(ck: dict, aus: list[str], image: str, **over: str) -> dict:
    out = {"image": image, "subject_id": ck["subject_id"], "expression": ck["expression"],
           "valence": "", "arousal": "", **{a: ck[a] for a in aus}}
    out.update(over)
    return out


def _write_manifest(path: Path, rows: list[dict], columns: list[str]) -> None:
    """UTF-8 BOM, then Latin-1 text (``José``, ``café``): neither plain UTF-8 nor plain Latin-1."""
    lines = [",".join(columns)] + [",".join(r.get(c, "") for c in columns) for r in rows]
    path.write_bytes(b"\xef\xbb\xbf" + ("\n".join(lines) + "\n").encode("latin-1"))


def build_main(shared: Path, landing: Path, outside: Path) -> dict:
    """The hostile batch; returns what the assertions need (real labels per case)."""
    ck, aus = _ck_rows(shared, 16)
    batch = landing / "hostile" / "main"
    batch.mkdir(parents=True)
    names = ["plain.png", "latin1_subject.png", "va_5.png", "va_neg3.png", "va_nan.png", "va_inf.png",
             "joyful.png", "au_words.png", "au_half.png", "dup_agree.png", "dup_conflict.png", CAFE]
    real = dict(zip(names, ck))
    for name, r in real.items():
        on_disk = unicodedata.normalize("NFD", name)  # café.png lands as NFD (as macOS writes it)
        shutil.copy(shared / "ckplus" / r["image"], batch / on_disk)
    other = "happiness" if real["dup_conflict.png"]["expression"] != "happiness" else "sadness"
    words = {a: ("yes" if real["au_words.png"][a] == "1" else "no") for a in aus}
    words.update({aus[0]: words[aus[0]].upper(), aus[1]: {"yes": "true", "no": "False"}[words[aus[1]]]})
    rows = [
        _row(real["plain.png"], aus, "plain.png"),
        _row(real["latin1_subject.png"], aus, "latin1_subject.png", subject_id="José"),
        _row(real["va_5.png"], aus, "va_5.png", valence="5", arousal="0.2"),
        _row(real["va_neg3.png"], aus, "va_neg3.png", valence="0.1", arousal="-3"),
        _row(real["va_nan.png"], aus, "va_nan.png", valence="NaN", arousal="0.1"),
        _row(real["va_inf.png"], aus, "va_inf.png", valence="inf", arousal="0.1"),
        _row(real["joyful.png"], aus, "joyful.png", expression="joyful"),
        _row(real["au_words.png"], aus, "au_words.png", **words),
        _row(real["au_half.png"], aus, "au_half.png", au12="0.5"),
        _row(real["dup_agree.png"], aus, "dup_agree.png"),
        _row(real["dup_agree.png"], aus, "dup_agree.png"),
        _row(real["dup_conflict.png"], aus, "dup_conflict.png"),
        _row(real["dup_conflict.png"], aus, "dup_conflict.png", expression=other),
        _row(real[CAFE], aus, CAFE),
        # files that must not land, with a label that must not reach FEID
        _row(ck[12], aus, "strip.png", expression="anger"),
        _row(ck[12], aus, "huge.png", expression="anger"),
        _row(ck[12], aus, "transparent.png", expression="anger"),
        _row(ck[13], aus, "outside.png", expression="anger"),
    ]
    # A face whose file name is not UTF-8 (no manifest row can name it): lands unlabelled.
    with open(os.fsencode(str(batch)) + b"/" + BAD_UTF8_NAME, "wb") as fh:
        fh.write((shared / "ckplus" / ck[14]["image"]).read_bytes())
    # 200x40000 PNG (a strip of gradient: small file, 8 Mpx, absurd aspect ratio).
    strip = np.tile((np.arange(200, dtype=np.uint16) % 251).astype(np.uint8), (40000, 1))
    Image.fromarray(strip, "L").save(batch / "strip.png")
    with open(batch / "huge.png", "wb") as fh:
        fh.truncate(6 * GIB)  # sparse: nothing on disk, and nothing may read it
    Image.new("RGBA", (48, 48), (0, 0, 0, 0)).save(batch / "transparent.png")
    # A real face outside the landing zone, linked into the batch; and two links to the batch itself.
    outside.mkdir(parents=True, exist_ok=True)
    shutil.copy(shared / "ckplus" / ck[13]["image"], outside / "face.png")
    (batch / "outside.png").symlink_to(outside / "face.png")
    (batch / "loop_a").symlink_to(batch, target_is_directory=True)
    (batch / "loop_b").symlink_to(batch, target_is_directory=True)
    _write_manifest(batch / "manifest.csv", rows, ["image", "subject_id", "expression", "valence", "arousal"] + aus)
    return {"real": real, "aus": aus, "outside_face": outside / "face.png", "bad_utf8_face": ck[14],
            "conflict_other": other}


def build_small(shared: Path, landing: Path, batch_name: str, manifest: bytes, ck: dict) -> None:
    batch = landing / "hostile" / batch_name
    batch.mkdir(parents=True)
    shutil.copy(shared / "ckplus" / ck["image"], batch / "face.png")
    (batch / "manifest.csv").write_bytes(manifest)


def _checks(result) -> dict[tuple[str, str], object]:
    return {(e.asset_check_evaluation_data.asset_key.to_user_string(), e.asset_check_evaluation_data.check_name):
            e.asset_check_evaluation_data
            for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"}


@pytest.fixture(scope="module")
def hostile(tmp_path_factory, shared_data):
    import pipelines.definitions as pd
    from resources.annotator import AnnotatorResource
    from resources.landing import LandingZoneResource
    from resources.lake import LakeResource
    from resources.warehouse import WarehouseResource

    root = tmp_path_factory.mktemp("hostile")
    landing = root / "landing"
    info = build_main(shared_data, landing, root / "elsewhere")
    spare, _ = _ck_rows(shared_data, 18)
    build_small(shared_data, landing, "empty", b"", spare[16])
    build_small(shared_data, landing, "noimage", b"file,expression\nface.png,anger\n", spare[17])
    resources = {"lake": LakeResource(uri=str(root / "lake")),
                 "landing": LandingZoneResource(path=str(landing), allowed_roots=[]),
                 "annotator": AnnotatorResource(kind="offline", seed=0),
                 "duckdb": WarehouseResource(path=str(root / "lake" / "warehouse.duckdb"))}
    defs = Definitions(assets=pd.defs.assets, jobs=pd.defs.jobs, resources={**pd.defs.resources, **resources})
    instance = DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("batches", [MAIN, EMPTY, NO_IMAGE])
    assert defs.resolve_job_def("refresh_knowledge").execute_in_process(instance=instance).success
    job = defs.resolve_job_def("annotate_batch")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    results = {MAIN: job.execute_in_process(instance=instance, partition_key=MAIN, raise_on_error=False)}
    peak_delta = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
    for key in (EMPTY, NO_IMAGE):
        results[key] = job.execute_in_process(instance=instance, partition_key=key, raise_on_error=False)
    store = resources["lake"].lake()

    def table(name: str, key: str, **extra: str) -> pl.DataFrame:
        source, batch = key.split("__")
        part = {"source": source, "batch": batch, **extra}
        return store.read_partition(name, part) if store.exists(name, part) else pl.DataFrame()

    return {"info": info, "results": results, "table": table, "peak_delta": peak_delta}


# ---- the batch survives ------------------------------------------------------------------------

@pytest.mark.parametrize("key", [MAIN, EMPTY, NO_IMAGE])
def test_every_batch_succeeds_and_reaches_feid(hostile, key):
    result = hostile["results"][key]
    assert result.success
    done = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert {"raw_faces", "verified_labels", "feid", "feab"} <= done
    checks = _checks(result)
    for name in ("gx_raw_faces", "label_ranges"):
        assert checks[("raw_faces", name)].passed, name
    assert checks[("verified_labels", "label_ranges")].passed


def test_peak_memory_stays_small(hostile):
    # The 200x40000 PNG once took 21.8 GB RSS, the sparse 6 GB file was read whole.
    assert hostile["peak_delta"] < GIB, hostile["peak_delta"]


def _faces(hostile) -> dict[str, dict]:
    return {r["file_name"]: r for r in hostile["table"]("raw_faces", MAIN).iter_rows(named=True)}


def _quarantine(hostile, key=MAIN) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for r in hostile["table"]("quarantine", key, stage="raw_faces").iter_rows(named=True):
        out.setdefault(r["item_id"], set()).add(r["reason"])
    return out


def _labels(hostile) -> dict[str, dict]:
    faces = {r["face_id"]: r["file_name"] for r in _faces(hostile).values()}
    return {faces[r["face_id"]]: r for r in hostile["table"]("verified_labels", MAIN).iter_rows(named=True)}


def _products(hostile, face_id: str) -> tuple[list[dict], list[dict]]:
    feid = hostile["table"]("feid", MAIN)
    feab = hostile["table"]("feab", MAIN)
    return ([r for r in feid.iter_rows(named=True) if r["face_id"] == face_id],
            [r for r in feab.iter_rows(named=True) if r["face_id"] == face_id])


# ---- crashes that sank the batch -----------------------------------------------------------------

def test_bom_and_latin1_manifest_is_read_with_a_warning(hostile):
    faces = _faces(hostile)
    real = hostile["info"]["real"]
    assert faces["plain.png"]["known_expression"] == real["plain.png"]["expression"]
    assert faces["latin1_subject.png"]["subject_id"] == "José"
    assert _quarantine(hostile)["manifest.csv"] == {"manifest_encoding"}
    check = _checks(hostile["results"][MAIN])[("raw_faces", "manifest")]
    assert not check.passed and check.severity.value == "WARN"
    assert check.metadata["encoding"].value == "cp1252"


@pytest.mark.parametrize("key", [EMPTY, NO_IMAGE])
def test_empty_or_image_less_manifest_lands_faces_unlabelled(hostile, key):
    faces = hostile["table"]("raw_faces", key)
    assert faces.height == 1 and faces["known_expression"].to_list() == [None]
    assert faces["invalid_labels"].to_list() == [[]]
    assert _quarantine(hostile, key) == {"manifest.csv": {"bad_manifest"}}
    check = _checks(hostile["results"][key])[("raw_faces", "manifest")]
    assert not check.passed and check.severity.value == "WARN"
    assert check.metadata["status"].value == "bad"
    labels = hostile["table"]("verified_labels", key)
    assert labels["expression_origin"].to_list() != ["human"]


@pytest.mark.parametrize("name,detail", [("va_5.png", "valence='5'"), ("va_neg3.png", "arousal='-3'"),
                                         ("va_nan.png", "valence='NaN'"), ("va_inf.png", "valence='inf'")])
def test_out_of_range_va_is_quarantined_per_label_and_never_guessed(hostile, name, detail):
    face = _faces(hostile)[name]
    real = hostile["info"]["real"][name]
    assert face["known_valence"] is None and face["known_arousal"] is None
    assert face["invalid_labels"] == ["va"]
    assert face["known_expression"] == real["expression"]  # the other labels land
    q = hostile["table"]("quarantine", MAIN, stage="raw_faces").filter(pl.col("item_id") == name)
    assert q["reason"].to_list() == ["bad_label"] and detail in q["detail"][0]
    lab = _labels(hostile)[name]
    assert lab["valence"] is None and lab["arousal"] is None and lab["va_origin"] is None
    assert lab["withheld"] == ["va"]
    assert lab["expression"] == real["expression"] and lab["expression_origin"] == "human"
    feid, feab = _products(hostile, face["face_id"])
    assert all(r["valence"] is None for r in feid) and not any(r["task"] == "va" for r in feab)


def test_file_name_that_is_not_utf8_lands_as_escaped_text(hostile):
    face = _faces(hostile)[ESCAPED_NAME]
    assert face["known_expression"] is None and face["invalid_labels"] == []


def test_huge_strip_png_and_sparse_file_are_quarantined(hostile):
    q = _quarantine(hostile)
    assert q["strip.png"] == {"extreme_aspect"}
    assert q["huge.png"] == {"oversized"}
    faces = _faces(hostile)
    assert "strip.png" not in faces and "huge.png" not in faces


def test_symlink_loops_end(hostile):
    q = _quarantine(hostile)
    assert q["loop_a"] == {"symlink_loop"} and q["loop_b"] == {"symlink_loop"}
    assert not any(n.startswith("loop_") for n in _faces(hostile))


# ---- silent data changes -------------------------------------------------------------------------

def test_symlink_to_an_image_outside_the_landing_zone_is_not_ingested(hostile):
    from seke.faces import decode_image, encode_png, face_id_of

    assert _quarantine(hostile)["outside.png"] == {"outside_landing"}
    outside_id = face_id_of(encode_png(decode_image(hostile["info"]["outside_face"].read_bytes())))
    assert outside_id not in {f["face_id"] for f in _faces(hostile).values()}
    feid, feab = _products(hostile, outside_id)
    assert feid == [] and feab == []


def test_duplicate_rows_merge_when_they_agree_and_withhold_when_they_conflict(hostile):
    faces, real, q = _faces(hostile), hostile["info"]["real"], _quarantine(hostile)
    assert faces["dup_agree.png"]["known_expression"] == real["dup_agree.png"]["expression"]
    assert "dup_agree.png" not in q
    conflict = faces["dup_conflict.png"]
    assert conflict["known_expression"] is None and conflict["invalid_labels"] == ["expression"]
    assert q["dup_conflict.png"] == {"conflicting_labels"}
    assert conflict["known_aus"] is not None  # agreeing AUs still land
    lab = _labels(hostile)["dup_conflict.png"]
    assert lab["expression"] is None and lab["withheld"] == ["expression"]


def test_unknown_expression_is_quarantined_and_not_replaced_by_a_guess(hostile):
    face = _faces(hostile)["joyful.png"]
    assert face["known_expression"] is None and face["invalid_labels"] == ["expression"]
    assert _quarantine(hostile)["joyful.png"] == {"bad_label"}
    lab = _labels(hostile)["joyful.png"]
    assert lab["expression"] is None and lab["expression_origin"] is None and lab["withheld"] == ["expression"]
    feid, feab = _products(hostile, face["face_id"])
    assert all(r["expression"] is None for r in feid) and not any(r["task"] == "expression" for r in feab)
    prompts = hostile["table"]("knowledge_prompts", MAIN).filter(pl.col("face_id") == face["face_id"])
    assert "expression" not in prompts["missing"][0] and prompts["withheld"].to_list() == [["expression"]]


def test_au_words_are_read_explicitly_and_fractions_are_bad_labels(hostile):
    faces, real, aus = _faces(hostile), hostile["info"]["real"], hostile["info"]["aus"]
    want = sorted(int(a[2:]) for a in aus if real["au_words.png"][a] == "1")
    assert sorted(faces["au_words.png"]["known_aus"]) == want and faces["au_words.png"]["invalid_labels"] == []
    half = faces["au_half.png"]
    assert half["known_aus"] is None and half["invalid_labels"] == ["aus"]
    assert half["known_expression"] == real["au_half.png"]["expression"]
    assert _quarantine(hostile)["au_half.png"] == {"bad_label"}
    lab = _labels(hostile)["au_half.png"]
    assert lab["aus"] is None and lab["au_origin"] is None and lab["withheld"] == ["aus"]


def test_nfd_file_name_keeps_its_nfc_manifest_label(hostile):
    face = _faces(hostile)[CAFE]
    assert face["known_expression"] == hostile["info"]["real"][CAFE]["expression"]
    assert CAFE not in _quarantine(hostile)  # no missing_file for the manifest row


def test_transparent_image_is_quarantined_blank_and_never_exported(hostile):
    assert _quarantine(hostile)["transparent.png"] == {"blank_image"}
    assert "transparent.png" not in _faces(hostile)
    feid_ids = set(hostile["table"]("feid", MAIN)["face_id"])
    assert feid_ids <= {f["face_id"] for f in _faces(hostile).values()}
