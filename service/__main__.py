"""``python -m service`` (or ``report-service``): the command line. Manage API keys, run everything
locally (`make run`), submit, check a container's health."""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys
from collections.abc import Sequence
from pathlib import Path

from service.client.cli import add_submit_parser, run_submit
from service.core.settings import Settings
from service.store.connection import open_redis
from service.store.keys import PLANS, KeyInfo, KeyStore, check_user_id
from service.telemetry.health import Role, check_web, check_worker, container_command, role_of, worker_pids


def _user_id(value: str) -> str:
    try:
        return check_user_id(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def build_parser() -> argparse.ArgumentParser:
    # The console script and `python -m service` are one command line; the usage names how it was run.
    prog = "report-service" if Path(sys.argv[0]).name == "report-service" else "python -m service"
    parser = argparse.ArgumentParser(prog=prog, description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    keys = commands.add_parser("keys", help="create, list and revoke API keys")
    key_commands = keys.add_subparsers(dest="keys_command", required=True)
    create = key_commands.add_parser("create", help="mint a key; it is printed once, on the last line")
    create.add_argument("--user", required=True, type=_user_id)
    create.add_argument("--plan", required=True, choices=PLANS)
    key_commands.add_parser("list", help="every key: id, user, plan, created, revoked")
    revoke = key_commands.add_parser("revoke", help="revoke a key by its id (from `keys list`) or the key")
    revoke.add_argument("key")
    commands.add_parser("dev", help="embedded Redis + API + worker on this machine (what `make run` runs)")
    add_submit_parser(commands)
    health = commands.add_parser(
        "health", help="exit 0 when this container's process is healthy (the image's HEALTHCHECK)"
    )
    role = health.add_mutually_exclusive_group()
    role.add_argument("--web", dest="role", action="store_const", const="web", help="GET /healthz on $PORT")
    role.add_argument(
        "--worker", dest="role", action="store_const", const="worker",
        help="a worker on this host reported to Redis within 2 x METRICS_FLUSH_SECONDS + 1 s",
    )  # fmt: skip
    return parser


def _describe(info: KeyInfo) -> str:
    revoked = f"revoked {info.revoked_at}" if info.revoked_at else "active"
    return f"{info.key_id}  {info.user_id:<24} {info.plan:<5} created {info.created_at}  {revoked}"


async def _keys(args: argparse.Namespace, settings: Settings) -> int:
    redis = open_redis(settings.redis_url, fail_fast=True)
    store = KeyStore(redis)
    try:
        if args.keys_command == "create":
            api_key, info = await store.create(args.user, args.plan)
            print(f"created key {info.key_id} for {info.user_id} (plan {info.plan}); it is shown only once:")
            print(api_key)
        elif args.keys_command == "list":
            for info in await store.list():
                print(_describe(info))
        else:
            revoked = await store.revoke(args.key)
            if revoked is None:
                print(f"no key with id {args.key!r}", file=sys.stderr)
                return 1
            print(_describe(revoked))
        return 0
    finally:
        await redis.aclose()


def _health(role: Role | None) -> int:
    """Without a role: the container's own, from its main command (process 1)."""
    try:
        settings = Settings()
        role = role or role_of(container_command())
        if role == "worker":
            healthy, why = asyncio.run(check_worker(settings, socket.gethostname(), worker_pids()))
        else:
            healthy, why = check_web(settings.port)
    except Exception as exc:  # a health check answers with one line, never a traceback
        healthy, why = False, f"{type(exc).__name__}: {exc}"
    print(f"{'healthy' if healthy else 'unhealthy'} ({role or 'unknown role'}): {why}")
    return 0 if healthy else 1


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "submit":
        return run_submit(args)
    if args.command == "health":
        return _health(args.role)
    if args.command == "dev":
        from service.dev.run import run_dev  # imported late: only `make run` needs it

        return run_dev()
    try:
        return asyncio.run(_keys(args, Settings()))
    except Exception as exc:  # a CLI answers with one clear line, not a traceback
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
