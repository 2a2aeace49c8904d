"""Restarts, crashes and shutdowns: the bot as its own process, faults injected from outside.

Each test kills (SIGKILL) or stops (SIGTERM) a real `comfycord run` process at a chosen moment,
starts it again on the same store, and checks that every job is delivered exactly once and that
no reply is left stale (thinking, a queue position, progress, or a Cancel button).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot.jobs.model import JobState
from tests.e2e import has_files
from tests.fakes.comfyui import FakeComfyUI
from tests.fakes.discord import FakeDiscord, FakeInteraction
from tests.fakes.discord_fixtures import installed_fake
from tests.process import ROOT, BotProcess, result_messages, stale


@pytest.fixture
async def quiet_comfy() -> AsyncIterator[FakeComfyUI]:
    """A fake ComfyUI without previews: the only edits that upload files carry results."""
    async with FakeComfyUI(previews=False, step_delay=0.005) as fake:
        yield fake


async def settled(bot: BotProcess, fake: FakeDiscord, its: list[FakeInteraction]) -> None:
    """Wait until every stored job is finished and delivered and no acknowledged reply is stale."""

    def done() -> bool:
        jobs = bot.jobs()
        acked = [it for it in its if it.original is not None]
        return (
            bool(jobs)
            and all(j.state.finished and j.delivered for j in jobs)
            and len(jobs) >= len(acked)
            and not [it for it in acked if stale(it)]
        )

    try:
        await fake.wait_for(done, timeout=40, interval=0.1)
    except TimeoutError:
        jobs = [(j.id, j.state.value, j.delivered) for j in bot.jobs()]
        problems = [(it.id, stale(it)) for it in its if it.original is not None and stale(it)]
        raise AssertionError(f"not settled: jobs {jobs}, stale {problems}\n{bot.log}") from None


def assert_each_delivered_once(bot: BotProcess, fake: FakeDiscord) -> None:
    posted = result_messages(fake)
    jobs = bot.jobs()
    for job in jobs:
        assert job.delivered, job
        if job.state is JobState.DONE:
            assert len(posted.get(job.id, [])) == 1, (job.id, posted.get(job.id))
    assert set(posted) <= {j.id for j in jobs}


@contextlib.asynccontextmanager
async def running_bot(
    tmp_path: Path, comfy: FakeComfyUI, discord: dict[str, Any] | None = None, **settings: Any
) -> AsyncIterator[tuple[FakeDiscord, BotProcess]]:
    """A fake Discord (with these options) and a started bot process; the process is gone after."""
    async with installed_fake(**(discord or {})) as fake:
        bot = BotProcess(tmp_path, fake, comfy, **settings)
        try:
            await bot.start()
            yield fake, bot
        finally:
            await bot.stop()


async def killed_and_settled(
    bot: BotProcess, fake: FakeDiscord, its: list[FakeInteraction]
) -> None:
    """SIGKILL the bot, start it again, and check every job is then delivered once."""
    await bot.kill()
    await bot.start()
    await settled(bot, fake, its)
    assert_each_delivered_once(bot, fake)


def members(fake: FakeDiscord, count: int) -> list[int]:
    """`count` new members, member0 onwards."""
    return [fake.add_member(f"member{n}") for n in range(count)]


async def burst(
    fake: FakeDiscord, crowd: list[int], words: str, numbers: range, steps: int = 2
) -> list[FakeInteraction]:
    """An /imagine of "`words` n" for each n, from the crowd's members in turn."""
    its = []
    for n in numbers:
        options = {"prompt": f"{words} {n}", "steps": steps}
        its.append(await fake.slash("imagine", options, user_id=crowd[n % len(crowd)]))
    return its


async def restarted_quietly(bot: BotProcess) -> None:
    """Start the bot again and wait until it has looked at every stored reply."""
    await bot.start()
    await bot.fake.wait_for(lambda: _resumed(bot), timeout=20, interval=0.05)


def _resumed(bot: BotProcess) -> bool:
    last = (bot.folder / f"bot-{bot.runs}.log").read_text(encoding="utf-8", errors="replace")
    return "following" in last and "stored replies" in last


async def test_sigkill_right_after_a_burst_loses_nothing(
    comfy: FakeComfyUI, tmp_path: Path
) -> None:
    async with running_bot(tmp_path, comfy) as (fake, bot):
        its = await burst(fake, members(fake, 5), "burst", range(15))
        await asyncio.sleep(0.05)  # the fault: SIGKILL within 0.1 s of the burst
        await killed_and_settled(bot, fake, its)
        prompts = {str(j.values["prompt"]) for j in bot.jobs()}
        for n, it in enumerate(its):
            if it.original is not None:  # acknowledged: its job exists and was answered
                assert f"burst {n}" in prompts
        # no job ran twice on ComfyUI: a running one was collected, not sent again
        assert len(comfy.prompts_received) == len(bot.jobs())
        await bot.kill()
        await restarted_quietly(bot)
        assert_each_delivered_once(bot, fake)


async def test_sigkill_inside_a_channel_post_does_not_post_twice(
    comfy: FakeComfyUI, tmp_path: Path
) -> None:
    async with running_bot(tmp_path, comfy, {"token_lifetime": 1.0}) as (fake, bot):
        comfy.hold_steps()
        it = await fake.slash("imagine", {"prompt": "a held post", "steps": 2})
        await comfy.wait_until_held()
        await asyncio.sleep(1.1)  # the interaction token expires: the result goes to the channel
        fake.hold_after_apply("POST /channels/*/messages")
        comfy.release_steps()
        await fake.wait_for(lambda: fake.held, timeout=15)  # Discord posted it; no answer
        await killed_and_settled(bot, fake, [it])
        [job] = bot.jobs()
        [message] = result_messages(fake)[job.id]
        assert message.nonce is not None and message.interaction_id is None
        assert message.content.count(f"<@{it.user_id}>") == 1
        assert it.original is not None and "result" in it.original.content


async def test_sigkill_inside_the_final_edit_does_not_post_again(
    quiet_comfy: FakeComfyUI, tmp_path: Path
) -> None:
    async with running_bot(tmp_path, quiet_comfy) as (fake, bot):
        fake.hold_after_apply("PATCH /webhooks/*", with_files=True)
        it = await fake.slash("imagine", {"prompt": "a held edit", "steps": 2})
        await fake.wait_for(lambda: fake.held, timeout=15)  # the reply shows the result
        assert has_files(it.original)
        await killed_and_settled(bot, fake, [it])
        [job] = bot.jobs()
        assert result_messages(fake)[job.id] == [it.original]


async def test_sigkill_after_the_result_posts_nothing_again(
    comfy: FakeComfyUI, tmp_path: Path
) -> None:
    async with running_bot(tmp_path, comfy, log_level="DEBUG") as (fake, bot):
        it = await fake.slash("imagine", {"prompt": "done then killed", "steps": 2})
        await it.wait_original(has_files, timeout=15)
        await bot.kill()  # as soon as the result shows, delivered mark written or not
        await restarted_quietly(bot)
        await settled(bot, fake, [it])
        assert_each_delivered_once(bot, fake)
        assert it.token not in bot.log  # never logged, even at DEBUG


async def test_a_restarted_bot_follows_waiting_replies_again(
    comfy: FakeComfyUI, tmp_path: Path
) -> None:
    async with running_bot(tmp_path, comfy) as (fake, bot):
        comfy.hold_steps()
        first = await fake.slash("imagine", {"prompt": "running", "steps": 2})
        await comfy.wait_until_held()
        second = await fake.slash("imagine", {"prompt": "waiting", "steps": 2})
        await second.wait_original(lambda m: "Queued" in m.content, timeout=10)
        await bot.kill()
        await bot.start()
        await first.wait_original(lambda m: "Running" in m.content, timeout=10)
        comfy.release_steps()
        await settled(bot, fake, [first, second])
        assert_each_delivered_once(bot, fake)
        for it in (first, second):  # the result is in the member's own reply
            assert has_files(it.original)
        assert not [m for m in fake.messages_in(fake.channel_id) if m.interaction_id is None]


async def test_sigterm_with_jobs_queued_and_running_exits_at_once_and_loses_nothing(
    comfy: FakeComfyUI, tmp_path: Path
) -> None:
    async with running_bot(tmp_path, comfy) as (fake, bot):
        comfy.hold_steps()
        its = await burst(fake, members(fake, 3), "stopped", range(3))
        await comfy.wait_until_held()
        for it in its[1:]:
            await it.wait_original(lambda m: "Queued" in m.content, timeout=10)
        code, took = await bot.terminate()
        assert code == 0 and took < 10, bot.log
        for it in its[1:]:
            assert it.original is not None and "restarting" in it.original.content
        running = comfy.running_prompt_id
        assert running is not None  # left running on ComfyUI, collected after the restart
        states = sorted(j.state.value for j in bot.jobs())
        assert states in (["queued", "queued", "running"], ["queued", "queued", "submitted"])
        comfy.release_steps()
        await bot.start()
        await settled(bot, fake, its)
        assert_each_delivered_once(bot, fake)
        assert all(j.state is JobState.DONE for j in bot.jobs())
        assert len(comfy.prompts_received) == 3  # the running one was not sent again


async def test_sigterm_stops_generate_and_cancels_its_job_on_comfyui(
    comfy: FakeComfyUI, tmp_path: Path
) -> None:
    comfy.hold_steps()
    env = {**os.environ, "COMFYUI_URL": comfy.url, "PYTHONPATH": str(ROOT)}
    env.pop("COMFYCORD_CONFIG", None)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "generate", "sd15-txt2img", "--prompt", "stopped",
        "--set", "steps=3", "--out", str(tmp_path / "out"),
        cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        held = await comfy.wait_until_held(timeout=20)
        began = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), 15)
        assert proc.returncode == 130 and time.monotonic() - began < 10, err.decode()
        assert "interrupted" in err.decode() and "Traceback" not in err.decode()
        entry = await comfy.wait_for_history(held.prompt_id)  # interrupted, not left running
        assert entry["status"]["status_str"] == "error"
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_repeated_sigkill_delivers_every_job_exactly_once(
    comfy: FakeComfyUI, tmp_path: Path
) -> None:
    async with running_bot(tmp_path, comfy) as (fake, bot):
        crowd = members(fake, 4)
        its = await burst(fake, crowd, "again", range(8), steps=3)
        await asyncio.sleep(0.02)  # first kill: right after a burst
        await bot.kill()
        await bot.start()
        its += await burst(fake, crowd, "again", range(8, 16), steps=3)
        await fake.wait_for(lambda: all(it.response_type for it in its[8:]), timeout=15)
        for part in (1, 2):  # then twice while results are being delivered
            total = len(bot.jobs())
            await fake.wait_for(
                lambda part=part, total=total: (  # type: ignore[misc]
                    3 * sum(j.delivered for j in bot.jobs()) >= part * total
                ),
                timeout=30,
                interval=0.02,
            )
            await bot.kill()
            await bot.start()
        await settled(bot, fake, its)
        assert_each_delivered_once(bot, fake)
        assert len(bot.jobs()) >= 8  # the second burst, at least, was acknowledged
        assert len(comfy.prompts_received) == len(bot.jobs())
