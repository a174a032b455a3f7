"""Subprocess entry for the crash-safety test: run one batch partition on $DAGSTER_HOME.

``python -m tests.ops.crash_driver LAKE LANDING KEY [RUN_CONFIG_JSON]`` -- the annotator and endpoint come from
the environment (SEKE_ANNOTATOR, SEKE_VLLM_*), exactly as in a deployed code location.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from dagster import DagsterInstance

from tests.ops.graph_runner import run_batch


def main(lake: str, landing: str, key: str, run_config: str = "{}") -> int:
    instance = DagsterInstance.get()
    try:
        result = run_batch(instance, lake, Path(landing), key, raise_on_error=False,
                           run_config=json.loads(run_config) or None)
        return 0 if result.success else 1
    finally:
        instance.dispose()


if __name__ == "__main__":
    raise SystemExit(main(*sys.argv[1:5]))
