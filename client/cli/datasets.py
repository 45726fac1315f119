"""`darkmatter datasets add|ls|show`."""
from __future__ import annotations

import tempfile
import zipfile
from pathlib import Path
from typing import Annotated, Literal, Optional, get_args

import typer

from client.cli.common import (DEFAULT_URL, Commands, Json, Key, Url, Yes, age, confirmed, connect, console,
                               deleted_line, err_console, fail, handles_errors, make_table, print_json, print_table)

# the server's formats (jobs/datasets.py FORMATS; tests/live checks they agree with its OpenAPI enum)
Format = Literal["zip", "tar", "tar.gz", "npz", "idx", "txt", "jsonl", "folder", "webdataset"]
FORMATS = get_args(Format)

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
        format: Annotated[Optional[Format], typer.Option(help="the file's format "
                                                       "when its name does not say it (a folder is sent as zip)")]
        = None,
        name: Optional[str] = None, image_size: Optional[int] = None, test_fraction: Optional[float] = None,
        short_side: Annotated[Optional[int], typer.Option(help="keep each image's aspect ratio, its shorter side "
                                                          "stored this long (e.g. 256 for 224-px training)")] = None,
        wait: Annotated[bool, typer.Option("--wait", help="wait until the scan says ready or invalid")] = False,
        url: Url = DEFAULT_URL, api_key: Key = None, as_json: Json = False) -> None:
    """Add a dataset. A local file is uploaded, a local folder (class sub-folders of images) is zipped
    on the fly and uploaded; anything else is registered by URI."""
    client = connect(url, api_key)
    options = {k: v for k, v in {"name": name, "image_size": image_size, "test_fraction": test_fraction,
                                 "short_side": short_side}.items() if v is not None}
    if builtin:
        row = client.register_builtin(source)
    elif Path(source).is_file():
        row = client.upload_dataset(source, format, **options)
    elif Path(source).is_dir():
        row = upload_folder(client, Path(source), options)
    elif "://" in source or Path(source).is_absolute():
        if not format:
            raise fail(f"registering {source} needs its --format", f"one of {', '.join(FORMATS)}")
        row = client.register_dataset(source, format, **options)
    else:
        raise fail(f"{source} is not a file or folder here, nor a URI",
                   "give a file or folder to upload, an s3:// URI or --builtin NAME")
    if wait and row["state"] in ("pending", "scanning"):
        if not as_json:
            err_console.print(f"{row['id']} {row['name']}: uploaded, waiting for its scan…", soft_wrap=True)
        row = client.wait_dataset(row["id"], poll=0.5)
    if as_json:
        print_json(row)
    else:
        console.print(f"{row['id']} {row['name']}: {row['state']}" + (f" ({row['error']})" if row.get("error") else ""),
                      soft_wrap=True)
    if row["state"] == "invalid":
        raise typer.Exit(1)


def upload_folder(client, folder: Path, options: dict) -> dict:
    """A folder of images (class sub-folders, optionally under train/ and test/) as a zip made on
    the fly in a temporary file (images are already compressed: stored, not deflated)."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
    if not files:
        raise fail(f"{folder} holds no files", "give a folder of images in class sub-folders (cat/1.png, dog/2.png)")
    with tempfile.TemporaryDirectory(prefix="darkmatter-upload-") as tmp:
        archive = Path(tmp) / f"{folder.resolve().name or 'dataset'}.zip"
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zf:
            for path in files:
                zf.write(path, path.relative_to(folder).as_posix())
        return client.upload_dataset(archive, "zip", **{"name": folder.resolve().name, **options})


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


@app.command("rm")
@handles_errors
def rm(dataset_id: str, yes: Yes = False, url: Url = DEFAULT_URL, api_key: Key = None, as_json: Json = False) -> None:
    """Delete a dataset: its files and the scores measured on it (refused while a job uses it)."""
    confirmed(dataset_id, yes)
    answer = connect(url, api_key).delete_dataset(dataset_id)
    if as_json:
        print_json(answer)
    else:
        console.print(deleted_line(answer), soft_wrap=True)
