"""``review_queue`` and ``review_labels``: the human-review loop through Label Studio.

``review_queue`` writes, per batch, a Label Studio import file and the project's labeling config.
It holds the abstained faces (pre-annotated), a seeded QA sample of *accepted* labels (blind: no
pre-annotation; the sample and the labels as accepted are kept in the lake table
``review_qa_sample``) and faces whose earlier review ended in a tie (sent back). Reviewers export
their project as JSON into ``<review_dir>/exports/``; ``review_labels`` ingests every export there
(this batch's faces only): several annotations per task are several reviewers' votes, the majority
per granularity goes into the ``review_labels`` lake table, Krippendorff's alpha per granularity and
the QA error estimate go into the metadata and the lake table ``review_quality``. ``raw_faces``
merges the consensus into its ``known_*`` columns (:func:`seke.review.merge_review_labels`), so
reviewed faces flow through prompts, SV-UAMC and FEID/FEAB again as human knowledge. Face ids
never change, so prompts and cached samples of unreviewed granularities are reused.

``review_labels`` reads ``review_qa_sample`` without declaring it upstream: the loop runs through
people (queue -> Label Studio -> exports), and a declared dependency would be a cycle
(``raw_faces`` depends on ``review_labels``). The science lives in :mod:`seke.review`,
:mod:`seke.review_agreement` and :mod:`seke.review_qa`.
"""

from datetime import datetime, timezone
from pathlib import Path

import polars as pl
from dagster import AssetExecutionContext, Config, MaterializeResult, MetadataValue, asset
from pydantic import Field

from assets.common import OWNERS, lake_partition, table_metadata, tags
from assets.partitions import batches, one_batch_per_run
from resources.data import ReviewResource
from resources.lake import LakeResource
from seke import quarantine, review, review_qa
from seke.lake import Lake
from seke.review_agreement import agreement


class ReviewConfig(Config):
    image_mode: str = Field("data_url", description="data_url | local_files (Label Studio local storage)")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _read(store: Lake, table: str, part: dict[str, str]) -> pl.DataFrame | None:
    if not store.exists(table, part):
        return None
    return store.read_partition(table, part).drop([c for c in part if c in ("source", "batch")], strict=False)


@asset(partitions_def=batches, backfill_policy=one_batch_per_run, deps=["verified_labels", "raw_faces"], group_name="review",
       kinds={"json"}, owners=OWNERS, tags=tags("review", pii=True))
def review_queue(context: AssetExecutionContext, config: ReviewConfig, lake: LakeResource,
                 review_dir: ReviewResource) -> MaterializeResult:
    """Label Studio import file (tasks.json + labeling_config.xml) of the batch's abstained faces
    (pre-annotated with the annotator's candidates), its QA sample of accepted labels (blind) and
    its faces sent back after a reviewers' tie; the QA sample is kept in ``review_qa_sample``."""
    part = lake_partition(context)
    store = lake.lake()
    policy = review_dir.policy()  # type: ignore[attr-defined]
    labels = store.read_partition("verified_labels", part)
    faces = store.read_partition("raw_faces", part)
    sample = review_qa.draw_qa_sample(labels, policy, _now(), _read(store, "review_qa_sample", part))
    store.write_partition("review_qa_sample", part, sample)
    reasons = review_qa.queue_reasons(sample, _read(store, "review_labels", part))
    folder = Path(review_dir.path) / "queue" / f"{part['source']}__{part['batch']}"
    tasks = review.export_tasks(labels, faces, source=part["source"], batch=part["batch"],
                                image_mode=config.image_mode, image_dir=folder / "images",
                                reasons=reasons, blind=sample["face_id"].to_list())
    path = review.write_tasks(tasks, folder / "tasks.json")
    (folder / "labeling_config.xml").write_text(review.labeling_config(), encoding="utf-8")
    abstained = (labels.filter(pl.col("status") == "abstained").group_by("abstain_reason").len()
                 if labels.height else pl.DataFrame())
    why = pl.DataFrame({"r": [t["data"]["review_reason"].split(":")[0] for t in tasks]}, schema={"r": pl.String})
    return MaterializeResult(metadata={
        "tasks": MetadataValue.int(len(tasks)),
        "path": MetadataValue.path(str(path)),
        "labeling_config": MetadataValue.path(str(folder / "labeling_config.xml")),
        "abstain_reasons": MetadataValue.json({str(r): int(n) for r, n in abstained.iter_rows()}
                                              if abstained.height else {}),
        "review_reasons": MetadataValue.json({str(r): int(n) for r, n in why.group_by("r").len().iter_rows()}),
        "qa_rate": MetadataValue.float(policy.qa_rate),
        "qa_sampled": MetadataValue.int(sample.height),
        "qa_eligible_accepted": MetadataValue.int(review_qa.eligible(labels).height),
        "qa_pending": MetadataValue.int(sum(r == review_qa.QA_REASON for r in reasons.values())),
        "sent_back": MetadataValue.int(sum(r.startswith(review_qa.SENT_BACK_REASON) for r in reasons.values())),
    })


def _known_faces(store: Lake, part: dict[str, str]) -> set[str] | None:
    """Face ids a review task of this batch may name: the batch's faces plus those a reviewer
    already marked unusable (quarantined by raw_faces). ``None`` before raw_faces exists (a
    rebuilt lake): then nothing is checked, and an unmatched id merges into nothing."""
    if not store.exists("raw_faces", part):
        return None
    known = set(store.read_partition("raw_faces", part)["face_id"].to_list())
    q = {**part, "stage": "raw_faces"}
    if store.exists("quarantine", q):
        dropped = store.read_partition("quarantine", q)
        known |= set(dropped.filter(pl.col("reason") == quarantine.REVIEW_UNUSABLE)["item_id"].to_list())
    return known


@asset(partitions_def=batches, backfill_policy=one_batch_per_run, group_name="ingest", kinds={"delta"},
       owners=OWNERS, tags=tags("ingest"))
def review_labels(context: AssetExecutionContext, lake: LakeResource, review_dir: ReviewResource) -> MaterializeResult:
    """Reviewers' consensus for this batch from the Label Studio exports in <review_dir>/exports/
    (every annotation a vote, majority per granularity, ties sent back); invalid answers, tasks
    for unknown faces and one reviewer's contradictory answers go to quarantine with the reason.
    Metadata: Krippendorff's alpha per granularity and the live QA estimate of accepted-label
    error (also in the lake table ``review_quality``)."""
    part = lake_partition(context)
    store = lake.lake()
    policy = review_dir.policy()  # type: ignore[attr-defined]
    key = (part["source"], part["batch"])
    exports = sorted((Path(review_dir.path) / "exports").glob("*.json"))
    known = _known_faces(store, part)
    imported = review.import_exports(exports, known_faces=None if known is None else {key: known},
                                     va_tolerance=policy.va_tolerance)
    frame = imported.partitions.get(key)
    if frame is None:
        frame = pl.from_arrow(review.REVIEW_LABELS.empty_table())
    path = store.write_partition("review_labels", part, frame)
    mine = [e for e in imported.errors if (e.source, e.batch) == key]
    bad = quarantine.rows(((e.face_id or str(e.task_id), e.reason, e.detail()) for e in mine), "review_labels")
    store.write_partition("quarantine", {**part, "stage": "review_labels"}, bad)
    for e in imported.errors:
        if e.source is None:  # unreadable file or task without a partition: not this batch's
            context.log.warning(f"review export problem ({e.task_id}): {e.error}")
    if mine:
        context.log.warning(f"{len(mine)} review answers of this batch not merged: {[e.detail() for e in mine][:5]}")

    alphas = imported.agreement.get(key) or agreement([])
    sample = _read(store, "review_qa_sample", part)
    outcomes = review_qa.qa_outcomes(sample, frame, policy.va_tolerance)
    errors = review_qa.error_estimates(outcomes, policy.confidence)
    quality = store.write_partition("review_quality", part, review_qa.quality_rows(alphas, errors, _now()))
    sent_back = frame.filter(pl.col("sent_back").list.len().fill_null(0) > 0) if frame.height else frame
    reasons = pl.DataFrame({"r": [e.reason for e in mine]}, schema={"r": pl.String}).group_by("r").len()
    return MaterializeResult(metadata={
        **table_metadata(frame, path, ["face_id", "expression", "valence", "arousal", "aus", "unusable",
                                       "n_reviewers", "sent_back"]),
        "export_files": MetadataValue.int(len(exports)),
        "reviewed_faces": MetadataValue.int(frame.height),
        "multi_reviewer_faces": MetadataValue.int(int((frame["n_reviewers"] >= 2).sum()) if frame.height else 0),
        "unusable": MetadataValue.int(len(review.unusable_ids(frame))),
        "sent_back": MetadataValue.int(sent_back.height),
        "rejected_tasks": MetadataValue.int(len(mine)),
        "rejected_reasons": MetadataValue.json({str(r): int(n) for r, n in reasons.iter_rows()}),
        "unknown_face_check": MetadataValue.bool(known is not None),
        "agreement": MetadataValue.json({g: a.as_dict() for g, a in alphas.items()}),
        **{f"alpha/{g}": MetadataValue.float(a.alpha) for g, a in alphas.items() if a.alpha is not None},
        "qa": MetadataValue.json({**review_qa.qa_summary(sample, outcomes),
                                  "error": {g: e.as_dict() for g, e in errors.items()}}),
        **{f"qa_error/{g}": MetadataValue.float(e.rate) for g, e in errors.items() if e.rate is not None},
        "review_quality_table": MetadataValue.text(str(quality)),
    })
