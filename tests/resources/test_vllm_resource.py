"""VLLMResource: env configuration and a real Dagster materialization against the fake server."""


from pathlib import Path

import dagster as dg

from resources.settings import default_resources
from resources.vllm import VLLM_POOL, VLLMResource
from seke.annotators.vllm import summarise_samples
from seke.knowledge import knowledge_v1
from seke.lake import Lake
from tests.fake_openai_server import Behaviour, FakeOpenAIServer
from tests.seke.annotators.conftest import faces, requests

KEY = "sk-resource-SECRET-42424242"


def _from_env() -> VLLMResource:
    """The endpoint resource as the code location configures it from the environment."""
    from dagster import build_resources

    with build_resources({"annotator": default_resources()["annotator"]}) as res:
        return res.annotator.endpoint()


def test_configured_from_env(monkeypatch):
    monkeypatch.setenv("SEKE_VLLM_BASE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("SEKE_VLLM_MODEL", "qwen2.5-vl")
    monkeypatch.setenv("SEKE_VLLM_MAX_CONCURRENCY", "3")
    monkeypatch.setenv("SEKE_VLLM_TIMEOUT_S", "12.5")
    monkeypatch.setenv("SEKE_VLLM_MAX_CALLS", "100")
    monkeypatch.setenv("SEKE_VLLM_MAX_USD", "1.5")
    monkeypatch.setenv("SEKE_VLLM_PRICE_INPUT_PER_1M", "2.5")
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    r = _from_env()
    cfg = r.config()
    assert (cfg.base_url, cfg.model, cfg.max_concurrency, cfg.timeout_s) == ("http://127.0.0.1:9/v1", "qwen2.5-vl", 3, 12.5)
    assert (cfg.max_calls, cfg.max_usd, cfg.price_input_per_1m) == (100, 1.5, 2.5)
    assert cfg.api_key == KEY
    assert KEY not in repr(r) and KEY not in repr(cfg) and KEY not in str(r.model_dump())
    assert VLLM_POOL == "vllm"


def test_zero_from_env_is_zero_not_the_default(monkeypatch):
    # `SEKE_VLLM_MAX_RETRIES=0` used to fall back to 2 retries (and temperature 0 to 0.7)
    monkeypatch.setenv("SEKE_VLLM_MAX_RETRIES", "0")
    monkeypatch.setenv("SEKE_VLLM_TEMPERATURE", "0")
    monkeypatch.setenv("SEKE_VLLM_PRICE_OUTPUT_PER_1M", "0")
    cfg = _from_env().config()
    assert (cfg.max_retries, cfg.temperature, cfg.price_output_per_1m) == (0, 0.0, 0.0)
    monkeypatch.delenv("SEKE_VLLM_MAX_RETRIES")
    assert _from_env().config().max_retries == 2


def test_materialization_with_pool_uses_cache_and_never_logs_key(monkeypatch, tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    with FakeOpenAIServer(Behaviour(required_api_key=KEY)) as srv:
        monkeypatch.setenv("SEKE_VLLM_BASE_URL", srv.base_url)
        monkeypatch.setenv("SEKE_VLLM_MODEL", "fake-vlm")
        monkeypatch.setenv("SEKE_VLLM_PRICE_INPUT_PER_1M", "1.0")
        monkeypatch.setenv("OPENAI_API_KEY", KEY)

        @dg.asset(pool=VLLM_POOL)
        def toy_samples(context: dg.AssetExecutionContext, vllm: VLLMResource) -> dg.MaterializeResult:
            with vllm.annotator(knowledge_v1(), lake) as ann:
                out = ann.sample_batch(requests(faces(3), n=2))
                flat = [s for ss in out for s in ss]
                context.log.info(f"annotator {ann!r}")
                return dg.MaterializeResult(metadata={**summarise_samples(flat),
                                                      **{f"run_{k}": v for k, v in ann.stats.as_metadata().items()}})

        instance = dg.DagsterInstance.ephemeral()
        res1 = dg.materialize([toy_samples], resources={"vllm": _from_env()}, instance=instance)
        res2 = dg.materialize([toy_samples], resources={"vllm": _from_env()}, instance=instance)
    assert res1.success and res2.success
    m1 = res1.asset_materializations_for_node("toy_samples")[0].metadata
    m2 = res2.asset_materializations_for_node("toy_samples")[0].metadata
    assert m1["samples"].value == 6 and m1["parse_ok"].value == 6 and m1["cost_usd"].value > 0
    assert m2["cache_hits"].value == 6 and m2["cost_usd"].value == 0 and m2["run_calls"].value == 0
    logs = "\n".join(str(e) for e in instance.all_logs(res1.run_id) + instance.all_logs(res2.run_id))
    assert "fake-vlm" in logs and KEY not in logs
    assert all(KEY.encode() not in p.read_bytes() for p in Path(tmp_path).rglob("*") if p.is_file())
