"""``knowledge``: the versioned emotion-knowledge tables every prompt and check is built from."""



import polars as pl
from dagster import Config, MaterializeResult, MetadataValue, asset
from pydantic import Field

from assets.common import OWNERS, table_metadata, tags
from resources.data import KnowledgeTablesResource
from resources.lake import LakeResource
from seke.knowledge import knowledge_with_estimate, load_knowledge, publish_knowledge



class KnowledgeConfig(Config):
    version: str = Field(default="", description="bundled version: v1 (literature) or v2 (v1 + CK+ "
                                                 "P(AU|expression)); '' = the knowledge_tables resource's")
    estimate_from_manifest: str | None = Field(
        default=None, description="optional manifest.csv with expression + au<N> columns to re-estimate "
                                  "P(AU|expression) from (creates a new version)")


@asset(group_name="knowledge", kinds={"delta"}, owners=OWNERS, tags=tags("knowledge"))
def knowledge(config: KnowledgeConfig, lake: LakeResource,
              knowledge_tables: KnowledgeTablesResource) -> MaterializeResult:
    """Versioned knowledge tables: expression→AU probabilities, expression→VA circumplex regions,
    AU catalogue; optionally re-estimated from a source carrying two granularities (CK+)."""
    k = load_knowledge(config.version or knowledge_tables.version)
    if config.estimate_from_manifest:
        k = knowledge_with_estimate(pl.read_csv(config.estimate_from_manifest), "manifest")
    paths = publish_knowledge(lake.lake(), k)
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
