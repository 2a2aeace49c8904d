"""Durable storage: jobs, per-server settings and the audit log, in SQLite or PostgreSQL.

One SQLite file is the default (`storage.path`); `storage.url` (or `COMFYCORD_DATABASE_URL`) names
a PostgreSQL database instead (`bot.jobs.db` holds what differs; the schema is the numbered steps
of `bot.jobs.migrations`, applied when the store opens). The API is the same on both.

Writes are small and synchronous (WAL mode on SQLite), so a job is stored before the call returns:
a crash right after `save()` loses nothing. `transaction()` groups writes that belong together
(a request's jobs with where their reply lives; a delivery's marks), so a crash keeps all or none.

The secret that lets the bot edit a reply (a Discord interaction token) is kept in its own table,
only until it expires, and never inside a job's record (which `/history` and logs may show).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bot.jobs.db import is_postgres_url, redact
from bot.jobs.migrations import opened
from bot.jobs.model import Job, JobState
from bot.settings import StorageSettings


@dataclass(frozen=True)
class AuditEntry:
    guild_id: str
    actor_id: str
    actor_name: str
    action: str
    detail: str
    at: float


@dataclass(frozen=True)
class ProcessInfo:
    """A process sharing the store: its id (host:pid:random), role (`bot`, `api`, `cli`), what
    it serves (`detail`, e.g. its Discord shard), whether it holds the jobs (`leading`)."""

    id: str
    role: str
    detail: str
    leading: bool
    started_at: float
    seen_at: float = 0.0


@dataclass(frozen=True)
class Webhook:
    """A webhook kept to send: where, under which API key's secret, the body, tries so far."""

    job_id: str
    url: str
    key_name: str
    payload: str
    attempts: int


class Store:
    """The store on a SQLite file, or on PostgreSQL for a `postgresql://` URL.

    `":memory:"` gives a throwaway SQLite one (tests). Opening it brings the schema to the
    latest step.

    Raises:
        ConfigError: PostgreSQL cannot be reached, or the schema is newer than this comfycord.
    """

    def __init__(self, target: Path | str) -> None:
        #: the SQLite path as given, or the URL without its password
        self.path: Path | str = redact(str(target)) if is_postgres_url(target) else target
        self._db = opened(target)

    @classmethod
    def open(cls, storage: StorageSettings) -> Store:
        """The store the settings name: `storage.url` when set, else the file `storage.path`."""
        return cls(storage.url or storage.path)

    def close(self) -> None:
        self._db.close()

    # transactions ---------------------------------------------------------------------------
    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """Group writes: all of them are stored, or none (a crash in between loses none)."""
        with self._db.transaction():
            yield

    # reply tokens ---------------------------------------------------------------------------
    def keep_token(self, key: str, token: str, expires_at: float) -> None:
        """Keep the secret that lets the bot edit a request's reply until `expires_at`."""
        self._db.execute(
            "INSERT INTO reply_tokens (key, token, expires_at) VALUES (?, ?, ?)"
            " ON CONFLICT(key) DO UPDATE SET token = excluded.token,"
            " expires_at = excluded.expires_at",
            (key, token, expires_at),
        )

    def token(self, key: str, now: float | None = None) -> str | None:
        """The reply's token while it is valid; expired ones are deleted, never returned."""
        self.forget_expired_tokens(now)
        row = self._db.execute("SELECT token FROM reply_tokens WHERE key = ?", (key,)).one()
        return str(row["token"]) if row else None

    def forget_token(self, key: str) -> None:
        self._db.execute("DELETE FROM reply_tokens WHERE key = ?", (key,))

    def forget_expired_tokens(self, now: float | None = None) -> int:
        """Delete every token past its expiry; how many were deleted."""
        now = time.time() if now is None else now
        result = self._db.execute("DELETE FROM reply_tokens WHERE expires_at <= ?", (now,))
        return result.rowcount

    # jobs -----------------------------------------------------------------------------------
    def save(self, job: Job) -> None:
        self._db.execute(
            "INSERT INTO jobs (id, state, owner_id, guild_id, channel_id, group_id, created_at,"
            " data)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET state=excluded.state,"
            " data=excluded.data",
            (
                job.id,
                job.state.value,
                job.owner_id,
                job.guild_id,
                job.channel_id,
                job.group_id,
                job.created_at,
                json.dumps(job.to_dict()),
            ),
        )

    def merge_meta(self, job_id: str, meta: dict[str, Any]) -> Job | None:
        """Add `meta` to a stored job's meta, leaving the rest of its record as stored (another
        process may be writing it); the job as it now is, None if there is no such job."""
        with self.transaction():
            lock = " FOR UPDATE" if self._db.dialect.name == "postgresql" else ""
            row = self._db.execute(f"SELECT data FROM jobs WHERE id = ?{lock}", (job_id,)).one()
            if row is None:
                return None
            job = Job.from_dict(json.loads(row["data"]))
            job = job.evolve(meta={**job.meta, **meta})
            self.save(job)
        return job

    def get(self, job_id: str) -> Job | None:
        row = self._db.execute("SELECT data FROM jobs WHERE id = ?", (job_id,)).one()
        return Job.from_dict(json.loads(row["data"])) if row else None

    def _query(self, where: str, params: Iterable[Any], limit: int | None = None) -> list[Job]:
        sql = f"SELECT data, created_at FROM jobs WHERE {where} ORDER BY created_at"
        if limit is not None:
            sql = f"SELECT * FROM ({sql} DESC LIMIT {int(limit)}) AS latest ORDER BY created_at"
        return [Job.from_dict(json.loads(r["data"])) for r in self._db.execute(sql, tuple(params))]

    def unfinished(self) -> list[Job]:
        states = [s.value for s in JobState if s.active]
        marks = ",".join("?" * len(states))
        return self._query(f"state IN ({marks})", states)

    def undelivered(self) -> list[Job]:
        states = [s.value for s in JobState if s.finished]
        marks = ",".join("?" * len(states))
        jobs = self._query(f"state IN ({marks})", states)
        return [j for j in jobs if not j.delivered]

    def done_by_backend(self) -> dict[str, int]:
        """How many jobs each ComfyUI backend (by name) has finished successfully."""
        backend = self._db.dialect.json_text("data", "backend")
        rows = self._db.execute(
            f"SELECT {backend} AS backend, COUNT(*) AS n FROM jobs WHERE state = ?"
            f" GROUP BY {backend}",
            (JobState.DONE.value,),
        )
        return {row["backend"]: row["n"] for row in rows if row["backend"]}

    def group(self, group_id: str) -> list[Job]:
        return self._query("group_id = ?", [group_id])

    def recent(
        self, *, owner_id: str | None = None, guild_id: str | None = None, limit: int = 10
    ) -> list[Job]:
        clauses, params = ["1=1"], []
        if owner_id is not None:
            clauses.append("owner_id = ?")
            params.append(owner_id)
        if guild_id is not None:
            clauses.append("guild_id = ?")
            params.append(guild_id)
        return list(reversed(self._query(" AND ".join(clauses), params, limit=limit)))

    def last_created(self, owner_id: str, guild_id: str | None) -> float | None:
        same = self._db.dialect.same
        row = self._db.execute(
            f"SELECT MAX(created_at) AS t FROM jobs WHERE owner_id = ? AND guild_id {same} ?",
            (owner_id, guild_id),
        ).one()
        return float(row["t"]) if row and row["t"] is not None else None

    def queued_before(self, created_before: float) -> list[Job]:
        """Queued jobs stored before `created_before` (a time.time())."""
        return self._query("state = ? AND created_at < ?", [JobState.QUEUED.value, created_before])

    # processes ------------------------------------------------------------------------------
    def see_process(self, process: ProcessInfo) -> None:
        """Record that a process sharing the store is alive (now), and what it does."""
        self._db.execute(
            "INSERT INTO processes (id, role, detail, holds_jobs, started_at, seen_at)"
            " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET role = excluded.role,"
            " detail = excluded.detail, holds_jobs = excluded.holds_jobs,"
            " seen_at = excluded.seen_at",
            (
                process.id,
                process.role,
                process.detail,
                int(process.leading),
                process.started_at,
                time.time(),
            ),
        )

    def hold_jobs(self, process_id: str) -> None:
        """Record that `process_id` holds the jobs now, and no other process."""
        self._db.execute("UPDATE processes SET holds_jobs = 0 WHERE id <> ?", (process_id,))

    def forget_process(self, process_id: str) -> None:
        self._db.execute("DELETE FROM processes WHERE id = ?", (process_id,))

    def processes(self, seen_within: float = 10.0) -> list[ProcessInfo]:
        """The processes seen in the last `seen_within` seconds (older rows are deleted)."""
        self._db.execute("DELETE FROM processes WHERE seen_at < ?", (time.time() - 60.0,))
        rows = self._db.execute(
            "SELECT id, role, detail, holds_jobs, started_at, seen_at FROM processes"
            " WHERE seen_at >= ? ORDER BY started_at",
            (time.time() - seen_within,),
        )
        return [
            ProcessInfo(
                id=r["id"],
                role=r["role"],
                detail=r["detail"],
                leading=bool(r["holds_jobs"]),
                started_at=float(r["started_at"]),
                seen_at=float(r["seen_at"]),
            )
            for r in rows
        ]

    # webhooks to send -----------------------------------------------------------------------
    def add_webhook(self, job_id: str, url: str, key_name: str, payload: str) -> bool:
        """Keep a webhook to send for a job (once: False if it is kept already)."""
        now = time.time()
        result = self._db.execute(
            "INSERT INTO webhook_outbox (job_id, url, key_name, payload, state, attempts,"
            " next_at, created_at) VALUES (?, ?, ?, ?, 'pending', 0, ?, ?)"
            " ON CONFLICT(job_id) DO NOTHING",
            (job_id, url, key_name, payload, now, now),
        )
        return result.rowcount == 1

    def due_webhooks(self, now: float, limit: int = 20) -> list[Webhook]:
        """Webhooks to send now: pending, due, and not leased by a process sending them."""
        rows = self._db.execute(
            "SELECT job_id, url, key_name, payload, attempts FROM webhook_outbox"
            " WHERE state = 'pending' AND next_at <= ? AND (lease_until IS NULL OR lease_until < ?)"
            " ORDER BY next_at LIMIT ?",
            (now, now, limit),
        )
        return [Webhook(**row) for row in rows]

    def next_webhook_at(self) -> float | None:
        """When the next pending webhook is due (None: none is pending)."""
        row = self._db.execute(
            "SELECT MIN(next_at) AS t FROM webhook_outbox WHERE state = 'pending'"
        ).one()
        return float(row["t"]) if row and row["t"] is not None else None

    def lease_webhook(self, job_id: str, holder: str, until: float) -> bool:
        """Take a due webhook to send it, until `until` (False: another process has it)."""
        now = time.time()
        result = self._db.execute(
            "UPDATE webhook_outbox SET holder = ?, lease_until = ? WHERE job_id = ?"
            " AND state = 'pending' AND (lease_until IS NULL OR lease_until < ?)",
            (holder, until, job_id, now),
        )
        return result.rowcount == 1

    def webhook_tried(self, job_id: str, state: str, attempts: int, next_at: float) -> None:
        """After an attempt: `sent`, `failed` (for good), or `pending` again at `next_at`."""
        self._db.execute(
            "UPDATE webhook_outbox SET state = ?, attempts = ?, next_at = ?, holder = NULL,"
            " lease_until = NULL WHERE job_id = ?",
            (state, attempts, next_at, job_id),
        )

    def webhook_state(self, job_id: str) -> tuple[str, int] | None:
        """A kept webhook's state and attempts so far."""
        row = self._db.execute(
            "SELECT state, attempts FROM webhook_outbox WHERE job_id = ?", (job_id,)
        ).one()
        return (str(row["state"]), int(row["attempts"])) if row else None

    def finished_without_webhook(self, since: float) -> list[Job]:
        """Finished jobs created after `since` that name a webhook none was kept for."""
        states = [s.value for s in JobState if s.finished]
        marks = ",".join("?" * len(states))
        rows = self._db.execute(
            "SELECT j.data FROM jobs j LEFT JOIN webhook_outbox w ON w.job_id = j.id"
            f" WHERE j.state IN ({marks}) AND j.created_at > ? AND w.job_id IS NULL"
            " AND j.data LIKE ?",
            (*states, since, '%"webhook":%'),
        )
        jobs = [Job.from_dict(json.loads(r["data"])) for r in rows]
        return [j for j in jobs if j.meta.get("webhook")]

    # settings -------------------------------------------------------------------------------
    def get_setting(self, scope: str, key: str, default: Any = None) -> Any:
        row = self._db.execute(
            "SELECT value FROM kv WHERE scope = ? AND key = ?", (scope, key)
        ).one()
        return json.loads(row["value"]) if row else default

    def set_setting(self, scope: str, key: str, value: Any) -> None:
        if value is None:
            self._db.execute("DELETE FROM kv WHERE scope = ? AND key = ?", (scope, key))
            return
        self._db.execute(
            "INSERT INTO kv (scope, key, value) VALUES (?, ?, ?)"
            " ON CONFLICT(scope, key) DO UPDATE SET value = excluded.value",
            (scope, key, json.dumps(value)),
        )

    def settings_in(self, scope_prefix: str) -> dict[tuple[str, str], Any]:
        rows = self._db.execute(
            "SELECT scope, key, value FROM kv WHERE scope LIKE ?", (scope_prefix + "%",)
        )
        return {(r["scope"], r["key"]): json.loads(r["value"]) for r in rows}

    # audit ----------------------------------------------------------------------------------
    def audit(
        self, guild_id: str, actor_id: str, actor_name: str, action: str, detail: str
    ) -> None:
        self._db.execute(
            "INSERT INTO audit (guild_id, actor_id, actor_name, action, detail, at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (guild_id, actor_id, actor_name, action, detail, time.time()),
        )

    def audit_log(self, guild_id: str, limit: int = 20) -> list[AuditEntry]:
        rows = self._db.execute(
            "SELECT guild_id, actor_id, actor_name, action, detail, at FROM audit"
            " WHERE guild_id = ? ORDER BY id DESC LIMIT ?",
            (guild_id, limit),
        )
        return [AuditEntry(**r) for r in rows]
