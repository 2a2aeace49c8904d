"""Transient ComfyUI failures are retried, not shown; a websocket drop leaves no idle GPU;
a reply whose token runs out says where the result will be."""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from bot.engine import Engine, ImageInput, JobRequest
from bot.jobs.model import JobState
from tests.conftest import Recorder, make_settings, running_engine
from tests.e2e import comfybot, has_files
from tests.fakes.comfyui import FakeComfyUI
from tests.fakes.discord_fixtures import installed_fake

EngineFx = tuple[Engine, Recorder]


def request(prompt: str = "a lighthouse", owner: str = "1", steps: int = 2) -> JobRequest:
    return JobRequest("sd15-txt2img", {"prompt": prompt, "steps": steps}, owner_id=owner)


async def test_an_image_download_that_fails_then_recovers_is_retried(
    engine: EngineFx, comfy: FakeComfyUI, caplog: pytest.LogCaptureFixture
) -> None:
    eng, rec = engine
    comfy.fail_next("/view", 503, times=3)
    [job] = await eng.submit(request())
    [done] = await rec.finished(job.id, timeout=15)
    assert done.job.state is JobState.DONE and done.job.outputs
    [note] = {u.note for u in rec.of(job.id, "retrying")}
    assert note == "ComfyUI went away while sending your image"
    assert any(job.id in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)


async def test_an_image_download_that_never_recovers_fails_in_plain_words(
    session: aiohttp.ClientSession,
    tmp_path: Path,
    comfy: FakeComfyUI,
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = make_settings(tmp_path, comfy.url, comfyui={"fetch_retry_seconds": 1})
    async with running_engine(session, settings) as (eng, rec):
        comfy.fail_next("/view", 503, times=1000)
        [job] = await eng.submit(request())
        [done] = await rec.finished(job.id, timeout=15)
    assert done.job.state is JobState.FAILED
    assert done.job.error == (
        "ComfyUI went away while sending your image and did not come back within 1 s"
    )
    assert any(
        job.id in r.getMessage() and "503" in r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.WARNING
    ), "the log names the job and what went wrong"


async def test_an_upload_that_fails_then_recovers_is_retried(
    engine: EngineFx, comfy: FakeComfyUI
) -> None:
    eng, rec = engine
    [first] = await eng.submit(request())  # its image is the input of the next job
    [done] = await rec.finished(first.id, timeout=15)
    data = Path(done.job.outputs[0].path).read_bytes()
    comfy.fail_next("/upload/image", 503, times=2)
    img2img = JobRequest(
        "sd15-img2img",
        {"prompt": "again", "steps": 2},
        owner_id="2",
        images={"image": ImageInput("in.png", data)},
    )
    [job] = await eng.submit(img2img)
    [finished] = await rec.finished(job.id, timeout=15)
    assert finished.job.state is JobState.DONE
    assert {u.note for u in rec.of(job.id, "retrying")} == {
        "ComfyUI went away while receiving your image"
    }


async def test_a_websocket_drop_between_two_jobs_leaves_no_idle_gpu(
    engine: EngineFx, comfy: FakeComfyUI
) -> None:
    eng, rec = engine  # one job in flight at a time
    comfy.hold_steps()
    [first] = await eng.submit(request("first", owner="1", steps=3))
    [second] = await eng.submit(request("second", owner="2", steps=3))
    held = await comfy.wait_until_held()
    await comfy.drop_sockets()
    # The first prompt's own messages went to the socket that is gone. Without waiting for
    # them (or for a later status message), the second job is handed to ComfyUI, which starts
    # it the moment the first ends.
    await rec.wait(lambda: len(comfy.prompts_received) == 2, timeout=10)
    assert comfy.running_prompt_id == held.prompt_id
    comfy.release_steps()
    done = await rec.finished(first.id, second.id, timeout=15)
    assert [d.job.state for d in done] == [JobState.DONE, JobState.DONE]
    assert [d.job.attempts for d in done] == [1, 1]


async def test_a_reply_about_to_lose_its_token_says_where_the_result_will_be(
    comfy: FakeComfyUI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with (
        installed_fake(token_lifetime=3.0) as fake,
        comfybot(fake, make_settings(tmp_path, comfy.url)) as bot,
    ):
        cog = bot.get_cog("Imagine")
        assert cog is not None
        # the 15-minute token, scaled down: it lasts 3 s here and is given up 1 s before; the
        # sweep gives a last word to replies with less than 2 s left
        module = sys.modules["cogs._reply"]  # where the reply reads the token's lifetime
        monkeypatch.setattr(module, "TOKEN_LIFETIME", 3.0)
        monkeypatch.setattr(module, "TOKEN_MARGIN", 1.0)
        comfy.hold_steps()
        running = await fake.slash("imagine", {"prompt": "long", "steps": 2})
        await comfy.wait_until_held()
        waiting = await fake.slash("imagine", {"prompt": "later", "steps": 2})
        await waiting.wait_original(lambda m: "Queued" in m.content)
        # the tokens near their end: the later one has just under 2 s left, the earlier one
        # more than 1 s (a slow machine has most of a second to spare)
        last = max(r.expires_at for r in cog.replies.values())  # type: ignore[attr-defined]
        await asyncio.sleep(max(0.0, last - 1.95 - time.time()))
        await cog.sweep_once()  # what the bot does every 20 s
        reply = await waiting.wait_original(lambda m: "stops updating" in m.content)
        assert "Queued" in reply.content and reply.button("Cancel") is not None
        await asyncio.sleep(max(0.0, last - time.time()) + 0.05)  # both tokens have expired now
        comfy.release_steps()
        await fake.wait_for(lambda: all(j.delivered for j in bot.engine.recent()), 15)
        for it in (running, waiting):
            assert it.original is not None and "result is posted" in it.original.content
            assert not it.original.components  # no Cancel button left on a finished job
        posted = [m for m in fake.messages_in(fake.channel_id) if m.interaction_id is None]
        assert len(posted) == 2 and all(has_files(m) for m in posted)
        assert [m.content.count("<@") for m in posted] == [1, 1]  # the member, once
