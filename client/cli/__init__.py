"""The `darkmatter` command line: the service's resources as commands, each with --json, and
every error as one line with a hint."""
from __future__ import annotations

import os

import typer

from client.cli import checkpoints, datasets, jobs, keys, results, server
from client.cli.common import EXIT_CODES

app = typer.Typer(help="darkmatter: self-supervised pretraining as a service.\n\nExit codes:\n\n" +
                  "\n\n".join(line.strip() for line in EXIT_CODES.strip().splitlines()),
                  no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode=None)
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
