"""Device tensor helpers shared by the training loop and the evaluator (so neither imports
the other): the autocast dtype and memory format of a recipe on a device, and uint8 faces moved
to the device.

Why channels_last on CPUs too, and bf16 on CPUs with AMX: channels_last avoids layout reorders
around every convolution; AMX tiles run bf16 convolutions far faster than fp32, while on a CPU
with AVX512-BF16 but no AMX bf16 gained nothing over fp32 channels_last. Measured with
``bench/train_throughput.py --recipe compact`` (interleaved variants, same run) on 2 cores on
2026-12-02: with AMX (Sapphire Rapids) bf16 channels_last 827 images/s vs fp32 contiguous 373;
without AMX fp32 channels_last 466, bf16 channels_last 445, fp32 contiguous 298.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from seke.train.config import TrainConfig


def amp_dtype(cfg: TrainConfig, device: str) -> torch.dtype | None:
    """The autocast dtype for this recipe on this device, or None for fp32."""
    if cfg.amp == "off":
        return None
    if cfg.amp == "bf16":
        return torch.bfloat16
    if cfg.amp == "fp16":
        return torch.float16
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if cpu_has_amx_bf16() else None


def cpu_has_amx_bf16() -> bool:
    """Whether this CPU has AMX bf16 tiles (and oneDNN bf16 kernels): only there does bf16
    autocast train the compact net faster than fp32 (see the module docstring), so only there
    does ``amp="auto"`` pick it on a CPU. Read from the Linux CPU flags; False elsewhere."""
    try:
        if not (torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()):
            return False
        return "amx_bf16" in Path("/proc/cpuinfo").read_text().split()
    except (AttributeError, RuntimeError, OSError):
        return False


def memory_format(cfg: TrainConfig) -> torch.memory_format:
    """channels_last when the recipe asks for it (faster convolutions on GPUs and on CPUs)."""
    return torch.channels_last if cfg.channels_last else torch.contiguous_format


def to_device_images(images: np.ndarray, size: int, device: str) -> torch.Tensor:
    """(N, S, S) uint8 → (N, 1, size, size) uint8 on ``device`` (resized once if needed)."""
    t = torch.from_numpy(np.ascontiguousarray(images)).unsqueeze(1).to(device)
    if t.shape[-1] != size:
        chunks = [F.interpolate(c.float(), size=(size, size), mode="bilinear", antialias=True,
                                align_corners=False).round_().clamp_(0, 255).to(torch.uint8)
                  for c in torch.split(t, 4096)]
        t = torch.cat(chunks) if chunks else t.new_zeros((0, 1, size, size))
    return t
