"""The training loop: device-resident data, GPU augmentation, AMP, cosine schedule, time budget.

Design choices and why:

* The decoded uint8 faces (FER2013: 66 MB) are copied to the device once; each step indexes a
  batch and augments it there (:mod:`seke.train.augment`). No DataLoader workers, no per-step
  host→device copies, no Python decoding in the hot loop, so the GPU is the bottleneck.
* Mixed precision: bf16 autocast on GPUs that support it (no loss scaling needed), fp16 +
  GradScaler on older ones, fp32 on CPU. Losses are computed in fp32.
* SGD + Nesterov, linear warm-up then cosine to 0, weight decay on conv/linear weights only.
* Deterministic: every random draw (shuffle, augmentation, init) comes from the seed; cuDNN is
  asked for deterministic algorithms unless ``deterministic=False``.
* A time budget (``time_limit_s``) cuts the number of epochs after the first one is timed, and
  the cosine schedule is laid over the cut length, so a time-boxed run still anneals properly.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from seke.train.arrays import FaceArrays
from seke.train.augment import augment
from seke.train.config import TrainConfig
from seke.train.device import device_info, pick_device
from seke.train.evaluate import evaluate_arrays
from seke.train.losses import Targets, multitask_loss
from seke.train.model import MultiTaskNet, build_model, count_parameters
from seke.train.tensors import amp_dtype, memory_format, to_device_images  # noqa: F401  (re-exported)

Logger = Callable[[str], None]

#: Steps timed at the start of a time-boxed run to size it (see ``time_limit_s``).
PROBE_STEPS = 20


@dataclass
class TrainResult:
    model: MultiTaskNet
    config: TrainConfig
    device: str
    history: list[dict[str, Any]] = field(default_factory=list)
    steps: int = 0
    epochs_run: int = 0
    seconds: float = 0.0
    images_per_s: float = 0.0          # steady-state training throughput (after the first epoch)
    n_train: int = 0
    label_counts: dict[str, int] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)


def label_weights(arrays: FaceArrays, cfg: TrainConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-face weights of each granularity after the recipe's switches (ablation, origins)."""
    ew = arrays.expression_w.astype(np.float32).copy()
    if not cfg.use_expression:
        ew[:] = 0
    elif cfg.expression_origins:
        ew[~np.isin(arrays.expression_origin.astype(str), list(cfg.expression_origins))] = 0
    ew[arrays.expression < 0] = 0
    vw = arrays.va_w.astype(np.float32) if cfg.use_va else np.zeros(len(arrays), np.float32)
    aw = arrays.aus_w.astype(np.float32) if cfg.use_aus else np.zeros(len(arrays), np.float32)
    return ew, vw, aw


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if torch.backends.cudnn.is_available():
        torch.backends.cudnn.deterministic = deterministic
        torch.backends.cudnn.benchmark = not deterministic


def lr_at(step: int, total: int, warmup: int, base: float) -> float:
    if warmup and step < warmup:
        return base * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return base * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    decay, no_decay = [], []
    for p in model.parameters():
        (decay if p.ndim > 1 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """SGD + Nesterov (the recipe) or AdamW (``optimizer="adamw"``: leaves FER's early
    class-prior plateau sooner in short CPU runs); decay on conv/linear weights only."""
    groups = _param_groups(model, cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr)
    if cfg.optimizer != "sgd":
        raise ValueError(f"unknown optimizer {cfg.optimizer!r} (sgd | adamw)")
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0)


def train_step(model, opt, scaler, x, t: Targets, cfg: TrainConfig, dtype, cuda: bool):
    """One optimisation step (autocast forward, masked multi-task loss, backward, update).

    Shared by :func:`train` and ``bench/train_throughput.py`` so the benchmark times the
    exact step training runs. Returns the loss and its per-granularity parts.
    """
    with torch.autocast(device_type="cuda" if cuda else "cpu", dtype=dtype or torch.float32,
                        enabled=dtype is not None):
        out = model(x)
    loss, parts = multitask_loss(out, t, cfg)
    opt.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
    else:
        loss.backward()
        opt.step()
    return loss, parts


def train(arrays: FaceArrays, cfg: TrainConfig, *, device: str = "auto", log: Logger = print,
          val: FaceArrays | None = None, val_every: int = 1) -> TrainResult:
    """Train a :class:`MultiTaskNet` on ``arrays`` with recipe ``cfg``.

    ``val`` (optional, e.g. fer2013 validation) is scored (expression accuracy, no TTA) every
    ``val_every`` epochs for the history; it never influences training.
    """
    dev = pick_device(device, say=log)
    seed_everything(cfg.seed, cfg.deterministic)
    ew, vw, aw = label_weights(arrays, cfg)
    useful = np.flatnonzero((ew > 0) | (vw > 0) | (aw > 0))
    if len(useful) < 2:
        raise ValueError(f"{len(useful)} faces carry a usable label under recipe {cfg.name!r}; need ≥ 2")
    arrays = arrays.subset(useful)
    ew, vw, aw = ew[useful], vw[useful], aw[useful]
    n = len(arrays)
    t0 = time.perf_counter()
    images = to_device_images(arrays.images, cfg.image_size, dev)
    tgt_all = Targets(
        expression=torch.from_numpy(np.where(ew > 0, arrays.expression, -1).astype(np.int64)).to(dev),
        expression_w=torch.from_numpy(ew).to(dev), va=torch.from_numpy(arrays.va.astype(np.float32)).to(dev),
        va_w=torch.from_numpy(vw).to(dev), aus=torch.from_numpy(arrays.aus.astype(np.float32)).to(dev),
        aus_w=torch.from_numpy(aw).to(dev))
    model = build_model(cfg).to(dev)
    cuda = dev.startswith("cuda")
    fmt = memory_format(cfg)
    model = model.to(memory_format=fmt)
    opt = make_optimizer(model, cfg)
    dtype = amp_dtype(cfg, dev)
    scaler = torch.amp.GradScaler("cuda") if (cuda and dtype == torch.float16) else None
    g_shuffle = torch.Generator().manual_seed(cfg.seed)
    g_aug = torch.Generator(device=dev).manual_seed(cfg.seed + 1)
    batch = min(cfg.batch_size, n)
    steps_per_epoch = max(1, n // batch)
    epochs = cfg.epochs
    total = epochs * steps_per_epoch
    if cfg.max_steps:
        total = min(total, cfg.max_steps)
        epochs = math.ceil(total / steps_per_epoch)
    planned = total  # what the recipe asks for; a time budget only ever shortens it
    warmup = int(round(cfg.warmup_epochs * steps_per_epoch))
    # With a time budget, a short timed probe (the first few steps) sizes the run before a whole
    # epoch has passed: one epoch of a large net on a CPU can alone exceed the budget.
    probe_at = min(total, PROBE_STEPS) if cfg.time_limit_s > 0 else 0
    probe_t0 = 0.0
    log(f"[{cfg.name}] {n} faces ({arrays.counts()}), {count_parameters(model):,} parameters, "
        f"batch {batch}, {steps_per_epoch} steps/epoch, {epochs} epochs, amp={dtype}, device={dev}")
    result = TrainResult(model=model, config=cfg, device=dev, n_train=n,
                         label_counts={"expression": int((ew > 0).sum()), "va": int((vw > 0).sum()),
                                       "aus": int((aw > 0).sum())},
                         info=device_info(dev))
    step = 0
    steady_images, steady_time = 0, 0.0
    train_start = time.perf_counter()
    epoch = 0
    while epoch < epochs and step < total:
        model.train()
        if cuda:
            torch.cuda.synchronize()
        e0 = time.perf_counter()
        perm = torch.randperm(n, generator=g_shuffle).to(dev)
        sums = {k: torch.zeros((), device=dev) for k in ("loss", "expression", "va", "aus")}
        done = 0
        for s in range(steps_per_epoch):
            if step >= total:
                break
            lr = lr_at(step, total, warmup, cfg.lr)
            for group in opt.param_groups:
                group["lr"] = lr
            idx = perm[s * batch:(s + 1) * batch]
            x = images[idx].float().div_(255.0)
            x = augment(x, cfg, g_aug).contiguous(memory_format=fmt)
            t = Targets(*(getattr(tgt_all, f)[idx] for f in Targets.__dataclass_fields__))
            loss, parts = train_step(model, opt, scaler, x, t, cfg, dtype, cuda)
            sums["loss"] += loss.detach()
            for k, v in parts.items():
                sums[k] += v
            step += 1
            done += 1
            if probe_at and step == 1:
                if cuda:
                    torch.cuda.synchronize()
                probe_t0 = time.perf_counter()  # step 1 (allocation, kernel selection) not timed
            elif probe_at and step == probe_at:
                if cuda:
                    torch.cuda.synchronize()
                per_step = (time.perf_counter() - probe_t0) / max(1, step - 1)
                left = cfg.time_limit_s - (time.perf_counter() - train_start)
                fit = step + max(0, int(left // per_step))
                if fit < total:
                    log(f"[{cfg.name}] time limit {cfg.time_limit_s:.0f}s: {per_step * 1000:.0f} ms/step → "
                        f"{fit} steps instead of {total} ({fit / steps_per_epoch:.2f} epochs; schedule re-laid)")
                    total = fit
                    epochs = math.ceil(total / steps_per_epoch)
                    warmup = min(warmup, total // 5)
        if cuda:
            torch.cuda.synchronize()
        secs = time.perf_counter() - e0
        epoch += 1
        if epoch > 1:
            steady_images += done * batch
            steady_time += secs
        row: dict[str, Any] = {"epoch": epoch, "steps": step, "lr": lr, "seconds": round(secs, 3),
                               "images_per_s": round(done * batch / max(secs, 1e-9), 1)}
        row.update({k: round(float(v) / max(done, 1), 5) for k, v in sums.items()})
        if val is not None and len(val) and (epoch % val_every == 0 or epoch == epochs):

            row["val_acc"] = round(evaluate_arrays(model, val, dev, cfg, tta=False)["expression"]["accuracy"], 4)
        result.history.append(row)
        log(f"[{cfg.name}] epoch {epoch}/{epochs} " + " ".join(f"{k}={v}" for k, v in row.items() if k != "epoch"))
        if epoch == 1 and cfg.time_limit_s > 0 and step < total:
            # Re-size from a whole epoch (its validation included), which the probe could not see.
            spent = time.perf_counter() - train_start
            per_step = (time.perf_counter() - e0) * 1.02 / max(1, done)
            fit = min(planned, step + max(0, int((cfg.time_limit_s - spent) // per_step)))
            if fit != total:
                log(f"[{cfg.name}] time limit {cfg.time_limit_s:.0f}s: {per_step * 1000:.0f} ms/step with "
                    f"validation → {fit} steps ({fit / steps_per_epoch:.2f} epochs; schedule re-laid)")
                total = max(step, fit)
                epochs = math.ceil(total / steps_per_epoch)
    model.eval()
    result.steps, result.epochs_run = step, epoch
    result.seconds = time.perf_counter() - t0
    if steady_time > 0:
        result.images_per_s = steady_images / steady_time
    elif result.history:
        result.images_per_s = result.history[0]["images_per_s"]
    return result
