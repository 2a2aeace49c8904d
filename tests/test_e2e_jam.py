"""End to end: a jam from /jam start to the winners, through a bot restart, with its votes."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.app import ComfyBot
from cogs.jam import JamCog
from tests.conftest import make_settings
from tests.e2e import answer, comfybot, wait_result, wait_stored
from tests.fakes.comfyui import FakeComfyUI
from tests.fakes.discord import CommandUnavailable, FakeDiscord, FakeMessage
from tests.fakes.discord_fixtures import installed_fake


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    async with installed_fake() as f:
        yield f


def jam_cog(bot: ComfyBot) -> JamCog:
    cog = bot.get_cog("JamCog")
    # each bot loads its extensions afresh, so the class is the one of that load
    assert cog is not None and type(cog).__name__ == "JamCog"
    return cog  # type: ignore[return-value]


async def enter(
    bot: ComfyBot, fake: FakeDiscord, thread: int, user: int, prompt: str, count: int = 1
) -> FakeMessage:
    """Ask for an image in a thread; once it is posted and stored (entered, if it counts)."""
    options = {"prompt": prompt, "steps": 1, "count": count}
    it = await fake.slash("imagine", options, user_id=user, channel_id=thread)
    message = await wait_result(fake, it)
    await wait_stored(bot)  # a job is entered once stored, a moment after its result is posted
    return message


def galleries(fake: FakeDiscord, thread: int) -> list[FakeMessage]:
    """The messages of a thread with vote buttons."""
    return [
        m for m in fake.messages_in(thread) if any(c.startswith("cc:jv:") for c in m.custom_ids)
    ]


async def vote(fake: FakeDiscord, gallery: FakeMessage, custom_id: str, user: int) -> str:
    click = await fake.click(gallery.id, custom_id, user_id=user)
    await click.wait_ack()
    assert click.ephemeral
    return (await click.wait_original()).content


async def test_a_jam_runs_from_start_to_winners_through_a_restart(
    fake: FakeDiscord, comfy: FakeComfyUI, tmp_path: Path
) -> None:
    settings = make_settings(tmp_path, comfy.url)
    mod = fake.moderator_id
    ann, bob, cyd, dan = (fake.add_member(n) for n in ("ann", "bob", "cyd", "dan"))
    async with comfybot(fake, settings) as bot:
        with pytest.raises(CommandUnavailable):  # members do not see the moderators' /jam
            await fake.slash("jam start", {"theme": "x", "minutes": 5}, user_id=ann)
        _, started = await answer(
            fake, "jam start", {"theme": "lighthouses", "minutes": 30}, user_id=mod
        )
        [thread] = fake.threads_of(fake.channel_id)
        thread_id = int(thread["id"])
        assert thread["name"] == "Jam: lighthouses" and f"<#{thread_id}>" in started.content
        intro = fake.messages_in(thread_id)[0]
        assert "lighthouses" in intro.content and "/imagine" in intro.content
        await enter(bot, fake, thread_id, ann, "a lighthouse at dawn")
        # more images of ann are not entered (one entry each): she is told once in the thread
        await enter(bot, fake, thread_id, ann, "more lighthouses", count=3)

        def notes() -> list[FakeMessage]:
            return [m for m in fake.messages_in(thread_id) if "not entered" in m.content]

        await fake.wait_for(notes)
        await enter(bot, fake, fake.channel_id, bob, "not in the thread")  # not an entry either
        [note] = notes()
        assert f"<@{ann}>" in note.content and "limit is 1" in note.content

    async with comfybot(fake, settings) as bot:  # a restart while the jam is open
        await enter(bot, fake, thread_id, bob, "a lighthouse in a storm")
        await enter(bot, fake, thread_id, cyd, "a lighthouse on the moon")
        _, listing = await answer(fake, "jam list", user_id=mod)
        assert "lighthouses" in listing.content and "open" in listing.content
        assert "3 entries" in listing.content
        _, ended = await answer(fake, "jam end", user_id=mod)
        assert "vote is open" in ended.content
        [gallery] = galleries(fake, thread_id)
        assert len(gallery.attachments) == 3
        jams = jam_cog(bot).jams
        [jam] = jams.active(str(fake.guild_id))
        by_owner = {e.owner_id: e for e in jams.entries(jam.id)}
        ids = {who: f"cc:jv:{jam.id}:{by_owner[str(who)].job_id}:{by_owner[str(who)].number}"
               for who in (ann, bob, cyd)}  # fmt: skip
        assert set(ids.values()) == set(gallery.custom_ids)
        assert "own entry" in await vote(fake, gallery, ids[cyd], cyd)
        assert "goes to entry" in await vote(fake, gallery, ids[bob], ann)
        assert "goes to entry" in await vote(fake, gallery, ids[cyd], ann)  # changed her mind
        assert "goes to entry" in await vote(fake, gallery, ids[cyd], bob)

    async with comfybot(fake, settings) as bot:  # a restart while the vote is open
        assert "goes to entry" in await vote(fake, gallery, ids[cyd], dan)
        assert "goes to entry" in await vote(fake, gallery, ids[ann], cyd)
        standings = jam_cog(bot).jams.standings(jam.id)
        assert [(s.entry.owner_id, s.votes) for s in standings] == [
            (str(cyd), 3),  # ann (once, after changing), bob, dan
            (str(ann), 1),
            (str(bob), 0),
        ]
        _, ended = await answer(fake, "jam end", user_id=mod)
        assert "winners are announced" in ended.content
        result = fake.messages_in(thread_id)[-1]
        assert "🏆" in result.content and f"<@{cyd}>" in result.content
        assert "3 votes" in result.content and "a lighthouse on the moon" in result.content
        assert "Jam: lighthouses" in fake.messages_in(fake.channel_id)[-1].content
        late = await fake.click(gallery.id, ids[bob], user_id=dan)
        await late.wait_ack()
        assert "closed" in (await late.wait_original()).content


async def test_a_jam_moves_on_by_itself_when_its_time_is_up(
    fake: FakeDiscord, comfy: FakeComfyUI, tmp_path: Path
) -> None:
    settings = make_settings(tmp_path, comfy.url)
    ann, bob = fake.add_member("ann"), fake.add_member("bob")
    async with comfybot(fake, settings) as bot:
        await answer(
            fake,
            "jam start",
            {"theme": "cats", "minutes": 5, "vote_minutes": 5, "workflow": "sd15-txt2img"},
            user_id=fake.moderator_id,
        )
        [thread] = fake.threads_of(fake.channel_id)
        thread_id = int(thread["id"])
        await enter(bot, fake, thread_id, ann, "a cat")
        await enter(bot, fake, thread_id, bob, "a cat in a hat")
        cog = jam_cog(bot)
        cog.now = lambda: time.time() + 6 * 60  # the entries' time is up
        cog.wake()
        [gallery] = await fake.wait_for(lambda: galleries(fake, thread_id))
        assert len(gallery.attachments) == 2
        [jam] = cog.jams.active(str(fake.guild_id))
        ann_entry = next(e for e in cog.jams.entries(jam.id) if e.owner_id == str(ann))
        await vote(fake, gallery, f"cc:jv:{jam.id}:{ann_entry.job_id}:{ann_entry.number}", bob)
        # Apps → Upscale on the gallery takes the entry's own file and credits its maker
        first = min(cog.jams.entries(jam.id), key=lambda e: e.number)
        menu = await fake.message_command("Upscale", gallery.id, user_id=bob)
        question = await menu.wait_original()  # two images: which one?
        [chooser] = [c for c in question.iter_components() if c["type"] == 3]
        picked = await fake.select(question.id, chooser["custom_id"], ["0"], user_id=bob)
        await wait_result(fake, picked)
        assert bot.engine.recent(limit=1)[0].remix_of == first.job_id
        cog.now = lambda: time.time() + 12 * 60  # and the vote's
        cog.wake()
        result = await fake.wait_for(
            lambda: next((m for m in fake.messages_in(thread_id) if "🏆" in m.content), None)
        )
        assert f"<@{ann}>" in result.content and "a cat" in result.content
        assert cog.jams.active(str(fake.guild_id)) == []


async def test_a_jam_thread_follows_its_channels_policy(
    fake: FakeDiscord, comfy: FakeComfyUI, tmp_path: Path
) -> None:
    settings = make_settings(tmp_path, comfy.url)
    mod = fake.moderator_id
    async with comfybot(fake, settings) as bot:
        await answer(
            fake,
            "workflows disable",
            {"name": "sd15-img2img", "channel": fake.channel_id},
            user_id=mod,
        )
        await answer(fake, "jam start", {"theme": "boats", "minutes": 5}, user_id=mod)
        [thread] = fake.threads_of(fake.channel_id)
        it = await fake.slash(
            "imagine",
            {"prompt": "x", "workflow": "sd15-img2img"},
            channel_id=int(thread["id"]),
        )
        await it.wait_ack()
        refused = await it.wait_original()
        assert it.ephemeral and "not enabled in this channel" in refused.content
        assert bot.engine.recent() == []
