"""`python -m api serve|create-key|disable-key`: run the HTTP server, create an API key for a
project, or disable one (by its id or the key itself)."""
from __future__ import annotations

import argparse
import gc
import logging
import os
import secrets
import sys
from pathlib import Path


def settle_heap() -> None:
    """Before serving: import the method and backbone registries (see load_registries), then move
    what startup built (torch, the app: ~300k objects) out of the garbage collector's sight.
    Otherwise every full collection walks all of it, a pause of ~150 ms of every request in flight
    every few seconds under load (the API's p99); requests' own garbage is still collected."""
    from jobs.specs import load_registries

    load_registries()
    gc.collect()
    gc.freeze()


PLACEHOLDERS = ("change-me",)  # .env.example's values: a deployment that kept one is refused


def placeholder_secrets(settings) -> list[str]:
    """The settings whose secret is still a placeholder of .env.example."""
    secrets_in = {"DARKMATTER_DATABASE_URL": settings.database_url, "DARKMATTER_BROKER_URL": settings.broker_url,
                  "DARKMATTER_RESULT_BACKEND": settings.result_backend, "DARKMATTER_METRICS_TOKEN": settings.metrics_token,
                  "DARKMATTER_LAUNCH_TOKEN": settings.launch_token,
                  "AWS_SECRET_ACCESS_KEY": os.environ.get("AWS_SECRET_ACCESS_KEY", "")}
    return [name for name, value in secrets_in.items() if any(p in value.lower() for p in PLACEHOLDERS)]


def write_launch_token(home: Path, token: str) -> Path:
    """`home`/launch-token, readable by its owner only (the CLI and the Python client read it)."""
    path = home / "launch-token"
    fresh = path.with_name(f".launch-token.{os.getpid()}")
    fd = os.open(fresh, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(token + "\n")
    os.replace(fresh, path)
    return path


def dashboard_url(host: str, port: int, token: str) -> str:
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else ("[::1]" if host == "::" else host)
    shown = f"[{shown}]" if ":" in shown and not shown.startswith("[") else shown
    return f"http://{shown}:{port}/" + (f"?token={token}" if token else "")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="darkmatter api")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--auth", action="store_true", help="require API keys")
    key = sub.add_parser("create-key")
    key.add_argument("--project", default="default")
    key.add_argument("--name", default="")
    key.add_argument("--scope", choices=("admin", "use"), default="admin",
                     help="admin: also manages the project's keys (the bootstrap key); use: submits and reads")
    disable = sub.add_parser("disable-key", help="disable a key for good: its requests answer 401")
    disable.add_argument("key", help="the key's id (key_..., GET /v1/keys) or the key itself")
    args = parser.parse_args(argv)
    from jobs.logs import configure
    from jobs.settings import Settings

    settings = Settings(**({"auth": True} if getattr(args, "auth", False) else {})).resolved()
    configure("api", logging.INFO, settings.log_format)
    if args.command == "serve":
        import uvicorn

        if placeholders := placeholder_secrets(settings):
            print(f"error: {', '.join(placeholders)} still hold a placeholder secret ('change-me'); set real "
                  "values in .env (e.g. `openssl rand -hex 24`)", file=sys.stderr)
            raise SystemExit(2)

        from api.app import create_app

        if not settings.auth:  # the localhost default: /v1 needs a launch token, as notebook servers do
            settings = settings.model_copy(update={"launch_token": settings.launch_token or secrets.token_urlsafe(32)})
            path = write_launch_token(settings.home, settings.launch_token)
            # on stderr: `darkmatter up` prints its own line on stdout once the API answers
            print(f"launch token in {path}; dashboard: {dashboard_url(args.host, args.port, settings.launch_token)}",
                  file=sys.stderr, flush=True)
        app = create_app(settings)
        settle_heap()
        # uvicorn's own loggers go through the root handler (JSON); requests are logged by api.observe.
        # X-Forwarded-For/-Proto are believed only from forwarded_allow_ips (the TLS proxy): the client
        # address they give is the one the rate and failed-auth limits count.
        uvicorn.run(app, host=args.host, port=args.port, log_level="info", log_config=None, access_log=False,
                    proxy_headers=True, forwarded_allow_ips=settings.forwarded_allow_ips)
    elif args.command == "create-key":
        from jobs.db import session_scope
        from jobs.keys import create_key
        from jobs.migrate import upgrade

        upgrade(settings.database_url)
        with session_scope(settings.database_url) as session:
            project_id, key = create_key(session, args.project, args.name, args.scope)
        print(f"project {project_id}\nkey {key}\nscope {args.scope}")  # shown once; only its hash is stored
    else:
        from jobs.db import session_scope
        from jobs.keys import KeyNotFound, disable_key
        from jobs.migrate import upgrade

        upgrade(settings.database_url)
        try:
            with session_scope(settings.database_url) as session:
                row = disable_key(session, args.key)
                print(f"disabled {row.id} ({row.prefix}..., project {row.project_id})")
        except KeyNotFound as exc:
            print(f"error: {exc}", file=sys.stderr)
            raise SystemExit(1) from None


if __name__ == "__main__":
    main()
