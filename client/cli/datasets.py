"""`darkmatter datasets add|ls|show`."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from client.cli.common import (DEFAULT_URL, Commands, Json, Key, Url, age, connect, console, fail, handles_errors,
                               make_table, print_json, print_table)

app = typer.Typer(cls=Commands, help="Add (upload, register or pick a built-in), list and inspect datasets.")


def dataset_row(d: dict) -> list[str]:
    classes = "" if d.get("n_classes") is None else str(d["n_classes"])
    return [d["id"], d["name"], d["format"], d["state"], str(d.get("n_items") or ""), str(d.get("n_test") or ""),
            classes, (d.get("content_hash") or "")[:12], age(d.get("created_at"))]


@app.command("add")
@handles_errors
def add(source: Annotated[str, typer.Argument(help="a file to upload, a URI (s3://…, a path under the server's "
                                                     "data roots), or a built-in name with --builtin")],
        builtin: Annotated[bool, typer.Option("--builtin", help="SOURCE is a built-in (digits, fashion-mnist)")] = False,
        format: Annotated[Optional[str], typer.Option(help="zip, tar, npz, idx, txt, jsonl, imagefolder, webdataset…")]
        = None,
        name: Optional[str] = None, image_size: Optional[int] = None, test_fraction: Optional[float] = None,
        wait: Annotated[bool, typer.Option("--wait", help="wait until the scan says ready or invalid")] = False,
        url: Url = DEFAULT_URL, api_key: Key = None, as_json: Json = False) -> None:
    """Add a dataset. A local file is uploaded; anything else is registered by URI."""
    client = connect(url, api_key)
    options = {k: v for k, v in {"name": name, "image_size": image_size, "test_fraction": test_fraction}.items()
               if v is not None}
    if builtin:
        row = client.register_builtin(source)
    elif Path(source).is_file():
        row = client.upload_dataset(source, format, **options)
    elif "://" in source or Path(source).is_absolute():
        if not format:
            raise fail(f"registering {source} needs its --format", "e.g. --format imagefolder")
        row = client.register_dataset(source, format, **options)
    else:
        raise fail(f"{source} is not a file here, nor a URI", "give a file to upload, an s3:// URI or --builtin NAME")
    if wait and row["state"] == "pending":
        row = client.wait_dataset(row["id"], poll=0.5)
    if as_json:
        print_json(row)
    else:
        console.print(f"{row['id']} {row['name']}: {row['state']}" + (f" ({row['error']})" if row.get("error") else ""),
                      soft_wrap=True)
    if row["state"] == "invalid":
        raise typer.Exit(1)


@app.command("ls")
@handles_errors
def ls(url: Url = DEFAULT_URL, api_key: Key = None, as_json: Json = False) -> None:
    """List datasets."""
    rows = list(connect(url, api_key).iter_datasets())
    if as_json:
        print_json(rows)
        return
    table = make_table("id", "name", "format", "state", "train", "test", "classes", "hash", "age")
    for row in rows:
        table.add_row(*dataset_row(row))
    if rows:
        print_table(table)
    else:
        console.print("no datasets yet (add one: darkmatter datasets add digits --builtin)")


@app.command("show")
@handles_errors
def show(dataset_id: str, url: Url = DEFAULT_URL, api_key: Key = None, as_json: Json = False) -> None:
    """A dataset with its statistics."""
    row = connect(url, api_key).dataset(dataset_id)
    if as_json:
        print_json(row)
        return
    table = make_table("field", "value", show_header=False)
    for key in ("id", "name", "uri", "format", "state", "n_items", "n_test", "n_classes", "content_hash", "error"):
        if row.get(key) not in (None, ""):
            table.add_row(key, str(row[key]))
    for key, value in (row.get("stats") or {}).items():
        if key not in ("prepared", "shards"):
            table.add_row(f"stats {key}", str(value))
    print_table(table)
