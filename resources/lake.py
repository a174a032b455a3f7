"""Lake storage resource: a local directory (default ``./lake``) or ``s3://bucket/prefix``."""


import os

from dagster import ConfigurableResource
from pydantic import Field

from seke.lake import Lake


def default_lake_uri() -> str:
    return os.environ.get("SEKE_LAKE_URI", os.path.abspath("lake"))


class LakeResource(ConfigurableResource):
    """Where every table of the platform lives (hive-partitioned Parquet)."""

    uri: str = Field(default_factory=default_lake_uri,
                     description="Local path or s3://bucket/prefix (env SEKE_LAKE_URI)")
    s3_endpoint: str | None = Field(default_factory=lambda: os.environ.get("SEKE_S3_ENDPOINT"),
                                    description="S3 endpoint override, e.g. a SeaweedFS/MinIO URL (env SEKE_S3_ENDPOINT)")

    def lake(self) -> Lake:
        return Lake(self.uri, s3_endpoint=self.s3_endpoint)
