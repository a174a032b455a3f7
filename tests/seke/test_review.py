"""Label Studio round trip: export abstained faces, simulate a reviewer's export, re-ingest."""

from __future__ import annotations

import base64
import copy
import io
import xml.etree.ElementTree as ET
from pathlib import Path

import polars as pl
import pytest
from PIL import Image

from seke import review
from seke.lake import Lake
from seke.taxonomy import AU_CATALOGUE, EXPRESSIONS
from tests.expectations import frames as F


def _png(seed: int) -> bytes:
    img = Image.new("L", (48, 48), color=seed * 20 % 255)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture()
def partition() -> tuple[pl.DataFrame, pl.DataFrame]:
    rows = F.label_rows(6)
    for i in (1, 3, 4):
        rows[i]["status"], rows[i]["abstain_reason"] = "abstained", "uncertain at N_max"
    rows[4]["aus"] = []
    labels = F.verified_labels(rows)
    faces = F.raw_faces(6).with_columns(
        pl.Series("crop_png", [_png(i) for i in range(6)], dtype=pl.Binary))
    return labels, faces


def test_labeling_config_is_valid_xml_with_every_control() -> None:
    root = ET.fromstring(review.labeling_config())
    names = {el.get("name"): el for el in root if el.get("name")}
    assert set(names) == {"image", "expression", "valence", "arousal", "aus", "quality", "notes"}
    assert [c.get("value") for c in names["expression"]] == list(EXPRESSIONS)
    assert [c.get("value") for c in names["aus"]] == ["none"] + [f"AU{a}" for a in AU_CATALOGUE]
    assert names["valence"].tag == "Number" and names["valence"].get("min") == "-1"
    assert all(el.get("toName") == "image" for n, el in names.items() if n != "image")


def test_export_abstained_faces_with_predictions(partition) -> None:
    labels, faces = partition
    tasks = review.export_tasks(labels, faces, source="ckplus", batch="b1", model_version="sim-1")
    assert [t["data"]["face_id"] for t in tasks] == [F.face_id(i) for i in (1, 3, 4)]
    t = tasks[0]
    head, b64 = t["data"]["image"].split(",", 1)
    assert head == "data:image/png;base64"
    assert base64.b64decode(b64) == _png(1)
    assert (t["data"]["source"], t["data"]["batch"]) == ("ckplus", "b1")
    pred = t["predictions"][0]
    assert pred["model_version"] == "sim-1" and pred["score"] == pytest.approx(0.9)
    by_name = {r["from_name"]: r for r in pred["result"]}
    assert by_name["expression"] == {"from_name": "expression", "to_name": "image",
                                     "type": "choices", "value": {"choices": ["sadness"]}}
    assert by_name["valence"]["type"] == "number"
    assert by_name["valence"]["value"]["number"] == pytest.approx(-0.6)
    assert by_name["aus"]["value"]["choices"] == ["AU1", "AU4", "AU15"]
    # coded-but-empty AUs are pre-annotated as "none", not left blank
    assert {r["from_name"]: r for r in tasks[2]["predictions"][0]["result"]}["aus"]["value"] == {
        "choices": ["none"]}


def test_export_to_local_files(partition, tmp_path: Path) -> None:
    labels, faces = partition
    tasks = review.export_tasks(labels, faces, source="ckplus", batch="b1",
                                image_mode="local_files", image_dir=tmp_path / "review_images")
    assert tasks[0]["data"]["image"] == f"/data/local-files/?d=review_images/{F.face_id(1)}.png"
    assert (tmp_path / "review_images" / f"{F.face_id(1)}.png").read_bytes() == _png(1)
    path = review.write_tasks(tasks, tmp_path / "tasks.json")
    assert path.exists() and not list(tmp_path.glob("*.tmp"))


def _as_ls_export(tasks: list[dict]) -> list[dict]:
    """What Label Studio's JSON export looks like after reviewers accepted the predictions."""
    out = []
    for i, t in enumerate(tasks, start=1):
        result = [dict(r, id=f"r{i}{j}", origin="prediction")
                  for j, r in enumerate(copy.deepcopy(t["predictions"][0]["result"]))]
        out.append({"id": i, "data": t["data"], "predictions": t["predictions"], "project": 7,
                    "annotations": [{"id": 100 + i, "completed_by": {"id": 3, "email": "r@x.org"},
                                     "result": result, "was_cancelled": False,
                                     "created_at": "2026-11-22T05:00:00Z",
                                     "updated_at": "2026-11-22T05:00:00Z", "lead_time": 12.5}]})
    return out


def test_import_reviewed_export(partition, tmp_path: Path) -> None:
    labels, faces = partition
    export = _as_ls_export(review.export_tasks(labels, faces, source="ckplus", batch="b1"))
    first_export = copy.deepcopy(export)
    # the reviewer edits the expression of the first task in Label Studio (same annotation id,
    # newer updated_at) and the project is exported again: the edited version counts, once;
    # a cancelled (skipped) annotation must be ignored
    fix = export[0]["annotations"][0]
    fix.update(updated_at="2026-11-22T06:00:00Z")
    next(r for r in fix["result"] if r["from_name"] == "expression")["value"]["choices"] = ["fear"]
    export[0]["annotations"] += [dict(copy.deepcopy(fix), id=201, was_cancelled=True,
                                      updated_at="2026-11-22T07:00:00Z", result=[])]
    # second task: marked unusable (also an edit after the first export)
    export[1]["annotations"][0]["updated_at"] = "2026-11-22T06:30:00Z"
    export[1]["annotations"][0]["result"].append(
        {"from_name": "quality", "to_name": "image", "type": "choices",
         "value": {"choices": ["unusable"]}})
    # a task with an invalid AU and one with an out-of-range valence: per-task errors
    bad_au = copy.deepcopy(export[2]); bad_au["id"] = 9
    bad_au["data"] = dict(bad_au["data"], face_id="f" * 64)
    next(r for r in bad_au["annotations"][0]["result"] if r["from_name"] == "aus")["value"] = {
        "choices": ["AU12", "AU99"]}
    bad_va = copy.deepcopy(export[2]); bad_va["id"] = 10
    bad_va["data"] = dict(bad_va["data"], face_id="e" * 64)
    next(r for r in bad_va["annotations"][0]["result"] if r["from_name"] == "valence")["value"] = {
        "number": 3.0}
    not_reviewed = dict(copy.deepcopy(export[2]), id=11, annotations=[])
    path = tmp_path / "export.json"
    review.write_tasks(export + [bad_au, bad_va, not_reviewed], path)
    older = review.write_tasks(first_export, tmp_path / "export-older.json")

    got = review.import_exports([path, older])
    assert sorted((e.task_id, e.error.split()[0]) for e in got.errors) == [
        (9, "unknown"), (10, "valence")]
    assert list(got.partitions) == [("ckplus", "b1")]
    frame = got.partitions[("ckplus", "b1")]
    assert frame.columns == review.REVIEW_LABELS.names
    rows = {r["face_id"]: r for r in frame.iter_rows(named=True)}
    assert set(rows) == {F.face_id(i) for i in (1, 3, 4)}
    r1 = rows[F.face_id(1)]
    assert (r1["expression"], r1["annotation_id"], r1["reviewer"]) == ("fear", 101, "r@x.org")
    assert (r1["n_reviewers"], r1["sent_back"], r1["lead_time_s"]) == (1, [], 12.5)
    assert r1["valence"] == pytest.approx(-0.6) and r1["aus"] == [1, 4, 15]
    assert rows[F.face_id(3)]["unusable"] is True
    assert rows[F.face_id(4)]["aus"] == []  # "none" round-trips as coded-and-empty

    # written to the lake and merged back into raw_faces as human knowledge
    lake = Lake(str(tmp_path / "lake"))
    lake.write_partition("review_labels", {"source": "ckplus", "batch": "b1"}, frame)
    back = lake.read_partition("review_labels", {"source": "ckplus", "batch": "b1"})
    merged = review.merge_review_labels(faces, back.drop("source", "batch"))
    assert merged.columns == faces.columns
    assert merged["face_id"].to_list() == faces["face_id"].to_list()
    assert merged["crop_png"].to_list() == faces["crop_png"].to_list()
    m = {r["face_id"]: r for r in merged.iter_rows(named=True)}
    f = {r["face_id"]: r for r in faces.iter_rows(named=True)}
    assert m[F.face_id(1)]["known_expression"] == "fear"
    assert m[F.face_id(1)]["known_valence"] == pytest.approx(-0.6)
    assert m[F.face_id(1)]["known_aus"] == [1, 4, 15]
    assert m[F.face_id(4)]["known_aus"] == []
    assert m[F.face_id(3)] == f[F.face_id(3)]          # unusable: not merged
    assert m[F.face_id(0)] == f[F.face_id(0)]          # not reviewed: unchanged
    assert review.unusable_ids(back) == [F.face_id(3)]


def test_partial_review_keeps_source_labels() -> None:
    faces = F.raw_faces(2)
    import pyarrow as pa

    rv = pl.from_arrow(pa.Table.from_pylist(
        [{"face_id": F.face_id(0), "valence": 0.5, "arousal": 0.2, "unusable": False}],
        schema=review.REVIEW_LABELS))
    merged = review.merge_review_labels(faces, rv)
    row, src = merged.row(0, named=True), faces.row(0, named=True)
    assert row["known_expression"] == src["known_expression"]   # source label kept
    assert (row["known_valence"], row["known_arousal"]) == (0.5, 0.2)
    assert row["known_aus"] == src["known_aus"] == [6, 12, 25]


@pytest.mark.parametrize("result,error", [
    ([{"from_name": "expression", "value": {"choices": ["happy", "sad"]}}], "exactly one"),
    ([{"from_name": "expression", "value": {"choices": ["bored"]}}], "unknown expression"),
    ([{"from_name": "valence", "value": {"number": 0.2}}], "together"),
    ([{"from_name": "aus", "value": {"choices": ["none", "AU12"]}}], "combined"),
])
def test_parse_annotation_rejects_bad_answers(result, error) -> None:
    with pytest.raises(ValueError, match=error):
        review.parse_annotation(result)


def test_parse_annotation_normalises_aliases() -> None:
    got = review.parse_annotation([{"from_name": "expression", "value": {"choices": ["happy"]}},
                                   {"from_name": "aus", "value": {"choices": ["au12", "AU6"]}}])
    assert got["expression"] == "happiness" and got["aus"] == [6, 12]


def test_reviewed_faces_reenter_as_knowledge_without_new_samples() -> None:
    """After a full review, the reviewed faces need no sample at all (nothing is missing), and
    every other face keeps its prompt hash, so a cached annotator answers it for free."""
    from seke.annotation import Labels
    from seke.annotators.simulated import SimulatedAnnotator
    from seke.knowledge import knowledge_v1
    from seke.prompts import build_annotation_prompt
    from seke.records import face_items
    from seke.sv_uamc import SamplingConfig, run_sampling

    k = knowledge_v1()
    faces = F.raw_faces(6).with_columns(
        pl.Series("crop_png", [_png(i) for i in range(6)], dtype=pl.Binary),
        pl.lit(None, dtype=pl.List(pl.Int32)).alias("known_aus"))
    truth = {F.face_id(i): Labels(e, v, a, {au: 1.0 for au in aus})
             for i, (e, v, a, aus) in enumerate(F.PROTOTYPES[i % 5] for i in range(6))}

    def annotate(raw: pl.DataFrame):
        items = face_items(raw, "ckplus")
        prompts = {f.face_id: build_annotation_prompt(f.known, k) for f in items}
        sim = SimulatedAnnotator(truth, seed=1, knowledge=k)
        res = run_sampling(items, prompts, sim, k, SamplingConfig())
        return prompts, {r["face_id"]: r for r in res.labels}, res.samples

    prompts1, labels1, samples1 = annotate(faces)
    reviewed = [F.face_id(0), F.face_id(3)]
    rv = pl.from_arrow(pa_table([{"face_id": f, "expression": truth[f].expression,
                                  "valence": truth[f].valence, "arousal": truth[f].arousal,
                                  "aus": sorted(truth[f].aus), "unusable": False} for f in reviewed]))
    prompts2, labels2, samples2 = annotate(review.merge_review_labels(faces, rv))

    assert all(labels1[f]["n_samples"] > 0 for f in reviewed)
    for f in reviewed:
        assert labels2[f]["n_samples"] == 0 and labels2[f]["stop_reason"] == "nothing_missing"
        assert {labels2[f][f"{g}_origin"] for g in ("expression", "va", "au")} == {"human"}
        assert labels2[f]["expression"] == truth[f].expression
    assert not {s["face_id"] for s in samples2} & set(reviewed)
    others = [f for f in prompts1 if f not in reviewed]
    assert all(prompts1[f].prompt_hash == prompts2[f].prompt_hash for f in others)
    assert set(labels2) == set(labels1)  # same face ids before and after the review


def pa_table(rows):
    import pyarrow as pa

    return pa.Table.from_pylist(rows, schema=review.REVIEW_LABELS)
