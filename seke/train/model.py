"""The compact multi-task network: a ResNet-style backbone shared by three heads.

Why this shape: 48×48 grey faces are small, so the stem keeps full resolution (3×3 conv,
stride 1, no max-pool) and four stages of basic residual blocks halve it to 6×6 (the
ResNet-18 layout of He et al. 2016 adapted to 48 px, as in Pramerdorfer & Kampel 2016, who
report ~72 % on FER2013 with such nets). Every granularity reads the same pooled features, so
VA and AU labels shape the representation the expression head uses — the point of SEKE's
multi-granularity data.

Inputs are (B, 1, S, S) floats in [0, 1]; the model normalises them itself so checkpoints are
usable without knowing the preprocessing.
"""

from __future__ import annotations

import torch
from torch import nn

from seke.train.config import TrainConfig

#: FER2013 pixel statistics (mean, std of x/255), close enough for any grey face crop.
PIXEL_MEAN, PIXEL_STD = 0.508, 0.255
#: Residual projections from fewer input channels than this subsample instead of striding (see BasicBlock).
SUBSAMPLED_SHORTCUT_BELOW = 16


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.act = nn.ReLU(inplace=True)
        self.short: nn.Module = nn.Identity()
        #: Stride applied by subsampling before a stride-1 projection, for narrow inputs only.
        self.short_stride = stride if cin < SUBSAMPLED_SHORTCUT_BELOW else 1
        if stride != 1 or cin != cout:
            # A strided 1x1 projection. For inputs narrower than 16 channels it is computed as
            # "take every stride-th pixel, then a 1x1 convolution at stride 1" (the same
            # function and parameters). Why: oneDNN 3.12 (torch 2.13 CPU) segfaults in the
            # backward pass of a strided 1x1 convolution on AVX-512 AMD EPYC for channels_last
            # inputs of 4 or 8 channels (jit_avx512_common_1x1_convolution_bwd_weights; 8 -> 16
            # at 46-96 px crashed, 12, 16, 24 and 40 input channels did not). Not everywhere:
            # the subsampled form trains the compact net 10-15 % slower.
            self.short = nn.Sequential(nn.Conv2d(cin, cout, 1, stride // self.short_stride, bias=False),
                                       nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        s = self.short_stride
        return self.act(y + self.short(x[:, :, ::s, ::s] if s > 1 else x))


class MultiTaskNet(nn.Module):
    """Backbone + heads: ``expression`` logits (8), ``va`` in [-1, 1] (2), ``aus`` logits (|AU|)."""

    def __init__(self, cfg: TrainConfig) -> None:
        super().__init__()
        w0 = cfg.widths[0]
        self.stem = nn.Sequential(nn.Conv2d(1, w0, 3, 1, 1, bias=False), nn.BatchNorm2d(w0), nn.ReLU(inplace=True))
        layers: list[nn.Module] = []
        cin = w0
        for i, (width, n) in enumerate(zip(cfg.widths, cfg.blocks)):
            for j in range(n):
                layers.append(BasicBlock(cin, width, 2 if (i > 0 and j == 0) else 1))
                cin = width
        self.body = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.drop = nn.Dropout(cfg.dropout)
        self.expression = nn.Linear(cin, cfg.n_expressions)
        self.va = nn.Linear(cin, 2)
        self.aus = nn.Linear(cin, cfg.n_aus)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        if cfg.zero_init_residual:  # residual branches start as identity (Goyal et al. 2017)
            for block in self.body:
                nn.init.zeros_(block.bn2.weight)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - PIXEL_MEAN) / PIXEL_STD
        return torch.flatten(self.pool(self.body(self.stem(x))), 1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.drop(self.features(x))
        return {"expression": self.expression(h), "va": torch.tanh(self.va(h)), "aus": self.aus(h)}


def build_model(cfg: TrainConfig) -> MultiTaskNet:
    return MultiTaskNet(cfg)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
