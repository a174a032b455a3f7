"""Lake tables that several steps write as a side effect, declared so the lineage shows them.

``quarantine`` (every dropped item with its reason), ``vllm_cache`` (every paid model answer),
``evaluations`` (every model's FEAB scores), ``review_qa_sample`` and ``review_quality`` are
Delta tables written inside other assets' steps (``raw_faces``, ``annotate_faces``,
``review_queue``, ``review_labels``, ``vllm_batch_prefill``, ``evaluation``, the training
assets). They are not materialized on their own, so they are external asset specs: visible in the graph with their producers, their column schema and where
they live, queryable as warehouse views.
"""

from dagster import AssetSpec, MetadataValue

from assets.common import OWNERS, column_schema, tags
from seke import schemas
from seke.cache import CACHE_TABLE
from seke.evaluate import EVALUATIONS
from seke.review_qa import QA_SAMPLE, REVIEW_QUALITY

quarantine = AssetSpec(
    "quarantine", deps=["raw_faces", "mc_samples", "verified_labels", "review_labels"], group_name="review",
    description="Every item the pipeline dropped or withheld, with a machine-readable reason and detail "
                "(bad files, bad labels, parse failures, abstained faces, review problems); partitioned "
                "by source/batch/stage. Never silently empty: a batch's drops are here.",
    kinds={"delta"}, owners=OWNERS, tags=tags("review"),
    metadata={"dagster/column_schema": column_schema(schemas.QUARANTINE),
              "table": MetadataValue.text("lake table `quarantine`; warehouse view `quarantine`")})

vllm_cache = AssetSpec(
    CACHE_TABLE, deps=["mc_samples", "vllm_batch_prefill"], group_name="annotation",
    description="Content-addressed cache of every model answer (key: model, prompt hash, image hash, "
                "sampling parameters, sample index): re-runs, retries and backfills never pay twice.",
    kinds={"delta"}, owners=OWNERS, tags=tags("annotation"),
    metadata={"table": MetadataValue.text(f"lake table `{CACHE_TABLE}` (append-only)")})

evaluations = AssetSpec(
    "evaluations", deps=["evaluation", "trained_model", "trained_model_human_only"], group_name="evaluation",
    description="FEAB scores of every model evaluated (offline annotator, VLLMs, trained checkpoints), "
                "one run per model and run id, with the FEAB table version scored.",
    kinds={"delta"}, owners=OWNERS, tags=tags("evaluation"),
    metadata={"dagster/column_schema": column_schema(EVALUATIONS),
              "table": MetadataValue.text("lake table `evaluations`; compare with `seke sql model_comparison`")})

review_qa_sample = AssetSpec(
    "review_qa_sample", deps=["review_queue"], group_name="review",
    description="Per batch, the accepted labels drawn as the blind QA sample (seeded share "
                "SEKE_REVIEW_QA_RATE), with the labels and origins as they were accepted when drawn; "
                "a drawn face stays drawn. review_labels compares reviewers' consensus against it.",
    kinds={"delta"}, owners=OWNERS, tags=tags("review", pii=True),
    metadata={"dagster/column_schema": column_schema(QA_SAMPLE),
              "table": MetadataValue.text("lake table `review_qa_sample`")})

review_quality = AssetSpec(
    "review_quality", deps=["review_labels"], group_name="review",
    description="Per batch, what review says about quality: Krippendorff's alpha per granularity "
                "between reviewers and the QA estimate of accepted-label error (errors/reviewed with a "
                "Wilson interval), recomputed on every review_labels materialization.",
    kinds={"delta"}, owners=OWNERS, tags=tags("review"),
    metadata={"dagster/column_schema": column_schema(REVIEW_QUALITY),
              "table": MetadataValue.text("lake table `review_quality`; warehouse view `review_quality`")})

#: Side tables of other steps (external specs; the jobs leave them out of their selections).
LAKE_TABLE_SPECS = [quarantine, vllm_cache, evaluations, review_qa_sample, review_quality]
LAKE_TABLE_NAMES = tuple(s.key.to_user_string() for s in LAKE_TABLE_SPECS)
