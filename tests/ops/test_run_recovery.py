"""kill -9 of a run holding the `vllm` pool slot, then the next run recovers by itself.

Both runs go through the demo's code path (:func:`pipelines.ingest.run_batch`, in a subprocess
like ``make demo``) on a persistent SQLite instance made from infra/dagster.yaml with the
``vllm`` pool limited to 1 slot. The first run talks to a local OpenAI-protocol server that
answers slowly, so it is SIGKILLed while ``annotate_faces`` holds the only slot. Before the
fix the killed run stayed STARTED holding the slot and every later run waited for ever; now
the next run's start-up sweep (pipelines/recovery.py) sees the dead pid, marks the run
FAILURE, frees its slot, and the new run claims the slot and succeeds, with no manual step.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from seke.lake import Lake

from tests.fake_openai_server import Behaviour, FakeOpenAIServer
from tests.ops.graph_runner import make_landing_batch

ROOT = Path(__file__).resolve().parents[2]
KEY = "ckplus__recover"
POOL = "vllm"


def _instance(home: Path):
    from dagster import DagsterInstance

    old = os.environ.get("DAGSTER_HOME")
    os.environ["DAGSTER_HOME"] = str(home)
    try:
        return DagsterInstance.get()
    finally:
        if old is None:
            os.environ.pop("DAGSTER_HOME")
        else:
            os.environ["DAGSTER_HOME"] = old


def _driver(env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tests.ops.demo_driver", KEY], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)


def test_sigkilled_run_holding_the_vllm_slot_does_not_block_the_next_run(tmp_path):
    from dagster import DagsterRunStatus, RunsFilter

    home, lake, landing = tmp_path / "home", tmp_path / "lake", tmp_path / "landing"
    home.mkdir()
    shutil.copy(ROOT / "infra" / "dagster.yaml", home / "dagster.yaml")
    make_landing_batch(landing, *KEY.split("__"), n=2)
    instance = _instance(home)
    instance.event_log_storage.set_concurrency_slots(POOL, 1)
    storage = instance.event_log_storage

    def holders() -> set[str]:
        return {s.run_id for s in storage.get_concurrency_info(POOL).claimed_slots}

    with FakeOpenAIServer(Behaviour(latency_s=120.0)) as srv:   # no answer before the kill
        env = {**os.environ, "DAGSTER_HOME": str(home), "SEKE_LAKE_URI": str(lake),
               "SEKE_LANDING_DIR": str(landing), "SEKE_DUCKDB_PATH": str(lake / "warehouse.duckdb"),
               "SEKE_ANNOTATOR": "vllm", "SEKE_VLLM_BASE_URL": srv.base_url, "SEKE_VLLM_MODEL": "fake-vl",
               "OPENAI_API_KEY": "test-key", "SEKE_VLLM_MAX_RETRIES": "0", "SEKE_VLLM_TIMEOUT_S": "300",
               "PYTHONPATH": str(ROOT)}
        first = _driver(env)
        deadline = time.monotonic() + 240
        while not holders():
            assert first.poll() is None, first.stdout.read().decode(errors="replace")[-3000:]
            assert time.monotonic() < deadline, "annotate_faces never claimed the vllm slot"
            time.sleep(0.1)
        (dead,) = holders()
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(30)
        assert first.returncode == -signal.SIGKILL
        # The state the bug left behind: the dead run is STARTED and owns the only slot.
        assert instance.get_run_by_id(dead).status == DagsterRunStatus.STARTED
        assert holders() == {dead}

        srv.behaviour.latency_s = 0.0
        second = _driver(env)
        try:
            out, _ = second.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            os.killpg(second.pid, signal.SIGKILL)
            pytest.fail("the run after the kill did not finish: still blocked on the vllm pool?")
    text = out.decode(errors="replace")
    assert second.returncode == 0, text[-4000:]
    assert "recovery: marked 1 dead run(s) failed" in text and dead in text, text[-2000:]

    dead_run = instance.get_run_by_id(dead)
    assert dead_run.status == DagsterRunStatus.FAILURE
    failure = [e for e in instance.all_logs(dead) if e.is_dagster_event
               and e.dagster_event.event_type_value == "PIPELINE_FAILURE"]
    assert failure and "no longer exists" in failure[0].message
    after = [r for r in instance.get_runs(RunsFilter(job_name="annotate_batch")) if r.run_id != dead]
    assert [r.status for r in after] == [DagsterRunStatus.SUCCESS]
    assert after[0].tags["seke/pid"] == str(second.pid)
    assert holders() == set()
    assert Lake(str(lake)).exists("mc_samples", {"source": "ckplus", "batch": "recover"})
    instance.dispose()
