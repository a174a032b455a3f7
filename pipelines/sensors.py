"""Sensors: discover new batch folders in the landing zone and run the graph for each."""


from dagster import (DefaultSensorStatus, RunRequest, SensorEvaluationContext, SensorResult,
                     sensor)

from pipelines.jobs import annotate_batch
from pipelines.partitions import batches
from resources.landing import LandingZoneResource


@sensor(job=annotate_batch, minimum_interval_seconds=60, default_status=DefaultSensorStatus.STOPPED)
def new_batches_sensor(context: SensorEvaluationContext, landing: LandingZoneResource) -> SensorResult:
    """Adds a dynamic partition for every new ``<landing>/<source>/<batch>/`` folder and requests
    one run of ``annotate_batch`` for it (run key = partition key, so each batch runs once)."""
    existing = set(context.instance.get_dynamic_partitions(batches.name))
    new = [k for k in landing.discover() if k not in existing]
    return SensorResult(
        run_requests=[RunRequest(partition_key=k, run_key=k) for k in new],
        dynamic_partitions_requests=[batches.build_add_request(new)] if new else [],
    )
