"""``vllm_batch_prefill``: backfill mode, first-round samples through the OpenAI Batch API.

For a large backfill, submit every face's first SV-UAMC round (``k`` samples) as one Batch API
job (about half the online price), poll until it finishes and collect the answers into the
content-addressed response cache. ``annotate_faces`` then finds those samples as free cache
hits and only spends online calls on later adaptive rounds, verification and the answers the
batch could not deliver. The logic lives in :mod:`seke.annotators.vllm_batch`.

To buy *every* round and the verifications through the Batch API instead, run
``annotate_faces`` with ``batch_api`` (the ``vllm_backfill`` job does).
"""


from dagster import AssetExecutionContext, Config, MaterializeResult, MetadataValue, asset
from pydantic import Field

from seke.prompts import prompt_specs
from assets.common import OWNERS, lake_partition, tags
from seke.knowledge import read_current_knowledge
from assets.partitions import batches, one_batch_per_run
from resources.lake import LakeResource
from resources.annotator import AnnotatorResource
from resources.vllm import VLLM_POOL
from seke.annotation import SampleRequest
from seke.records import face_items
from seke.sv_uamc import SamplingConfig


class BatchPrefillConfig(Config):
    samples_per_face: int = Field(SamplingConfig().k,
                                  description="first-round samples per face (SV-UAMC k: same cache keys)")
    poll_s: float = Field(30.0, description="seconds between batch status polls")
    timeout_s: float = Field(24 * 3600.0, description="give up waiting after this long (collect what is done)")


@asset(partitions_def=batches, backfill_policy=one_batch_per_run, deps=["raw_faces", "knowledge_prompts"], group_name="annotation", owners=OWNERS, tags=tags("annotation"),
       pool=VLLM_POOL, kinds={"openai", "delta"})
def vllm_batch_prefill(context: AssetExecutionContext, config: BatchPrefillConfig, lake: LakeResource,
                       annotator: AnnotatorResource) -> MaterializeResult:
    """First-round VLLM samples of every face of the batch, bought through the OpenAI Batch API
    and stored in the response cache (lake table ``vllm_cache``); ``annotate_faces`` reuses them."""
    if annotator.kind != "vllm":
        context.log.info(f"the annotator is {annotator.kind!r}, not vllm: nothing to prefill")
        return MaterializeResult(metadata={"skipped": MetadataValue.text("annotator is not vllm")})
    part = lake_partition(context)
    store = lake.lake()
    faces = store.read_partition("raw_faces", part)
    prompts = prompt_specs(store.read_partition("knowledge_prompts", part))
    items = [f for f in face_items(faces, part["source"]) if f.face_id in prompts]
    requests = [SampleRequest(f, prompts[f.face_id], config.samples_per_face) for f in items
                if prompts[f.face_id].missing]
    vllm = annotator.endpoint()
    with vllm.annotator(read_current_knowledge(store), store) as ann:
        runner = vllm.batch_runner(ann, store)
        try:
            sub = runner.submit(requests, metadata={"partition": context.partition_key})
            if sub.batch_id is None:
                got_status, collected, unparsed, errors, missing, cost = "nothing to submit", 0, 0, 0, 0, 0.0
            else:
                context.log.info(f"batch {sub.batch_id}: {sub.lines} requests, {sub.samples} samples")
                got = runner.wait(sub.batch_id, poll_s=config.poll_s, timeout_s=config.timeout_s)
                got_status, collected, unparsed, errors, missing, cost = (
                    got.status, got.collected, got.unparsed, got.errors, got.missing, got.cost_usd)
        finally:
            runner.close()
    return MaterializeResult(metadata={
        "batch_id": MetadataValue.text(sub.batch_id or ""),
        "status": MetadataValue.text(got_status),
        "faces": MetadataValue.int(len(requests)),
        "samples_submitted": MetadataValue.int(sub.samples),
        "samples_already_cached": MetadataValue.int(sub.cached),
        "samples_over_budget": MetadataValue.int(sub.not_submitted),
        "samples_collected": MetadataValue.int(collected),
        "samples_unparsed_left_for_online": MetadataValue.int(unparsed),
        "failed_request_lines": MetadataValue.int(errors),
        "missing_request_lines": MetadataValue.int(missing),
        "cost_usd": MetadataValue.float(round(cost, 6)),
    })
