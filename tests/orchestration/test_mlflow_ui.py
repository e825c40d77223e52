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


FILLERS = 11  # more runs than MLflow draws by default (10), placed before the MGN row


def _store_with_more_runs(grid: dict[str, str], folder: Path) -> str:
    """A copy of the grid's store with ``FILLERS`` more trials sorted between its two rows, so that
    the MGN row is the 13th run, as Table 5's headline rows were (the session's grid is left alone)."""
    from orchestration.runtime.tracking import Tracker, list_order

    shutil.copy(grid["uri"].removeprefix("sqlite:///"), folder / "mlflow.db")
    tracker = Tracker(f"sqlite:///{folder / 'mlflow.db'}")
    experiment = tracker.client.get_experiment_by_name("MGN Table 5").experiment_id
    (parent,) = tracker.client.search_runs([experiment], "tags.`mgn.kind` = 'table'")
    for i in range(FILLERS):
        tags = {"row": f"filler {i}", "row_order": list_order("table5", 0, f" filler {i:02d}")}
        run = tracker.child(experiment, parent.info.run_id, f"filler-{i}", f"filler {i} seed0", tags)
        tracker.log_metrics(run, {"mAP": 1.0 + i, "R1": 2.0 + i}, step=1)
        tracker.finish(run)
    return tracker.uri


def _in_model_training_mode(page) -> str:
    """The page's text, once it is shown in model-training mode: MLflow's sidebar lists the model
    registry only in that mode, and a run page in GenAI mode says "Evaluations" in its breadcrumb."""
    page.get_by_text("Model registry", exact=True).wait_for(timeout=30_000)
    body = page.inner_text("body")
    assert "Evaluations" not in body, page.url
    return body


def test_the_printed_url_opens_the_runs_table_with_its_columns(finished_grid, tmp_path):
    playwright = pytest.importorskip(
        "playwright.sync_api", reason="pip install playwright (in the dev extras)"
    )
    if not Path(CHROMIUM).exists():
        pytest.skip("no Chromium: apt-get install chromium (.ci/run does)")
    shots = Path(os.environ.get("MGN_SCREENSHOTS", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    artifacts = (Path(finished_grid["folder"]) / "mlartifacts").as_uri()
    uri = _store_with_more_runs(finished_grid, tmp_path)
    with mlflow_server(uri, artifacts, {}, tmp_path) as server:
        url = _printed_url(finished_grid["out"], server)
        with playwright.sync_playwright() as browser_driver:
            browser = browser_driver.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            try:
                page = browser.new_page(viewport={"width": 2400, "height": 900})
                page.goto(url)
                page.get_by_text("MGN seed0 (resnet18)").wait_for(timeout=60_000)
                page.screenshot(path=str(shots / "runs-table.png"), full_page=True)
                headers = page.locator("[role=columnheader]").all_inner_texts()
                body = _in_model_training_mode(page)
                name_width = page.locator("[role=columnheader][col-id='attributes.`Run Name`']").bounding_box()
                _every_run_in_the_charts(page, shots)
                _click_through_in_model_training_mode(page, shots)
            finally:
                browser.close()
    assert name_width["width"] >= 400  # "ResNet-50+TP seed0 (resnet18)" uncut
    assert "Model training" in body and "GenAI" in body  # the switch, on model training
    assert "ResNet-50+TP seed0 (resnet18)" in body  # both children, in table order
    assert body.index("ResNet-50+TP seed0") < body.index("MGN seed0 (resnet18)")
    for column in ("Dataset", "Models", "Source", "Version", "User", "R1", "mAP", "mINP"):
        assert column in {h.strip() for h in headers}, (column, headers)
    assert "synthetic train" in body and "mgn-table5-mgn" in body  # a data set and a registered model


def _every_run_in_the_charts(page, shots: Path) -> None:
    """The chart view draws every run of the view: each has "Hide run", none "Unhide run" (MLflow's
    default drew the first 10 only, hiding the MGN row)."""
    page.locator("label:has(input[name=runs-view-mode][value=CHART])").click()
    page.get_by_text("Hide run", exact=True).first.wait_for(state="attached", timeout=30_000)
    page.screenshot(path=str(shots / "runs-charts.png"))
    cards = page.get_by_test_id("experiment-view-compare-runs-card")
    titles = [cards.nth(i).inner_text().split("\n", 1)[0].strip() for i in range(3)]
    assert titles == ["mAP", "R1", "mINP"], titles  # the headline curves first, not branch/Global/R1
    assert page.get_by_text("Unhide run", exact=True).count() == 0
    assert page.get_by_text("Hide run", exact=True).count() == FILLERS + 3  # the parent, two rows, fillers
    page.locator("label:has(input[name=runs-view-mode][value=TABLE])").click()


def _click_through_in_model_training_mode(page, shots: Path) -> None:
    """From the runs table into a run (whose link drops the mode from the URL), its artifacts, back,
    and a comparison of two runs: every page stays in model-training mode."""
    page.get_by_role("link", name="MGN seed0 (resnet18)").click()
    page.wait_for_url("**/runs/*", timeout=30_000)
    assert "workflowType" not in page.url  # the mode is not carried by the link
    _in_model_training_mode(page)
    page.screenshot(path=str(shots / "run-page.png"))
    page.get_by_role("tab", name="Artifacts").or_(page.get_by_text("Artifacts", exact=True)).first.click()
    page.get_by_text("per_query.npz").wait_for(timeout=30_000)
    _in_model_training_mode(page)
    page.go_back()
    page.go_back()
    unchecked = page.get_by_role("checkbox", name="Press Space to toggle row selection (unchecked)")
    unchecked.first.wait_for(timeout=30_000)
    unchecked.first.click()
    unchecked.first.click()
    page.get_by_role("button", name="Compare").click()
    page.wait_for_url("**/compare-runs*", timeout=30_000)
    _in_model_training_mode(page)
    page.screenshot(path=str(shots / "compare.png"))
