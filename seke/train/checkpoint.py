"""Checkpoints (weights + recipe + metrics) on a local folder or the lake's filesystem.

A checkpoint is a folder::

    <root>/models/<run name>/data=<FEID data version>/config=<recipe digest>/
        model.pt        torch state_dict
        config.json     TrainConfig.to_dict()
        metrics.json    training history, evaluation, device facts, data partitions
        manifest.json   sha256 + size of the three files — written last, so a folder without
                        it is an interrupted write and is never loaded

The path is versioned by the FEID partitions the model saw (``data=``) and by the recipe
(``config=``): retraining on the same data with the same recipe replaces the checkpoint, any
change of data or recipe writes a new one. ``<root>/models/<run name>/latest.json`` points at
the newest. Files go through ``pyarrow.fs`` so the same code writes to a local lake and S3.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import uuid
from typing import Any

import pyarrow.fs as pafs
import torch

from seke.train.config import TrainConfig
from seke.train.model import MultiTaskNet, build_model

FILES = ("model.pt", "config.json", "metrics.json")


def checkpoint_dir(root: str, name: str, data_version: str, config_digest: str) -> str:
    return f"{root.rstrip('/')}/models/{name}/data={data_version}/config={config_digest}"


def _fs(fs: pafs.FileSystem | None, path: str) -> tuple[pafs.FileSystem, str]:
    if fs is not None:
        return fs, path
    return pafs.LocalFileSystem(), os.path.abspath(path)


def _put(fs: pafs.FileSystem, path: str, data: bytes) -> None:
    """Write one file atomically (local: temp + rename; S3: a single PUT is atomic)."""
    if isinstance(fs, pafs.LocalFileSystem):
        tmp = f"{path}.tmp-{uuid.uuid4().hex}"
        with fs.open_output_stream(tmp) as out:
            out.write(data)
        os.replace(tmp, path)
    else:
        with fs.open_output_stream(path) as out:
            out.write(data)


def _get(fs: pafs.FileSystem, path: str) -> bytes:
    with fs.open_input_stream(path) as fh:
        return fh.read()


def _json(obj: Any) -> bytes:
    return json.dumps(obj, indent=2, sort_keys=True, default=str).encode()


def save_checkpoint(model: torch.nn.Module, config: TrainConfig, metrics: dict[str, Any], path: str,
                    fs: pafs.FileSystem | None = None) -> str:
    """Write the checkpoint folder ``path``; returns the folder path."""
    fs, path = _fs(fs, path)
    fs.create_dir(path, recursive=True)
    buf = io.BytesIO()
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    torch.save(state, buf)
    blobs = {"model.pt": buf.getvalue(), "config.json": _json(config.to_dict()), "metrics.json": _json(metrics)}
    for name, data in blobs.items():
        _put(fs, f"{path}/{name}", data)
    manifest = {name: {"sha256": hashlib.sha256(d).hexdigest(), "bytes": len(d)} for name, d in blobs.items()}
    _put(fs, f"{path}/manifest.json", _json(manifest))
    return path


def write_latest(root: str, name: str, checkpoint_path: str, fs: pafs.FileSystem | None = None,
                 extra: dict[str, Any] | None = None) -> str:
    fs, root = _fs(fs, root)
    folder = f"{root.rstrip('/')}/models/{name}"
    fs.create_dir(folder, recursive=True)
    _put(fs, f"{folder}/latest.json", _json({"path": checkpoint_path, **(extra or {})}))
    return f"{folder}/latest.json"


def read_latest(root: str, name: str, fs: pafs.FileSystem | None = None) -> dict[str, Any] | None:
    fs, root = _fs(fs, root)
    p = f"{root.rstrip('/')}/models/{name}/latest.json"
    if not _is_file(fs, p):
        return None
    return json.loads(_get(fs, p))


def _is_file(fs: pafs.FileSystem, path: str) -> bool:
    return fs.get_file_info(path).type == pafs.FileType.File


def resolve_checkpoint(path: str, fs: pafs.FileSystem | None = None) -> str:
    """The checkpoint folder ``path`` names: the folder itself, or a training output root (what
    ``bench/train_fer.py --out`` and the training assets write: ``<root>/models/<run>/latest.json``)
    holding one run, followed to that run's newest checkpoint.

    Why: users pass the ``--out`` folder they chose, not the ``data=…/config=…`` folder inside
    it. The pointer is written as an absolute path, so a root that was moved or copied is
    followed by its relative layout. A root with several runs is ambiguous and refused."""
    fs, path = _fs(fs, path)
    if _is_file(fs, f"{path}/manifest.json"):
        return path
    listed = fs.get_file_info(pafs.FileSelector(f"{path}/models", allow_not_found=True))
    runs = sorted(i.path for i in listed if i.type == pafs.FileType.Directory and _is_file(fs, f"{i.path}/latest.json"))
    if len(runs) > 1:
        names = ", ".join(r.rsplit("/", 1)[-1] for r in runs)
        raise FileNotFoundError(f"{path}: {len(runs)} training runs under models/ ({names}); name one checkpoint folder")
    if runs:
        pointed = str(json.loads(_get(fs, f"{runs[0]}/latest.json")).get("path", "")).rstrip("/")
        for candidate in (pointed, f"{runs[0]}/" + "/".join(pointed.split("/")[-2:])):
            if candidate and _is_file(fs, f"{candidate}/manifest.json"):
                return candidate
    return path


def load_checkpoint(path: str, fs: pafs.FileSystem | None = None, device: str = "cpu"
                    ) -> tuple[MultiTaskNet, TrainConfig, dict[str, Any]]:
    """Rebuild the model from a checkpoint folder (or a training output root with one run, see
    :func:`resolve_checkpoint`); checks every file against the manifest."""
    fs, path = _fs(fs, path)
    path = resolve_checkpoint(path, fs)
    if not _is_file(fs, f"{path}/manifest.json"):
        raise FileNotFoundError(f"{path}: no manifest.json (missing or interrupted checkpoint)")
    manifest = json.loads(_get(fs, f"{path}/manifest.json"))
    blobs = {}
    for name in FILES:
        data = _get(fs, f"{path}/{name}")
        if hashlib.sha256(data).hexdigest() != manifest[name]["sha256"]:
            raise ValueError(f"{path}/{name}: sha256 does not match manifest.json")
        blobs[name] = data
    config = TrainConfig.from_dict(json.loads(blobs["config.json"]))
    model = build_model(config)
    model.load_state_dict(torch.load(io.BytesIO(blobs["model.pt"]), map_location="cpu", weights_only=True))
    model.to(device).eval()
    return model, config, json.loads(blobs["metrics.json"])
