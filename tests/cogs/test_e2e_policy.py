"""End to end: moderators choose workflows, caps, banned words and NSFW packs (issue 4)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from bot.settings import Settings
from tests.conftest import WORKFLOWS, make_settings, txt2img_pack
from tests.e2e import answer, comfybot, wait_result
from tests.fakes.comfyui import FakeComfyUI
from tests.fakes.discord import CommandUnavailable, FakeDiscord

REFUSAL = "Only moderators"


def make_packs(tmp_path: Path, **extra: str) -> Path:
    """A workflows folder: the shipped packs plus `name=yaml` copies of the txt2img graph."""
    packs = tmp_path / "packs"
    packs.mkdir()
    for file in WORKFLOWS.glob("sd15-*"):
        shutil.copy(file, packs / file.name)
    for name, yaml in extra.items():
        txt2img_pack(packs, name, yaml)
    return packs


PLAIN_PACK = """\
title: {title}
graph: {name}.json
nsfw: {nsfw}
params:
  prompt: {{type: text, node: Positive, input: text, required: true}}
  seed: {{type: seed, node: KSampler, input: seed}}
  steps: {{type: int, node: KSampler, input: steps, default: 2, min: 1, max: 50}}
"""


def pack(name: str, title: str, *, nsfw: bool = False) -> str:
    return PLAIN_PACK.format(name=name, title=title, nsfw=str(nsfw).lower())


@pytest.fixture
def alt_settings(tmp_path: Path, comfy: FakeComfyUI) -> Settings:
    """Settings whose workflows are the shipped packs and `alt`, titled "Alternative"."""
    packs = make_packs(tmp_path, alt=pack("alt", "Alternative"))
    return make_settings(tmp_path, comfy.url, workflows={"dir": str(packs)})


async def offered(fake: FakeDiscord, *, channel_id: int | None = None) -> set[str]:
    choices = await fake.autocomplete("imagine", {"prompt": "x"}, "workflow", channel_id=channel_id)
    return {c["value"] for c in choices}


# who may change policy ----------------------------------------------------------------------------
async def test_non_moderator_is_refused_and_nothing_changes(
    fake: FakeDiscord, comfy: FakeComfyUI, settings: Settings
) -> None:
    async with comfybot(fake, settings) as bot:
        attempts = [
            ("workflows disable", {"name": "sd15-img2img"}),
            ("workflows default", {"name": "sd15-img2img"}),
            ("workflows limits set", {"name": "max_count", "value": "10"}),
            ("workflows limits cap", {"param": "steps", "maximum": 5}),
            ("workflows banned add", {"word": "cat"}),
            ("workflows moderators add", {"role": fake.moderator_role_id}),
            ("workflows audit", {}),
        ]
        for name, options in attempts:
            # members do not see the moderator commands (default_member_permissions)...
            with pytest.raises(CommandUnavailable):
                await fake.slash(name, options)
            # ...and a client that sends one anyway is refused by the bot itself
            it = await fake.slash(name, options, force=True)
            await it.wait_ack()
            message = await it.wait_original()
            assert it.ephemeral, name
            assert REFUSAL in message.content, (name, message.content)
        assert await offered(fake) == {"sd15-txt2img", "sd15-img2img"}
        guild = str(fake.guild_id)
        assert bot.policy.default_workflow(guild, str(fake.channel_id)) == "sd15-txt2img"
        assert bot.policy.limits(guild).max_count == 4
        assert bot.policy.caps(guild) == {} and bot.policy.banned_words(guild) == []
        assert bot.policy.moderator_roles(guild) == []
        assert bot.policy.audit_log(guild) == []
        # and a prompt with the word that was not banned still runs
        it = await fake.slash("imagine", {"prompt": "a cat", "steps": 1})
        assert (await wait_result(fake, it)).attachments


async def test_role_added_by_a_moderator_may_change_policy(
    fake: FakeDiscord, comfy: FakeComfyUI, settings: Settings
) -> None:
    helpers = fake.add_role("Helpers")
    helper = fake.add_member("helper", roles=[helpers])
    async with comfybot(fake, settings):
        with pytest.raises(CommandUnavailable):  # members do not see /workflows
            await fake.slash("workflows disable", {"name": "sd15-img2img"}, user_id=helper)
        # the server's administrator lets the role see /workflows (Server Settings → Integrations)
        fake.set_command_permission("workflows", helpers, allow=True)
        _, refused = await answer(
            fake, "workflows disable", {"name": "sd15-img2img"}, user_id=helper
        )
        assert REFUSAL in refused.content  # seeing the command is not the right to use it
        assert "sd15-img2img" in await offered(fake)

        _, added = await answer(
            fake, "workflows moderators add", {"role": helpers}, user_id=fake.moderator_id
        )
        assert f"<@&{helpers}>" in added.content
        it, done = await answer(fake, "workflows disable", {"name": "sd15-img2img"}, user_id=helper)
        assert it.ephemeral and "disabled" in done.content
        assert await offered(fake) == {"sd15-txt2img"}

        await answer(fake, "workflows moderators remove", {"role": helpers}, user_id=fake.owner_id)
        _, again = await answer(fake, "workflows enable", {"name": "sd15-img2img"}, user_id=helper)
        assert REFUSAL in again.content
        assert await offered(fake) == {"sd15-txt2img"}


# what a channel may use ---------------------------------------------------------------------------
async def test_disabled_workflow_leaves_autocomplete_and_is_refused_when_typed(
    fake: FakeDiscord, comfy: FakeComfyUI, settings: Settings
) -> None:
    mod = fake.moderator_id
    async with comfybot(fake, settings) as bot:
        await answer(fake, "workflows disable", {"name": "sd15-txt2img"}, user_id=mod)
        assert await offered(fake) == {"sd15-img2img"}
        it, refused = await answer(fake, "imagine", {"prompt": "x", "workflow": "sd15-txt2img"})
        assert it.ephemeral
        assert "`sd15-txt2img` is not enabled in this channel" in refused.content
        # the default is refused just the same when it is disabled
        it, refused = await answer(fake, "imagine", {"prompt": "x"})
        assert it.ephemeral and "not enabled" in refused.content
        _, listing = await answer(fake, "catalog list")
        assert "sd15-img2img" in listing.content and "sd15-txt2img" not in listing.content
        _, info = await answer(fake, "catalog info", {"name": "sd15-txt2img"})
        assert "Not enabled in this channel" in info.content and "`steps`" in info.content
        assert bot.engine.recent() == []

        await answer(fake, "workflows enable", {"name": "sd15-txt2img"}, user_id=mod)
        assert await offered(fake) == {"sd15-img2img", "sd15-txt2img"}
        it = await fake.slash("imagine", {"prompt": "x", "workflow": "sd15-txt2img", "steps": 1})
        assert (await wait_result(fake, it)).attachments


async def test_channel_setting_overrides_the_server_setting(
    fake: FakeDiscord, comfy: FakeComfyUI, settings: Settings
) -> None:
    mod = fake.moderator_id
    art = fake.add_channel("art")
    async with comfybot(fake, settings):
        await answer(fake, "workflows disable", {"name": "sd15-img2img"}, user_id=mod)
        _, message = await answer(
            fake, "workflows enable", {"name": "sd15-img2img", "channel": art}, user_id=mod
        )
        assert f"<#{art}>" in message.content
        assert "sd15-img2img" not in await offered(fake)
        assert "sd15-img2img" in await offered(fake, channel_id=art)

        # and the other way round: enabled server-wide, disabled in one channel
        await answer(
            fake, "workflows disable", {"name": "sd15-txt2img", "channel": art}, user_id=mod
        )
        assert "sd15-txt2img" in await offered(fake)
        assert "sd15-txt2img" not in await offered(fake, channel_id=art)
        it, refused = await answer(
            fake, "imagine", {"prompt": "x", "workflow": "sd15-txt2img"}, channel_id=art
        )
        assert it.ephemeral and "not enabled" in refused.content
        it = await fake.slash("imagine", {"prompt": "x", "steps": 1})
        assert (await wait_result(fake, it)).attachments


async def test_default_changes_what_imagine_uses(fake: FakeDiscord, alt_settings: Settings) -> None:
    mod = fake.moderator_id
    art = fake.add_channel("art")
    async with comfybot(fake, alt_settings) as bot:
        _, message = await answer(
            fake, "workflows default", {"name": "alt", "channel": art}, user_id=mod
        )
        assert "`alt` is now the default" in message.content
        it = await fake.slash("imagine", {"prompt": "in art", "steps": 1}, channel_id=art)
        await wait_result(fake, it)
        it = await fake.slash("imagine", {"prompt": "in general", "steps": 1})
        await wait_result(fake, it)
        by_prompt = {j.values["prompt"]: j.workflow for j in bot.engine.recent()}
        assert by_prompt == {"in art": "alt", "in general": "sd15-txt2img"}
        _, listing = await answer(fake, "catalog list", channel_id=art)
        assert "**alt** — Alternative · **default**" in listing.content


async def test_policy_survives_a_bot_restart(fake: FakeDiscord, alt_settings: Settings) -> None:
    mod = fake.moderator_id
    helpers = fake.add_role("Helpers")
    helper = fake.add_member("helper", roles=[helpers])
    fake.set_command_permission("workflows", helpers, allow=True)  # Server Settings → Integrations
    async with comfybot(fake, alt_settings):
        await answer(fake, "workflows disable", {"name": "sd15-img2img"}, user_id=mod)
        await answer(fake, "workflows default", {"name": "alt"}, user_id=mod)
        await answer(fake, "workflows moderators add", {"role": helpers}, user_id=mod)
        await answer(fake, "workflows limits cap", {"param": "steps", "maximum": 3}, user_id=mod)
    async with comfybot(fake, alt_settings) as bot:
        assert await offered(fake) == {"alt", "sd15-txt2img"}
        _, capped = await answer(fake, "imagine", {"prompt": "x", "steps": 4})
        assert "`steps`" in capped.content and "3" in capped.content
        it = await fake.slash("imagine", {"prompt": "restarted", "steps": 1})
        await wait_result(fake, it)
        assert bot.engine.recent(limit=1)[0].workflow == "alt"
        _, allowed = await answer(
            fake, "workflows enable", {"name": "sd15-img2img"}, user_id=helper
        )
        assert "enabled" in allowed.content
        _, audit = await answer(fake, "workflows audit", user_id=mod)
        assert audit.content.count(f"<@{mod}>") == 4 and f"<@{helper}>" in audit.content


async def test_audit_log_records_who_did_what(
    fake: FakeDiscord, comfy: FakeComfyUI, settings: Settings
) -> None:
    mod, owner = fake.moderator_id, fake.owner_id
    art = fake.add_channel("art")
    async with comfybot(fake, settings):
        await answer(fake, "workflows disable", {"name": "sd15-img2img"}, user_id=mod)
        await answer(
            fake, "workflows enable", {"name": "sd15-img2img", "channel": art}, user_id=owner
        )
        await answer(fake, "workflows limits set", {"name": "max_count", "value": "2"}, user_id=mod)
        await answer(fake, "workflows banned add", {"word": "Secretword"}, user_id=owner)
        it, audit = await answer(fake, "workflows audit", user_id=mod)
        assert it.ephemeral
        lines = audit.content.splitlines()
        assert len(lines) == 4
        # newest first: who, what, when
        assert f"<@{owner}>" in lines[0] and "banned add" in lines[0]
        assert "secretword" not in audit.content.lower()  # the list itself stays private
        assert f"<@{mod}>" in lines[1] and "max_count = 2" in lines[1]
        assert f"<@{owner}>" in lines[2] and "enable" in lines[2] and f"<#{art}>" in lines[2]
        assert f"<@{mod}>" in lines[3] and "disable" in lines[3] and "server-wide" in lines[3]
        assert all("<t:" in line for line in lines)


# moderator limits -------------------------------------------------------------------------------
async def test_caps_refuse_values_over_them_naming_the_parameter(
    fake: FakeDiscord, comfy: FakeComfyUI, settings: Settings
) -> None:
    mod = fake.moderator_id
    async with comfybot(fake, settings) as bot:
        await answer(fake, "workflows limits cap", {"param": "steps", "maximum": 30}, user_id=mod)
        await answer(
            fake,
            "workflows limits cap",
            {"param": "size", "choices": "square, portrait"},
            user_id=mod,
        )
        it, refused = await answer(fake, "imagine", {"prompt": "x", "steps": 31})
        assert it.ephemeral
        assert "`steps`" in refused.content and "at most 30" in refused.content
        it, refused = await answer(fake, "imagine", {"prompt": "x", "size": "landscape"})
        assert it.ephemeral
        assert "`size`" in refused.content and "square, portrait" in refused.content
        assert bot.engine.recent() == []
        _, shown = await answer(fake, "catalog limits")
        assert "steps" in shown.content and "30" in shown.content
        it = await fake.slash("imagine", {"prompt": "x", "steps": 30, "size": "portrait"})
        await it.wait_ack()
        assert not it.ephemeral
        [job] = bot.engine.recent()
        assert job.values["steps"] == 30 and job.values["size"] == "portrait"
        await bot.engine.cancel(job.id, by="test")
        await wait_result(fake, it)


async def test_cap_applies_to_a_workflow_default_over_it(
    fake: FakeDiscord, comfy: FakeComfyUI, tmp_path: Path
) -> None:
    settings = make_settings(tmp_path, comfy.url)  # sd15-txt2img's default is 20 steps
    async with comfybot(fake, settings) as bot:
        await answer(
            fake,
            "workflows limits cap",
            {"param": "steps", "maximum": 10},
            user_id=fake.moderator_id,
        )
        it, refused = await answer(fake, "imagine", {"prompt": "x"})
        assert it.ephemeral and "`steps`" in refused.content and "at most 10" in refused.content
        assert bot.engine.recent() == []


async def test_banned_word_is_refused_without_echoing_the_list(
    fake: FakeDiscord, comfy: FakeComfyUI, settings: Settings
) -> None:
    mod = fake.moderator_id
    async with comfybot(fake, settings) as bot:
        for word in ("Dragon", "zorblax"):
            it, message = await answer(fake, "workflows banned add", {"word": word}, user_id=mod)
            assert it.ephemeral and word.lower() not in message.content.lower()
        it, refused = await answer(fake, "imagine", {"prompt": "a red DRAGON over hills"})
        assert it.ephemeral
        assert "`prompt`" in refused.content and "not allow" in refused.content
        assert "dragon" not in refused.content.lower() and "zorblax" not in refused.content
        it, refused = await answer(fake, "imagine", {"prompt": "cat", "negative": "zorblax!"})
        assert "`negative`" in refused.content and "zorblax" not in refused.content
        assert bot.engine.recent() == []
        it = await fake.slash("workflows banned list", force=True)  # a member, past the client
        listing = await it.wait_original()
        assert REFUSAL in listing.content and "zorblax" not in listing.content
        _, listing = await answer(fake, "workflows banned list", user_id=mod)
        assert "dragon" in listing.content and "zorblax" in listing.content
        # whole words only: a dragonfly is fine
        it = await fake.slash("imagine", {"prompt": "a dragonfly", "steps": 1})
        assert (await wait_result(fake, it)).attachments


async def test_nsfw_workflow_only_in_age_restricted_channels(
    fake: FakeDiscord, comfy: FakeComfyUI, tmp_path: Path
) -> None:
    packs = make_packs(tmp_path, spicy=pack("spicy", "Spicy", nsfw=True))
    settings = make_settings(tmp_path, comfy.url, workflows={"dir": str(packs)})
    async with comfybot(fake, settings) as bot:
        assert "spicy" not in await offered(fake)
        assert "spicy" in await offered(fake, channel_id=fake.nsfw_channel_id)
        it, refused = await answer(fake, "imagine", {"prompt": "x", "workflow": "spicy"})
        assert it.ephemeral and "age-restricted" in refused.content
        _, listing = await answer(fake, "catalog list")
        assert "spicy" not in listing.content
        # a moderator cannot make it the default of a safe channel, nor enable it there
        _, refused = await answer(
            fake, "workflows default", {"name": "spicy"}, user_id=fake.moderator_id
        )
        assert "age-restricted" in refused.content
        assert bot.engine.recent() == []
        it = await fake.slash(
            "imagine",
            {"prompt": "x", "workflow": "spicy", "steps": 1},
            channel_id=fake.nsfw_channel_id,
        )
        assert (await wait_result(fake, it)).attachments
        assert bot.engine.recent(limit=1)[0].workflow == "spicy"


async def test_limits_set_validates_and_applies(
    fake: FakeDiscord, comfy: FakeComfyUI, settings: Settings
) -> None:
    mod = fake.moderator_id
    async with comfybot(fake, settings):
        _, bad = await answer(
            fake, "workflows limits set", {"name": "max_count", "value": "eleven"}, user_id=mod
        )
        assert "`max_count`" in bad.content and "eleven" in bad.content
        _, bad = await answer(
            fake, "workflows limits set", {"name": "max_count", "value": "11"}, user_id=mod
        )
        assert "`max_count`" in bad.content and "10" in bad.content
        _, ok = await answer(
            fake, "workflows limits set", {"name": "max_count", "value": "6"}, user_id=mod
        )
        assert "`max_count` is now 6" in ok.content
        # /imagine count follows the server's limit, not the settings' default of 4
        it = await fake.slash("imagine", {"prompt": "x", "count": 6, "steps": 1})
        message = await wait_result(fake, it)
        assert len(message.attachments) == 6
        _, refused = await answer(fake, "imagine", {"prompt": "x", "count": 7})
        assert "`count`" in refused.content and "6" in refused.content


# Discord's conventions ----------------------------------------------------------------------------
async def test_commands_work_in_servers_only_and_moderator_ones_are_hidden_from_members(
    fake: FakeDiscord, comfy: FakeComfyUI, settings: Settings
) -> None:
    async with comfybot(fake, settings):
        commands = {c["name"]: c for c in fake.commands if c.get("guild_id")}
        assert {"imagine", "catalog", "workflows", "queue"} <= set(commands)
        for name, command in commands.items():
            assert command["contexts"] == [0], name  # servers, not DMs
            assert command["integration_types"] == [0], name
        manage_server = str(1 << 5)
        assert commands["workflows"]["default_member_permissions"] == manage_server
        for name in ("imagine", "catalog", "queue", "cancel", "history"):
            assert commands[name]["default_member_permissions"] is None, name
        # a member sees /catalog (what the channel allows), a moderator also sees /workflows
        _, listing = await answer(fake, "catalog list")
        assert "sd15-txt2img" in listing.content
        _, shown = await answer(fake, "workflows limits show", user_id=fake.moderator_id)
        assert "max_count" in shown.content
