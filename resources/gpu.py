"""Compute resource for training: CUDA when present, else CPU (with a log line that says so).

The science (device choice, device facts) lives in :mod:`seke.train.device`; this resource is
the Dagster face of it plus the Kubernetes hints for running the same asset on a GPU node of
the scale-out deployment (``dagster-k8s/config`` op tags: a ``nvidia.com/gpu`` request/limit,
a node selector and the usual NVIDIA taint toleration). torch is imported lazily, so this
module imports — and the rest of the platform runs — without the ``train`` extra.
"""

from __future__ import annotations

import logging
from typing import Any

from dagster import ConfigurableResource, MetadataValue
from pydantic import Field

from seke.train.device import device_info, pick_device, torch_available

log = logging.getLogger(__name__)


def k8s_gpu_tags(gpus: int = 1, cpu: str = "4", memory: str = "24Gi",
                 node_selector: dict[str, str] | None = None,
                 tolerate_gpu_taint: bool = True) -> dict[str, Any]:
    """``op_tags`` for an asset that must run in a pod with ``gpus`` NVIDIA GPUs (dagster-k8s).

    The default node selector is the label the NVIDIA GPU operator / GPU feature discovery
    puts on GPU nodes; override it for a cluster that labels its GPU pool differently.
    """
    selector = node_selector if node_selector is not None else {"nvidia.com/gpu.present": "true"}
    pod_spec: dict[str, Any] = {"node_selector": selector}
    if tolerate_gpu_taint:
        pod_spec["tolerations"] = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    return {"dagster-k8s/config": {
        "container_config": {"resources": {
            "requests": {"cpu": cpu, "memory": memory, "nvidia.com/gpu": str(gpus)},
            "limits": {"memory": memory, "nvidia.com/gpu": str(gpus)},
        }},
        "pod_spec_config": pod_spec,
    }}


class GPUResource(ConfigurableResource):
    """Where training runs. ``device="auto"`` takes CUDA when torch sees a GPU, else the CPU."""

    device: str = Field(default="auto", description="auto | cpu | cuda | cuda:N")
    gpus: int = Field(default=1, description="GPUs requested from Kubernetes (k8s_tags)")
    node_selector: dict[str, str] = Field(default_factory=lambda: {"nvidia.com/gpu.present": "true"},
                                          description="Kubernetes node selector for GPU nodes")

    def available(self) -> bool:
        """Whether torch (the ``train`` extra) is installed at all."""
        return torch_available()

    def select(self, logger: Any = None) -> str:
        """The torch device string to train on; logs the choice (CPU fallback said clearly)."""
        say = (logger.info if logger is not None else log.info)
        if not torch_available():
            raise RuntimeError("training needs PyTorch: pip install '.[train]' (torch==2.13.0)")
        return pick_device(self.device, say=say)

    def info(self, device: str | None = None) -> dict[str, Any]:
        """torch version, device name, memory — for asset metadata."""
        return device_info(device)

    def metadata(self, device: str | None = None) -> dict[str, MetadataValue]:
        info = self.info(device)
        out: dict[str, MetadataValue] = {"device_info": MetadataValue.json(info)}
        out["device"] = MetadataValue.text(str(info.get("device")))
        if info.get("device_name"):
            out["device_name"] = MetadataValue.text(str(info["device_name"]))
        if info.get("memory_gib") is not None:
            out["device_memory_gib"] = MetadataValue.float(float(info["memory_gib"]))
        out["torch_version"] = MetadataValue.text(str(info.get("torch")))
        return out

    def k8s_tags(self) -> dict[str, Any]:
        return k8s_gpu_tags(gpus=self.gpus, node_selector=dict(self.node_selector))
