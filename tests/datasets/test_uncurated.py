"""Uncurated pretraining through HTTP: WebDataset shards of images only, their classes long-tailed
(SEER's setting, in miniature), pretrain SwAV with the seer recipe at a tiny RegNetY, then an
evaluate job scores the checkpoint on a different, labelled and balanced dataset."""
from __future__ import annotations

import numpy as np

from core.data.builtin import digits
from core.data.long_tail import long_tailed_indices, power_law_counts
from core.data.webdataset import write_shards
from tests.conftest import WorkerProcess, wait_for
from tests.datasets.test_training import wait_scanned

TINY_DESIGN = {"depth": 4, "w_0": 8, "w_a": 8.0, "w_m": 2.0, "group_width": 8}
LINEAR = {"weight_decays": [1e-4], "max_iter": 100}  # one probe, not a sweep: the test times the flow, not the probe


def test_power_law_counts_follow_the_exponent():
    assert power_law_counts([100] * 4, alpha=1.0) == [100, 50, 33, 25]
    assert power_law_counts([100, 3, 100], alpha=2.0, largest=80) == [80, 3, 9]  # capped by what a class has
    labels = np.repeat(np.arange(5), 40)
    kept = np.bincount(labels[long_tailed_indices(labels, alpha=1.5, seed=1)], minlength=5)
    assert sorted(kept.tolist(), reverse=True) == [40, 14, 8, 5, 4]


def test_unlabelled_long_tailed_shards_pretrain_then_evaluate_on_labelled_digits(client, small_service, data_root):
    train, _ = digits()
    keep = long_tailed_indices(train.labels.numpy(), alpha=1.5, largest=120, seed=0)
    counts = np.bincount(train.labels.numpy()[keep], minlength=10)
    assert counts.max() >= 10 * counts.min()  # deliberately imbalanced
    write_shards(train.images[keep, 0].numpy(), data_root, per_shard=100, prefix="uncurated")  # no .cls files
    n_shards = -(-len(keep) // 100)

    worker = WorkerProcess(small_service, name="uncurated").start()
    try:
        uri = str(data_root / f"uncurated-{{000..{n_shards - 1:03d}}}.tar")
        created = client.post("/v1/datasets", json={"uri": uri, "format": "webdataset"})
        assert created.status_code == 201, created.text
        ready = wait_scanned(client, created.json()["id"])
        assert ready["state"] == "ready", (ready, worker.output()[-3000:])
        assert ready["n_items"] == len(keep) and ready["n_classes"] == 0 and ready["stats"]["labelled"] is False

        spec = {"method": "swav", "scale": "seer", "dataset": ready["id"], "backbone": "regnet_y",
                "backbone_options": TINY_DESIGN, "image_size": 16, "batch_size": 32, "steps": 4, "log_every": 1,
                "method_options": {"proj_hidden_dim": 32, "proj_dim": 16, "num_prototypes": 30}}
        job = client.post("/v1/jobs", json=spec)
        assert job.status_code == 201, job.text
        done = wait_for(client, job.json()["id"], timeout=180)
        assert done["state"] == "succeeded" and done["step"] == 4, (done, worker.output()[-3000:])
        recipe = done["recipe"]
        assert recipe["scale"] == "seer" and recipe["train"]["optimizer"] == "lars"
        assert recipe["method_options"]["sinkhorn_iterations"] == 10 and recipe["method_options"]["proj_layers"] == 3
        assert sum(c["count"] for c in recipe["views"]["crops"]) == 6  # 2 global + 4 local crops
        checkpoint = done["result"]["checkpoint"]
        assert done["result"]["scores"] == {}  # no labels in the collection: nothing to score it on
        assert client.get(f"/v1/checkpoints/{checkpoint}/scores").json()["data"] == []
        events = client.get(f"/v1/jobs/{job.json()['id']}/events").json()["data"]
        assert any("evaluations skipped" in e["message"] and "no labels" in e["message"] for e in events)

        protocols = [{"protocol": "knn"}, {"protocol": "linear", "options": LINEAR}]
        evaluation = client.post("/v1/jobs", json={"kind": "evaluate", "checkpoint": checkpoint, "dataset": "digits",
                                                   "protocols": protocols})
        assert evaluation.status_code == 201, evaluation.text
        evaluated = wait_for(client, evaluation.json()["id"], timeout=180)
        assert evaluated["state"] == "succeeded", (evaluated, worker.output()[-3000:])
    finally:
        worker.stop()
    scores = client.get(f"/v1/checkpoints/{checkpoint}/scores").json()["data"]
    by_protocol = {s["protocol"]: s for s in scores if s["metric"] in ("top1@k20", "top1")}
    assert set(by_protocol) == {"knn", "linear"}, scores
    for score in by_protocol.values():
        assert score["dataset_id"] != ready["id"]  # scored on the labelled dataset, not the collection
        assert 0.3 < score["value"] <= 1.0  # ten balanced classes, chance 0.1
