"""SIGKILL in the middle of ``mc_samples``, restart, and prove nothing is paid for or written twice.

The run goes to a real OpenAI-protocol HTTP server (tests/fake_openai_server.py, real sockets,
the real ``openai`` client) slowed down so that the kill lands after some SV-UAMC rounds were
flushed to the response cache (lake table ``vllm_cache``) and before the ``mc_samples``
partition exists. The job runs in a subprocess on a persistent SQLite instance, like a run
worker; the kill is ``SIGKILL`` (no cleanup, no flush). Then:

* restart: every sample the cache holds is a cache hit (``cache_hit`` rows == cached samples),
  and the server sees no more requests than an uninterrupted reference run plus the requests
  that were in flight at the kill;
* the final partition has exactly the rows of the reference run: no lost, no duplicated
  (face_id, round, sample_index) samples, one verified label per face;
* a third run makes 0 model calls.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest

from tests.ops.graph_runner import make_landing_batch

ROOT = Path(__file__).resolve().parents[2]
KEY = "ckplus__crash"
_PART = {"source": "ckplus", "batch": "crash"}
FACES = 5
LATENCY_S = 0.5
CONCURRENCY = 1
# Fixed-N self-consistency in rounds of k: three sample_batch rounds, so three cache flushes
# per run, and the kill can land between two of them. (With the fake server's consistent answers
# SV-UAMC would stop after one round, leaving no "between".)
RUN_CONFIG = {"ops": {"annotate_faces": {"config": {"strategy": "fixed_n", "k": 3, "fixed_n": 9}}}}

pytestmark = pytest.mark.slow


def _need_vllm_stack():
    for mod, why in (("resources.vllm", "VLLM resource"), ("seke.cache", "response cache"),
                     ("tests.fake_openai_server", "fake OpenAI server")):
        pytest.importorskip(mod, reason=f"{why} ({mod}) not on this branch yet")


def _cache_samples(lake: Path) -> set[str]:
    # Only committed Delta versions count: a write the kill interrupted is not in the log.
    from seke.lake import Lake

    frame = Lake(str(lake)).read_table("vllm_cache")
    if frame.is_empty():
        return set()
    return set(frame.filter(pl.col("kind") == "sample")["key"].to_list())


def _env(home: Path, lake: Path, landing: Path, base_url: str) -> dict[str, str]:
    return {**os.environ, "DAGSTER_HOME": str(home), "SEKE_LAKE_URI": str(lake),
            "SEKE_LANDING_DIR": str(landing), "SEKE_DUCKDB_PATH": str(lake / "warehouse.duckdb"),
            "SEKE_ANNOTATOR": "vllm", "SEKE_VLLM_BASE_URL": base_url, "SEKE_VLLM_MODEL": "fake-vl",
            "OPENAI_API_KEY": "test-key", "SEKE_VLLM_MAX_CONCURRENCY": str(CONCURRENCY),
            "SEKE_VLLM_MAX_RETRIES": "0", "PYTHONPATH": str(ROOT)}


def _driver(env: dict[str, str], lake: Path, landing: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tests.ops.crash_driver", str(lake), str(landing), KEY,
                             json.dumps(RUN_CONFIG)],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)


def _prepare(root: Path, base_url: str) -> tuple[dict, Path, Path]:
    from dagster import DagsterInstance

    from tests.ops.graph_runner import run_knowledge

    home, lake, landing = root / "home", root / "lake", root / "landing"
    home.mkdir(parents=True)
    shutil.copy(ROOT / "infra" / "dagster.yaml", home / "dagster.yaml")
    make_landing_batch(landing, *KEY.split("__"), n=FACES)
    env = _env(home, lake, landing, base_url)
    old = dict(os.environ)
    os.environ.update(env)
    try:
        instance = DagsterInstance.get()
        assert run_knowledge(instance, str(lake), landing).success
        instance.dispose()
    finally:
        os.environ.clear()
        os.environ.update(old)
    return env, lake, landing


def _run_to_end(env, lake, landing, timeout=300) -> None:
    proc = _driver(env, lake, landing)
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out.decode(errors="replace")[-4000:]


def _samples(lake: Path) -> pl.DataFrame:
    from seke.lake import Lake

    return Lake(str(lake)).read_partition("mc_samples", _PART)


def test_sigkill_mid_mc_samples_then_restart(tmp_path):
    _need_vllm_stack()
    from tests.fake_openai_server import Behaviour, FakeOpenAIServer

    with FakeOpenAIServer(Behaviour(latency_s=LATENCY_S)) as srv:
        # Reference: the same batch, uninterrupted, on its own lake and instance.
        env_ref, lake_ref, landing_ref = _prepare(tmp_path / "ref", srv.base_url)
        n0 = len(srv.chat_requests(with_image=True))
        _run_to_end(env_ref, lake_ref, landing_ref)
        ref_calls = len(srv.chat_requests(with_image=True)) - n0
        reference = _samples(lake_ref)
        assert ref_calls > 0 and reference.height >= FACES

        # Crash run: kill -9 once at least one round is flushed to the cache.
        env, lake, landing = _prepare(tmp_path / "crash", srv.base_url)
        n1 = len(srv.chat_requests(with_image=True))
        proc = _driver(env, lake, landing)
        deadline = time.monotonic() + 240
        while not _cache_samples(lake):
            assert proc.poll() is None, f"run ended before any cache flush:\n{proc.stdout.read().decode()[-3000:]}"
            assert time.monotonic() < deadline, "no cache flush within 240 s"
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
        assert proc.returncode == -signal.SIGKILL
        cached = _cache_samples(lake)
        calls_before_kill = len(srv.chat_requests(with_image=True)) - n1
        from seke.lake import Lake

        assert not Lake(str(lake)).exists("mc_samples", _PART), \
            "the kill landed after mc_samples was written; raise LATENCY_S"
        assert 0 < len(cached) < reference.height

        # Restart: the same partition again, to completion.
        n2 = len(srv.chat_requests(with_image=True))
        _run_to_end(env, lake, landing)
        calls_after = len(srv.chat_requests(with_image=True)) - n2
        final = _samples(lake)
        print(f"CRASH reference_calls={ref_calls} samples={reference.height} cached_at_kill={len(cached)} "
              f"calls_before_kill={calls_before_kill} calls_after_restart={calls_after} "
              f"cache_hits={int(final['cache_hit'].sum())}")

        # 0 duplicate model calls: every cached sample came back as a cache hit, and the two
        # attempts together cost no more than one uninterrupted run plus what was in flight.
        assert int(final["cache_hit"].sum()) == len(cached)
        assert calls_before_kill + calls_after <= ref_calls + CONCURRENCY
        assert calls_after < ref_calls

        # 0 lost / duplicated rows.
        ident = ["face_id", "round", "sample_index"]
        assert final.select(ident).is_duplicated().sum() == 0
        cols = ident + ["expression", "valence", "arousal"]
        assert final.select(cols).sort(ident).equals(reference.select(cols).sort(ident))
        from seke.lake import Lake

        store = Lake(str(lake))
        labels = store.read_partition("verified_labels", _PART)
        raw = store.read_partition("raw_faces", _PART)
        assert labels["face_id"].n_unique() == labels.height == raw.height
        assert len([f for f, p in store.files("mc_samples") if p == _PART]) == 1

        # A third run is answered entirely from the cache.
        n3 = len(srv.chat_requests(with_image=True))
        _run_to_end(env, lake, landing)
        assert len(srv.chat_requests(with_image=True)) - n3 == 0
        assert _samples(lake).height == final.height
