"""`python -m api serve|create-key|disable-key`: run the HTTP server, create an API key for a
project, or disable one (by its id or the key itself)."""
from __future__ import annotations

import argparse
import gc
import logging
import sys


def settle_heap() -> None:
    """Before serving: import the method and backbone registries (see load_registries), then move
    what startup built (torch, the app: ~300k objects) out of the garbage collector's sight.
    Otherwise every full collection walks all of it, a pause of ~150 ms of every request in flight
    every few seconds under load (the API's p99); requests' own garbage is still collected."""
    from jobs.specs import load_registries

    load_registries()
    gc.collect()
    gc.freeze()


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
    disable = sub.add_parser("disable-key", help="disable a key for good: its requests answer 401")
    disable.add_argument("key", help="the key's id (key_..., GET /v1/keys) or the key itself")
    args = parser.parse_args(argv)
    from jobs.logs import configure
    from jobs.settings import Settings

    settings = Settings(**({"auth": True} if getattr(args, "auth", False) else {})).resolved()
    configure("api", logging.INFO, settings.log_format)
    if args.command == "serve":
        import uvicorn

        from api.app import create_app

        app = create_app(settings)
        settle_heap()
        # uvicorn's own loggers go through the root handler (JSON); requests are logged by api.observe
        uvicorn.run(app, host=args.host, port=args.port, log_level="info", log_config=None, access_log=False)
    elif args.command == "create-key":
        from jobs.db import session_scope
        from jobs.keys import create_key
        from jobs.migrate import upgrade

        upgrade(settings.database_url)
        with session_scope(settings.database_url) as session:
            project_id, key = create_key(session, args.project, args.name)
        print(f"project {project_id}\nkey {key}")  # shown once; only its hash is stored
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
