"""Network shapes and the masked, confidence-weighted losses."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from seke.taxonomy import AU_CATALOGUE, EXPRESSIONS  # noqa: E402
from seke.train.config import TrainConfig  # noqa: E402
from seke.train.losses import Targets, multitask_loss, per_face_losses  # noqa: E402
from seke.train.model import build_model  # noqa: E402


def _targets(b: int, *, au_w: list[float], expr_w: list[float] | None = None) -> Targets:
    g = torch.Generator().manual_seed(0)
    return Targets(expression=torch.randint(0, 8, (b,), generator=g),
                   expression_w=torch.tensor(expr_w or [1.0] * b),
                   va=torch.rand(b, 2, generator=g) * 2 - 1, va_w=torch.ones(b),
                   aus=(torch.rand(b, len(AU_CATALOGUE), generator=g) > 0.7).float(),
                   aus_w=torch.tensor(au_w))


def test_output_shapes_and_ranges():
    cfg = TrainConfig.tiny()
    model = build_model(cfg).eval()
    out = model(torch.rand(5, 1, cfg.image_size, cfg.image_size))
    assert out["expression"].shape == (5, len(EXPRESSIONS))
    assert out["va"].shape == (5, 2) and out["va"].abs().max() <= 1.0
    assert out["aus"].shape == (5, len(AU_CATALOGUE))


def test_full_size_net_is_resnet18_like():
    model = build_model(TrainConfig())
    n = sum(p.numel() for p in model.parameters())
    assert 10e6 < n < 12e6
    assert model(torch.rand(2, 1, 48, 48))["expression"].shape == (2, 8)


def test_face_without_au_labels_contributes_zero_au_loss():
    cfg = TrainConfig.tiny()
    model = build_model(cfg)
    out = model(torch.rand(4, 1, cfg.image_size, cfg.image_size))
    t = _targets(4, au_w=[1.0, 0.0, 1.0, 0.0])
    per = per_face_losses(out, t, cfg)
    assert per["aus"][1] == 0 and per["aus"][3] == 0
    assert per["aus"][0] > 0 and per["aus"][2] > 0
    # a batch whose faces have no AU labels: AU loss 0 and no gradient reaches the AU head
    t0 = _targets(4, au_w=[0.0] * 4)
    loss, parts = multitask_loss(out, t0, cfg)
    assert parts["aus"] == 0
    loss.backward()
    assert model.aus.weight.grad is not None and torch.count_nonzero(model.aus.weight.grad) == 0
    assert torch.count_nonzero(model.expression.weight.grad) > 0


def test_confidence_weights_scale_the_loss():
    cfg = TrainConfig.tiny(label_smoothing=0.0)
    model = build_model(cfg).eval()
    out = model(torch.rand(2, 1, cfg.image_size, cfg.image_size))
    full = multitask_loss(out, _targets(2, au_w=[1, 1], expr_w=[1.0, 1.0]), cfg)[1]["expression"]
    half = multitask_loss(out, _targets(2, au_w=[1, 1], expr_w=[0.5, 0.5]), cfg)[1]["expression"]
    assert half == pytest.approx(float(full) / 2, rel=1e-5)
    masked = _targets(2, au_w=[1, 1])
    masked.expression = torch.tensor([-1, -1])
    assert multitask_loss(out, masked, cfg)[1]["expression"] == 0


def test_strided_shortcut_is_a_strided_1x1_convolution_and_trains_channels_last():
    """The projection subsamples then applies a 1x1 convolution: the same function as a
    stride-2 1x1 convolution with the same weights, at even and odd sizes. Its backward pass
    at the shape that crashed oneDNN's strided 1x1 kernel on AVX-512 AMD EPYC (8 -> 16
    channels, 48 px, channels_last) runs in a child process, so a crash fails this test only."""
    import subprocess
    import sys

    from seke.train.model import BasicBlock

    for cin, cout in ((8, 16), (16, 32)):  # subsampled (narrow input) and strided projections
        block = BasicBlock(cin, cout, 2).eval()
        w, bn = block.short[0].weight, block.short[1]
        for size in (48, 25):
            x = torch.randn(2, cin, size, size)
            y = block.bn2(block.conv2(block.act(block.bn1(block.conv1(x)))))
            want = torch.relu(y + bn(torch.nn.functional.conv2d(x, w, stride=2)))
            assert torch.allclose(block(x), want, atol=1e-5)
            assert want.shape == (2, cout, (size + 1) // 2, (size + 1) // 2)
    code = ("import torch; from seke.train.model import BasicBlock; torch.set_num_threads(1); "
            "b = BasicBlock(8, 16, 2).to(memory_format=torch.channels_last); "
            "x = torch.randn(8, 8, 48, 48).to(memory_format=torch.channels_last); "
            "[b(x).sum().backward() for _ in range(3)]; print('ok')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
