"""Text through every path of the service, on a real worker, on each backend: upload a corpus of
WordNet glosses, pretrain `mlm` with a tokenizer trained in the job, then scores, the checkpoint's
tokenizer and weights, /v1/embeddings, an evaluate job with the text baselines, an index and
free-text neighbours, and `simcse` reusing the mlm checkpoint's tokenizer."""
from __future__ import annotations

import time

import torch

from core.checkpoint import load_backbone
from tests.conftest import TINY_PRETRAIN, wait_for
from tests.text.corpus import glosses, jsonl

# a short run: no dropout, a higher peak LR than the tiny recipe's 1e-3, a 500-token vocabulary for 1,200 glosses
MLM = {"method": "mlm", "steps": 300, "batch_size": 64, "lr": 3e-3, "log_every": 50, "tokenizer": {"vocab_size": 500},
       "backbone_options": {"max_length": 32, "dropout": 0.0}, "evaluations": [{"protocol": "knn", "options": {"k": 20}}]}


def wait_scanned(client, dataset_id: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = client.get(f"/v1/datasets/{dataset_id}").json()
        if row["state"] not in ("pending", "scanning"):
            return row
        time.sleep(0.3)
    raise AssertionError(f"dataset {dataset_id} was not scanned in {timeout}s")


def test_mlm_on_uploaded_glosses_end_to_end(api, worker, tmp_path):
    w = worker()
    records = glosses(per_class=300)
    uploaded = api.post("/v1/datasets", files={"file": ("glosses.jsonl", jsonl(records))},
                        data={"test_fraction": "0.2"})
    assert uploaded.status_code == 201, uploaded.text
    dataset = wait_scanned(api, uploaded.json()["id"])
    assert dataset["state"] == "ready", (dataset, w.output()[-3000:])
    assert dataset["stats"]["modality"] == "text" and dataset["n_classes"] == 4
    assert (dataset["n_items"], dataset["n_test"]) == (960, 240)

    too_big = api.post("/v1/jobs", json={**MLM, "dataset": dataset["id"], "tokenizer": {"vocab_size": 200_000}})
    assert too_big.status_code == 422 and "too small for vocab_size 200000" in too_big.text
    wrong_method = api.post("/v1/jobs", json={**TINY_PRETRAIN, "dataset": dataset["id"]})
    assert wrong_method.status_code == 422 and "image method" in wrong_method.text

    job = api.post("/v1/jobs", json={**MLM, "dataset": dataset["id"]})
    assert job.status_code == 201, job.text
    assert job.json()["recipe"]["tokenizer"] == {"kind": "bpe", "vocab_size": 500, "lowercase": True}
    done = wait_for(api, job.json()["id"], timeout=300)
    assert done["state"] == "succeeded", (done, w.output()[-3000:])
    assert done["step"] == 300 and "mlm_accuracy" in done["metrics"]

    # held-out masked-token accuracy beats the unigram model, in the scores table
    checkpoint_id = done["result"]["checkpoint"]
    rows = api.get("/v1/scores", params={"dataset": dataset["id"], "protocol": "mlm"}).json()["data"]
    model = {r["metric"]: r["value"] for r in rows if r["checkpoint_id"] == checkpoint_id}
    unigram = {r["metric"]: r["value"] for r in rows if r["baseline"] == "unigram"}
    assert model["accuracy"] > unigram["accuracy"] and model["masked_tokens"] == unigram["masked_tokens"] > 500
    assert model["perplexity"] < 0.95 * unigram["perplexity"], (model, unigram)
    knn = [r for r in api.get("/v1/scores", params={"dataset": dataset["id"], "protocol": "knn"}).json()["data"]
           if r["checkpoint_id"] == checkpoint_id]
    assert knn and 0.25 < knn[0]["value"] <= 1.0  # four classes

    # the downloaded backbone part carries the tokenizer; /v1/embeddings serves the same vectors
    checkpoint = api.get(f"/v1/checkpoints/{checkpoint_id}").json()
    assert checkpoint["manifest"]["modality"] == "text" and checkpoint["manifest"]["tokenizer"]["vocab_size"] == 500
    (tmp_path / "b.safetensors").write_bytes(api.get(f"/v1/checkpoints/{checkpoint_id}/download").content)
    model_, manifest = load_backbone(tmp_path / "b.safetensors")
    assert model_.tokenizer.get_vocab_size() == 500
    texts = ["a domestic animal that barks", "to move quickly on foot"]
    out = api.post("/v1/embeddings", json={"model": checkpoint_id, "input": texts})
    assert out.status_code == 200, out.text
    body = out.json()
    assert body["dimensions"] == manifest["feature_dim"] and body["usage"]["truncated"] == []
    with torch.no_grad():
        expected = model_(model_.encode(texts).ids)
    assert torch.allclose(torch.tensor([d["embedding"] for d in body["data"]]), expected, atol=1e-4)

    long_text = " ".join(["animal"] * 100)
    cut = api.post("/v1/embeddings", json={"model": checkpoint_id, "input": ["a dog", long_text]}).json()
    assert cut["usage"]["truncated"] == [1] and cut["usage"]["tokens_dropped"] == 100 - 30
    refused = api.post("/v1/embeddings", json={"model": checkpoint_id, "input": [long_text], "truncate": False})
    assert refused.status_code == 422 and "100 tokens" in refused.text
    for bad in ([[[0, 255], [255, 0]]], [""]):
        response = api.post("/v1/embeddings", json={"model": checkpoint_id, "input": bad})
        assert response.status_code == 422, response.text

    # text baselines through the evaluate path, an index, and free-text neighbours
    evaluation = api.post("/v1/jobs", json={"kind": "evaluate", "dataset": dataset["id"],
                                            "checkpoints": ["tfidf", "random-init", checkpoint_id],
                                            "protocols": [{"protocol": "knn", "options": {"k": 20}}]})
    assert evaluation.status_code == 201, evaluation.text
    index = api.post("/v1/jobs", json={"kind": "embed-index", "checkpoint": checkpoint_id, "dataset": dataset["id"]})
    assert index.status_code == 201, index.text
    evaluated = wait_for(api, evaluation.json()["id"], timeout=300)
    assert evaluated["state"] == "succeeded", (evaluated, w.output()[-3000:])
    assert set(evaluated["result"]["scores"]) == {"tfidf", "random-init", checkpoint_id}
    assert evaluated["result"]["scores"]["tfidf"]["knn"]["top1@k20"] > 0.25
    indexed = wait_for(api, index.json()["id"])
    assert indexed["state"] == "succeeded", (indexed, w.output()[-3000:])
    found = api.post("/v1/neighbors", json={"index": indexed["id"], "query": ["a dog that barks", 0], "k": 3})
    assert found.status_code == 200, found.text
    assert [len(d["neighbors"]) for d in found.json()["data"]] == [3, 3]
    assert found.json()["data"][1]["neighbors"][0]["item"] == 0  # an indexed item is its own nearest

    # simcse on the same corpus, reusing the mlm checkpoint's tokenizer
    reuse = api.post("/v1/jobs", json={"method": "simcse", "dataset": dataset["id"], "steps": 10, "batch_size": 32,
                                       "tokenizer": {"checkpoint": checkpoint_id}, "evaluations": []})
    assert reuse.status_code == 201, reuse.text
    assert reuse.json()["recipe"]["backbone_options"]["vocab_size"] == 500
    reused = wait_for(api, reuse.json()["id"])
    assert reused["state"] == "succeeded", (reused, w.output()[-3000:])
    again = api.get(f"/v1/checkpoints/{reused['result']['checkpoint']}").json()["manifest"]["tokenizer"]
    assert again["sha256"] == checkpoint["manifest"]["tokenizer"]["sha256"]

    # text into an image model is refused with the reason
    image_job = wait_for(api, api.post("/v1/jobs", json=TINY_PRETRAIN).json()["id"])
    refused = api.post("/v1/embeddings", json={"model": image_job["result"]["checkpoint"], "input": ["a dog"]})
    assert refused.status_code == 422 and "embeds images" in refused.text
