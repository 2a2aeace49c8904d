"""End to end: /imagine through the real discord.py client, fake Discord and fake ComfyUI."""

from __future__ import annotations

import asyncio
import io
import itertools
import json
import os
from pathlib import Path

import pytest
from PIL import Image

from bot.jobs.results import image_size
from bot.jobs.runner import JobUpdate
from bot.settings import Settings
from tests.conftest import PROMPT_PARAM, make_settings, txt2img_pack
from tests.e2e import (
    comfybot,
    contents,
    field,
    find,
    has_files,
    held_imagine,
    imagined,
    output_images,
    stranger_click,
    wait_result,
)
from tests.fakes import _comfy_nodes
from tests.fakes.comfyui import FakeComfyUI
from tests.fakes.discord import FakeDiscord, FakeMessage
from tests.fakes.discord_fixtures import installed_fake


async def test_imagine_acknowledges_shows_progress_and_attaches_the_images(
    fake: FakeDiscord, comfy: FakeComfyUI, tmp_path: Path
) -> None:
    comfy.step_delay = 0.15
    settings = make_settings(tmp_path, comfy.url)
    async with comfybot(fake, settings) as bot:
        it = await fake.slash("imagine", {"prompt": "a cat", "steps": 4})
        message = await wait_result(fake, it)
        assert it.acknowledged_at is not None and it.acknowledged_at < 3.0
        assert any("step " in c and "/4" in c for c in contents(message)), contents(message)
        progress_times = [t for t, _ in message.edits[:-1]]  # the final edit is never held back
        gaps = [b - a for a, b in itertools.pairwise(progress_times)]
        assert all(gap >= 0.25 for gap in gaps), gaps  # coalesced: one per 0.3 s interval
        [job] = bot.engine.recent(limit=1)
        produced = output_images(comfy, job.prompt_id)
        assert [a.data for a in message.attachments] == produced
        assert all(a.data.startswith(b"\x89PNG") for a in message.attachments)
        [embed] = message.embeds
        assert field(embed, "Seed") == str(job.values["seed"])
        assert field(embed, "Steps") == "4"
        assert embed["description"] == "a cat"
        assert message.custom_ids[0] == f"cc:reroll:{job.id}"
        assert fake.errors == []


async def test_the_result_is_sent_from_memory_not_read_back_from_disk(
    fake: FakeDiscord, comfy: FakeComfyUI, settings: Settings
) -> None:
    async with comfybot(fake, settings) as bot:
        on_disk: list[bool] = []

        def look(update: JobUpdate) -> None:  # the delivery starts from this update
            if update.kind == "result":
                on_disk.append(any(Path(o.path).exists() for o in update.job.outputs))

        bot.engine.listen(look)
        _, message, [job] = await imagined(fake, bot, {"prompt": "a cat", "steps": 1})
        assert on_disk == [False]  # the files are written after the result went out
        assert [a.data for a in message.attachments] == output_images(comfy, job.prompt_id)
        assert "missing" not in message.content


async def test_progress_shows_previews_and_queue_position(
    fake: FakeDiscord, comfy: FakeComfyUI, settings: Settings
) -> None:
    async with comfybot(fake, settings):
        first = await held_imagine(fake, comfy, {"prompt": "one", "steps": 3})
        second = await fake.slash(
            "imagine", {"prompt": "two", "steps": 3}, user_id=fake.add_member("bob")
        )
        waiting = await second.wait_original(lambda m: "position #1" in m.content)
        assert "Queued" in waiting.content
        comfy.release_steps(1)
        running = await first.wait_original(
            lambda m: bool(m.attachments) and "Running" in m.content
        )
        assert running.attachments[0].filename.startswith("preview")
        comfy.release_steps()
        await wait_result(fake, first)
        await wait_result(fake, second)


async def test_autocomplete_offers_allowed_workflows_from_memory(
    fake: FakeDiscord, comfy: FakeComfyUI, settings: Settings
) -> None:
    async with comfybot(fake, settings):
        choices = await fake.autocomplete("imagine", {"prompt": "x"}, "workflow")
        assert {c["value"] for c in choices} == {"sd15-txt2img", "sd15-img2img"}
        only = await fake.autocomplete("imagine", {"prompt": "x", "workflow": "img2"}, "workflow")
        assert [c["value"] for c in only] == ["sd15-img2img"]
        samplers = await fake.autocomplete("imagine", {"prompt": "x", "sampler": "dpm"}, "sampler")
        assert samplers and all("dpm" in c["value"] for c in samplers)


async def test_unknown_workflow_and_bad_values_get_clear_ephemeral_errors(
    fake: FakeDiscord, comfy: FakeComfyUI, settings: Settings
) -> None:
    async with comfybot(fake, settings) as bot:
        it = await fake.slash("imagine", {"prompt": "x", "workflow": "nope"})
        await it.wait_ack()
        reply = await it.wait_original()
        assert it.ephemeral and "no workflow called `nope`" in reply.content
        it = await fake.slash("imagine", {"prompt": "x", "sampler": "bogus"})
        await it.wait_ack()
        reply = await it.wait_original()
        assert it.ephemeral and "`sampler`" in reply.content and "euler" in reply.content
        raw = [  # sent as is: a value a modified client could send past the declared range
            {"name": "prompt", "type": 3, "value": "x"},
            {"name": "steps", "type": 4, "value": 500},
        ]
        it = await fake.slash("imagine", raw)
        await it.wait_ack()
        reply = await it.wait_original()
        assert it.ephemeral and "`steps`" in reply.content and "50" in reply.content
        assert bot.engine.recent() == []
        assert "Traceback" not in reply.content


async def test_comfyui_rejection_is_shown_in_the_reply(
    fake: FakeDiscord, comfy: FakeComfyUI, tmp_path: Path
) -> None:
    comfy.checkpoints = ["something-else.safetensors"]
    settings = make_settings(tmp_path, comfy.url, comfyui={"substitute_missing_models": False})
    async with comfybot(fake, settings):
        it = await fake.slash("imagine", {"prompt": "a cat", "steps": 2})
        message = await wait_result(fake, it)
        assert "❌" in message.content
        assert "v1-5-pruned-emaonly.safetensors" in message.content
        assert "not installed" in message.content


async def test_workflow_exposed_as_its_own_command_takes_an_attachment(
    fake: FakeDiscord, comfy: FakeComfyUI, settings: Settings
) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), "blue").save(buf, "PNG")
    async with comfybot(fake, settings):
        command = fake.command("img2img")
        assert command is not None
        names = [o["name"] for o in command["options"]]
        assert "image" in names and "workflow" not in names
        it = await fake.slash(
            "img2img",
            {"prompt": "blue", "steps": 2},
            attachments={"image": ("in.png", buf.getvalue(), "image/png")},
        )
        message = await wait_result(fake, it)
        assert message.attachments, message.content
        assert any(p["prompt"] for p in comfy.prompts_received)


async def test_reroll_after_a_bot_restart(
    fake: FakeDiscord, comfy: FakeComfyUI, settings: Settings
) -> None:
    async with comfybot(fake, settings) as bot:
        _, message, [job] = await imagined(fake, bot, {"prompt": "a fox", "steps": 2, "seed": 5})
    async with comfybot(fake, settings) as bot:
        click = await fake.click(message.id, f"cc:reroll:{job.id}")
        result = await wait_result(fake, click)
        newest = bot.engine.recent(limit=1)[0]
        assert newest.id != job.id
        assert newest.values["prompt"] == "a fox" and newest.values["steps"] == 2
        assert field(result.embeds[0], "Seed") == str(newest.values["seed"])


async def test_cancel_while_queued_and_while_running(
    fake: FakeDiscord, comfy: FakeComfyUI, settings: Settings
) -> None:
    async with comfybot(fake, settings) as bot:
        running = await held_imagine(fake, comfy, {"prompt": "one", "steps": 5})
        queued = await fake.slash(
            "imagine", {"prompt": "two", "steps": 5}, user_id=fake.add_member("bob")
        )
        waiting = await queued.wait_original(lambda m: "Queued" in m.content)
        [queued_job] = bot.engine.recent(limit=1)
        # someone else may not cancel it
        refused = await stranger_click(fake, waiting.id, f"cc:cancel:{queued_job.id}", "eve")
        assert refused.ephemeral
        assert "Only the member" in (await refused.wait_original()).content
        # its owner may
        bob_click = await fake.click(
            waiting.id, f"cc:cancel:{queued_job.id}", user_id=queued.user_id
        )
        await bob_click.wait_ack()
        done = await wait_result(fake, queued)
        assert "cancelled" in done.content
        # a moderator cancels the running one
        running_msg = await running.wait_original(lambda m: "cc:cancel" in "".join(m.custom_ids))
        running_job_id = running_msg.custom_ids[0].split(":")[-1]
        await fake.click(running_msg.id, f"cc:cancel:{running_job_id}", user_id=fake.moderator_id)
        done = await wait_result(fake, running)
        assert "cancelled" in done.content
        assert bot.engine.get_job(running_job_id).state.value == "cancelled"


async def test_result_after_the_token_expired_goes_to_the_channel(
    comfy: FakeComfyUI, tmp_path: Path
) -> None:
    # a 17-minute job, with the 15-minute token lifetime scaled down to 1 s
    async with installed_fake(token_lifetime=1.0) as fake:
        settings = make_settings(tmp_path, comfy.url)
        async with comfybot(fake, settings):
            it = await held_imagine(fake, comfy, {"prompt": "slow", "steps": 2})
            await asyncio.sleep(1.2)
            comfy.release_steps()
            await fake.wait_for(
                lambda: find(fake.messages_in(fake.channel_id), lambda m: bool(m.attachments)),
                timeout=15,
            )
            delivered = [m for m in fake.messages_in(fake.channel_id) if m.attachments]
            assert len(delivered) == 1
            [message] = delivered
            assert f"<@{it.user_id}>" in message.content
            await asyncio.sleep(0.3)
            assert len(fake.errors_with(50027)) <= 1  # stopped using the token after the 401


async def test_oversized_output_is_fitted_under_the_upload_limit(
    fake: FakeDiscord, comfy: FakeComfyUI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    packs = tmp_path / "packs"
    txt2img_pack(
        packs,
        "big",
        "title: Big\nparams:\n"
        + PROMPT_PARAM
        + "  width: {type: int, node: EmptyLatentImage, input: width, default: 2304, max: 4096}\n"
        "  height: {type: int, node: EmptyLatentImage, input: height, default: 2304, max: 4096}\n"
        "  steps: {type: int, node: KSampler, input: steps, default: 1}\n",
    )

    def noise(width: int, height: int, *seed: object) -> Image.Image:
        return Image.frombytes("RGB", (width, height), os.urandom(width * height * 3))

    monkeypatch.setattr(_comfy_nodes, "noise_image", noise)
    settings = make_settings(tmp_path, comfy.url, workflows={"dir": str(packs), "default": "big"})
    async with comfybot(fake, settings) as bot:
        _, message, [job] = await imagined(fake, bot, {"prompt": "static"}, timeout=60)
        [original] = output_images(comfy, job.prompt_id)
        assert len(original) > 14 * 1024 * 1024
        [attachment] = message.attachments
        assert attachment.size <= 10 * 1024 * 1024
        assert "re-encoded" in message.content
        assert fake.errors_with(40005) == []


async def test_burst_of_twenty_requests_is_delivered_once_each_without_429(
    fake: FakeDiscord, comfy: FakeComfyUI, tmp_path: Path
) -> None:
    settings = make_settings(
        tmp_path, comfy.url, comfyui={"max_in_flight": 4}, discord={"progress_interval": 1.5}
    )
    async with comfybot(fake, settings) as bot:
        members = [fake.add_member(f"m{i}") for i in range(20)]
        its = await asyncio.gather(
            *(
                fake.slash("imagine", {"prompt": f"cat {i}", "steps": 2}, user_id=uid)
                for i, uid in enumerate(members)
            )
        )
        results = await asyncio.gather(*(wait_result(fake, it, timeout=60) for it in its))
        assert all(r.attachments for r in results)
        assert all(it.acknowledged_at is not None and it.acknowledged_at < 3 for it in its)
        assert fake.rate_limited_count == 0
        # the delivered mark is written when Discord's answer arrives, just after the edit shows
        await fake.wait_for(lambda: all(j.delivered for j in bot.engine.recent(limit=50)), 10)
        assert len(bot.engine.recent(limit=50)) == 20
        await asyncio.sleep(0.5)
        with_files = [m for m in fake.messages_in(fake.channel_id) if m.attachments]
        assert len(with_files) == 20
        assert len(comfy.prompts_received) == 20
        assert json.dumps([r.content for r in results]).count("ready") == 20


async def test_bot_restarted_mid_job_delivers_the_result_once(
    fake: FakeDiscord, comfy: FakeComfyUI, settings: Settings
) -> None:
    async with comfybot(fake, settings):
        it = await held_imagine(fake, comfy, {"prompt": "a slow fox", "steps": 3})
    comfy.release_steps()  # ComfyUI finishes while the bot is down
    await comfy.wait_until_idle()

    def results() -> list[FakeMessage]:
        return [m for m in fake.messages_in(fake.channel_id) if has_files(m)]

    async with comfybot(fake, settings) as bot:
        await fake.wait_for(lambda: len(results()) == 1, timeout=15)
        # marked delivered once Discord answered and the record is stored, just after it shows
        await fake.wait_for(lambda: bot.engine.recent(limit=1)[0].delivered, timeout=5)
        [job] = bot.engine.recent(limit=1)
        [message] = results()
        assert f"<@{it.user_id}>" in message.content
        assert [a.data for a in message.attachments] == output_images(comfy, job.prompt_id)
    async with comfybot(fake, settings):
        await asyncio.sleep(0.5)
        assert len(results()) == 1  # not delivered again


def test_image_size_reads_a_png_header_and_asks_pillow_for_the_rest() -> None:
    for fmt in ("PNG", "JPEG", "WEBP"):
        buffer = io.BytesIO()
        Image.new("RGB", (321, 123)).save(buffer, fmt)
        assert image_size(buffer.getvalue()) == (321, 123)
    assert image_size(b"not an image") == (0, 0)
