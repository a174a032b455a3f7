"""GPU resource: device choice (CPU here), metadata, Kubernetes hints."""

from __future__ import annotations

import logging

import pytest

from resources.deployment import GPU_TAG, gpu_op_tags
from resources.gpu import GPUResource


def test_gpu_op_tags_request_a_gpu_on_a_gpu_node():
    tags = gpu_op_tags(gpus=2)
    cfg = tags["dagster-k8s/config"]
    assert cfg["container_config"]["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert cfg["container_config"]["resources"]["requests"]["nvidia.com/gpu"] == "2"
    assert cfg["pod_spec_config"]["node_selector"] == {"nvidia.com/gpu.present": "true"}
    assert tags[GPU_TAG] == "train"


def test_cpu_fallback_is_logged_and_reported(caplog):
    pytest.importorskip("torch")
    import torch

    gpu = GPUResource()
    with caplog.at_level(logging.INFO):
        device = gpu.select(logging.getLogger("test"))
    if torch.cuda.is_available():
        assert device.startswith("cuda")
    else:
        assert device == "cpu"
        assert "no CUDA GPU" in caplog.text
    meta = gpu.metadata(device)
    assert meta["torch_version"].value == torch.__version__
    assert meta["device_info"].value["device"] == device


def test_explicit_cuda_without_gpu_fails_clearly():
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(RuntimeError, match="sees no CUDA GPU"):
        GPUResource(device="cuda").select()
