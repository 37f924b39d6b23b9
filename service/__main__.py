"""``python -m service``: the command line. Manage API keys, run everything locally (`make run`), submit."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from service.client.cli import add_submit_parser, run_submit
from service.core.settings import Settings
from service.store.connection import open_redis
from service.store.keys import PLANS, KeyInfo, KeyStore, check_user_id


def _user_id(value: str) -> str:
    try:
        return check_user_id(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m service", description=__doc__)
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


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "submit":
        return run_submit(args)
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
