"""Two runs of the same partition at the same time (two processes, one persistent instance,
one lake): both succeed, and every table ends with one consistent version of the partition.

Before the Delta lake, concurrent writers of one partition deleted each other's temp files
(49 of 120 writes failed). Now each write is one Delta commit; a writer that loses a race
retries on the new version, so there is no failed write and no mixed or doubled partition.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl

from seke.lake import Lake
from tests.ops.graph_runner import make_landing_batch

ROOT = Path(__file__).resolve().parents[2]
KEY = "ckplus__twice"
PART = {"source": "ckplus", "batch": "twice"}


def test_two_concurrent_runs_of_one_partition(tmp_path):
    home, lake_dir, landing = tmp_path / "home", tmp_path / "lake", tmp_path / "landing"
    home.mkdir()
    shutil.copy(ROOT / "infra" / "dagster.yaml", home / "dagster.yaml")
    make_landing_batch(landing, *KEY.split("__"), n=4)
    _prepare_instance(home)   # a deployment's instance exists before its runs (SQLite schema)
    env = {**os.environ, "DAGSTER_HOME": str(home), "SEKE_LAKE_URI": str(lake_dir),
           "SEKE_LANDING_DIR": str(landing), "SEKE_DUCKDB_PATH": str(lake_dir / "warehouse.duckdb"),
           "SEKE_ANNOTATOR": "offline", "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-m", "tests.ops.demo_driver", KEY], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for _ in range(2)]
    outs = [p.communicate(timeout=600)[0].decode(errors="replace") for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n".join(o[-3000:] for o in outs)

    lake = Lake(str(lake_dir))
    faces = lake.read_partition("raw_faces", PART)
    assert faces.height >= 4 and faces["face_id"].n_unique() == faces.height
    for table in ("raw_faces", "knowledge_prompts", "mc_samples", "verified_labels", "feid", "feab"):
        rows = lake.read_partition(table, PART).height
        assert len([f for f, p in lake.files(table) if p == PART]) == (1 if rows else 0), table  # one live file
        history = lake.delta_table(table).history()
        writes = [h for h in history if h["operation"] == "WRITE"]
        assert len(writes) == 2, (table, [h["operation"] for h in history])     # both runs committed
    labels = lake.read_partition("verified_labels", PART)
    assert sorted(labels["face_id"]) == sorted(faces["face_id"])              # no doubled rows
    feid, feab = lake.read_table("feid"), lake.read_table("feab")
    accepted = set(labels.filter(pl.col("status") == "accepted")["face_id"])
    assert set(feid["face_id"]) <= accepted and not set(feid["face_id"]) & set(feab["face_id"])
    for table in ("knowledge_current",):                                         # unpartitioned too
        assert lake.read_table(table).height == 1


def _prepare_instance(home: Path) -> None:
    from dagster import DagsterInstance

    old = os.environ.get("DAGSTER_HOME")
    os.environ["DAGSTER_HOME"] = str(home)
    try:
        with DagsterInstance.get() as instance:
            instance.get_runs(limit=1)
    finally:
        if old is None:
            os.environ.pop("DAGSTER_HOME")
        else:
            os.environ["DAGSTER_HOME"] = old
