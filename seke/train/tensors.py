"""Device tensor helpers shared by the training loop and the evaluator (so neither imports
the other): the autocast dtype and memory format of a recipe on a device, and uint8 faces moved
to the device.

Why bf16 and channels_last on CPUs too: on a CPU with native bf16 (AMX / AVX512-BF16, e.g.
Sapphire Rapids) oneDNN runs the compact net's convolutions ~2x faster in bf16 under autocast, and
channels_last avoids layout reorders around every convolution. ``bench/train_throughput.py
--recipe compact`` measures each step of that change against the fp32 contiguous baseline.
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
    return torch.bfloat16 if cpu_has_native_bf16() else None


def cpu_has_native_bf16() -> bool:
    """Whether oneDNN has bf16 kernels for this CPU (AVX512-BF16 or AMX). Without them bf16
    autocast on a CPU is emulated and slower than fp32, so ``amp="auto"`` stays fp32 there."""
    try:
        if not (torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()):
            return False
    except (AttributeError, RuntimeError):
        return False
    # oneDNN also "supports" bf16 on plain AVX512 by emulation; ask the CPU flags where Linux shows them
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return True
    return "avx512_bf16" in flags or "amx_bf16" in flags


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
