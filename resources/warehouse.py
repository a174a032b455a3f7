"""The analysts' DuckDB file: views over every lake table."""

import os

from dagster import ConfigurableResource
from pydantic import Field


class WarehouseResource(ConfigurableResource):
    path: str = Field(default_factory=lambda: os.path.abspath(os.path.join("lake", "warehouse.duckdb")),
                      description="DuckDB file (env SEKE_DUCKDB_PATH)")
