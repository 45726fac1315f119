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


def http_block() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## HTTP in one screen", 1)[1]
    return re.search(r"```bash\n(.*?)```", section, re.S).group(1)


@pytest.mark.skipif(not (shutil.which("jq") and shutil.which("curl")), reason="the examples use curl and jq")
def test_the_http_examples_run_as_written(live, tmp_path):
    block = http_block()
    assert "localhost:8000/v1/jobs/job_…" not in block  # every id comes from an earlier answer
    # strict mode, and a curl that fails on an HTTP error status (the README's curls print the answer)
    prelude = "set -euo pipefail\ncurl() { command curl --fail-with-body --silent --show-error \"$@\"; echo; }\n"
    token = live.settings.home / "launch-token"
    if not token.exists():  # a server without a launch token ignores the header; one with it wrote the file
        token.write_text("no-token-needed")
    env = {**os.environ, "DARKMATTER_URL": live.url, "DARKMATTER_HOME": str(live.settings.home)}
    done = subprocess.run(["bash", "-c", prelude + block], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=400)
    assert done.returncode == 0, f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    out = done.stdout
    assert '"state":"succeeded"' in out.replace(" ", "") or "succeeded" in out
    assert (tmp_path / "7.png").read_bytes()[:4] == b"\x89PNG"
    assert any(p.suffix == ".safetensors" for p in tmp_path.iterdir()) and (tmp_path / "enc.onnx").stat().st_size
    assert '"neighbors"' in out and '"points"' in out and '"leaderboard"' in out and '"embedding"' in out
