"""Shared fixtures: where the real labelled faces live (../shared/data), skipping when absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    return Path(os.environ.get("SEKE_SHARED_DATA", REPO_ROOT.parent / "shared" / "data")).resolve()


@pytest.fixture(scope="session", autouse=True)
def _outputs_outside_the_repo(tmp_path_factory):
    """Assets that write beside the lake (the Label Studio review queue) default to ./review;
    point them at a temporary folder so test runs never write into the checkout."""
    old = os.environ.get("SEKE_REVIEW_DIR")
    os.environ["SEKE_REVIEW_DIR"] = str(tmp_path_factory.mktemp("review"))
    yield
    if old is None:
        os.environ.pop("SEKE_REVIEW_DIR", None)
    else:
        os.environ["SEKE_REVIEW_DIR"] = old


@pytest.fixture(scope="session")
def shared_data() -> Path:
    d = shared_data_dir()
    if not (d / "ckplus" / "manifest.csv").exists():
        pytest.skip(f"real labelled faces not found at {d} (set SEKE_SHARED_DATA)")
    return d
