"""Subprocess entry for the recovery test: ``python -m tests.ops.demo_driver KEY``.

Runs partition ``KEY`` exactly as ``make demo`` does (:func:`pipelines.ingest.run_batch`: recovery
sweep, then the in-process, pid-tagged runs) on the instance in ``$DAGSTER_HOME``; lake, landing
zone and annotator come from the environment like in a deployed code location.
"""

import sys

from dagster import DagsterInstance

from pipelines.ingest import run_batch


def main(key: str) -> int:
    instance = DagsterInstance.get()
    try:
        return 0 if run_batch(instance, key) else 1
    finally:
        instance.dispose()


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1]))
