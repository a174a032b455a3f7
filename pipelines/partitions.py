"""Partitions: one dynamic partition per ingest batch (``<source>__<batch>``)."""

from dagster import DynamicPartitionsDefinition

batches = DynamicPartitionsDefinition(name="batches")
