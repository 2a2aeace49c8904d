"""The fake Discord with shards: each gateway session gets only its shard's servers and events."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import discord
import pytest
from discord.ext import commands

from tests.fakes.discord import FakeDiscord, FakeDiscordError, shard_of
from tests.fakes.discord_fixtures import installed_fake, running_bot

PING = {"name": "ping", "description": "Answers pong", "type": 1}


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    async with installed_fake() as fake:
        yield fake


def rest(fake: FakeDiscord) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(headers={"Authorization": f"Bot {fake.bot_token}"})


async def register_globally(fake: FakeDiscord, *commands_: dict[str, Any]) -> None:
    async with rest(fake) as http:
        url = f"{fake.api_base}/applications/{fake.application_id}/commands"
        async with http.put(url, json=list(commands_)) as response:
            assert response.status == 200, await response.text()


class RawShard:
    """A gateway connection that IDENTIFYs as one shard and keeps every dispatch it gets."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.events: list[tuple[str, dict[str, Any]]] = []

    def named(self, event: str) -> list[dict[str, Any]]:
        return [data for name, data in self.events if name == event]

    async def read_until(self, event: str, count: int = 1, timeout: float = 5.0) -> None:
        """Keep reading dispatches until ``count`` of ``event`` arrived."""
        async with asyncio.timeout(timeout):
            while len(self.named(event)) < count:
                frame = json.loads((await self.ws.receive()).data)
                if frame["op"] == 0:
                    self.events.append((frame["t"], frame["d"]))

    async def read_for(self, seconds: float) -> None:
        """Read whatever comes within ``seconds``."""
        with contextlib.suppress(TimeoutError):
            await self.read_until("(nothing)", timeout=seconds)


@contextlib.asynccontextmanager
async def raw_shard(fake: FakeDiscord, shard: list[int] | None) -> AsyncIterator[RawShard]:
    async with aiohttp.ClientSession() as http, http.ws_connect(fake.gateway_url) as ws:
        hello = json.loads((await ws.receive()).data)
        assert hello["op"] == 10
        identify: dict[str, Any] = {
            "token": fake.bot_token,
            "intents": 1 | 1 << 9,
            "properties": {},
        }
        if shard is not None:
            identify["shard"] = shard
        await ws.send_str(json.dumps({"op": 2, "d": identify}))
        connection = RawShard(ws)
        await connection.read_until("READY")
        yield connection


def ids(guilds: list[dict[str, Any]]) -> set[int]:
    return {int(g["id"]) for g in guilds}


async def test_added_guilds_fall_on_the_shard_asked_for(fake: FakeDiscord) -> None:
    for shard_id, shard_count in [(0, 2), (1, 2), (2, 3), (0, 1), (3, 4)]:
        guild = fake.add_guild(shard=(shard_id, shard_count))
        assert shard_of(guild.guild_id, shard_count) == shard_id == guild.shard(shard_count)
    with pytest.raises(FakeDiscordError):
        fake.add_guild(shard=(2, 2))


async def test_each_shard_is_told_of_its_own_guilds_only(fake: FakeDiscord) -> None:
    first, second = fake.add_guild(shard=(0, 2)), fake.add_guild(shard=(1, 2))
    everyone = {fake.guild_id, first.guild_id, second.guild_id}
    by_shard = {n: {g for g in everyone if shard_of(g, 2) == n} for n in (0, 1)}
    async with raw_shard(fake, [0, 2]) as zero, raw_shard(fake, [1, 2]) as one:
        for number, shard in ((0, zero), (1, one)):
            ready = shard.named("READY")[0]
            assert ready["shard"] == [number, 2]
            assert ids(ready["guilds"]) == by_shard[number]
            await shard.read_until("GUILD_CREATE", len(by_shard[number]))
            assert ids(shard.named("GUILD_CREATE")) == by_shard[number]
        async with raw_shard(fake, None) as whole:
            assert ids(whole.named("READY")[0]["guilds"]) == everyone


async def test_two_shards_each_get_only_their_guilds_interactions(fake: FakeDiscord) -> None:
    await register_globally(fake, PING)
    first, second = fake.add_guild(shard=(0, 2)), fake.add_guild(shard=(1, 2))
    async with raw_shard(fake, [0, 2]) as zero, raw_shard(fake, [1, 2]) as one:
        to_first = await fake.slash("ping", guild=first)
        to_second = await fake.slash("ping", guild=second)
        await zero.read_until("INTERACTION_CREATE")
        await one.read_until("INTERACTION_CREATE")
        await zero.read_for(0.2)
        await one.read_for(0.2)
    assert [i["id"] for i in zero.named("INTERACTION_CREATE")] == [str(to_first.id)]
    assert [i["id"] for i in one.named("INTERACTION_CREATE")] == [str(to_second.id)]
    assert zero.named("INTERACTION_CREATE")[0]["guild_id"] == str(first.guild_id)
    assert zero.named("INTERACTION_CREATE")[0]["channel_id"] == str(first.channel_id)
    assert to_first.delivered_to == [(0, 2)] and to_second.delivered_to == [(1, 2)]


async def test_a_guild_without_a_connected_shard_gets_its_interaction_to_nobody(
    fake: FakeDiscord,
) -> None:
    await register_globally(fake, PING)
    orphan = fake.add_guild(shard=(1, 2))
    async with raw_shard(fake, [0, 2]) as zero:
        it = await fake.slash("ping", guild=orphan)
        await zero.read_for(0.2)
    assert it.delivered_to == [] and zero.named("INTERACTION_CREATE") == []


async def test_a_session_without_shards_gets_every_guilds_events(fake: FakeDiscord) -> None:
    await register_globally(fake, PING)
    first, second = fake.add_guild(shard=(0, 2)), fake.add_guild(shard=(1, 2))
    async with raw_shard(fake, None) as whole:
        await fake.slash("ping", guild=first)
        await fake.slash("ping", guild=second)
        await whole.read_until("INTERACTION_CREATE", 2)
    guilds = [i["guild_id"] for i in whole.named("INTERACTION_CREATE")]
    assert guilds == [str(first.guild_id), str(second.guild_id)]


async def test_a_guild_added_while_connected_is_announced_to_its_shard_only(
    fake: FakeDiscord,
) -> None:
    async with raw_shard(fake, [0, 2]) as zero, raw_shard(fake, [1, 2]) as one:
        await zero.read_for(0.1)
        await one.read_for(0.1)
        before = len(zero.named("GUILD_CREATE")), len(one.named("GUILD_CREATE"))
        added = fake.add_guild("Late", shard=(1, 2))
        await one.read_until("GUILD_CREATE", before[1] + 1)
        await zero.read_for(0.2)
    assert int(one.named("GUILD_CREATE")[-1]["id"]) == added.guild_id
    assert one.named("GUILD_CREATE")[-1]["name"] == "Late"
    assert len(zero.named("GUILD_CREATE")) == before[0]


async def test_messages_go_to_the_shard_of_their_guild(fake: FakeDiscord) -> None:
    first, second = fake.add_guild(shard=(0, 2)), fake.add_guild(shard=(1, 2))
    async with raw_shard(fake, [0, 2]) as zero, raw_shard(fake, [1, 2]) as one:
        fake.post("in the first", guild=first)
        fake.post("in the second", guild=second)
        await zero.read_until("MESSAGE_CREATE")
        await one.read_until("MESSAGE_CREATE")
        await zero.read_for(0.2)
    assert [m["content"] for m in zero.named("MESSAGE_CREATE")] == ["in the first"]
    assert [m["content"] for m in one.named("MESSAGE_CREATE")] == ["in the second"]
    assert one.named("MESSAGE_CREATE")[0]["guild_id"] == str(second.guild_id)


async def test_gateway_bot_recommends_the_shards_set(fake: FakeDiscord) -> None:
    async with rest(fake) as http:
        async with http.get(f"{fake.api_base}/gateway/bot") as response:
            assert (await response.json())["shards"] == 1
        fake.recommended_shards = 3
        async with http.get(f"{fake.api_base}/gateway/bot") as response:
            assert (await response.json())["shards"] == 3


async def test_each_guild_has_its_own_channels_roles_and_members(fake: FakeDiscord) -> None:
    other = fake.add_guild("Other")
    async with rest(fake) as http:
        base = f"{fake.api_base}/guilds/{other.guild_id}"
        async with http.get(base + "/channels") as response:
            assert [int(c["id"]) for c in await response.json()] == [other.channel_id]
        async with http.get(base + "/roles") as response:
            names = {r["name"] for r in await response.json()}
            assert names == {"@everyone", "Moderators", "Bot"}
        async with http.get(base) as response:
            assert (await response.json())["name"] == "Other"
        async with http.get(f"{base}/members/{fake.moderator_id}") as response:
            assert response.status == 200
        stranger = fake.add_member("stranger")  # joins the first guild only
        async with http.get(f"{base}/members/{stranger}") as response:
            assert response.status == 404
        async with http.get(f"{fake.api_base}/guilds/{other.guild_id + 1}") as response:
            assert response.status == 403
    assert fake.permissions(fake.member_id, other.channel_id) == fake.permissions(
        fake.member_id, fake.channel_id
    )
    with pytest.raises(FakeDiscordError, match="not a member"):
        fake.post("hello", user_id=stranger, guild=other)


async def test_guild_commands_are_only_usable_in_their_guild(fake: FakeDiscord) -> None:
    other = fake.add_guild()
    async with rest(fake) as http:
        url = f"{fake.api_base}/applications/{fake.application_id}/guilds/{fake.guild_id}/commands"
        async with http.put(url, json=[PING]) as response:
            assert response.status == 200
    with pytest.raises(FakeDiscordError, match="no command /ping"):
        await fake.slash("ping", guild=other)
    await register_globally(fake, PING)
    async with raw_shard(fake, None) as whole:
        it = await fake.slash("ping", guild=other)
        await whole.read_until("INTERACTION_CREATE")
    assert "guild_id" not in whole.named("INTERACTION_CREATE")[0]["data"]
    assert it.delivered_to == [None]


# ---------------------------------------------------------------------- discord.py clients


#: interaction id -> (the guild it came from, the shard of the bot that answered it)
Answered = dict[int, tuple[int | None, int | None]]


def shard_bot(record: Answered, **options: Any) -> Any:
    """A bot whose /where records, by interaction, its guild and the bot's shard."""
    cls = commands.AutoShardedBot if options.pop("auto", False) else commands.Bot
    bot = cls(
        command_prefix="!", intents=discord.Intents.default(), guild_ready_timeout=0.1, **options
    )

    @bot.tree.command(description="Which guild and shard")
    async def where(interaction: discord.Interaction) -> None:
        record[interaction.id] = (interaction.guild_id, bot.shard_id)
        await interaction.response.send_message(f"shard {bot.shard_id}")

    return bot


async def test_two_discord_py_shards_each_answer_their_own_guild(fake: FakeDiscord) -> None:
    first, second = fake.add_guild(shard=(0, 2)), fake.add_guild(shard=(1, 2))
    record: Answered = {}
    zero, one = (
        shard_bot(record, shard_id=0, shard_count=2),
        shard_bot(record, shard_id=1, shard_count=2),
    )
    async with running_bot(zero, fake, sync=False), running_bot(one, fake, sync=False):
        await zero.tree.sync()
        assert first.guild_id in {g.id for g in zero.guilds}
        assert second.guild_id not in {g.id for g in zero.guilds}
        assert {g.id for g in one.guilds} & {first.guild_id, second.guild_id} == {second.guild_id}
        its = [await fake.slash("where", guild=g) for g in (first, second, first)]
        for it in its:
            await it.wait_original()
        await asyncio.sleep(0.2)
    assert [record[it.id] for it in its] == [
        (first.guild_id, 0),
        (second.guild_id, 1),
        (first.guild_id, 0),
    ]
    assert [it.original.content for it in its if it.original] == ["shard 0", "shard 1", "shard 0"]


async def test_an_auto_sharded_bot_takes_the_recommended_shards(fake: FakeDiscord) -> None:
    first, second = fake.add_guild(shard=(0, 2)), fake.add_guild(shard=(1, 2))
    fake.recommended_shards = 2
    bot = shard_bot({}, auto=True)
    async with running_bot(bot, fake, sync=False):
        assert bot.shard_count == 2 and set(bot.shards) == {0, 1}
        for guild in (first, second):
            found = bot.get_guild(guild.guild_id)
            assert found is not None and found.shard_id == guild.shard(2)
        assert fake.identify_count == 2
