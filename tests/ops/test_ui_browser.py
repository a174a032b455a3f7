"""The Dagster UI in a real headless Chromium: ``dagster dev -w workspace.yaml`` on a free port,
after a real partition was materialized on the same (temporary) instance.

Needs Debian ``chromium`` (``apt-get install -y chromium``) and the ``playwright`` Python
package (``playwright install`` cannot download browsers here, so the system Chromium is used
through ``executable_path``). Screenshots are saved under the test's tmp dir.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.fixtures_services import free_port
from tests.ops.graph_runner import make_landing_batch, require_full_graph, run_batch, run_knowledge

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("SEKE_CHROMIUM", "/usr/bin/chromium")
KEY = "ckplus__ui1"
CHROME_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]

pytestmark = pytest.mark.slow


def _wait_http(url: str, proc: subprocess.Popen, log: Path, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"dagster dev exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except Exception:
            time.sleep(0.5)
    pytest.fail(f"dagster dev not up after {timeout_s}s:\n{log.read_text()[-3000:]}")


@pytest.fixture
def dagster_ui(tmp_path, monkeypatch):
    """A materialized partition on a temp instance, then ``dagster dev`` serving it."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM}: apt-get install -y chromium (or set SEKE_CHROMIUM)")
    pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    require_full_graph()
    from dagster import DagsterInstance

    home, lake, landing = tmp_path / "dagster_home", tmp_path / "lake", tmp_path / "landing"
    home.mkdir()
    shutil.copy(ROOT / "infra" / "dagster.yaml", home / "dagster.yaml")
    env = {"DAGSTER_HOME": str(home), "SEKE_LAKE_URI": str(lake), "SEKE_LANDING_DIR": str(landing),
           "SEKE_DUCKDB_PATH": str(lake / "warehouse.duckdb"), "GX_ANALYTICS_ENABLED": "false",
           "DAGSTER_DISABLE_TELEMETRY": "1"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    make_landing_batch(landing, *KEY.split("__"), n=3)
    instance = DagsterInstance.get()
    try:
        assert run_knowledge(instance, str(lake), landing).success
        # audit mode hides the human labels, so verified_labels also gets its confusion plot
        assert run_batch(instance, str(lake), landing, KEY,
                         run_config={"ops": {"knowledge_prompts": {"config": {"audit_fraction": 1.0}}}}).success
    finally:
        instance.dispose()

    port = free_port()
    log = tmp_path / "dagster_dev.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "dagster", "dev", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
        cwd=ROOT, env={**os.environ, **env}, stdout=open(log, "wb"), stderr=subprocess.STDOUT,
        start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_http(f"{base}/server_info", proc, log)
        yield base, tmp_path
    finally:
        os.killpg(proc.pid, signal.SIGTERM)   # dagster dev's own process group only
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def _dismiss_modal(page) -> None:
    """The first-visit 'Join the Dagster community' dialog can pop up at any moment."""
    skip = page.get_by_role("button", name="Skip")
    if skip.count():
        skip.first.click()


def test_asset_graph_partition_checks_and_plots_in_chromium(dagster_ui):
    from playwright.sync_api import expect, sync_playwright

    from pipelines.definitions import defs

    base, tmp = dagster_ui
    graph = defs.resolve_asset_graph()
    groups: dict[str, list[str]] = {}
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        groups.setdefault(node.group_name, []).append(key.to_user_string())
    check_keys = sorted(graph.asset_check_keys, key=lambda k: (k.asset_key.to_user_string(), k.name))

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROME_FLAGS)
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        page.set_default_timeout(60_000)
        # Whenever the community dialog appears, skip it before the next action.
        page.add_locator_handler(page.get_by_text("Join the Dagster community"),
                                 lambda: page.get_by_role("button", name="Skip").click())

        # 1. The global lineage lists every group; each group's graph shows its assets.
        page.goto(f"{base}/asset-groups")
        _dismiss_modal(page)
        for group in groups:
            expect(page.get_by_text(group, exact=True).first).to_be_visible()
        page.screenshot(path=str(tmp / "lineage.png"))
        for group, assets in groups.items():
            page.goto(f"{base}/locations/seke/asset-groups/{group}")
            _dismiss_modal(page)
            for asset in assets:
                expect(page.get_by_text(asset, exact=True).first).to_be_visible()
            page.screenshot(path=str(tmp / f"group_{group}.png"))

        # 2. The materialized partition: its metadata (row count, path, preview) is shown.
        page.goto(f"{base}/assets/verified_labels?partition={KEY}")
        _dismiss_modal(page)
        expect(page.get_by_text(KEY).first).to_be_visible()
        for label in ("Row count", "path", "preview", "accepted", "abstained"):
            expect(page.get_by_text(label, exact=True).first).to_be_visible()
        expect(page.get_by_text("table_version", exact=True).first).to_be_visible()
        page.screenshot(path=str(tmp / "partition.png"), full_page=True)

        # 2b. The label plots render as images of a readable size (Dagster shows long Markdown
        # behind a "[Show Markdown]" button; the dialog holds the PNG).
        for name in ("confusion", "va", "aus"):
            # the metadata row labelled `name` (a preview table may also have a column so named)
            row = (page.locator("tr").filter(has=page.get_by_text(name, exact=True))
                   .filter(has=page.get_by_text("[Show Markdown]")).last)
            row.get_by_text("[Show Markdown]").click()
            img = page.get_by_role("dialog").locator(f"img[alt='{name}']").first
            expect(img).to_be_visible()
            width, height = img.evaluate("i => [i.naturalWidth, i.naturalHeight]")
            box = img.bounding_box()
            assert 200 < width <= 900 and height > 100, (name, width, height)
            assert box["width"] > 100 and box["height"] > 50, (name, box)
            page.screenshot(path=str(tmp / f"plot_{name}.png"))
            page.get_by_role("dialog").get_by_role("button", name="Close").last.click()
            expect(page.get_by_role("dialog")).to_have_count(0)

        # 2c. The Columns of verified_labels come from its schema (dagster/column_schema).
        page.goto(f"{base}/assets/verified_labels")
        _dismiss_modal(page)
        for column in ("expression_confidence", "consistency_score", "batch"):
            expect(page.get_by_text(column, exact=True).first).to_be_visible()
        page.screenshot(path=str(tmp / "columns.png"), full_page=True)

        # 3. Metadata plots: numeric metadata charted per materialization.
        page.get_by_text("Plots", exact=True).first.click()
        expect(page.locator("canvas").first).to_be_visible()
        expect(page.get_by_text("accepted", exact=True).first).to_be_visible()
        page.screenshot(path=str(tmp / "plots.png"), full_page=True)

        # 4. Asset checks of the graph are listed on their asset's Checks tab.
        for ck in check_keys:
            page.goto(f"{base}/assets/{'/'.join(ck.asset_key.path)}?view=checks")
            _dismiss_modal(page)
            expect(page.get_by_text(ck.name, exact=True).first).to_be_visible()
        if check_keys:
            page.screenshot(path=str(tmp / "checks.png"), full_page=True)
        browser.close()

    assert (tmp / "partition.png").stat().st_size > 10_000
    print(f"screenshots in {tmp}; groups {sorted(groups)}; checks {len(check_keys)}")
