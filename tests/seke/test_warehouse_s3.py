"""The analyst warehouse over a lake on real S3 (SeaweedFS): same SQL as on a local lake.

DuckDB cannot download httpfs here, so the views are Arrow datasets registered by
``connect_readonly``; the saved queries must give the same answers as on a local copy.
"""

import json

import pytest

services = pytest.importorskip("tests.fixtures_services", reason="S3 fixtures (ops) not present")
seaweedfs = services.seaweedfs
s3_lake_uri = services.s3_lake_uri

from seke.cli import main  # noqa: E402
from seke.warehouse import build_warehouse, connect_readonly  # noqa: E402
from tests.seke.products_fixtures import make_lake  # noqa: E402


def test_same_answers_on_s3_and_local(s3_lake_uri, seaweedfs, tmp_path, capsys):
    s3 = make_lake(s3_lake_uri, s3_endpoint=seaweedfs.endpoint)
    local = make_lake(str(tmp_path / "lake"))
    db_s3, db_local = str(tmp_path / "s3.duckdb"), str(tmp_path / "local.duckdb")
    assert build_warehouse(s3, db_s3) == build_warehouse(local, db_local)
    con = connect_readonly(db_s3)
    types = dict(con.execute("SELECT column_name, column_type FROM (DESCRIBE verified_labels)").fetchall())
    assert types["source"] == "VARCHAR" and types["batch"] == "VARCHAR"
    con.close()
    for name in ("class_balance_per_source", "abstention_rate_per_batch", "au_prevalence_by_expression",
                 "cost_per_accepted_face", "audit_agreement", "model_comparison"):
        out = []
        for db in (db_s3, db_local):
            assert main(["sql", name, "--db", db, "--format", "json"]) == 0
            out.append(json.loads(capsys.readouterr().out))
        assert out[0] == out[1] and out[0], name
