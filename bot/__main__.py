"""The command line: comfycord run | serve | check | generate | workflows | backends | import
| sync | keys."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from bot.cli.comfyui import check, show_backends
from bot.cli.generate import generate
from bot.cli.keys import manage_keys
from bot.cli.workflows import import_workflow, list_workflows
from bot.errors import ComfycordError, ConfigError, UserError
from bot.settings import load_settings

log = logging.getLogger("comfycord")

TOKEN_HELP = """\
DISCORD_TOKEN is not set, so the bot cannot log in.
  1. Open https://discord.com/developers/applications, create an application, open "Bot"
     and press "Reset Token" to get the token.
  2. export DISCORD_TOKEN='<the token>'   (never put it in a file that is committed)
  3. Run this command again. See README.md ("Set up the Discord bot") for inviting it.
"""


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )
    logging.getLogger("discord.gateway").setLevel(logging.WARNING)
    # discord.py's debug lines carry request URLs, and an interaction's URL holds its token
    for name in ("discord.http", "discord.webhook.async_"):
        logging.getLogger(name).setLevel(max(logging.INFO, logging.getLogger().level))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="comfycord", description=__doc__)
    parser.add_argument("--config", type=Path, help="settings file (config/comfycord.yaml)")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("run", help="start the Discord bot")
    check = sub.add_parser("check", help="validate the settings and every workflow")
    check.add_argument("--offline", action="store_true", help="do not ask ComfyUI")
    gen = sub.add_parser("generate", help="run one workflow on ComfyUI and save its results")
    gen.add_argument("workflow")
    gen.add_argument("--prompt", "-p", help="the prompt text")
    gen.add_argument(
        "--set", "-s", action="append", default=[], metavar="NAME=VALUE", help="a parameter"
    )
    gen.add_argument(
        "--file",
        "--image",
        dest="files",
        action="append",
        default=[],
        metavar="NAME=FILE",
        help="a file for an image, video or audio parameter",
    )
    gen.add_argument("--count", type=int, default=1, help="how many images (seeds)")
    gen.add_argument("--out", type=Path, default=Path("out"), help="where to write the results")
    sub.add_parser("serve", help="serve the HTTP API alone (no Discord token needed)")
    keys = sub.add_parser("keys", help="create, list and revoke HTTP API keys")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    create = keys_sub.add_parser("create", help="create a key (printed once)")
    create.add_argument("name")
    create.add_argument("--limit-queued", type=int, help="jobs this key may have waiting")
    create.add_argument("--workflows", help="the only workflows it may use: a,b")
    create.add_argument(
        "--admin",
        action="store_true",
        help="an admin key: adds and removes workflows (API and web console), sees every job",
    )
    keys_sub.add_parser("list", help="list the keys (never the keys themselves)")
    revoke = keys_sub.add_parser("revoke", help="revoke a key")
    revoke.add_argument("name")
    sub.add_parser("workflows", help="list the workflows and their parameters")
    sub.add_parser("backends", help="the ComfyUI backends: state, version, device, jobs done")
    imp = sub.add_parser(
        "import", help="turn an exported ComfyUI workflow into a pack (NAME.json + NAME.yaml)"
    )
    imp.add_argument("file", type=Path, help="the workflow, saved or exported from ComfyUI")
    imp.add_argument("--name", help="the pack name (default: derived from the file name)")
    imp.add_argument("--yaml", type=Path, help="a YAML spec to use instead of detecting params")
    imp.add_argument("--offline", action="store_true", help="do not ask ComfyUI")
    sync = sub.add_parser("sync", help="register the slash commands with Discord")
    sync.add_argument("--guild", type=int, help="sync to this server only (instant)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `comfycord` console script."""
    try:
        code = _main(argv)
        sys.stdout.flush()
    except BrokenPipeError:
        # whoever read our output stopped early (`comfycord workflows | head`): not an error;
        # point stdout at nothing so that the interpreter's last flush cannot fail again
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    return code


def _main(argv: Sequence[str] | None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    setup_logging(settings.log_level)
    try:
        if args.command == "check":
            return asyncio.run(check(settings, offline=args.offline))
        if args.command == "backends":
            return asyncio.run(show_backends(settings))
        if args.command == "workflows":
            return list_workflows(settings)
        if args.command == "generate":
            return asyncio.run(generate(settings, args))
        if args.command == "import":
            return asyncio.run(import_workflow(settings, args))
        if args.command == "keys":
            return manage_keys(settings, args)
        if args.command == "serve":
            from bot.http.server import serve

            return asyncio.run(serve(settings))
        if args.command in ("run", "sync"):
            if not settings.discord_token:
                print(TOKEN_HELP, file=sys.stderr)
                return 2
            from bot.app import run_bot, sync_commands

            if args.command == "sync":
                return asyncio.run(sync_commands(settings, args.guild))
            return asyncio.run(run_bot(settings))
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except ComfycordError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
