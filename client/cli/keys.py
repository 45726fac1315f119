"""`darkmatter keys create|ls|disable|delete`: the API keys of the caller's project (an admin key
manages them; the first one: `darkmatter create-key` on the server)."""
from __future__ import annotations

from enum import Enum
from typing import Annotated

import typer

from client.cli.common import (DEFAULT_URL, Commands, Json, Key, Url, age, connect, console, handles_errors, make_table,
                               print_json, print_table)

app = typer.Typer(cls=Commands, help="API keys of your project (the first one: `darkmatter create-key` on the server).")


class Scope(str, Enum):
    use = "use"
    admin = "admin"


@app.command("create")
@handles_errors
def create(name: str = "", scope: Annotated[Scope, typer.Option(help="use: submits and reads; admin: also manages keys")]
           = Scope.use,
           url: Url = DEFAULT_URL, api_key: Key = None, as_json: Json = False) -> None:
    """Create a key in your project (needs an admin key); it is shown once (only its hash is stored)."""
    row = connect(url, api_key).create_key(name, scope.value)
    if as_json:
        print_json(row)
    else:
        console.print(f"{row['id']} ({row['name'] or 'unnamed'}, {row['scope']}): {row['key']}", soft_wrap=True)
        console.print("keep it now: it is not shown again", soft_wrap=True)


@app.command("ls")
@handles_errors
def ls(url: Url = DEFAULT_URL, api_key: Key = None, as_json: Json = False) -> None:
    """List your project's keys (prefixes only)."""
    rows = connect(url, api_key).keys()["data"]
    if as_json:
        print_json(rows)
        return
    table = make_table("id", "name", "prefix", "scope", "state", "age")
    for r in rows:
        table.add_row(r["id"], r["name"], r["prefix"] + "…", r["scope"], "disabled" if r["disabled"] else "active",
                      age(r["created_at"]))
    if rows:
        print_table(table)
    else:
        console.print("no keys yet")


@app.command("disable")
@handles_errors
def disable(key_id: str, url: Url = DEFAULT_URL, api_key: Key = None, as_json: Json = False) -> None:
    """Disable a key: requests with it are refused from now on."""
    row = connect(url, api_key).disable_key(key_id)
    if as_json:
        print_json(row)
    else:
        console.print(f"{row['id']}: disabled")


@app.command("delete")
@handles_errors
def delete(key_id: str, url: Url = DEFAULT_URL, api_key: Key = None, as_json: Json = False) -> None:
    """Delete a key: requests with it are refused, and it no longer counts against your key quota."""
    row = connect(url, api_key).delete_key(key_id)
    if as_json:
        print_json(row)
    else:
        console.print(f"{row['id']}: deleted")
