"""``knowledge``: the versioned emotion-knowledge tables every prompt and check is built from."""


import os
from datetime import datetime, timezone

import polars as pl
from dagster import Config, MaterializeResult, MetadataValue, asset
from pydantic import Field

from assets.common import table_metadata
from resources.lake import LakeResource
from seke.knowledge import Knowledge, knowledge_from_tables, knowledge_with_estimate, load_knowledge
from seke.lake import Lake

TABLE_PREFIX = "knowledge_"


class KnowledgeConfig(Config):
    version: str = Field(default_factory=lambda: os.environ.get("SEKE_KNOWLEDGE_VERSION", "v2"),
                         description="bundled version: v1 (literature) or v2 (v1 + CK+ P(AU|expression))")
    estimate_from_manifest: str | None = Field(
        default=None, description="optional manifest.csv with expression + au<N> columns to re-estimate "
                                  "P(AU|expression) from (creates a new version)")


def read_current_knowledge(lake: Lake) -> Knowledge:
    """The knowledge version the last ``knowledge`` materialization made current."""
    if not lake.exists("knowledge_current"):
        raise RuntimeError("no knowledge in the lake yet: materialize the `knowledge` asset first")
    cur = lake.read_table("knowledge_current").row(0, named=True)
    v = cur["version"]
    ea = lake.read_partition(f"{TABLE_PREFIX}expression_au", {"version": v})
    va = lake.read_partition(f"{TABLE_PREFIX}va_regions", {"version": v})
    return knowledge_from_tables(v, ea, va, provenance=cur["provenance"])


@asset(group_name="knowledge", kinds={"parquet"})
def knowledge(config: KnowledgeConfig, lake: LakeResource) -> MaterializeResult:
    """Versioned knowledge tables: expression→AU probabilities, expression→VA circumplex regions,
    AU catalogue; optionally re-estimated from a source carrying two granularities (CK+)."""
    k = load_knowledge(config.version)
    if config.estimate_from_manifest:
        k = knowledge_with_estimate(pl.read_csv(config.estimate_from_manifest), "manifest")
    store = lake.lake()
    paths = {}
    for name, df in k.tables().items():
        paths[name] = store.write_partition(f"{TABLE_PREFIX}{name}", {"version": k.version}, df)
    current = pl.DataFrame({"version": [k.version], "fingerprint": [k.fingerprint()],
                            "provenance": [k.provenance],
                            "materialized_at": [datetime.now(timezone.utc).isoformat()]})
    store.write_partition("knowledge_current", {}, current)
    ea = k.expression_au_table()
    top = (ea.filter(pl.col("p_present") >= 0.5).group_by("expression")
           .agg(pl.col("au").sort().cast(pl.String).str.join("+").alias("likely_aus")).sort("expression"))
    return MaterializeResult(metadata={
        **table_metadata(ea, paths["expression_au"]),
        "knowledge_version": MetadataValue.text(k.version),
        "fingerprint": MetadataValue.text(k.fingerprint()),
        "provenance": MetadataValue.text(k.provenance),
        "likely_aus_per_expression": MetadataValue.md(
            "\n".join(f"- **{r['expression']}**: {r['likely_aus']}" for r in top.iter_rows(named=True))),
    })
