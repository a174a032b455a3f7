"""Kubernetes execution: the step executor.

With ``SEKE_EXECUTOR=k8s`` (set in infra/helm/values.yaml) every step of a run gets its own pod
through dagster-k8s' ``k8s_job_executor``; elsewhere the default multiprocess executor is used,
so laptops and CI need no Kubernetes package. The pods' sizes (GPU steps, API steps) come from
the op tags in :mod:`resources.deployment`.
"""

from __future__ import annotations

from dagster import ExecutorDefinition, multiprocess_executor

from resources.settings import executor_kind

def step_executor(kind: str | None = None) -> ExecutorDefinition:
    """``k8s_job_executor`` when ``kind`` (default ``$SEKE_EXECUTOR``) is ``k8s``, else multiprocess."""
    kind = (kind or executor_kind()).lower()
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
