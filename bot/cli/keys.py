"""`comfycord keys create|list|revoke`: the HTTP API's keys, kept in the store."""

from __future__ import annotations

import argparse
import sys
import time
from typing import TextIO

from bot.errors import UserError
from bot.jobs.store import Store
from bot.settings import Settings
from bot.workflows import load_workflows


def manage_keys(settings: Settings, args: argparse.Namespace, out: TextIO | None = None) -> int:
    """`comfycord keys create|list|revoke`."""
    from bot.http.keys import KeyStore

    out = out or sys.stdout
    store = Store.open(settings.storage)
    try:
        keys = KeyStore(store)
        if args.keys_command == "create":
            workflows = [w.strip() for w in (args.workflows or "").split(",") if w.strip()]
            known, _ = load_workflows(settings.workflows.dir)
            unknown = [w for w in workflows if w not in known]
            if unknown:
                raise UserError(f"--workflows: no workflow called {', '.join(unknown)}")
            created = keys.create(
                args.name,
                limit_queued=args.limit_queued,
                workflows=workflows or None,
                role="admin" if args.admin else "member",
            )
            role = "admin key" if args.admin else "key"
            print(f"{role} {args.name} created. It is shown only this once:", file=out)
            print(f"  API key:        {created.secret}", file=out)
            print(f"  webhook secret: {created.webhook_secret}", file=out)
            print("Use it as: Authorization: Bearer <API key>", file=out)
        elif args.keys_command == "list":
            listed = keys.list()
            for key in listed:
                limit = key.limit_queued if key.limit_queued is not None else "default"
                allowed = ",".join(key.workflows) if key.workflows else "all"
                when = time.strftime("%Y-%m-%d %H:%M", time.gmtime(key.created_at))
                print(
                    f"{key.name}  {key.role}  created {when} UTC  queued limit {limit}  "
                    f"workflows {allowed}",
                    file=out,
                )
            if not listed:
                print("no keys; create one with `comfycord keys create NAME`", file=out)
        else:
            keys.revoke(args.name)
            print(f"key {args.name} revoked", file=out)
    finally:
        store.close()
    return 0
