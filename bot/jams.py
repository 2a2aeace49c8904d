"""Jams: a theme and a time limit; members generate in one thread, then everyone votes.

    open ──(time is up, or /jam end)──> voting ──(voting time is up, or /jam end)──> closed

A job made in a jam's thread before its entries closed is an entry once its result is out (up
to `max_entries` per member, of the jam's workflow when it has one), of whatever kind it is. The
moment a result is shown counts, not the moment its files are stored; and a job made before the
close that runs or finishes after it is still an entry while the vote is open (a late entry,
shown under the gallery). While the jam is voting, each member has one vote, never for their own
entry, and may change it until the vote closes. Everything is kept in the bot's database (its
SQLite file, or PostgreSQL), so a jam survives a restart; the Discord side (`cogs/jam.py`) opens
the thread, posts the gallery (and each entry not shown in it yet) and announces the winners. No
discord import here.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from bot.errors import InvalidValue, NotAllowed, NotFound
from bot.jobs.db import Row
from bot.jobs.migrations import opened
from bot.jobs.model import Job, JobState
from bot.settings import StorageSettings

MAX_MINUTES = 7 * 24 * 60
MAX_ENTRIES = 10


class JamState(StrEnum):
    OPEN = "open"
    VOTING = "voting"
    CLOSED = "closed"


@dataclass(frozen=True)
class Jam:
    """One jam. Times are Unix seconds; `vote_ends_at` and `closed_at` (when the entries
    closed: at `ends_at`, or sooner by `/jam end`) are set when voting starts."""

    id: str
    guild_id: str
    channel_id: str
    thread_id: str
    theme: str
    workflow: str | None
    max_entries: int
    ends_at: float
    vote_seconds: float
    vote_ends_at: float | None
    state: JamState
    created_by: str
    created_at: float
    closed_at: float | None = None

    @property
    def entries_close(self) -> float:
        """Jobs made up to this moment are entries (once their results are out)."""
        return self.ends_at if self.closed_at is None else self.closed_at

    @property
    def deadline(self) -> float | None:
        """When the jam next changes state by itself (None once closed)."""
        if self.state is JamState.OPEN:
            return self.ends_at
        if self.state is JamState.VOTING:
            return self.vote_ends_at
        return None


@dataclass(frozen=True)
class Entry:
    """One result entered in a jam: the job that made it, numbered in the order they came;
    `posted` once it is shown with its vote button (in the gallery or under it)."""

    jam_id: str
    job_id: str
    owner_id: str
    number: int
    prompt: str
    workflow: str
    added_at: float
    posted: bool = False


@dataclass(frozen=True)
class Standing:
    """An entry and its votes; entries with as many votes share a rank."""

    entry: Entry
    votes: int
    rank: int


class Jams:
    """The jams of every server, in the bot's database: the SQLite file at `target` (`":memory:"`
    for a throwaway book) or a PostgreSQL URL, its tables made by the store's migrations."""

    def __init__(self, target: Path | str) -> None:
        self._db = opened(target)

    def _number(self, sql: str, params: tuple[Any, ...]) -> int:
        """The number `n` a one-row query gives."""
        row = self._db.execute(sql, params).one()
        return int(row["n"]) if row is not None else 0

    @classmethod
    def open(cls, storage: StorageSettings) -> Jams:
        """The jams of the database the settings name, as `Store.open`."""
        return cls(storage.url or storage.path)

    def close(self) -> None:
        self._db.close()

    # jams -------------------------------------------------------------------------------------
    def start(
        self,
        *,
        guild_id: str,
        channel_id: str,
        thread_id: str,
        theme: str,
        minutes: float,
        created_by: str,
        workflow: str | None = None,
        max_entries: int = 1,
        vote_minutes: float = 15,
        now: float | None = None,
    ) -> Jam:
        """Open a jam in `thread_id` for `minutes`.

        Raises:
            InvalidValue: theme empty, or a time or entry limit out of range (names which).
        """
        theme = theme.strip()
        if not theme:
            raise InvalidValue("theme", "must not be empty")
        for name, value in (("minutes", minutes), ("vote_minutes", vote_minutes)):
            if not 0 < value <= MAX_MINUTES:
                raise InvalidValue(name, f"must be between 1 and {MAX_MINUTES}")
        if not 1 <= max_entries <= MAX_ENTRIES:
            raise InvalidValue("entries", f"must be between 1 and {MAX_ENTRIES}")
        now = time.time() if now is None else now
        jam = Jam(
            id=secrets.token_hex(3),
            guild_id=guild_id,
            channel_id=channel_id,
            thread_id=thread_id,
            theme=theme,
            workflow=workflow,
            max_entries=max_entries,
            ends_at=now + minutes * 60,
            vote_seconds=vote_minutes * 60,
            vote_ends_at=None,
            state=JamState.OPEN,
            created_by=created_by,
            created_at=now,
        )
        self._db.execute(
            "INSERT INTO jams (id, guild_id, channel_id, thread_id, theme, workflow, max_entries,"
            " ends_at, vote_seconds, vote_ends_at, state, created_by, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                jam.id,
                jam.guild_id,
                jam.channel_id,
                jam.thread_id,
                jam.theme,
                jam.workflow,
                jam.max_entries,
                jam.ends_at,
                jam.vote_seconds,
                jam.vote_ends_at,
                jam.state.value,
                jam.created_by,
                jam.created_at,
            ),
        )
        return jam

    def get(self, jam_id: str) -> Jam:
        """The jam with this id.

        Raises:
            NotFound: there is none.
        """
        row = self._db.execute("SELECT * FROM jams WHERE id = ?", (jam_id,)).one()
        if row is None:
            raise NotFound(f"There is no jam `{jam_id}`.")
        return _jam(row)

    def in_thread(self, thread_id: str) -> Jam | None:
        """The jam (open or voting) that lives in this thread, if any."""
        row = self._db.execute(
            "SELECT * FROM jams WHERE thread_id = ? AND state != ? ORDER BY created_at DESC",
            (thread_id, JamState.CLOSED.value),
        ).one()
        return _jam(row) if row else None

    def active(self, guild_id: str | None = None) -> list[Jam]:
        """Jams not closed yet (of one server, or all), soonest deadline first."""
        sql = "SELECT * FROM jams WHERE state != ?"
        params: list[Any] = [JamState.CLOSED.value]
        if guild_id is not None:
            sql += " AND guild_id = ?"
            params.append(guild_id)
        jams = [_jam(r) for r in self._db.execute(sql, params)]
        return sorted(jams, key=lambda j: j.deadline or 0.0)

    def recent(self, guild_id: str | None, limit: int = 10) -> list[Jam]:
        """The latest jams of one server (of every server for None), newest first."""
        if guild_id is None:
            rows = self._db.execute("SELECT * FROM jams ORDER BY created_at DESC LIMIT ?", (limit,))
        else:
            rows = self._db.execute(
                "SELECT * FROM jams WHERE guild_id = ? ORDER BY created_at DESC LIMIT ?",
                (guild_id, limit),
            )
        return [_jam(r) for r in rows]

    def start_voting(self, jam_id: str, now: float | None = None) -> Jam:
        """Close the entries and open the vote (for the jam's voting time from now). Jobs made
        before now (or before `ends_at`, when that passed first) stay entries, however late
        their results come, until the vote closes.

        Raises:
            NotFound: no such jam.
            NotAllowed: the jam is not open any more.
        """
        jam = self.get(jam_id)
        if jam.state is not JamState.OPEN:
            raise NotAllowed(f"Jam `{jam_id}` is already {jam.state.value}.")
        now = time.time() if now is None else now
        self._db.execute(
            "UPDATE jams SET state = ?, vote_ends_at = ?, closed_at = ? WHERE id = ? AND state = ?",
            (
                JamState.VOTING.value,
                now + jam.vote_seconds,
                min(now, jam.ends_at),
                jam_id,
                JamState.OPEN.value,
            ),
        )
        return self.get(jam_id)

    def finish(self, jam_id: str) -> list[Standing]:
        """End the vote; the final standings.

        Raises:
            NotFound: no such jam.
            NotAllowed: the jam is not voting.
        """
        jam = self.get(jam_id)
        if jam.state is not JamState.VOTING:
            raise NotAllowed(f"Jam `{jam_id}` is {jam.state.value}, not voting.")
        self._db.execute("UPDATE jams SET state = ? WHERE id = ?", (JamState.CLOSED.value, jam_id))
        return self.standings(jam_id)

    # entries ----------------------------------------------------------------------------------
    def consider(self, job: Job, prompt: str, now: float | None = None) -> Entry | str | None:
        """Enter a job made in a jam's thread whose result is out (done, with its outputs; its
        files may not be stored yet).

        A job made before the entries closed is entered while the jam is open or voting.
        Returns the entry; or why it was not entered (a sentence for its owner); or None when the
        job has nothing to do with a jam (or was entered already).
        """
        if job.state is not JobState.DONE or not job.channel_id or not job.outputs:
            return None
        jam = self._latest_in(job.channel_id)
        if jam is None:
            return None
        known = self._db.execute(
            "SELECT 1 FROM jam_entries WHERE jam_id = ? AND job_id = ?", (jam.id, job.id)
        ).one()
        if known:
            return None
        made_in_time = job.created_at <= jam.entries_close
        if jam.state is JamState.CLOSED:
            if not made_in_time:
                return None  # made in the thread of a jam that was over
            return (
                f"the vote of the jam “{jam.theme}” was over before job `{job.id}` was ready, "
                "so it is not entered"
            )
        if not made_in_time:
            return f"the jam “{jam.theme}” had closed its entries, so job `{job.id}` is not entered"
        if jam.workflow and job.workflow != jam.workflow:
            return (
                f"the jam “{jam.theme}” takes results made with `{jam.workflow}`; job `{job.id}` "
                f"used `{job.workflow}` and is not entered"
            )
        mine = self._number(
            "SELECT COUNT(*) AS n FROM jam_entries WHERE jam_id = ? AND owner_id = ?",
            (jam.id, job.owner_id),
        )
        if mine >= jam.max_entries:
            return (
                f"you already have {mine} entr{'y' if mine == 1 else 'ies'} in the jam "
                f"“{jam.theme}” (the limit is {jam.max_entries}), so job `{job.id}` is not entered"
            )
        now = time.time() if now is None else now
        number = (
            self._number(
                "SELECT COALESCE(MAX(number), 0) AS n FROM jam_entries WHERE jam_id = ?", (jam.id,)
            )
            + 1
        )
        entry = Entry(jam.id, job.id, job.owner_id, number, prompt, job.workflow, now)
        self._db.execute(
            "INSERT INTO jam_entries (jam_id, job_id, owner_id, number, prompt, workflow,"
            " added_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (jam.id, job.id, job.owner_id, number, prompt, job.workflow, now),
        )
        return entry

    def _latest_in(self, thread_id: str) -> Jam | None:
        row = self._db.execute(
            "SELECT * FROM jams WHERE thread_id = ? ORDER BY created_at DESC LIMIT 1", (thread_id,)
        ).one()
        return _jam(row) if row else None

    def entries(self, jam_id: str) -> list[Entry]:
        rows = self._db.execute(
            "SELECT * FROM jam_entries WHERE jam_id = ? ORDER BY number", (jam_id,)
        )
        return [_entry(r) for r in rows]

    def unposted(self, jam_id: str) -> list[Entry]:
        """The entries not shown with their vote button yet, in order."""
        rows = self._db.execute(
            "SELECT * FROM jam_entries WHERE jam_id = ? AND posted = 0 ORDER BY number", (jam_id,)
        )
        return [_entry(r) for r in rows]

    def entry_of(self, job_id: str) -> Entry | None:
        """The entry a job is (in the latest jam it was entered in), if any."""
        row = self._db.execute(
            "SELECT * FROM jam_entries WHERE job_id = ? ORDER BY added_at DESC LIMIT 1", (job_id,)
        ).one()
        return _entry(row) if row else None

    def mark_posted(self, jam_id: str, job_ids: list[str]) -> None:
        """Record that these entries are shown with their vote buttons."""
        with self._db.transaction():
            for job_id in job_ids:
                self._db.execute(
                    "UPDATE jam_entries SET posted = 1 WHERE jam_id = ? AND job_id = ?",
                    (jam_id, job_id),
                )

    # votes ------------------------------------------------------------------------------------
    def vote(self, jam_id: str, voter_id: str, job_id: str, now: float | None = None) -> Entry:
        """Cast or change `voter_id`'s one vote in the jam.

        Raises:
            NotFound: no such jam or entry.
            NotAllowed: the jam is not voting, or the entry is the voter's own.
        """
        jam = self.get(jam_id)
        if jam.state is JamState.OPEN:
            raise NotAllowed("Voting has not started yet.")
        if jam.state is JamState.CLOSED:
            raise NotAllowed("The vote is closed.")
        row = self._db.execute(
            "SELECT * FROM jam_entries WHERE jam_id = ? AND job_id = ?", (jam_id, job_id)
        ).one()
        if row is None:
            raise NotFound("That is not an entry of this jam.")
        entry = _entry(row)
        if entry.owner_id == voter_id:
            raise NotAllowed("You cannot vote for your own entry.")
        self._db.execute(
            "INSERT INTO jam_votes (jam_id, voter_id, job_id, at) VALUES (?, ?, ?, ?)"
            " ON CONFLICT(jam_id, voter_id)"
            " DO UPDATE SET job_id = excluded.job_id, at = excluded.at",
            (jam_id, voter_id, job_id, time.time() if now is None else now),
        )
        return entry

    def vote_of(self, jam_id: str, voter_id: str) -> str | None:
        """The job id `voter_id` voted for, if any."""
        row = self._db.execute(
            "SELECT job_id FROM jam_votes WHERE jam_id = ? AND voter_id = ?", (jam_id, voter_id)
        ).one()
        return str(row["job_id"]) if row else None

    def standings(self, jam_id: str) -> list[Standing]:
        """Every entry with its votes, most votes first (ties keep the entry order)."""
        counts = {
            r["job_id"]: int(r["n"])
            for r in self._db.execute(
                "SELECT job_id, COUNT(*) AS n FROM jam_votes WHERE jam_id = ? GROUP BY job_id",
                (jam_id,),
            )
        }
        entries = self.entries(jam_id)
        ordered = sorted(entries, key=lambda e: (-counts.get(e.job_id, 0), e.number))
        standings = []
        for entry in ordered:
            votes = counts.get(entry.job_id, 0)
            rank = 1 + sum(1 for e in entries if counts.get(e.job_id, 0) > votes)
            standings.append(Standing(entry, votes, rank))
        return standings


def _jam(row: Row) -> Jam:
    data = dict(row)
    data["state"] = JamState(data["state"])
    return Jam(**data)


def _entry(row: Row) -> Entry:
    data = dict(row)
    data["posted"] = bool(data["posted"])
    return Entry(**data)


__all__ = ["Entry", "Jam", "JamState", "Jams", "Standing"]
