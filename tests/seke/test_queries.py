"""Every saved analyst query runs on a small materialized lake through `seke sql`, and the
headline ones return the numbers polars computes from the same Parquet files."""

import json
from pathlib import Path

import polars as pl
import pytest

from seke.cli import QUERIES_DIR, main, saved_queries
from seke.warehouse import build_warehouse
from tests.seke.products_fixtures import make_lake


@pytest.fixture(scope="module")
def wh(tmp_path_factory):
    root = tmp_path_factory.mktemp("q")
    lake = make_lake(str(root / "lake"))
    db = str(root / "warehouse.duckdb")
    build_warehouse(lake, db)
    return lake, db


def _json(capsys, *args):
    assert main(["sql", *args, "--format", "json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_there_are_at_least_ten_documented_queries():
    queries = saved_queries()
    assert len(queries) >= 10
    assert all(desc for desc in queries.values()), "every query starts with a describing comment"


@pytest.mark.parametrize("name", sorted(p.stem for p in QUERIES_DIR.glob("*.sql")))
def test_every_query_runs_and_returns_rows(wh, capsys, name):
    _, db = wh
    rows = _json(capsys, name, "--db", db)
    assert rows, f"{name} returned no rows on the fixture lake"


def test_class_balance_matches_polars(wh, capsys):
    lake, db = wh
    rows = _json(capsys, "class_balance_per_source", "--db", db)
    vl = lake.read_table("verified_labels").filter(pl.col("status") == "accepted")
    expected = {(s, e): n for s, e, n in vl.group_by("source", "expression").len().iter_rows()}
    assert {(r["source"], r["expression"]): r["faces"] for r in rows} == expected
    for src in ("ckplus", "fer2013"):
        assert sum(r["share"] for r in rows if r["source"] == src) == pytest.approx(1.0, abs=1e-3)


def test_abstention_and_cost_match_polars(wh, capsys):
    lake, db = wh
    vl = lake.read_table("verified_labels")
    rows = {r["source"]: r for r in _json(capsys, "abstention_rate_per_batch", "--db", db)}
    for src, grp in vl.group_by("source"):
        rate = (grp["status"] == "abstained").mean()
        assert rows[src[0]]["abstention_rate"] == pytest.approx(rate, abs=1e-4)
    cost = {r["source"]: r for r in _json(capsys, "cost_per_accepted_face", "--db", db)}
    ms = lake.read_table("mc_samples")
    for src in ("ckplus", "fer2013"):
        acc = vl.filter((pl.col("source") == src) & (pl.col("status") == "accepted")).height
        usd = ms.filter(pl.col("source") == src)["cost_usd"].sum()
        assert cost[src]["usd_per_accepted"] == pytest.approx(usd / acc, abs=1e-6)
        grp = vl.filter(pl.col("source") == src)
        verification = sum((r["verify_prompt_tokens"] or 0) + (r["verify_completion_tokens"] or 0)
                           + sum(x or 0 for x in (r["check_prompt_tokens"] or []))
                           + sum(x or 0 for x in (r["check_completion_tokens"] or []))
                           for r in grp.iter_rows(named=True))
        assert verification > 0
        assert cost[src]["verification_tokens_per_accepted"] == pytest.approx(verification / acc, abs=0.05)


def test_au_prevalence_and_audit(wh, capsys):
    _, db = wh
    rows = _json(capsys, "au_prevalence_by_expression", "--db", db)
    happy = {r["au"]: r["prevalence"] for r in rows if r["expression"] == "happiness"}
    assert happy["AU12"] == 1.0 and happy["AU6"] == 1.0  # the fixture gives every happy face 6+12+25
    audit = _json(capsys, "audit_agreement", "--db", db)
    assert len(audit) == 1 and audit[0]["source"] == "fer2013" and audit[0]["audited_faces"] == 6
    # 2 of the 6 audited faces were answered "contempt" (wrong); all 6 are accepted
    assert audit[0]["accuracy_on_accepted"] == pytest.approx(4 / 6, abs=1e-4)


def test_cli_table_output_and_errors(wh, capsys):
    _, db = wh
    assert main(["sql", "SELECT source, count(*) AS n FROM raw_faces GROUP BY 1 ORDER BY 1", "--db", db]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split() == ["source", "|", "n"] and "ckplus" in out and "(2 rows)" in out
    assert main(["sql", "SELECT * FROM no_such_table", "--db", db]) == 1
    assert "no_such_table" in capsys.readouterr().err
    assert main(["sql", "DROP VIEW raw_faces", "--db", db]) == 2  # refused: read-only
    assert main(["sql", "SELECT 1", "--db", str(Path(db).with_name("missing.duckdb"))]) == 1
    assert main(["sql", "--list"]) == 0
    assert "class_balance_per_source" in capsys.readouterr().out


def test_env_default_paths(wh, capsys, monkeypatch):
    lake, db = wh
    monkeypatch.setenv("SEKE_DUCKDB_PATH", db)
    monkeypatch.setenv("SEKE_LAKE_URI", lake.uri)
    assert main(["sql", "SELECT count(*) AS n FROM feab", "--format", "csv"]) == 0
    assert capsys.readouterr().out.splitlines()[1] == str(lake.read_table("feab").height)
