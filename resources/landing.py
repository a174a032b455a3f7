"""Landing zone: where new ingest batches arrive, one folder per batch.

Layout: ``<landing>/<source>/<batch>/`` holding images and a ``manifest.csv`` (the format of
../shared/data/*/manifest.csv; written last by the uploader, it marks the batch complete). The
landing zone is a local directory or an ``s3://bucket/prefix``; each batch becomes one dynamic
partition ``<source>__<batch>``.
"""

import os
from pathlib import Path

from dagster import ConfigurableResource
from pydantic import Field

from seke.landing import fetch_batch, partition_key, split_partition_key  # noqa: F401  (re-exported)


def default_landing() -> str:
    return os.environ.get("SEKE_LANDING_URI") or os.environ.get("SEKE_LANDING_DIR") or os.path.abspath("landing")


class LandingZoneResource(ConfigurableResource):
    """Local path or s3:// URI of the landing zone (env ``SEKE_LANDING_URI`` or
    ``SEKE_LANDING_DIR``, default ``./landing``), and where symlinks in a batch may point."""

    path: str = Field(default_factory=default_landing)
    scratch_dir: str = Field(default_factory=lambda: os.path.join(
        os.environ.get("SEKE_CACHE_DIR", os.path.expanduser("~/.cache/seke")), "landing"),
        description="where batches of an S3 landing zone are downloaded for decoding")
    allowed_roots: list[str] = Field(
        default_factory=lambda: [p for p in os.environ.get("SEKE_LANDING_ALLOWED_ROOTS", "").split(os.pathsep) if p],
        description="local folders, besides the landing zone, that symlinks inside a batch may "
                    "point into (e.g. a shared image store; env SEKE_LANDING_ALLOWED_ROOTS, "
                    "os.pathsep-separated); a link resolving anywhere else is quarantined "
                    "outside_landing")

    def symlink_roots(self) -> list[Path]:
        """Folders symlinks of a batch may resolve into: the local landing root (the download
        folder for an S3 zone) and ``allowed_roots``."""
        local = self.scratch_dir if self.path.startswith("s3://") else self.path
        return [Path(local)] + [Path(p) for p in self.allowed_roots]

    def batch_dir(self, source: str, batch: str) -> Path:
        """A local folder with the batch's files (downloaded first when the zone is on S3)."""
        if self.path.startswith("s3://"):
            from resources.s3 import default_s3_resource

            return fetch_batch(self.path, source, batch, Path(self.scratch_dir) / source / batch,
                               default_s3_resource().get_client())
        d = Path(self.path) / source / batch
        if not d.is_dir():
            raise FileNotFoundError(f"batch folder {d} does not exist")
        return d
