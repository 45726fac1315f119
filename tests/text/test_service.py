"""Bad text input through HTTP: each is a clear 4xx or an `invalid` dataset with its reason, and
the text methods and the built-in WordNet glosses as GET /v1/methods and /v1/datasets show them."""
from __future__ import annotations

import pytest

from tests.text.corpus import glosses, jsonl
from workers.scan import run_scan

MLM = {"method": "mlm", "steps": 5, "batch_size": 16, "tokenizer": {"vocab_size": 300}}


def upload(client, settings, filename: str, data: bytes) -> dict:
    response = client.post("/v1/datasets", files={"file": (filename, data, "application/octet-stream")})
    assert response.status_code == 201, response.text
    assert run_scan(response.json()["id"], settings) in ("ready", "invalid")
    return client.get(f"/v1/datasets/{response.json()['id']}").json()


@pytest.mark.parametrize("line, reason", [
    (b'{"label": "x"}', "line 2 needs a string field 'text'"),
    (b'{"text": 7}', "line 2 needs a string field 'text'"),
    (b'{"text": "   "}', "line 2: 'text' is empty"),
    (b'{"text": "ok", "label": [1]}', "line 2: 'label' must be a string or an integer"),
    (b'{"text": ', "line 2 is not JSON"),
])
def test_bad_jsonl_lines_make_an_invalid_dataset_with_the_line(client, text_service, line, reason):
    row = upload(client, text_service, "c.jsonl", b'{"text": "a fine line"}\n' + line + b"\n")
    assert row["state"] == "invalid" and reason in row["error"], row


def test_non_utf8_text_is_refused(client, text_service):
    head = client.post("/v1/datasets", files={"file": ("c.txt", b"\xff\xfe bad bytes\n")})
    assert head.status_code == 422 and "does not look like txt" in head.text
    row = upload(client, text_service, "c.txt", b"fine words\n" * 200 + b"\xc3\x28 later\n")
    assert row["state"] == "invalid" and "not UTF-8" in row["error"]


@pytest.fixture
def glosses_dataset(client, text_service) -> dict:
    row = upload(client, text_service, "g.jsonl", jsonl(glosses(per_class=60)))
    assert row["state"] == "ready" and row["stats"]["modality"] == "text", row
    return row


def test_specs_a_text_dataset_cannot_run_are_422(client, glosses_dataset):
    dataset = glosses_dataset["id"]
    capacity = glosses_dataset["stats"]["vocab_capacity"]["bpe"]
    cases = [
        ({"tokenizer": {"vocab_size": capacity + 1000}}, f"yields at most {capacity} bpe tokens"),
        ({"tokenizer": None}, "too small for vocab_size 8000"),  # the tiny recipe's default vocabulary
        ({"backbone_options": {"max_length": 1000}}, "holds 3..512"),
        ({"backbone_options": {"vocab_size": 50}}, "set tokenizer.vocab_size"),
        ({"augment": {"jitter_p": 0.5}}, "augment: not used by text methods"),
        ({"image_size": 32}, "image_size: not used by text methods"),
        ({"tokenizer": {"checkpoint": "ckpt_missing"}}, "ckpt_missing"),
        ({"tokenizer": {"checkpoint": "ckpt_x", "vocab_size": 100}}, "not both"),
        ({"scale": "large"}, "no 'large' recipe"),
        ({"method": "simclr"}, "image method"),
        ({"backbone": "resnet18"}, "resnet18 is an image backbone"),
    ]
    for change, reason in cases:
        spec = {k: v for k, v in {**MLM, "dataset": dataset, **change}.items() if v is not None}
        response = client.post("/v1/jobs", json=spec)
        assert response.status_code == 422 and reason in response.text, (change, response.text)
    for spec in ({"kind": "evaluate", "dataset": dataset, "checkpoint": "raw-pixels"},
                 {"kind": "evaluate", "dataset": dataset, "checkpoint": "random-init",
                  "backbone_options": {"dim": 100, "heads": 3}},
                 {"kind": "evaluate", "dataset": dataset, "checkpoint": "random-init", "backbone": "resnet18"},
                 {"kind": "evaluate", "dataset": "digits", "checkpoint": "tfidf"},
                 {**MLM, "dataset": "digits"},
                 {"method": "simclr", "backbone": "text_tiny", "dataset": "digits", "steps": 2}):
        assert client.post("/v1/jobs", json=spec).status_code == 422, spec
    ok = client.post("/v1/jobs", json={**MLM, "dataset": dataset})
    assert ok.status_code == 201, ok.text
    recipe = ok.json()["recipe"]
    assert recipe["modality"] == "text" and recipe["backbone_options"] == {"max_length": 64, "vocab_size": 300}
    assert "views" not in recipe and "image_size" not in recipe and recipe["train"]["optimizer"] == "adamw"


def test_text_methods_are_listed_with_their_recipes(client):
    methods = {m["name"]: m for m in client.get("/v1/methods").json()["data"]}
    assert methods["mlm"]["modality"] == methods["simcse"]["modality"] == "text"
    assert methods["mlm"]["scales"] == ["base", "small", "tiny"]
    assert methods["mlm"]["default_backbone"] == "text_tiny"  # what a job without a backbone trains
    detail = client.get("/v1/methods/simcse").json()
    tiny = detail["recipes"]["tiny"]
    assert tiny["method_options"]["temperature"] == 0.05 and tiny["tokenizer"]["kind"] == "bpe" and "views" not in tiny


def test_wordnet_glosses_is_a_builtin_labelled_text_set(client):
    response = client.post("/v1/datasets", json={"builtin": "wordnet-glosses"})
    if response.status_code == 422 and "wordnet-base" in response.text:
        pytest.skip("wordnet-base is not installed")
    row = response.json()
    assert row["state"] == "ready" and row["stats"]["modality"] == "text" and row["n_classes"] == 41
    assert (row["n_items"], row["n_test"]) == (86294, 9588)
    assert {"noun.animal", "verb.motion"} <= set(row["stats"]["classes"])
    assert row["stats"]["vocab_capacity"]["bpe"] > 30_000
