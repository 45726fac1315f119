"""The `darkmatter` command line: the service's resources as commands, each with --json, and
every error as one line with a hint."""
from __future__ import annotations

import os
from typing import Annotated, Optional

import typer

from client.cli import checkpoints, datasets, jobs, keys, results, server
from client.cli.common import EXIT_CODES, Commands

app = typer.Typer(cls=Commands, help="darkmatter: self-supervised pretraining as a service.\n\nExit codes:\n\n" +
                  "\n\n".join(line.strip() for line in EXIT_CODES.strip().splitlines()),
                  no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode=None,
                  context_settings={"help_option_names": ["-h", "--help"]})


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("darkmatter")
    except PackageNotFoundError:
        return "unknown (not installed as a package)"


def show_version(value: bool) -> None:
    if value:
        typer.echo(f"darkmatter {version()}")
        raise typer.Exit()


@app.callback()
def options(ctx: typer.Context,
            url: Annotated[Optional[str], typer.Option("--url", help="API base URL for every command (else "
                                                       "DARKMATTER_URL, else http://127.0.0.1:8000)",
                                                       show_default=False)] = None,
            api_key: Annotated[Optional[str], typer.Option("--api-key", help="API key for every command (else "
                                                           "DARKMATTER_API_KEY)", show_default=False)] = None,
            _: Annotated[bool, typer.Option("--version", callback=show_version, is_eager=True,
                                            help="print the client's version and exit")] = False) -> None:
    """Global options, given before the command: `darkmatter --url http://gpu-box:8000 jobs ls`."""
    # every command reads its --url/--api-key from these variables when not given its own; restored on exit
    for name, value in (("DARKMATTER_URL", url), ("DARKMATTER_API_KEY", api_key)):
        if value is not None:
            previous = os.environ.get(name)
            os.environ[name] = value
            ctx.call_on_close(lambda name=name, previous=previous: restore(name, previous))


def restore(name: str, previous: str | None) -> None:
    if previous is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = previous

server.register(app)
app.add_typer(datasets.app, name="datasets")
app.add_typer(jobs.app, name="jobs")
app.add_typer(checkpoints.app, name="checkpoints")
app.add_typer(keys.app, name="keys")
results.register(app)
app.command("submit", help="Same as `darkmatter jobs submit`.")(jobs.submit)


def main() -> None:
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    app()


__all__ = ["app", "main"]
