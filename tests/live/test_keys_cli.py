"""`darkmatter keys` against the live service: create a key with a scope, list the scopes, delete a
key; the CLI reaches the auth-off server with its launch token (DARKMATTER_TOKEN here)."""
from __future__ import annotations

import json

from typer.testing import CliRunner

from client.cli import app


def test_keys_create_with_a_scope_list_and_delete(live):
    runner = CliRunner()

    def run(*args: str, code: int = 0) -> str:
        result = runner.invoke(app, list(args), env={"DARKMATTER_URL": live.url, "COLUMNS": "200"})
        assert result.exit_code == code, (args, result.output)
        return result.stdout

    made = json.loads(run("keys", "create", "--name", "cli-use", "--json"))
    admin = json.loads(run("keys", "create", "--name", "cli-admin", "--scope", "admin", "--json"))
    assert made["scope"] == "use" and admin["scope"] == "admin" and made["key"].startswith("dm_")
    listed = {k["id"]: k["scope"] for k in json.loads(run("keys", "ls", "--json"))}
    assert listed[made["id"]] == "use" and listed[admin["id"]] == "admin"
    assert "use" in run("keys", "ls")
    for key in (made, admin):
        assert run("keys", "delete", key["id"]).strip() == f"{key['id']}: deleted"
    assert not {made["id"], admin["id"]} & {k["id"] for k in json.loads(run("keys", "ls", "--json"))}
    assert "not found" in runner.invoke(app, ["keys", "delete", made["id"]], env={"DARKMATTER_URL": live.url}).output
