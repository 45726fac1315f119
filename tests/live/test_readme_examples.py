"""README.md's HTTP examples run as written: the block of "HTTP in one screen" through bash
against the live server (its own DARKMATTER_HOME, a real worker), every curl failing the test on
an HTTP error, so the README cannot drift from the API again."""
from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest

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
    assert out.count('"embedding"') == 2 and '"neighbors"' in out
