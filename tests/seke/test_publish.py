"""Publishing: licence register, withheld images, dataset card, Hub push dry-run, export folder
safety and the LLaMA-Factory multimodal format (real exports from a small real lake)."""

from __future__ import annotations

import inspect
import io
import json
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest
from PIL import Image

from seke.cli import main
from seke.exports import load_json, missing_images
from seke.feab import build_feab
from seke.feid import build_feid
from seke.lake import Lake
from seke.licences import (batch_licences, is_restricted, licence_key, load_register, policy_for)
from seke.manifest import parse_manifest
from tests.seke.products_fixtures import make_faces, make_samples

RESTRICTED_SOURCES = ("ckplus", "fer2013", "wild", "demo")


def test_register_marks_research_sources_restricted_and_open_licences_allowed():
    reg = load_register()
    for key in RESTRICTED_SOURCES:
        assert key in reg and is_restricted(key, reg), key
        assert reg[key].url and reg[key].attribution
    for key in ("cc-by-4.0", "cc0-1.0", "public-domain", "mit", "apache-2.0"):
        assert not is_restricted(key, reg), key
    assert licence_key(" CC-BY-4.0 ", "ckplus") == "cc-by-4.0" and licence_key("", "CKplus") == "ckplus"


def test_unknown_or_misspelt_licence_is_restricted_with_a_warning_naming_it():
    keys, rows, warnings = batch_licences(["cc-by-4", None, "cc-by-4.0"], "mysource")
    assert keys == ["cc-by-4", "mysource", "cc-by-4.0"]
    reasons = {r.item_id: r for r in rows}
    assert set(reasons) == {"licence:cc-by-4"}          # the manifest typo is a quarantine warning row
    assert len(warnings) == 2 and "'mysource'" in warnings[1]   # an unregistered source: logged
    assert all(r.reason == "unknown_licence" for r in rows)
    assert "'cc-by-4'" in reasons["licence:cc-by-4"].detail and "restricted" in reasons["licence:cc-by-4"].detail
    reg = load_register()
    policy = policy_for(["a", "b", "c"], dict(zip("abc", keys)), reg)
    assert policy.restricted == {"a", "b"} and policy.unknown == ["cc-by-4", "mysource"]
    assert any("'cc-by-4'" in w for w in policy.warnings)


def test_manifest_licence_column_and_conflicting_licences():
    m = parse_manifest(b"image,expression,licence\na.png,happy,CC-BY-4.0\nb.png,sad,\n"
                       b"c.png,sad,cc0-1.0\nc.png,sad,cc-by-4.0\n")
    assert m.rows["a.png"].licence == "CC-BY-4.0" and m.rows["b.png"].licence is None
    # two rows of one image naming two licences: neither is picked, the image stays restricted
    assert m.rows["c.png"].licence.startswith("conflicting:")
    assert is_restricted(licence_key(m.rows["c.png"].licence, "x"), load_register())
    assert any(i.reason == "conflicting_labels" and "licence" in i.detail for i in m.issues)


# ---- a lake with one restricted and one open source -------------------------------------------

def _lake(root: Path) -> Lake:
    lake = Lake(str(root))
    for source, batch, subjects, loose, licence in (("ckplus", "b1", 6, 0, None),
                                                    ("mine", "b2", 0, 24, "cc-by-4.0")):
        raw, labels = make_faces(n_subjects=subjects, per_subject=3, n_loose=loose, source=source, batch=batch)
        lic = [licence] * raw.height
        if source == "mine":
            lic[0] = "cc-by-4"   # misspelt: restricted, with a warning
        raw = raw.with_columns(pl.Series("licence", lic, dtype=pl.String),
                               (pl.lit(f"images/") + pl.col("face_id").str.slice(0, 8) + pl.lit(".png")).alias("file_name"))
        part = {"source": source, "batch": batch}
        lake.write_partition("raw_faces", part, raw.drop("source", "batch"))
        lake.write_partition("verified_labels", part, labels.drop("source", "batch"))
        lake.write_partition("mc_samples", part, make_samples(labels))
        lake.write_partition("feid", part, build_feid(labels, raw).drop("source", "batch"))
        lake.write_partition("feab", part, build_feab(labels, raw).drop("source", "batch"))
    return lake


@pytest.fixture(scope="module")
def lake(tmp_path_factory) -> Lake:
    return _lake(tmp_path_factory.mktemp("publish") / "lake")


@pytest.fixture(scope="module")
def exported(lake, tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "out"
    import contextlib
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc = main(["export", "--lake", lake.uri, "--out", str(out)])
    assert rc == 0
    return out, err.getvalue()


def _restricted_faces(lake: Lake) -> set[str]:
    raw = lake.read_table("raw_faces")
    return set(raw.filter((pl.col("source") == "ckplus") | (pl.col("licence") == "cc-by-4"))["face_id"])


def test_export_withholds_restricted_images_and_names_the_misspelt_licence(lake, exported):
    out, err = exported
    assert "'cc-by-4'" in err and "restricted" in err
    restricted = _restricted_faces(lake)
    raw = lake.read_table("raw_faces")
    for layout, file, path_of in (("llava", "llava.json", lambda r: [r["image"]]),
                                  ("sharegpt", "sharegpt.json", lambda r: r["images"])):
        records = load_json(out / layout / file)
        withheld = [r for r in records if r["seke"]["face_id"] in restricted]
        open_ = [r for r in records if r["seke"]["face_id"] not in restricted]
        assert withheld and open_
        assert all(r["seke"].get("image_withheld") for r in withheld)
        assert missing_images(open_, out / layout) == []          # open images embedded
        assert len(missing_images(withheld, out / layout)) == len(withheld)   # no restricted file
        ref = dict(raw.select("face_id", (pl.col("source") + "/" + pl.col("batch") + "/" + pl.col("file_name"))).iter_rows())
        assert all(path_of(r) == [ref[r["seke"]["face_id"]]] for r in withheld)
        written = {p.stem for p in (out / layout / "images").glob("*.png")}
        assert written.isdisjoint(restricted) and written
    for cfg in ("feid", "feab"):
        table = pq.read_table(next((out / "hf" / cfg).glob("*.parquet"))).to_pylist()
        for row in table:
            if row["face_id"] in restricted:
                assert row["image"]["bytes"] is None and row["image_withheld"] and "/" in row["image"]["path"]
            else:
                assert Image.open(io.BytesIO(row["image"]["bytes"])).size == (48, 48)


def test_allow_restricted_embeds_everything_but_never_pushes(lake, tmp_path, capsys):
    out = tmp_path / "private"
    assert main(["export", "--lake", lake.uri, "--out", str(out), "--allow-restricted", "--format", "llava"]) == 0
    records = load_json(out / "llava" / "llava.json")
    assert missing_images(records, out / "llava") == [] and not any(r["seke"].get("image_withheld") for r in records)
    assert "do not publish" in (out / "llava" / "README.md").read_text()
    assert main(["export", "--lake", lake.uri, "--out", str(tmp_path / "p2"), "--allow-restricted",
                 "--push", "me/feid", "--dry-run"]) == 2
    assert "refusing to push" in capsys.readouterr().err


def test_existing_export_folder_is_refused_unless_overwrite(lake, exported, tmp_path, capsys):
    out = tmp_path / "again"
    (out / "llava" / "images").mkdir(parents=True)
    stale = out / "llava" / "images" / "stale.png"
    stale.write_bytes(b"old")
    mine = out / "notes.txt"
    mine.write_text("mine")
    assert main(["export", "--lake", lake.uri, "--out", str(out), "--format", "llava"]) == 1
    assert "--overwrite" in capsys.readouterr().err and stale.exists()
    assert main(["export", "--lake", lake.uri, "--out", str(out), "--format", "llava", "--overwrite"]) == 0
    assert not stale.exists() and mine.read_text() == "mine"       # only the export's own parts replaced
    assert (out / "llava" / "llava.json").exists()


def test_dataset_card_parses_offline_with_huggingface_hub(lake, exported):
    from huggingface_hub import DatasetCard

    out, _ = exported
    versions = json.loads((out / "lake_versions.json").read_text())
    for layout in ("llava", "sharegpt", "hf"):
        card = DatasetCard.load(out / layout / "README.md")
        data = card.data.to_dict()
        for key in ("license", "task_categories", "language", "size_categories", "source_datasets", "pretty_name"):
            assert data.get(key), (layout, key)
        assert data["license"] == "other" and data["license_link"] == "LICENSE.md"
        assert "extended|ckplus" in data["source_datasets"] and "extended|mine" in data["source_datasets"]
        text = card.text
        for section in ("## Sources and licences", "## How the labels were made", "## Label origins",
                        "## Quality (audit mode)", "## Abstention and quarantine", "## FEAB split rule",
                        "## Known limitations", "## Citation", "## Lake table versions exported"):
            assert section in text, (layout, section)
        assert "arXiv:2505.18168" in text and "offline/fer+blendshapes" in text
        assert "Restricted sources (their terms forbid redistributing the images): ckplus (ckplus), mine (cc-by-4)" in text
        assert json.loads(text.split("## Lake table versions exported")[1].split("```json")[1].split("```")[0]) == versions
        assert (out / layout / "LICENSE.md").is_file()
    hf = DatasetCard.load(out / "hf" / "README.md").data.to_dict()
    assert {c["config_name"] for c in hf["configs"]} == {"feid", "feab"}
    # counts and origin shares are the exported data's own
    feid = lake.read_table("feid")
    text = (out / "hf" / "README.md").read_text()
    assert f"**FEID**: {feid.height} instruction records of {feid['face_id'].n_unique()} faces" in text
    shares = feid.group_by("origin").len().with_columns((pl.col("len") / feid.height).round(4))
    assert json.dumps(dict(sorted(shares.select("origin", "len").iter_rows()))) in text
    labels = lake.read_table("verified_labels")
    assert f"| abstained (sent to review, not exported) | {labels.filter(pl.col('status') == 'abstained').height} |" in text
    assert "| expression_accuracy | not measured |" in text       # no audit faces in this lake


def test_push_dry_run_lists_files_and_builds_the_real_api_call(lake, exported, tmp_path, capsys):
    from huggingface_hub import HfApi

    from seke.hub import push_plan

    out, _ = exported
    plan = push_plan(out / "hf", "someone/seke-feid")
    names = [p for p, _ in plan.files]
    assert "README.md" in names and "LICENSE.md" in names and any(n.startswith("feid/") for n in names)
    # the arguments bind to the installed huggingface_hub's real signatures
    inspect.signature(HfApi.upload_folder).bind(HfApi(), **plan.upload_folder)
    inspect.signature(HfApi.create_repo).bind(HfApi(), **plan.create_repo)
    assert plan.upload_folder["repo_type"] == "dataset" and plan.create_repo["private"] is True
    again = tmp_path / "push"
    assert main(["export", "--lake", lake.uri, "--out", str(again), "--format", "hf",
                 "--push", "someone/seke-feid", "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert "dry run: nothing uploaded" in printed and "README.md" in printed and "someone/seke-feid" in printed


# ---- LLaMA-Factory multimodal format guard -------------------------------------------------------

def test_llama_factory_format_image_tokens_and_dataset_info_columns(exported):
    out, _ = exported
    info = json.loads((out / "sharegpt" / "dataset_info.json").read_text())
    assert set(info) >= {"feid", "feid_messages"}
    for name, entry in info.items():
        records = load_json(out / "sharegpt" / entry["file_name"])
        assert records, name
        cols = entry["columns"]
        tags = entry.get("tags", {})
        role, content = tags.get("role_tag", "from"), tags.get("content_tag", "value")
        user, assistant = tags.get("user_tag", "human"), tags.get("assistant_tag", "gpt")
        assert entry["formatting"] == "sharegpt"
        for rec in records:
            # every column dataset_info names exists in every record
            assert cols["messages"] in rec and cols["images"] in rec, (name, rec.keys())
            turns, images = rec[cols["messages"]], rec[cols["images"]]
            assert isinstance(images, list) and images
            n_tokens = sum(t[content].count("<image>") for t in turns)
            assert n_tokens == len(images), (name, rec["id"])
            assert [t[role] for t in turns] == [user, assistant]
            assert turns[0][content].count("<image>") == len(images)   # images belong to the user turn
    llava = load_json(out / "llava" / "llava.json")
    assert all(sum(t["value"].count("<image>") for t in r["conversations"]) == 1 for r in llava)


def test_ingested_crops_carry_the_manifest_licence(tmp_path):
    from seke.faces import ingest_batch
    from tests.seke.test_near_dup import face_png

    batch = tmp_path / "b"
    batch.mkdir()
    for k in range(3):
        (batch / f"{k}.png").write_bytes(face_png(k))
    (batch / "manifest.csv").write_text("image,licence\n0.png,CC0-1.0\n1.png,cc-by-4\n2.png,\n")
    crops = {c.file_name: c for c in ingest_batch(batch).crops}
    keys, rows, _ = batch_licences([crops[f].known.licence for f in ("0.png", "1.png", "2.png")], "mine")
    assert keys == ["cc0-1.0", "cc-by-4", "mine"]
    assert [r.item_id for r in rows] == ["licence:cc-by-4"]
