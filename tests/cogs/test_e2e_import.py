"""End to end: `/workflows import` (preview, Save, Cancel) and `/workflows export` (issue 7)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bot.settings import Settings
from tests.conftest import WORKFLOWS, make_settings, shipped_copy
from tests.e2e import answer, comfybot, wait_result
from tests.fakes.comfyui import FakeComfyUI
from tests.fakes.discord import FakeDiscord, FakeInteraction, FakeMessage
from tests.workflows.test_graph import image_input, txt2img_ui_export, ui_node
from tests.workflows.test_repair import turbo_graph

REFUSAL = "Only moderators"
NIGHT_SKY_YAML = b"""\
title: Night sky
command: nightsky
params:
  prompt: {type: text, node: Positive, input: text, required: true}
  seed: {type: seed, node: KSampler, input: seed}
  steps: {type: int, node: KSampler, input: steps, default: 2, min: 1, max: 12}
"""


@pytest.fixture
def packs(tmp_path: Path) -> Path:
    return shipped_copy(tmp_path / "packs")


def settings_for(tmp_path: Path, comfy: FakeComfyUI, fake: FakeDiscord, packs: Path) -> Settings:
    return make_settings(
        tmp_path, comfy.url, workflows={"dir": str(packs)}, discord={"dev_guild": fake.guild_id}
    )


def ui_file(name: str = "Night Sky (v2).json") -> tuple[str, bytes, str]:
    return (name, json.dumps(txt2img_ui_export()).encode(), "application/json")


async def start_import(
    fake: FakeDiscord, options: dict[str, Any], *, user_id: int | None = None
) -> tuple[FakeInteraction, FakeMessage]:
    it = await fake.slash(
        "workflows import", options, user_id=fake.moderator_id if user_id is None else user_id
    )
    await it.wait_ack()
    message = await it.wait_original(
        lambda m: not m.loading and (bool(m.embeds) or "❌" in m.content)
    )
    assert message is not None
    return it, message


async def press(fake: FakeDiscord, it: FakeInteraction, message: FakeMessage, label: str) -> str:
    button = message.button(label)
    assert button is not None, message.components
    await fake.click(message.id, button["custom_id"], user_id=fake.moderator_id)
    done = await it.wait_original(lambda m: not m.embeds and bool(m.content), timeout=15)
    assert done is not None
    return done.content


def files_of(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


async def offered(fake: FakeDiscord) -> set[str]:
    choices = await fake.autocomplete("imagine", {"prompt": "x"}, "workflow")
    return {c["value"] for c in choices}


async def test_preview_then_save_makes_a_command_that_runs_at_once(
    fake: FakeDiscord, comfy: FakeComfyUI, tmp_path: Path, packs: Path
) -> None:
    before = files_of(packs)
    async with comfybot(fake, settings_for(tmp_path, comfy, fake, packs)) as bot:
        it, preview = await start_import(
            fake,
            {
                "file": ui_file(),
                "yaml": ("night.yaml", NIGHT_SKY_YAML, "application/x-yaml"),
                "name": "night-sky",
            },
        )
        assert it.ephemeral
        embed = preview.embeds[0]
        assert embed["title"] == "Import night-sky — Night sky"
        description = embed["description"]
        assert '**`prompt`** (text, required)\n→ sets 6 "Positive" (CLIPTextEncode).text' in (
            description
        )
        assert "**`steps`** (whole number, required" not in description
        assert (
            "between 1 and 12; default `2`" in description and "3 (KSampler).steps" in description
        )
        assert files_of(packs) == before  # nothing written by the preview
        assert "night-sky" not in await offered(fake)

        saved = await press(fake, it, preview, "Save")
        assert "Saved **night-sky**" in saved and "`/nightsky`" in saved
        assert files_of(packs) == sorted([*before, "night-sky.json", "night-sky.yaml"])
        assert "night-sky" in await offered(fake)
        assert fake.command("nightsky")["name"] == "nightsky"
        assert [e.action for e in bot.policy.audit_log(str(fake.guild_id))] == ["import"]

        run = await fake.slash("nightsky", {"prompt": "stars over a lake", "steps": 1})
        result = await wait_result(fake, run)
        assert result.attachments and "ready" in result.content
        sent = comfy.prompts_received[-1]["prompt"]
        assert sent["6"]["inputs"]["text"] == "stars over a lake"
        assert sent["3"]["inputs"]["steps"] == 1

        again = await fake.slash("imagine", {"prompt": "a comet", "workflow": "night-sky"})
        assert (await wait_result(fake, again)).attachments


async def test_a_file_alone_gets_a_derived_name_and_detected_options(
    fake: FakeDiscord, comfy: FakeComfyUI, tmp_path: Path, packs: Path
) -> None:
    async with comfybot(fake, settings_for(tmp_path, comfy, fake, packs)):
        it, preview = await start_import(fake, {"file": ui_file()})
        embed = preview.embeds[0]
        assert embed["title"].startswith("Import night-sky-v2 — ")
        names = [f["name"] for f in embed.get("fields", [])]
        assert "Notes" in names and "Missing node classes" not in " ".join(names)
        for option in ("prompt", "negative", "seed", "steps", "cfg", "width", "sampler"):
            assert f"**`{option}`**" in embed["description"], option
        assert "Saved **night-sky-v2**" in await press(fake, it, preview, "Save")
        assert "night-sky-v2" in await offered(fake)


async def test_cancel_leaves_nothing_behind(
    fake: FakeDiscord, comfy: FakeComfyUI, tmp_path: Path, packs: Path
) -> None:
    before = files_of(packs)
    async with comfybot(fake, settings_for(tmp_path, comfy, fake, packs)) as bot:
        commands_before = sorted(c["name"] for c in fake.commands)
        it, preview = await start_import(
            fake, {"file": ui_file(), "yaml": ("n.yaml", NIGHT_SKY_YAML, "text/yaml")}
        )
        assert await press(fake, it, preview, "Cancel") == "Import cancelled; nothing was saved."
        assert files_of(packs) == before
        assert "night-sky-v2" not in bot.engine.workflows
        assert "night-sky-v2" not in await offered(fake)
        assert sorted(c["name"] for c in fake.commands) == commands_before
        assert bot.policy.audit_log(str(fake.guild_id)) == []


async def test_non_moderators_are_refused(
    fake: FakeDiscord, comfy: FakeComfyUI, tmp_path: Path, packs: Path
) -> None:
    before = files_of(packs)
    async with comfybot(fake, settings_for(tmp_path, comfy, fake, packs)):
        it = await fake.slash("workflows import", {"file": ui_file()}, force=True)
        await it.wait_ack()
        refused = await it.wait_original(lambda m: not m.loading)
        assert refused is not None and it.ephemeral and REFUSAL in refused.content
        it = await fake.slash("workflows export", {"name": "sd15-txt2img"}, force=True)
        await it.wait_ack()
        export = await it.wait_original(lambda m: not m.loading)
        assert export is not None and REFUSAL in export.content and not export.attachments
        assert files_of(packs) == before


async def test_export_gives_the_pack_back_as_attachments(
    fake: FakeDiscord, comfy: FakeComfyUI, tmp_path: Path, packs: Path
) -> None:
    async with comfybot(fake, settings_for(tmp_path, comfy, fake, packs)):
        it, message = await answer(
            fake, "workflows export", {"name": "sd15-txt2img"}, user_id=fake.moderator_id
        )
        assert it.ephemeral
        for name in ("sd15-txt2img.json", "sd15-txt2img.yaml"):
            attachment = message.attachment(name)
            assert attachment is not None and attachment.data == (WORKFLOWS / name).read_bytes()
        _, unknown = await answer(
            fake, "workflows export", {"name": "nope"}, user_id=fake.moderator_id
        )
        assert "There is no workflow called `nope`" in unknown.content


@pytest.mark.parametrize(
    ("upload", "expected"),
    [
        (
            ("notes.json", b"this is not json", "application/json"),
            "notes.json: line 1: is not JSON",
        ),
        (("card.json", b'{"name": "Aria"}', "application/json"), "is not a ComfyUI workflow"),
        (("big.json", b"{" + b" " * (5 * 1024 * 1024) + b"}", "application/json"), "is too big"),
        (("sd15-txt2img.json", b"{}", "application/json"), "'sd15-txt2img' already exists"),
    ],
)
async def test_bad_files_get_a_clear_error(
    fake: FakeDiscord,
    comfy: FakeComfyUI,
    tmp_path: Path,
    packs: Path,
    upload: tuple[str, bytes, str],
    expected: str,
) -> None:
    before = files_of(packs)
    async with comfybot(fake, settings_for(tmp_path, comfy, fake, packs)):
        it = await fake.slash("workflows import", {"file": upload}, user_id=fake.moderator_id)
        await it.wait_ack()
        message = await it.wait_original(lambda m: not m.loading)
        assert message is not None and it.ephemeral
        assert expected in message.content and "Traceback" not in message.content
        assert not message.components
    assert files_of(packs) == before


async def test_unknown_classes_are_listed_and_save_is_disabled(
    fake: FakeDiscord, comfy: FakeComfyUI, tmp_path: Path, packs: Path
) -> None:
    graph = json.loads((WORKFLOWS / "sd15-txt2img.json").read_text())
    graph["20"] = {"class_type": "FaceDetailer", "inputs": {"image": ["8", 0]}}
    graph["21"] = {"class_type": "UltimateSDUpscale", "inputs": {"image": ["20", 0]}}
    upload = ("faces.json", json.dumps(graph).encode(), "application/json")
    async with comfybot(fake, settings_for(tmp_path, comfy, fake, packs)):
        it, preview = await start_import(fake, {"file": upload})
        fields = {f["name"]: f["value"] for f in preview.embeds[0]["fields"]}
        missing = fields["Missing node classes (install them, or update ComfyUI)"]
        assert missing == "`FaceDetailer`, `UltimateSDUpscale`"
        save = preview.button("Save")
        assert save is not None and save.get("disabled") is True
        assert await press(fake, it, preview, "Cancel") == "Import cancelled; nothing was saved."


async def test_a_huge_preview_fits_in_one_embed(
    fake: FakeDiscord, comfy: FakeComfyUI, tmp_path: Path, packs: Path
) -> None:
    graph = json.loads((WORKFLOWS / "sd15-txt2img.json").read_text())
    for index in range(200):
        graph[str(100 + index)] = {
            "class_type": f"SomeVeryLongCustomNodeClassName{index:03d}",
            "inputs": {"value": "x" * 50},
        }
    upload = ("many.json", json.dumps(graph).encode(), "application/json")
    async with comfybot(fake, settings_for(tmp_path, comfy, fake, packs)):
        _, preview = await start_import(fake, {"file": upload})
        embed = preview.embeds[0]
        total = len(embed["title"]) + len(embed["description"]) + len(embed["footer"]["text"])
        total += sum(len(f["name"]) + len(f["value"]) for f in embed["fields"])
        assert total <= 6000
        assert embed["fields"][0]["value"].startswith("`SomeVeryLongCustomNodeClassName000`")
        assert embed["fields"][0]["value"].endswith("…")
        assert "**`prompt`**" in embed["description"]


async def test_without_a_dev_guild_the_server_holding_the_commands_is_re_synced(
    fake: FakeDiscord, comfy: FakeComfyUI, tmp_path: Path, packs: Path
) -> None:
    settings = make_settings(tmp_path, comfy.url, workflows={"dir": str(packs)})
    async with comfybot(fake, settings):  # the test harness copies the commands to the server
        it, preview = await start_import(
            fake, {"file": ui_file(), "yaml": ("n.yaml", NIGHT_SKY_YAML, "text/yaml")}
        )
        assert "Saved" in await press(fake, it, preview, "Save")
        run = await fake.slash("nightsky", {"prompt": "stars", "steps": 1})
        assert (await wait_result(fake, run)).attachments


async def test_a_ui_save_with_an_unknown_class_names_it(
    fake: FakeDiscord, comfy: FakeComfyUI, tmp_path: Path, packs: Path
) -> None:
    export = txt2img_ui_export()
    export["nodes"].append(ui_node(20, "FancyUpscaler", image_input(30)))
    export["links"].append([30, 8, 0, 20, 0, "IMAGE"])
    upload = ("fancy.json", json.dumps(export).encode(), "application/json")
    before = files_of(packs)
    async with comfybot(fake, settings_for(tmp_path, comfy, fake, packs)):
        _, message = await start_import(fake, {"file": upload})
        assert message.content.startswith("❌") and "FancyUpscaler" in message.content
        assert not message.components
    assert files_of(packs) == before


async def test_a_saved_pack_obeys_the_policy_and_survives_a_restart(
    fake: FakeDiscord, comfy: FakeComfyUI, tmp_path: Path, packs: Path
) -> None:
    spicy = NIGHT_SKY_YAML.replace(b"command: nightsky\n", b"nsfw: true\n")
    settings = settings_for(tmp_path, comfy, fake, packs)
    async with comfybot(fake, settings):
        it, preview = await start_import(
            fake, {"file": ui_file("spicy.json"), "yaml": ("s.yaml", spicy, "text/yaml")}
        )
        assert "Saved **spicy**" in await press(fake, it, preview, "Save")
        nsfw = await fake.autocomplete(
            "imagine", {"prompt": "x"}, "workflow", channel_id=fake.nsfw_channel_id
        )
        assert "spicy" in {c["value"] for c in nsfw}
        assert "spicy" not in await offered(fake)
        refused = await fake.slash("imagine", {"prompt": "x", "workflow": "spicy"})
        message = await refused.wait_original(lambda m: not m.loading)
        assert message is not None and "age-restricted" in message.content, message.content
        _, disabled = await answer(
            fake, "workflows disable", {"name": "spicy"}, user_id=fake.moderator_id
        )
        assert "disabled" in disabled.content
    async with comfybot(fake, settings) as bot:  # a restart loads it from its files
        assert "spicy" in bot.engine.workflows
        nsfw = await fake.autocomplete(
            "imagine", {"prompt": "x"}, "workflow", channel_id=fake.nsfw_channel_id
        )
        assert "spicy" not in {c["value"] for c in nsfw}  # and the server's choice holds


async def test_an_unanswered_preview_expires_and_leaves_nothing(
    fake: FakeDiscord,
    comfy: FakeComfyUI,
    tmp_path: Path,
    packs: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from cogs import _packs

    monkeypatch.setattr(_packs, "PREVIEW_TIMEOUT", 0.3)
    before = files_of(packs)
    async with comfybot(fake, settings_for(tmp_path, comfy, fake, packs)) as bot:
        it, _ = await start_import(fake, {"file": ui_file()})
        expired = await it.wait_original(lambda m: "expired" in m.content, timeout=10)
        assert expired is not None and not expired.components and not expired.embeds
        assert "nothing was saved" in expired.content
        assert files_of(packs) == before and "night-sky-v2" not in bot.engine.workflows


async def test_an_old_export_is_repaired_in_the_preview_and_runs_once_saved(
    fake: FakeDiscord, comfy: FakeComfyUI, tmp_path: Path, packs: Path
) -> None:
    upload = ("SD Turbo.json", json.dumps(turbo_graph()).encode(), "application/json")
    async with comfybot(fake, settings_for(tmp_path, comfy, fake, packs)):
        it, preview = await start_import(fake, {"file": upload})
        fields = {f["name"]: f["value"] for f in preview.embeds[0]["fields"]}
        repaired = fields["Repaired (as ComfyUI's editor would)"]
        assert repaired == "filled `SDTurboScheduler.denoise` with 1.0 on node 20"
        assert "Saved **sd-turbo**" in await press(fake, it, preview, "Save")
        saved = json.loads((packs / "sd-turbo.json").read_text(encoding="utf-8"))
        assert saved["20"]["inputs"]["denoise"] == 1.0

        run = await fake.slash("imagine", {"prompt": "a fox", "workflow": "sd-turbo"})
        result = await wait_result(fake, run)
        assert result.attachments and "ready" in result.content
        assert comfy.prompts_received[-1]["prompt"]["20"]["inputs"]["denoise"] == 1.0
