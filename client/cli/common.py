"""What every command shares: the connection options, --json output, and errors as one line.

Exit codes (also in `darkmatter --help`):
  0  done
  1  the server refused the request (4xx/5xx), or a waited-for job ended failed or cancelled
  2  bad usage: an unknown option, a missing argument, an unreadable spec file
  3  the server cannot be reached, or took the connection and did not answer in time
  4  a downloaded file failed its sha256 check
  130 interrupted (Ctrl-C); a download keeps its partial file and resumes next time
"""
from __future__ import annotations

import functools
import json
import re
import sys
from datetime import datetime, timezone
from typing import Annotated, Optional

import typer
import typer.core
from rich.console import Console
from rich.table import Column, Table

from client.errors import ApiError, ChecksumMismatch, ConnectionFailed, DarkmatterError, JobFailed

EXIT_CODES = __doc__.split("Exit codes (also in `darkmatter --help`):\n", 1)[1]
OK, REFUSED, USAGE, UNREACHABLE, CHECKSUM, INTERRUPTED = 0, 1, 2, 3, 4, 130

console = Console(highlight=False)
err_console = Console(highlight=False, stderr=True)  # progress beside --json output
Url = Annotated[str, typer.Option("--url", envvar="DARKMATTER_URL", help="API base URL")]
Key = Annotated[Optional[str], typer.Option("--api-key", envvar="DARKMATTER_API_KEY", help="API key", show_default=False)]
Json = Annotated[bool, typer.Option("--json", help="print JSON (one document; `watch` prints one event a line)")]
DEFAULT_URL = "http://127.0.0.1:8000"


class Formatter(typer.Context.formatter_class):
    """Help without typer's Python-type placeholders for repeated arguments (`<list[Path]>`): the
    metavar already says `FILE...`."""

    def write_dl(self, rows, *args, **kwargs) -> None:
        super().write_dl([(re.sub(r" <list\[[^\]]*\]>", "", term), text) for term, text in rows], *args, **kwargs)


class HelpContext(typer.Context):
    formatter_class = Formatter


class Commands(typer.core.TyperGroup):
    """A command group whose listing shows each command's whole first paragraph (click cuts it at
    the terminal's width with '...', and at the first '.', even the one in 'e.g.')."""

    context_class = HelpContext

    def get_command(self, ctx, name):
        command = super().get_command(ctx, name)
        if command is not None:
            command.context_class = HelpContext
        return command

    def format_commands(self, ctx, formatter) -> None:
        rows = []
        for name in self.list_commands(ctx):
            command = self.get_command(ctx, name)
            if command is not None and not command.hidden:
                text = command.short_help or (command.help or "").split("\n\n")[0]
                rows.append((name, " ".join(text.split())))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


ID_COLUMNS = ("id", "job", "checkpoint", "dataset", "item")


def make_table(*headers: str, **options) -> Table:
    """A table whose id columns are never cut nor wrapped (they are what a user copies next);
    the other columns fold instead."""
    columns = [Column(h, no_wrap=True, min_width=len("ckpt_") + 16) if h in ID_COLUMNS else Column(h, overflow="fold")
               for h in headers]
    return Table(*columns, **options)


def print_table(rows: Table) -> None:
    """In a terminal, the terminal's width; in a pipe or a file, as wide as the rows (never cut at 80)."""
    if console.is_terminal:
        console.print(rows)
        return
    natural = console.measure(rows, options=console.options.update(width=100_000, max_width=100_000)).maximum
    width = console.width
    console.width = max(width, natural)
    try:
        console.print(rows)
    finally:
        console.width = width


def connect(url: str, api_key: str | None):
    from client.sdk import Client

    return Client(url, api_key)


def fail(message: str, hint: str = "", code: int = USAGE) -> typer.Exit:
    """Print one line (`error: ... (hint: ...)`) to stderr; returns the Exit to raise."""
    line = " ".join(f"error: {message}".split())
    typer.echo(f"{line} (hint: {hint})" if hint else line, err=True)
    return typer.Exit(code)


def handles_errors(command):
    """Turn the client's errors into one line and a documented exit code, never a traceback."""

    @functools.wraps(command)
    def run(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except ConnectionFailed as exc:
            raise fail(str(exc), exc.hint, UNREACHABLE) from None
        except ChecksumMismatch as exc:
            raise fail(str(exc), exc.hint, CHECKSUM) from None
        except JobFailed as exc:
            raise fail(str(exc), "see `darkmatter jobs show ID` for its events", REFUSED) from None
        except ApiError as exc:
            raise fail(str(exc), exc.hint, REFUSED) from None
        except DarkmatterError as exc:
            raise fail(str(exc), exc.hint, REFUSED) from None
        except TimeoutError as exc:
            raise fail(str(exc), "wait longer with --timeout, or check the workers", REFUSED) from None
        except KeyboardInterrupt:
            raise fail("interrupted", "run the same command again to resume", INTERRUPTED) from None

    return run


Yes = Annotated[bool, typer.Option("--yes", "-y", help="delete without asking")]


def confirmed(what: str, yes: bool) -> None:
    """Ask before a deletion unless --yes; without a terminal to ask on, --yes is required."""
    if yes:
        return
    if not sys.stdin.isatty():
        raise fail(f"not deleting {what} without confirmation", "pass --yes")
    if not typer.confirm(f"delete {what}? This cannot be undone", default=False):
        raise fail(f"{what} not deleted", "pass --yes to skip the question", REFUSED)


def deleted_line(answer: dict) -> str:
    extra = [f"{len(answer['checkpoints_deleted'])} checkpoint(s)"] if answer.get("checkpoints_deleted") else []
    extra += [f"{answer['scores_deleted']} score(s)"] if answer.get("scores_deleted") else []
    return f"{answer['id']}: deleted" + (f" with {', '.join(extra)}" if extra else "")


def print_json(data) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))


def age(iso: str | None) -> str:
    """'3m ago' style age of an ISO timestamp (naive means UTC)."""
    if not iso:
        return ""
    at = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    if at.tzinfo is None:
        at = at.replace(tzinfo=timezone.utc)
    seconds = max(0, int((datetime.now(timezone.utc) - at).total_seconds()))
    for size, unit in ((86400, "d"), (3600, "h"), (60, "m")):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"
