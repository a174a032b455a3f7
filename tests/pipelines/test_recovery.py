"""pipelines.recovery on a real SQLite instance: which runs the start-up sweep fails and frees.

Runs are written straight into run storage (no job executes) and hold real ``vllm`` pool slots
claimed through the event-log storage, so every case is a few milliseconds. The end-to-end
SIGKILL case is tests/ops/test_run_recovery.py.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid

import pytest
from dagster import DagsterInstance, DagsterRunStatus
from dagster._core.storage.dagster_run import DagsterRun

from pipelines.recovery import (HOST_TAG, PID_TAG, PROCESS_START_TAG, in_process_run_tags,
                                process_alive, recover_dead_runs)

POOL = "vllm"


@pytest.fixture
def instance(tmp_path):
    inst = DagsterInstance.local_temp(str(tmp_path))
    inst.event_log_storage.set_concurrency_slots(POOL, 1)
    yield inst
    inst.dispose()


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def add_run(instance: DagsterInstance, status: DagsterRunStatus, tags: dict[str, str],
            slot: bool = True) -> str:
    run_id = str(uuid.uuid4())
    instance.add_run(DagsterRun(job_name="annotate_batch", run_id=run_id, status=status, tags=tags))
    if slot:
        claim = instance.event_log_storage.claim_concurrency_slot(POOL, run_id, "annotate_faces")
        assert claim.is_claimed
    return run_id


def holders(instance: DagsterInstance) -> set[str]:
    return {s.run_id for s in instance.event_log_storage.get_concurrency_info(POOL).claimed_slots}


def status(instance: DagsterInstance, run_id: str) -> DagsterRunStatus:
    return instance.get_run_by_id(run_id).status


def test_tags_describe_this_process():
    tags = in_process_run_tags()
    assert tags[PID_TAG] == str(os.getpid()) and tags[HOST_TAG] == socket.gethostname()
    assert process_alive(os.getpid(), tags.get(PROCESS_START_TAG))
    assert not process_alive(dead_pid())
    if PROCESS_START_TAG in tags:  # a recycled pid (same number, younger process) is not the run's
        assert not process_alive(os.getpid(), str(int(tags[PROCESS_START_TAG]) + 1))


def test_dead_process_run_is_failed_and_its_slot_freed(instance):
    run_id = add_run(instance, DagsterRunStatus.STARTED, {**in_process_run_tags(), PID_TAG: str(dead_pid())})
    assert holders(instance) == {run_id}
    report = recover_dead_runs(instance)
    assert report.failed_runs == [run_id] and report.freed_runs == [run_id]
    assert status(instance, run_id) == DagsterRunStatus.FAILURE
    failure = [e for e in instance.all_logs(run_id) if e.is_dagster_event
               and e.dagster_event.event_type_value == "PIPELINE_FAILURE"]
    assert failure and "no longer exists" in failure[0].message
    assert holders(instance) == set()
    assert instance.event_log_storage.claim_concurrency_slot(POOL, "next-run", "annotate_faces").is_claimed


def test_live_foreign_and_untagged_runs_are_left_alone(instance):
    instance.event_log_storage.set_concurrency_slots(POOL, 3)
    alive = add_run(instance, DagsterRunStatus.STARTED, in_process_run_tags())
    other_host = add_run(instance, DagsterRunStatus.STARTED,
                         {PID_TAG: str(dead_pid()), HOST_TAG: "some-other-host"})
    daemon_launched = add_run(instance, DagsterRunStatus.STARTED, {})
    report = recover_dead_runs(instance)
    assert report.failed_runs == [] and report.freed_runs == []
    assert {status(instance, r) for r in (alive, other_host, daemon_launched)} == {DagsterRunStatus.STARTED}
    assert holders(instance) == {alive, other_host, daemon_launched}


def test_slots_of_finished_and_unknown_runs_are_freed(instance):
    instance.event_log_storage.set_concurrency_slots(POOL, 3)
    failed = add_run(instance, DagsterRunStatus.FAILURE, {})       # e.g. marked failed by hand
    done = add_run(instance, DagsterRunStatus.SUCCESS, {})
    unknown = str(uuid.uuid4())   # a slot whose run is not in run storage (e.g. storage wiped)
    assert instance.event_log_storage.claim_concurrency_slot(POOL, unknown, "annotate_faces").is_claimed
    report = recover_dead_runs(instance)
    assert report.failed_runs == [] and sorted(report.freed_runs) == sorted([failed, done, unknown])
    assert holders(instance) == set()
