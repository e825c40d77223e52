"""MLflow's UI in a real browser (Playwright driving the system's Chromium) on a grid's store: the URL
the grid prints opens on its runs, with the metrics, data sets and models as columns.

Screenshots are written to ``$MGN_SCREENSHOTS`` when it is set (else to the test's folder)."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from tests.servers import mlflow_server

pytestmark = [pytest.mark.integration, pytest.mark.browser]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def _printed_url(console: str, server: str) -> str:
    """The URL on the grid's last line, pointed at the server this test started."""
    url = re.search(r"(http://127\.0\.0\.1:5000/\S+)$", console.strip()).group(1)
    return url.replace("http://127.0.0.1:5000", server)


def test_the_printed_url_opens_the_runs_table_with_its_columns(finished_grid, tmp_path):
    playwright = pytest.importorskip(
        "playwright.sync_api", reason="pip install playwright (in the dev extras)"
    )
    if not Path(CHROMIUM).exists():
        pytest.skip("no Chromium: apt-get install chromium (.ci/run does)")
    shots = Path(os.environ.get("MGN_SCREENSHOTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    artifacts = (Path(finished_grid["folder"]) / "mlartifacts").as_uri()
    with mlflow_server(finished_grid["uri"], artifacts, {}, tmp_path) as server:
        url = _printed_url(finished_grid["out"], server)
        with playwright.sync_playwright() as browser_driver:
            browser = browser_driver.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            try:
                page = browser.new_page(viewport={"width": 2400, "height": 900})
                page.goto(url)
                page.get_by_text("MGN seed0 (resnet18)").wait_for(timeout=60_000)
                page.screenshot(path=str(shots / "runs-table.png"), full_page=True)
                headers = page.locator("[role=columnheader]").all_inner_texts()
                body = page.inner_text("body")
            finally:
                browser.close()
    assert "Model training" in body and "GenAI" in body  # the switch, on model training
    assert "ResNet-50+TP seed0 (resnet18)" in body  # both children, in table order
    assert body.index("ResNet-50+TP seed0") < body.index("MGN seed0 (resnet18)")
    for column in ("Dataset", "Models", "Source", "Version", "User", "R1", "mAP", "mINP"):
        assert column in {h.strip() for h in headers}, (column, headers)
    assert "synthetic train" in body and "mgn-table5-mgn" in body  # a data set and a registered model
