"""Several engines on one PostgreSQL store (`bot.sharing`, `bot.jobs.cluster`), in one process.

Each engine has its own connections, as separate processes would; what one does reaches the
others only through the database. The processes themselves are `tests/test_scale_out.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
import psycopg
import pytest

from bot.engine import Engine, JobRequest, JobState
from bot.errors import ConfigError, LimitReached
from bot.jobs import cluster
from bot.settings import Settings
from tests.cli.test_cli import run_cli
from tests.conftest import Recorder, make_settings, running_engine, shipped_copy
from tests.fakes.comfyui import FakeComfyUI

pytestmark = pytest.mark.usefixtures("pg_cluster")


def started(
    session: aiohttp.ClientSession, settings: Settings, role: str, detail: str = ""
) -> contextlib.AbstractAsyncContextManager[tuple[Engine, Recorder]]:
    """An engine of this role (and shard) on the shared store, started, and its updates."""
    return running_engine(session, settings, role=role, detail=detail or role)


async def until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


def request(prompt: str, owner: str = "7") -> JobRequest:
    return JobRequest("sd15-txt2img", {"prompt": prompt, "steps": 2}, owner_id=owner)


@pytest.fixture
def shared(tmp_path: Path, comfy: FakeComfyUI, pg_url: str) -> Settings:
    return make_settings(
        tmp_path, comfy.url, storage={"url": pg_url}, limits={"max_queued_per_member": 20}
    )


async def test_a_job_taken_by_one_process_runs_on_the_one_holding_the_jobs(
    shared: Settings, comfy: FakeComfyUI
) -> None:
    async with (
        aiohttp.ClientSession() as session,
        started(session, shared, "bot") as (bot, _),
        started(session, shared, "api") as (api, heard),
    ):
        assert bot.holds_jobs and not api.holds_jobs
        [job] = await api.submit(request("a lighthouse"))
        [finished] = await heard.finished(job.id)
        assert finished.job.state is JobState.DONE, finished.job.error
        kinds = [u.kind for u in heard.of(job.id)]
        assert "started" in kinds and "progress" in kinds
        stored = api.get_job(job.id)
        assert stored is not None and stored.state is JobState.DONE and stored.outputs
        assert len(comfy.prompts_received) == 1
        roles = {p.role: p.leading for p in api.processes()}
        assert roles == {"bot": True, "api": False}


async def test_the_queue_and_the_limits_are_the_holders_as_the_store_has_them(
    shared: Settings, comfy: FakeComfyUI
) -> None:
    limited = shared.model_copy(
        update={"limits": shared.limits.model_copy(update={"max_queued_per_member": 2})}
    )
    async with (
        aiohttp.ClientSession() as session,
        started(session, limited, "bot") as (bot, _),
        started(session, limited, "api") as (api, _),
    ):
        comfy.pause()
        jobs = [(await api.submit(request(f"#{i}")))[0] for i in range(3)]
        await until(lambda: len(bot.queue_entries()) == 3)
        api.sharing.forget_view()  # type: ignore[union-attr]
        assert [e.position for e in api.queue_entries()] == [0, 1, 2]
        assert api.position(jobs[2].id) == 2
        [backend] = api.backends()
        assert backend.running == 1  # the job the holder gave it, as the store says
        with pytest.raises(LimitReached):
            await api.submit(request("one too many"))
        comfy.resume()


async def test_a_cancel_from_another_process_is_done_by_the_holder(
    shared: Settings, comfy: FakeComfyUI
) -> None:
    async with (
        aiohttp.ClientSession() as session,
        started(session, shared, "bot") as (bot, _),
        started(session, shared, "api") as (api, heard),
    ):
        comfy.pause()
        first = (await api.submit(request("runs")))[0]
        second = (await api.submit(request("waits")))[0]
        await until(lambda: bot.get_job(second.id) is not None and bot.position(second.id) == 1)
        cancelled = await api.cancel(second.id, "someone")
        assert cancelled.state is JobState.CANCELLED
        comfy.resume()
        [done] = await heard.finished(first.id)
        assert done.job.state is JobState.DONE
        assert len(comfy.prompts_received) == 1


async def test_when_the_holder_stops_another_process_takes_its_jobs_and_runs_each_once(
    shared: Settings, comfy: FakeComfyUI
) -> None:
    async with aiohttp.ClientSession() as session:
        second = Engine(session, shared, role="bot", detail="Discord shard 1")
        heard = Recorder()
        second.listen(heard)
        async with started(session, shared, "bot", "Discord shard 0") as (first, _):
            await second.start()
            assert first.holds_jobs and not second.holds_jobs
            comfy.pause()
            jobs = [(await second.submit(request(f"#{i}", owner=str(i))))[0] for i in range(4)]
            await until(
                lambda: len(first.queue_entries()) == 4 and len(comfy.prompts_received) == 1
            )
        # the first one stopped (its session ended): the second takes the jobs
        try:
            await until(lambda: second.holds_jobs, timeout=5.0)
            comfy.resume()
            finished = await heard.finished(*(j.id for j in jobs), timeout=20.0)
            assert all(u.job.state is JobState.DONE for u in finished)
            ids = [p.get("prompt_id") for p in comfy.prompts_received]
            assert len(set(ids)) == len(ids)  # nothing ran twice
            assert len(ids) == 4  # the one on ComfyUI when the first stopped was followed again
        finally:
            await second.stop()
            second.close_store()


async def test_an_api_process_lets_go_of_the_jobs_when_a_bot_comes_up(
    shared: Settings, comfy: FakeComfyUI
) -> None:
    async with aiohttp.ClientSession() as session, started(session, shared, "api") as (api, heard):
        assert api.holds_jobs  # no bot: it runs the jobs itself
        [early] = await api.submit(request("before the bot"))
        await heard.finished(early.id)
        async with started(session, shared, "bot") as (bot, _):
            await until(lambda: bot.holds_jobs and not api.holds_jobs, timeout=5.0)
            [late] = await api.submit(request("after the bot"))
            [done] = await heard.finished(late.id)
            assert done.job.state is JobState.DONE


async def test_a_pack_removed_in_one_process_is_gone_in_the_others(
    shared: Settings, tmp_path: Path
) -> None:
    folder = shipped_copy(tmp_path / "packs")
    settings = shared.model_copy(
        update={"workflows": shared.workflows.model_copy(update={"dir": folder})}
    )
    async with (
        aiohttp.ClientSession() as session,
        started(session, settings, "bot") as (bot, _),
        started(session, settings, "api") as (api, _),
    ):
        told: list[bool] = []
        bot.watch_workflows(lambda: told.append(True))
        assert "sd15-img2img" in bot.workflows
        api.delete_workflow("sd15-img2img")
        await until(lambda: bool(told), timeout=5.0)
        assert "sd15-img2img" not in bot.workflows


async def test_a_second_bot_process_on_the_same_shard_is_refused(
    shared: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cluster, "RIVAL_WAIT", 0.5)
    async with (
        aiohttp.ClientSession() as session,
        started(session, shared, "bot", "Discord shard 0"),
        started(session, shared, "bot", "Discord shard 1"),  # another shard is welcome
    ):
        twin = Engine(session, shared, role="bot", detail="Discord shard 0")
        try:
            with pytest.raises(ConfigError, match="serves Discord shard 0"):
                await twin.start()
            assert len(twin.processes()) == 2  # it never said it was there
        finally:
            await twin.stop()
            twin.close_store()
        unsharded = Engine(session, shared, role="bot", detail="Discord")
        try:
            with pytest.raises(ConfigError, match=r"own discord\.shard_id"):
                await unsharded.start()  # it would get every shard's events
        finally:
            await unsharded.stop()
            unsharded.close_store()


async def test_after_the_database_cut_every_session_one_process_holds_the_jobs_again(
    shared: Settings, comfy: FakeComfyUI, pg_url: str
) -> None:
    async with (
        aiohttp.ClientSession() as session,
        started(session, shared, "bot", "Discord shard 0") as (bot, _),
        started(session, shared, "api") as (api, heard),
    ):
        assert bot.holds_jobs
        with psycopg.connect(pg_url, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        await until(lambda: not bot.holds_jobs, timeout=5.0)  # it found its session gone
        await until(lambda: bot.holds_jobs, timeout=10.0)  # and took the lock again
        for engine in (bot, api):  # each store finds its connection cut once, then reconnects
            with contextlib.suppress(psycopg.OperationalError):
                engine.store.get("nothing")
        [job] = await api.submit(request("after the cut"))
        [done] = await heard.finished(job.id, timeout=20.0)
        assert done.job.state is JobState.DONE, done.job.error
        assert not api.holds_jobs


async def test_comfycord_backends_lists_the_processes_and_which_holds_the_jobs(
    shared: Settings, comfy: FakeComfyUI, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "shared.yaml"
    config.write_text(
        f"storage:\n  url: '{shared.storage.url}'\ncomfyui:\n  url: '{comfy.url}'\n",
        encoding="utf-8",
    )
    async with (
        aiohttp.ClientSession() as session,
        started(session, shared, "bot", "Discord shard 1") as (bot, _),
        started(session, shared, "api", "HTTP API") as (api, _),
    ):
        assert await run_cli("--config", str(config), "backends") == 0
    out = capsys.readouterr().out.splitlines()
    header = next(n for n, line in enumerate(out) if line.startswith("PROCESS"))
    rows = {line.split()[0]: line for line in out[header + 1 :] if line.strip()}
    assert bot.sharing is not None and api.sharing is not None
    holder = rows[bot.sharing.process_id]
    assert " bot " in holder and "Discord shard 1" in holder and " yes " in holder
    other = rows[api.sharing.process_id]
    assert " api " in other and "HTTP API" in other and " no " in other
