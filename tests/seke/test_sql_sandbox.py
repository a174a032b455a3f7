"""`seke sql` cannot write, attach, load or read outside the lake (issue: analysts' SQL
overwrote a live FEID partition and read /etc/passwd)."""

import hashlib
from pathlib import Path

import pytest

from seke.cli import main
from seke.warehouse import build_warehouse
from tests.seke.products_fixtures import make_lake


@pytest.fixture(scope="module")
def wh(tmp_path_factory):
    root = tmp_path_factory.mktemp("sandbox")
    lake = make_lake(str(root / "lake"))
    db = str(root / "lake" / "warehouse.duckdb")
    build_warehouse(lake, db)
    return lake, db


def _lake_digest(lake) -> dict[str, str]:
    root = Path(lake.uri)
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _feid_file(lake) -> str:
    return lake.files("feid")[0][0]


ATTACKS = {
    "copy_over_feid": lambda lake: f"COPY (SELECT 1 AS x) TO '{_feid_file(lake)}' (FORMAT parquet)",
    "copy_new_file": lambda lake: f"COPY (SELECT 1) TO '{lake.uri}/feid/evil.parquet'",
    "read_passwd": lambda lake: "SELECT * FROM read_csv('/etc/passwd')",
    "read_text": lambda lake: "SELECT * FROM read_text('/etc/hostname')",
    "glob_root": lambda lake: "SELECT * FROM glob('/*')",
    "attach": lambda lake: f"ATTACH '{lake.uri}/other.duckdb' AS o",
    "install": lambda lake: "INSTALL httpfs",
    "load": lambda lake: "LOAD httpfs",
    "set_access": lambda lake: "SET enable_external_access = true",
    "export_db": lambda lake: f"EXPORT DATABASE '{lake.uri}/dump'",
    "create_table": lambda lake: "CREATE TABLE x AS SELECT 1",
    "select_then_copy": lambda lake: f"SELECT 1; COPY (SELECT 2) TO '{lake.uri}/x.csv'",
}


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_attack_fails_clearly_and_changes_nothing(wh, capsys, name):
    lake, db = wh
    before = _lake_digest(lake)
    code = main(["sql", ATTACKS[name](lake), "--db", db])
    err = capsys.readouterr().err
    assert code != 0, name
    assert "refused" in err or "read-only" in err.lower() or "Error" in err, err
    assert _lake_digest(lake) == before, f"{name} changed the lake"


def test_queries_still_work_and_can_read_the_lake_itself(wh, capsys):
    lake, db = wh
    assert main(["sql", "SELECT count(*) AS n FROM feid", "--db", db, "--format", "csv"]) == 0
    n = int(capsys.readouterr().out.splitlines()[1])
    assert n == lake.read_table("feid").height and n > 0
    # reading the lake's own Parquet directly is allowed; WITH/DESCRIBE/EXPLAIN are queries too
    one = _feid_file(lake)
    for sql in (f"SELECT count(*) FROM read_parquet('{one}')", "WITH a AS (SELECT 1 AS x) SELECT * FROM a",
                "DESCRIBE feid", "EXPLAIN SELECT * FROM feid"):
        assert main(["sql", sql, "--db", db]) == 0, sql
    capsys.readouterr()
