"""End to end: what members do with a result (follow-ups, Edit, Info, Delete) and Apps menus."""

from __future__ import annotations

import io
import shutil
from pathlib import Path
from typing import Any

from PIL import Image

from bot.settings import Settings
from tests.conftest import WORKFLOWS, make_settings
from tests.e2e import (
    comfybot,
    field,
    imagined,
    output_images,
    prompt_text,
    stranger_click,
    wait_result,
)
from tests.fakes.comfyui import FakeComfyUI
from tests.fakes.discord import FakeDiscord, FakeMessage


def png(color: str, size: tuple[int, int] = (64, 48)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "PNG")
    return buf.getvalue()


def fed_image(comfy: FakeComfyUI, body: dict[str, Any]) -> bytes:
    """The bytes of the file ComfyUI's LoadImage node of this prompt reads."""
    [node] = [n for n in body["prompt"].values() if n["class_type"] == "LoadImage"]
    return (comfy.input_dir / node["inputs"]["image"]).read_bytes()


def rows(message: FakeMessage) -> list[list[dict[str, Any]]]:
    return [row["components"] for row in message.components]


def with_followups(tmp_path: Path, *labels: str) -> Path:
    """A workflows folder: the shipped packs plus more copies of the upscale pack."""
    packs = tmp_path / "packs"
    packs.mkdir()
    for file in WORKFLOWS.glob("*.*"):
        shutil.copy(file, packs / file.name)
    text = (WORKFLOWS / "upscale.yaml").read_text(encoding="utf-8")
    for label in labels:
        name = label.lower()
        pack = text.replace("label: Upscale", f"label: {label}").replace("command: upscale", "")
        (packs / f"{name}.yaml").write_text(pack.replace("graph: upscale.json", "graph: up.json"))
    shutil.copy(WORKFLOWS / "upscale.json", packs / "up.json")
    return packs


async def test_upscale_button_feeds_exactly_that_image_and_credits_its_owner(
    fake: FakeDiscord, comfy: FakeComfyUI, settings: Settings
) -> None:
    async with comfybot(fake, settings) as bot:
        it, result, group = await imagined(
            fake, bot, {"prompt": "a red fox", "steps": 2, "count": 2}
        )
        second = group[1]
        custom_id = f"cc:fu:{second.id}:0:2:upscale"
        button = result.component(custom_id)
        assert button is not None and button["label"] == "Upscale 2", result.custom_ids
        bob = fake.add_member("bob")
        click = await fake.click(result.id, custom_id, user_id=bob)
        upscaled = await wait_result(fake, click)
        assert upscaled.attachments, upscaled.content
        job = bot.engine.recent(limit=1)[0]
        assert job.workflow == "upscale" and job.owner_id == str(bob)
        assert job.remix_of == second.id  # credited as a remix of the member's job
        body = comfy.prompts_received[-1]
        # exactly the second image of the group, as ComfyUI made it
        assert fed_image(comfy, body) == output_images(comfy, second.prompt_id)[0]
        assert prompt_text(body) == "a red fox"  # the prompt is carried over
        [embed] = upscaled.embeds
        assert field(embed, "From") == f"image 2 of <@{it.user_id}>'s job `{second.id}`"
        [image] = upscaled.attachments
        with Image.open(io.BytesIO(image.data)) as picture:
            assert picture.width == 2 * 512  # scaled by the pack's default factor


async def test_apps_menu_upscales_a_members_image_within_the_channels_policy(
    fake: FakeDiscord, comfy: FakeComfyUI, settings: Settings
) -> None:
    photo = png("teal")
    poster = fake.add_member("poster")
    async with comfybot(fake, settings) as bot:
        menu = next(c for c in fake.commands if c.get("type") == 3 and c.get("guild_id"))
        assert menu["name"] == "Upscale" and menu["contexts"] == [0]
        posted = fake.post("look", user_id=poster, files=[("photo.png", photo, "image/png")])
        it = await fake.message_command("Upscale", posted.id)
        result = await wait_result(fake, it)
        job = bot.engine.recent(limit=1)[0]
        assert job.workflow == "upscale" and job.owner_id == str(fake.member_id)
        assert fed_image(comfy, comfy.prompts_received[-1]) == photo
        assert field(result.embeds[0], "From") == f"<@{poster}>'s image"
        # a message without an image is refused privately, nothing runs
        words = fake.post("no picture here", user_id=poster)
        it = await fake.message_command("Upscale", words.id)
        await it.wait_ack()
        refused = await it.wait_original()
        assert it.ephemeral and "no image" in refused.content
        # where moderators disabled the upscale workflow, the menu is refused too
        await fake.slash(
            "workflows disable",
            {"name": "upscale", "channel": fake.channel_id},
            user_id=fake.moderator_id,
        )
        it = await fake.message_command("Upscale", posted.id)
        await it.wait_ack()
        refused = await it.wait_original()
        assert it.ephemeral and "not enabled in this channel" in refused.content
        assert len(comfy.prompts_received) == 1


async def test_apps_menu_on_a_result_uses_the_jobs_own_file(
    fake: FakeDiscord, comfy: FakeComfyUI, settings: Settings
) -> None:
    async with comfybot(fake, settings) as bot:
        _, result, [original] = await imagined(fake, bot, {"prompt": "a lighthouse", "steps": 2})
        other = fake.add_member("other")
        menu = await fake.message_command("Upscale", result.id, user_id=other)
        await wait_result(fake, menu)
        job = bot.engine.recent(limit=1)[0]
        assert job.remix_of == original.id
        body = comfy.prompts_received[-1]
        assert fed_image(comfy, body) == output_images(comfy, original.prompt_id)[0]


async def test_edit_opens_a_modal_and_runs_the_edited_prompt_with_the_same_values(
    fake: FakeDiscord, comfy: FakeComfyUI, settings: Settings
) -> None:
    async with comfybot(fake, settings) as bot:
        it = await fake.slash(
            "imagine", {"prompt": "a cat", "negative": "rain", "steps": 3, "seed": 42}
        )
        result = await wait_result(fake, it)
        [original] = bot.engine.recent(limit=1)
        click = await fake.click(result.id, f"cc:edit:{original.id}")
        assert await click.wait_ack() == 9  # a modal
        assert click.modal is not None
        inputs = {
            c["custom_id"]: c
            for row in click.modal["components"]
            for c in row.get("components", [row.get("component", {})])
        }
        assert inputs["cc:edit:prompt"]["value"] == "a cat"
        assert inputs["cc:edit:negative"]["value"] == "rain"
        submitted = await fake.submit_modal(
            click, {"cc:edit:prompt": "a dog", "cc:edit:negative": "snow"}
        )
        edited = await wait_result(fake, submitted)
        job = bot.engine.recent(limit=1)[0]
        assert job.id != original.id
        assert job.values["prompt"] == "a dog" and job.values["negative"] == "snow"
        assert job.values["seed"] == 42 and job.values["steps"] == 3  # the rest is the same
        assert prompt_text(comfy.prompts_received[-1]) == "a dog"
        assert edited.embeds[0]["description"] == "a dog"


async def test_info_answers_privately_with_every_value_and_a_line_to_paste(
    fake: FakeDiscord, comfy: FakeComfyUI, settings: Settings
) -> None:
    async with comfybot(fake, settings) as bot:
        it = await fake.slash(
            "imagine", {"prompt": "a blue house", "steps": 3, "seed": 7, "sampler": "euler"}
        )
        result = await wait_result(fake, it)
        [job] = bot.engine.recent(limit=1)
        click = await stranger_click(fake, result.id, f"cc:info:{job.id}")
        info = await click.wait_original()
        assert click.ephemeral
        workflow = bot.engine.workflows["sd15-txt2img"]
        for param in workflow.params:  # every value the job used, defaults included
            assert f"`{param.name}`: {job.values[param.name]}" in info.content, param.name
        assert "sd15-txt2img" in info.content and "Backend" in info.content
        assert "waited" in info.content and "ran" in info.content
        paste = info.content.split("```")[1].strip()
        assert paste.startswith("/imagine prompt:a blue house workflow:sd15-txt2img")
        assert "seed:7" in paste and "steps:3" in paste and "sampler:euler" in paste


async def test_delete_is_refused_to_other_members_and_done_for_the_author(
    fake: FakeDiscord, comfy: FakeComfyUI, settings: Settings
) -> None:
    async with comfybot(fake, settings) as bot:
        it, result, [job] = await imagined(fake, bot, {"prompt": "mine", "steps": 1})
        refused = await stranger_click(fake, result.id, f"cc:del:{job.id}")
        assert refused.ephemeral
        assert "Only the member" in (await refused.wait_original()).content
        assert not fake.message(result.id).deleted
        done = await fake.click(result.id, f"cc:del:{job.id}", user_id=it.user_id)
        await done.wait_ack()
        await fake.wait_for(lambda: fake.message(result.id).deleted)
        # a moderator may delete anyone's
        it = await fake.slash("imagine", {"prompt": "theirs", "steps": 1})
        other = await wait_result(fake, it)
        key = bot.engine.recent(limit=1)[0].id
        await fake.click(other.id, f"cc:del:{key}", user_id=fake.moderator_id)
        await fake.wait_for(lambda: fake.message(other.id).deleted)


async def test_count_four_with_two_followups_fits_discords_component_limits(
    fake: FakeDiscord, comfy: FakeComfyUI, tmp_path: Path
) -> None:
    packs = with_followups(tmp_path, "Sharpen")
    settings = make_settings(tmp_path, comfy.url, workflows={"dir": str(packs)})
    async with comfybot(fake, settings) as bot:
        it = await fake.slash("imagine", {"prompt": "four", "steps": 1, "count": 4})
        result = await wait_result(fake, it)  # the fake refuses a layout beyond 5x5
        assert fake.errors == []
        layout = rows(result)
        assert len(layout) <= 5 and all(len(row) <= 5 for row in layout)
        jobs = bot.engine.recent(limit=4)
        wanted = {
            f"cc:fu:{j.id}:0:{j.meta['index'] + 1}:{wf}"
            for j in jobs
            for wf in ("upscale", "sharpen")
        }
        assert wanted <= set(result.custom_ids)
        assert {f"cc:var:{j.id}:{j.meta['index'] + 1}" for j in jobs} <= set(result.custom_ids)


async def test_followups_that_do_not_fit_as_buttons_become_select_menus(
    fake: FakeDiscord, comfy: FakeComfyUI, tmp_path: Path
) -> None:
    packs = with_followups(tmp_path, "Sharpen", "Refine", "Enlarge", "Polish")
    settings = make_settings(tmp_path, comfy.url, workflows={"dir": str(packs)})
    async with comfybot(fake, settings) as bot:
        it = await fake.slash("imagine", {"prompt": "many", "steps": 1, "count": 3})
        result = await wait_result(fake, it)
        assert fake.errors == []
        layout = rows(result)
        assert len(layout) <= 5 and all(len(row) <= 5 for row in layout)
        selects = [c for c in result.iter_components() if c["type"] == 3]
        assert selects, layout
        options = {o["value"] for s in selects for o in s["options"]}
        jobs = sorted(bot.engine.recent(limit=3), key=lambda j: j.meta["index"])
        choice = f"fu:{jobs[2].id}:0:polish"
        assert choice in options
        select = next(s for s in selects if choice in {o["value"] for o in s["options"]})
        picked = await fake.select(result.id, select["custom_id"], [choice])
        await wait_result(fake, picked)
        job = bot.engine.recent(limit=1)[0]
        assert job.workflow == "polish"
        assert (
            fed_image(comfy, comfy.prompts_received[-1])
            == output_images(comfy, jobs[2].prompt_id)[0]
        )


async def test_apps_menu_on_several_images_asks_which_one_privately(
    fake: FakeDiscord, comfy: FakeComfyUI, settings: Settings
) -> None:
    async with comfybot(fake, settings) as bot:
        _, result, jobs = await imagined(fake, bot, {"prompt": "two boats", "steps": 1, "count": 2})
        other = fake.add_member("other")
        menu = await fake.message_command("Upscale", result.id, user_id=other)
        await menu.wait_ack()
        question = await menu.wait_original()
        assert menu.ephemeral and "Which image" in question.content
        [chooser] = [c for c in question.iter_components() if c["type"] == 3]
        assert [o["label"] for o in chooser["options"]] == ["Image 1", "Image 2"]
        assert len(comfy.prompts_received) == 2  # nothing runs before the choice
        picked = await fake.select(question.id, chooser["custom_id"], ["1"], user_id=other)
        await wait_result(fake, picked)
        job = bot.engine.recent(limit=1)[0]
        assert job.workflow == "upscale" and job.remix_of == jobs[1].id
        body = comfy.prompts_received[-1]
        assert fed_image(comfy, body) == output_images(comfy, jobs[1].prompt_id)[0]


async def test_a_followup_pack_added_later_gets_its_apps_menu_without_a_restart(
    fake: FakeDiscord, comfy: FakeComfyUI, tmp_path: Path
) -> None:
    packs = with_followups(tmp_path)
    settings = make_settings(tmp_path, comfy.url, workflows={"dir": str(packs)})
    async with comfybot(fake, settings) as bot:
        menus = {c["name"] for c in fake.commands if c.get("type") == 3}
        assert menus == {"Upscale"}
        pack = (WORKFLOWS / "upscale.yaml").read_text(encoding="utf-8")
        pack = pack.replace("label: Upscale", "label: Sharpen").replace("command: upscale", "")
        (packs / "sharpen.yaml").write_text(pack)
        bot.engine.reload_workflows()
        await bot.workflows_changed()
        menus = {c["name"] for c in fake.commands if c.get("type") == 3 and c.get("guild_id")}
        assert menus == {"Upscale", "Sharpen"}
        posted = fake.post(files=[("p.png", png("navy"), "image/png")])
        it = await fake.message_command("Sharpen", posted.id)
        await wait_result(fake, it)
        assert bot.engine.recent(limit=1)[0].workflow == "sharpen"
