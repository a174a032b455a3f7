"""The real asset graph with a cascade pool and the dry-run switch, against the local fake
OpenAI server: the free VLLM member comes first but answers 401 (wrong key), so every face
goes on to the offline member; the failure is in the metadata, the key nowhere."""

from __future__ import annotations

import pytest
from dagster import DagsterInstance, Definitions

from seke.lake import Lake

from tests.assets.test_graph import KEY, build_batch
from tests.fake_openai_server import Behaviour, FakeOpenAIServer

API_KEY = "sk-pool-SECRET-42424242"


@pytest.mark.slow
def test_cascade_pool_and_dry_run(tmp_path, shared_data, monkeypatch):
    import pipelines.definitions as pd
    from resources.annotator import AnnotatorResource, PoolMemberConfig
    from resources.lake import LakeResource
    from resources.landing import LandingZoneResource
    from resources.warehouse import WarehouseResource

    build_batch(shared_data, tmp_path / "landing" / "mixed" / "b1")
    with FakeOpenAIServer(Behaviour(required_api_key=API_KEY, rpm=6000, usage_rule="openai")) as srv:
        monkeypatch.setenv("POOL_KEY", "sk-wrong-WRONGKEY-0000000000")
        pool = [PoolMemberConfig(name="offline", kind="offline", price_per_call=0.0001),
                PoolMemberConfig(name="gpt", base_url=srv.base_url, model="gpt-4o", api_key_env="POOL_KEY",
                                 price_input_per_1m=0.0, price_output_per_1m=0.0, rpm=6000, max_retries=0)]
        annotator = AnnotatorResource(kind="pool", seed=0, pool=pool, pool_strategy="cascade")
        resources = {"lake": LakeResource(uri=str(tmp_path / "lake")),
                     "landing": LandingZoneResource(path=str(tmp_path / "landing")),
                     "annotator": annotator,
                     "duckdb": WarehouseResource(path=str(tmp_path / "lake" / "warehouse.duckdb"))}
        defs = Definitions(assets=pd.defs.assets, jobs=pd.defs.jobs, resources={**pd.defs.resources, **resources})
        instance = DagsterInstance.ephemeral()
        instance.add_dynamic_partitions("batches", [KEY])
        assert defs.resolve_job_def("refresh_knowledge").execute_in_process(instance=instance).success
        job = defs.resolve_job_def("annotate_batch")
        dry = job.execute_in_process(instance=instance, partition_key=KEY, raise_on_error=False,
                                     run_config={"ops": {"annotate_faces": {"config": {"dry_run": True}}}})
        assert not dry.success and srv.chat_requests(with_image=True) == []
        assert not Lake(str(tmp_path / "lake")).exists("verified_labels")
        failure = [e for e in instance.all_logs(dry.run_id) if e.dagster_event and e.dagster_event.is_step_failure]
        assert "dry run" in str(failure[0].dagster_event.event_specific_data.error)
        run = job.execute_in_process(instance=instance, partition_key=KEY)
        assert run.success
        gpt_calls = len(srv.chat_requests(with_image=True))
        assert srv.throttled == []
    lake = Lake(str(tmp_path / "lake"))
    labels = lake.read_table("verified_labels")
    sampled = labels.filter(labels["n_samples"] > 0)
    assert sampled.height > 0 and gpt_calls > 0
    assert set(sampled["produced_by"]) == {"offline"} and set(sampled["escalations"]) == {1}
    samples = lake.read_table("mc_samples")
    assert set(samples["model"]) >= {"gpt-4o"}  # the failed tries are kept, with their error
    assert samples.filter(samples["model"] == "gpt-4o")["error"].str.contains("401").all()
    from dagster import AssetKey
    md = instance.get_latest_materialization_event(AssetKey("mc_samples")).asset_materialization.metadata
    assert "estimate_vs_actual" in md and md["estimate_usd"].value >= 0
    assert md["pool"].value["members"]["gpt"]["failed"] is True
    logs = "\n".join(str(e) for e in instance.all_logs(run.run_id))
    for text in (str(md), logs):
        assert "WRONGKEY" not in text
