"""Jams in the engine: entries, the vote (once per member, never one's own), standings."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.errors import InvalidValue, NotAllowed
from bot.jams import Jams, JamState
from bot.jobs.model import Job, JobState, Output


def finished(job_id: str, owner: str, thread: str = "t1", workflow: str = "sd15-txt2img") -> Job:
    return Job(
        id=job_id,
        workflow=workflow,
        values={"prompt": f"prompt of {job_id}"},
        owner_id=owner,
        guild_id="g",
        channel_id=thread,
        state=JobState.DONE,
        outputs=(Output(path="/nowhere.png", filename="x.png", node="9"),),
    )


@pytest.fixture
def jams(tmp_path: Path) -> Jams:
    book = Jams(tmp_path / "db.sqlite3")
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
