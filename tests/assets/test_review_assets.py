"""The review loop as real Dagster materializations on a real lake: queue → (Label Studio) →
review_labels → merged into raw_faces as human knowledge."""

import json
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

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

    # no QA sample here (test_qa_sample_and_agreement_through_dagster covers it): the queue is
    # exactly the abstained faces
    resources = {"lake": LakeResource(uri=str(tmp_path / "lake")),
                 "review_dir": ReviewResource(path=str(review_dir), qa_rate=0.0)}

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
        bad["id"], bad["data"]["face_id"] = 30, F.face_id(3)
        next(r for r in bad["annotations"][0]["result"] if r["from_name"] == "valence")["value"] = {"number": 9}
        unknown = json.loads(json.dumps(export[1]))
        unknown["id"], unknown["data"]["face_id"] = 31, "a" * 64
        other = json.loads(json.dumps(export[1]))
        other["data"]["batch"] = "b2"
        (review_dir / "exports").mkdir()
        (review_dir / "exports" / "project-1.json").write_text(json.dumps(export + [bad, unknown, other]))
        (review_dir / "exports" / "broken.json").write_text("{not json")

        r2 = dg.materialize([review_labels], instance=instance, partition_key=KEY, resources=resources)
        assert r2.success
        mat = r2.asset_materializations_for_node("review_labels")[0]
        assert mat.metadata["reviewed_faces"].value == 2
        assert mat.metadata["rejected_tasks"].value == 2
        assert mat.metadata["rejected_reasons"].value == {"review_invalid": 1, "review_unknown_face": 1}

    got = lake.read_partition("review_labels", PART)
    assert dict(zip(got["face_id"], got["expression"])) == {F.face_id(1): "disgust",
                                                            F.face_id(2): "surprise"}
    q = lake.read_partition("quarantine", {**PART, "stage": "review_labels"})
    assert sorted(q.select("item_id", "reason").rows()) == [
        (F.face_id(3), "review_invalid"), ("a" * 64, "review_unknown_face")]

    merged = review.merge_review_labels(lake.read_partition("raw_faces", PART).drop("source", "batch"),
                                        got.drop("source", "batch"))
    m = dict(zip(merged["face_id"], merged["known_expression"]))
    assert m[F.face_id(1)] == "disgust" and m[F.face_id(0)] == "happiness"
    assert merged["face_id"].to_list() == faces["face_id"].to_list()


def test_qa_sample_and_agreement_through_dagster(tmp_path: Path) -> None:
    """A 10 % QA sample of 60 accepted labels goes to review blind; two reviewers answer every
    task (a third contradicts herself on one, a task names an unknown face); review_labels
    records the consensus, Krippendorff's alpha and the live accepted-label error estimate, and
    the next queue re-sends only the tied face."""
    import krippendorff
    import numpy as np
    from scipy.stats import binomtest

    from resources.data import ReviewResource
    from seke.taxonomy import EXPRESSIONS
    from tests.seke.test_review_agreement import ls_annotation

    lake = Lake(str(tmp_path / "lake"))
    rows = F.label_rows(60)
    for r in rows:
        r["expression_origin"] = "generated"
    lake.write_partition("verified_labels", PART, F.verified_labels(rows, score=False))
    lake.write_partition("raw_faces", PART, F.raw_faces(60))
    review_dir = tmp_path / "review"
    resources = {"lake": LakeResource(uri=str(tmp_path / "lake")),
                 "review_dir": ReviewResource(path=str(review_dir), qa_rate=0.1, qa_seed=7)}

    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("batches", [KEY])
        r1 = dg.materialize([review_queue], instance=instance, partition_key=KEY, resources=resources)
        assert r1.success
        md = r1.asset_materializations_for_node("review_queue")[0].metadata
        assert (md["qa_sampled"].value, md["qa_eligible_accepted"].value, md["qa_pending"].value) == (6, 60, 6)
        tasks = json.loads((review_dir / "queue" / KEY / "tasks.json").read_text())
        sample = lake.read_partition("review_qa_sample", PART).sort("face_id")
        assert [t["data"]["face_id"] for t in tasks] == sample["face_id"].to_list()
        assert {t["data"]["review_reason"] for t in tasks} == {"qa_sample"}
        assert all(t["predictions"] == [] for t in tasks)             # blind: nothing to anchor on

        # reviewers r1 and r2 answer every QA task: they overrule the accepted expression of
        # the first two faces, split on the third (a tie) and confirm the rest; r3 answers the
        # fourth twice with different expressions; one task names a face the batch never had
        snap = {r["face_id"]: r for r in sample.iter_rows(named=True)}
        export, codes, aid = [], {"r1": [], "r2": []}, 0
        for i, t in enumerate(tasks):
            s = snap[t["data"]["face_id"]]
            other = next(e for e in EXPRESSIONS if e != s["expression"])
            answers = {"r1": other if i < 2 else s["expression"],
                       "r2": other if i <= 2 else s["expression"]}
            anns = []
            for who, expr in answers.items():
                aid += 1
                anns.append(ls_annotation(aid, who, expression=expr, va=(s["valence"], s["arousal"]), aus=s["aus"]))
                codes[who].append(EXPRESSIONS.index(expr))
            if i == 3:
                anns += [ls_annotation(90, "r3", expression="fear"), ls_annotation(91, "r3", expression="anger")]
            export.append({**t, "id": 100 + i, "annotations": anns})
        export.append({"id": 200, "data": {**tasks[0]["data"], "face_id": "b" * 64},
                       "annotations": [ls_annotation(92, "r1", expression="fear")]})
        (review_dir / "exports").mkdir()
        (review_dir / "exports" / "project-2.json").write_text(json.dumps(export))

        r2 = dg.materialize([review_labels], instance=instance, partition_key=KEY, resources=resources)
        assert r2.success
        md = r2.asset_materializations_for_node("review_labels")[0].metadata
        assert (md["reviewed_faces"].value, md["multi_reviewer_faces"].value, md["sent_back"].value) == (6, 6, 1)
        assert md["rejected_reasons"].value == {"review_contradictory": 1, "review_unknown_face": 1}
        # live error estimate: expression 2 wrong of 5 decided (the tie is not yet evidence)
        assert md["qa_error/expression"].value == pytest.approx(2 / 5)
        assert md["qa_error/va"].value == 0.0 and md["qa_error/aus"].value == 0.0
        assert md["qa_error/any"].value == pytest.approx(2 / 6)
        qa = md["qa"].value
        assert (qa["drawn"], qa["reviewed"], qa["pending"]) == (6, 6, 0)
        ci = binomtest(2, 5).proportion_ci(0.95, method="wilson")
        assert qa["error"]["expression"]["ci"] == [round(ci.low, 4), round(ci.high, 4)]
        # alpha between r1 and r2 (r3's contradictory answers are not counted)
        expected = krippendorff.alpha(reliability_data=np.array([codes["r1"], codes["r2"]], dtype=float),
                                      level_of_measurement="nominal")
        assert md["alpha/expression"].value == pytest.approx(expected)
        assert md["agreement"].value["expression"]["units"] == 6

    got = lake.read_partition("review_labels", PART).sort("face_id")
    assert got["sent_back"].to_list()[2] == ["expression"] and got["expression"].to_list()[2] is None
    q = lake.read_partition("quarantine", {**PART, "stage": "review_labels"})
    assert sorted(q["reason"].to_list()) == ["review_contradictory", "review_unknown_face"]
    assert "r3" in q.filter(pl.col("reason") == "review_contradictory")["detail"][0]
    quality = lake.read_partition("review_quality", PART)
    row = quality.filter((pl.col("metric") == "qa_error") & (pl.col("granularity") == "expression")).row(0, named=True)
    assert (row["value"], row["n"], row["errors"]) == (pytest.approx(0.4), 5, 2)
    assert row["ci_low"] == pytest.approx(ci.low)

    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("batches", [KEY])
        r3 = dg.materialize([review_queue], instance=instance, partition_key=KEY, resources=resources)
        assert r3.success
    again = json.loads((review_dir / "queue" / KEY / "tasks.json").read_text())
    assert [(t["data"]["face_id"], t["data"]["review_reason"], t["predictions"]) for t in again] == [
        (tasks[2]["data"]["face_id"], "sent_back:expression", [])]
    assert lake.read_partition("review_qa_sample", PART).sort("face_id").equals(sample)
