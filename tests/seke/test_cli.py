"""`seke export` / `seke evaluate` / `seke warehouse` end to end on a small materialized lake."""

import json

import polars as pl
import pytest

from seke.cli import main
from seke.exports import load_json, missing_images
from tests.seke.products_fixtures import make_lake


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    return make_lake(str(tmp_path_factory.mktemp("cli") / "lake"))


def test_export_all_formats(lake, tmp_path, capsys):
    out = tmp_path / "out"
    # ckplus/fer2013 images may not be redistributed: a private copy with them needs --allow-restricted
    assert main(["export", "--lake", lake.uri, "--out", str(out), "--origins", "human,verified",
                 "--allow-restricted"]) == 0
    feid = lake.read_table("feid").filter(pl.col("origin").is_in(["human", "verified"]))
    llava = load_json(out / "llava" / "llava.json")
    assert len(llava) == feid.height and missing_images(llava, out / "llava") == []
    info = json.loads((out / "sharegpt" / "dataset_info.json").read_text())
    assert set(info) == {"feid", "feid_messages"}
    assert len(load_json(out / "sharegpt" / "sharegpt.json")) == feid.height
    assert (out / "hf" / "feid").is_dir() and (out / "hf" / "feab").is_dir()
    assert f"{feid.height} FEID records" in capsys.readouterr().out


def test_export_without_feid_is_a_clear_error(tmp_path, capsys):
    assert main(["export", "--lake", str(tmp_path / "empty"), "--out", str(tmp_path / "o")]) == 1
    assert "no FEID records" in capsys.readouterr().err


def test_evaluate_cli_stores_and_compares(lake, tmp_path, capsys):
    args = ["evaluate", "--lake", lake.uri, "--annotator", "seke.evaluate:constant_baseline",
            "--model", "const-cli", "--run-id", "cli-1", "--plots", str(tmp_path / "plots")]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "stored run cli-1 of const-cli" in out and "expression.accuracy" in out
    assert "comparison (latest run per model)" in out and "const-cli" in out
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == [
        "const-cli-cli-1-confusion_matrix.png", "const-cli-cli-1-va_scatter.png"]


def test_warehouse_then_sql(lake, tmp_path, capsys):
    db = str(tmp_path / "w.duckdb")
    assert main(["warehouse", "--lake", lake.uri, "--db", db]) == 0
    assert "views: evaluation_predictions, evaluations, feab, feid, mc_samples" in capsys.readouterr().out
    assert main(["sql", "feab_gold_composition", "--db", db]) == 0
    assert "gold_origin" in capsys.readouterr().out


def test_python_dash_m_seke_sql(lake, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    db = str(tmp_path / "w.duckdb")
    assert main(["warehouse", "--lake", lake.uri, "--db", db]) == 0
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run([sys.executable, "-m", "seke", "sql", "SELECT count(*) AS faces FROM raw_faces"],
                          capture_output=True, text=True, cwd=root,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(root), "SEKE_DUCKDB_PATH": db})
    assert proc.returncode == 0, proc.stderr
    assert str(lake.read_table("raw_faces").height) in proc.stdout


def test_export_records_and_pins_versions_and_vacuum_keeps_them(tmp_path, capsys):
    """An export names the FEID version it used; after the partition is replaced and the lake
    vacuumed, that version is still readable (pinned), and re-exporting it gives the same rows."""
    lake = make_lake(str(tmp_path / "lake"))
    out = tmp_path / "out"
    assert main(["export", "--lake", lake.uri, "--out", str(out), "--format", "llava"]) == 0
    used = json.loads((out / "lake_versions.json").read_text())["feid"]["version"]
    assert used == lake.version("feid")
    exported = len(load_json(out / "llava" / "llava.json"))
    part = lake.partitions("feid")[0]
    lake.write_partition("feid", part, lake.read_partition("feid", part).head(1))   # a newer version
    assert main(["vacuum", "--lake", lake.uri, "--retention-hours", "0"]) == 0
    assert "pinned versions kept" in capsys.readouterr().out
    assert lake.read_table("feid", version=used).height == exported
    again = tmp_path / "again"
    assert main(["export", "--lake", lake.uri, "--out", str(again), "--format", "llava",
                 "--feid-version", str(used)]) == 0
    assert len(load_json(again / "llava" / "llava.json")) == exported


def test_cli_and_asset_evaluate_with_the_lakes_current_knowledge(tmp_path, capsys):
    """`seke evaluate` used to prompt with the v1 tables while the asset used the lake's current
    knowledge; both now go through seke.evaluate.run_evaluation and record the versions."""
    from seke.evaluate import read_evaluations
    from seke.knowledge import load_knowledge, publish_knowledge

    lake = make_lake(str(tmp_path / "lake"))
    publish_knowledge(lake, load_knowledge("v2"))
    assert main(["evaluate", "--lake", lake.uri, "--annotator", "seke.evaluate:constant_baseline",
                 "--model", "const-k", "--run-id", "k-1"]) == 0
    assert "knowledge v2" in capsys.readouterr().out
    stored = lake.read_table("evaluations").filter(pl.col("run") == "k-1")
    assert set(stored["knowledge_version"]) == {"v2"} and set(stored["prompt_version"]) == {"annotate-v1"}
    assert set(stored["feab_version"]) == {lake.version("feab")}
    assert not read_evaluations(lake).is_empty()
