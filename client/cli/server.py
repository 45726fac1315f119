"""`darkmatter up|api|worker|create-key|methods|demo`: running the service on this machine."""
from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from client import processes
from client.cli.common import UNREACHABLE, USAGE, console, fail, make_table, print_table


def _stop(*_) -> None:
    raise KeyboardInterrupt


def up(host: str = "127.0.0.1", port: int = 8000, auth: bool = False,
       log_format: Annotated[Optional[str], typer.Option(
           "--log-format", help="text | json (default: text in a terminal, JSON lines otherwise; "
                                "DARKMATTER_LOG_FORMAT also sets it)", show_default=False)] = None) -> None:
    """Start the API (with the dashboard at /) and one worker on the embedded default (SQLite,
    SQLite broker, local files); the URL is printed once the API answers."""
    if log_format not in (None, "text", "json"):
        raise fail(f"--log-format {log_format!r} is not text or json", "e.g. --log-format json")
    env = dict(os.environ)
    env["DARKMATTER_LOG_FORMAT"] = log_format or env.get("DARKMATTER_LOG_FORMAT") or (
        "text" if sys.stderr.isatty() else "json")
    signal.signal(signal.SIGTERM, _stop)  # `kill` stops the children too, as Ctrl-C does
    token = "" if auth else env.get("DARKMATTER_LAUNCH_TOKEN") or secrets.token_urlsafe(32)
    if token:  # without --auth the API asks for this token (written to $DARKMATTER_HOME/launch-token)
        env["DARKMATTER_LAUNCH_TOKEN"] = token
    api = processes.start_api(host, port, auth, env=env)
    worker = processes.start_worker(env=env, quiet=True)
    try:
        url = f"http://{host}:{port}"
        if not processes.wait_ready(url, [api, worker]):
            raise fail(f"the API at {url} did not become ready", "see the log lines above (is the port taken?)",
                       UNREACHABLE)
        link = f"{url}/" + (f"?token={token}" if token else "")
        console.print(f"darkmatter up: dashboard on {link} (API docs at {url}/docs), worker pid {worker.pid}",
                      soft_wrap=True)
        processes.wait_any([api, worker])
    except KeyboardInterrupt:
        pass
    finally:
        processes.stop([api, worker])


def api(host: str = "127.0.0.1", port: int = 8000, auth: bool = False) -> None:
    """Start only the API server."""
    raise typer.Exit(subprocess.call([sys.executable, "-m", "api", "serve", "--host", host, "--port", str(port)]
                                     + (["--auth"] if auth else [])))


def worker(queue: Annotated[Optional[list[str]], typer.Option("--queue", "-Q", help="queue(s) to consume")] = None,
           gpus: Annotated[Optional[str], typer.Option("--gpus", help="GPU ids this worker owns, e.g. 0,1")] = None) -> None:
    """Start only a Celery worker (e.g. `--queue gpu --gpus 0,1` on a GPU machine)."""
    args = [a for q in queue or [] for a in ("--queue", q)] + (["--gpus", gpus] if gpus else [])
    raise typer.Exit(subprocess.call([sys.executable, "-m", "workers"] + args))


def create_key(project: str = "default", name: str = "",
               scope: Annotated[str, typer.Option(help="admin (manages the project's keys) or use (submits and reads)")]
               = "admin") -> None:
    """Create an API key bound to a project, on the server's machine (printed once; only its hash is
    stored): the bootstrap admin key of a project, which then makes use keys with `darkmatter keys create`."""
    raise typer.Exit(subprocess.call([sys.executable, "-m", "api", "create-key", "--project", project, "--name", name,
                                      "--scope", scope]))


def methods(name: Annotated[Optional[str], typer.Argument(help="show this method's recipes")] = None,
            as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False) -> None:
    """List the registered methods, or show one method's recipes (`darkmatter methods dino`)."""
    try:
        from core.methods import method_info, method_names
    except ImportError:
        raise fail("`methods` reads the method library, which is not installed with the client alone",
                   "ask the server instead: curl $DARKMATTER_URL/v1/methods", USAGE)

    if name is not None:
        try:
            detail = method_info(name).describe()
        except ValueError as exc:
            raise fail(str(exc), "list them with `darkmatter methods`", USAGE)
        if as_json:
            typer.echo(json.dumps(detail, indent=2))
            return
        console.print(f"[bold]{name}[/bold] ({detail['family']}, {detail['paper']})")
        for scale, recipe in detail["recipes"].items():
            table = make_table("setting", "value", "source", title=f"recipe '{scale}'")
            for key, value in recipe.items():
                if key not in ("sources", "notes"):
                    table.add_row(key, json.dumps(value), recipe["sources"].get(key, ""))
            print_table(table)
            if recipe["notes"]:
                console.print(f"  notes: {recipe['notes']}")
        return
    table = make_table("method", "family", "default backbone", "modality", "paper")
    for method_name in method_names():
        info = method_info(method_name)
        table.add_row(method_name, info.family, backbones_label(info), info.modality, info.paper)
    print_table(table)


def backbones_label(info) -> str:
    """The backbone a job gets by default, as the resolver picks it (core.recipes.resolve)."""
    if info.modality == "text":
        return info.default_backbone
    chosen = info.default_backbones
    if info.modality == "audio":  # one recipe per model size
        return ", ".join(f"{backbone} ({scale})" for scale, backbone in chosen.items())
    if len(set(chosen.values())) == 1:
        return next(iter(chosen.values()))
    return f"{chosen.get('small', '?')} (≤64 px), {chosen.get('large', '?')} (larger)"


def demo(dataset: str = "auto", port: int = 8765, home: Path = Path(".darkmatter/demo")) -> None:
    """Start the service, pretrain SimCLR on real data over HTTP, download, embed, print the kNN score."""
    from client.demo import run_demo

    raise typer.Exit(run_demo(dataset, port, home, console))


def register(app: typer.Typer) -> None:
    app.command()(up)
    app.command("api")(api)
    app.command()(worker)
    app.command("create-key")(create_key)
    app.command()(methods)
    app.command()(demo)
