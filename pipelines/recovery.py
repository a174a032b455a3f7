"""Start-up sweep for in-process runs: fail the runs whose process died, free their pool slots.

Why: a run killed with SIGKILL (OOM killer, ``kill -9``, a closed laptop lid during ``make demo``)
never writes its failure event. It stays STARTED and keeps its ``vllm`` concurrency-pool slots,
and every later run that needs the pool waits for ever. Marking it failed does not release the
slots; only ``free_concurrency_slots_for_run`` does. Runs launched by the daemon are covered by
run monitoring (``run_monitoring`` in infra/dagster*.yaml); runs executed in-process
(``execute_in_process``: ``make demo``, CLI entry points) have no daemon watching them, so every
such entry point calls :func:`recover_dead_runs` before it starts and tags its own runs with
:func:`in_process_run_tags` (pid, host and process start time), which is what lets a later sweep
tell "still running elsewhere" from "dead".

A run is declared dead only when it carries those tags, was started on *this* host and its
process is gone (or the pid now belongs to a younger process). Untagged runs and runs of other
hosts are left to run monitoring.
"""

import logging
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path

from dagster import DagsterInstance, DagsterRunStatus, RunsFilter
from dagster._core.events import JobFailureData, RunFailureReason
from dagster._core.storage.dagster_run import FINISHED_STATUSES

log = logging.getLogger("seke.recovery")

PID_TAG = "seke/pid"
HOST_TAG = "seke/host"
#: Start time of the process (clock ticks since boot, /proc/<pid>/stat field 22): guards
#: against a recycled pid looking alive. Absent where /proc is not available.
PROCESS_START_TAG = "seke/process_start"

#: Run states a dead process can leave behind (NOT_STARTED: killed between creating the run
#: and its first event).
UNFINISHED = [DagsterRunStatus.NOT_STARTED, DagsterRunStatus.STARTING, DagsterRunStatus.STARTED,
              DagsterRunStatus.CANCELING]


def _proc_stat(pid: int) -> tuple[str, str] | None:
    """(state, start time) of ``pid`` from /proc, or None when /proc has no such process."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = raw[raw.rindex(")") + 2:].split()   # the command name may hold spaces and ")"
    return fields[0], fields[19]


def process_start(pid: int) -> str | None:
    """Start time of ``pid`` as recorded in :data:`PROCESS_START_TAG`; None without /proc."""
    if not Path("/proc/self/stat").exists():
        return None
    stat = _proc_stat(pid)
    return stat[1] if stat else None


def in_process_run_tags() -> dict[str, str]:
    """Tags for a run executed in this process, so a later sweep can tell whether it died."""
    tags = {PID_TAG: str(os.getpid()), HOST_TAG: socket.gethostname()}
    started = process_start(os.getpid())
    if started is not None:
        tags[PROCESS_START_TAG] = started
    return tags


def process_alive(pid: int, started: str | None = None) -> bool:
    """Whether ``pid`` still runs the process that was recorded (zombies count as dead)."""
    if Path("/proc/self/stat").exists():
        stat = _proc_stat(pid)
        if stat is None or stat[0] in ("Z", "X"):
            return False
        return started is None or stat[1] == started
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class RecoveryReport:
    """What a sweep did: runs marked failed, runs whose pool slots were freed."""

    failed_runs: list[str] = field(default_factory=list)
    freed_runs: list[str] = field(default_factory=list)

    def describe(self) -> str:
        if not (self.failed_runs or self.freed_runs):
            return "no dead runs"
        return (f"marked {len(self.failed_runs)} dead run(s) failed {self.failed_runs}; "
                f"freed concurrency slots of {len(self.freed_runs)} run(s) {self.freed_runs}")


def _dead_message(run_id: str, tags: dict[str, str]) -> str:
    return (f"Run {run_id} was executing in process {tags.get(PID_TAG)} on host {tags.get(HOST_TAG)}, "
            "which no longer exists (killed: SIGKILL, OOM or machine stop). Marked failed by the "
            "start-up sweep (pipelines.recovery); its concurrency-pool slots were freed. "
            "Re-run the partition: answers already in the response cache are not paid again.")


def _slot_holders(instance: DagsterInstance) -> set[str]:
    """Runs that hold or wait for a concurrency-pool slot."""
    storage = instance.event_log_storage
    run_ids = set(storage.get_concurrency_run_ids())
    for key in storage.get_concurrency_keys():
        info = storage.get_concurrency_info(key)
        run_ids.update(slot.run_id for slot in info.claimed_slots)
        run_ids.update(step.run_id for step in info.pending_steps)
    return run_ids


def recover_dead_runs(instance: DagsterInstance, host: str | None = None) -> RecoveryReport:
    """Fail this host's in-process runs whose process is dead, then free the concurrency slots of
    every run that can no longer release them (dead, finished or deleted runs).

    Safe to call while other processes run jobs on the same instance: a run is touched only when
    its recorded process is provably gone from this host.
    """
    host = host or socket.gethostname()
    report = RecoveryReport()
    for record in instance.get_run_records(RunsFilter(statuses=UNFINISHED)):
        run = record.dagster_run
        tags = run.tags
        if tags.get(HOST_TAG) != host or not tags.get(PID_TAG, "").isdigit():
            continue
        if process_alive(int(tags[PID_TAG]), tags.get(PROCESS_START_TAG)):
            continue
        instance.report_run_failed(run, _dead_message(run.run_id, tags), JobFailureData(
            error=None, failure_reason=RunFailureReason.UNEXPECTED_TERMINATION))
        report.failed_runs.append(run.run_id)

    storage = instance.event_log_storage
    if storage.supports_global_concurrency_limits:
        holders = _slot_holders(instance)
        if holders:
            runs = {r.dagster_run.run_id: r.dagster_run for r in instance.get_run_records(
                RunsFilter(run_ids=sorted(holders)))}
            for run_id in sorted(holders):
                run = runs.get(run_id)
                if run is None or run.status in FINISHED_STATUSES:  # deleted or over
                    storage.free_concurrency_slots_for_run(run_id)
                    report.freed_runs.append(run_id)
    if report.failed_runs or report.freed_runs:
        log.warning("run recovery: %s", report.describe())
    return report
