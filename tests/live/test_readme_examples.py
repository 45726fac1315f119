"""README.md's HTTP examples run as written: the block of "HTTP in one screen" through bash
against the live server (its own DARKMATTER_HOME, a real worker), every curl failing the test on
an HTTP error, so the README cannot drift from the API again."""
from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess

import pytest
from typer.testing import CliRunner

from client.cli import app

from tests.conftest import ROOT


def bash_block(after: str) -> str:
    """The first ```bash block after the heading or sentence `after`."""
    section = (ROOT / "README.md").read_text().split(after, 1)[1]
    return re.search(r"```bash\n(.*?)```", section, re.S).group(1)


def run_block(block: str, live, cwd, prelude: str = "") -> str:
    """The block through bash with strict mode and a curl that fails on an HTTP error status (the
    README's curls print the answer), against the live server and its own DARKMATTER_HOME."""
    token = live.settings.home / "launch-token"
    if not token.exists():  # a server without a launch token ignores the header; one with it wrote the file
        token.write_text("no-token-needed")
    strict = "set -euo pipefail\ncurl() { command curl --fail-with-body --silent --show-error \"$@\"; echo; }\n"
    env = {**os.environ, "DARKMATTER_URL": live.url, "DARKMATTER_HOME": str(live.settings.home)}
    done = subprocess.run(["bash", "-c", strict + prelude + block], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=400)
    assert done.returncode == 0, f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


needs = pytest.mark.skipif(not (shutil.which("jq") and shutil.which("curl")), reason="the examples use curl and jq")


@needs
def test_the_http_examples_run_as_written(live, tmp_path):
    block = bash_block("## HTTP in one screen")
    assert "job_…" not in block and "ckpt_…" not in block  # every id comes from an earlier answer
    out = run_block(block, live, tmp_path)
    assert (tmp_path / "7.png").read_bytes()[:4] == b"\x89PNG"
    assert any(p.suffix == ".safetensors" for p in tmp_path.iterdir()) and (tmp_path / "enc.onnx").stat().st_size
    assert '"neighbors"' in out and '"points"' in out and '"leaderboard"' in out and '"embedding"' in out


@needs
def test_the_text_examples_run_as_written(live, tmp_path):
    from tests.text.corpus import glosses, jsonl

    (tmp_path / "corpus.jsonl").write_bytes(jsonl(glosses(per_class=100)))
    setup = bash_block("## HTTP in one screen").split("\ncurl", 1)[0] + "\n"  # DM, DM_AUTH, JSON
    out = run_block(bash_block("Train on your own corpus and embed text"), live, tmp_path, prelude=setup)
    assert out.count('"object":"embedding"') == 2 and '"neighbors"' in out
    # the same text checkpoint through the CLI and the other text-input rules (issue 24)
    with live.http() as http:
        job = http.get("/v1/jobs", params={"method": "mlm", "state": "succeeded", "limit": 1}).json()["data"][0]
        checkpoint = job["result"]["checkpoint"]
        png = base64.b64encode(PNG_1PX).decode()
        refused = http.post("/v1/embeddings", json={"model": checkpoint, "input": [png]})
        assert refused.status_code == 422 and "base64 image" in refused.text
        one = http.post("/v1/embeddings", json={"model": checkpoint, "input": "a small dog"})
        assert one.status_code == 200 and len(one.json()["data"]) == 1
    cli = CliRunner()
    embedded = cli.invoke(app, ["embed", checkpoint, "a small dog", "a cat"], env={"DARKMATTER_URL": live.url})
    assert embedded.exit_code == 0 and "2 embeddings of dimension" in embedded.output, embedded.output
    with live.http() as http:
        index = http.get("/v1/jobs", params={"kind": "embed-index", "state": "succeeded", "limit": 1}).json()["data"][0]
    near = cli.invoke(app, ["neighbors", index["id"], "a small dog", "-k", "3"], env={"DARKMATTER_URL": live.url,
                                                                                     "COLUMNS": "160"})
    assert near.exit_code == 0 and "neighbours of a small dog in corpus.jsonl" in near.output, near.output
    assert "noun." in near.output  # class names, not label indices
    watched = cli.invoke(app, ["jobs", "watch", job["id"]], env={"DARKMATTER_URL": live.url})
    assert "seq/s" in watched.output and "img/s" not in watched.output, watched.output


# a 1x1 PNG (the bytes a user's base64 of an image file starts with)
PNG_1PX = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010800000000"
                        "3a7e9b550000000a49444154789c6360000000020001e221bc330000000049454e44ae426082")
