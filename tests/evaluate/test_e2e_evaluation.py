"""One HTTP flow on a real worker (SQLite): pretrain with auto-evaluation, the leaderboard,
an evaluate job over a checkpoint and both baselines (its features come from the cache), and an
embed-index job queried through /v1/neighbors."""
from __future__ import annotations

import pytest

from core.index import faiss_available
from tests.conftest import TINY_PRETRAIN, wait_for

SQLITE = pytest.mark.parametrize("service", ["sqlite"], indirect=True)
SEARCH = "hnsw" if faiss_available() else "exact"


def events(api, job_id):
    return api.get(f"/v1/jobs/{job_id}/events").json()["data"]


@SQLITE
def test_pretrain_evaluate_and_neighbors(api, worker):
    worker()
    job = api.post("/v1/jobs", json={**TINY_PRETRAIN, "health_every": 3}).json()
    assert [e["protocol"] for e in job["spec"]["evaluations"]] == ["knn", "linear"]
    done = wait_for(api, job["id"], timeout=90)
    assert done["state"] == "succeeded", done
    checkpoint = done["result"]["checkpoint"]
    assert {"health/rankme", "health/std_mean"} <= set(done["metrics"])

    board = api.get("/v1/scores", params={"dataset": "digits", "method": "simclr"}).json()["leaderboard"]
    best = {(b["protocol"], b["metric"]): b for b in board}
    assert {("knn", "top1@k20"), ("knn", "top1@k200"), ("linear", "top1"), ("linear", "top5")} <= set(best)
    assert best["linear", "top1"]["checkpoint"] == checkpoint and 0.1 < best["linear", "top1"]["mean"] <= 1
    assert best["knn", "top1@k20"]["compute_seconds"] > 0 and best["knn", "top1@k20"]["score_per_compute_hour"] > 0
    mine = api.get(f"/v1/checkpoints/{checkpoint}/scores").json()["data"]
    assert {s["protocol"] for s in mine} == {"knn", "linear"}

    spec = {"kind": "evaluate", "checkpoints": [checkpoint, "raw-pixels", "random-init"], "dataset": "digits",
            "backbone": "small_cnn", "protocols": [{"protocol": "knn", "options": {"k": [20]}}, {"protocol": "linear"},
                                                   {"protocol": "clustering", "options": {"n_init": 2}},
                                                   {"protocol": "health"},
                                                   {"protocol": "finetune", "options": {"steps": 4, "batch_size": 16}}]}
    evaluation = wait_for(api, api.post("/v1/jobs", json=spec).json()["id"], timeout=90)
    assert evaluation["state"] == "succeeded", evaluation
    results = evaluation["result"]["scores"]
    assert set(results) == {checkpoint, "raw-pixels", "random-init"}
    assert set(results[checkpoint]) == set(results["random-init"]) == {"knn", "linear", "clustering", "health",
                                                                        "finetune"}
    assert "finetune" not in results["raw-pixels"]  # it needs an encoder
    assert {"nmi", "ari"} <= set(results["raw-pixels"]["clustering"]) and "rankme" in results[checkpoint]["health"]
    assert evaluation["progress"] == 1.0
    cache = [e["data"] for e in events(api, evaluation["id"]) if "cache" in e["data"]]
    ckpt_cache = {e["cache"] for e in cache if f"/{checkpoint}/" in e["features"]}
    assert ckpt_cache == {"hit"}  # the checkpoint's backbone did not run again
    knn = api.get("/v1/scores", params={"dataset": "digits", "protocol": "knn", "metric": "top1@k20"}).json()
    methods = {b["method"]: b["mean"] for b in knn["leaderboard"]}
    assert {"simclr", "raw-pixels", "random-init"} <= set(methods) and methods["raw-pixels"] > 0.9

    index = wait_for(api, api.post("/v1/jobs", json={"kind": "embed-index", "checkpoint": checkpoint,
                                                     "dataset": "digits", "split": "test",
                                                     "dtype": "float16", "search": SEARCH}).json()["id"],
                     timeout=60)
    n_test = api.get(f"/v1/datasets/{index['spec']['dataset']}").json()["n_test"]
    assert index["state"] == "succeeded" and index["result"]["n_items"] == n_test, index
    assert [e["data"]["cache"] for e in events(api, index["id"]) if "cache" in e["data"]] == ["hit"]
    image = [[float((i * j) % 16 * 16) for j in range(8)] for i in range(8)]
    found = api.post("/v1/neighbors", json={"index": index["id"], "query": [5, image], "k": 3}).json()
    assert found["search"] == ("hnsw" if SEARCH == "hnsw" else "exact-cosine") and len(found["data"]) == 2
    exact = api.post("/v1/neighbors", json={"index": index["id"], "query": [5], "k": 3, "exact": True}).json()
    assert exact["search"] == "exact-cosine"
    for first in (found["data"][0]["neighbors"], exact["data"][0]["neighbors"]):
        assert first[0]["item"] == 5 and first[0]["score"] == pytest.approx(1.0, abs=1e-2)
        assert [n["score"] for n in first] == sorted([n["score"] for n in first], reverse=True)
    assert len(found["data"][1]["neighbors"]) == 3
    bad = api.post("/v1/neighbors", json={"index": index["id"], "query": [10_000]})
    assert bad.status_code == 422 and "not in the index" in bad.json()["detail"]
