"""The analysts' DuckDB file: views over every lake table."""

import os

from dagster import ConfigurableResource
from pydantic import Field


def default_duckdb_path() -> str:
    return os.environ.get("SEKE_DUCKDB_PATH", os.path.abspath(os.path.join("lake", "warehouse.duckdb")))


class WarehouseResource(ConfigurableResource):
    path: str = Field(default_factory=default_duckdb_path, description="DuckDB file (env SEKE_DUCKDB_PATH)")
