"""The committed suites are the generated ones, and every expectation is wired to a check."""

from __future__ import annotations

import json

import pytest

from expectations import suite_builder
from expectations.gx_runner import load_suite
from seke import schemas


@pytest.mark.parametrize("table", suite_builder.SUITE_TABLES)
def test_committed_suite_matches_contracts(table: str) -> None:
    committed = (suite_builder.SUITES_DIR / f"{table}.json").read_text(encoding="utf-8")
    assert committed == suite_builder.render(table), (
        f"expectations/suites/{table}.json is stale: run `python -m expectations.suite_builder`")


@pytest.mark.parametrize("table", suite_builder.SUITE_TABLES)
def test_every_expectation_names_a_check_and_its_severity(table: str) -> None:
    suite = load_suite(table)
    checks = suite["meta"]["checks"]
    views = {"rows", *suite["meta"]["views"]}
    for exp in suite["expectations"]:
        meta = exp["meta"]
        assert meta["check"] in checks, exp
        assert meta["severity"] == ("blocking" if checks[meta["check"]]["blocking"] else "warn")
        assert exp["severity"] == {"blocking": "critical", "warn": "warning"}[meta["severity"]]
        assert meta["view"] in views
    # every contract column is required to exist
    existing = {e["kwargs"]["column"] for e in suite["expectations"]
                if e["type"] == "expect_column_to_exist"}
    assert existing == set(schemas.TABLES[table].names)
    json.dumps(suite)  # plain data
