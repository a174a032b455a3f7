"""Landing zone: where new ingest batches arrive, one folder per batch.

Layout: ``<landing>/<source>/<batch>/`` holding images and a ``manifest.csv`` (the format of
../shared/data/*/manifest.csv; written last by the uploader, it marks the batch complete). The
landing zone is a local directory or an ``s3://bucket/prefix``; each batch becomes one dynamic
partition ``<source>__<batch>``.
"""

import os
import re
from pathlib import Path
from typing import Optional

from dagster import ConfigurableResource
from dagster_aws.s3 import S3Resource
from pydantic import Field

from seke.landing import fetch_batch, partition_key, split_partition_key  # noqa: F401  (re-exported)
from seke.manifest import subject_pattern


class LandingZoneResource(ConfigurableResource):
    """Local path or s3:// URI of the landing zone (env ``SEKE_LANDING_URI`` or
    ``SEKE_LANDING_DIR``, default ``./landing``), and where symlinks in a batch may point."""

    path: str = Field(default_factory=lambda: os.path.abspath("landing"),
                      description="local folder or s3://bucket/prefix (env SEKE_LANDING_URI / SEKE_LANDING_DIR)")
    scratch_dir: str = Field(default_factory=lambda: os.path.expanduser(os.path.join("~", ".cache", "seke", "landing")),
                             description="where batches of an S3 landing zone are downloaded for decoding "
                                         "(under SEKE_CACHE_DIR)")
    s3: Optional[S3Resource] = Field(default=None, description="S3 endpoint and region, shared with the "
                                                                "lake (env SEKE_S3_ENDPOINT)")
    allowed_roots: list[str] = Field(
        default_factory=list,
        description="local folders, besides the landing zone, that symlinks inside a batch may "
                    "point into (e.g. a shared image store; env SEKE_LANDING_ALLOWED_ROOTS, "
                    "os.pathsep-separated); a link resolving anywhere else is quarantined "
                    "outside_landing")
    subject_patterns: dict[str, str] = Field(
        default_factory=dict,
        description="per source, a regular expression that reads the subject (whose face it is) "
                    "from a file name where the manifest has no subject_id: the (?P<subject>...) "
                    "group, else the first, the whole base name matching; e.g. "
                    "{'wild': '(?P<subject>.+)_\\d+\\.\\w+'} for LFW-style names (env "
                    "SEKE_SUBJECT_PATTERNS, 'source=regex' entries separated by ';'). Splits then "
                    "keep a person on one side and certification counts persons")

    def subject_pattern(self, source: str) -> "re.Pattern[str] | None":
        """The source's subject-from-file-name rule, compiled (``ValueError`` naming the source
        when it is not a usable regular expression); None when the source has none."""
        text = self.subject_patterns.get(source)
        if not text:
            return None
        try:
            return subject_pattern(text)
        except ValueError as exc:
            raise ValueError(f"subject_patterns[{source!r}]: {exc}") from None

    def s3_client(self):
        """A boto3 client for an ``s3://`` landing zone (the sensor lists it, runs fetch from it)."""
        return (self.s3 or S3Resource()).get_client()

    def symlink_roots(self) -> list[Path]:
        """Folders symlinks of a batch may resolve into: the local landing root (the download
        folder for an S3 zone) and ``allowed_roots``."""
        local = self.scratch_dir if self.path.startswith("s3://") else self.path
        return [Path(local)] + [Path(p) for p in self.allowed_roots]

    def batch_dir(self, source: str, batch: str) -> Path:
        """A local folder with the batch's files (downloaded first when the zone is on S3)."""
        if self.path.startswith("s3://"):
            return fetch_batch(self.path, source, batch, Path(self.scratch_dir) / source / batch,
                               self.s3_client())
        d = Path(self.path) / source / batch
        if not d.is_dir():
            raise FileNotFoundError(f"batch folder {d} does not exist")
        return d
