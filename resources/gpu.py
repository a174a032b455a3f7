"""Compute resource for training: CUDA when present, else CPU (with a log line that says so).

The science (device choice, device facts) lives in :mod:`seke.train.device`; this resource is
the Dagster face of it. Where a training step runs on Kubernetes (a GPU request, node selector,
toleration) is fixed by its op tags, :func:`resources.deployment.gpu_op_tags`. torch is
imported lazily, so this module imports — and the rest of the platform runs — without the
``train`` extra.
"""

from __future__ import annotations

import logging
from typing import Any

from dagster import ConfigurableResource, MetadataValue
from pydantic import Field

from seke.train.device import device_info, pick_device, torch_available

log = logging.getLogger(__name__)


class GPUResource(ConfigurableResource):
    """Where training runs. ``device="auto"`` takes CUDA when torch sees a GPU, else the CPU."""

    device: str = Field(default="auto", description="auto | cpu | cuda | cuda:N")

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
