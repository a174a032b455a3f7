"""Discover complete landing batches on a local directory or an S3 prefix.

The landing zone is ``<root>/<source>/<batch>/`` with a ``manifest.csv`` next to ``images/``
(the layout of ``shared/data``). A batch counts as *landed* only when its manifest exists: the
uploader writes the manifest last, so a half-copied folder is never picked up. The partition key
is ``<source>__<batch>`` (the ``batches`` dynamic partitions of the core graph).

Plain Python (boto3 client or local filesystem), so the sensor in
:mod:`pipelines.ops_schedules` stays thin and this is testable against a real S3 server.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

MANIFEST = "manifest.csv"
KEY_SEPARATOR = "__"


def partition_key(source: str, batch: str) -> str:
    """``<source>__<batch>``; the separator may not appear in the source name."""
    if KEY_SEPARATOR in source or "/" in source or "/" in batch:
        raise ValueError(f"invalid landing folder {source!r}/{batch!r}")
    return f"{source}{KEY_SEPARATOR}{batch}"


def split_partition_key(key: str) -> tuple[str, str]:
    source, sep, batch = key.partition(KEY_SEPARATOR)
    if not sep or not source or not batch:
        raise ValueError(f"partition key {key!r} is not <source>{KEY_SEPARATOR}<batch>")
    return source, batch


def _split_s3(uri: str) -> tuple[str, str]:
    bucket, _, prefix = uri[len("s3://"):].partition("/")
    return bucket, prefix.strip("/")


def list_landing_batches(root: str, s3_client: Any | None = None,
                         marker: str = MANIFEST) -> list[str]:
    """Sorted partition keys of every complete batch under ``root`` (local path or s3:// URI).

    ``s3_client`` is a boto3 S3 client (e.g. ``dagster_aws.s3.S3Resource.get_client()``);
    it is required for ``s3://`` roots.
    """
    keys: set[str] = set()
    if root.startswith("s3://"):
        if s3_client is None:
            raise ValueError("an S3 client is needed to list an s3:// landing zone")
        bucket, prefix = _split_s3(root)
        base = f"{prefix}/" if prefix else ""
        paginator = s3_client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=bucket, Prefix=base):
            for obj in page.get("Contents", []):
                rel = obj["Key"][len(base):].split("/")
                if len(rel) == 3 and rel[2] == marker:
                    try:
                        keys.add(partition_key(rel[0], rel[1]))
                    except ValueError:
                        continue  # malformed folder names are ignored, not fatal
        return sorted(keys)
    base_path = Path(root)
    if not base_path.is_dir():
        return []
    for manifest in base_path.glob(f"*/*/{marker}"):
        try:
            keys.add(partition_key(manifest.parent.parent.name, manifest.parent.name))
        except ValueError:
            continue
    return sorted(keys)


def fetch_batch(root: str, source: str, batch: str, dest: Path, s3_client: Any) -> Path:
    """Copy ``<root>/<source>/<batch>/`` from S3 into ``dest`` (a local folder) and return it.

    Lets ingestion (which decodes local files) read an S3 landing zone: the batch is downloaded
    into a per-run scratch folder; objects already present with the same size are skipped, so a
    retried step does not download twice.
    """
    bucket, prefix = _split_s3(root)
    base = f"{prefix}/{source}/{batch}/" if prefix else f"{source}/{batch}/"
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    paginator = s3_client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=base):
        for obj in page.get("Contents", []):
            rel = obj["Key"][len(base):]
            if not rel or rel.endswith("/") or ".." in rel.split("/"):
                continue
            target = dest / rel
            if target.exists() and target.stat().st_size == obj["Size"]:
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.part")
            s3_client.download_file(bucket, obj["Key"], str(tmp))
            tmp.replace(target)
    return dest
