"""Backfill mode end to end: Batch API prefill, then annotate_faces reuses it from the cache."""

import polars as pl
import pytest
from dagster import AssetSelection, DagsterInstance, Definitions, define_asset_job

from assets.partitions import batches
from tests.assets.test_graph import KEY, build_batch
from tests.fake_openai_server import Behaviour, FakeOpenAIServer

API_KEY = "sk-prefill-SECRET-2718"


@pytest.mark.slow
def test_prefill_then_annotate_pays_first_round_once(tmp_path, shared_data, monkeypatch):
    import pipelines.definitions as pd
    from resources.annotator import AnnotatorResource
    from resources.lake import LakeResource
    from resources.landing import LandingZoneResource
    from resources.warehouse import WarehouseResource

    build_batch(shared_data, tmp_path / "landing" / "mixed" / "b1")
    with FakeOpenAIServer(Behaviour(required_api_key=API_KEY, batch_polls_until_done=2)) as srv:
        for k, v in {"SEKE_ANNOTATOR": "vllm", "SEKE_VLLM_BASE_URL": srv.base_url,
                     "SEKE_VLLM_MODEL": "fake-vlm", "OPENAI_API_KEY": API_KEY,
                     "SEKE_VLLM_PRICE_INPUT_PER_1M": "2.5", "SEKE_VLLM_PRICE_OUTPUT_PER_1M": "10"}.items():
            monkeypatch.setenv(k, v)
        prefill = define_asset_job("prefill", selection=AssetSelection.assets("raw_faces", "knowledge_prompts",
                                                                              "vllm_batch_prefill"),
                                   partitions_def=batches)
        annotate = define_asset_job("annotate", selection=AssetSelection.all() - AssetSelection.assets("knowledge")
                                    - AssetSelection.groups("evaluation", "training", "backfill"),
                                    partitions_def=batches)
        defs = Definitions(
            assets=pd.defs.assets, jobs=[*pd.defs.jobs, prefill, annotate],
            resources={**pd.defs.resources, "lake": LakeResource(uri=str(tmp_path / "lake")),
                       "landing": LandingZoneResource(path=str(tmp_path / "landing")),
                       "annotator": AnnotatorResource(kind="vllm", seed=0, vllm=_env_vllm()),
                       "duckdb": WarehouseResource(path=str(tmp_path / "lake" / "warehouse.duckdb"))})
        instance = DagsterInstance.ephemeral()
        instance.add_dynamic_partitions("batches", [KEY])
        assert defs.resolve_job_def("refresh_knowledge").execute_in_process(instance=instance).success
        r1 = defs.resolve_job_def("prefill").execute_in_process(
            instance=instance, partition_key=KEY,
            run_config={"ops": {"vllm_batch_prefill": {"config": {"poll_s": 0.05}}}})
        assert r1.success
        meta = r1.asset_materializations_for_node("vllm_batch_prefill")[0].metadata
        assert meta["status"].value == "completed" and meta["samples_collected"].value > 0
        assert meta["samples_collected"].value == meta["samples_submitted"].value
        assert len(srv.chat_requests(with_image=True)) == 0          # all of it went through /v1/batches
        assert len(srv.batches) == 1
        r2 = defs.resolve_job_def("annotate").execute_in_process(instance=instance, partition_key=KEY)
        assert r2.success
    from seke.lake import Lake

    samples = Lake(str(tmp_path / "lake")).read_table("mc_samples")
    round0 = samples.filter(pl.col("round") == 0)
    assert round0.height == meta["samples_collected"].value
    assert round0["cache_hit"].all() and round0["cost_usd"].sum() == 0
    assert (samples["parse_status"] != "failed").all()
    logs = "\n".join(str(e) for r in (r1, r2) for e in instance.all_logs(r.run_id))
    assert API_KEY not in logs


def _env_vllm():
    """The endpoint resource as the code location builds it from SEKE_VLLM_* (set by the test)."""
    from resources.settings import default_resources

    return default_resources()["annotator"].vllm
