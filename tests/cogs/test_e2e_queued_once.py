"""End to end: a job made from a result (a follow-up button, Edit) is stored and queued once,
with where its reply lives, as a command's job is (the engine builds it, the way in queues it)."""

from __future__ import annotations

from collections import Counter

from bot.jobs.progress import JobUpdate
from bot.settings import Settings
from tests.e2e import comfybot, imagined, wait_result
from tests.fakes.comfyui import FakeComfyUI
from tests.fakes.discord import FakeDiscord


async def test_a_followup_and_an_edit_are_each_queued_once(
    fake: FakeDiscord, comfy: FakeComfyUI, settings: Settings
) -> None:
    async with comfybot(fake, settings) as bot:
        queued: Counter[str] = Counter()

        def count(update: JobUpdate) -> None:
            if update.kind == "queued":
                queued[update.job.id] += 1

        bot.engine.listen(count)
        _, result, [original] = await imagined(fake, bot, {"prompt": "a red fox", "steps": 2})
        assert queued[original.id] == 1

        click = await fake.click(result.id, f"cc:fu:{original.id}:0:0:upscale")
        assert (await wait_result(fake, click)).attachments
        [upscaled] = [j for j in bot.engine.recent(limit=5) if j.workflow == "upscale"]
        assert queued[upscaled.id] == 1
        assert upscaled.meta["reply"]["key"]  # where its reply lives, stored with it

        edit = await fake.click(result.id, f"cc:edit:{original.id}")
        assert await edit.wait_ack() == 9
        submitted = await fake.submit_modal(edit, {"cc:edit:prompt": "a grey wolf"})
        assert (await wait_result(fake, submitted)).attachments
        [edited] = [
            j for j in bot.engine.recent(limit=5) if j.values.get("prompt") == "a grey wolf"
        ]
        assert queued[edited.id] == 1
        assert edited.meta["reply"]["key"]
