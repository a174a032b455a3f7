"""Kubernetes execution: the step executor and the GPU tags for training steps.

With ``SEKE_EXECUTOR=k8s`` (set in infra/helm/values.yaml) every step of a run gets its own pod
through dagster-k8s' ``k8s_job_executor``; elsewhere the default multiprocess executor is used,
so laptops and CI need no Kubernetes package. Training steps carry :data:`GPU_STEP_TAGS`: the
``dagster-k8s/config`` tag asks for one ``nvidia.com/gpu`` and pins the pod to GPU nodes; the
``seke/gpu`` tag is what the run queue limits (one run per GPU pool, infra/dagster.postgres.yaml).
"""

from __future__ import annotations

import os
from typing import Any

from dagster import ExecutorDefinition, multiprocess_executor

GPU_NODE_LABEL = "nvidia.com/gpu.present"

GPU_STEP_TAGS: dict[str, Any] = {
    "seke/gpu": "train",
    "dagster-k8s/config": {
        "container_config": {
            "resources": {
                "requests": {"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": "1"},
                "limits": {"memory": "32Gi", "nvidia.com/gpu": "1"},
            },
        },
        "pod_spec_config": {
            "node_selector": {GPU_NODE_LABEL: "true"},
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists",
                             "effect": "NoSchedule"}],
        },
    },
}

# Steps that call a VLLM endpoint: small pods, many of them, bounded by the `vllm` pool.
API_STEP_TAGS: dict[str, Any] = {
    "dagster-k8s/config": {
        "container_config": {"resources": {"requests": {"cpu": "250m", "memory": "512Mi"},
                                           "limits": {"memory": "2Gi"}}},
    },
}


def step_executor(kind: str | None = None) -> ExecutorDefinition:
    """``k8s_job_executor`` when ``kind`` (default ``$SEKE_EXECUTOR``) is ``k8s``, else multiprocess."""
    kind = (kind or os.environ.get("SEKE_EXECUTOR", "multiprocess")).lower()
    if kind == "k8s":
        try:
            from dagster_k8s import k8s_job_executor
        except ImportError as exc:  # the image installs the `k8s` extra
            raise RuntimeError("SEKE_EXECUTOR=k8s needs dagster-k8s: pip install '.[k8s]'") from exc
        return k8s_job_executor.configured({"max_concurrent": 32, "step_k8s_config": {
            "container_config": {"resources": {"requests": {"cpu": "500m", "memory": "1Gi"}}}}})
    if kind in ("multiprocess", "default"):
        return multiprocess_executor
    raise ValueError(f"SEKE_EXECUTOR must be 'k8s' or 'multiprocess', got {kind!r}")
