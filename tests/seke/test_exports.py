import io
import json

import polars as pl
import pyarrow.parquet as pq
from PIL import Image

from seke.exports import (export_hf_parquet, export_llava, export_sharegpt, load_json,
                          missing_images)
from seke.feab import build_feab
from seke.feid import build_feid
from tests.seke.products_fixtures import make_faces


def _feid():
    raw, labels = make_faces(n_subjects=4, per_subject=2, n_loose=10)
    return raw, labels, build_feid(labels, raw)


def test_llava_round_trip(tmp_path):
    raw, _, feid = _feid()
    path = export_llava(feid, tmp_path)
    records = load_json(path)
    assert len(records) == feid.height
    assert missing_images(records, tmp_path) == []
    by_id = {r["record_id"]: r for r in feid.iter_rows(named=True)}
    crops = dict(raw.select("face_id", "crop_png").iter_rows())
    for rec in records:
        src = by_id[rec["id"]]
        human, gpt = rec["conversations"]
        assert human["from"] == "human" and human["value"] == "<image>\n" + src["instruction"]
        assert gpt["from"] == "gpt" and gpt["value"] == src["response"]
        assert rec["seke"]["expression"] == src["expression"] and rec["seke"]["aus"] == src["aus"]
        assert (tmp_path / rec["image"]).read_bytes() == crops[src["face_id"]]
    # one image file per face, not per record
    assert len(list((tmp_path / "images").glob("*.png"))) == feid["face_id"].n_unique()


def test_sharegpt_round_trip_and_dataset_info(tmp_path):
    _, _, feid = _feid()
    (tmp_path / "dataset_info.json").write_text(json.dumps({"other": {"file_name": "x.json"}}))
    files = export_sharegpt(feid, tmp_path, dataset_name="feid")
    info = json.loads(files["dataset_info"].read_text())
    assert set(info) == {"other", "feid", "feid_messages"}
    assert info["feid"]["formatting"] == "sharegpt"
    for name, turns_key, role_key, content_key in (("feid", "conversations", "from", "value"),
                                                   ("feid_messages", "messages", "role", "content")):
        entry = info[name]
        records = load_json(tmp_path / entry["file_name"])
        assert entry["columns"]["messages"] == turns_key and entry["columns"]["images"] == "images"
        assert len(records) == feid.height and missing_images(records, tmp_path) == []
        by_id = {r["record_id"]: r for r in feid.iter_rows(named=True)}
        for rec in records:
            turns = rec[turns_key]
            # LLaMA-Factory: one <image> token per image, user turn first, assistant second
            assert turns[0][content_key].count("<image>") == len(rec["images"]) == 1
            assert turns[1][content_key] == by_id[rec["id"]]["response"]
            assert rec["seke"]["origin"] == by_id[rec["id"]]["origin"]
        roles = {t[role_key] for r in records for t in r[turns_key]}
        assert roles == ({"human", "gpt"} if name == "feid" else {"user", "assistant"})


def test_hf_parquet_layout(tmp_path):
    raw, labels, feid = _feid()
    feab = build_feab(labels, raw, fraction=0.5)
    export_hf_parquet(feid, tmp_path, config_name="feid", split="train", rows_per_shard=25)
    export_hf_parquet(feab, tmp_path, config_name="feab", split="test")
    shards = sorted((tmp_path / "feid").glob("train-*.parquet"))
    assert len(shards) == -(-feid.height // 25)
    table = pq.read_table(shards[0])
    assert table.schema.field("image").type.names == ["bytes", "path"]
    features = json.loads(table.schema.metadata[b"huggingface"])["info"]["features"]
    assert features["image"] == {"_type": "Image"}
    assert set(features) == set(table.column_names)
    first = table.slice(0, 1).to_pylist()[0]
    assert Image.open(io.BytesIO(first["image"]["bytes"])).size == (48, 48)
    assert first["image"]["path"] == first["face_id"] + ".png"
    total = sum(pq.read_metadata(s).num_rows for s in shards)
    assert total == feid.height
    readme = (tmp_path / "README.md").read_text()
    assert "config_name: feab" in readme and "path: feid/train-*" in readme
    assert "path: feab/test-*" in readme
    # declared features use the 32-bit Arrow types datasets expects (no large_string)
    assert str(table.schema.field("instruction").type) == "string"
    assert features["aus"] == {"feature": {"dtype": "int32", "_type": "Value"}, "_type": "List"}
    back = pl.read_parquet(tmp_path / "feab" / "test-00000-of-00001.parquet")
    assert back.height == feab.height and "gold_expression" in back.columns
