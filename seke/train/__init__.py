"""Training a compact multi-task face-emotion model on FEID (issue 7).

Layout (one job per module):

* :mod:`seke.train.config`     – :class:`TrainConfig`, the whole recipe as plain data;
* :mod:`seke.train.arrays`     – :class:`FaceArrays`: decoded 48×48 faces + per-granularity labels,
  built from FEID Parquet (deduplicated by ``face_id``) or a dataset manifest; numpy only;
* :mod:`seke.train.packing`    – lossless, compact ``.npz`` of a :class:`FaceArrays` so a GPU
  machine without the lake or ``../shared/data`` can train (``bench/pack_fer.py``);
* :mod:`seke.train.device`     – CUDA/CPU choice and the device facts reported as metadata;
* :mod:`seke.train.model`      – the ResNet-style backbone with expression / VA / AU heads;
* :mod:`seke.train.augment`    – batch augmentation done on the training device;
* :mod:`seke.train.losses`     – confidence-weighted, masked multi-task losses;
* :mod:`seke.train.trainer`    – the training loop (AMP on CUDA, time budget, determinism);
* :mod:`seke.train.evaluate`   – prediction + metrics on FEAB and fer2013 validation;
* :mod:`seke.train.checkpoint` – checkpoint + config + metrics on a local dir or the lake.

PyTorch is an optional extra (``pip install .[train]``): only ``model``, ``augment``,
``losses``, ``trainer``, ``evaluate`` and ``checkpoint`` import it, and nothing in this package
is imported by the rest of the platform at import time.
"""
