"""The review loop as real Dagster materializations on a real lake: queue → (Label Studio) →
review_labels → merged into raw_faces as human knowledge."""

import json
from pathlib import Path

import dagster as dg
import polars as pl

from assets.review import review_labels, review_queue
from resources.lake import LakeResource
from seke import review
from seke.lake import Lake
from tests.expectations import frames as F
from tests.seke.test_review import _as_ls_export, _png

KEY = "ckplus__b1"
PART = {"source": "ckplus", "batch": "b1"}


def test_review_round_trip_through_dagster(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path / "lake"))
    rows = F.label_rows(6)
    for i in (1, 2):
        rows[i]["status"], rows[i]["abstain_reason"] = "abstained", "uncertain at N_max"
    lake.write_partition("verified_labels", PART, F.verified_labels(rows))
    faces = F.raw_faces(6).with_columns(pl.Series("crop_png", [_png(i) for i in range(6)], dtype=pl.Binary))
    lake.write_partition("raw_faces", PART, faces)
    review_dir = tmp_path / "review"
    from resources.data import ReviewResource

    resources = {"lake": LakeResource(uri=str(tmp_path / "lake")), "review_dir": ReviewResource(path=str(review_dir))}

    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("batches", [KEY])
        r1 = dg.materialize([review_queue], instance=instance, partition_key=KEY, resources=resources,
                            selection=[review_queue])
        assert r1.success
        queue = review_dir / "queue" / KEY
        tasks = json.loads((queue / "tasks.json").read_text())
        assert [t["data"]["face_id"] for t in tasks] == [F.face_id(1), F.face_id(2)]
        assert (queue / "labeling_config.xml").read_text().startswith("<View>")

        # the reviewers accept the predictions, correct one expression; another batch's export
        # and a broken file sit in the same folder
        export = _as_ls_export(tasks)
        next(r for r in export[0]["annotations"][0]["result"]
             if r["from_name"] == "expression")["value"]["choices"] = ["disgust"]
        bad = json.loads(json.dumps(export[1]))
        bad["data"]["face_id"] = "a" * 64
        next(r for r in bad["annotations"][0]["result"] if r["from_name"] == "valence")["value"] = {"number": 9}
        other = json.loads(json.dumps(export[1]))
        other["data"]["batch"] = "b2"
        (review_dir / "exports").mkdir()
        (review_dir / "exports" / "project-1.json").write_text(json.dumps(export + [bad, other]))
        (review_dir / "exports" / "broken.json").write_text("{not json")

        r2 = dg.materialize([review_labels], instance=instance, partition_key=KEY, resources=resources)
        assert r2.success
        mat = r2.asset_materializations_for_node("review_labels")[0]
        assert mat.metadata["reviewed_faces"].value == 2
        assert mat.metadata["rejected_tasks"].value == 1

    got = lake.read_partition("review_labels", PART)
    assert dict(zip(got["face_id"], got["expression"])) == {F.face_id(1): "disgust",
                                                            F.face_id(2): "surprise"}
    q = lake.read_partition("quarantine", {**PART, "stage": "review_labels"})
    assert q.select("item_id", "reason").rows() == [("a" * 64, "review_invalid")]

    merged = review.merge_review_labels(lake.read_partition("raw_faces", PART).drop("source", "batch"),
                                        got.drop("source", "batch"))
    m = dict(zip(merged["face_id"], merged["known_expression"]))
    assert m[F.face_id(1)] == "disgust" and m[F.face_id(0)] == "happiness"
    assert merged["face_id"].to_list() == faces["face_id"].to_list()
