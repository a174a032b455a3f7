"""Training throughput (images/s) of the multi-task net: CPU variants before/after, and GPU vs CPU.

    .venv/bin/python bench/train_throughput.py --recipe compact [--npz .data/fer2013_48.npz] [--compile]

Every variant runs the real training step (gather a batch of device-resident uint8 faces,
augment on the device, forward under autocast where the variant uses it, masked multi-task
loss, backward, optimizer step) on the same data. On the CPU the variants are timed in
interleaved rounds (each round times every variant for a few steps; the median round counts),
so load from other processes on a shared machine hits them alike:

* ``cpu fp32 contiguous`` — the CPU recipe before 2026-12-02 (the baseline; for ``--recipe
  compact`` with the 48-px block it had until 2026-12-07; every other variant has the layout of now);
* ``cpu fp32 channels_last``, ``cpu bf16 contiguous`` — each change alone;
* ``cpu bf16 channels_last`` — what the recipe does now on CPUs with AMX or AMD AVX512-BF16
  (``amp="auto"`` picks bf16 there, see :func:`seke.train.tensors.cpu_bf16_is_faster`); elsewhere the recipe is
  ``cpu fp32 channels_last``;
* ``recipe with a 48-px block (the layout before 2026-12-07)`` (``--recipe compact``): the
  recipe's step with ``blocks=(1, 1, 1, 1)``, i.e. with the 16-channel block at full resolution
  that the compact recipe dropped for speed (``bench/train_fer.py --blocks 1,1,1,1``,
  ``bench/train_ablation.py --blocks 1,1,1,1`` train it);
* ``recipe now without augmentation (what it costs)``: the recipe's step on the raw batch;
* ``recipe now, N processes × 1 thread (sum)`` (``--lanes N``, default 2): N copies of the
  recipe's step in worker processes of one torch thread each, stepping together, images/s summed
  — how ``bench/train_ablation.py`` trains the two arms of a seed side by side;
* ``--compile``: the same under ``torch.compile`` (inductor; compile time printed separately).

Batch sizes are compared with ``--batch``. On CUDA the recipe default, the cuDNN autotuner and
fp32 are timed too. Faces come from the packed npz when given, else random pixels (throughput
does not depend on content).

Last line: ``RESULT source=… data=… images_per_s_cpu=… images_per_s_cpu_before=…
cpu_speedup=… images_per_s_cpu_lanes=… lanes=… gpu_cpu_ratio=… images_per_s_gpu=…`` (gpu keys =
nan when no GPU is visible; ``images_per_s_cpu_lanes`` = nan with ``--lanes 0``).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from seke.train.augment import augment  # noqa: E402
from seke.train.config import TrainConfig  # noqa: E402
from seke.train.device import device_info  # noqa: E402
from seke.train.losses import Targets  # noqa: E402
from seke.train.model import build_model  # noqa: E402
from seke.train.trainer import (amp_dtype, make_optimizer, memory_format, seed_everything,  # noqa: E402
                                to_device_images, train_step)


def make_stepper(images: np.ndarray, labels: np.ndarray, cfg: TrainConfig, device: str,
                 compile_model: bool = False, augmented: bool = True) -> Callable[[], None]:
    """One training step of ``cfg`` on ``device`` as a closure (model, optimizer and data built
    once); ``augmented=False`` leaves the augmentation out, to measure what it costs."""
    seed_everything(cfg.seed, cfg.deterministic)
    cuda = device.startswith("cuda")
    data = to_device_images(images, cfg.image_size, device)
    n, b = len(data), cfg.batch_size
    expr = torch.from_numpy(labels).to(device)
    ones = torch.ones(n, device=device)
    va = torch.zeros(n, 2, device=device)
    aus = torch.zeros(n, cfg.n_aus, device=device)
    fmt = memory_format(cfg)
    model = build_model(cfg).to(device).to(memory_format=fmt).train()
    opt = make_optimizer(model, cfg)
    net = torch.compile(model) if compile_model else model
    dtype = amp_dtype(cfg, device)
    scaler = torch.amp.GradScaler("cuda") if (cuda and dtype == torch.float16) else None
    g = torch.Generator(device=device).manual_seed(cfg.seed)

    def step() -> None:
        idx = torch.randint(0, n, (b,), device=device, generator=g)
        x = data[idx].float().div_(255.0)
        x = (augment(x, cfg, g) if augmented else x).contiguous(memory_format=fmt)
        t = Targets(expr[idx], ones[idx], va[idx], ones[idx], aus[idx], ones[idx])
        train_step(net, opt, scaler, x, t, cfg, dtype, cuda)
        if cuda:
            torch.cuda.synchronize()

    return step


def _lane_worker(conn, images: np.ndarray, labels: np.ndarray, cfg: TrainConfig, threads: int) -> None:
    """One lane of :class:`SideBySide`: a stepper on ``threads`` torch threads, stepping on demand."""
    torch.set_num_threads(threads)
    step = make_stepper(images, labels, cfg, "cpu")
    while (n := conn.recv()) > 0:
        for _ in range(n):
            step()
        conn.send(n)


class SideBySide:
    """``lanes`` worker processes with ``threads`` torch threads each, every call one step on all
    of them at once — what ``bench/train_ablation.py --lanes`` does with the two arms of a seed.
    Its images/s is the sum over lanes (pass ``lanes × batch`` to :func:`interleaved`)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, cfg: TrainConfig, lanes: int, threads: int) -> None:
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")
        self.conns, self.procs = [], []
        for _ in range(lanes):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_lane_worker, args=(child, images, labels, cfg, threads), daemon=True)
            proc.start()
            self.conns.append(parent)
            self.procs.append(proc)

    def __call__(self) -> None:
        for c in self.conns:
            c.send(1)
        for c in self.conns:
            c.recv()

    def close(self) -> None:
        for c in self.conns:
            c.send(0)
        for p in self.procs:
            p.join(timeout=30)


def interleaved(steppers: dict[str, tuple[Callable[[], None], int]], rounds: int, steps: int,
                warmup: int) -> dict[str, float]:
    """Median images/s of each stepper over ``rounds`` rounds of ``steps`` steps, interleaved."""
    for step, _ in steppers.values():
        for _ in range(warmup):
            step()
    rates: dict[str, list[float]] = {k: [] for k in steppers}
    for _ in range(rounds):
        for name, (step, batch) in steppers.items():
            t0 = time.perf_counter()
            for _ in range(steps):
                step()
            rates[name].append(steps * batch / (time.perf_counter() - t0))
    return {k: statistics.median(v) for k, v in rates.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--npz", default=None, help="packed faces (file or folder); default random pixels")
    ap.add_argument("--recipe", default="compact", choices=["full", "compact"],
                    help="compact (the CPU recipe, default) or full (the GPU recipe)")
    ap.add_argument("--batch", type=int, default=0, help="0 = the recipe's batch size")
    ap.add_argument("--gpu-steps", type=int, default=200)
    ap.add_argument("--cpu-steps", type=int, default=4, help="steps per variant per round")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds on the CPU")
    ap.add_argument("--compile", action="store_true", help="also time torch.compile variants")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    ap.add_argument("--lanes", type=int, default=2,
                    help="also time the recipe in this many processes side by side, 1 thread each (0: not)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    base = TrainConfig.compact() if args.recipe == "compact" else TrainConfig()
    cfg = replace(base, batch_size=args.batch or base.batch_size)
    if args.npz:
        from seke.train.packing import load_npz

        p = Path(args.npz)
        p = sorted(p.glob("*.npz"))[0] if p.is_dir() else p
        arrays, _ = load_npz(p)
        arrays = arrays.where_split("train") if (arrays.split == "train").any() else arrays
        images, labels = arrays.images[:8192], np.maximum(arrays.expression[:8192], 0)
        source, data = "human", f"{p.stem}:{len(images)}"
    else:
        rng = np.random.default_rng(0)
        images = rng.integers(0, 256, (4096, 48, 48), dtype=np.uint8)
        labels = rng.integers(0, 7, 4096).astype(np.int64)
        source, data = "simulated", "random_pixels:4096"
    n_params = sum(p.numel() for p in build_model(cfg).parameters())
    print(f"model: {cfg.name} widths={cfg.widths} blocks={cfg.blocks} {n_params:,} parameters, "
          f"input {cfg.image_size}px, batch {cfg.batch_size}; data: {data}")
    gpu = float("nan")
    rows: list[tuple[str, float]] = []
    if torch.cuda.is_available():
        info = device_info("cuda")
        print(f"GPU: {info.get('device_name')} {info.get('memory_gib')} GiB, torch {info['torch']}, "
              f"amp={amp_dtype(cfg, 'cuda')}")
        gpu_variants = {"cuda deterministic (recipe default)": cfg,
                        "cuda cudnn autotuner (--fast)": replace(cfg, deterministic=False),
                        "cuda fp32 (no AMP)": replace(cfg, amp="off")}
        measured = interleaved({k: (make_stepper(images, labels, c, "cuda"), c.batch_size)
                                for k, c in gpu_variants.items()}, rounds=3, steps=args.gpu_steps // 3, warmup=30)
        gpu = measured["cuda deterministic (recipe default)"]
        rows += list(measured.items())
    else:
        print("GPU: none visible to torch — measuring the CPU only (gpu figures = nan)")
    cpu_info = device_info("cpu")
    print(f"CPU: {cpu_info.get('device_name')}, {torch.get_num_threads()} torch threads, "
          f"{cpu_info.get('cpu_count')} cores, recipe amp on cpu = {amp_dtype(cfg, 'cpu')}")
    before = "cpu fp32 contiguous" + (", 48-px block" if args.recipe == "compact" else "") + " (recipe before; baseline)"
    bf16_now = amp_dtype(cfg, "cpu") is not None
    fp32_cl = "cpu fp32 channels_last" + ("" if bf16_now else " (recipe now: bf16 not faster here)")
    bf16_cl = "cpu bf16 channels_last" + (" (recipe now)" if bf16_now else "")
    after = bf16_cl if bf16_now else fp32_cl
    # the baseline is the CPU recipe as it was before any of this work: fp32, contiguous and, for
    # the compact net, with its former 48-px block
    old_layout = {"blocks": (1,) + cfg.blocks[1:]} if args.recipe == "compact" else {}
    cpu_variants = {before: replace(cfg, amp="off", channels_last=False, **old_layout),
                    fp32_cl: replace(cfg, amp="off", channels_last=True),
                    "cpu bf16 contiguous": replace(cfg, amp="bf16", channels_last=False),
                    bf16_cl: replace(cfg, amp="bf16", channels_last=True)}
    if args.recipe == "compact":
        cpu_variants["recipe with a 48-px block (the layout before)"] = replace(cfg, blocks=(1,) + cfg.blocks[1:])
    steppers = {k: (make_stepper(images, labels, c, "cpu"), c.batch_size) for k, c in cpu_variants.items()}
    steppers["recipe now without augmentation (what it costs)"] = (
        make_stepper(images, labels, cfg, "cpu", augmented=False), cfg.batch_size)
    if args.compile:
        for k, c in (("cpu fp32 channels_last + torch.compile", replace(cfg, amp="off")),
                     ("recipe now + torch.compile", cfg)):
            t0 = time.perf_counter()
            step = make_stepper(images, labels, c, "cpu", compile_model=True)
            step()
            print(f"{k}: compiled in {time.perf_counter() - t0:.1f}s")
            steppers[k] = (step, c.batch_size)
    lanes = None
    if args.lanes > 1:
        lanes = SideBySide(images, labels, cfg, args.lanes, threads=1)
        side = f"recipe now, {args.lanes} processes × 1 thread (sum)"
        steppers[side] = (lanes, args.lanes * cfg.batch_size)
    try:
        cpu_rates = interleaved(steppers, rounds=args.rounds, steps=args.cpu_steps, warmup=2)
    finally:
        if lanes is not None:
            lanes.close()
    rows += list(cpu_rates.items())
    cpu, cpu_before = cpu_rates[after], cpu_rates[before]
    cpu_lanes = cpu_rates[side] if lanes is not None else float("nan")
    print(f"{'variant':<60} {'images/s':>10} {'vs before':>10}")
    for name, v in rows:
        print(f"{name:<60} {v:>10.1f} {v / cpu_before:>9.2f}x")
    epoch_s = 28709 / gpu if gpu == gpu else float("nan")
    print(f"one FER2013-train epoch (28,709 faces): {epoch_s:.1f}s on GPU, {28709 / cpu:.0f}s on CPU "
          f"({28709 / cpu_before:.0f}s before)")
    print(f"RESULT source={source} data={data} recipe={cfg.name} batch={cfg.batch_size} "
          f"images_per_s_cpu={cpu:.1f} images_per_s_cpu_before={cpu_before:.1f} "
          f"cpu_speedup={cpu / cpu_before:.2f} images_per_s_cpu_lanes={cpu_lanes:.1f} lanes={args.lanes} "
          f"gpu_cpu_ratio={gpu / cpu:.2f} images_per_s_gpu={gpu:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
