"""Retake the README's dashboard screenshots from a real run: start the service on a temporary
home, pretrain SimCLR on digits, index the test split, and photograph the job page and the
embedding map in Debian's headless Chromium.

    .venv/bin/python docs/screenshots.py [--steps 300] [--port 8799]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from client import Client, processes  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--port", type=int, default=8799)
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="darkmatter-shots-"))
    env = {**os.environ, "DARKMATTER_HOME": str(home), "PYTHONPATH": str(ROOT), "CUDA_VISIBLE_DEVICES": ""}
    for key in ("DARKMATTER_DATABASE_URL", "DARKMATTER_BROKER_URL", "DARKMATTER_RESULT_BACKEND", "DARKMATTER_STORAGE_URL"):
        env.pop(key, None)
    logs = [open(home / "api.log", "wb"), open(home / "worker.log", "wb")]
    procs = [processes.start_api("127.0.0.1", args.port, env=env, log=logs[0]),
             processes.start_worker(env=env, log=logs[1])]
    url = f"http://127.0.0.1:{args.port}"
    try:
        client = Client(url)
        client.wait_ready(120)
        dataset = client.register_builtin("digits")
        job = client.submit({"method": "simclr", "backbone": "small_cnn", "backbone_options": {"width": 16},
                             "dataset": dataset["id"], "steps": args.steps, "log_every": 5, "health_every": 50,
                             "augment": {"flip_p": 0.0}})
        job = client.wait(job["id"], timeout=3600, poll=2, raise_on_failure=True)
        index = client.submit({"kind": "embed-index", "checkpoint": job["result"]["checkpoint"],
                               "dataset": dataset["id"], "split": "test"})
        index = client.wait(index["id"], timeout=600, poll=1, raise_on_failure=True)
        from playwright.sync_api import sync_playwright

        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=args.chromium, args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.goto(f"{url}/#/job/{job['id']}")
            page.wait_for_function("() => { const c = Chart.getChart('chart-loss'); return c && c.data.datasets.length && "
                                   f"c.data.datasets[0].data.length >= {args.steps // 5}; }}")
            page.locator("#job-scores").wait_for()
            page.screenshot(path=str(ROOT / "docs" / "dashboard.png"))
            page.goto(f"{url}/#/map/{index['id']}")
            page.wait_for_function("() => { const c = Chart.getChart('chart-map'); return c && c.data.datasets.length && "
                                   f"c.data.datasets.reduce((n, d) => n + d.data.length, 0) === {index['result']['n_items']}; }}",
                                   timeout=120000)
            page.screenshot(path=str(ROOT / "docs" / "embedding-map.png"))
            browser.close()
        print(f"docs/dashboard.png and docs/embedding-map.png from job {job['id']} and index {index['id']}")
        return 0
    finally:
        processes.stop(procs)
        for log in logs:
            log.close()


if __name__ == "__main__":
    sys.exit(main())
