"""Exports of FEID/FEAB into the formats fine-tuning and evaluation tools read.

Researchers should not need our code to use the data, so each export is a self-contained folder:

* **LLaVA** (``llava.json``): a list of ``{"id", "image", "conversations": [{"from": "human",
  "value": "<image>\\n…"}, {"from": "gpt", "value": …}]}`` — the format of LLaVA's
  ``LazySupervisedDataset``; ``image`` is relative to the folder (pass it as ``image_folder``).
* **ShareGPT for LLaMA-Factory**: ``sharegpt.json`` (``conversations`` with ``from``/``value``
  + ``images``) and ``messages.json`` (OpenAI-style ``messages`` with ``role``/``content`` +
  ``images``), both registered in ``dataset_info.json`` (the folder is a LLaMA-Factory
  ``dataset_dir``; image paths are relative to it, LLaMA-Factory's default ``media_dir``).
* **Face crops** as PNG files under ``images/<face_id>.png`` (one file per face, shared by all
  of its records).
* **Hugging Face Parquet** (``<config>/<split>-0000k-of-0000n.parquet``, configs ``feid`` and
  ``feab``, + ``README.md`` with a ``configs`` block): image bytes in a struct column ``image`` = ``{bytes, path}`` and the
  ``huggingface`` schema metadata declaring it an ``Image`` feature, so
  ``datasets.load_dataset(<folder>, "feid")`` decodes it to PIL images.

Every record keeps its labels, origin and confidence in a ``seke`` object, so a loader can filter
(e.g. human + verified only) without going back to the lake.

Images whose licence forbids redistribution (:mod:`seke.licences`) are *withheld*: each export
function takes ``withheld`` (face_id → reference), writes no image file or bytes for those
faces, puts the reference (``<source>/<batch>/<file_name>``, relative to the landing zone) where
the image path would be, and marks the record ``seke.image_withheld``. A licence holder points
``image_folder``/``media_dir`` at their own copy.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Iterable, Mapping

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

IMAGE_DIR = "images"
LABEL_FIELDS = ("task", "face_id", "expression", "valence", "arousal", "aus", "origin", "confidence",
                "template_id", "template_version", "source", "batch")


def _atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _clean(value: Any) -> Any:
    """JSON-safe value (NaN → null, tuples → lists)."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def write_images(frame: pl.DataFrame, out_dir: str | Path, image_col: str = "image_png",
                 withheld: Mapping[str, str] | None = None) -> dict[str, str]:
    """Write each face's crop once to ``images/<face_id>.png``; returns face_id → relative path.

    Rows without image bytes are skipped (and so get no record in the JSON exports). Faces in
    ``withheld`` get no file: their path is the reference given there.
    """
    out = Path(out_dir)
    (out / IMAGE_DIR).mkdir(parents=True, exist_ok=True)
    paths: dict[str, str] = {}
    withheld = withheld or {}
    for face_id, data in frame.select("face_id", image_col).unique("face_id", keep="first").iter_rows():
        if face_id in withheld:
            paths[face_id] = withheld[face_id]
            continue
        if data is None:
            continue
        rel = f"{IMAGE_DIR}/{face_id}.png"
        target = out / rel
        if not target.exists() or target.stat().st_size != len(data):
            tmp = target.with_name(f".{target.name}.tmp")
            tmp.write_bytes(data)
            os.replace(tmp, target)
        paths[face_id] = rel
    return paths


def _meta(row: dict, withheld: Mapping[str, str] | None = None) -> dict:
    meta = {k: _clean(row[k]) for k in LABEL_FIELDS if k in row}
    if withheld and row["face_id"] in withheld:
        meta["image_withheld"] = True   # licence forbids redistribution: path is a reference
    return meta


def llava_records(feid: pl.DataFrame, image_paths: dict[str, str],
                  withheld: Mapping[str, str] | None = None) -> list[dict]:
    """LLaVA conversation records for FEID rows whose image was written."""
    out = []
    for row in feid.drop("image_png", strict=False).iter_rows(named=True):
        path = image_paths.get(row["face_id"])
        if path is None:
            continue
        out.append({
            "id": row["record_id"], "image": path,
            "conversations": [{"from": "human", "value": f"<image>\n{row['instruction']}"},
                              {"from": "gpt", "value": row["response"]}],
            "seke": _meta(row, withheld),
        })
    return out


def export_llava(feid: pl.DataFrame, out_dir: str | Path, file_name: str = "llava.json",
                 withheld: Mapping[str, str] | None = None) -> Path:
    """Write face crops and ``llava.json``; returns the JSON path."""
    out = Path(out_dir)
    records = llava_records(feid, write_images(feid, out, withheld=withheld), withheld)
    target = out / file_name
    _atomic_write_text(target, json.dumps(records, ensure_ascii=False, indent=1))
    return target


def export_sharegpt(feid: pl.DataFrame, out_dir: str | Path, dataset_name: str = "feid",
                    withheld: Mapping[str, str] | None = None) -> dict[str, Path]:
    """Write crops, ShareGPT JSON in both LLaMA-Factory layouts, and ``dataset_info.json``.

    Registers ``<dataset_name>`` (``conversations``/``from``/``value``) and
    ``<dataset_name>_messages`` (``messages``/``role``/``content``); an existing
    ``dataset_info.json`` in the folder keeps its other entries.
    """
    out = Path(out_dir)
    paths = write_images(feid, out, withheld=withheld)
    sharegpt, messages = [], []
    for row in feid.drop("image_png", strict=False).iter_rows(named=True):
        path = paths.get(row["face_id"])
        if path is None:
            continue
        prompt = f"<image>{row['instruction']}"
        sharegpt.append({"conversations": [{"from": "human", "value": prompt},
                                           {"from": "gpt", "value": row["response"]}],
                         "images": [path], "id": row["record_id"], "seke": _meta(row, withheld)})
        messages.append({"messages": [{"role": "user", "content": prompt},
                                      {"role": "assistant", "content": row["response"]}],
                         "images": [path], "id": row["record_id"], "seke": _meta(row, withheld)})
    files = {"sharegpt": out / "sharegpt.json", "messages": out / "messages.json",
             "dataset_info": out / "dataset_info.json"}
    _atomic_write_text(files["sharegpt"], json.dumps(sharegpt, ensure_ascii=False, indent=1))
    _atomic_write_text(files["messages"], json.dumps(messages, ensure_ascii=False, indent=1))
    info: dict[str, Any] = {}
    if files["dataset_info"].exists():
        info = json.loads(files["dataset_info"].read_text(encoding="utf-8"))
    info[dataset_name] = {"file_name": files["sharegpt"].name, "formatting": "sharegpt",
                          "columns": {"messages": "conversations", "images": "images"}}
    info[f"{dataset_name}_messages"] = {
        "file_name": files["messages"].name, "formatting": "sharegpt",
        "columns": {"messages": "messages", "images": "images"},
        "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user",
                 "assistant_tag": "assistant"},
    }
    _atomic_write_text(files["dataset_info"], json.dumps(info, indent=2))
    return files


# ---- Hugging Face datasets Parquet --------------------------------------------------------

def _hf_feature(t: pa.DataType) -> dict:
    """``datasets`` feature JSON for an Arrow type (Value / List)."""
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return {"feature": _hf_feature(t.value_type), "_type": "List"}
    names = {pa.string(): "string", pa.large_string(): "string", pa.float64(): "float64",
             pa.float32(): "float32", pa.int32(): "int32", pa.int64(): "int64", pa.bool_(): "bool",
             pa.binary(): "binary"}
    return {"dtype": names.get(t, str(t)), "_type": "Value"}


def _small_types(t: pa.DataType) -> pa.DataType:
    """polars hands out large_string/large_list; ``datasets`` features name the 32-bit ones."""
    if pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return pa.string()
    if pa.types.is_large_binary(t) or pa.types.is_binary_view(t):
        return pa.binary()
    if pa.types.is_large_list(t) or pa.types.is_list(t) or pa.types.is_list_view(t):
        return pa.list_(_small_types(t.value_type))
    return t


def hf_table(frame: pl.DataFrame, image_col: str = "image_png",
             withheld: Mapping[str, str] | None = None) -> pa.Table:
    """Arrow table in the ``datasets`` layout: ``image`` struct first, labels after; a withheld
    face has ``{bytes: null, path: <reference>}`` and ``image_withheld`` true."""
    arrow = frame.to_arrow()
    arrow = arrow.cast(pa.schema([pa.field(f.name, _small_types(f.type)) for f in arrow.schema]))
    face_ids = arrow.column("face_id").to_pylist()
    data = arrow.column(image_col).to_pylist()
    withheld = withheld or {}
    image = pa.array([{"bytes": None, "path": withheld[f]} if f in withheld
                      else None if d is None else {"bytes": d, "path": f"{f}.png"} for f, d in zip(face_ids, data)],
                     type=pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
    arrow = arrow.append_column("image_withheld", pa.array([f in withheld for f in face_ids], pa.bool_()))
    rest = arrow.drop_columns([image_col])
    table = pa.Table.from_arrays([image, *rest.columns], names=["image", *rest.column_names])
    features = {"image": {"_type": "Image"}}
    features.update({f.name: _hf_feature(f.type) for f in rest.schema})
    meta = {b"huggingface": json.dumps({"info": {"features": features}}).encode()}
    return table.replace_schema_metadata(meta)


def hf_configs(out: Path) -> list[dict[str, Any]]:
    """The Hub ``configs`` entries for every ``<config>/<split>-*.parquet`` in ``out``."""
    configs: dict[str, set[str]] = {}
    for p in sorted(Path(out).glob("*/*.parquet")):
        configs.setdefault(p.parent.name, set()).add(p.name.split("-")[0])
    first = "feid" if "feid" in configs else min(configs, default="")
    return [{"config_name": name, **({"default": True} if name == first else {}),
             "data_files": [{"split": s, "path": f"{name}/{s}-*"} for s in sorted(splits)]}
            for name, splits in sorted(configs.items())]


def _write_readme(out: Path) -> None:
    """README whose ``configs`` block lists every ``<config>/<split>-*.parquet`` in ``out``
    (``seke export`` then replaces it with the full card of :mod:`seke.dataset_card`)."""
    configs: dict[str, set[str]] = {}
    for p in sorted(out.glob("*/*.parquet")):
        configs.setdefault(p.parent.name, set()).add(p.name.split("-")[0])
    blocks = []
    first = "feid" if "feid" in configs else min(configs, default="")
    for name, splits in sorted(configs.items()):
        files = "\n".join(f"  - split: {s}\n    path: {name}/{s}-*" for s in sorted(splits))
        default = "  default: true\n" if name == first else ""
        blocks.append(f"- config_name: {name}\n{default}  data_files:\n{files}")
    readme = ("---\nconfigs:\n" + "\n".join(blocks) + "\n---\n\n"
              "# SEKE facial-emotion data\n\nExported by `seke export`. Column `image` holds the face "
              "crop (PNG bytes); `origin`/`gold_origin` and `confidence` say where each label came "
              "from. Load with `datasets.load_dataset(\"<this folder>\", \"<config>\")`.\n")
    _atomic_write_text(out / "README.md", readme)


def export_hf_parquet(frame: pl.DataFrame, out_dir: str | Path, config_name: str = "feid",
                      split: str = "train", image_col: str = "image_png",
                      rows_per_shard: int = 5000, withheld: Mapping[str, str] | None = None) -> list[Path]:
    """Write ``<config>/<split>-xxxxx-of-xxxxx.parquet`` shards and a README with ``configs``.

    FEID and FEAB have different columns, so they are different configs of one folder
    (conventionally ``feid``/``train`` and ``feab``/``test``); the README lists every config and
    split found, so calling this once per product builds the whole dataset card.
    """
    out = Path(out_dir)
    data_dir = out / config_name
    data_dir.mkdir(parents=True, exist_ok=True)
    for old in data_dir.glob(f"{split}-*.parquet"):
        old.unlink()
    table = hf_table(frame, image_col, withheld)
    n = max(1, math.ceil(table.num_rows / rows_per_shard))
    written = []
    for k in range(n):
        shard = table.slice(k * rows_per_shard, rows_per_shard)
        target = data_dir / f"{split}-{k:05d}-of-{n:05d}.parquet"
        tmp = target.with_name(f".{target.name}.tmp")
        pq.write_table(shard, tmp, compression="zstd")
        os.replace(tmp, target)
        written.append(target)
    _write_readme(out)
    return written


def export_all(feid: pl.DataFrame, feab: pl.DataFrame | None, out_dir: str | Path) -> dict[str, Any]:
    """Every export of FEID (and FEAB as the ``test`` split of the HF layout) into ``out_dir``."""
    out = Path(out_dir)
    result: dict[str, Any] = {"llava": export_llava(feid, out / "llava")}
    result.update({f"sharegpt_{k}": v for k, v in export_sharegpt(feid, out / "sharegpt").items()})
    result["hf_feid"] = export_hf_parquet(feid, out / "hf", config_name="feid", split="train")
    if feab is not None and feab.height:
        result["hf_feab"] = export_hf_parquet(feab, out / "hf", config_name="feab", split="test")
    return result


def load_json(path: str | Path) -> list[dict]:
    """Read an exported JSON list back (used by tests and by users checking an export)."""
    return json.loads(Path(path).read_text(encoding="utf-8"))


def missing_images(records: Iterable[dict], root: str | Path) -> list[str]:
    """Image paths referenced by ``records`` (LLaVA ``image`` or ShareGPT ``images``) that do not exist."""
    base = Path(root)
    missing = []
    for r in records:
        for p in ([r["image"]] if "image" in r else r.get("images", [])):
            if not (base / p).is_file():
                missing.append(p)
    return missing
