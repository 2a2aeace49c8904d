"""Jams in the engine: entries, the vote (once per member, never one's own), standings."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from bot.errors import InvalidValue, NotAllowed
from bot.jams import Jams, JamState
from bot.jobs.model import Job, JobState, Output


def finished(
    job_id: str,
    owner: str,
    thread: str = "t1",
    workflow: str = "sd15-txt2img",
    created_at: float | None = None,
) -> Job:
    return Job(
        id=job_id,
        workflow=workflow,
        values={"prompt": f"prompt of {job_id}"},
        owner_id=owner,
        guild_id="g",
        channel_id=thread,
        state=JobState.DONE,
        created_at=time.time() if created_at is None else created_at,
        outputs=(Output(path="/nowhere.png", filename="x.png", node="9"),),
    )


@pytest.fixture
def jams(target: Path | str) -> Jams:
    """A book of jams on each database: a SQLite file, and a fresh PostgreSQL database."""
    book = Jams(target)
    yield book  # type: ignore[misc]
    book.close()


def open_jam(jams: Jams, **changes: object) -> str:
    options: dict[str, object] = {
        "guild_id": "g",
        "channel_id": "c1",
        "thread_id": "t1",
        "theme": "lighthouses",
        "minutes": 10,
        "created_by": "mod",
    }
    options.update(changes)
    return jams.start(**options).id  # type: ignore[arg-type]


def test_entries_count_per_member_up_to_the_limit(jams: Jams) -> None:
    jam_id = open_jam(jams, max_entries=1)
    first = jams.consider(finished("aaaaaaa1", "ann"), "a red lighthouse")
    assert first is not None and not isinstance(first, str) and first.number == 1
    refused = jams.consider(finished("aaaaaaa2", "ann"), "another")
    assert isinstance(refused, str) and "limit is 1" in refused
    assert jams.consider(finished("aaaaaaa1", "ann"), "again") is None  # entered once
    assert jams.consider(finished("bbbbbbb1", "bob", thread="elsewhere"), "x") is None
    entries = jams.entries(jam_id)
    assert [(e.job_id, e.owner_id, e.prompt) for e in entries] == [
        ("aaaaaaa1", "ann", "a red lighthouse")
    ]


def test_a_jam_with_a_workflow_takes_only_its_images(jams: Jams) -> None:
    open_jam(jams, workflow="upscale")
    refused = jams.consider(finished("aaaaaaa1", "ann"), "x")
    assert isinstance(refused, str) and "`upscale`" in refused


def test_one_vote_per_member_changeable_never_for_ones_own(jams: Jams) -> None:
    jam_id = open_jam(jams, max_entries=2)
    for job_id, owner in (("aaaaaaa1", "ann"), ("bbbbbbb1", "bob"), ("ccccccc1", "cyd")):
        jams.consider(finished(job_id, owner), f"by {owner}")
    with pytest.raises(NotAllowed, match="not started"):
        jams.vote(jam_id, "bob", "aaaaaaa1")
    jams.start_voting(jam_id, now=2000.0)
    assert jams.get(jam_id).state is JamState.VOTING
    assert jams.get(jam_id).vote_ends_at == 2000.0 + 15 * 60
    with pytest.raises(NotAllowed, match="own entry"):
        jams.vote(jam_id, "ann", "aaaaaaa1")
    jams.vote(jam_id, "bob", "aaaaaaa1")
    jams.vote(jam_id, "bob", "ccccccc1")  # changed: still one vote
    jams.vote(jam_id, "cyd", "aaaaaaa1")
    jams.vote(jam_id, "dan", "aaaaaaa1")
    assert jams.vote_of(jam_id, "bob") == "ccccccc1"
    standings = jams.finish(jam_id)
    assert [(s.entry.job_id, s.votes, s.rank) for s in standings] == [
        ("aaaaaaa1", 2, 1),
        ("ccccccc1", 1, 2),
        ("bbbbbbb1", 0, 3),
    ]
    with pytest.raises(NotAllowed, match="closed"):
        jams.vote(jam_id, "eve", "bbbbbbb1")


def test_ties_share_a_rank(jams: Jams) -> None:
    jam_id = open_jam(jams)
    jams.consider(finished("aaaaaaa1", "ann"), "a")
    jams.consider(finished("bbbbbbb1", "bob"), "b")
    jams.start_voting(jam_id)
    jams.vote(jam_id, "bob", "aaaaaaa1")
    jams.vote(jam_id, "ann", "bbbbbbb1")
    assert [s.rank for s in jams.finish(jam_id)] == [1, 1]


def test_jams_are_kept_on_disk(tmp_path: Path) -> None:
    first = Jams(tmp_path / "db.sqlite3")
    jam_id = open_jam(first)
    first.consider(finished("aaaaaaa1", "ann"), "a")
    first.close()
    again = Jams(tmp_path / "db.sqlite3")
    try:
        assert [j.id for j in again.active("g")] == [jam_id]
        assert again.in_thread("t1") is not None
        assert [e.job_id for e in again.entries(jam_id)] == ["aaaaaaa1"]
    finally:
        again.close()


def test_bad_values_are_named(jams: Jams) -> None:
    with pytest.raises(InvalidValue, match="theme"):
        open_jam(jams, theme="  ")
    with pytest.raises(InvalidValue, match="entries"):
        open_jam(jams, max_entries=0)
    with pytest.raises(InvalidValue, match="minutes"):
        open_jam(jams, minutes=0)


def test_a_job_made_before_the_close_is_entered_however_late_its_result_comes(jams: Jams) -> None:
    jam_id = open_jam(jams, now=1000.0)  # entries until 1600
    jams.start_voting(jam_id, now=1200.0)  # /jam end: they close at 1200
    assert jams.get(jam_id).entries_close == 1200.0
    late = jams.consider(finished("aaaaaaa1", "ann", created_at=1199.0), "made in time")
    assert late is not None and not isinstance(late, str) and late.number == 1
    refused = jams.consider(finished("bbbbbbb1", "bob", created_at=1201.0), "too late")
    assert isinstance(refused, str) and "closed its entries" in refused
    jams.finish(jam_id)
    over = jams.consider(finished("ccccccc1", "cyd", created_at=1100.0), "vote over")
    assert isinstance(over, str) and "vote" in over and "was over" in over
    assert jams.consider(finished("ddddddd1", "dan", created_at=1300.0), "after") is None
    assert [e.job_id for e in jams.entries(jam_id)] == ["aaaaaaa1"]


def test_entries_close_at_the_end_time_when_the_vote_starts_after_it(jams: Jams) -> None:
    jam_id = open_jam(jams, now=1000.0)
    jams.start_voting(jam_id, now=5000.0)  # the bot was away when the time was up
    assert jams.get(jam_id).entries_close == 1600.0
    refused = jams.consider(finished("aaaaaaa1", "ann", created_at=1700.0), "x")
    assert isinstance(refused, str) and "closed its entries" in refused


def test_entries_are_posted_once(jams: Jams) -> None:
    jam_id = open_jam(jams, max_entries=2)
    jams.consider(finished("aaaaaaa1", "ann"), "a")
    jams.consider(finished("aaaaaaa2", "ann"), "b")
    assert [e.job_id for e in jams.unposted(jam_id)] == ["aaaaaaa1", "aaaaaaa2"]
    jams.mark_posted(jam_id, ["aaaaaaa1"])
    assert [e.job_id for e in jams.unposted(jam_id)] == ["aaaaaaa2"]
    entry = jams.entry_of("aaaaaaa1")
    assert entry is not None and entry.posted and entry.jam_id == jam_id
    assert jams.entry_of("zzzzzzz9") is None


def test_a_database_from_before_late_entries_opens_with_its_jams(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    old = sqlite3.connect(path)
    old.executescript(
        "CREATE TABLE jams (id TEXT PRIMARY KEY, guild_id TEXT NOT NULL, channel_id TEXT NOT NULL,"
        " thread_id TEXT NOT NULL, theme TEXT NOT NULL, workflow TEXT, max_entries INTEGER NOT"
        " NULL, ends_at REAL NOT NULL, vote_seconds REAL NOT NULL, vote_ends_at REAL, state TEXT"
        " NOT NULL, created_by TEXT NOT NULL, created_at REAL NOT NULL);"
        "CREATE TABLE jam_entries (jam_id TEXT NOT NULL, job_id TEXT NOT NULL, owner_id TEXT NOT"
        " NULL, number INTEGER NOT NULL, prompt TEXT NOT NULL, workflow TEXT NOT NULL, added_at"
        " REAL NOT NULL, PRIMARY KEY (jam_id, job_id));"
        "INSERT INTO jams VALUES ('abc123', 'g', 'c1', 't1', 'old', NULL, 1, 1600, 900, NULL,"
        " 'open', 'mod', 1000);"
        "INSERT INTO jam_entries VALUES ('abc123', 'aaaaaaa1', 'ann', 1, 'a', 'sd15', 1100);"
    )
    old.close()
    jams = Jams(path)
    try:
        jam = jams.get("abc123")
        assert jam.closed_at is None and jam.entries_close == 1600
        [entry] = jams.unposted("abc123")
        assert entry.job_id == "aaaaaaa1" and not entry.posted
    finally:
        jams.close()
