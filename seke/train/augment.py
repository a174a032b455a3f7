"""Batch augmentation on the training device (no CPU workers, no torchvision).

The whole training set lives on the device as uint8; each step gathers a batch and augments it
with a few batched kernels: one affine warp (rotation, scale, translation, horizontal flip,
reflection padding), brightness/contrast jitter and random erasing (Zhong et al. 2020). This
keeps an H100 fed without a DataLoader (decoding 48×48 JPEGs per step would bottleneck it),
and draws every random number from one seeded generator, so runs repeat.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from seke.train.config import TrainConfig


def _uniform(n: int, lo: float, hi: float, g: torch.Generator, device: torch.device) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=g, device=device)


def augment(x: torch.Tensor, cfg: TrainConfig, g: torch.Generator) -> torch.Tensor:
    """(B, 1, S, S) float in [0, 1] → augmented batch of the same shape and range."""
    b, dev = x.shape[0], x.device
    angle = _uniform(b, -cfg.aug_rotate_deg, cfg.aug_rotate_deg, g, dev) * (math.pi / 180.0)
    scale = _uniform(b, cfg.aug_scale[0], cfg.aug_scale[1], g, dev)
    flip = torch.where(torch.rand(b, generator=g, device=dev) < 0.5, -1.0, 1.0) if cfg.aug_flip \
        else torch.ones(b, device=dev)
    tx = _uniform(b, -2 * cfg.aug_translate, 2 * cfg.aug_translate, g, dev)
    ty = _uniform(b, -2 * cfg.aug_translate, 2 * cfg.aug_translate, g, dev)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos * flip, -sin, tx], 1),
                         torch.stack([sin * flip, cos, ty], 1)], 1)
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    if cfg.aug_brightness or cfg.aug_contrast:
        bright = _uniform(b, 1 - cfg.aug_brightness, 1 + cfg.aug_brightness, g, dev).view(b, 1, 1, 1)
        contrast = _uniform(b, 1 - cfg.aug_contrast, 1 + cfg.aug_contrast, g, dev).view(b, 1, 1, 1)
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = ((x - mean) * contrast + mean) * bright
    if cfg.aug_erase_p > 0:
        x = random_erase(x, cfg.aug_erase_p, cfg.aug_erase_area, g)
    return x.clamp_(0.0, 1.0)


def random_erase(x: torch.Tensor, p: float, area: tuple[float, float], g: torch.Generator) -> torch.Tensor:
    """Replace one random rectangle per image (with probability p) by uniform noise."""
    b, _, h, w = x.shape
    dev = x.device
    frac = _uniform(b, area[0], area[1], g, dev)
    aspect = torch.exp(_uniform(b, math.log(0.3), math.log(3.3), g, dev))
    eh = (torch.sqrt(frac * aspect) * h).clamp(1, h).floor()
    ew = (torch.sqrt(frac / aspect) * w).clamp(1, w).floor()
    y0 = (torch.rand(b, generator=g, device=dev) * (h - eh + 1)).floor()
    x0 = (torch.rand(b, generator=g, device=dev) * (w - ew + 1)).floor()
    on = torch.rand(b, generator=g, device=dev) < p
    rows = torch.arange(h, device=dev).view(1, h, 1)
    cols = torch.arange(w, device=dev).view(1, 1, w)
    mask = ((rows >= y0.view(b, 1, 1)) & (rows < (y0 + eh).view(b, 1, 1))
            & (cols >= x0.view(b, 1, 1)) & (cols < (x0 + ew).view(b, 1, 1)) & on.view(b, 1, 1))
    noise = torch.rand(x.shape, generator=g, device=dev, dtype=x.dtype)
    return torch.where(mask.unsqueeze(1), noise, x)


def tta_views(x: torch.Tensor, shift: int = 2) -> list[torch.Tensor]:
    """Test-time views: identity and flip, each unshifted and shifted by ±shift px (10 views)."""
    views = []
    padded = F.pad(x, (shift, shift, shift, shift), mode="reflect")
    s = x.shape[-1]
    for dy, dx in ((0, 0), (-shift, 0), (shift, 0), (0, -shift), (0, shift)):
        v = padded[..., shift + dy: shift + dy + s, shift + dx: shift + dx + s]
        views += [v, torch.flip(v, dims=(-1,))]
    return views
