"""No piece of the API key is stored anywhere, even when the server echoes it in its errors.

The real ``annotate_batch`` job runs with the VLLM annotator against the local OpenAI-protocol
server (real sockets, real ``openai`` client, the key really sent and checked), on a
persistent SQLite Dagster instance made from infra/dagster.yaml. The server answers image
requests with 401/403/400/500 bodies and answers that quote the key: whole, at the start, in
the middle, cut at the end, a middle piece, and after position 190 of bodies longer than 200
characters (the case where cutting before scrubbing stored a 12-character prefix). Then no
6-character substring of the key may appear in: any file of the lake (raw bytes, and the
decoded Parquet/DuckDB values, since compression hides text from a byte scan), the response
cache, any event record of any run (serialized), any file of the instance directory (SQLite
event log, compute logs) or the captured stdout/stderr and Python logs.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from seke.lake import Lake
from tests.fake_openai_server import Behaviour, FakeOpenAIServer
from tests.ops.graph_runner import make_landing_batch

ROOT = Path(__file__).resolve().parents[2]
KEY = "sk-proj-Qm7ZxLw9VtR2pNb8KcYd4HsJf6GuAe1WoTi3"
PARTITION = "ckplus__secrets"
# What the server answers to image requests, in order (then good answers): bodies and texts quoting the key.
ECHOES = [
    ("status", 500, None, f"{KEY} is not allowed to use this model"),              # key first
    ("status", 500, None, f"upstream rejected Authorization: Bearer {KEY} (retry later)"),
    ("status", 500, None, f"invalid key {KEY[:12]}"),                               # cut at the end
    ("status", 500, None, f"key fragment {KEY[5:23]}... (truncated)"),              # middle piece
    ("status", 500, None, "x" * 190 + KEY),                                         # after 190
    ("status", 500, None, "y" * 170 + KEY + " " + "z" * 80),                       # across the cut at 200
    ("status", 401, None, f"Incorrect API key provided: {KEY}"),
    ("status", 403, None, f"key {KEY[:10]}**** has no access"),
    ("status", 400, None, f"bad request for key {KEY}"),
    ("text", "I'm sorry, but I can't help with that. " + "p" * 160 + KEY),          # refusal
    ("text", f"Authorization: Bearer {KEY}"),                                      # unparseable answer
]
RUN_CONFIG = {"ops": {"annotate_faces": {"config": {"strategy": "fixed_n", "k": 2, "fixed_n": 4}}}}


def leaks(text: str) -> list[str]:
    """The 6-character pieces of the key found in ``text``."""
    return sorted({KEY[i:i + 6] for i in range(len(KEY) - 5) if KEY[i:i + 6] in text})


def _bytes_text(folder: Path) -> dict[str, str]:
    return {str(p): p.read_bytes().decode("latin-1") for p in folder.rglob("*") if p.is_file()}


def _decoded_lake(lake: Path) -> dict[str, str]:
    """String values of every Parquet file and DuckDB table (compressed on disk)."""
    import duckdb

    out = {}
    for p in lake.rglob("*.parquet"):
        table = pq.read_table(p)
        cols = [c for c, t in zip(table.column_names, table.schema.types)
                if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_list(t)]
        out[str(p)] = repr(table.select(cols).to_pylist())
    for db in lake.rglob("*.duckdb"):
        con = duckdb.connect(str(db), read_only=True)
        try:
            for (name,) in con.execute("SELECT table_name FROM information_schema.tables").fetchall():
                out[f"{db}:{name}"] = repr(con.execute(f'SELECT * FROM "{name}"').fetchall())
        finally:
            con.close()
    return out


@pytest.mark.shared_data
def test_echoed_key_never_stored_anywhere(tmp_path, monkeypatch, capfd, caplog):
    from dagster import DagsterInstance, Definitions
    from dagster._serdes import serialize_value

    import pipelines.definitions as pd
    from resources.annotator import AnnotatorResource
    from resources.lake import LakeResource
    from resources.landing import LandingZoneResource
    from resources.warehouse import WarehouseResource

    caplog.set_level("INFO")
    home, lake, landing = tmp_path / "home", tmp_path / "lake", tmp_path / "landing"
    home.mkdir()
    shutil.copy(ROOT / "infra" / "dagster.yaml", home / "dagster.yaml")
    make_landing_batch(landing, *PARTITION.split("__"), n=4)   # without ../shared: 4 photos hold 8 faces
    with FakeOpenAIServer(Behaviour(required_api_key=KEY, supports_n=False)) as srv:
        for name, value in {"DAGSTER_HOME": str(home), "SEKE_VLLM_BASE_URL": srv.base_url,
                            "SEKE_VLLM_MODEL": "fake-vlm", "OPENAI_API_KEY": KEY,
                            "SEKE_VLLM_MAX_RETRIES": "0", "SEKE_VLLM_TIMEOUT_S": "20",
                            "SEKE_VLLM_MAX_CONCURRENCY": "4"}.items():
            monkeypatch.setenv(name, value)
        srv.script(list(ECHOES))
        resources = {"lake": LakeResource(uri=str(lake)), "landing": LandingZoneResource(path=str(landing)),
                     "annotator": AnnotatorResource(kind="vllm", seed=0, vllm=_env_vllm()),
                     "duckdb": WarehouseResource(path=str(lake / "warehouse.duckdb"))}
        defs = Definitions(assets=pd.defs.assets, jobs=pd.defs.jobs,
                           resources={**pd.defs.resources, **resources})
        instance = DagsterInstance.get()
        try:
            instance.add_dynamic_partitions("batches", [PARTITION])
            assert defs.resolve_job_def("refresh_knowledge").execute_in_process(instance=instance).success
            result = defs.resolve_job_def("annotate_batch").execute_in_process(
                instance=instance, partition_key=PARTITION, run_config=RUN_CONFIG, raise_on_error=False)
            events = "\n".join(serialize_value(e) for run in instance.get_runs()
                               for e in instance.all_logs(run.run_id))
        finally:
            instance.dispose()
        remaining = len(srv._script)
        sent_key = [r for r in srv.chat_requests(with_image=True)
                    if r.headers.get("authorization") == f"Bearer {KEY}"]
    out, err = capfd.readouterr()

    # The error paths were really taken (the test is not vacuous) ...
    assert remaining == 0, "not every echoing answer was requested: add faces or samples"
    assert sent_key, "the client did not send the key"
    samples = Lake(str(lake)).read_partition("mc_samples", {"source": "ckplus", "batch": "secrets"})
    errors = [e for e in samples["error"].to_list() if e]
    assert any(e.startswith("http_500: ") and "***" in e for e in errors), errors
    assert any(e.startswith("http_401: ") for e in errors) and any(e.startswith("http_400: ") for e in errors)
    assert any(e.startswith("refusal: I'm sorry") for e in errors), errors
    assert any("***" in t for t in samples["raw_text"].to_list() if t)  # the refusal quoting the key
    quarantine = Lake(str(lake)).read_table("quarantine")
    assert quarantine.filter(pl.col("reason") == "parse_failed").height >= len(ECHOES) - 2
    cache_files = list((lake / "vllm_cache").rglob("*.parquet"))
    assert cache_files and any("***" in s for s in _decoded_lake(lake).values())
    step_ok = {e.step_key for e in result.all_events if e.event_type_value == "STEP_SUCCESS"}
    assert "annotate_faces" in step_ok, step_ok
    compute_logs = [p for p in home.rglob("*") if p.is_file() and p.suffix in (".out", ".err", ".complete")]

    # ... and nothing kept any piece of the key.
    found = {}
    for where, text in {**_bytes_text(lake), **_decoded_lake(lake), **_bytes_text(home),
                        "event log (serialized records)": events, "stdout": out, "stderr": err,
                        "python logs": caplog.text}.items():
        if leaks(text):
            found[where] = leaks(text)
    assert not found, found
    assert events and list(home.rglob("*.db")), "the event log was not on disk to check"
    print(f"checked {len(list(lake.rglob('*')))} lake paths, {len(compute_logs)} compute log files, "
          f"{len(events)} chars of events, {len(errors)} sample errors")


def _env_vllm():
    """The endpoint resource as the code location builds it from SEKE_VLLM_* (set by the test)."""
    from resources.settings import default_resources

    return default_resources()["annotator"].vllm
