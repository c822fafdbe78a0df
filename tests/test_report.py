"""The report: markdown and self-contained HTML, checked in headless Chromium."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from modalrec.config import parse_config
from modalrec.experiments.runner import Runner
from modalrec.report.build import build_report
from test_runner import config_dict, small_dataset


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("report")
    data = small_dataset(root / "data")
    raw = config_dict(data, models=[{"name": "mostpop"}, {"name": "attribute_knn", "feature_sets": ["noise"]}],
                      audits={"shuffled": True, "random": True, "drop_modality": True, "cold_item": True})
    Runner(parse_config(raw), root / "out", progress=False).run()
    build_report(root / "out")
    return root / "out"


def test_markdown_has_tables_audit_and_selection(report_dir):
    text = (report_dir / "report.md").read_text()
    for heading in ("## Results", "## Content-leverage audit", "## Cold-item audit", "## Selected hyperparameters",
                    "## Representation diagnostics", "## Item explorer"):
        assert heading in text
    assert "| attribute_knn | noise |" in text
    assert "shuffled" in text and "random" in text
    assert (report_dir / "figures" / "results-tiny.png").stat().st_size > 1000
    assert (report_dir / "figures" / "cold-tiny.png").stat().st_size > 1000


def test_html_is_self_contained(report_dir):
    html = (report_dir / "report.html").read_text()
    assert "<script src" not in html and "<link" not in html
    assert html.count("data:image/png;base64,") >= 3  # result plot, audit plot, CKA heatmap


def test_report_renders_in_chromium_without_console_errors(report_dir):
    if not shutil.which("chromedriver") or not shutil.which("chromium"):
        pytest.skip("chromium and chromium-driver are not installed (make browser installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--no-first-run",
                 "--disable-sync", "--disable-quic"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    try:
        driver.get((report_dir / "report.html").as_uri())
        assert "does item content really help" in driver.title
        tables = driver.find_elements(By.CSS_SELECTOR, "table.results")
        assert len(tables) >= 4
        plots = driver.find_elements(By.CSS_SELECTOR, "img.plot")
        assert plots and all(driver.execute_script("return arguments[0].naturalWidth", p) > 0 for p in plots)
        items = driver.find_elements(By.CSS_SELECTOR, "#explorer .item")
        assert len(items) >= 1
        assert "nearest neighbours" in items[0].text
        errors = [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
        assert not errors, errors
    finally:
        driver.quit()
