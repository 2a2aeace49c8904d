"""Several processes on one PostgreSQL store, each its own process: two `comfycord run` (Discord
shards 0 and 1, each with its own server) and one `comfycord serve`, four GPUs.

A burst comes in through both shards and the API; one process is killed (SIGKILL) in the middle
of it, either the one holding the jobs or the other bot. Every job must still be run, every
Discord result posted exactly once, every reply left finished, every API job done. Then the
killed process starts again on its shard, and its new commands are answered once too.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bot.http.keys import KeyStore
from bot.jobs.model import Job, JobState
from bot.jobs.store import Store
from tests.fakes.comfyui import FakeComfyUI
from tests.fakes.discord import FakeDiscord, FakeGuild, FakeInteraction, FakeMessage, shard_of
from tests.fakes.discord_fixtures import installed_fake
from tests.process import ROOT, ApiProcess, BotProcess, shared_processes, stale, stored_jobs

pytestmark = pytest.mark.usefixtures("pg_cluster")

JOBS_PER_SHARD = 8
API_JOBS = 4


@contextlib.asynccontextmanager
async def gpus(count: int) -> AsyncIterator[list[FakeComfyUI]]:
    servers = [FakeComfyUI(previews=False, step_delay=0.02) for _ in range(count)]
    for server in servers:
        await server.start()
    try:
        yield servers
    finally:
        for server in servers:
            await server.stop()


def results_by_job(fake: FakeDiscord, channels: list[int]) -> dict[str, list[FakeMessage]]:
    found: dict[str, list[FakeMessage]] = {}
    for channel in channels:
        for message in fake.messages_in(channel):
            if message.deleted:
                continue
            for job_id in {a.filename.split("-")[0] for a in message.attachments}:
                found.setdefault(job_id, []).append(message)
    return found


async def settled(
    fake: FakeDiscord, url: str, bots: list[BotProcess], its: list[FakeInteraction], count: int
) -> None:
    """Wait until the store has `count` jobs, all finished, the Discord ones delivered, and no
    acknowledged reply is left showing progress."""

    def done() -> bool:
        jobs = stored_jobs(url)
        acked = [it for it in its if it.original is not None]
        return (
            len(jobs) == count
            and all(j.state.finished for j in jobs)
            and all(j.delivered for j in jobs if j.meta.get("reply"))
            and not [it for it in acked if stale(it)]
        )

    try:
        await fake.wait_for(done, timeout=60, interval=0.1)
    except TimeoutError:
        states = [(j.id, j.state.value, j.delivered) for j in stored_jobs(url)]
        logs = "\n".join(b.log for b in bots)
        raise AssertionError(f"not settled: {states}\n{logs}") from None
    await asyncio.sleep(1.0)  # a second post would show up now


def each_posted_once(fake: FakeDiscord, url: str, channels: list[int]) -> list[Job]:
    """Every job done, and each Discord job's result posted exactly once; the jobs."""
    jobs = stored_jobs(url)
    assert all(j.state is JobState.DONE for j in jobs), [j.error for j in jobs]
    posted = results_by_job(fake, channels)
    for job in jobs:
        if job.meta.get("reply"):
            assert len(posted.get(job.id, [])) == 1, (job.id, posted.get(job.id))
    assert set(posted) <= {j.id for j in jobs}
    return jobs


def pid_of(bot: BotProcess) -> int:
    assert bot.proc is not None
    return bot.proc.pid


async def imagine_burst(
    fake: FakeDiscord,
    guild: FakeGuild | None,
    users: list[int],
    label: str,
    count: int = JOBS_PER_SHARD,
) -> list[FakeInteraction]:
    its = []
    for n in range(count):
        options = {"prompt": f"{label} {n}", "steps": 3}
        its.append(await fake.slash("imagine", options, user_id=users[n % len(users)], guild=guild))
    return its


@pytest.mark.parametrize("victim", ["holder", "other bot"])
async def test_two_bots_and_an_api_on_one_database_lose_nothing_when_one_bot_is_killed(
    tmp_path: Path, pg_url: str, victim: str
) -> None:
    async with gpus(4) as servers, installed_fake() as fake, aiohttp.ClientSession() as session:
        main_shard = shard_of(fake.guild_id, 2)
        other = fake.add_guild("Second Server", shard=(1 - main_shard, 2))
        shared: dict[str, Any] = {
            "comfyui": {
                "backends": [{"url": s.url, "name": f"gpu{i}"} for i, s in enumerate(servers)],
                "submit_retry_seconds": 10,
                "heartbeat": 5,
            },
            "storage": {"url": pg_url, "outputs": str(tmp_path / "outputs")},
            "workflows": {"dir": str(ROOT / "workflows"), "default": "sd15-txt2img"},
            "limits": {"max_queued_per_member": 40, "max_running_per_member": 4},
        }
        for shard in (0, 1):
            (tmp_path / f"shard{shard}").mkdir()
        bots = [
            BotProcess(
                tmp_path / f"shard{shard}",
                fake,
                servers[0],
                **{
                    **shared,
                    "discord": {
                        "progress_interval": 0.3,
                        "dev_guild": None,  # commands for every server
                        "sync_on_start": True,
                        "shard_id": shard,
                        "shard_count": 2,
                    },
                },
            )
            for shard in (0, 1)
        ]
        api = ApiProcess(tmp_path / "api", fake, shared)
        try:
            for bot in bots:
                await bot.start()
            await api.start(session)
            keys = Store(pg_url)
            key = KeyStore(keys).create("scale").secret
            keys.close()
            holders = [p for p in shared_processes(pg_url) if p.leading]
            assert len(holders) == 1 and holders[0].role == "bot"

            crowd = [fake.add_member(f"member{n}") for n in range(4)]
            its = await imagine_burst(fake, None, crowd, "main")
            its += await imagine_burst(fake, other, [fake.member_id, fake.owner_id], "second")
            over_http: list[str] = []
            for n in range(API_JOBS):
                async with session.post(
                    f"{api.url}/v1/workflows/sd15-txt2img/jobs",
                    json={"prompt": f"api {n}", "steps": 3},
                    headers={"Authorization": f"Bearer {key}"},
                ) as response:
                    assert response.status == 202, await response.text()
                    over_http += [job["id"] for job in (await response.json())["jobs"]]

            def some_done() -> bool:
                return sum(j.state is JobState.DONE for j in stored_jobs(pg_url)) >= 4

            await fake.wait_for(some_done, timeout=30, interval=0.05)
            # /queue says who holds the jobs, in either server
            for guild in (None, other):
                asked = await fake.slash("queue", {}, guild=guild)
                shown = await asked.wait_original(lambda m: "share this queue" in m.content)
                assert "3 processes share this queue" in shown.content
                assert f"held by {holders[0].detail} (`{holders[0].id}`)" in shown.content
            assert holders[0].detail.startswith("Discord shard ")
            holder_pid = int(holders[0].id.split(":")[1])
            killed = next(
                b
                for b in bots
                if (b.proc is not None and b.proc.pid == holder_pid) == (victim == "holder")
            )
            await killed.kill()

            await settled(fake, pg_url, bots, its, 2 * JOBS_PER_SHARD + API_JOBS)
            jobs = each_posted_once(fake, pg_url, [fake.channel_id, other.channel_id])
            # the API serves what the holder made: the job and its image
            for job_id in over_http:
                headers = {"Authorization": f"Bearer {key}"}
                async with session.get(f"{api.url}/v1/jobs/{job_id}", headers=headers) as r:
                    assert (await r.json())["state"] == "done"
                async with session.get(
                    f"{api.url}/v1/jobs/{job_id}/outputs/0", headers=headers
                ) as r:
                    assert r.status == 200 and (await r.read()).startswith(b"\x89PNG")
            # the survivor holds the jobs now, and each job ran on one GPU at a time
            survivor = next(b for b in bots if b is not killed)
            holders = [p for p in shared_processes(pg_url) if p.leading]
            assert [int(p.id.split(":")[1]) for p in holders] == [pid_of(survivor)]
            received = [p["prompt_id"] for s in servers for p in s.prompts_received]
            assert len(set(received)) == len(received)
            assert len(received) <= len(jobs) + 4  # at most the ones running at the kill, again

            # the killed process comes back on its shard; the survivor keeps the jobs
            await killed.start()
            its += await imagine_burst(fake, None, crowd, "main again", 2)
            its += await imagine_burst(fake, other, [fake.member_id], "second again", 2)
            await settled(fake, pg_url, bots, its, 2 * JOBS_PER_SHARD + API_JOBS + 4)
            each_posted_once(fake, pg_url, [fake.channel_id, other.channel_id])
            holders = [p for p in shared_processes(pg_url) if p.leading]
            assert [int(p.id.split(":")[1]) for p in holders] == [pid_of(survivor)]
        finally:
            for bot in bots:
                await bot.stop()
            await api.stop()
