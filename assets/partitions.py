"""Partitions: one dynamic partition per ingest batch (``<source>__<batch>``)."""

from dagster import BackfillPolicy, DynamicPartitionsDefinition

batches = DynamicPartitionsDefinition(name="batches")

#: Every batch asset reads ``context.partition_key``: a backfill runs one batch per run, which
#: also keeps API-bound runs short, retryable on their own and visible per batch in the UI.
one_batch_per_run = BackfillPolicy.multi_run(max_partitions_per_run=1)
