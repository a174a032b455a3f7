"""The real asset graph with the VLLM annotator, against the local fake OpenAI server.

Same batch as tests/assets/test_graph.py (real faces from ../shared/data), but
``annotate_faces`` samples through ``VLLMAnnotator`` over real sockets: every mc_samples row is
a vllm sample with tokens and cost, the run holds the ``vllm`` pool, and re-materializing the
partition pays nothing (every sample is a cache hit from the lake table ``vllm_cache``).
"""

from __future__ import annotations

import pytest
from dagster import DagsterInstance, Definitions

from seke.lake import Lake

from tests.assets.test_graph import KEY, build_batch
from tests.fake_openai_server import Behaviour, FakeOpenAIServer

API_KEY = "sk-graph-SECRET-31337"


@pytest.mark.slow
def test_annotate_batch_with_vllm_annotator(tmp_path, shared_data, monkeypatch):
    import pipelines.definitions as pd
    from resources.annotator import AnnotatorResource
    from resources.lake import LakeResource
    from resources.landing import LandingZoneResource
    from resources.warehouse import WarehouseResource

    build_batch(shared_data, tmp_path / "landing" / "mixed" / "b1")
    with FakeOpenAIServer(Behaviour(required_api_key=API_KEY)) as srv:
        monkeypatch.setenv("SEKE_VLLM_BASE_URL", srv.base_url)
        monkeypatch.setenv("SEKE_VLLM_MODEL", "fake-vlm")
        monkeypatch.setenv("OPENAI_API_KEY", API_KEY)
        monkeypatch.setenv("SEKE_VLLM_PRICE_INPUT_PER_1M", "2.5")
        monkeypatch.setenv("SEKE_VLLM_PRICE_OUTPUT_PER_1M", "10")
        resources = {"lake": LakeResource(uri=str(tmp_path / "lake")),
                     "landing": LandingZoneResource(path=str(tmp_path / "landing")),
                     "annotator": AnnotatorResource(kind="vllm", seed=0, vllm=_env_vllm()),
                     "duckdb": WarehouseResource(path=str(tmp_path / "lake" / "warehouse.duckdb"))}
        defs = Definitions(assets=pd.defs.assets, jobs=pd.defs.jobs, resources={**pd.defs.resources, **resources})
        instance = DagsterInstance.ephemeral()
        instance.add_dynamic_partitions("batches", [KEY])
        assert defs.resolve_job_def("refresh_knowledge").execute_in_process(instance=instance).success

        def run():
            r = defs.resolve_job_def("annotate_batch").execute_in_process(instance=instance, partition_key=KEY)
            assert r.success
            return r

        first = run()
        calls_first = len(srv.chat_requests(with_image=True))
        samples1 = Lake(str(tmp_path / "lake")).read_table("mc_samples")
        second = run()
        calls_second = len(srv.chat_requests(with_image=True)) - calls_first
    samples2 = Lake(str(tmp_path / "lake")).read_table("mc_samples")
    assert calls_first > 0 and samples1.height > 0
    assert set(samples1["backend"]) == {"vllm"} and set(samples1["model"]) == {"fake-vlm"}
    assert (samples1["parse_status"] != "failed").all()
    assert samples1["cost_usd"].sum() > 0 and not samples1["cache_hit"].any()
    # the re-run pays nothing: same samples, all cache hits (verification calls included)
    assert calls_second == 0
    assert samples2["cache_hit"].all() and samples2["cost_usd"].sum() == 0
    assert samples2.height == samples1.height
    labels = Lake(str(tmp_path / "lake")).read_table("verified_labels")
    assert labels.height > 0
    logs = "\n".join(str(e) for r in (first, second) for e in instance.all_logs(r.run_id))
    assert API_KEY not in logs
    assert all(API_KEY.encode() not in p.read_bytes() for p in tmp_path.rglob("*") if p.is_file())


def _env_vllm():
    """The endpoint resource as the code location builds it from SEKE_VLLM_* (set by the test)."""
    from resources.settings import default_resources

    return default_resources()["annotator"].vllm
