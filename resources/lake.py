"""Lake storage resource: a local directory (default ``./lake``) or ``s3://bucket/prefix``.

The S3 settings are the nested ``s3`` resource (dagster-aws' ``S3Resource``), the same one the
landing zone uses, so one endpoint/region serves both.
"""

import os
from typing import Optional

from dagster import ConfigurableResource
from dagster_aws.s3 import S3Resource
from pydantic import Field

from seke.lake import Lake


class LakeResource(ConfigurableResource):
    """Where every table of the platform lives (Delta tables)."""

    uri: str = Field(default_factory=lambda: os.path.abspath("lake"),
                     description="Local path or s3://bucket/prefix (env SEKE_LAKE_URI)")
    s3: Optional[S3Resource] = Field(default=None, description="S3 endpoint and region, shared with the "
                                                                "landing zone (env SEKE_S3_ENDPOINT, AWS_REGION)")

    def lake(self) -> Lake:
        s3 = self.s3 or S3Resource()
        return Lake(self.uri, s3_endpoint=s3.endpoint_url or None, s3_region=s3.region_name or None,
                    s3_access_key_id=s3.aws_access_key_id or None,
                    s3_secret_access_key=s3.aws_secret_access_key or None)
