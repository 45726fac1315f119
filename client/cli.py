"""The `darkmatter` command line."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from client import processes
from client.sdk import ApiError, Client

app = typer.Typer(help="darkmatter: self-supervised pretraining as a service.", no_args_is_help=True)
console = Console()
URL = typer.Option("http://127.0.0.1:8000", "--url", envvar="DARKMATTER_URL", help="API base URL")
KEY = typer.Option(None, "--api-key", envvar="DARKMATTER_API_KEY", help="API key")


@app.command()
def up(host: str = "127.0.0.1", port: int = 8000, auth: bool = False) -> None:
    """Start the API and one worker on the embedded default (SQLite, SQLite broker, local files)."""
    api = processes.start_api(host, port, auth)
    worker = processes.start_worker()
    console.print(f"darkmatter up: API on http://{host}:{port} (docs at /docs), worker pid {worker.pid}")
    try:
        processes.wait_any([api, worker])
    except KeyboardInterrupt:
        pass
    finally:
        processes.stop([api, worker])


@app.command("api")
def api_cmd(host: str = "127.0.0.1", port: int = 8000, auth: bool = False) -> None:
    """Start only the API server."""
    raise typer.Exit(subprocess.call([sys.executable, "-m", "api", "serve", "--host", host, "--port", str(port)]
                                     + (["--auth"] if auth else [])))


@app.command()
def worker(queue: Annotated[Optional[list[str]], typer.Option("--queue", "-Q", help="queue(s) to consume")] = None,
           gpus: Annotated[Optional[str], typer.Option("--gpus", help="GPU ids this worker owns, e.g. 0,1")] = None) -> None:
    """Start only a Celery worker (e.g. `--queue gpu --gpus 0,1` on a GPU machine)."""
    args = [a for q in queue or [] for a in ("--queue", q)] + (["--gpus", gpus] if gpus else [])
    raise typer.Exit(subprocess.call([sys.executable, "-m", "workers"] + args))


@app.command()
def methods(name: Annotated[Optional[str], typer.Argument(help="show this method's recipes")] = None,
            as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False) -> None:
    """List the registered methods, or show one method's recipes (`darkmatter methods dino`)."""
    from core.methods import method_info, method_names

    if name is not None:
        try:
            detail = method_info(name).describe()
        except ValueError as exc:
            console.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(2) from None
        if as_json:
            console.print_json(data=detail)
            return
        console.print(f"[bold]{name}[/bold] ({detail['family']}, {detail['paper']})")
        for scale, recipe in detail["recipes"].items():
            table = Table("setting", "value", "source", title=f"recipe '{scale}'")
            for key, value in recipe.items():
                if key not in ("sources", "notes"):
                    table.add_row(key, json.dumps(value), recipe["sources"].get(key, ""))
            console.print(table)
            if recipe["notes"]:
                console.print(f"  notes: {recipe['notes']}")
        return
    table = Table("method", "family", "default backbone", "modality", "paper")
    for method_name in method_names():
        info = method_info(method_name)
        table.add_row(method_name, info.family, info.default_backbone, info.modality, info.paper)
    console.print(table)


@app.command("create-key")
def create_key(project: str = "default", name: str = "") -> None:
    """Create an API key bound to a project (printed once; only its hash is stored)."""
    raise typer.Exit(subprocess.call([sys.executable, "-m", "api", "create-key", "--project", project, "--name", name]))


keys = typer.Typer(help="API keys, on the server's machine (its database)")
app.add_typer(keys, name="keys")


@keys.command("disable")
def disable_key(key: str) -> None:
    """Disable an API key for good, by its id (key_...) or the key itself: its requests answer 401."""
    raise typer.Exit(subprocess.call([sys.executable, "-m", "api", "disable-key", key]))


@app.command()
def submit(spec_file: Path, url: str = URL, api_key: Optional[str] = KEY, wait: bool = False) -> None:
    """Submit a job spec (JSON file)."""
    try:
        spec = json.loads(spec_file.read_text())
    except (OSError, ValueError) as exc:
        raise typer.BadParameter(f"cannot read {spec_file}: {exc}")
    client = Client(url, api_key)
    try:
        job = client.submit(spec)
        console.print(f"submitted {job['id']} ({job['state']})")
        if wait:
            job = client.wait(job["id"])
            console.print_json(data=job)
    except ApiError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1)


@app.command()
def jobs(url: str = URL, api_key: Optional[str] = KEY, state: Optional[str] = None) -> None:
    """List jobs."""
    table = Table("id", "kind", "method", "state", "step", "error")
    try:
        for job in Client(url, api_key).jobs(state=state)["data"]:
            table.add_row(job["id"], job["kind"], job["method"] or "", job["state"],
                          f"{job['step']}/{job['total_steps']}", (job["error"] or "")[:60])
    except ApiError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1)
    console.print(table)


@app.command()
def demo(dataset: str = "auto", port: int = 8765, home: Path = Path(".darkmatter/demo")) -> None:
    """Start the service, pretrain SimCLR on real data over HTTP, download, embed, print the kNN score."""
    from client.demo import run_demo

    raise typer.Exit(run_demo(dataset, port, home, console))


def main() -> None:
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    app()


if __name__ == "__main__":
    main()
