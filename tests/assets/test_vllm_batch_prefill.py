"""Backfill mode end to end: Batch API prefill, then annotate_faces reuses it from the cache; and
annotate_faces buying every round and verification through Batch jobs (``batch_api``)."""

import polars as pl
import pytest
from dagster import AssetSelection, DagsterInstance, Definitions, define_asset_job

from assets.partitions import batches
from tests.assets.test_graph import KEY, build_batch
from tests.fake_openai_server import Behaviour, FakeOpenAIServer, scripted_answer

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


@pytest.mark.slow
def test_annotate_faces_buys_every_round_through_batch_jobs(tmp_path, shared_data, monkeypatch):
    """batch_api: each round is one job for the faces still sampling; a job that loses lines
    (partial output file) has them bought online once; the rerun is all cache hits."""
    import pipelines.definitions as pd
    from resources.annotator import AnnotatorResource
    from resources.lake import LakeResource
    from resources.landing import LandingZoneResource
    from resources.warehouse import WarehouseResource
    from seke.lake import Lake

    build_batch(shared_data, tmp_path / "landing" / "mixed" / "b1")
    with FakeOpenAIServer(Behaviour(required_api_key=API_KEY)) as srv:
        for k, v in {"SEKE_ANNOTATOR": "vllm", "SEKE_VLLM_BASE_URL": srv.base_url,
                     "SEKE_VLLM_MODEL": "fake-vlm", "OPENAI_API_KEY": API_KEY, "SEKE_VLLM_CAPABILITIES": "json_schema",
                     "SEKE_VLLM_SEED": "0",  # distinct seeds: a request names its sample (see billed)
                     "SEKE_VLLM_PRICE_INPUT_PER_1M": "2.5", "SEKE_VLLM_PRICE_OUTPUT_PER_1M": "10"}.items():
            monkeypatch.setenv(k, v)
        annotate = define_asset_job("annotate", selection=AssetSelection.assets("raw_faces", "knowledge_prompts",
                                                                                "mc_samples", "verified_labels"),
                                    partitions_def=batches)
        defs = Definitions(
            assets=pd.defs.assets, jobs=[*pd.defs.jobs, annotate],
            resources={**pd.defs.resources, "lake": LakeResource(uri=str(tmp_path / "lake")),
                       "landing": LandingZoneResource(path=str(tmp_path / "landing")),
                       "annotator": AnnotatorResource(kind="vllm", seed=0, vllm=_env_vllm()),
                       "duckdb": WarehouseResource(path=str(tmp_path / "lake" / "warehouse.duckdb"))})
        instance = DagsterInstance.ephemeral()
        instance.add_dynamic_partitions("batches", [KEY])
        assert defs.resolve_job_def("refresh_knowledge").execute_in_process(instance=instance).success
        srv.script_batches([{"drop_every": 5}])                 # the first job loses every 5th line
        # the first face's three samples disagree: it needs a second round (no n: a line per sample)
        srv.script([scripted_answer("happiness"), scripted_answer("sadness"), scripted_answer("anger")])
        run_config = {"ops": {"annotate_faces": {"config": {"batch_api": True, "batch_poll_s": 0.02}}}}

        def run():
            r = defs.resolve_job_def("annotate").execute_in_process(instance=instance, partition_key=KEY,
                                                                     run_config=run_config)
            assert r.success
            return r

        first = run()
        jobs = len(srv.batches)
        online = sum(int(r.body.get("n") or 1) for r in srv.chat_requests(with_image=True))
        billed = srv.billed_identities()
        second = run()
        assert len(srv.batches) == jobs                         # the rerun buys nothing
        assert sum(int(r.body.get("n") or 1) for r in srv.chat_requests(with_image=True)) == online
    meta = first.asset_materializations_for_node("annotate_faces")
    mc = next(m for m in meta if m.asset_key.to_user_string() == "mc_samples").metadata
    report = mc["batch_api"].value["vllm/fake-vlm"] if "vllm/fake-vlm" in mc["batch_api"].value \
        else next(iter(mc["batch_api"].value.values()))
    assert jobs >= 2 and report["jobs"].get("completed") == jobs
    assert report["retried_online"] > 0 and online == report["retried_online"]   # samples bought online
    sizes = [b["request_counts"]["total"] for b in sorted(srv.batches.values(), key=lambda b: b["created_at"])]
    assert sizes[1] < sizes[0]                                  # round 2 only for the unresolved faces
    assert len(billed) == len(set(billed))                      # nothing paid twice
    samples = Lake(str(tmp_path / "lake")).read_table("mc_samples")
    assert samples["cache_hit"].all() and samples["cost_usd"].sum() == 0        # the rerun's rows
    assert mc["estimate_vs_actual"].value["usd"][1] > 0
    logs = "\n".join(str(e) for r in (first, second) for e in instance.all_logs(r.run_id))
    assert API_KEY not in logs


def _env_vllm():
    """The endpoint resource as the code location builds it from SEKE_VLLM_* (set by the test)."""
    from resources.settings import default_resources

    return default_resources()["annotator"].vllm
