"""Device tensor helpers shared by the training loop and the evaluator (so neither imports
the other): the autocast dtype of a recipe on a device, and uint8 faces moved to the device."""

from __future__ import annotations

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
    return None


def to_device_images(images: np.ndarray, size: int, device: str) -> torch.Tensor:
    """(N, S, S) uint8 → (N, 1, size, size) uint8 on ``device`` (resized once if needed)."""
    t = torch.from_numpy(np.ascontiguousarray(images)).unsqueeze(1).to(device)
    if t.shape[-1] != size:
        chunks = [F.interpolate(c.float(), size=(size, size), mode="bilinear", antialias=True,
                                align_corners=False).round_().clamp_(0, 255).to(torch.uint8)
                  for c in torch.split(t, 4096)]
        t = torch.cat(chunks) if chunks else t.new_zeros((0, 1, size, size))
    return t
