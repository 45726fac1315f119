"""The `darkmatter` command line through typer's runner against the live service: every resource,
--json, one-line errors with documented exit codes, progress that reads well in a log, and a
download interrupted half-way that resumes with Range and matches its sha256."""
from __future__ import annotations

import hashlib
import io
import json

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from client import Client
from client.cli import app
from core.precision import resolve_precision
from tests.conftest import TINY_PRETRAIN


@pytest.fixture
def cli(live):
    runner = CliRunner()

    def run(*args: str, code: int = 0, stdin: str | None = None):
        result = runner.invoke(app, list(args), env={"DARKMATTER_URL": live.url, "COLUMNS": "200"}, input=stdin)
        assert result.exit_code == code, (args, result.output)
        assert "Traceback" not in result.output
        return result.stdout if "--json" in args else result.output  # JSON alone on stdout; progress on stderr

    return run


def one_error_line(output: str) -> str:
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "(hint: " in lines[0], output
    return lines[0]


def test_no_server_is_one_line_and_exit_code_3():
    result = CliRunner().invoke(app, ["jobs"], env={"DARKMATTER_URL": "http://127.0.0.1:9"})
    assert result.exit_code == 3
    line = one_error_line(result.output)
    assert "cannot reach the darkmatter API at http://127.0.0.1:9" in line and "darkmatter up" in line


def test_listings_as_json(cli, live):
    jobs = json.loads(cli("jobs", "ls", "--json"))
    assert live.job["id"] in [j["id"] for j in jobs]
    assert json.loads(cli("jobs", "show", live.job["id"], "--json"))["result"]["checkpoint"] == live.checkpoint
    assert live.job["id"] in cli("jobs")  # the table, with no subcommand
    datasets = json.loads(cli("datasets", "ls", "--json"))
    assert live.dataset["id"] in [d["id"] for d in datasets]  # other tests of the package add their own
    assert json.loads(cli("datasets", "show", live.dataset["id"], "--json"))["n_classes"] == 10
    checkpoints = json.loads(cli("checkpoints", "ls", "--job", live.job["id"], "--json"))
    assert live.checkpoint in [c["id"] for c in checkpoints]
    shown = json.loads(cli("checkpoints", "show", live.checkpoint, "--json"))
    assert {s["protocol"] for s in shown["scores"]} >= {"knn", "linear"}
    board = json.loads(cli("scores", "--protocol", "knn", "--json"))["leaderboard"]
    assert any(row["checkpoint"] == live.checkpoint and row["mean"] > 0.5 for row in board)
    assert "simclr" in cli("scores")
    events = [json.loads(line) for line in cli("jobs", "watch", live.job["id"], "--json").splitlines()]
    assert [e["data"]["state"] for e in events if e["event"] == "state"] == ["queued", "running", "succeeded"]
    assert events[-1] == {"event": "end", "id": events[-1]["id"], "state": "succeeded"}


def test_datasets_add_uploads_a_file_and_waits_for_its_scan(cli, tmp_path):
    from tests.datasets.make import digits_zip

    archive = digits_zip(tmp_path / "shapes.zip", n=30)
    added = json.loads(cli("datasets", "add", str(archive), "--name", "shapes", "--test-fraction", "0.5", "--wait",
                           "--json"))
    assert added["state"] == "ready" and added["name"] == "shapes" and added["n_items"] + added["n_test"] == 30
    assert "needs its --format" in one_error_line(cli("datasets", "add", "s3://bucket/x", code=2))
    assert "not a file or folder here" in one_error_line(cli("datasets", "add", "no-such-file.zip", code=2))


def test_keys_create_list_disable(cli):
    created = json.loads(cli("keys", "create", "--name", "ci", "--json"))
    assert created["key"].startswith("dm_")
    assert created["id"] in [k["id"] for k in json.loads(cli("keys", "ls", "--json"))]
    assert json.loads(cli("keys", "disable", created["id"], "--json"))["disabled"] is True
    assert "HTTP 404" in one_error_line(cli("keys", "disable", "key_nope", code=1))


def test_embed_and_neighbors(cli, live, tmp_path):
    images = []
    for i in range(2):
        buffer = io.BytesIO()
        Image.fromarray((np.arange(64).reshape(8, 8) * (i + 2) % 256).astype(np.uint8)).save(buffer, format="PNG")
        (path := tmp_path / f"img{i}.png").write_bytes(buffer.getvalue())
        images.append(str(path))
    out = json.loads(cli("embed", live.checkpoint, *images, "-o", str(tmp_path / "e.npy"), "--json"))
    saved = np.load(tmp_path / "e.npy")
    assert saved.shape == (2, out["dimensions"]) and np.allclose(saved, np.array(out["data"]), atol=1e-6)
    found = json.loads(cli("neighbors", live.index["id"], "0", "5", "-k", "3", "--json"))
    assert [len(row["neighbors"]) for row in found["data"]] == [3, 3]
    assert found["data"][0]["neighbors"][0]["item"] == 0  # an indexed item is its own nearest neighbour


def test_submit_yaml_with_flags_and_watch_progress_in_a_log(cli, live, tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text("method: simclr\nbackbone: small_cnn\nbackbone_options: {width: 8}\nbatch_size: 64\n"
                    "method_options: {proj_hidden_dim: 32, proj_dim: 16}\nevaluations: []\n")
    out = cli("jobs", "submit", str(spec), "--dataset", live.dataset["id"], "--steps", "10", "--set", "log_every=1",
              "--watch")
    lines = out.splitlines()
    job_id = lines[0].split()[1]
    assert lines[0] == f"submitted {job_id} (pretrain, queued)"
    progress = [line for line in lines if line.startswith(f"{job_id}: ")]
    # plain lines (no bar redraws) at each tenth of the way, with loss, img/s and an ETA while running
    assert progress and progress[-1].startswith(f"{job_id}: 100% 10/10") and "loss " in progress[-1]
    assert any("eta 0:" in line for line in progress) and all("\r" not in line for line in lines)
    assert any(line.startswith("[state] claimed by") for line in lines), out
    assert lines[-1] == f"{job_id} succeeded"


def test_bad_input_is_one_line_with_a_hint(cli, live, tmp_path):
    assert "cannot read" in one_error_line(cli("jobs", "submit", str(tmp_path / "missing.json"), code=2))
    (tmp_path / "bad.json").write_text("{not json")
    assert "not valid JSON" in one_error_line(cli("jobs", "submit", str(tmp_path / "bad.json"), code=2))
    line = one_error_line(cli("jobs", "submit", "--method", "nope", "--dataset", live.dataset["id"], code=1))
    assert "HTTP 422" in line and "unknown method" in line
    assert "HTTP 404" in one_error_line(cli("jobs", "show", "job_nope", code=1))
    assert "use --format onnx" in one_error_line(cli("checkpoints", "export", live.checkpoint, "--format", "tflite",
                                                     code=2))
    assert "HTTP 409" in one_error_line(cli("jobs", "cancel", live.job["id"], code=1))  # it has ended


def test_interrupted_download_resumes_with_range_and_matches_sha256(cli, live, tmp_path):
    dest = tmp_path / "full.safetensors"

    class Stop(Exception):
        pass

    def stop_half_way(done: int, total: int) -> None:
        if done >= total // 2:
            raise Stop

    with Client(live.url) as client, pytest.raises(Stop):
        client.download(live.checkpoint, dest, part="full", on_progress=stop_half_way, chunk_size=4096)
    partial = dest.with_name(dest.name + ".part")
    kept = partial.stat().st_size
    assert not dest.exists() and kept > 0

    out = cli("checkpoints", "download", live.checkpoint, "--part", "full", "-o", str(dest))
    assert f"resuming {dest.name} from" in out and f"({kept} bytes already here)" in out
    assert "matches the server's ETag" in out and not partial.exists()
    with live.http() as http:
        whole = http.get(f"/v1/checkpoints/{live.checkpoint}/download", params={"part": "full"})
    assert dest.read_bytes() == whole.content
    assert whole.headers["etag"] == f'"{hashlib.sha256(dest.read_bytes()).hexdigest()}"'


def test_export_onnx(cli, live, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    out = json.loads(cli("checkpoints", "export", live.checkpoint, "--format", "onnx", "-o", str(tmp_path / "e.onnx"),
                         "--json"))
    assert out["sha256"] == hashlib.sha256((tmp_path / "e.onnx").read_bytes()).hexdigest()
    session = ort.InferenceSession(str(tmp_path / "e.onnx"), providers=["CPUExecutionProvider"])
    pixels = np.random.default_rng(0).integers(0, 256, (3, 8, 8))
    with Client(live.url) as client:
        served = client.embeddings(live.checkpoint, pixels.tolist())
    (exported,) = session.run(None, {"pixels": pixels[:, None].astype(np.float32)})
    if resolve_precision("auto", torch.device("cpu")) == "fp32":
        assert np.abs(exported - served).max() < 1e-4
    else:  # the server embeds in bf16 on a CPU with native bf16 (DARKMATTER_EMBEDDING_PRECISION=auto)
        assert np.abs(exported - served).max() < 2e-2 * np.abs(exported).max()
        cosine = (exported * served).sum(1) / np.linalg.norm(exported, axis=1) / np.linalg.norm(served, axis=1)
        assert cosine.min() > 0.999


def test_top_level_submit_still_works(cli, live, tmp_path):
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({**TINY_PRETRAIN, "dataset": live.dataset["id"], "queue": "idle"}))
    job = json.loads(cli("submit", str(spec), "--json"))
    assert job["state"] == "queued" and job["queue"] == "idle"
    assert json.loads(cli("jobs", "cancel", job["id"], "--json"))["state"] == "cancelled"  # a queued job ends at once
    assert job["id"] in cli("jobs", "ls", "--state", "cancelled")
