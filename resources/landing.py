"""Landing zone: where new ingest batches arrive, one folder per batch.

Layout: ``<landing>/<source>/<batch>/`` holding images and an optional ``manifest.csv``
(the format of ../shared/data/*/manifest.csv). Each batch becomes one dynamic partition
``<source>__<batch>``.
"""


import os
from pathlib import Path

from dagster import ConfigurableResource
from pydantic import Field

PARTITION_SEPARATOR = "__"


def partition_key(source: str, batch: str) -> str:
    return f"{source}{PARTITION_SEPARATOR}{batch}"


def split_partition_key(key: str) -> tuple[str, str]:
    """``ckplus__2026-11-22`` -> (``ckplus``, ``2026-11-22``)."""
    if PARTITION_SEPARATOR not in key:
        raise ValueError(f"partition key {key!r} is not <source>{PARTITION_SEPARATOR}<batch>")
    source, batch = key.split(PARTITION_SEPARATOR, 1)
    return source, batch


class LandingZoneResource(ConfigurableResource):
    """A local landing directory (env ``SEKE_LANDING_DIR``, default ``./landing``)."""

    path: str = Field(default_factory=lambda: os.environ.get("SEKE_LANDING_DIR", os.path.abspath("landing")))

    def batch_dir(self, source: str, batch: str) -> Path:
        d = Path(self.path) / source / batch
        if not d.is_dir():
            raise FileNotFoundError(f"batch folder {d} does not exist")
        return d

    def discover(self) -> list[str]:
        """Partition keys of every batch folder present in the landing zone."""
        root = Path(self.path)
        if not root.is_dir():
            return []
        return sorted(partition_key(s.name, b.name)
                      for s in root.iterdir() if s.is_dir() and not s.name.startswith(".")
                      for b in s.iterdir() if b.is_dir() and not b.name.startswith("."))
