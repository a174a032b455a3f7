"""Training throughput (images/s) of the multi-task net on GPU vs CPU, same model and batch.

    PYTHONPATH=. python3 bench/train_throughput.py [--npz .data/fer2013_48.npz] [--batch 256]

Each device runs the real training step (gather a batch of device-resident uint8 faces,
augment on the device, forward under autocast where the recipe uses it, masked multi-task
loss, backward, SGD step): warm-up steps first, then timed steps with the device synchronised
around the timed region. The CPU — the baseline — is measured in the same run with fewer steps.
On CUDA the cuDNN autotuner mode (``deterministic=False``) is timed as well. Faces come from the
packed npz when given, else random pixels (throughput does not depend on content).

Last line: ``RESULT gpu_cpu_ratio=… images_per_s_gpu=… images_per_s_cpu=…`` (gpu keys = nan
when no GPU is visible).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from seke.train.augment import augment  # noqa: E402
from seke.train.config import TrainConfig  # noqa: E402
from seke.train.device import device_info  # noqa: E402
from seke.train.losses import Targets  # noqa: E402
from seke.train.model import build_model  # noqa: E402
from seke.train.trainer import (amp_dtype, make_optimizer, seed_everything, to_device_images,  # noqa: E402
                                train_step)


def images_per_second(images: np.ndarray, labels: np.ndarray, cfg: TrainConfig, device: str,
                      warmup: int, steps: int) -> float:
    seed_everything(cfg.seed, cfg.deterministic)
    cuda = device.startswith("cuda")
    data = to_device_images(images, cfg.image_size, device)
    n, b = len(data), cfg.batch_size
    expr = torch.from_numpy(labels).to(device)
    ones = torch.ones(n, device=device)
    va = torch.zeros(n, 2, device=device)
    aus = torch.zeros(n, cfg.n_aus, device=device)
    fmt = torch.channels_last if (cuda and cfg.channels_last) else torch.contiguous_format
    model = build_model(cfg).to(device).to(memory_format=fmt).train()
    opt = make_optimizer(model, cfg)
    dtype = amp_dtype(cfg, device)
    scaler = torch.amp.GradScaler("cuda") if (cuda and dtype == torch.float16) else None
    g = torch.Generator(device=device).manual_seed(cfg.seed)

    def step(i: int) -> None:
        idx = torch.randint(0, n, (b,), device=device, generator=g)
        x = augment(images_f(data[idx]), cfg, g).contiguous(memory_format=fmt)
        t = Targets(expr[idx], ones[idx], va[idx], ones[idx], aus[idx], ones[idx])
        train_step(model, opt, scaler, x, t, cfg, dtype, cuda)

    for i in range(warmup):
        step(i)
    if cuda:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for i in range(steps):
        step(i)
    if cuda:
        torch.cuda.synchronize()
    return steps * b / (time.perf_counter() - t0)


def images_f(x: torch.Tensor) -> torch.Tensor:
    return x.float().div_(255.0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--npz", default=None, help="packed faces (file or folder); default random pixels")
    ap.add_argument("--recipe", default="full", choices=["full", "compact"],
                    help="full (the GPU recipe) or compact (the CPU-sized net)")
    ap.add_argument("--batch", type=int, default=0, help="0 = the recipe's batch size")
    ap.add_argument("--gpu-steps", type=int, default=200)
    ap.add_argument("--cpu-steps", type=int, default=3)
    ap.add_argument("--widths", default="", help="e.g. 16,32,64,128 for a smaller net (default: recipe)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    base = TrainConfig.compact() if args.recipe == "compact" else TrainConfig()
    cfg = replace(base, batch_size=args.batch or base.batch_size)
    if args.widths:
        cfg = replace(cfg, widths=tuple(int(w) for w in args.widths.split(",")))
    if args.npz:
        from seke.train.packing import load_npz

        p = Path(args.npz)
        p = sorted(p.glob("*.npz"))[0] if p.is_dir() else p
        arrays, _ = load_npz(p)
        arrays = arrays.where_split("train") if (arrays.split == "train").any() else arrays
        images, labels = arrays.images[:8192], np.maximum(arrays.expression[:8192], 0)
        source = f"{p.name} ({len(images)} faces)"
    else:
        rng = np.random.default_rng(0)
        images = rng.integers(0, 256, (4096, 48, 48), dtype=np.uint8)
        labels = rng.integers(0, 7, 4096).astype(np.int64)
        source = "random pixels (4096 faces)"
    n_params = sum(p.numel() for p in build_model(cfg).parameters())
    print(f"model: widths={cfg.widths} blocks={cfg.blocks} {n_params:,} parameters, "
          f"input {cfg.image_size}px, batch {cfg.batch_size}; data: {source}")
    gpu = cpu = float("nan")
    rows = []
    if torch.cuda.is_available():
        info = device_info("cuda")
        print(f"GPU: {info.get('device_name')} {info.get('memory_gib')} GiB, torch {info['torch']}, "
              f"amp={amp_dtype(cfg, 'cuda')}")
        gpu = images_per_second(images, labels, cfg, "cuda", warmup=30, steps=args.gpu_steps)
        rows.append(("cuda deterministic (recipe default)", gpu))
        fast = images_per_second(images, labels, replace(cfg, deterministic=False), "cuda", 30, args.gpu_steps)
        rows.append(("cuda cudnn autotuner (--fast)", fast))
        fp32 = images_per_second(images, labels, replace(cfg, amp="off"), "cuda", 10, max(20, args.gpu_steps // 4))
        rows.append(("cuda fp32 (no AMP)", fp32))
    else:
        print("GPU: none visible to torch — measuring the CPU only (gpu figures = nan)")
    cpu_info = device_info("cpu")
    print(f"CPU: {cpu_info.get('device_name')}, {torch.get_num_threads()} torch threads, "
          f"{cpu_info.get('cpu_count')} cores")
    cpu = images_per_second(images, labels, cfg, "cpu", warmup=1, steps=args.cpu_steps)
    rows.append(("cpu fp32 (baseline)", cpu))
    print(f"{'variant':<40} {'images/s':>10} {'vs cpu':>8}")
    for name, v in rows:
        print(f"{name:<40} {v:>10.1f} {v / cpu:>8.1f}x")
    epoch_s = 28709 / gpu if gpu == gpu else float("nan")
    print(f"one FER2013-train epoch (28,709 faces): {epoch_s:.1f}s on GPU, {28709 / cpu:.0f}s on CPU")
    print(f"RESULT gpu_cpu_ratio={gpu / cpu:.2f} images_per_s_gpu={gpu:.1f} images_per_s_cpu={cpu:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
