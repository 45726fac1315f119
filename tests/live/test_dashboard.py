"""The dashboard in a real headless Chromium (Debian's, driven by Playwright) against the live
service holding a finished job: its pages show what the API holds, and its cancel button cancels
a running job. Screenshots are saved as test artefacts (test-artifacts/dashboard/)."""
from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, TINY_PRETRAIN, make_settings, settings_env

CHROMIUM = os.environ.get("DARKMATTER_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(os.environ.get("DARKMATTER_TEST_ARTIFACTS", ROOT / "test-artifacts")) / "dashboard"
COUNT_POINTS = "id => { const c = Chart.getChart(id); return c ? c.data.datasets.reduce((n, d, i) => n + c.getDatasetMeta(i).data.length, 0) : -1; }"


@pytest.fixture(scope="module")
def browser():
    playwright = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists() and not shutil.which("chromium"):
        pytest.skip("Debian's chromium is not installed (`make test` installs it: apt-get install chromium)")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium"),
                                    args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        yield browser
        browser.close()


@pytest.fixture
def page(browser, live):
    page = browser.new_page(viewport={"width": 1360, "height": 900})
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if "Content Security Policy" in msg.text else None)
    page.goto(f"{live.url}/?token={live.token}")  # the URL the server prints: the dashboard keeps the token
    wait_for(page, "() => !location.search.includes('token')")  # and takes it out of the address bar
    yield page
    page.close()
    assert not errors, errors  # no uncaught script error on any page


def wait_for(page, expression: str, timeout: float = 30000) -> None:
    """page.wait_for_function, polled from here: its in-page polling compiles the expression with
    eval, which the dashboard's CSP (script-src 'self') refuses, as it should."""
    deadline = time.monotonic() + timeout / 1000
    while not page.evaluate(expression):
        assert time.monotonic() < deadline, f"not true after {timeout / 1000:g} s: {expression}"
        time.sleep(0.1)


def shot(page, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def test_jobs_page_lists_the_finished_job(page, live):
    page.goto(f"{live.url}/#/jobs")
    row = page.locator(f'#jobs-table tr[data-job="{live.job["id"]}"]')
    row.wait_for()
    assert "succeeded" in row.inner_text() and "100%" in row.inner_text() and "simclr" in row.inner_text()
    page.select_option('select[name="state"]', "failed")
    page.locator("#jobs-table").get_by_text("No jobs yet.").wait_for()  # the filter reaches the API
    page.select_option('select[name="state"]', "")
    row.wait_for()
    shot(page, "jobs")


def test_job_page_draws_the_loss_curve_from_the_stream(page, live):
    with live.http() as http:
        losses = http.get(f"/v1/jobs/{live.job['id']}/metrics", params={"name": "loss"}).json()["data"]
    page.goto(f"{live.url}/#/job/{live.job['id']}")
    wait_for(page, f"({COUNT_POINTS})('chart-loss') === {len(losses)}")
    assert page.evaluate(f"({COUNT_POINTS})('chart-lr')") == len(losses) > 0
    page.locator("#events").get_by_text("succeeded").first.wait_for()
    page.locator("#job-scores").get_by_text("knn").first.wait_for()
    assert live.checkpoint in page.inner_text("main")
    shot(page, "job")


def test_leaderboard_shows_the_score(page, live):
    with live.http() as http:
        board = http.get("/v1/scores", params={"protocol": "knn"}).json()["leaderboard"]
    best = next(r for r in board if r["checkpoint"] == live.checkpoint)
    page.goto(f"{live.url}/#/leaderboard")
    row = page.locator("#leaderboard tr", has_text=live.checkpoint).filter(has_text=best["metric"]).first
    row.wait_for()
    shown = page.evaluate("v => Number(v.toPrecision(4)).toString()", best["mean"])
    assert shown in row.inner_text()
    assert page.evaluate(f"({COUNT_POINTS})('chart-leaderboard')") >= 1
    shot(page, "leaderboard")


def test_datasets_page_and_thumbnails(page, live):
    page.goto(f"{live.url}/#/datasets")
    page.locator("#datasets").get_by_text(live.dataset["id"]).wait_for()
    page.click(f"text={live.dataset['id']}")
    wait_for(page, "document.querySelectorAll('#thumbs img[src^=\"blob:\"]').length >= 8")
    assert page.evaluate("document.querySelector('#thumbs img').naturalWidth") == 32  # 8 px digits, 4x
    shot(page, "dataset")


def test_embedding_map_draws_one_point_per_item(page, live):
    page.goto(f"{live.url}/#/map/{live.index['id']}")
    n_items = live.index["result"]["n_items"]
    wait_for(page, f"({COUNT_POINTS})('chart-map') === {n_items}", timeout=60000)
    # hover a point: the tooltip shows that item's image; click it: its neighbours appear
    x, y = page.evaluate("() => { const c = Chart.getChart('chart-map'); const p = c.getDatasetMeta(0).data[0];"
                         " const r = c.canvas.getBoundingClientRect(); return [r.left + p.x, r.top + p.y]; }")
    page.mouse.move(x, y)
    wait_for(page, "() => { const t = document.getElementById('tooltip'); const i = t.querySelector('img');"
                           " return !t.hidden && i && i.src.startsWith('blob:'); }")
    page.mouse.click(x, y)
    page.locator("#neighbor-thumbs figure").nth(8).wait_for()
    assert page.locator("#neighbor-thumbs figure").count() == 9
    shot(page, "map")


def test_cancel_button_cancels_a_running_job(page, live):
    with live.http() as http:
        job = http.post("/v1/jobs", json={**TINY_PRETRAIN, "dataset": live.dataset["id"], "steps": 100000,
                                          "evaluations": []}).json()
    live.wait(job["id"], states=("running",), timeout=120)
    page.goto(f"{live.url}/#/job/{job['id']}")  # while it runs, its curve grows from the live stream
    wait_for(page, f"({COUNT_POINTS})('chart-loss') >= 2", timeout=60000)
    seen = page.evaluate(f"({COUNT_POINTS})('chart-loss')")
    wait_for(page, f"({COUNT_POINTS})('chart-loss') > {seen}", timeout=60000)
    shot(page, "job-running")
    page.goto(f"{live.url}/#/jobs")
    button = page.locator(f'#jobs-table tr[data-job="{job["id"]}"] button.cancel')
    button.click()
    button.click()  # the second click confirms
    assert live.wait(job["id"], timeout=120)["state"] == "cancelled"
    page.locator(f'#jobs-table tr[data-job="{job["id"]}"]', has_text="cancelled").wait_for()
    shot(page, "cancelled")


def test_a_server_with_auth_asks_for_a_key_once_per_tab(browser, tmp_path):
    import subprocess
    import sys

    import httpx

    from jobs.db import session_scope
    from jobs.keys import create_key
    from jobs.migrate import upgrade
    from tests.live.conftest import free_port, wait_ready

    settings, _ = make_settings("sqlite", tmp_path / "home")
    settings = settings.model_copy(update={"auth": True})
    upgrade(settings.database_url)
    with session_scope(settings.database_url) as session:
        _, key = create_key(session, "default")
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "api", "serve", "--port", str(port), "--auth"],
                              env=settings_env(settings), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_ready(url, server)
        assert httpx.get(f"{url}/v1/jobs").status_code == 401
        page = browser.new_page()
        page.goto(f"{url}/#/jobs")
        page.locator("#notice").get_by_text("asks for an API key").wait_for()
        page.fill("#key-input", key)
        page.click("#key-form button")
        page.locator("#jobs-table").get_by_text("No jobs yet.").wait_for()
        assert page.is_hidden("#notice")
        assert page.evaluate("sessionStorage.getItem('darkmatter.key')") == key
        page.reload()  # kept for the tab's session
        page.locator("#jobs-table").get_by_text("No jobs yet.").wait_for()
        page.close()
    finally:
        server.terminate()
        server.wait(30)
