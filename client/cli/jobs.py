"""`darkmatter jobs submit|ls|show|watch|cancel`."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Literal, Optional

import typer
from rich.table import Table

from client.cli.common import (DEFAULT_URL, REFUSED, Commands, Json, Key, Url, Yes, age, confirmed, connect, console,
                               deleted_line, fail, handles_errors, make_table, print_json, print_table)
from client.cli.progress import Reporter

app = typer.Typer(cls=Commands, help="Submit, list, inspect, watch and cancel jobs. `darkmatter jobs` alone lists them.")

TERMINAL = ("succeeded", "failed", "cancelled")
# the server's enums (jobs/lifecycle.py STATES, the spec kinds; tests/live checks they agree with its OpenAPI)
State = Literal["queued", "running", "cancelling", "retrying", "succeeded", "failed", "cancelled"]
Kind = Literal["pretrain", "evaluate", "embed-index"]


def read_spec(path: Path) -> dict:
    """A JSON or YAML spec file ('-' reads standard input)."""
    try:
        text = sys.stdin.read() if str(path) == "-" else path.read_text()
    except OSError as exc:
        raise fail(f"cannot read {path}: {exc.strerror or exc}", "give the path of a JSON or YAML spec file")
    if path.suffix in (".yaml", ".yml") or (str(path) == "-" and not text.lstrip().startswith("{")):
        try:
            import yaml
        except ImportError:
            raise fail("YAML specs need PyYAML", "pip install pyyaml, or write the spec as JSON")
        try:
            spec = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise fail(f"{path} is not valid YAML: {exc}", "check the file's syntax")
    else:
        try:
            spec = json.loads(text)
        except ValueError as exc:
            raise fail(f"{path} is not valid JSON: {exc}", "check the file's syntax (or name it .yaml)")
    if not isinstance(spec, dict):
        raise fail(f"{path} must hold one mapping (a job spec), not {type(spec).__name__}",
                   "see `darkmatter methods` and the README for spec fields")
    return spec


def parse_value(text: str):
    """A --set value: JSON when it parses (numbers, true, lists, objects), else the string."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def job_row(job: dict) -> list[str]:
    spec = job.get("spec") or {}
    progress = f"{100 * job.get('progress', 0):3.0f}%" if job["kind"] == "pretrain" else f"{job['step']}/{job['total_steps']}"
    return [job["id"], job["kind"], job.get("method") or "", str(spec.get("dataset", "")), job["state"], progress,
            str(job["attempt"]), age(job.get("created_at"))]


def jobs_table(jobs: list[dict]) -> Table:
    table = make_table("id", "kind", "method", "dataset", "state", "progress", "attempt", "age")
    for job in jobs:
        table.add_row(*job_row(job))
    return table


@app.callback(invoke_without_command=True)
def default(ctx: typer.Context) -> None:
    if ctx.invoked_subcommand is None:
        ctx.invoke(ls, url=os.environ.get("DARKMATTER_URL", DEFAULT_URL), api_key=os.environ.get("DARKMATTER_API_KEY"))


@app.command("ls")
@handles_errors
def ls(url: Url = DEFAULT_URL, api_key: Key = None,
       state: Annotated[Optional[State], typer.Option(help="only jobs in this state")]
       = None,
       kind: Annotated[Optional[Kind], typer.Option(help="only jobs of this kind")] = None,
       method: Optional[str] = None, limit: Annotated[int, typer.Option(help="at most this many (newest first)")] = 20,
       as_json: Json = False) -> None:
    """List jobs, newest first."""
    client = connect(url, api_key)
    rows = []
    for job in client.iter_jobs(page_size=min(limit, 500), state=state, kind=kind, method=method):
        rows.append(job)
        if len(rows) >= limit:
            break
    if as_json:
        print_json(rows)
    elif rows:
        print_table(jobs_table(rows))
    else:
        console.print("no jobs" + (" matching the filters" if state or kind or method else " yet"))


@app.command("submit")
@handles_errors
def submit(spec_file: Annotated[Optional[Path], typer.Argument(help="JSON or YAML spec ('-': stdin)")] = None,
           method: Annotated[Optional[str], typer.Option(help="e.g. simclr, dino, mae")] = None,
           dataset: Annotated[Optional[str], typer.Option(help="a dataset id or built-in name")] = None,
           kind: Annotated[Optional[Kind], typer.Option(help="default: pretrain")] = None,
           backbone: Optional[str] = None, steps: Optional[int] = None, epochs: Optional[int] = None,
           batch_size: Optional[int] = None, checkpoint: Annotated[Optional[str], typer.Option(
               help="evaluate / embed-index: the checkpoint")] = None,
           set_: Annotated[Optional[list[str]], typer.Option("--set", help="FIELD=VALUE (JSON values), repeatable")] = None,
           idempotency_key: Optional[str] = None,
           watch_: Annotated[bool, typer.Option("--watch", help="then follow it live until it ends")] = False,
           url: Url = DEFAULT_URL, api_key: Key = None, as_json: Json = False) -> None:
    """Submit a job from a spec file and/or flags (flags win): `jobs submit --method dino --dataset digits`."""
    spec = read_spec(spec_file) if spec_file else {}
    flags = {"method": method, "dataset": dataset, "kind": kind, "backbone": backbone, "steps": steps,
             "epochs": epochs, "batch_size": batch_size, "checkpoint": checkpoint}
    spec.update({k: v for k, v in flags.items() if v is not None})
    for item in set_ or []:
        field, sep, value = item.partition("=")
        if not sep or not field:
            raise fail(f"--set {item!r} is not FIELD=VALUE", "e.g. --set log_every=5 --set augment='{\"flip_p\": 0}'")
        spec[field.strip()] = parse_value(value)
    if not spec:
        raise fail("nothing to submit", "give a spec file or flags such as --method simclr --dataset digits")
    client = connect(url, api_key)
    job = client.submit(spec, idempotency_key)
    if as_json and not watch_:
        print_json(job)
        return
    console.print(f"submitted {job['id']} ({job['kind']}, {job['state']})", soft_wrap=True)
    if watch_:
        follow(client, job["id"], as_json)


@app.command("show")
@handles_errors
def show(job_id: str, url: Url = DEFAULT_URL, api_key: Key = None, as_json: Json = False,
         events: Annotated[int, typer.Option(help="how many of the latest events to show")] = 10) -> None:
    """A job: its state, progress, latest metrics, result, error and latest events."""
    client = connect(url, api_key)
    job = client.job(job_id)
    if as_json:
        print_json(job)
        return
    table = make_table("field", "value", show_header=False)
    for key in ("id", "kind", "method", "state", "queue", "attempt", "error", "created_at", "started_at", "finished_at"):
        if job.get(key) not in (None, ""):
            table.add_row(key, str(job[key]))
    table.add_row("progress", f"{job['step']}/{job['total_steps']} ({100 * job['progress']:.0f}%)")
    if job["state"] in ("running", "cancelling") and job.get("started_at"):
        table.add_row("running for", f"{age(job['started_at']).removesuffix(' ago')} (compute is counted when a run ends)")
    else:
        table.add_row("compute", f"{job['compute_seconds']:.1f} s")
    for name, value in sorted(job.get("metrics", {}).items()):
        table.add_row(f"metric {name}", f"{value:.4g}")
    for key, value in (job.get("result") or {}).items():
        table.add_row(f"result {key}", value if isinstance(value, str) else json.dumps(rounded(value)))
    print_table(table)
    log = client.job_events(job_id)["data"][-events:]
    for event in log:
        console.print(f"  {event['at'][:19]}  {event['kind']:<10} {event['message']}", soft_wrap=True)


def rounded(value, digits: int = 4):
    """Floats to `digits` significant digits (0.6499999761581421 -> 0.65), inside lists and dicts too."""
    if isinstance(value, float):
        return float(f"{value:.{digits}g}")
    if isinstance(value, dict):
        return {k: rounded(v, digits) for k, v in value.items()}
    if isinstance(value, list):
        return [rounded(v, digits) for v in value]
    return value


@app.command("cancel")
@handles_errors
def cancel(job_id: str, url: Url = DEFAULT_URL, api_key: Key = None, as_json: Json = False) -> None:
    """Ask a job to stop: a queued job ends at once, a running one writes a checkpoint first."""
    job = connect(url, api_key).cancel(job_id)
    if as_json:
        print_json(job)
    else:
        console.print(f"{job['id']}: {job['state']}")


@app.command("watch")
@handles_errors
def watch(job_id: str, url: Url = DEFAULT_URL, api_key: Key = None,
          as_json: Annotated[bool, typer.Option("--json", help="print each event as one JSON line")] = False) -> None:
    """Follow a job live from its event stream: step, loss, img/s (seq/s for text) and ETA, until it ends.
    Exits 0 when it succeeded, 1 when it failed or was cancelled."""
    follow(connect(url, api_key), job_id, as_json)


def throughput_unit(job: dict) -> str:
    """Text jobs count sequences a second, audio jobs clips, image jobs images (the loop logs all as img_per_s)."""
    return {"text": "seq/s", "audio": "clips/s"}.get((job.get("recipe") or {}).get("modality"), "img/s")


def metrics_info(values: dict, unit: str = "img/s") -> str:
    parts = []
    for name, label, fmt in (("loss", "loss", ".4f"), ("lr", "lr", ".3g"), ("img_per_s", unit, ".0f")):
        if name in values:
            parts.append(f"{label} {values[name]:{fmt}}")
    return "  ".join(parts)


def follow(client, job_id: str, as_json: bool) -> None:
    """Print the job's stream until it ends: a progress bar with log lines, or one JSON line an event."""
    final = client.job(job_id)["state"]
    if as_json:
        for event in client.events(job_id):
            typer.echo(json.dumps({"event": event.event, "id": event.id, **event.data}))
            if event.event == "end":
                final = event.data.get("state") or final
    else:
        final = follow_with_progress(client, job_id, final)
        console.print(f"{job_id} {final}", soft_wrap=True)
    if final != "succeeded":
        raise typer.Exit(REFUSED)


def follow_with_progress(client, job_id: str, state: str) -> str:
    job = client.job(job_id)
    total, unit = job["total_steps"] or None, throughput_unit(job)
    with Reporter(console, job_id, total, every=30.0) as bar:
        for event in client.events(job_id):
            if event.event == "metrics":
                data = event.data
                bar.update(data["step"], data.get("total_steps") or None, metrics_info(data["values"], unit))
            elif event.event == "end":
                state = event.data.get("state") or state
            else:
                bar.note(f"[{event.event}] {event.data.get('message', '')}")
    return state

@app.command("rm")
@handles_errors
def rm(job_id: str, yes: Yes = False, url: Url = DEFAULT_URL, api_key: Key = None, as_json: Json = False) -> None:
    """Delete an ended job with its events, metrics, checkpoints and scores (cancel a running one first)."""
    confirmed(job_id, yes)
    answer = connect(url, api_key).delete_job(job_id)
    if as_json:
        print_json(answer)
    else:
        console.print(deleted_line(answer), soft_wrap=True)
