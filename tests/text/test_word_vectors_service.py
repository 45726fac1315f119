"""word2vec, fastText and GloVe through the service on a real worker: a job over HTTP on an
uploaded corpus, a safetensors checkpoint holding vectors and vocabulary, scores (kNN and the
WordNet word-similarity score) in the table, word and sentence embeddings, word neighbours, and
the bad inputs answering 4xx."""
from __future__ import annotations

import numpy as np
import pytest

from core.checkpoint import load_backbone
from tests.conftest import wait_for
from tests.e2e.test_text import wait_scanned
from tests.text.word_corpus import ANIMAL_CONTEXT, ANIMALS, TOOLS, jsonl, topic_corpus

KNN = [{"protocol": "knn", "options": {"k": 5}}]
TINY = {"method_options": {"sample": 0.0}, "epochs": 20, "evaluations": KNN}  # a 3,000-word corpus
SPECS = {
    "word2vec": {"method": "word2vec", "backbone_options": {"dim": 24}, **TINY},
    "fasttext": {"method": "fasttext", "backbone_options": {"dim": 24, "buckets": 2000}, **TINY},
    # glove.c updates per entry: on 4,000 entries, batches of 32 give AdaGrad enough steps
    "glove": {"method": "glove", "backbone_options": {"dim": 16}, "method_options": {"min_count": 2, "window": 5},
              "batch_size": 32, "epochs": 30, "evaluations": KNN},
}


def upload(api, data: bytes, name: str = "words.jsonl") -> dict:
    response = api.post("/v1/datasets", files={"file": (name, data)}, data={"test_fraction": "0.2"})
    assert response.status_code == 201, response.text
    return wait_scanned(api, response.json()["id"])


def embed(api, checkpoint: str, texts: list[str], **extra):
    return api.post("/v1/embeddings", json={"model": checkpoint, "input": texts, **extra})


@pytest.mark.parametrize("service", ["sqlite"], indirect=True)  # the text paths on PostgreSQL: tests/e2e/test_text.py
def test_word_vector_jobs_end_to_end(api, worker, tmp_path):
    """One worker, three jobs (about 90 s on a loaded 2-core machine, most of it process starts)."""
    w = worker()
    dataset = upload(api, jsonl(topic_corpus(150, topics=("animal", "tool", "vehicle"))))
    assert dataset["state"] == "ready", (dataset, w.output()[-2000:])
    jobs = {}
    for method, spec in SPECS.items():
        response = api.post("/v1/jobs", json={**spec, "dataset": dataset["id"]})
        assert response.status_code == 201, response.text
        jobs[method] = response.json()["id"]
    for method, job_id in jobs.items():
        done = wait_for(api, job_id, timeout=240)
        assert done["state"] == "succeeded", (method, done, w.output()[-3000:])
        checkpoint = done["result"]["checkpoint"]
        assert done["recipe"]["train"]["steps"] > 0 and done["result"]["vocabulary"] > 20

        # the checkpoint is safetensors: vectors, vocabulary (and fastText's n-gram buckets) rebuild the model
        part = api.get(f"/v1/checkpoints/{checkpoint}/download", params={"part": "backbone"})
        (tmp_path / f"{method}.safetensors").write_bytes(part.content)
        model, manifest = load_backbone(tmp_path / f"{method}.safetensors")
        assert manifest["method"] == method and "cat" in model.words
        assert model.ngram_vectors.shape[0] == (2000 if method == "fasttext" else 0)
        onnx = api.get(f"/v1/checkpoints/{checkpoint}/download", params={"format": "onnx"})
        assert onnx.status_code == 422 and "text checkpoint downloads as safetensors" in onnx.text

        # scores in the table: kNN on mean word vectors, and the WordNet word-similarity score
        for protocol, metric in (("knn", "top1@k5"), ("word-similarity", "synonym_auc")):
            rows = api.get("/v1/scores", params={"dataset": dataset["id"], "protocol": protocol}).json()["data"]
            mine = {r["metric"]: r["value"] for r in rows if r["checkpoint_id"] == checkpoint}
            assert metric in mine, (method, protocol, rows)
        assert mine["pairs"] >= 10  # car, auto, automobile, motorcar, machine

        # words sharing contexts are closer than words of another topic
        words = embed(api, checkpoint, ANIMALS + TOOLS)
        assert words.status_code == 200, words.text
        vectors = np.array([d["embedding"] for d in words.json()["data"]])
        sims = vectors @ vectors.T  # unit vectors: a one-word text is its word's normalised vector
        n = len(ANIMALS)
        same = (sims[:n, :n].sum() - n + sims[n:, n:].sum() - n) / (2 * n * (n - 1))
        assert same > sims[:n, n:].mean() + 0.05, method

        # sentences: the mean of the known words; unknown words skipped (fastText builds them)
        sentences = embed(api, checkpoint, ["the cat and the dog", "xyzzy cat"])
        assert sentences.status_code == 200, sentences.text
        usage = sentences.json()["usage"]
        if method == "fasttext":
            assert usage["oov"] == [] and usage["oov_handling"] == "n-gram vectors"
            assert embed(api, checkpoint, ["xyzzy"], truncate=False).status_code == 200
        else:
            assert usage["oov"] == [{"index": 1, "words": ["xyzzy"]}] and usage["oov_handling"] == "skipped"
            cat = np.array(words.json()["data"][0]["embedding"])
            assert np.allclose(sentences.json()["data"][1]["embedding"], cat, atol=1e-6)
            strict = embed(api, checkpoint, ["xyzzy cat"], truncate=False)
            assert strict.status_code == 422 and "unknown word(s) xyzzy" in strict.text
            none_known = embed(api, checkpoint, ["xyzzy qwertz"])
            assert none_known.status_code == 422 and "no word of this text" in none_known.text

        # neighbours of a word: cosine over the vocabulary
        near = api.post("/v1/words/neighbors", json={"model": checkpoint, "words": ["cat"], "k": 3})
        assert near.status_code == 200, near.text
        found = [n["word"] for n in near.json()["data"][0]["neighbors"]]
        assert len(found) == 3 and "cat" not in found and set(found) <= set(ANIMALS + ANIMAL_CONTEXT), (method, found)
        two = api.post("/v1/words/neighbors", json={"model": checkpoint, "words": ["two words"]})
        assert two.status_code == 422 and "give one word" in two.text
        if method != "fasttext":
            unknown = api.post("/v1/words/neighbors", json={"model": checkpoint, "words": ["xyzzy"]})
            assert unknown.status_code == 422 and "not in the model's vocabulary" in unknown.text


BAD_SPECS = [
    ("topics", {"method": "word2vec", "epochs": 1, "steps": 5}, "not both"),
    ("topics", {"method": "word2vec", "steps": 5}, "give epochs, not steps"),
    ("topics", {"method": "glove", "tokenizer": {"vocab_size": 100}}, "takes no tokenizer"),
    ("topics", {"method": "glove", "warmup_epochs": 1}, "warmup_steps is taken"),
    ("topics", {"method": "fasttext", "backbone_options": {"vocab_size": 10}}, "method_options.min_count"),
    ("topics", {"method": "fasttext", "method_options": {"min_count": 300}}, "distinct words seen at least"),
    ("four words", {"method": "word2vec", "method_options": {"min_count": 1}}, "has 4 distinct words"),
    ("punctuation", {"method": "glove"}, "has 0 distinct words"),
]


def test_word_vector_specs_that_cannot_run_are_422(client, text_service):
    """Scanned in-process (no worker needed to refuse a spec): a fine corpus, one of four words,
    one of punctuation only."""
    from tests.text.test_service import upload as scan

    rows = {"topics": scan(client, text_service, "t.jsonl", jsonl(topic_corpus(20))),
            "four words": scan(client, text_service, "f.txt", b"alpha beta gamma delta\n" * 40),
            "punctuation": scan(client, text_service, "p.txt", b"!!! ... ???\n" * 40)}
    assert all(row["state"] == "ready" for row in rows.values()), rows
    for corpus, spec, reason in BAD_SPECS:
        response = client.post("/v1/jobs", json={**spec, "dataset": rows[corpus]["id"]})
        assert response.status_code == 422 and reason in response.text, (spec, response.text)


def test_an_empty_corpus_is_refused(client, text_service):
    response = client.post("/v1/datasets", files={"file": ("empty.txt", b"")})
    if response.status_code == 201:  # accepted for a scan, which marks it invalid; a job on it is refused
        from workers.scan import run_scan

        assert run_scan(response.json()["id"], text_service) == "invalid"
        job = client.post("/v1/jobs", json={"method": "word2vec", "dataset": response.json()["id"]})
        assert job.status_code in (409, 422) and response.json()["id"] in job.text, job.text
    else:
        assert response.status_code in (400, 413, 422), response.text
