"""The store on both of its databases: every test runs on SQLite and on a real PostgreSQL.

PostgreSQL is a throwaway server the tests start themselves (tests/pg.py); without its binaries
those cases are skipped (`apt-get install postgresql`), except under CI, where they always run.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
import pytest

from bot.engine import JobRequest
from bot.errors import ConfigError
from bot.jobs import migrations
from bot.jobs.db import connect, redact
from bot.jobs.model import Job, JobState
from bot.jobs.store import ProcessInfo, Store
from bot.settings import load_settings
from tests.conftest import make_settings, running_engine
from tests.fakes.comfyui import FakeComfyUI

#: The schema of a SQLite file from before versioned migrations (no schema_version table).
PRE_MIGRATION_SCHEMA = """
CREATE TABLE jobs (id TEXT PRIMARY KEY, state TEXT NOT NULL, owner_id TEXT NOT NULL,
    guild_id TEXT, channel_id TEXT, group_id TEXT, created_at REAL NOT NULL, data TEXT NOT NULL);
CREATE INDEX jobs_state ON jobs(state);
CREATE INDEX jobs_owner ON jobs(owner_id, created_at);
CREATE INDEX jobs_group ON jobs(group_id);
CREATE TABLE kv (scope TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL,
    PRIMARY KEY (scope, key));
CREATE TABLE audit (id INTEGER PRIMARY KEY AUTOINCREMENT, guild_id TEXT NOT NULL,
    actor_id TEXT NOT NULL, actor_name TEXT NOT NULL, action TEXT NOT NULL, detail TEXT NOT NULL,
    at REAL NOT NULL);
CREATE INDEX audit_guild ON audit(guild_id, at);
CREATE TABLE reply_tokens (key TEXT PRIMARY KEY, token TEXT NOT NULL, expires_at REAL NOT NULL);
"""


@pytest.fixture
def store(target: Path | str) -> Iterator[Store]:
    opened = Store(target)
    yield opened
    opened.close()


def job(number: int, **fields: Any) -> Job:
    values: dict[str, Any] = {"id": f"job{number}", "workflow": "sd15-txt2img"}
    values |= {"values": {"prompt": f"p{number}"}, "owner_id": "1", "created_at": 1000.0 + number}
    return Job(**(values | fields))


# jobs --------------------------------------------------------------------------------------------
def test_a_saved_job_reads_back_equal(store: Store) -> None:
    saved = job(1, guild_id="g", meta={"note": "é"}, created_at=1765432101.123456)
    store.save(saved)
    assert store.get("job1") == saved
    assert store.get("nope") is None


def test_saving_again_updates_the_job(store: Store) -> None:
    store.save(job(1))
    store.save(job(1, state=JobState.RUNNING, attempts=2))
    got = store.get("job1")
    assert got is not None and got.state is JobState.RUNNING and got.attempts == 2
    assert len(store.recent()) == 1


def test_unfinished_and_undelivered_jobs_in_creation_order(store: Store) -> None:
    store.save(job(3, state=JobState.RUNNING))
    store.save(job(1, state=JobState.QUEUED))
    store.save(job(2, state=JobState.DONE))
    store.save(job(4, state=JobState.FAILED, delivered=True))
    store.save(job(5, state=JobState.CANCELLED))
    assert [j.id for j in store.unfinished()] == ["job1", "job3"]
    assert [j.id for j in store.undelivered()] == ["job2", "job5"]


def test_recent_is_newest_first_and_filters_by_owner_and_server(store: Store) -> None:
    for n in range(1, 6):
        store.save(job(n, owner_id="a" if n % 2 else "b", guild_id="g" if n < 4 else None))
    assert [j.id for j in store.recent(limit=3)] == ["job5", "job4", "job3"]
    assert [j.id for j in store.recent(owner_id="a")] == ["job5", "job3", "job1"]
    assert [j.id for j in store.recent(guild_id="g")] == ["job3", "job2", "job1"]
    assert [j.id for j in store.recent(owner_id="b", guild_id="g")] == ["job2"]


def test_a_group_is_its_jobs_in_order(store: Store) -> None:
    store.save(job(2, group_id="grp"))
    store.save(job(1, group_id="grp"))
    store.save(job(3, group_id="other"))
    assert [j.id for j in store.group("grp")] == ["job1", "job2"]


def test_last_created_per_member_and_server_including_no_server(store: Store) -> None:
    store.save(job(1, guild_id="g"))
    store.save(job(2, guild_id=None))
    store.save(job(3, guild_id="g", owner_id="2"))
    assert store.last_created("1", "g") == 1001.0
    assert store.last_created("1", None) == 1002.0
    assert store.last_created("9", None) is None


def test_done_by_backend_counts_finished_jobs_per_backend(store: Store) -> None:
    store.save(job(1, state=JobState.DONE, backend="a"))
    store.save(job(2, state=JobState.DONE, backend="a"))
    store.save(job(3, state=JobState.DONE, backend="b"))
    store.save(job(4, state=JobState.FAILED, backend="b"))
    store.save(job(5, state=JobState.DONE))
    assert store.done_by_backend() == {"a": 2, "b": 1}


# settings ----------------------------------------------------------------------------------------
def test_settings_are_json_values_by_scope_and_none_deletes(store: Store) -> None:
    store.set_setting("guild:1", "limits", {"max": 3, "words": ["a"]})
    store.set_setting("guild:1", "limits", {"max": 4})
    store.set_setting("guild:2", "on", True)
    store.set_setting("other", "x", 1)
    assert store.get_setting("guild:1", "limits") == {"max": 4}
    assert store.get_setting("guild:1", "missing", "default") == "default"
    assert store.settings_in("guild:") == {
        ("guild:1", "limits"): {"max": 4},
        ("guild:2", "on"): True,
    }
    store.set_setting("guild:2", "on", None)
    assert store.get_setting("guild:2", "on") is None


# audit -------------------------------------------------------------------------------------------
def test_the_audit_log_is_newest_first_per_server(store: Store) -> None:
    for n in range(5):
        store.audit("g", "7", "mod", f"action{n}", "detail")
    store.audit("h", "7", "mod", "elsewhere", "")
    entries = store.audit_log("g", limit=3)
    assert [e.action for e in entries] == ["action4", "action3", "action2"]
    assert entries[0].actor_name == "mod" and entries[0].at > 1e9


# reply tokens ------------------------------------------------------------------------------------
def test_a_reply_token_is_kept_until_it_expires(store: Store) -> None:
    store.keep_token("r1", "secret", expires_at=2000.0)
    store.keep_token("r1", "newer", expires_at=3000.0)
    store.keep_token("r2", "short", expires_at=1500.0)
    assert store.token("r1", now=1000.0) == "newer"
    assert store.token("r2", now=1600.0) is None
    assert store.forget_expired_tokens(now=3000.0) == 1
    assert store.token("r1", now=0.0) is None
    store.keep_token("r3", "x", expires_at=9e9)
    store.forget_token("r3")
    assert store.token("r3") is None


# transactions ------------------------------------------------------------------------------------
def test_a_failed_transaction_keeps_none_of_its_writes(store: Store) -> None:
    store.save(job(1))
    with pytest.raises(ZeroDivisionError), store.transaction():
        store.save(job(2))
        store.set_setting("s", "k", 1)
        with store.transaction():  # a nested one joins the outer
            store.keep_token("r", "t", 9e9)
        _ = 1 / 0
    assert [j.id for j in store.recent()] == ["job1"]
    assert store.get_setting("s", "k") is None and store.token("r") is None
    with store.transaction():
        store.save(job(3))
    assert store.get("job3") is not None


def test_writes_outside_a_transaction_are_seen_by_another_connection(target: Path | str) -> None:
    first, second = Store(target), Store(target)
    try:
        first.save(job(1))
        assert second.get("job1") is not None
        with first.transaction():
            first.save(job(2))
            assert second.get("job2") is None
        assert second.get("job2") is not None
    finally:
        first.close()
        second.close()


def test_meta_merged_by_one_connection_keeps_the_state_another_wrote(target: Path | str) -> None:
    holder, follower = Store(target), Store(target)
    try:
        holder.save(job(1, meta={"reply": {"key": "k"}}))
        holder.save(job(1, state=JobState.RUNNING, meta={"reply": {"key": "k"}}))
        merged = follower.merge_meta("job1", {"seen": True})
        assert merged is not None and merged.state is JobState.RUNNING
        stored = holder.get("job1")
        assert stored is not None and stored.state is JobState.RUNNING
        assert stored.meta == {"reply": {"key": "k"}, "seen": True}
        assert follower.merge_meta("nope", {"seen": True}) is None
    finally:
        holder.close()
        follower.close()


def test_processes_are_listed_while_seen(target: Path | str) -> None:
    one, two = Store(target), Store(target)
    try:
        one.see_process(ProcessInfo("a", "bot", "Discord shard 0", True, 1.0))
        two.see_process(ProcessInfo("b", "api", "HTTP API", False, 2.0))
        two.hold_jobs("b")
        listed = {p.id: (p.role, p.leading) for p in one.processes()}
        assert listed == {"a": ("bot", False), "b": ("api", False)}
        assert not one.processes(seen_within=-1.0)
        two.forget_process("b")
        assert [p.id for p in one.processes()] == ["a"]
    finally:
        one.close()
        two.close()


def test_a_webhook_is_kept_once_and_leased_to_one_process_at_a_time(target: Path | str) -> None:
    one, two = Store(target), Store(target)
    try:
        assert one.add_webhook("j1", "http://example.org/hook", "app", '{"a": 1}')
        assert not two.add_webhook("j1", "http://example.org/other", "app", "{}")
        now = time.time()
        [due] = two.due_webhooks(now + 1)
        assert (due.job_id, due.url, due.key_name, due.payload) == (
            "j1",
            "http://example.org/hook",
            "app",
            '{"a": 1}',
        )
        assert one.lease_webhook("j1", "one", now + 60)
        assert not two.lease_webhook("j1", "two", now + 60)
        assert two.due_webhooks(now + 1) == []  # leased
        one.webhook_tried("j1", "pending", 1, now - 1)  # failed once, due again
        assert two.lease_webhook("j1", "two", now - 0.5)  # a lease that ran out...
        assert one.lease_webhook("j1", "one", now + 60)  # ...is taken by another process
        one.webhook_tried("j1", "sent", 2, now)
        assert two.webhook_state("j1") == ("sent", 2)
        assert two.due_webhooks(now + 1) == [] and two.next_webhook_at() is None
    finally:
        one.close()
        two.close()


def test_a_memory_store_is_sqlite_and_its_own(tmp_path: Path) -> None:
    first, second = Store(":memory:"), Store(":memory:")
    try:
        first.save(job(1))
        assert first.get("job1") is not None and second.get("job1") is None
        assert first.path == ":memory:"
    finally:
        first.close()
        second.close()
    assert list(tmp_path.iterdir()) == []


def test_a_lost_postgresql_connection_fails_one_call_then_connects_again(
    pg_url: str,
) -> None:
    store = Store(pg_url)
    try:
        store.save(job(1))
        with psycopg.connect(pg_url, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        with pytest.raises(psycopg.OperationalError):
            store.get("job1")
        assert store.get("job1") is not None
        with store.transaction():
            store.save(job(2))
        assert len(store.recent()) == 2
    finally:
        store.close()


# migrations --------------------------------------------------------------------------------------
def test_a_fresh_database_is_migrated_to_the_latest_step(target: Path | str) -> None:
    Store(target).close()
    db = connect(target)
    try:
        assert migrations.version(db) == migrations.LATEST == 3
        assert migrations.migrate(db) == 3  # a second start applies nothing
        rows = db.execute("SELECT version FROM schema_version ORDER BY version").rows
        assert rows == [{"version": 1}, {"version": 2}, {"version": 3}]
    finally:
        db.close()


def test_a_database_newer_than_the_code_is_refused(target: Path | str) -> None:
    Store(target).close()
    db = connect(target)
    db.execute("INSERT INTO schema_version (version, applied_at) VALUES (?, ?)", (99, 0.0))
    db.close()
    with pytest.raises(ConfigError, match="schema version 99"):
        Store(target)


def test_a_sqlite_file_from_before_migrations_is_step_1_and_keeps_its_data(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    old = sqlite3.connect(path)
    old.executescript(PRE_MIGRATION_SCHEMA)
    old.execute(
        "INSERT INTO jobs VALUES ('old1', 'done', '1', 'g', NULL, NULL, 5.0, ?)",
        (json.dumps(job(1, id="old1", state=JobState.DONE, guild_id="g").to_dict()),),
    )
    old.execute("INSERT INTO kv VALUES ('guild:g', 'limits', '{\"max\": 2}')")
    old.execute("INSERT INTO audit (guild_id, actor_id, actor_name, action, detail, at)"
                " VALUES ('g', '7', 'mod', 'ban', 'x', 5.0)")  # fmt: skip
    old.execute("INSERT INTO reply_tokens VALUES ('r', 'tok', 9e9)")
    old.commit()
    old.close()
    store = Store(path)
    try:
        assert migrations.version(store._db) == migrations.LATEST  # step 1 taken, then 2
        old_job = store.get("old1")
        assert old_job is not None and old_job.state is JobState.DONE
        assert store.get_setting("guild:g", "limits") == {"max": 2}
        assert [e.action for e in store.audit_log("g")] == ["ban"]
        assert store.token("r") == "tok"
        store.audit("g", "7", "mod", "unban", "")  # the numbering goes on
        assert [e.action for e in store.audit_log("g")] == ["unban", "ban"]
    finally:
        store.close()


# settings and URLs -------------------------------------------------------------------------------
def test_the_database_url_comes_from_the_environment_over_the_file(tmp_path: Path) -> None:
    config = tmp_path / "comfycord.yaml"
    config.write_text("storage:\n  url: postgresql://file@/db\n  path: my.sqlite3\n")
    url = "postgresql://bot:hunter2@db.example/comfycord"
    env = {"COMFYCORD_DATABASE_URL": url}
    settings = load_settings(config, env=env)
    assert settings.storage.url == url and settings.storage.path == Path("my.sqlite3")
    assert "hunter2" not in repr(settings)
    assert load_settings(config, env={}).storage.url == "postgresql://file@/db"
    no_file = {"COMFYCORD_CONFIG": str(tmp_path / "none.yaml")}
    assert load_settings(env=no_file).storage.url is None


def test_a_store_url_that_is_not_postgresql_is_a_config_error(tmp_path: Path) -> None:
    not_postgres = {"COMFYCORD_DATABASE_URL": "mysql://x/y"}
    with pytest.raises(ConfigError, match=r"storage\.url: .*postgresql://"):
        load_settings(env={"COMFYCORD_CONFIG": str(tmp_path / "no.yaml"), **not_postgres})


def test_a_url_password_is_never_shown() -> None:
    assert redact("postgresql://bot:hunter2@db:5432/cc") == "postgresql://bot:***@db:5432/cc"
    assert redact("postgresql://bot@/cc?host=/run") == "postgresql://bot@/cc?host=/run"


def test_an_unreachable_database_is_a_config_error_without_the_password(tmp_path: Path) -> None:
    url = f"postgresql://bot:hunter2@/cc?host={tmp_path}&connect_timeout=2"
    with pytest.raises(ConfigError) as raised:
        Store(url)
    assert "hunter2" not in str(raised.value) and "bot:***@" in str(raised.value)


# end to end --------------------------------------------------------------------------------------
async def test_an_engine_on_postgresql_keeps_its_finished_job_across_a_restart(
    tmp_path: Path,
    comfy: FakeComfyUI,
    pg_url: str,
) -> None:
    settings = make_settings(tmp_path, comfy.url, storage={"url": pg_url})
    request = JobRequest("sd15-txt2img", {"prompt": "a lighthouse", "steps": 2}, owner_id="1")
    async with aiohttp.ClientSession() as session:
        async with running_engine(session, settings) as (engine, recorder):
            [submitted] = await engine.submit(request)
            [done] = await recorder.finished(submitted.id)
            assert done.job.state is JobState.DONE, done.job.error
        assert not (tmp_path / "db.sqlite3").exists()  # nothing went to the SQLite file
        async with running_engine(session, settings) as (engine, _):
            stored = engine.store.get(submitted.id)
            assert stored is not None and stored.state is JobState.DONE and stored.outputs
            assert [j.id for j in engine.store.recent()] == [submitted.id]
