"""Run-queue and Kubernetes tags come from one module, are attached by the definitions, and
match the limits the shipped instance configurations set."""

import json
from pathlib import Path

import yaml

from resources.deployment import BACKEND_TAG, GPU_TAG, gpu_op_tags

ROOT = Path(__file__).resolve().parents[2]


def _limited_keys(path: Path) -> set[str]:
    cfg = yaml.safe_load(path.read_text())
    runs = cfg.get("concurrency", {}).get("runs", {})
    return {limit["key"] for limit in runs.get("tag_concurrency_limits", [])}


def _helm_limited_keys() -> set[str]:
    text = (ROOT / "infra" / "helm" / "values.yaml").read_text()
    return {line.split("key:")[1].strip() for line in text.splitlines() if "- key:" in line}


def test_infra_limits_the_tags_the_definitions_attach():
    assert BACKEND_TAG in _limited_keys(ROOT / "infra" / "dagster.yaml")
    assert {BACKEND_TAG, GPU_TAG} <= _limited_keys(ROOT / "infra" / "dagster.postgres.yaml")
    assert {BACKEND_TAG, GPU_TAG} <= _helm_limited_keys()


def test_jobs_and_assets_carry_the_tags():
    from pipelines.definitions import defs

    for job in ("annotate_batch", "vllm_backfill"):
        assert BACKEND_TAG in defs.resolve_job_def(job).tags, job
    assert defs.resolve_job_def("train_models").tags[GPU_TAG] == "train"
    graph = defs.resolve_asset_graph()
    for key in ("trained_model", "trained_model_human_only"):
        node = graph.get(__import__("dagster").AssetKey(key))
        tag = node.assets_def.op.tags["dagster-k8s/config"]
        assert (json.loads(tag) if isinstance(tag, str) else tag) == gpu_op_tags()["dagster-k8s/config"]


def test_a_run_launched_like_the_ui_carries_the_backend_tag(monkeypatch):
    """The UI launches a job through this GraphQL mutation, with no tags of its own here: the
    run still carries the run-queue tag, because the job definition attaches it. (Backfills:
    tests/ops/test_cli_backfill.py submits one without tags and checks its runs.)"""
    from dagster._core.test_utils import instance_for_test
    from dagster._core.workspace.context import WorkspaceProcessContext
    from dagster._core.workspace.load_target import WorkspaceFileTarget
    from dagster_graphql.test.utils import execute_dagster_graphql

    monkeypatch.setenv("SEKE_ANNOTATOR", "offline")
    queued = {"run_coordinator": {"module": "dagster._core.run_coordinator", "class": "QueuedRunCoordinator"}}
    with instance_for_test(overrides=queued) as instance:   # queued, never executed: no daemon here
        instance.add_dynamic_partitions("batches", ["demo__ui"])
        with WorkspaceProcessContext(instance, WorkspaceFileTarget([str(ROOT / "workspace.yaml")])) as wpc:
            ctx = wpc.create_request_context()
            loc = next(iter(ctx.get_code_location_entries()))
            selector = {"repositoryLocationName": loc, "repositoryName": "__repository__",
                        "pipelineName": "annotate_batch"}
            launched = execute_dagster_graphql(ctx, LAUNCH, variables={"executionParams": {
                "selector": selector, "mode": "default",
                "executionMetadata": {"tags": [{"key": "dagster/partition", "value": "demo__ui"}]}}})
            assert launched.data["launchPipelineExecution"]["__typename"] == "LaunchRunSuccess", launched.data
            run_id = launched.data["launchPipelineExecution"]["run"]["runId"]
        assert instance.get_run_by_id(run_id).tags[BACKEND_TAG] == "offline"


LAUNCH = """
mutation($executionParams: ExecutionParams!) {
  launchPipelineExecution(executionParams: $executionParams) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
    ... on InvalidStepError { invalidStepKey }
    ... on RunConfigValidationInvalid { errors { message } }
  }
}
"""
