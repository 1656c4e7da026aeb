"""Command line: `python -m app serve|migrate|local|stack|...` (`--help` lists them)."""

from __future__ import annotations

import argparse
import asyncio
import os

from app import logs
from app.settings import Settings, SettingsError


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m app", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("serve", help="run the service against DATABASE_URL and S3_ENDPOINT_URL")
    commands.add_parser(
        "worker", help="take V1 media jobs from the queue and process them (SIGTERM stops it)"
    )
    commands.add_parser("migrate", help="apply pending migrations to DATABASE_URL")
    commands.add_parser(
        "init-bucket", help="create S3_BUCKET if missing and make its objects publicly readable"
    )
    sweeper = commands.add_parser(
        "sweep-orphans", help="list S3 objects no media row refers to (--delete removes them)"
    )
    sweeper.add_argument("--delete", action="store_true", help="remove the orphans found")
    sweeper.add_argument(
        "--min-age",
        type=float,
        default=60.0,
        metavar="MINUTES",
        help="skip objects younger than this, which may belong to uploads in flight (default 60)",
    )
    commands.add_parser(
        "local", help="start the embedded PostgreSQL and S3 where unset, migrate, then serve"
    )
    stack = commands.add_parser(
        "stack",
        help="like local, but N service processes on PORT+1.. behind Caddy on PORT",
    )
    stack.add_argument(
        "--processes", type=int, default=3, metavar="N", help="service processes (default 3)"
    )
    commands.add_parser(
        "restart-rolling",
        help="replace the processes of the running `stack` one at a time, without dropping traffic",
    )
    demo_command = commands.add_parser(
        "demo", help="make demo people, photos, follows and likes through the API (idempotent)"
    )
    demo_command.add_argument(
        "--url",
        default=None,
        help="the running service (default http://127.0.0.1:PORT, as `make run` serves it)",
    )
    args = parser.parse_args(argv)

    try:
        settings = Settings.from_env(os.environ)
    except SettingsError as exc:
        raise SystemExit(f"configuration error: {exc}") from None
    logs.configure(settings.log_level)

    if args.command == "serve":
        from app.main import serve

        serve(settings)
    elif args.command == "worker":
        from app import worker

        if not settings.database_url:
            raise SystemExit("DATABASE_URL is not set: point it at PostgreSQL, or use `make run`")
        worker.run(settings)
    elif args.command == "migrate":
        from app.migrations import migrate

        if not settings.database_url:
            raise SystemExit("DATABASE_URL is not set")
        asyncio.run(migrate(settings.database_url))
    elif args.command == "init-bucket":
        from app.storage import ensure_bucket

        asyncio.run(ensure_bucket(settings))
    elif args.command == "sweep-orphans":
        import datetime as dt

        from app.devstack.runner import running_stack_settings
        from app.sweep import sweep

        if not settings.database_url:
            found = running_stack_settings(settings)
            if found is None:
                raise SystemExit(
                    "DATABASE_URL is not set and no `make run` stack is running in "
                    f"{settings.local_dir}: set DATABASE_URL and S3_ENDPOINT_URL, or start one"
                )
            settings = found
        asyncio.run(sweep(settings, dt.timedelta(minutes=args.min_age), args.delete))
    elif args.command == "local":
        from app.devstack.runner import run_local

        raise SystemExit(run_local(settings))
    elif args.command == "stack":
        from app.devstack.stack import run_stack

        if args.processes < 1:
            raise SystemExit("--processes must be at least 1")
        raise SystemExit(run_stack(settings, args.processes))
    elif args.command == "demo":
        from app import demo

        raise SystemExit(demo.run(args.url or f"http://127.0.0.1:{settings.port}"))
    elif args.command == "restart-rolling":
        from app.devstack.stack import restart_rolling

        raise SystemExit(restart_rolling(settings))


if __name__ == "__main__":
    main()
