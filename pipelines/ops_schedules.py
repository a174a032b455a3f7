"""Unattended operation: the S3-aware landing sensor, the nightly catch-up schedule, and the
backfill policy for API-bound assets.

Register in ``pipelines/definitions.py`` (see docs/operations.md)::

    from pipelines.ops_schedules import landing_sensor, nightly_catch_up
    Definitions(..., sensors=[landing_sensor], schedules=[nightly_catch_up])

Every batch asset carries ``backfill_policy=one_batch_per_run`` (``API_BACKFILL_POLICY`` here).

Why these pieces:

* **Sensor** -- batches arrive as folders ``<landing>/<source>/<batch>/`` on local disk *or* S3
  (``SEKE_LANDING_URI``). A batch is complete once its ``manifest.csv`` exists (written last by
  the uploader). The sensor adds one dynamic partition per new batch and one run request with
  ``run_key = partition key``, so a batch is never annotated twice by the sensor, even after a
  daemon restart.
* **Nightly schedule** -- a run can fail for reasons outside the data (endpoint down, quota).
  At 02:00 every batch partition that has no ``verified_labels`` yet is requested again; the
  response cache makes the retry pay only for the samples that never finished.
* **Backfill policy** -- SV-UAMC steps are bound by the model API, not by CPU. One partition per
  run keeps every run short, retryable on its own and visible per batch in the UI; the run queue
  (``seke/backend=vllm`` tag limit, ``dagster/backfill`` limit) and the ``vllm`` pool bound how
  many of those runs call the API at once; the job carries the tag (resources.deployment). Raise ``max_partitions_per_run`` only for assets whose
  body loops over ``context.partition_keys``.
"""

from __future__ import annotations

from dagster import (AssetKey, DefaultScheduleStatus, DefaultSensorStatus,
                     RunRequest, ScheduleEvaluationContext, SensorEvaluationContext, SensorResult,
                     SkipReason, schedule, sensor)
from pipelines.jobs import annotate_batch
from seke.landing import list_landing_batches
from assets.partitions import batches, one_batch_per_run
from resources.landing import LandingZoneResource

#: One partition per run for API-bound assets (see module docstring).
API_BACKFILL_POLICY = one_batch_per_run

@sensor(job=annotate_batch, minimum_interval_seconds=60, default_status=DefaultSensorStatus.STOPPED,
        description="Adds a `batches` partition and requests an annotate_batch run for every "
                    "complete landing batch (manifest.csv present), on local disk or S3.")
def landing_sensor(context: SensorEvaluationContext, landing: LandingZoneResource) -> SensorResult | SkipReason:
    root = landing.path
    found = list_landing_batches(root, s3_client=landing.s3_client() if root.startswith("s3://") else None)
    existing = set(context.instance.get_dynamic_partitions(batches.name))
    new = [k for k in found if k not in existing]
    if not new:
        return SkipReason(f"no new complete batches under {root} ({len(found)} known)")
    context.log.info(f"{len(new)} new batches under {root}: {new[:10]}")
    return SensorResult(
        run_requests=[RunRequest(partition_key=k, run_key=k) for k in new],
        dynamic_partitions_requests=[batches.build_add_request(new)],
    )


@schedule(job=annotate_batch, cron_schedule="0 2 * * *", execution_timezone="UTC",
          default_status=DefaultScheduleStatus.STOPPED,
          description="Nightly catch-up: re-requests every batch whose verified_labels partition "
                      "was never materialized (failed or interrupted runs).")
def nightly_catch_up(context: ScheduleEvaluationContext):
    keys = context.instance.get_dynamic_partitions(batches.name)
    done = context.instance.get_materialized_partitions(AssetKey("verified_labels"))
    missing = [k for k in keys if k not in done]
    if not missing:
        return SkipReason(f"all {len(keys)} batches have verified_labels")
    day = context.scheduled_execution_time.strftime("%Y-%m-%d")
    return [RunRequest(partition_key=k, run_key=f"nightly-{day}-{k}",
                       tags={"seke/trigger": "nightly"}) for k in missing]
