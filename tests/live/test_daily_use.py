"""What a first-time user trips over (issue 24), through the CLI and HTTP against the live service:
help and server agree, full ids, a slow server is not a dead one, did-you-mean, folders and
datasets by name, small-dataset defaults, single-string embeddings, class names in neighbours."""
from __future__ import annotations

import base64
import io
import json
import re
import socket

import httpx
import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from client import Client
from client.cli import app
from client.errors import ServerTimeout
from core.data.arrays import ArrayDataset, split_by_fraction


@pytest.fixture
def cli(live):
    def run(*args: str, code: int = 0, columns: int = 200):
        result = CliRunner().invoke(app, list(args), env={"DARKMATTER_URL": live.url, "COLUMNS": str(columns)})
        assert result.exit_code == code, (args, result.output)
        assert "Traceback" not in result.output
        return result.output

    return run


def png(value: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((8, 8), value, dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_help_version_and_a_global_url(cli, live):
    assert "Commands:" in cli("-h") and "Usage:" in cli("jobs", "ls", "-h")
    assert re.fullmatch(r"darkmatter \S+\n", cli("--version"))
    assert live.job["id"] in CliRunner().invoke(app, ["--url", live.url, "jobs", "ls"], env={"COLUMNS": "200"}).output
    dead = CliRunner().invoke(app, ["--url", "http://127.0.0.1:9", "jobs", "ls"], env={"DARKMATTER_URL": live.url})
    assert dead.exit_code == 3 and "http://127.0.0.1:9" in dead.output  # the global --url wins over the variable
    listing = " ".join(cli("-h").split("Commands:")[1].split())
    assert "e.g. `--queue gpu --gpus 0,1` on a GPU machine" in listing and "..." not in listing  # never cut
    assert "<list[" not in cli("embed", "-h") and "INPUT..." in cli("embed", "-h")


def test_enum_options_are_the_servers(cli, live):
    wrong = cli("jobs", "ls", "--state", "runing", code=2)
    assert "'runing' is not one of" in wrong and "'running'" in wrong
    assert "'imagefolder' is not one of" in cli("datasets", "add", "x", "--format", "imagefolder", code=2)
    openapi = httpx.get(f"{live.url}/openapi.json").json()
    states = next(p for p in openapi["paths"]["/v1/jobs"]["get"]["parameters"] if p["name"] == "state")
    from client.cli.datasets import FORMATS
    from client.cli.jobs import State

    assert json.dumps(states).count('"enum"') and set(State.__args__) == set(find_enum(states))
    body = openapi["paths"]["/v1/datasets"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    uri_schema = next(s for s in body["oneOf"] if "uri" in s.get("properties", {}))
    assert set(FORMATS) == set(find_enum(uri_schema["properties"]["format"]))
    with live.http() as http:
        assert http.get("/v1/jobs", params={"state": "runing"}).status_code == 422


def find_enum(schema) -> list:
    if isinstance(schema, dict):
        if "enum" in schema:
            return schema["enum"]
        return next((e for v in schema.values() if (e := find_enum(v))), [])
    if isinstance(schema, list):
        return next((e for v in schema if (e := find_enum(v))), [])
    return []


def test_ids_are_never_cut_at_80_columns(cli, live):
    assert live.job["id"] in cli("jobs", "ls", columns=80)
    assert live.checkpoint in cli("checkpoints", "ls", "--job", live.job["id"], columns=80)


def test_a_slow_server_is_not_a_dead_one():
    with socket.socket() as server:  # accepts connections and never answers
        server.bind(("127.0.0.1", 0))
        server.listen()
        url = f"http://127.0.0.1:{server.getsockname()[1]}"
        with pytest.raises(ServerTimeout) as slow:
            Client(url, timeout=0.5).jobs()
    assert "accepted the connection but did not answer within 0.5 s" in str(slow.value)
    assert "darkmatter up" not in slow.value.hint and "busy" in slow.value.hint


def test_a_misspelled_field_says_did_you_mean_and_where_the_docs_are(cli, live):
    out = cli("jobs", "submit", "--method", "simclr", "--dataset", "digits", "--set", "batchsize=8", code=1)
    assert "did you mean 'batch_size'?" in out and f"the API reference at {live.url}/docs" in out


def test_a_folder_by_name_with_small_dataset_defaults(cli, live, tmp_path):
    folder = tmp_path / "twoclass"
    for label, value in (("cats", 30), ("dogs", 220)):
        (folder / label).mkdir(parents=True)
        for i in range(20):
            (folder / label / f"{i}.png").write_bytes(png(value + i))
    added = cli("datasets", "add", str(folder), "--test-fraction", "0.25", "--wait")
    dataset_id = re.search(r"\b(ds_[0-9a-f]+)\b", added).group(1)
    assert f"{dataset_id} twoclass: ready" in added
    with live.http() as http:
        by_name = http.get("/v1/datasets/twoclass").json()
        assert by_name["id"] == dataset_id and (by_name["n_items"], by_name["n_test"]) == (30, 10)
        job = http.post("/v1/jobs", json={"method": "simclr", "dataset": "twoclass", "backbone": "small_cnn",
                                          "backbone_options": {"width": 8}, "steps": 2,
                                          "method_options": {"proj_hidden_dim": 16, "proj_dim": 8}}).json()
        assert job["recipe"]["train"]["batch_size"] == 30, job  # the recipe's 256, capped to the 30 items
        done = live.wait(job["id"])
        assert done["state"] == "succeeded", done
        events = [e["message"] for e in http.get(f"/v1/jobs/{job['id']}/events").json()["data"]]
        assert any("batch_size capped to the dataset: 30" in m for m in events), events
        knn = done["result"]["scores"]["knn"]
        assert set(knn) == {"top1@k20", "top1@k30"}, knn  # k=200 capped to the 30 training items
        assert all(v == float(f"{v:.7g}") for v in knn.values()), knn  # no float32 tails (0.6499999761581421)
        too_big = http.post("/v1/jobs", json={"method": "simclr", "dataset": "twoclass", "batch_size": 64})
        assert too_big.status_code == 422 and "batch_size 64 (set in the spec)" in too_big.text


def test_the_split_is_stratified():
    labels = torch.tensor([0] * 60 + [1] * 140)
    data = ArrayDataset(torch.zeros(200, 1, 2, 2, dtype=torch.uint8), labels)
    _, test = split_by_fraction(data, 0.2, seed=3)
    assert torch.bincount(test.labels).tolist() == [12, 28]


def test_a_single_string_input_and_class_names_in_neighbours(live):
    image = base64.b64encode(png(128)).decode()
    with live.http() as http:
        one = http.post("/v1/embeddings", json={"model": live.checkpoint, "input": image})
        assert one.status_code == 200 and len(one.json()["data"]) == 1
        near = http.post("/v1/neighbors", json={"index": live.index["id"], "query": [0], "k": 3}).json()
        assert near["dataset_name"] == "digits"
        assert all(n["class"] == str(n["label"]) for n in near["data"][0]["neighbors"])
        points = http.get(f"/v1/indexes/{live.index['id']}/map", params={"limit": 20}).json()
        assert points["dataset_name"] == "digits" and points["classes"][3] == "3"
        assert all(p["class"] == str(p["label"]) for p in points["points"])
