"""The code location: every asset, resource, job, sensor and schedule of the platform."""


from dagster import Definitions, with_source_code_references

from assets.annotation import annotate_faces
from assets.annotator_quality import annotator_quality
from assets.calibration import confidence_calibration
from assets.evaluation import evaluation
from assets.knowledge import knowledge
from assets.knowledge_prompts import knowledge_prompts
from assets.lake_tables import LAKE_TABLE_SPECS
from assets.products import feab, feid
from assets.raw_faces import raw_faces
from assets.review import review_labels, review_queue
from assets.training import training_assets
from assets.vllm_batch import vllm_batch_prefill
from assets.warehouse import warehouse
from pipelines.jobs import (annotate_batch, refit_calibration, refresh_knowledge, refresh_warehouse,
                            train_models, vllm_backfill)
from pipelines.ops_k8s import step_executor
from pipelines.ops_schedules import landing_sensor, nightly_catch_up
from resources.settings import default_resources

defs = Definitions(
    assets=with_source_code_references([
        raw_faces, knowledge, knowledge_prompts, annotate_faces, feid, feab, warehouse,
        evaluation, review_queue, review_labels, vllm_batch_prefill,
        confidence_calibration, annotator_quality, *training_assets]) + LAKE_TABLE_SPECS,
    jobs=[annotate_batch, refresh_knowledge, refresh_warehouse, refit_calibration, vllm_backfill, train_models],
    sensors=[landing_sensor],
    schedules=[nightly_catch_up],
    executor=step_executor(),
    resources=default_resources(),
)
