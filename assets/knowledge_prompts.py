"""``knowledge_prompts``: one knowledge-enhanced prompt per face, asking only for what is missing."""


import json

import pyarrow as pa
from dagster import AssetExecutionContext, Config, MaterializeResult, MetadataValue, asset
from pydantic import Field

from assets.common import OWNERS, lake_partition, table_metadata, tags
from seke.knowledge import read_current_knowledge
from assets.partitions import batches, one_batch_per_run
from resources.lake import LakeResource
from seke import schemas
from seke.audit import choose_hidden
from seke.prompts import build_annotation_prompt
from seke.records import hide, known_labels, withheld


class PromptsConfig(Config):
    audit_fraction: float = Field(0.0, ge=0.0, le=1.0,
                                  description="share of faces whose human labels are hidden from the "
                                              "annotator, to measure label quality (audit mode)")
    audit_seed: int = 0


@asset(partitions_def=batches, backfill_policy=one_batch_per_run, deps=["raw_faces", "knowledge"], group_name="annotation",
       owners=OWNERS, tags=tags("annotation"),
       kinds={"delta"})
def knowledge_prompts(context: AssetExecutionContext, config: PromptsConfig,
                      lake: LakeResource) -> MaterializeResult:
    """Per face: which granularities are known (human facts), missing and withheld (an invalid
    human label: neither stated nor asked for), the rendered chat
    messages with the knowledge tables, the prompt version and its hash. Audit mode hides a
    deterministic share of human labels so generated labels can be compared with them."""
    part = lake_partition(context)
    store = lake.lake()
    faces = store.read_partition("raw_faces", part)
    k = read_current_knowledge(store)
    rows = []
    for row in faces.iter_rows(named=True):
        known = known_labels(row)
        hidden = choose_hidden(row["face_id"], known, config.audit_fraction, config.audit_seed)
        visible = hide(known, hidden)
        held = withheld(row, known)  # invalid human labels: neither facts nor asked for
        spec = build_annotation_prompt(visible, k, held)
        rows.append({"face_id": row["face_id"], "prompt_version": spec.version,
                     "prompt_hash": spec.prompt_hash, "known": visible.known_granularities(),
                     "missing": list(spec.missing), "audit_hidden": list(hidden), "withheld": list(held),
                     "messages_json": json.dumps(list(spec.messages)), "knowledge_version": k.version})
    table = pa.Table.from_pylist(rows, schema=schemas.KNOWLEDGE_PROMPTS)
    path = store.write_partition("knowledge_prompts", part, table)
    n_missing = {g: sum(g in r["missing"] for r in rows) for g in ("expression", "va", "aus")}
    return MaterializeResult(metadata={
        **table_metadata(table, path, ["face_id", "prompt_version", "prompt_hash", "known", "missing", "audit_hidden"]),
        "knowledge_version": MetadataValue.text(k.version),
        "faces_missing_per_granularity": MetadataValue.json(n_missing),
        "audit_hidden_faces": MetadataValue.int(sum(bool(r["audit_hidden"]) for r in rows)),
        "faces_withheld_per_granularity": MetadataValue.json(
            {g: sum(g in r["withheld"] for r in rows) for g in ("expression", "va", "aus")}),
        "distinct_prompts": MetadataValue.int(len({r["prompt_hash"] for r in rows})),
    })
