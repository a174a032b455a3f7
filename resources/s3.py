"""dagster-aws S3 client settings, from the same variables the lake uses."""

import os

from dagster_aws.s3 import S3Resource


def default_s3_resource() -> S3Resource:
    """S3Resource for ``SEKE_S3_ENDPOINT`` (MinIO/SeaweedFS) or AWS, keys from the AWS_* env."""
    return S3Resource(endpoint_url=os.environ.get("SEKE_S3_ENDPOINT") or None,
                      region_name=os.environ.get("AWS_REGION", "us-east-1"))
