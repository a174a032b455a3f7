"""Device tensor helpers shared by the training loop and the evaluator (so neither imports
the other): the autocast dtype and memory format of a recipe on a device, and uint8 faces moved
to the device.

Why channels_last on CPUs too, and bf16 on CPUs with AMX or AMD's AVX512-BF16: channels_last
avoids layout reorders around every convolution; AMX tiles run bf16 convolutions far faster
than fp32, and so do AMD EPYC's AVX512-BF16 dot products, while on an Intel CPU with
AVX512-BF16 but no AMX bf16 gained nothing over fp32 channels_last. Measured with
``bench/train_throughput.py --recipe compact`` (interleaved variants, same run) on 2 cores on
2026-12-02: with AMX (Sapphire Rapids) bf16 channels_last 827 images/s vs fp32 contiguous 373;
Intel without AMX fp32 channels_last 466, bf16 channels_last 445, fp32 contiguous 298; AMD
EPYC with AVX512-BF16 bf16 channels_last 690, fp32 channels_last 486, fp32 contiguous 286.
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
    return torch.bfloat16 if cpu_bf16_is_faster() else None


def cpu_bf16_is_faster() -> bool:
    """Whether bf16 autocast trains the compact net faster than fp32 on this CPU (see the
    module docstring), i.e. whether ``amp="auto"`` picks it on a CPU: oneDNN bf16 kernels and
    either AMX bf16 tiles or AVX512-BF16 on an AMD CPU. Read from the Linux CPU flags; False
    elsewhere."""
    try:
        if not (torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()):
            return False
        return bf16_is_faster_for(Path("/proc/cpuinfo").read_text())
    except (AttributeError, RuntimeError, OSError):
        return False


def bf16_is_faster_for(cpuinfo: str) -> bool:
    """The rule of :func:`cpu_bf16_is_faster` on the text of ``/proc/cpuinfo``."""
    words = set(cpuinfo.split())
    return "amx_bf16" in words or ("avx512_bf16" in words and "AuthenticAMD" in words)


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
