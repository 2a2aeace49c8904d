"""Several processes on one PostgreSQL store: which of them holds the jobs, and how they talk.

One process at a time holds the jobs: it has the dispatch lock (a PostgreSQL session advisory
lock), runs the runner (the fair queue, every backend's websocket, the deliveries), and follows
every reply. The others take requests, store their jobs and hand them over with a NOTIFY; they
are told of what happens to the jobs the same way. When the holder dies its database session
ends, the lock is free, and the next process to ask (every `LEAD_POLL` seconds) takes it and
resumes the jobs from the store, as a restarted bot does.

Only `bot` processes (`comfycord run`) hold the jobs while one is up, since the holder edits the
Discord replies; an `api` or `cli` process holds them only while no bot is up, and lets go when
one appears. Every process records itself in the `processes` table (`Store.processes`) every
`HEARTBEAT` seconds, which `comfycord backends` and `/queue` show.

Messages are JSON on the `comfycord` channel, several to a NOTIFY (a payload holds at most 8000
bytes), sent in order by one task on a connection of their own, so that no call of the store waits
on them. A message can be lost (a process that stops listening for a moment misses it): the
holder also takes, every `SWEEP` seconds, queued jobs that nobody handed over.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import socket
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from bot.errors import ConfigError
from bot.jobs.db import redact
from bot.jobs.store import ProcessInfo, Store
from bot.tasks import spawn

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger(__name__)

CHANNEL = "comfycord"
LEAD_LOCK = 7318350003  # any constant (the migrations' lock is ...002)
LEAD_POLL = 0.25  # seconds between two tries for the lock, and between health checks
HEARTBEAT = 1.0
PRESENT = 5.0  # a process not seen for this long is taken as gone
SWEEP = 2.0
RIVAL_WAIT = PRESENT + 1.0  # how long a bot waits for a process on its shard to be gone
MAX_PAYLOAD = 7000  # below PostgreSQL's 8000 bytes, with room for the envelope

Message = dict[str, Any]


def new_process_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


def _same_shard(one: str, other: str) -> bool:
    """Whether two bot processes (their `detail`) would get the same servers' events: both
    the same shard, or either without shards (it gets every server's)."""
    return one == other or "shard" not in one or "shard" not in other


class Cluster:
    """This process among those sharing the store at `url`.

    `on_message` gets every message another process sent; `on_lead` is awaited when this process
    takes the jobs, `on_demote` when it lets go of them (or lost its session).
    """

    def __init__(
        self,
        url: str,
        store: Store,
        *,
        role: str,
        detail: str = "",
        on_message: Callable[[Message], None],
        on_lead: Callable[[], Awaitable[None]],
        on_demote: Callable[[], Awaitable[None]],
    ) -> None:
        self.url = url
        self.store = store
        self.role = role
        self.detail = detail
        self.id = new_process_id()
        self.started_at = time.time()
        self.leading = False
        self._on_message = on_message
        self._on_lead = on_lead
        self._on_demote = on_demote
        self._outbox: deque[Message] = deque()
        self._wake_sender = asyncio.Event()
        self._sender: psycopg.AsyncConnection[Any] | None = None
        self._listener: psycopg.AsyncConnection[Any] | None = None
        self._lock: psycopg.AsyncConnection[Any] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False

    # lifecycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        """Listen, say this process is here, and start asking for the jobs (if it may hold
        them); returns at once, the first try for the lock included.

        Raises:
            ConfigError: another bot process serves the same Discord shard on this database.
        """
        await self._check_place()
        self._listener = await self._connect()
        await self._listener.execute(f"LISTEN {CHANNEL}")
        self._sender = await self._connect()
        self._see()
        log.info("sharing the store at %s as %s (%s)", redact(self.url), self.id, self.role)
        self._tasks = [
            spawn(self._listen(), name="cluster-listen"),
            spawn(self._send_loop(), name="cluster-send"),
            spawn(self._lead_loop(), name="cluster-lead"),
        ]
        await self._try_lead()

    async def stop(self) -> None:
        """Stop talking and let go of the jobs (another process takes them)."""
        self._stopping = True
        await self._flush()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self.leading:
            self.leading = False
            await self._on_demote()
        for conn in (self._lock, self._listener, self._sender):
            if conn is not None:
                with contextlib.suppress(Exception):
                    await conn.close()
        with contextlib.suppress(Exception):
            self.store.forget_process(self.id)

    async def _reconnect(
        self, old: psycopg.AsyncConnection[Any] | None
    ) -> psycopg.AsyncConnection[Any]:
        """A new connection in place of `old`, which is closed (it is broken, or soon will be)."""
        if old is not None:
            with contextlib.suppress(Exception):
                await old.close()
        return await self._connect()

    async def _connect(self) -> psycopg.AsyncConnection[Any]:
        import psycopg

        return await psycopg.AsyncConnection.connect(self.url, autocommit=True)

    async def _check_place(self) -> None:
        """Each Discord shard is served by one bot process: two would both answer every
        command. A process on this one that has just died is still listed for `PRESENT`
        seconds (a restart), so it is given that long to be gone."""
        if self.role != "bot":
            return
        deadline = time.monotonic() + RIVAL_WAIT
        while rivals := [
            p
            for p in self.processes()
            if p.role == "bot" and p.id != self.id and _same_shard(p.detail, self.detail)
        ]:
            if time.monotonic() >= deadline:
                raise ConfigError(
                    f"another comfycord run process ({rivals[0].id}) serves {rivals[0].detail} "
                    "on this database: give each process its own discord.shard_id, with the "
                    "same discord.shard_count"
                )
            await asyncio.sleep(0.25)

    # presence -------------------------------------------------------------------------------
    def _see(self) -> None:
        self.store.see_process(
            ProcessInfo(self.id, self.role, self.detail, self.leading, self.started_at)
        )

    def processes(self) -> list[ProcessInfo]:
        return self.store.processes(seen_within=PRESENT)

    def _may_lead(self) -> bool:
        """A bot always may; another process only while no bot is up."""
        if self.role == "bot":
            return True
        return not any(p.role == "bot" and p.id != self.id for p in self.processes())

    # holding the jobs -----------------------------------------------------------------------
    async def _lead_loop(self) -> None:
        last_seen = 0.0
        while True:
            await asyncio.sleep(LEAD_POLL)
            try:
                if time.monotonic() - last_seen >= HEARTBEAT:
                    self._see()
                    last_seen = time.monotonic()
                if self.leading:
                    await self._check_lead()
                else:
                    await self._try_lead()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database went away: try again on the next round
                log.warning("shared store: %s", exc)

    async def _try_lead(self) -> None:
        if self._stopping or not self._may_lead():
            return
        if self._lock is None or self._lock.closed or self._lock.broken:
            self._lock = await self._reconnect(self._lock)
        cursor = await self._lock.execute("SELECT pg_try_advisory_lock(%s)", (LEAD_LOCK,))
        row = await cursor.fetchone()
        if not row or not row[0]:
            return
        self.leading = True
        self._see()
        self.store.hold_jobs(self.id)  # a holder that died still says so in its last record
        log.info("this process (%s) now holds the jobs", self.id)
        await self._on_lead()

    async def _check_lead(self) -> None:
        """Still holding: the lock's session is alive, and no bot has come up (for others)."""
        lost = self._lock is None or self._lock.closed or self._lock.broken
        if not lost:
            assert self._lock is not None
            try:
                await self._lock.execute("SELECT 1")
            except Exception:
                lost = True
        if not lost and self._may_lead():
            return
        self.leading = False
        log.warning(
            "this process (%s) lets go of the jobs (%s)",
            self.id,
            "its database session was lost" if lost else "a bot process is up",
        )
        await self._on_demote()
        if self._lock is not None:
            with contextlib.suppress(Exception):
                await self._lock.close()  # the lock goes with its session
            self._lock = None
        self._see()

    # messages -------------------------------------------------------------------------------
    def send(self, message: Message) -> None:
        """Send a message to the other processes (in order, soon, never waiting)."""
        self._outbox.append(message)
        self._wake_sender.set()

    async def _send_loop(self) -> None:
        while True:
            await self._wake_sender.wait()
            self._wake_sender.clear()
            try:
                await self._flush()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("could not tell the other processes: %s", exc)
                await asyncio.sleep(LEAD_POLL)
                with contextlib.suppress(Exception):
                    self._sender = await self._reconnect(self._sender)

    async def _flush(self) -> None:
        while self._outbox and self._sender is not None:
            batch: list[str] = []  # the messages as JSON, each encoded once
            size = 0
            while self._outbox:
                text = json.dumps(self._outbox[0], separators=(",", ":"))
                if batch and size + len(text) > MAX_PAYLOAD:
                    break
                self._outbox.popleft()
                batch.append(text)
                size += len(text) + 1
            payload = f'{{"from":{json.dumps(self.id)},"m":[{",".join(batch)}]}}'
            await self._sender.execute("SELECT pg_notify(%s, %s)", (CHANNEL, payload))

    async def _listen(self) -> None:
        assert self._listener is not None
        while True:
            try:
                async for note in self._listener.notifies():
                    self._receive(note.payload)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("stopped hearing the other processes (%s); listening again", exc)
                await asyncio.sleep(LEAD_POLL)
                with contextlib.suppress(Exception):
                    self._listener = await self._reconnect(self._listener)
                    await self._listener.execute(f"LISTEN {CHANNEL}")

    def _receive(self, payload: str) -> None:
        try:
            envelope = json.loads(payload)
        except ValueError:
            return
        if not isinstance(envelope, dict) or envelope.get("from") == self.id:
            return
        for message in envelope.get("m", ()):
            if isinstance(message, dict):
                try:
                    self._on_message(message)
                except Exception:
                    log.exception("a message from another process failed: %s", message.get("k"))
