"""Multi-task losses, weighted by label confidence and masked where a granularity is missing.

Each face carries a weight per granularity (its label's confidence, 0 when the label is absent
or switched off by the recipe). Per-face losses are multiplied by that weight, so a missing
label contributes exactly 0 (and no gradient), and uncertain generated labels count less than
human ones. Each head's loss is averaged over the faces of the batch that have its label, so a
granularity that is rare in a batch is not diluted by the faces that lack it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from seke.train.config import TrainConfig


@dataclass
class Targets:
    """Labels of one batch on the device; weights are 0 where a label is missing."""

    expression: torch.Tensor    # (B,) long, -1 = missing
    expression_w: torch.Tensor  # (B,)
    va: torch.Tensor            # (B, 2)
    va_w: torch.Tensor          # (B,)
    aus: torch.Tensor           # (B, A) float 0/1
    aus_w: torch.Tensor         # (B,)


def per_face_losses(out: dict[str, torch.Tensor], t: Targets, cfg: TrainConfig) -> dict[str, torch.Tensor]:
    """Unweighted per-face losses of each head, zeroed where the label is missing: (B,) each."""
    has_e = t.expression >= 0
    ce = F.cross_entropy(out["expression"].float(), t.expression.clamp(min=0), reduction="none",
                         label_smoothing=cfg.label_smoothing)
    va = ((out["va"].float() - t.va) ** 2).mean(dim=1)
    au = F.binary_cross_entropy_with_logits(out["aus"].float(), t.aus, reduction="none").mean(dim=1)
    zero = torch.zeros_like(ce)
    return {"expression": torch.where(has_e & (t.expression_w > 0), ce, zero),
            "va": torch.where(t.va_w > 0, va, zero),
            "aus": torch.where(t.aus_w > 0, au, zero)}


def multitask_loss(out: dict[str, torch.Tensor], t: Targets, cfg: TrainConfig
                   ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Total loss and each head's (detached) loss. Heads with no label in the batch give 0."""
    per = per_face_losses(out, t, cfg)
    weights = {"expression": t.expression_w * (t.expression >= 0), "va": t.va_w, "aus": t.aus_w}
    lambdas = {"expression": cfg.w_expression, "va": cfg.w_va, "aus": cfg.w_aus}
    total = torch.zeros((), device=t.expression.device)
    parts: dict[str, torch.Tensor] = {}
    for head, loss in per.items():
        w = weights[head]
        n = (w > 0).sum().clamp(min=1)
        head_loss = (loss * w).sum() / n
        parts[head] = head_loss.detach()
        total = total + lambdas[head] * head_loss
    return total, parts
