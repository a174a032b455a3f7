"""The training recipe as plain, JSON-serialisable data (no torch import).

A checkpoint stores its :class:`TrainConfig` next to the weights, so a model can be rebuilt and
an experiment repeated from the lake alone. :func:`TrainConfig.digest` names the recipe in the
checkpoint path, beside the FEID data version.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from seke.taxonomy import AU_CATALOGUE, EXPRESSIONS


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides what a training run computes.

    Defaults are the full recipe meant for FER2013-sized data on a GPU (ResNet-18-like widths,
    40 epochs, SGD + cosine, strong augmentation). :meth:`tiny` is the unit-test size.
    """

    name: str = "multitask"
    # --- network
    image_size: int = 48
    widths: tuple[int, ...] = (64, 128, 256, 512)
    blocks: tuple[int, ...] = (2, 2, 2, 2)
    dropout: float = 0.3
    # Zero γ of each residual branch's last BN (Goyal et al. 2017). On for the full recipe: at
    # widths 64-512 with SGD lr 0.1 it keeps the first steps stable (a 12-step probe, batch 64,
    # 4 warm-up steps: expression loss stayed ~2.0 with it, peaked at 19.9 without). Off for
    # short/small runs: at init the net is then the 3×3 stem plus 1×1 strided shortcuts (a bag of
    # 3×3 patches after pooling) and γ grows slowly, so a few hundred steps on FER2013 stay at the
    # base rate (measurements in tests/seke/train/test_fer_learns.py).
    zero_init_residual: bool = True
    n_expressions: int = len(EXPRESSIONS)
    n_aus: int = len(AU_CATALOGUE)
    # --- which labels are used (the ablation switches VA/AUs off and keeps human expression)
    use_expression: bool = True
    use_va: bool = True
    use_aus: bool = True
    expression_origins: tuple[str, ...] = ()  # () = every origin; ("human",) for the ablation
    missing_confidence: float = 1.0           # weight of a label whose confidence is null
    # --- loss
    w_expression: float = 1.0
    w_va: float = 1.0
    w_aus: float = 1.0
    label_smoothing: float = 0.1
    # --- optimisation
    epochs: int = 40
    optimizer: str = "sgd"       # sgd (Nesterov) | adamw (use lr≈1e-3, weight_decay≈0.05)
    batch_size: int = 256
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_epochs: float = 2.0
    max_steps: int = 0           # >0 stops after this many steps (tests, benchmarks)
    time_limit_s: float = 0.0    # >0: epochs are cut to fit (measured after the first epoch)
    # --- augmentation (applied on the training device)
    aug_rotate_deg: float = 15.0
    aug_scale: tuple[float, float] = (0.85, 1.15)
    aug_translate: float = 0.1   # fraction of the image side
    aug_flip: bool = True
    aug_brightness: float = 0.3
    aug_contrast: float = 0.3
    aug_erase_p: float = 0.5
    aug_erase_area: tuple[float, float] = (0.02, 0.2)
    # --- runtime
    seed: int = 0
    deterministic: bool = True   # cuDNN deterministic algorithms (no autotuner) on CUDA
    amp: str = "auto"            # auto (CUDA: bf16/fp16; CPU: bf16 with AMX, else off) | off | bf16 | fp16
    channels_last: bool = True
    eval_batch_size: int = 1024
    tta: bool = True             # flip + shifted views at evaluation

    @classmethod
    def compact(cls, **over: Any) -> "TrainConfig":
        """The CPU-sized recipe: same architecture family at widths 16-128, one residual block
        in each of the three downsampled stages and none at the full 48-px resolution.

        No block at 48 px since 2026-12-07: that one 16-channel block (memory-bound BatchNorm
        and ReLU passes over 48×48 maps) cost about a third of each step, and every time-boxed
        comparison on FER2013 train, scored on FER2013 validation with TTA, favoured dropping it:
        on an AVX2-only EPYC 0.511 vs 0.463 at 420 s and 0.546 vs 0.536 at 900 s; on an EPYC
        with AVX512-BF16, one thread each, side by side on 22,000 faces, 0.6116 after its 30
        epochs in 833 s vs 0.6077 after 24 epochs in 1,004 s with the block (``bench/train_fer.py
        --data-dir ../shared/data/fer2013 --recipe compact --limit 22000 --time-limit 1080
        --threads 1 [--blocks 1,1,1,1]``). Checkpoints keep their own recipe, so ones trained with
        the block (``blocks=(1, 1, 1, 1)``, e.g. the 0.629 30-epoch checkpoint of the README) load
        as they were.

        0.31 M parameters (11.2 M for the full recipe; ``count_parameters(build_model(cfg))``,
        :mod:`seke.train.model`); on 2 cores, measured interleaved on 2026-12-02 (``PYTHONPATH=.
        python bench/train_throughput.py --recipe compact``, RESULT ``images_per_s_cpu`` and
        ``images_per_s_cpu_before``; a busy machine gives less), 827 training images/s with AMX
        (bf16 autocast, channels_last) and 466 without (fp32 channels_last), against 373 and 298
        for the fp32 contiguous recipe of before (:mod:`seke.train.tensors`); the full recipe ran 18 images/s
        in fp32 on 2026-11-29 (``--recipe full``), so a FER2013-sized FEID trains for tens of
        epochs in half an hour instead of ~25 minutes an epoch. Batch 256 since 2026-12-02 (on
        an AMD EPYC with AVX512-BF16, bf16 channels_last: 826 images/s at 256 vs 658 at 128,
        same run of the bench with ``--batch``), with the learning rate scaled by √2 from 2e-3
        at 128 (the square-root rule for Adam-type optimizers, Malladi et al. 2022, "On the
        SDEs and Scaling Rules for Adaptive Gradient Algorithms"). Residual branches start active (no zero-γ), and AdamW replaces SGD: in 420 s
        single-thread runs on the FER2013 FEID scored on fer2013 validation, AdamW (lr 2e-3,
        wd 0.05) got further past FER's class-prior plateau than SGD (lr 0.05). Compare with
        ``bench/feid_fer2013.py``, ``bench/pack_fer.py --feid-lake .data/fer_feid/lake --out
        .data/fer_feid.npz`` and ``bench/train_fer.py --npz .data/fer_feid.npz --recipe compact
        --time-limit 420 --threads 1`` (add ``--optimizer sgd --lr 0.05`` for SGD); no figures
        are quoted here because that comparison was not recorded with its command.
        """
        base = dict(name="compact", widths=(16, 32, 64, 128), blocks=(0, 1, 1, 1), dropout=0.2,
                    zero_init_residual=False, epochs=30, batch_size=256, optimizer="adamw", lr=2.8e-3,
                    weight_decay=0.05, warmup_epochs=1.0)
        base.update(over)
        return cls(**base)

    @classmethod
    def tiny(cls, **over: Any) -> "TrainConfig":
        """A few-thousand-parameter net for tests: runs a handful of steps in seconds on CPU."""
        base = dict(name="tiny", image_size=24, widths=(8, 16), blocks=(1, 1), dropout=0.0,
                    epochs=2, batch_size=8, lr=0.05, warmup_epochs=0.0, eval_batch_size=64,
                    tta=False, aug_erase_p=0.0)
        base.update(over)
        return cls(**base)

    def ablation(self) -> "TrainConfig":
        """Same network and recipe, trained on human expression labels only (no VA, no AUs)."""
        return replace(self, name=f"{self.name}-human-expression-only", use_va=False,
                       use_aus=False, expression_origins=("human",))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        """Inverse of :meth:`to_dict`; unknown keys are ignored, lists become tuples."""
        known = {f.name for f in fields(cls)}
        clean = {k: (tuple(v) if isinstance(v, list) else v) for k, v in data.items() if k in known}
        return cls(**clean)

    def digest(self) -> str:
        """Short hash of the recipe (every field), used in checkpoint paths."""
        blob = json.dumps(self.to_dict(), sort_keys=True, default=list).encode()
        return hashlib.sha256(blob).hexdigest()[:10]


def with_overrides(cfg: TrainConfig, assignments: list[str]) -> TrainConfig:
    """``cfg`` with ``field=value`` assignments applied (``aug_erase_p=0``, ``blocks=0,1,1,1``),
    each value parsed as the field's current type; tuples are comma-separated. Why: benches try
    recipe variants from the command line without one flag per field. Raises ``ValueError``
    naming the assignment for an unknown field or a value of the wrong type."""
    known = {f.name for f in fields(TrainConfig)}
    changes: dict[str, Any] = {}
    for item in assignments:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or key not in known:
            raise ValueError(f"{item!r}: expected field=value with a TrainConfig field")
        current = getattr(cfg, key)
        try:
            if isinstance(current, bool):
                if text.lower() not in ("true", "false", "1", "0"):
                    raise ValueError(text)
                value: Any = text.lower() in ("true", "1")
            elif isinstance(current, tuple):
                kind = type(current[0]) if current else str
                value = tuple(kind(v) for v in text.split(",") if v.strip())
            else:
                value = type(current)(text)
        except ValueError:
            raise ValueError(f"{item!r}: {text!r} is not a {type(current).__name__}") from None
        changes[key] = value
    return replace(cfg, **changes)


#: Fields that an ablation run changes on purpose (see :meth:`TrainConfig.ablation`).
ABLATION_FIELDS = frozenset({"name", "use_va", "use_aus", "expression_origins"})


def recipe_differences(a: dict[str, Any], b: dict[str, Any]) -> dict[str, list[Any]]:
    """Fields (other than the ablation switches) in which two stored recipes differ.

    Why: a multi-task vs human-only comparison only means something when nothing else differs."""
    return {k: [a.get(k), b.get(k)] for k in sorted(set(a) | set(b))
            if k not in ABLATION_FIELDS and a.get(k) != b.get(k)}



#: Recipe names a run can ask for; ``auto`` resolves by device (:func:`resolve_recipe`).
RECIPES = ("auto", "full", "compact", "tiny")


def resolve_recipe(name: str, device: str, *, run_name: str, ablation: bool = False, epochs: int = 0,
                   batch_size: int = 0, lr: float = 0.0, time_limit_s: float = 1800.0, seed: int = 0,
                   tta: bool = True) -> TrainConfig:
    """The recipe a run trains. ``auto`` picks the full net on a GPU and the compact one on CPU,
    where the full net trains too slowly (``bench/train_throughput.py`` measures both); zero
    for ``epochs``/``batch_size``/``lr`` keeps the recipe's value; ``ablation`` switches to
    human expression labels only. Raises ``ValueError`` for an unknown name."""
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; one of {', '.join(RECIPES)}")
    if name == "auto":
        name = "full" if device.startswith("cuda") else "compact"
    base = {"full": TrainConfig, "compact": TrainConfig.compact, "tiny": TrainConfig.tiny}[name]()
    cfg = replace(base, name=run_name, epochs=epochs or base.epochs, batch_size=batch_size or base.batch_size,
                  lr=lr or base.lr, time_limit_s=time_limit_s, seed=seed, tta=tta)
    return cfg.ablation() if ablation else cfg
