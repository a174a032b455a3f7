"""Deployment tags, defined once: the run-queue tags the instance limits and the Kubernetes step
configuration (``dagster-k8s/config``) of API-bound and GPU steps.

Why one module: the run queue limits runs by tag (``concurrency.runs.tag_concurrency_limits``
in infra/dagster*.yaml and the Helm values) and dagster-k8s sizes step pods from op tags. If
the tags are attached by the *definitions* — job tags on the jobs, op tags on the assets —
every launch path carries them: the UI's launchpad and asset materializations, backfills,
the sensor, the schedule and the CLI (Dagster merges a job's tags into each of its runs).
A test checks these keys against the limits in infra/.
"""

from typing import Any

#: Run tag limited per annotator backend (``vllm`` runs are few at a time; see infra/).
BACKEND_TAG = "seke/backend"
#: Run tag limited per GPU pool (one training run per GPU node pool).
GPU_TAG = "seke/gpu"
#: Label the NVIDIA GPU operator puts on GPU nodes.
GPU_NODE_LABEL = "nvidia.com/gpu.present"


def annotation_run_tags(annotator_kind: str) -> dict[str, str]:
    """Run tags of the jobs that call the annotator (``offline`` | ``vllm``)."""
    return {BACKEND_TAG: annotator_kind}


def training_run_tags() -> dict[str, str]:
    return {GPU_TAG: "train"}


def gpu_op_tags(gpus: int = 1, cpu: str = "4", memory: str = "24Gi") -> dict[str, Any]:
    """``op_tags`` of a step that needs ``gpus`` NVIDIA GPUs in its pod (dagster-k8s): the GPU
    request/limit, the GPU node selector and the usual NVIDIA taint toleration."""
    return {
        GPU_TAG: "train",
        "dagster-k8s/config": {
            "container_config": {"resources": {
                "requests": {"cpu": cpu, "memory": memory, "nvidia.com/gpu": str(gpus)},
                "limits": {"memory": memory, "nvidia.com/gpu": str(gpus)},
            }},
            "pod_spec_config": {
                "node_selector": {GPU_NODE_LABEL: "true"},
                "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
            },
        },
    }


def api_op_tags() -> dict[str, Any]:
    """``op_tags`` of steps that call a VLLM endpoint: small pods, many of them, bounded by the
    ``vllm`` concurrency pool."""
    return {"dagster-k8s/config": {
        "container_config": {"resources": {"requests": {"cpu": "250m", "memory": "512Mi"},
                                           "limits": {"memory": "2Gi"}}},
    }}
