"""Subprocess entry for the crash-safety test: run one batch partition on $DAGSTER_HOME.

``python -m tests.ops.crash_driver LAKE LANDING KEY [RUN_CONFIG_JSON]`` -- the annotator and endpoint come from
the environment (SEKE_ANNOTATOR, SEKE_VLLM_*), exactly as in a deployed code location. Like every
in-process entry point it sweeps dead runs first and tags its run with its pid (pipelines.recovery),
so the restart after the SIGKILL also releases the killed run's `vllm` pool slot.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from dagster import DagsterInstance

from pipelines.recovery import in_process_run_tags, recover_dead_runs
from tests.ops.graph_runner import run_batch


def main(lake: str, landing: str, key: str, run_config: str = "{}") -> int:
    instance = DagsterInstance.get()
    try:
        recover_dead_runs(instance)
        result = run_batch(instance, lake, Path(landing), key, raise_on_error=False,
                           tags=in_process_run_tags(), run_config=json.loads(run_config) or None)
        return 0 if result.success else 1
    finally:
        instance.dispose()


if __name__ == "__main__":
    raise SystemExit(main(*sys.argv[1:5]))
