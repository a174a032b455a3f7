"""The documented headless backfill: ``dagster job backfill -w workspace.yaml …`` submitted from
the CLI and executed by a real ``dagster-daemon`` (queued run coordinator) on a temp instance."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.ops.graph_runner import make_landing_batch, require_full_graph

ROOT = Path(__file__).resolve().parents[2]
KEYS = ["ckplus__cli1", "ckplus__cli2"]
BIN = Path(sys.executable).parent

pytestmark = pytest.mark.slow


def _cli(args: list[str], env: dict, timeout: int = 300) -> str:
    out = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"{args}\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}"
    return out.stdout


def test_cli_backfill_runs_through_the_daemon(tmp_path, monkeypatch):
    require_full_graph()
    from dagster import DagsterInstance, DagsterRunStatus, RunsFilter

    home, lake, landing = tmp_path / "home", tmp_path / "lake", tmp_path / "landing"
    home.mkdir()
    shutil.copy(ROOT / "infra" / "dagster.yaml", home / "dagster.yaml")
    for k in KEYS:
        make_landing_batch(landing, *k.split("__"), n=2)
    env = {**os.environ, "DAGSTER_HOME": str(home), "SEKE_LAKE_URI": str(lake),
           "SEKE_LANDING_DIR": str(landing), "SEKE_DUCKDB_PATH": str(lake / "warehouse.duckdb"),
           "GX_ANALYTICS_ENABLED": "false", "PYTHONPATH": str(ROOT)}
    _cli([str(BIN / "python"), "-c", "from dagster import DagsterInstance as I; "
          f"I.get().add_dynamic_partitions('batches', {KEYS!r})"], env)
    _cli([str(BIN / "dagster"), "asset", "materialize", "-m", "pipelines.definitions",
          "--select", "knowledge"], env)

    log = open(tmp_path / "daemon.log", "wb")
    daemon = subprocess.Popen([str(BIN / "dagster-daemon"), "run", "-w", "workspace.yaml"], cwd=ROOT,
                              env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _cli([str(BIN / "dagster"), "job", "backfill", "-w", "workspace.yaml", "-j", "annotate_batch",
              "--partitions", ",".join(KEYS), "--noprompt"], env)   # no tags: the job attaches them
        monkeypatch.setenv("DAGSTER_HOME", str(home))
        deadline = time.monotonic() + 420
        while True:
            with DagsterInstance.get() as instance:
                runs = instance.get_runs(RunsFilter(job_name="annotate_batch"))
                backfills = instance.get_backfills()
            done = [r for r in runs if r.status in (DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE,
                                                    DagsterRunStatus.CANCELED)]
            if len(done) == len(KEYS):
                break
            assert daemon.poll() is None, (tmp_path / "daemon.log").read_text()[-3000:]
            assert time.monotonic() < deadline, (
                f"runs {[(r.tags.get('dagster/partition'), r.status) for r in runs]}; daemon log:\n"
                + (tmp_path / "daemon.log").read_text()[-3000:])
            time.sleep(2)
    finally:
        os.killpg(daemon.pid, signal.SIGTERM)
        try:
            daemon.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(daemon.pid, signal.SIGKILL)
    assert len(backfills) == 1
    assert sorted(r.tags["dagster/partition"] for r in runs) == sorted(KEYS)
    assert all(r.status == DagsterRunStatus.SUCCESS for r in runs), [(r.run_id, r.status) for r in runs]
    assert all(r.tags.get("dagster/backfill") == backfills[0].backfill_id for r in runs)
    assert all(r.tags.get("seke/backend") == "offline" for r in runs)   # the run queue's tag, from the job
    from seke.lake import Lake
    for k in KEYS:
        batch = k.split("__")[1]
        assert Lake(str(lake)).exists("verified_labels", {"source": "ckplus", "batch": batch})
