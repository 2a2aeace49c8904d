"""The store's schema as numbered steps, applied in order at start-up, the same on both databases.

`schema_version` holds the number of every step applied. `migrate()` applies those after the
highest one in one transaction with their numbers (all of them, or none), under a lock on
PostgreSQL so that two processes starting together never apply a step twice. Steps write
`{serial_key}` and `{real}` where the SQLite and PostgreSQL types differ (see `Dialect`).

Step 1 is the schema from before versioning, written with `IF NOT EXISTS`: a SQLite file made
before `schema_version` existed (its tables there, no version) is taken as step 1, and keeps all
it holds. A new step is appended to `STEPS`, never edits an earlier one.
"""

from __future__ import annotations

import logging
import time

from bot.errors import ConfigError
from bot.jobs.db import Database

log = logging.getLogger(__name__)

#: The schema, step by step: STEPS[0] is step 1. Each step is a tuple of statements.
STEPS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE IF NOT EXISTS jobs (
            id TEXT PRIMARY KEY,
            state TEXT NOT NULL,
            owner_id TEXT NOT NULL,
            guild_id TEXT,
            channel_id TEXT,
            group_id TEXT,
            created_at {real} NOT NULL,
            data TEXT NOT NULL
        )""",
        "CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state)",
        "CREATE INDEX IF NOT EXISTS jobs_owner ON jobs(owner_id, created_at)",
        "CREATE INDEX IF NOT EXISTS jobs_group ON jobs(group_id)",
        """CREATE TABLE IF NOT EXISTS kv (
            scope TEXT NOT NULL,
            key TEXT NOT NULL,
            value TEXT NOT NULL,
            PRIMARY KEY (scope, key)
        )""",
        """CREATE TABLE IF NOT EXISTS audit (
            id {serial_key},
            guild_id TEXT NOT NULL,
            actor_id TEXT NOT NULL,
            actor_name TEXT NOT NULL,
            action TEXT NOT NULL,
            detail TEXT NOT NULL,
            at {real} NOT NULL
        )""",
        "CREATE INDEX IF NOT EXISTS audit_guild ON audit(guild_id, at)",
        """CREATE TABLE IF NOT EXISTS reply_tokens (
            key TEXT PRIMARY KEY,
            token TEXT NOT NULL,
            expires_at {real} NOT NULL
        )""",
    ),
)

#: The step the code expects the database at.
LATEST = len(STEPS)

_VERSION_TABLE = """CREATE TABLE IF NOT EXISTS schema_version (
    version INTEGER PRIMARY KEY,
    applied_at {real} NOT NULL
)"""


def _sql(statement: str, db: Database) -> str:
    return statement.format(serial_key=db.dialect.serial_key, real=db.dialect.real)


def version(db: Database) -> int:
    """The highest step applied to `db` (0: none, or no `schema_version` table yet)."""
    db.execute(_sql(_VERSION_TABLE, db))
    row = db.execute("SELECT MAX(version) AS v FROM schema_version").one()
    return int(row["v"]) if row and row["v"] is not None else 0


def migrate(db: Database) -> int:
    """Apply every step after the database's; the version it is at now.

    Raises:
        ConfigError: the database is at a later step than this comfycord knows (a newer version
            made it): upgrade comfycord rather than run it on a schema it does not know.
    """
    with db.transaction():
        if db.dialect.migration_lock:
            db.execute(db.dialect.migration_lock)
        current = version(db)
        if current > LATEST:
            raise ConfigError(
                f"storage: the database is at schema version {current}, this comfycord knows "
                f"versions up to {LATEST}: upgrade comfycord"
            )
        for number in range(current + 1, LATEST + 1):
            for statement in STEPS[number - 1]:
                db.execute(_sql(statement, db))
            db.execute(
                "INSERT INTO schema_version (version, applied_at) VALUES (?, ?)",
                (number, time.time()),
            )
            log.info("store schema: applied step %d", number)
    return LATEST
