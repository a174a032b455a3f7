"""Jobs: the per-batch annotation graph."""

from dagster import AssetSelection, define_asset_job

from assets.lake_tables import LAKE_TABLE_NAMES
from assets.partitions import batches
from resources.deployment import annotation_run_tags, training_run_tags
from resources.settings import annotator_kind

#: Every run of these jobs, however launched (UI, backfill, sensor, schedule, CLI), carries the
#: tag the run queue limits per annotator backend.
_ANNOTATION_TAGS = annotation_run_tags(annotator_kind())

#: Every partitioned asset of the graph for one batch (knowledge is unpartitioned and is
#: materialized on its own when the tables change).
annotate_batch = define_asset_job(
    "annotate_batch",
    selection=(AssetSelection.groups("ingest", "annotation", "products", "review")
               - AssetSelection.assets("vllm_batch_prefill", "warehouse", *LAKE_TABLE_NAMES)),
    partitions_def=batches,
    tags=_ANNOTATION_TAGS,
    description="Ingest one landing batch and run it through prompts, SV-UAMC sampling, "
                "verification and FEID/FEAB (the warehouse follows by automation or refresh_warehouse).",
)

#: Rebuild the analysts' DuckDB views (automation does it after each publish when the daemon runs;
#: in-process runs — ``seke ingest``, the demo — call this job).
refresh_warehouse = define_asset_job("refresh_warehouse", selection=AssetSelection.assets("warehouse"))

#: Re-materialize the knowledge tables (run when the tables or their sources change).
refresh_knowledge = define_asset_job("refresh_knowledge", selection=AssetSelection.assets("knowledge"))

#: Large backfills through the OpenAI Batch API at the batch price: ingest, prompts, then every
#: SV-UAMC round (only the faces still uncertain) and the verifications as Batch jobs, online
#: only for what a job does not return (``annotate_faces`` with ``batch_api``; a job may take up
#: to 24 h). ``vllm_batch_prefill`` (first round only, into the cache) stays available on its own.
vllm_backfill = define_asset_job(
    "vllm_backfill",
    selection=AssetSelection.assets("raw_faces", "knowledge_prompts", "mc_samples", "verified_labels",
                                    "review_labels"),
    partitions_def=batches,
    tags=_ANNOTATION_TAGS,
    config={"ops": {"annotate_faces": {"config": {"batch_api": True}}}},
    description="Ingest one batch and annotate it with every SV-UAMC round and verification bought "
                "through the OpenAI Batch API (half price; online only for what a job does not return).",
)

#: Refit the confidence calibration on every audited face in the lake.
refit_calibration = define_asset_job("refit_calibration", selection=AssetSelection.assets("confidence_calibration"))

#: Train the FEID model and its ablation, then compare them (one run per GPU pool at a time).
train_models = define_asset_job("train_models", selection=AssetSelection.groups("training"),
                                tags=training_run_tags(),
                                description="Train the multi-task model on FEID and its human-labels-only "
                                            "ablation, then write the comparison (CPU: compact recipe; GPU: full "
                                            "recipe; each model trains up to the run config's time_limit_s, "
                                            "default 30 minutes, then is evaluated).")
