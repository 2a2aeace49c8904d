"""End to end: a jam from /jam start to the winners, through a bot restart, with its votes;
results shown as the entries close, jobs that finish after it, and entries of every kind."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from bot.app import ComfyBot
from bot.jams import JamState
from bot.jobs.model import JobState
from bot.media import sniff
from bot.settings import Settings
from cogs.jam import JamCog
from tests.cogs import test_e2e_media
from tests.conftest import make_settings
from tests.e2e import answer, comfybot, wait_result, wait_stored
from tests.fakes.comfyui import FakeComfyUI
from tests.fakes.discord import CommandUnavailable, FakeDiscord, FakeMessage
from tests.media_packs import EXPECTED

# the media tests' workflow packs (`media_comfy`, which makes every kind, is in conftest)
packs, media_settings = test_e2e_media.packs, test_e2e_media.media_settings


def jam_cog(bot: ComfyBot) -> JamCog:
    cog = bot.get_cog("JamCog")
    # each bot loads its extensions afresh, so the class is the one of that load
    assert cog is not None and type(cog).__name__ == "JamCog"
    return cog  # type: ignore[return-value]


async def enter(
    bot: ComfyBot,
    fake: FakeDiscord,
    thread: int,
    user: int,
    prompt: str,
    count: int = 1,
    workflow: str | None = None,
) -> FakeMessage:
    """Ask for a result in a thread; once it is posted and stored (entered, if it counts)."""
    options: dict[str, Any] = {"prompt": prompt, "steps": 1, "count": count}
    if workflow is not None:  # the media packs take a prompt and a seed
        options = {"prompt": prompt, "workflow": workflow}
    it = await fake.slash("imagine", options, user_id=user, channel_id=thread)
    message = await wait_result(fake, it, timeout=30)
    await wait_stored(bot)  # a job is entered once stored, a moment after its result is posted
    return message


def galleries(fake: FakeDiscord, thread: int) -> list[FakeMessage]:
    """The messages of a thread with vote buttons."""
    return [
        m for m in fake.messages_in(thread) if any(c.startswith("cc:jv:") for c in m.custom_ids)
    ]


def notes(fake: FakeDiscord, thread: int) -> list[FakeMessage]:
    """The bot's notes in a thread that a result is not entered."""
    return [m for m in fake.messages_in(thread) if "not entered" in m.content]


async def start_jam(fake: FakeDiscord, theme: str, **options: Any) -> int:
    """A moderator starts a jam here; its thread's id."""
    await answer(fake, "jam start", {"theme": theme, "minutes": 30, **options},
                 user_id=fake.moderator_id)  # fmt: skip
    [thread] = [t for t in fake.threads_of(fake.channel_id) if t["name"] == f"Jam: {theme}"]
    return int(thread["id"])


async def jam_with_entry(
    bot: ComfyBot, fake: FakeDiscord, theme: str, user: int, prompt: str
) -> int:
    """A moderator starts a jam on `theme` and `user` enters a result for `prompt`; its thread."""
    thread_id = await start_jam(fake, theme)
    await enter(bot, fake, thread_id, user, prompt)
    return thread_id


def vote_id(cog: JamCog, jam_id: str, owner: int) -> str:
    """The custom id of the vote button of `owner`'s entry."""
    [entry] = [e for e in cog.jams.entries(jam_id) if e.owner_id == str(owner)]
    return f"cc:jv:{jam_id}:{entry.job_id}:{entry.number}"


def hold_storing(monkeypatch: pytest.MonkeyPatch, bot: ComfyBot, owner: int) -> asyncio.Event:
    """Hold the storing of `owner`'s results (their files and records) until the returned event
    is set: their results are shown, their files not written yet."""
    runner = bot.engine.runner
    persist = runner._persist
    gate = asyncio.Event()

    async def held(active: Any, *args: Any) -> None:
        if active.job.owner_id == str(owner):
            await gate.wait()
        await persist(active, *args)

    monkeypatch.setattr(runner, "_persist", held)
    return gate


async def vote(fake: FakeDiscord, gallery: FakeMessage, custom_id: str, user: int) -> str:
    click = await fake.click(gallery.id, custom_id, user_id=user)
    await click.wait_ack()
    assert click.ephemeral
    return (await click.wait_original()).content


@pytest.fixture
def ann(fake: FakeDiscord) -> int:
    """A member who enters jams."""
    return fake.add_member("ann")


@pytest.fixture
def bob(fake: FakeDiscord, ann: int) -> int:
    """A second member who enters jams, made after `ann`."""
    return fake.add_member("bob")


async def test_a_jam_runs_from_start_to_winners_through_a_restart(
    fake: FakeDiscord, comfy: FakeComfyUI, settings: Settings
) -> None:
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
        await fake.wait_for(lambda: notes(fake, thread_id))
        await enter(bot, fake, fake.channel_id, bob, "not in the thread")  # not an entry either
        [note] = notes(fake, thread_id)
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
    fake: FakeDiscord, comfy: FakeComfyUI, settings: Settings, ann: int, bob: int
) -> None:
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
    fake: FakeDiscord, comfy: FakeComfyUI, settings: Settings
) -> None:
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


async def test_a_result_shown_as_the_jam_ends_is_in_the_gallery_however_late_it_is_stored(
    fake: FakeDiscord, comfy: FakeComfyUI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings(tmp_path, comfy.url)
    ann, bob, cyd = (fake.add_member(n) for n in ("ann", "bob", "cyd"))
    async with comfybot(fake, settings) as bot:
        thread_id = await jam_with_entry(bot, fake, "storms", ann, "a storm at sea")
        cog = jam_cog(bot)
        [jam] = cog.jams.active(str(fake.guild_id))
        gate = hold_storing(monkeypatch, bot, bob)
        try:
            it = await fake.slash(
                "imagine", {"prompt": "a storm over town", "steps": 1},
                user_id=bob, channel_id=thread_id,
            )  # fmt: skip
            shown = await wait_result(fake, it)  # bob's result is in the thread...
            [job] = bot.engine.recent(owner_id=str(bob), limit=1)
            assert job.state is JobState.RUNNING  # ...its files and record not stored yet
            end = await fake.slash("jam end", {}, user_id=fake.moderator_id, channel_id=thread_id)
            await fake.wait_for(lambda: cog.jams.get(jam.id).state is JamState.VOTING)
        finally:
            gate.set()  # the entries are closed: now bob's files are stored
        await end.wait_ack()
        ended = await end.wait_original(lambda m: not m.loading, timeout=20)
        assert "vote is open" in ended.content
        [gallery] = galleries(fake, thread_id)
        entries = {e.owner_id: e for e in cog.jams.entries(jam.id)}
        assert [a.filename for a in gallery.attachments] == [
            f"{entries[str(ann)].job_id}-01.png",
            f"{job.id}-01.png",
        ]
        assert gallery.attachments[1].data == shown.attachments[0].data
        assert f"<@{bob}>: a storm over town" in gallery.content
        assert notes(fake, thread_id) == []  # nobody is told their result did not count
        ids = {who: vote_id(cog, jam.id, who) for who in (ann, bob)}
        assert set(gallery.custom_ids) == set(ids.values())
        assert "goes to entry #2" in await vote(fake, gallery, ids[bob], ann)
        assert "goes to entry #2" in await vote(fake, gallery, ids[bob], cyd)
        assert "goes to entry #1" in await vote(fake, gallery, ids[ann], bob)
        _, over = await answer(fake, "jam end", user_id=fake.moderator_id, channel_id=thread_id)
        assert "winners are announced" in over.content
        result = fake.messages_in(thread_id)[-1]
        assert "🏆" in result.content and f"<@{bob}>" in result.content
        assert "2 votes" in result.content and "a storm over town" in result.content
        assert f"<@{ann}> (1 vote" in result.content


async def test_a_job_running_as_the_jam_ends_is_entered_under_the_gallery_when_ready(
    fake: FakeDiscord, comfy: FakeComfyUI, settings: Settings, ann: int, bob: int
) -> None:
    async with comfybot(fake, settings) as bot:
        thread_id = await jam_with_entry(bot, fake, "rivers", ann, "a river at night")
        cog = jam_cog(bot)
        [jam] = cog.jams.active(str(fake.guild_id))
        comfy.hold_steps()
        it = await fake.slash(
            "imagine", {"prompt": "a river of stars", "steps": 2},
            user_id=bob, channel_id=thread_id,
        )  # fmt: skip
        await comfy.wait_until_held()  # bob's job runs as the entries close
        _, ended = await answer(fake, "jam end", user_id=fake.moderator_id, channel_id=thread_id)
        assert "vote is open" in ended.content and "1 entry is still being made" in ended.content
        [gallery] = galleries(fake, thread_id)
        assert len(gallery.attachments) == 1 and f"<@{ann}>" in gallery.content
        comfy.release_steps()
        shown = await wait_result(fake, it)
        _, late = await fake.wait_for(lambda: len(galleries(fake, thread_id)) == 2 and galleries(
            fake, thread_id))  # fmt: skip
        [job] = bot.engine.recent(owner_id=str(bob), limit=1)
        assert [a.filename for a in late.attachments] == [f"{job.id}-01.png"]
        assert late.attachments[0].data == shown.attachments[0].data
        assert "made before the entries closed" in late.content
        assert f"<@{bob}>: a river of stars" in late.content
        assert notes(fake, thread_id) == []
        assert late.custom_ids == [vote_id(cog, jam.id, bob)]
        assert "goes to entry #2" in await vote(fake, late, vote_id(cog, jam.id, bob), ann)
        await answer(fake, "jam end", user_id=fake.moderator_id, channel_id=thread_id)
        result = fake.messages_in(thread_id)[-1]
        assert "🏆" in result.content and f"<@{bob}>" in result.content


async def test_a_job_made_after_the_jam_ended_is_not_entered_and_its_owner_is_told(
    fake: FakeDiscord, comfy: FakeComfyUI, settings: Settings, ann: int, bob: int
) -> None:
    async with comfybot(fake, settings) as bot:
        thread_id = await jam_with_entry(bot, fake, "hills", ann, "green hills")
        await answer(fake, "jam end", user_id=fake.moderator_id, channel_id=thread_id)
        await enter(bot, fake, thread_id, bob, "hills in fog")  # during the vote
        [note] = await fake.wait_for(lambda: notes(fake, thread_id))
        assert f"<@{bob}>" in note.content and "closed its entries" in note.content
        [gallery] = galleries(fake, thread_id)
        assert len(gallery.attachments) == 1


async def test_entries_of_every_kind_are_in_the_gallery_as_what_they_are(
    fake: FakeDiscord, media_settings: Settings
) -> None:
    makers = {  # member: the workflow of their entry
        fake.add_member("ann"): "txt2video",
        fake.add_member("bob"): "animated-webp",
        fake.add_member("cyd"): "txt2audio",
        fake.add_member("dan"): "txt2mesh",
        fake.add_member("eve"): "still-and-text",
    }
    async with comfybot(fake, media_settings) as bot:
        thread_id = await start_jam(fake, "anything goes")
        for who, workflow in makers.items():
            await enter(bot, fake, thread_id, who, f"a lighthouse by {who}", workflow=workflow)
        _, ended = await answer(fake, "jam end", user_id=fake.moderator_id, channel_id=thread_id)
        assert "vote is open" in ended.content
        [gallery] = galleries(fake, thread_id)
        cog = jam_cog(bot)
        [jam] = cog.jams.active(str(fake.guild_id))
        expected_names, expected_types = [], []
        for entry in cog.jams.entries(jam.id):
            job = bot.engine.get_job(entry.job_id)
            assert job is not None and job.workflow == makers[int(entry.owner_id)]
            files = [(i, k) for i, k in enumerate(EXPECTED[job.workflow], 1) if k[0] != "text"]
            files.sort(key=lambda f: f[1][0] != "image")  # the still before its 3D model
            expected_names += [f"{job.id}-{i:02d}.{ext}" for i, (_, _, ext) in files]
            expected_types += [mime for _, (_, mime, _) in files]
            assert f"<@{entry.owner_id}>: a lighthouse by {entry.owner_id}" in gallery.content
        assert [a.filename for a in gallery.attachments] == expected_names
        assert [sniff(a.data).mime for a in gallery.attachments] == expected_types
        for attachment in gallery.attachments:
            job_id, name = attachment.filename.split("-", 1)
            job = bot.engine.get_job(job_id)
            assert job is not None
            [output] = [o for o in job.outputs if o.filename == name]
            assert attachment.data == Path(output.path).read_bytes()
        [text_job] = [bot.engine.get_job(e.job_id) for e in cog.jams.entries(jam.id)
                      if e.workflow == "still-and-text"]  # fmt: skip
        assert text_job is not None
        [text] = [o for o in text_job.outputs if o.kind == "text"]
        assert Path(text.path).read_text().strip()[:40] in gallery.content
        ann = next(iter(makers))
        bob_vote = vote_id(cog, jam.id, ann)
        assert "goes to entry" in await vote(fake, gallery, bob_vote, list(makers)[1])
        await answer(fake, "jam end", user_id=fake.moderator_id, channel_id=thread_id)
        result = fake.messages_in(thread_id)[-1]
        assert "🏆" in result.content and f"<@{ann}>" in result.content
