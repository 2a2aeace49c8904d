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
from collections.abc import Callable
from pathlib import Path

from bot.errors import ConfigError
from bot.jobs.db import Database, connect

log = logging.getLogger(__name__)

#: One change of a step: a statement, or a function for what SQL alone can't say on both.
Change = str | Callable[[Database], None]

#: The schema, step by step: STEPS[0] is step 1. Each step is a tuple of changes.
STEPS: tuple[tuple[Change, ...], ...] = (
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
    (  # 2: the jams, until then in their own tables of the SQLite file only, made by the jams
        """CREATE TABLE IF NOT EXISTS jams (
            id TEXT PRIMARY KEY,
            guild_id TEXT NOT NULL,
            channel_id TEXT NOT NULL,
            thread_id TEXT NOT NULL,
            theme TEXT NOT NULL,
            workflow TEXT,
            max_entries INTEGER NOT NULL,
            ends_at {real} NOT NULL,
            vote_seconds {real} NOT NULL,
            vote_ends_at {real},
            state TEXT NOT NULL,
            created_by TEXT NOT NULL,
            created_at {real} NOT NULL,
            closed_at {real}
        )""",
        "CREATE INDEX IF NOT EXISTS jams_thread ON jams(thread_id)",
        """CREATE TABLE IF NOT EXISTS jam_entries (
            jam_id TEXT NOT NULL,
            job_id TEXT NOT NULL,
            owner_id TEXT NOT NULL,
            number INTEGER NOT NULL,
            prompt TEXT NOT NULL,
            workflow TEXT NOT NULL,
            added_at {real} NOT NULL,
            posted INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (jam_id, job_id)
        )""",
        """CREATE TABLE IF NOT EXISTS jam_votes (
            jam_id TEXT NOT NULL,
            voter_id TEXT NOT NULL,
            job_id TEXT NOT NULL,
            at {real} NOT NULL,
            PRIMARY KEY (jam_id, voter_id)
        )""",
        # a file whose jams' tables came from their first version lacks these
        lambda db: _add_column(db, "jams", "closed_at", "{real}"),
        lambda db: _add_column(db, "jam_entries", "posted", "INTEGER NOT NULL DEFAULT 0"),
    ),
    (  # 3: the processes sharing the store (`bot.jobs.cluster`), and the webhooks to send
        """CREATE TABLE IF NOT EXISTS processes (
            id TEXT PRIMARY KEY,
            role TEXT NOT NULL,
            detail TEXT NOT NULL,
            holds_jobs INTEGER NOT NULL DEFAULT 0,
            started_at {real} NOT NULL,
            seen_at {real} NOT NULL
        )""",
        """CREATE TABLE IF NOT EXISTS webhook_outbox (
            job_id TEXT PRIMARY KEY,
            url TEXT NOT NULL,
            key_name TEXT NOT NULL,
            payload TEXT NOT NULL,
            state TEXT NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            next_at {real} NOT NULL,
            holder TEXT,
            lease_until {real},
            created_at {real} NOT NULL
        )""",
        "CREATE INDEX IF NOT EXISTS webhook_outbox_due ON webhook_outbox(state, next_at)",
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


def _add_column(db: Database, table: str, column: str, kind: str) -> None:
    """Add a column unless the table has it (PostgreSQL says so in SQL, SQLite does not)."""
    kind = _sql(kind, db)
    if db.dialect.name == "postgresql":
        db.execute(f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {column} {kind}")
        return
    have = {row["name"] for row in db.execute(f"PRAGMA table_info({table})")}
    if column not in have:
        db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")


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
            for change in STEPS[number - 1]:
                if callable(change):
                    change(db)
                else:
                    db.execute(_sql(change, db))
            db.execute(
                "INSERT INTO schema_version (version, applied_at) VALUES (?, ?)",
                (number, time.time()),
            )
            log.info("store schema: applied step %d", number)
    return LATEST


def opened(target: Path | str) -> Database:
    """A connection to the database at `target` (a SQLite path or a PostgreSQL URL), its schema
    brought up to date; closed again when that fails.

    Raises:
        ConfigError: the database can't be reached, or is newer than this comfycord.
    """
    db = connect(target)
    try:
        migrate(db)
    except BaseException:
        db.close()
        raise
    return db
