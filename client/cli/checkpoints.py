"""`darkmatter checkpoints ls|show|download|export`."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from client.cli.common import (DEFAULT_URL, Commands, Json, Key, Url, Yes, age, confirmed, connect, console,
                               deleted_line, err_console, fail, handles_errors, human_bytes, make_table, print_json,
                               print_table)
from client.cli.progress import Reporter
from client.transfer import Download

app = typer.Typer(cls=Commands, help="List, inspect, download (resumable, sha256-checked) and export checkpoints.")
Output = Annotated[Optional[Path], typer.Option("--output", "-o", help="file to write (default: ./ID-PART.EXT)")]


@app.command("ls")
@handles_errors
def ls(job: Annotated[Optional[str], typer.Option(help="only this job's")] = None, url: Url = DEFAULT_URL,
       api_key: Key = None, as_json: Json = False) -> None:
    """List checkpoints, newest first."""
    rows = list(connect(url, api_key).iter_checkpoints(job=job))
    if as_json:
        print_json(rows)
        return
    table = make_table("id", "job", "step", "final", "method", "backbone", "size", "parts", "age")
    for r in rows:
        table.add_row(r["id"], r["job_id"], str(r["step"]), "yes" if r["final"] else "", r["method"], r["backbone"],
                      human_bytes(r["bytes"]), ",".join(r["parts"]), age(r["created_at"]))
    if rows:
        print_table(table)
    else:
        console.print("no checkpoints yet")


@app.command("show")
@handles_errors
def show(checkpoint_id: str, url: Url = DEFAULT_URL, api_key: Key = None, as_json: Json = False) -> None:
    """A checkpoint's manifest, parts and scores."""
    client = connect(url, api_key)
    row = client.checkpoint(checkpoint_id)
    if as_json:
        print_json({**row, "scores": client.checkpoint_scores(checkpoint_id)["data"]})
        return
    table = make_table("field", "value", show_header=False)
    for key in ("id", "job_id", "step", "final", "method", "backbone", "dataset_id", "sha256"):
        table.add_row(key, str(row[key]))
    for part, info in row["parts"].items():
        table.add_row(f"part {part}", f"{human_bytes(info['bytes'])}  sha256 {info['sha256'][:16]}…")
    for score in client.checkpoint_scores(checkpoint_id)["data"]:
        table.add_row(f"score {score['protocol']} {score['metric']}", f"{score['value']:.4f} on {score['dataset_id']}")
    print_table(table)


def fetch(client, checkpoint_id: str, dest: Path, part: str, format: str, as_json: bool) -> None:
    out = err_console if as_json else console
    pending = Download(dest)
    if pending.partial.exists() and pending.known_etag():
        out.print(f"resuming {dest.name} from {human_bytes(pending.partial.stat().st_size)} "
                      f"({pending.partial.stat().st_size} bytes already here)", soft_wrap=True)
    with Reporter(out, f"download {dest.name}", None, unit="bytes", every=10.0) as bar:
        path, sha = client.download(checkpoint_id, dest, part=part, format=format,
                                    on_progress=lambda done, total: bar.update(done, total))
    size = path.stat().st_size
    if as_json:
        print_json({"path": str(path), "bytes": size, "sha256": sha})
    else:
        console.print(f"saved {path} ({human_bytes(size)}, sha256 {sha[:16]}… matches the server's ETag)", soft_wrap=True)


@app.command("download")
@handles_errors
def download(checkpoint_id: str, part: Annotated[str, typer.Option(help="backbone, full, heads, teacher…")] = "backbone",
             output: Output = None, url: Url = DEFAULT_URL, api_key: Key = None, as_json: Json = False) -> None:
    """Download a checkpoint part (safetensors). An interrupted download resumes where it stopped
    (HTTP Range); the file is checked against the server's sha256."""
    fetch(connect(url, api_key), checkpoint_id, output or Path(f"{checkpoint_id}-{part}.safetensors"), part,
          "safetensors", as_json)


@app.command("export")
@handles_errors
def export(checkpoint_id: str, format: Annotated[str, typer.Option(help="onnx")] = "onnx", output: Output = None,
           url: Url = DEFAULT_URL, api_key: Key = None, as_json: Json = False) -> None:
    """Export the checkpoint's encoder: ONNX taking float32 pixels (N, C, H, W) in 0..255 and giving
    the same embeddings as the API."""
    if format != "onnx":
        raise fail(f"unknown export format {format!r}", "use --format onnx")
    fetch(connect(url, api_key), checkpoint_id, output or Path(f"{checkpoint_id}-backbone.onnx"), "backbone", "onnx",
          as_json)

@app.command("rm")
@handles_errors
def rm(checkpoint_id: str, yes: Yes = False, url: Url = DEFAULT_URL, api_key: Key = None, as_json: Json = False) -> None:
    """Delete a checkpoint: its files and scores (refused while a job uses it or it serves an index)."""
    confirmed(checkpoint_id, yes)
    answer = connect(url, api_key).delete_checkpoint(checkpoint_id)
    if as_json:
        print_json(answer)
    else:
        console.print(deleted_line(answer), soft_wrap=True)
