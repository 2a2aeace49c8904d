"""The fake Discord against the real discord.py client: round trips and every enforced limit."""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import AsyncIterator, Awaitable
from typing import Any

import aiohttp
import discord
import pytest
import pytest_asyncio
from discord import app_commands
from discord.ext import commands

from tests.fakes.discord import (
    API_PREFIX,
    CommandUnavailable,
    FakeDiscord,
    FakeDiscordError,
    FakeInteraction,
    InteractionTimeout,
)
from tests.fakes.discord_fixtures import installed_fake, running_bot

PNG = (
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00"
    b"\x1f\x15\xc4\x89\x00\x00\x00\rIDATx\x9cc\xf8\xcf\xc0\xf0\x1f\x00\x05\x00\x01\xff\x89\x99"
    b"=\x1d\x00\x00\x00\x00IEND\xaeB`\x82"
)


class JobButton(discord.ui.DynamicItem[discord.ui.Button[Any]], template=r"job:(?P<job>\d+)"):
    """A persistent button: all its state is in the custom_id."""

    def __init__(self, job: int) -> None:
        super().__init__(
            discord.ui.Button(
                label="Again", custom_id=f"job:{job}", style=discord.ButtonStyle.primary
            )
        )
        self.job = job

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Button[Any], match: Any
    ) -> JobButton:
        return cls(int(match["job"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        await interaction.response.edit_message(content=f"job {self.job} again", view=None)


class ImportModal(discord.ui.Modal, title="Import a workflow"):
    url: discord.ui.TextInput[Any] = discord.ui.TextInput(label="URL", custom_id="url")

    def __init__(self, record: dict[str, Any]) -> None:
        super().__init__()
        self.record = record

    async def on_submit(self, interaction: discord.Interaction) -> None:
        self.record["modal"] = self.url.value
        await interaction.response.send_message(f"importing {self.url.value}", ephemeral=True)


def job_view(job: int) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    view.add_item(JobButton(job))
    return view


async def outcome(record: dict[str, Any], name: str, call: Awaitable[object]) -> None:
    """Records under `name` the HTTPException `call` raised, or None when it went through."""
    try:
        await call
    except discord.HTTPException as exc:
        record[name] = exc
    else:
        record[name] = None


def make_bot(record: dict[str, Any]) -> commands.Bot:
    """A small real bot exercising what comfycord needs; results land in ``record``."""
    bot = commands.Bot(
        command_prefix="!", intents=discord.Intents.default(), guild_ready_timeout=0.1
    )

    async def setup_hook() -> None:
        bot.add_dynamic_items(JobButton)

    bot.setup_hook = setup_hook  # type: ignore[method-assign]

    @bot.tree.command(description="Echo typed options")
    @app_commands.describe(text="Some text")
    async def echo(
        interaction: discord.Interaction,
        text: str,
        count: int = 1,
        loud: bool = False,
        ratio: float = 0.5,
        who: discord.Member | None = None,
        where: discord.TextChannel | None = None,
        role: discord.Role | None = None,
        image: discord.Attachment | None = None,
    ) -> None:
        record["echo"] = {
            "text": text,
            "count": count,
            "loud": loud,
            "ratio": ratio,
            "who": who,
            "where": where,
            "role": role,
            "image": image,
            "image_bytes": await image.read() if image else None,
            "filesize_limit": interaction.filesize_limit,
            "permissions": interaction.permissions,
        }
        await interaction.response.send_message(f"{text} x{count}")

    async def flavors(
        interaction: discord.Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        names = ["vanilla", "chocolate", "strawberry", "vanilla bean"]
        return [app_commands.Choice(name=n, value=n) for n in names if current in n]

    @bot.tree.command(description="Pick a flavor")
    @app_commands.autocomplete(flavor=flavors)
    async def pick(interaction: discord.Interaction, flavor: str) -> None:
        await interaction.response.send_message(f"picked {flavor}")

    async def too_many(
        interaction: discord.Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        return [app_commands.Choice(name=f"c{i}", value=f"c{i}") for i in range(30)]

    @bot.tree.command(description="Autocomplete with too many choices")
    @app_commands.autocomplete(thing=too_many)
    async def greedy(interaction: discord.Interaction, thing: str) -> None:
        await interaction.response.send_message(thing)

    wf = app_commands.Group(name="wf", description="Workflows")

    @wf.command(name="enable", description="Enable a workflow")
    async def wf_enable(interaction: discord.Interaction, name: str) -> None:
        await interaction.response.send_message(f"enabled {name}", ephemeral=True)

    bot.tree.add_command(wf)

    @bot.tree.command(description="Moderators only")
    @app_commands.default_permissions(manage_guild=True)
    async def modonly(interaction: discord.Interaction) -> None:
        await interaction.response.send_message("ok")

    @bot.tree.command(description="Defer, edit with files, follow up")
    async def render(interaction: discord.Interaction) -> None:
        await interaction.response.defer(thinking=True)
        msg = await interaction.edit_original_response(
            content="step 1", attachments=[discord.File(io.BytesIO(PNG), "a.png")]
        )
        msg = await msg.edit(
            content="step 2",
            attachments=[msg.attachments[0], discord.File(io.BytesIO(b"log"), "b.txt")],
        )
        await msg.edit(
            content="done",
            embed=discord.Embed(title="Result").set_image(url="attachment://c.png"),
            attachments=[discord.File(io.BytesIO(PNG), "c.png")],
        )
        extra = await interaction.followup.send(
            "extra", file=discord.File(io.BytesIO(b"x" * 10), "d.bin"), ephemeral=True, wait=True
        )
        await interaction.followup.edit_message(extra.id, content="extra!")
        gone = await interaction.followup.send("to delete", wait=True)
        await gone.delete()
        record["render"] = "done"

    @bot.tree.command(description="Defer then answer with a follow-up")
    async def think(interaction: discord.Interaction) -> None:
        await interaction.response.defer(thinking=True, ephemeral=True)
        await interaction.followup.send("thought about it")
        record["think"] = (await interaction.original_response()).content

    @bot.tree.command(description="Answers, then deletes the answer")
    async def vanish(interaction: discord.Interaction) -> None:
        await interaction.response.send_message("now you see me")
        await interaction.delete_original_response()
        try:
            await interaction.original_response()
        except discord.NotFound as exc:
            record["vanish"] = exc

    @bot.tree.command(description="Opens a modal")
    async def importer(interaction: discord.Interaction) -> None:
        await interaction.response.send_modal(ImportModal(record))

    @bot.tree.command(description="Offers a select menu")
    async def size(interaction: discord.Interaction) -> None:
        view = discord.ui.View()
        menu: discord.ui.Select[Any] = discord.ui.Select(
            custom_id="size",
            options=[discord.SelectOption(label=v) for v in ("512", "768", "1024")],
        )

        async def chosen(inner: discord.Interaction) -> None:
            record["size"] = menu.values
            await inner.response.edit_message(content=f"size {menu.values[0]}", view=None)

        menu.callback = chosen  # type: ignore[method-assign]
        view.add_item(menu)
        await interaction.response.send_message("pick a size", view=view)

    @bot.tree.command(description="Post a persistent button")
    async def post(interaction: discord.Interaction, job: int) -> None:
        await interaction.response.send_message(f"job {job}", view=job_view(job))

    @bot.tree.command(description="Post to the channel with the bot token")
    async def announce(interaction: discord.Interaction) -> None:
        await interaction.response.defer(ephemeral=True)
        assert isinstance(interaction.channel, discord.TextChannel)
        sent = await interaction.channel.send(
            "announcement", file=discord.File(io.BytesIO(PNG), "e.png")
        )
        await sent.edit(content="announcement (edited)")
        fetched = await interaction.channel.fetch_message(sent.id)
        record["announce"] = (sent.id, fetched.content, await fetched.attachments[0].read())
        await interaction.edit_original_response(content="posted")

    @bot.tree.command(description="Posts twice with one nonce, once with another")
    async def twice(interaction: discord.Interaction) -> None:
        await interaction.response.defer(ephemeral=True)
        assert isinstance(interaction.channel, discord.TextChannel)
        first = await interaction.channel.send("once", nonce="job-1")
        again = await interaction.channel.send("once more", nonce="job-1")
        other = await interaction.channel.send("other", nonce="job-2")
        record["twice"] = (first.id, again.id, other.id, again.content)
        await interaction.edit_original_response(content="sent")

    @bot.tree.command(description="Answers too late")
    async def slow(interaction: discord.Interaction, delay: float) -> None:
        await asyncio.sleep(delay)
        await outcome(record, "slow", interaction.response.send_message("late"))

    @bot.tree.command(description="Edits after the token expired")
    async def expire(interaction: discord.Interaction, delay: float) -> None:
        await interaction.response.defer()
        await asyncio.sleep(delay)
        try:
            await interaction.edit_original_response(content="too late")
        except discord.HTTPException as exc:
            record["expire"] = exc
            assert interaction.channel is not None
            await interaction.channel.send("delivered with the bot token")  # type: ignore[union-attr]
        else:
            record["expire"] = None

    @bot.tree.command(description="Acknowledges twice")
    async def double(interaction: discord.Interaction) -> None:
        record["double"] = await asyncio.gather(
            interaction.response.defer(), interaction.response.defer(), return_exceptions=True
        )

    @bot.tree.command(description="Sends a file of some size")
    async def upload(interaction: discord.Interaction, size: int, files: int = 1) -> None:
        await interaction.response.defer()
        parts = [discord.File(io.BytesIO(b"\0" * size), f"f{i}.bin") for i in range(files)]
        await outcome(
            record, "upload", interaction.edit_original_response(content="files", attachments=parts)
        )

    @bot.tree.command(description="Sends a message of some length")
    async def say(interaction: discord.Interaction, length: int) -> None:
        await outcome(record, "say", interaction.response.send_message("x" * length))

    @bot.tree.command(description="Sends a button with a long custom_id")
    async def longid(interaction: discord.Interaction, length: int) -> None:
        view = discord.ui.View()
        view.add_item(discord.ui.Button(label="b", custom_id="c" * length))
        await outcome(record, "longid", interaction.response.send_message("button", view=view))

    @bot.tree.command(description="Edits its response many times")
    async def progress(interaction: discord.Interaction, edits: int) -> None:
        await interaction.response.defer()
        for step in range(edits):
            await interaction.edit_original_response(content=f"step {step}")
        record["progress"] = "done"

    @bot.event
    async def on_resumed() -> None:
        record["resumed"] = record.get("resumed", 0) + 1

    return bot


@pytest_asyncio.fixture
async def record() -> dict[str, Any]:
    return {}


@pytest_asyncio.fixture
async def bot(fake: FakeDiscord, record: dict[str, Any]) -> AsyncIterator[commands.Bot]:
    async with running_bot(make_bot(record), fake) as running:
        yield running


async def wait_key(fake: FakeDiscord, record: dict[str, Any], key: str) -> Any:
    await fake.wait_for(lambda: key in record, timeout=5.0)
    return record[key]


async def slash_and_wait(
    fake: FakeDiscord, record: dict[str, Any], command: str, options: dict[str, Any]
) -> tuple[FakeInteraction, Any]:
    """Runs a slash command and waits for what the bot's handler of it recorded."""
    it = await fake.slash(command, options)
    return it, await wait_key(fake, record, command)


def raw_session(fake: FakeDiscord) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(headers={"Authorization": f"Bot {fake.bot_token}"})


# ---------------------------------------------------------------------- login, commands


async def test_bot_logs_in_and_syncs_commands_to_the_guild(
    fake: FakeDiscord, bot: commands.Bot
) -> None:
    assert bot.user is not None and bot.user.id == fake.application_id
    guild = bot.get_guild(fake.guild_id)
    assert guild is not None
    assert guild.get_channel(fake.channel_id) is not None
    nsfw = guild.get_channel(fake.nsfw_channel_id)
    assert isinstance(nsfw, discord.TextChannel) and nsfw.is_nsfw()
    assert fake.identify_count == 1 and fake.gateway_connected

    names = {c["name"] for c in fake.commands}
    assert {"echo", "pick", "wf", "modonly", "render"} <= names
    echo = fake.command("echo")
    assert echo["guild_id"] == str(fake.guild_id)
    types = {o["name"]: o["type"] for o in echo["options"]}
    assert types == {
        "text": 3,
        "count": 4,
        "loud": 5,
        "ratio": 10,
        "who": 6,
        "where": 7,
        "role": 8,
        "image": 11,
    }
    assert fake.command("modonly")["default_member_permissions"] == str(1 << 5)

    fetched = await bot.tree.fetch_commands(guild=discord.Object(id=fake.guild_id))
    assert {c.name: str(c.id) for c in fetched} == {
        c["name"]: c["id"] for c in fake.commands if c.get("guild_id")
    }
    assert fake.errors == []


async def test_resync_keeps_command_ids(fake: FakeDiscord, bot: commands.Bot) -> None:
    before = fake.command("echo")["id"]
    await bot.tree.sync(guild=discord.Object(id=fake.guild_id))
    assert fake.command("echo")["id"] == before


# ---------------------------------------------------------------------- slash, autocomplete


async def test_slash_options_are_typed_and_resolved(
    fake: FakeDiscord, bot: commands.Bot, record: dict[str, Any]
) -> None:
    it = await fake.slash(
        "echo",
        {
            "text": "hi",
            "count": 3,
            "loud": True,
            "ratio": 1.5,
            "who": fake.moderator_id,
            "where": fake.nsfw_channel_id,
            "role": fake.moderator_role_id,
        },
        attachments={"image": ("in.png", PNG, "image/png")},
    )
    original = await it.wait_original()
    assert original.content == "hi x3"
    assert it.response_type == 4 and not it.ephemeral
    assert it.acknowledged_at is not None and it.acknowledged_at < 1.0

    got = record["echo"]
    assert (got["text"], got["count"], got["loud"], got["ratio"]) == ("hi", 3, True, 1.5)
    assert isinstance(got["who"], discord.Member) and got["who"].id == fake.moderator_id
    assert got["where"].id == fake.nsfw_channel_id
    assert isinstance(got["role"], discord.Role) and got["role"].id == fake.moderator_role_id
    assert got["image"].filename == "in.png" and got["image"].content_type == "image/png"
    assert got["image_bytes"] == PNG
    assert got["filesize_limit"] == fake.attachment_size_limit
    assert not got["permissions"].manage_guild
    assert fake.messages_in(fake.channel_id) == [original]


async def test_subcommand_path_and_ephemeral_reply(fake: FakeDiscord, bot: commands.Bot) -> None:
    it = await fake.slash("wf enable", {"name": "sd15"}, user_id=fake.moderator_id)
    original = await it.wait_original()
    assert original.content == "enabled sd15"
    assert it.ephemeral and original.ephemeral and original.flags & 64


async def test_helpers_refuse_what_the_discord_client_cannot_send(
    fake: FakeDiscord, bot: commands.Bot
) -> None:
    with pytest.raises(FakeDiscordError, match="no option"):
        await fake.slash("echo", {"text": "x", "nope": 1})
    with pytest.raises(FakeDiscordError, match="missing required"):
        await fake.slash("echo", {})
    with pytest.raises(FakeDiscordError, match="integer"):
        await fake.slash("echo", {"text": "x", "count": "3"})
    with pytest.raises(FakeDiscordError, match="needs a subcommand"):
        await fake.slash("wf", {})
    with pytest.raises(FakeDiscordError, match="no command"):
        await fake.slash("missing", {})
    assert fake.interactions == []


async def test_default_member_permissions_hide_commands_from_plain_members(
    fake: FakeDiscord, bot: commands.Bot
) -> None:
    with pytest.raises(CommandUnavailable):
        await fake.slash("modonly", {}, user_id=fake.member_id)
    for user_id in (fake.moderator_id, fake.owner_id):
        it = await fake.slash("modonly", {}, user_id=user_id)
        assert (await it.wait_original()).content == "ok"


async def test_autocomplete_returns_the_bots_choices(fake: FakeDiscord, bot: commands.Bot) -> None:
    choices = await fake.autocomplete("pick", {"flavor": "van"}, "flavor")
    assert [c["value"] for c in choices] == ["vanilla", "vanilla bean"]
    it = fake.interactions[-1]
    assert it.response_type == 8 and it.acknowledged_at is not None


async def test_autocomplete_with_more_than_25_choices_is_rejected(
    fake: FakeDiscord, bot: commands.Bot
) -> None:
    fake.ack_timeout = 0.3
    with pytest.raises(InteractionTimeout):
        await fake.autocomplete("greedy", {}, "thing")
    [error] = fake.errors_with(50035)
    assert error.status == 400
    assert error.errors is not None and "choices" in error.errors["data"]


# ---------------------------------------------------------------------- responses, files


async def test_defer_edit_with_files_and_followups(
    fake: FakeDiscord, bot: commands.Bot, record: dict[str, Any]
) -> None:
    it = await fake.slash("render", {})
    await wait_key(fake, record, "render")
    assert it.response_type == 5
    original = it.original
    assert original is not None and not original.loading
    assert original.content == "done"
    [attachment] = original.attachments
    assert (attachment.filename, attachment.data, attachment.content_type) == (
        "c.png",
        PNG,
        "image/png",
    )
    assert original.embeds[0]["image"]["url"] == "attachment://c.png"

    assert [e[1]["content"] for e in original.edits] == ["step 1", "step 2", "done"]
    timestamps = [e[0] for e in original.edits]
    assert timestamps == sorted(timestamps) and timestamps[0] >= original.created_at
    # the second edit kept a.png by id and added b.txt: the payload lists what to keep
    step2 = original.edits[1][1]
    assert len(step2["attachments"]) == 2 and step2["files"][0]["filename"] == "b.txt"

    extra, gone = it.followups
    assert extra.ephemeral and extra.content == "extra!"
    assert extra.attachments[0].data == b"x" * 10
    assert gone.deleted
    assert fake.messages_in(fake.channel_id) == [original, extra]
    assert fake.errors == []


async def test_first_followup_after_thinking_fills_the_deferred_message(
    fake: FakeDiscord, bot: commands.Bot, record: dict[str, Any]
) -> None:
    it = await fake.slash("think", {})
    assert await wait_key(fake, record, "think") == "thought about it"
    original = it.original
    assert original is not None and original.content == "thought about it"
    assert original.ephemeral and not original.loading
    assert it.followups == [original]
    assert len(fake.messages_in(fake.channel_id)) == 1


async def test_channel_messages_with_the_bot_token(
    fake: FakeDiscord, bot: commands.Bot, record: dict[str, Any]
) -> None:
    it = await fake.slash("announce", {})
    message_id, fetched_content, fetched_bytes = await wait_key(fake, record, "announce")
    assert fetched_content == "announcement (edited)" and fetched_bytes == PNG
    message = fake.message(message_id)
    assert message.interaction_id is None and message.author_id == fake.application_id
    assert [e[1]["content"] for e in message.edits] == ["announcement (edited)"]
    assert (await it.wait_original(lambda m: m.content == "posted")).content == "posted"


async def test_a_repeated_nonce_returns_the_message_already_posted(
    fake: FakeDiscord, bot: commands.Bot, record: dict[str, Any]
) -> None:
    await fake.slash("twice", {})
    first, again, other, content = await wait_key(fake, record, "twice")
    assert first == again != other and content == "once"
    posted = [m for m in fake.messages_in(fake.channel_id) if m.interaction_id is None]
    assert [m.content for m in posted] == ["once", "other"]
    assert [m.nonce for m in posted] == ["job-1", "job-2"]


async def test_nonce_rules_without_enforcement_and_out_of_the_window(fake: FakeDiscord) -> None:
    async with raw_session(fake) as session:
        status, body = await post_message(session, fake, {"content": "x", "nonce": "n" * 26})
        assert (status, body["code"]) == (400, 50035) and "nonce" in body["errors"]
        for _ in range(2):  # without enforce_nonce a nonce is only echoed back
            status, body = await post_message(session, fake, {"content": "a", "nonce": "same"})
            assert status == 200 and body["nonce"] == "same"
        fake.nonce_window = 0.0
        for _ in range(2):
            payload = {"content": "b", "nonce": "late", "enforce_nonce": True}
            status, body = await post_message(session, fake, payload)
            assert status == 200
    assert [m.content for m in fake.messages_in(fake.channel_id)] == ["a", "a", "b", "b"]


async def test_a_held_request_is_applied_but_never_answered(fake: FakeDiscord) -> None:
    fake.hold_after_apply("POST /channels/*/messages")
    async with raw_session(fake) as session:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(post_message(session, fake, {"content": "lost answer"}), 0.5)
        status, _ = await post_message(session, fake, {"content": "answered"})
        assert status == 200
    assert fake.held == [f"POST /channels/{fake.channel_id}/messages"]
    assert [m.content for m in fake.messages_in(fake.channel_id)] == ["lost answer", "answered"]


async def test_deleting_the_original_response(
    fake: FakeDiscord, bot: commands.Bot, record: dict[str, Any]
) -> None:
    it = await fake.slash("vanish", {})
    exc = await wait_key(fake, record, "vanish")
    assert exc.code == 10008
    assert it.original is not None and it.original.deleted
    assert fake.messages_in(fake.channel_id) == []


# ---------------------------------------------------------------------- components, gateway


async def test_select_menu_and_modal_round_trips(
    fake: FakeDiscord, bot: commands.Bot, record: dict[str, Any]
) -> None:
    it = await fake.slash("size", {})
    message = await it.wait_original()
    with pytest.raises(FakeDiscordError, match="not options"):
        await fake.select(message.id, "size", ["999"])
    chosen = await fake.select(message.id, "size", ["768"])
    await fake.wait_for(lambda: message.content == "size 768")
    assert record["size"] == ["768"] and chosen.response_type == 7

    opened = await fake.slash("importer", {})
    assert await opened.wait_ack() == 9
    assert opened.modal is not None and opened.modal["title"] == "Import a workflow"
    submitted = await fake.submit_modal(opened, {"url": "https://example.com/wf.json"})
    reply = await submitted.wait_original()
    assert reply.content == "importing https://example.com/wf.json" and reply.ephemeral
    assert record["modal"] == "https://example.com/wf.json"


async def test_persistent_button_survives_a_bot_restart(
    fake: FakeDiscord, record: dict[str, Any]
) -> None:
    async with running_bot(make_bot(record), fake):
        it = await fake.slash("post", {"job": 7})
        message = await it.wait_original()
        assert message.custom_ids == ["job:7"]
        assert message.button("Again") is not None

    async with running_bot(make_bot(record), fake, sync=False):
        click = await fake.click(message.id, "job:7")
        await fake.wait_for(lambda: message.content == "job 7 again")
        assert click.response_type == 7 and click.original is message
        assert message.components == []
    assert fake.identify_count == 2
    with pytest.raises(FakeDiscordError, match="no component"):
        await fake.click(message.id, "job:7")


async def test_gateway_resume_replays_events_missed_while_disconnected(
    fake: FakeDiscord, bot: commands.Bot, record: dict[str, Any]
) -> None:
    await fake.restart_gateway()
    await fake.wait_for(lambda: fake.resume_count == 1 and fake.gateway_connected)
    await fake.disconnect_gateway()
    it = await fake.slash("echo", {"text": "while away"})
    assert (await it.wait_original()).content == "while away x1"
    assert fake.resume_count == 2 and fake.identify_count == 1
    await fake.wait_for(lambda: record.get("resumed") == 2)


async def test_invalid_session_makes_the_bot_identify_again(
    fake: FakeDiscord, bot: commands.Bot
) -> None:
    await fake.restart_gateway(resume=False)
    await fake.wait_for(lambda: fake.identify_count == 2 and fake.gateway_connected)
    it = await fake.slash("echo", {"text": "again"})
    assert (await it.wait_original()).content == "again x1"


# ---------------------------------------------------------------------- interaction limits


async def test_first_response_after_the_ack_timeout_is_unknown_interaction(
    fake: FakeDiscord, bot: commands.Bot, record: dict[str, Any]
) -> None:
    fake.ack_timeout = 0.2
    it, exc = await slash_and_wait(fake, record, "slow", {"delay": 0.35})
    assert isinstance(exc, discord.NotFound) and exc.code == 10062
    assert it.failed and it.original is None
    [error] = fake.errors
    assert (error.status, error.code) == (404, 10062)
    assert error.route == "POST /interactions/{interaction_id}/{token}/callback"


async def test_expired_token_is_401_then_bot_token_delivery_works(
    fake: FakeDiscord, bot: commands.Bot, record: dict[str, Any]
) -> None:
    fake.token_lifetime = 0.2
    it, exc = await slash_and_wait(fake, record, "expire", {"delay": 0.3})
    assert isinstance(exc, discord.HTTPException)
    assert (exc.status, exc.code) == (401, 50027)
    await fake.wait_for(lambda: len(fake.messages_in(fake.channel_id)) == 2)
    assert fake.messages_in(fake.channel_id)[-1].content == "delivered with the bot token"
    assert it.original is not None and it.original.loading
    assert [(e.status, e.code) for e in fake.errors] == [(401, 50027)]


async def test_acknowledging_twice_is_40060(
    fake: FakeDiscord, bot: commands.Bot, record: dict[str, Any]
) -> None:
    it = await fake.slash("double", {})
    results = await wait_key(fake, record, "double")
    errors = [r for r in results if isinstance(r, discord.HTTPException)]
    assert len(errors) == 1 and errors[0].code == 40060 and errors[0].status == 400
    assert it.response_type == 5
    assert [(e.status, e.code) for e in fake.errors] == [(400, 40060)]


async def test_file_over_the_attachment_size_limit_is_413(
    fake: FakeDiscord, bot: commands.Bot, record: dict[str, Any]
) -> None:
    fake.attachment_size_limit = 1000
    await fake.slash("upload", {"size": 1000})
    assert await wait_key(fake, record, "upload") is None
    del record["upload"]
    await fake.slash("upload", {"size": 1001})
    exc = await wait_key(fake, record, "upload")
    assert isinstance(exc, discord.HTTPException) and (exc.status, exc.code) == (413, 40005)

    channel = bot.get_channel(fake.channel_id)
    assert isinstance(channel, discord.TextChannel)
    with pytest.raises(discord.HTTPException) as raised:
        await channel.send(file=discord.File(io.BytesIO(b"\0" * 1001), "big.bin"))
    assert (raised.value.status, raised.value.code) == (413, 40005)


async def test_more_than_ten_attachments_are_rejected(
    fake: FakeDiscord, bot: commands.Bot, record: dict[str, Any]
) -> None:
    await fake.slash("upload", {"size": 10, "files": 11})
    exc = await wait_key(fake, record, "upload")
    assert isinstance(exc, discord.HTTPException) and (exc.status, exc.code) == (400, 30015)
    del record["upload"]
    await fake.slash("upload", {"size": 10, "files": 10})
    assert await wait_key(fake, record, "upload") is None


async def test_content_over_2000_characters_is_invalid_form_body(
    fake: FakeDiscord, bot: commands.Bot, record: dict[str, Any]
) -> None:
    it = await fake.slash("say", {"length": 2001})
    exc = await wait_key(fake, record, "say")
    assert isinstance(exc, discord.HTTPException) and (exc.status, exc.code) == (400, 50035)
    assert "data.content" in str(exc)
    assert not it.acknowledged  # a rejected response does not acknowledge
    del record["say"]
    await fake.slash("say", {"length": 2000})
    assert await wait_key(fake, record, "say") is None


async def test_custom_id_over_100_characters_is_invalid_form_body(
    fake: FakeDiscord, bot: commands.Bot, record: dict[str, Any]
) -> None:
    await fake.slash("longid", {"length": 101})
    exc = await wait_key(fake, record, "longid")
    assert isinstance(exc, discord.HTTPException) and exc.code == 50035
    assert "custom_id" in str(exc)
    del record["longid"]
    await fake.slash("longid", {"length": 100})
    assert await wait_key(fake, record, "longid") is None


# ---------------------------------------------------------------------- raw REST limits


async def post_message(
    session: aiohttp.ClientSession, fake: FakeDiscord, payload: dict[str, Any]
) -> tuple[int, dict[str, Any]]:
    url = f"{fake.api_base}/channels/{fake.channel_id}/messages"
    async with session.post(url, json=payload) as response:
        return response.status, await response.json()


async def test_embed_and_component_limits(fake: FakeDiscord) -> None:
    fake.rate_limits["channel_message_create"] = (100, 1.0)
    button = {"type": 2, "style": 1, "label": "b", "custom_id": "x"}
    bad = {
        "eleven embeds": {"embeds": [{"title": "t"}] * 11},
        "title": {"embeds": [{"title": "t" * 257}]},
        "description": {"embeds": [{"description": "d" * 4097}]},
        "fields": {"embeds": [{"fields": [{"name": "n", "value": "v"}] * 26}]},
        "total": {"embeds": [{"description": "d" * 4000}, {"description": "d" * 2001}]},
        "six rows": {
            "content": "x",
            "components": [
                {"type": 1, "components": [{**button, "custom_id": f"r{i}"}]} for i in range(6)
            ],
        },
        "six buttons": {
            "content": "x",
            "components": [
                {"type": 1, "components": [{**button, "custom_id": f"b{i}"} for i in range(6)]}
            ],
        },
        "label": {
            "content": "x",
            "components": [{"type": 1, "components": [{**button, "label": "l" * 81}]}],
        },
        "duplicate": {"content": "x", "components": [{"type": 1, "components": [button, button]}]},
    }
    async with raw_session(fake) as session:
        for what, payload in bad.items():
            status, body = await post_message(session, fake, payload)
            assert (status, body["code"]) == (400, 50035), what
            assert body["message"] == "Invalid Form Body" and body["errors"], what
        status, body = await post_message(session, fake, {})
        assert (status, body["code"]) == (400, 50006)
        fine = {
            "embeds": [{"title": "t" * 256, "description": "d" * 4096}],
            "components": [
                {"type": 1, "components": [{**button, "custom_id": f"{r}{b}"} for b in range(5)]}
                for r in range(5)
            ],
        }
        status, body = await post_message(session, fake, fine)
        assert status == 200 and body["embeds"][0]["title"] == "t" * 256
    assert fake.message(int(body["id"])).custom_ids[-1] == "44"
    assert fake.rate_limited_count == 0


async def test_command_registration_limits(fake: FakeDiscord) -> None:
    def option(i: int, **extra: Any) -> dict[str, Any]:
        return {"name": f"o{i}", "description": "d", "type": 3, **extra}

    url = f"{fake.api_base}/applications/{fake.application_id}/commands"
    bad = {
        "uppercase name": [{"name": "Imagine", "description": "d"}],
        "long name": [{"name": "n" * 33, "description": "d"}],
        "empty description": [{"name": "x", "description": ""}],
        "long description": [{"name": "x", "description": "d" * 101}],
        "26 options": [
            {"name": "x", "description": "d", "options": [option(i) for i in range(26)]}
        ],
        "26 choices": [
            {
                "name": "x",
                "description": "d",
                "options": [
                    option(0, choices=[{"name": f"c{i}", "value": f"c{i}"} for i in range(26)])
                ],
            }
        ],
        "required after optional": [
            {"name": "x", "description": "d", "options": [option(0), option(1, required=True)]}
        ],
        "duplicate": [{"name": "x", "description": "d"}, {"name": "x", "description": "d"}],
    }
    async with raw_session(fake) as session:
        for what, payload in bad.items():
            async with session.put(url, json=payload) as response:
                body = await response.json()
                assert (response.status, body["code"]) == (400, 50035), what
        async with session.put(url, json=[{"name": "ok", "description": "fine"}]) as response:
            assert response.status == 200
    assert [c["name"] for c in fake.commands] == ["ok"]


async def test_hammered_route_answers_429_with_rate_limit_headers(fake: FakeDiscord) -> None:
    fake.rate_limits["channel_message_create"] = (5, 5.0)
    url = f"{fake.api_base}/channels/{fake.channel_id}/messages"
    async with raw_session(fake) as session:

        async def send(i: int) -> tuple[int, dict[str, str], dict[str, Any]]:
            async with session.post(url, json={"content": str(i)}) as response:
                return response.status, dict(response.headers), await response.json()

        results = await asyncio.gather(*(send(i) for i in range(8)))
        statuses = sorted(status for status, _, _ in results)
        assert statuses == [200] * 5 + [429] * 3
        for status, headers, body in results:
            assert headers["Content-Type"] == "application/json"
            for name in ("Limit", "Remaining", "Reset", "Reset-After", "Bucket"):
                assert f"X-RateLimit-{name}" in headers
            if status == 429:
                assert headers["Via"] and int(headers["Retry-After"]) >= 1
                assert headers["X-RateLimit-Remaining"] == "0"
                assert body["global"] is False and 0 < body["retry_after"] <= 5.0

        # the global limit (50/s for bot-token requests) has its own 429
        fake.rate_limits["global"] = (10, 1.0)
        fake.reset_rate_limits()

        async def me() -> tuple[int, dict[str, Any]]:
            async with session.get(f"{fake.api_base}/users/@me") as response:
                return response.status, await response.json()

        answers = await asyncio.gather(*(me() for _ in range(15)))
        limited = [body for status, body in answers if status == 429]
        assert len(limited) == 5 and all(body["global"] for body in limited)
    assert fake.rate_limited_count == 8
    assert len([e for e in fake.errors if e.status == 429]) == 8


async def test_discord_py_rate_limiter_avoids_429_for_bursts(
    fake: FakeDiscord, bot: commands.Bot, record: dict[str, Any]
) -> None:
    fake.rate_limits["channel_message_create"] = (3, 0.3)
    fake.rate_limits["webhook_message_edit"] = (2, 0.2)
    channel = bot.get_channel(fake.channel_id)
    assert isinstance(channel, discord.TextChannel)
    started = time.monotonic()
    sent = await asyncio.gather(*(channel.send(f"burst {i}") for i in range(9)))
    elapsed = time.monotonic() - started
    assert len({m.id for m in sent}) == 9
    assert elapsed >= 0.55  # three windows: discord.py waited instead of hitting 429

    it = await fake.slash("progress", {"edits": 6})
    await wait_key(fake, record, "progress")
    assert it.original is not None and len(it.original.edits) == 6
    assert fake.rate_limited_count == 0 and fake.errors == []


async def test_injected_429_is_retried_by_discord_py(fake: FakeDiscord, bot: commands.Bot) -> None:
    fake.inject_error("POST /channels/*/messages", 429, retry_after=0.1)
    channel = bot.get_channel(fake.channel_id)
    assert isinstance(channel, discord.TextChannel)
    message = await channel.send("after a 429")
    assert fake.message(message.id).content == "after a 429"
    assert fake.rate_limited_count == 1


async def test_requests_need_the_bot_token(fake: FakeDiscord) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{fake.api_base}/users/@me") as response:
            assert response.status == 401 and (await response.json())["code"] == 0
        async with session.get(
            f"{fake.api_base}/nowhere", headers={"Authorization": f"Bot {fake.bot_token}"}
        ) as response:
            assert response.status == 404
    assert [e.status for e in fake.errors] == [401, 404]


# ---------------------------------------------------------------------- process-wide state


async def test_install_and_uninstall_restore_discord_py() -> None:
    base = discord.http.Route.BASE
    gateway = discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
    async with installed_fake() as fake:
        assert fake.url + API_PREFIX == discord.http.Route.BASE
        assert str(discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY) == fake.gateway_url
    assert base == discord.http.Route.BASE
    assert gateway == discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY


async def test_integrations_overrides_show_a_command_to_a_role_or_hide_it(
    fake: FakeDiscord, bot: commands.Bot
) -> None:
    helpers = fake.add_role("Helpers")
    helper = fake.add_member("helper", roles=[helpers])
    with pytest.raises(CommandUnavailable):
        await fake.slash("modonly", {}, user_id=helper)
    fake.set_command_permission("modonly", helpers, allow=True)  # a role allowed
    it = await fake.slash("modonly", {}, user_id=helper)
    assert (await it.wait_original()).content == "ok"
    fake.set_command_permission("modonly", helper, allow=False)  # the member's own wins
    with pytest.raises(CommandUnavailable):
        await fake.slash("modonly", {}, user_id=helper)
    fake.set_command_permission("echo", fake.guild_id, allow=False)  # @everyone denied
    with pytest.raises(CommandUnavailable):
        await fake.slash("echo", {"text": "x"})
    it = await fake.slash("echo", {"text": "x"}, user_id=fake.owner_id)  # the owner always may
    await it.wait_ack()


async def test_threads_messages_and_their_permissions(fake: FakeDiscord) -> None:
    url = f"{fake.api_base}/channels/{fake.channel_id}/threads"
    async with raw_session(fake) as session:
        async with session.post(url, json={"name": "", "type": 11}) as response:
            assert response.status == 400 and (await response.json())["code"] == 50035
        async with session.post(
            url, json={"name": "Jam", "type": 11, "auto_archive_duration": 10080}
        ) as response:
            assert response.status == 201
            thread = await response.json()
        assert thread["parent_id"] == str(fake.channel_id) and thread["type"] == 11
        assert [t["id"] for t in fake.threads_of(fake.channel_id)] == [thread["id"]]
        thread_id = int(thread["id"])
        posted = f"{fake.api_base}/channels/{thread_id}/messages"
        async with session.post(posted, json={"content": "hello thread"}) as response:
            assert response.status == 200
        assert [m.content for m in fake.messages_in(thread_id)] == ["hello thread"]
        # a thread takes its parent's permissions: no Send Messages in Threads, no message
        fake.set_channel_permissions(fake.channel_id, fake.bot_role_id, deny=1 << 38)
        async with session.post(posted, json={"content": "denied"}) as response:
            assert response.status == 403 and (await response.json())["code"] == 50013
        threads_of_thread = f"{fake.api_base}/channels/{thread_id}/threads"
        async with session.post(threads_of_thread, json={"name": "x", "type": 11}) as response:
            assert response.status == 400  # threads live in text channels only


async def test_a_members_message_and_a_message_command(
    fake: FakeDiscord, record: dict[str, Any]
) -> None:
    bot = make_bot(record)

    @bot.tree.context_menu(name="Inspect")
    async def inspect(interaction: discord.Interaction, message: discord.Message) -> None:
        data = await message.attachments[0].read()
        record["inspect"] = (message.id, message.author.id, data)
        await interaction.response.send_message("seen", ephemeral=True)

    async with running_bot(bot, fake):
        menu = next(c for c in fake.commands if c["type"] == 3)
        assert menu["name"] == "Inspect" and menu["description"] == ""
        posted = fake.post("look", files=[("dot.png", PNG, "image/png")])
        it = await fake.message_command("Inspect", posted.id, user_id=fake.moderator_id)
        assert (await it.wait_original()).content == "seen"
        assert record["inspect"] == (posted.id, fake.member_id, PNG)
        with pytest.raises(FakeDiscordError):
            await fake.message_command("Nope", posted.id)


async def test_a_modal_beyond_discords_limits_is_invalid_form_body(
    fake: FakeDiscord, bot: commands.Bot
) -> None:
    it = await fake.slash("slow", {"delay": 1.0})  # answered by hand below
    url = f"{fake.api_base}/interactions/{it.id}/{it.token}/callback"

    def text(i: int, **extra: Any) -> dict[str, Any]:
        field = {"type": 4, "custom_id": f"f{i}", "label": "Prompt", "style": 2, **extra}
        return {"type": 1, "components": [field]}

    def modal(*rows: dict[str, Any]) -> dict[str, Any]:
        return {"type": 9, "data": {"custom_id": "m", "title": "Edit", "components": list(rows)}}

    bad = {
        "six rows": modal(*(text(i) for i in range(6))),
        "no rows": modal(),
        "long label": modal(text(0, label="l" * 46)),
        "long value": modal(text(0, value="v" * 4001)),
        "value over max_length": modal(text(0, value="v" * 11, max_length=10)),
        "bad style": modal(text(0, style=3)),
        "duplicate": modal(text(0), text(0)),
    }
    async with aiohttp.ClientSession() as session:
        for what, payload in bad.items():
            async with session.post(url, json=payload) as response:
                assert response.status == 400, what
                assert (await response.json())["code"] == 50035, what
        async with session.post(url, json=modal(text(0, value="a cat"), text(1))) as response:
            assert response.status == 204
    assert it.modal is not None and it.response_type == 9
