"""End to end: the fair shared queue, its limits, /queue, /cancel, /history and groups (issue 4)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable
from pathlib import Path

import pytest

from bot.settings import Settings
from tests.conftest import make_settings
from tests.e2e import answer, comfybot, contents, field, prompt_text, wait_result
from tests.fakes.comfyui import FakeComfyUI
from tests.fakes.discord import FakeDiscord, FakeInteraction, FakeMessage
from tests.fakes.discord_fixtures import installed_fake


async def imagine(
    fake: FakeDiscord, prompt: str, user_id: int | None = None, **options: object
) -> FakeInteraction:
    """/imagine with one step, acknowledged (so jobs are queued in the order they are sent)."""
    it = await fake.slash("imagine", {"prompt": prompt, "steps": 1, **options}, user_id=user_id)
    await it.wait_ack()
    return it


@pytest.fixture
def bob(fake: FakeDiscord) -> int:
    """Another member of the guild than the one the commands come from."""
    return fake.add_member("bob")


async def held(fake: FakeDiscord, comfy: FakeComfyUI, prompt: str) -> FakeInteraction:
    """An /imagine whose job is running on ComfyUI, held at its first step."""
    comfy.hold_steps()
    it = await imagine(fake, prompt)
    await comfy.wait_until_held()
    return it


async def release_and_wait(
    fake: FakeDiscord, comfy: FakeComfyUI, interactions: Iterable[FakeInteraction]
) -> None:
    """Lets the held jobs run and waits for each interaction's result."""
    comfy.release_steps()
    for it in interactions:
        await wait_result(fake, it)


POSITION = re.compile(r"position (#\d+)")  # not a node's "(#9)" in a running line


def queued_at(position: int) -> object:
    return lambda m: f"Queued · position #{position}" in m.content


def order_received(comfy: FakeComfyUI) -> list[str]:
    return [prompt_text(body) for body in comfy.prompts_received]


async def watched_behind_eleven(
    fake: FakeDiscord, comfy: FakeComfyUI, members: list[int]
) -> FakeInteraction:
    """A job running (held), the first eleven members' jobs waiting, and the twelfth member's,
    the watched one, shown at #12."""
    await held(fake, comfy, "running")
    for i, member in enumerate(members[:11]):
        await imagine(fake, f"ahead {i}", member)
    watched = await imagine(fake, "watched", members[11])
    await watched.wait_original(queued_at(12))
    return watched


async def cancel_ahead(
    fake: FakeDiscord, members: list[int], watched: FakeInteraction, shown_at: tuple[int, ...]
) -> None:
    """The eleven ahead cancel one by one; the watched reply shows these positions on the way."""
    for position, member in zip(range(11, 0, -1), members, strict=False):
        _, cancelled = await answer(fake, "cancel", user_id=member)
        assert "Cancelling" in cancelled.content
        if position in shown_at:
            await watched.wait_original(queued_at(position))


# fairness -----------------------------------------------------------------------------------------
async def test_member_with_twenty_jobs_delays_others_by_at_most_one_turn(
    fake: FakeDiscord, comfy: FakeComfyUI, settings: Settings
) -> None:
    bob, carol = fake.add_member("bob"), fake.add_member("carol")
    async with comfybot(fake, settings):
        _, set_limit = await answer(
            fake,
            "workflows limits set",
            {"name": "max_queued_per_member", "value": "20"},
            user_id=fake.moderator_id,
        )
        assert "is now 20" in set_limit.content
        comfy.hold_steps()
        alices = [await imagine(fake, f"a{i}") for i in range(20)]
        await comfy.wait_until_held()
        b = await imagine(fake, "b", bob)
        c = await imagine(fake, "c", carol)
        # the waiting replies already show the fair order
        await b.wait_original(queued_at(1))
        await c.wait_original(queued_at(2))
        await alices[1].wait_original(queued_at(3))
        # a19 was acknowledged at #19; #20 and #21 are within one band of it: no edit for those
        await alices[19].wait_original(queued_at(19))

        comfy.release_steps(1)  # a0 finishes; the next slot goes to bob, not to alice's a1
        await b.wait_original(lambda m: "Queued" not in m.content)
        assert order_received(comfy) == ["a0", "b"]
        await c.wait_original(queued_at(1))
        # a1 is #2 now; its reply shows #2 or, the edit left to the running progress, #3
        shown = POSITION.search(alices[1].original.content)  # type: ignore[union-attr]
        assert shown is not None and shown.group(1) in ("#2", "#3")

        comfy.release_steps()
        await wait_result(fake, alices[-1], timeout=20)
        assert order_received(comfy) == ["a0", "b", "c"] + [f"a{i}" for i in range(1, 20)]
        for it in [b, c, *alices]:
            assert (await wait_result(fake, it)).attachments


async def test_per_member_limit_refuses_the_excess_with_a_clear_message(
    fake: FakeDiscord, comfy: FakeComfyUI, tmp_path: Path
) -> None:
    settings = make_settings(tmp_path, comfy.url, limits={"max_queued_per_member": 2})
    async with comfybot(fake, settings) as bot:
        comfy.hold_steps()
        accepted = [await imagine(fake, f"x{i}") for i in range(3)]  # 1 running + 2 waiting
        assert not any(it.ephemeral for it in accepted)
        it, refused = await answer(fake, "imagine", {"prompt": "one too many"})
        assert it.ephemeral
        assert "limit is 2 waiting and 1 running" in refused.content
        assert "/cancel" in refused.content
        assert len(bot.engine.recent()) == 3
        # another member is not affected
        other = await imagine(fake, "other", fake.add_member("bob"))
        assert not other.ephemeral
        # cancelling one makes room again
        await answer(fake, "cancel")
        again = await imagine(fake, "room again")
        assert not again.ephemeral
        await release_and_wait(fake, comfy, accepted)


async def test_moderators_are_exempt_unless_the_server_says_otherwise(
    fake: FakeDiscord, comfy: FakeComfyUI, tmp_path: Path
) -> None:
    settings = make_settings(tmp_path, comfy.url, limits={"max_queued_per_member": 1})
    mod = fake.moderator_id
    async with comfybot(fake, settings) as bot:
        comfy.hold_steps()
        jobs = [await imagine(fake, f"m{i}", mod) for i in range(4)]
        assert not any(it.ephemeral for it in jobs)
        await answer(
            fake, "workflows limits set", {"name": "moderators_exempt", "value": "no"}, user_id=mod
        )
        it, refused = await answer(fake, "imagine", {"prompt": "m5"}, user_id=mod)
        assert it.ephemeral and "limit is 1 waiting" in refused.content
        assert len(bot.engine.recent()) == 4
        await release_and_wait(fake, comfy, jobs)


async def test_moderators_go_first_when_the_server_says_so(
    fake: FakeDiscord, comfy: FakeComfyUI, settings: Settings
) -> None:
    mod = fake.moderator_id
    async with comfybot(fake, settings):
        await answer(
            fake, "workflows limits set", {"name": "moderators_first", "value": "true"}, user_id=mod
        )
        first = await held(fake, comfy, "first")
        waiting = await imagine(fake, "waiting", fake.add_member("bob"))
        await waiting.wait_original(queued_at(1))
        moderator = await imagine(fake, "moderator", mod)
        await moderator.wait_original(queued_at(1))
        await waiting.wait_original(queued_at(2))
        await release_and_wait(fake, comfy, [first, waiting, moderator])
        assert order_received(comfy) == ["first", "moderator", "waiting"]


async def test_cooldown_between_a_members_jobs(
    fake: FakeDiscord, comfy: FakeComfyUI, tmp_path: Path
) -> None:
    settings = make_settings(tmp_path, comfy.url, limits={"cooldown_seconds": 60})
    async with comfybot(fake, settings):
        first = await imagine(fake, "first")
        it, refused = await answer(fake, "imagine", {"prompt": "second"})
        assert (
            it.ephemeral and "Cooldown" in refused.content and re.search(r"\d+ s", refused.content)
        )
        moderator = await imagine(fake, "mod", fake.moderator_id)
        assert not moderator.ephemeral
        await wait_result(fake, first)
        await wait_result(fake, moderator)


async def test_waiting_replies_show_their_position_as_jobs_finish_and_are_cancelled(
    fake: FakeDiscord, comfy: FakeComfyUI, tmp_path: Path
) -> None:
    # edits are paid for by the time jobs run (one per interval): the first job runs 0.5 s at
    # least, so at a 0.2 s interval a reply can afford three besides its start and result
    settings = make_settings(tmp_path, comfy.url, discord={"progress_interval": 0.2})
    bob, carol, dave = (fake.add_member(n) for n in ("bob", "carol", "dave"))
    async with comfybot(fake, settings):
        comfy.hold_steps()
        running = await imagine(fake, "running")
        run_for = asyncio.get_running_loop().time() + 0.5
        await comfy.wait_until_held()
        b = await imagine(fake, "b", bob)
        c = await imagine(fake, "c", carol)
        d = await imagine(fake, "d", dave)
        await d.wait_original(queued_at(3))
        _, cancelled = await answer(fake, "cancel", user_id=carol)
        assert "Cancelling" in cancelled.content
        await d.wait_original(queued_at(2))
        assert "cancelled" in (await wait_result(fake, c)).content
        await asyncio.sleep(max(0.0, run_for - asyncio.get_running_loop().time()))
        comfy.release_steps(1)  # the running job finishes, bob's starts
        await d.wait_original(queued_at(1))
        await b.wait_original(lambda m: "Queued" not in m.content)
        comfy.release_steps()
        message = await wait_result(fake, d)
        shown = ["#3"]  # the acknowledgement, then the edits
        shown += [m.group(1) for t in contents(message) for m in [POSITION.search(t)] if m]
        assert [s for i, s in enumerate(shown) if i == 0 or shown[i - 1] != s] == ["#3", "#2", "#1"]
        await wait_result(fake, running)
        await wait_result(fake, b)


async def test_a_waiting_reply_is_edited_when_its_band_changes_not_on_every_move(
    fake: FakeDiscord, comfy: FakeComfyUI, settings: Settings
) -> None:
    members = [fake.add_member(f"m{i}") for i in range(12)]
    async with comfybot(fake, settings):
        watched = await watched_behind_eleven(fake, comfy, members)
        # bands: 10-19, 5-9, 3-4, 2, 1. Within one band of what it shows, a move is not worth an
        # edit; two bands away (#4) it is, and so is a new band among the next three. (The queue
        # moves by cancels: no job has finished, so no measured time limits the edits yet.)
        await cancel_ahead(fake, members, watched, shown_at=(4, 2, 1))
        comfy.release_steps(1)
        await watched.wait_original(lambda m: "Queued" not in m.content)
        comfy.release_steps()
        message = await wait_result(fake, watched)
        waiting = [t for t in contents(message) if "Queued" in t]
        shown = [m.group(1) for t in waiting for m in [POSITION.search(t)] if m]
        assert shown == ["#4", "#2", "#1"], shown  # 3 edits for 11 moves of the queue


async def test_a_reply_spends_no_more_than_its_budget_keeping_its_position_within_a_band(
    fake: FakeDiscord, comfy: FakeComfyUI, settings: Settings
) -> None:
    members = [fake.add_member(f"m{i}") for i in range(12)]
    async with comfybot(fake, settings):
        # one quick run measured: jobs of this workflow can afford one edit besides the
        # acknowledgement, the start and the result (one per 1.5 s interval on the GPU)
        await wait_result(fake, await imagine(fake, "warm-up"))
        watched = await watched_behind_eleven(fake, comfy, members)
        # the queue moves from #12 to #1 by cancels. Staying within one band takes two edits
        # (#4 and #1): the one it can afford and the start edit's, which is then left out; the
        # bands among the next three (#2) are not affordable
        await cancel_ahead(fake, members, watched, shown_at=(4, 1))
        await asyncio.sleep(2.0)  # longer than the interval: a start edit would not have to wait
        released = asyncio.get_running_loop().time()
        comfy.release_steps()
        message = await wait_result(fake, watched)
        ran_for = asyncio.get_running_loop().time() - released  # more than it ran on the GPU
        shown = [m.group(1) for t in contents(message) for m in [POSITION.search(t)] if m]
        assert shown == ["#4", "#1"], shown
        requests = [path for _, path in fake.requests if watched.token in path]
        # acknowledgement, #4, #1, the result: the start edit left out. (A machine so slow that
        # the one-step job ran longer than an interval has earned one more.)
        assert len(requests) <= (4 if ran_for < 1.5 else 5), requests


async def test_the_result_is_not_delayed_by_a_pending_position_edit(
    fake: FakeDiscord, comfy: FakeComfyUI, tmp_path: Path
) -> None:
    settings = make_settings(tmp_path, comfy.url, discord={"progress_interval": 20.0})
    bob, carol = fake.add_member("bob"), fake.add_member("carol")
    async with comfybot(fake, settings):
        first = await held(fake, comfy, "first")
        await imagine(fake, "b", bob)
        c = await imagine(fake, "c", carol)
        acknowledged = asyncio.get_running_loop().time()
        await c.wait_original(queued_at(2))
        await answer(fake, "cancel", user_id=bob)  # c moves to #1: an edit is due, but the
        comfy.release_steps()  # message was just written, so it waits for the 20 s interval
        message = await wait_result(fake, c)
        assert asyncio.get_running_loop().time() - acknowledged < 10.0
        [(_, final)] = message.edits  # the pending edits were dropped; only the result went out
        assert "ready" in final["content"]
        await wait_result(fake, first)


# /queue, /cancel, /history ------------------------------------------------------------------------
async def test_queue_lists_jobs_in_order_and_highlights_ones_own(
    fake: FakeDiscord, comfy: FakeComfyUI, settings: Settings, bob: int
) -> None:
    async with comfybot(fake, settings) as bot:
        _, empty = await answer(fake, "queue")
        assert "empty" in empty.content
        mine = await held(fake, comfy, "mine")
        theirs = await imagine(fake, "theirs", bob)
        mine2 = await imagine(fake, "mine again")
        [j_mine2, j_theirs, j_mine] = bot.engine.recent()
        it, listing = await answer(fake, "queue")
        assert it.ephemeral
        lines = listing.content.splitlines()
        assert len(lines) == 3
        assert f"`{j_mine.id}`" in lines[0] and "running" in lines[0]
        assert f"`{j_theirs.id}`" in lines[1] and "#1" in lines[1] and f"<@{bob}>" in lines[1]
        assert f"`{j_mine2.id}`" in lines[2] and "#2" in lines[2] and "sd15-txt2img" in lines[2]
        assert lines[0].startswith("**") and "← you" in lines[0]
        assert lines[2].startswith("**") and "← you" in lines[2]
        assert "← you" not in lines[1] and not lines[1].startswith("**")
        _, as_bob = await answer(fake, "queue", user_id=bob)
        assert "← you" in as_bob.content.splitlines()[1]
        await release_and_wait(fake, comfy, [mine, theirs, mine2])


async def test_cancel_own_job_but_not_others_and_moderators_cancel_any(
    fake: FakeDiscord, comfy: FakeComfyUI, settings: Settings, bob: int
) -> None:
    async with comfybot(fake, settings) as bot:
        running = await held(fake, comfy, "running")
        bobs = await imagine(fake, "bob's", bob)
        [j_bob, j_running] = bot.engine.recent()
        mine = await fake.autocomplete("cancel", {}, "job", user_id=bob)
        assert [c["value"] for c in mine] == [j_bob.id]
        everyone = await fake.autocomplete("cancel", {}, "job", user_id=fake.moderator_id)
        assert {c["value"] for c in everyone} == {j_bob.id, j_running.id}

        it, refused = await answer(fake, "cancel", {"job": j_running.id}, user_id=bob)
        assert it.ephemeral and "only cancel your own" in refused.content
        assert not bot.engine.get_job(j_running.id).state.finished

        it, ok = await answer(fake, "cancel", {"job": j_bob.id}, user_id=bob)
        assert it.ephemeral and j_bob.id in ok.content
        assert "cancelled" in (await wait_result(fake, bobs)).content

        _, ok = await answer(fake, "cancel", {"job": j_running.id}, user_id=fake.moderator_id)
        assert j_running.id in ok.content
        done = await wait_result(fake, running)
        assert "cancelled" in done.content and "Moderator" in done.content
        _, unknown = await answer(fake, "cancel", {"job": "nope"})
        assert "no job `nope`" in unknown.content


async def test_cancel_a_whole_group_by_the_id_its_reply_shows(
    fake: FakeDiscord, comfy: FakeComfyUI, settings: Settings
) -> None:
    async with comfybot(fake, settings) as bot:
        comfy.hold_steps()
        it = await imagine(fake, "four", count=3)
        shown = await it.wait_original(lambda m: "job `" in m.content)
        key = re.search(r"job `([0-9a-f]{8})`", shown.content).group(1)
        _, ok = await answer(fake, "cancel", {"job": key})
        assert key in ok.content
        message = await wait_result(fake, it)
        assert "cancelled" in message.content
        assert {j.state.value for j in bot.engine.recent()} == {"cancelled"}


async def test_history_lists_recent_jobs_with_links_to_their_results(
    fake: FakeDiscord, comfy: FakeComfyUI, settings: Settings, bob: int
) -> None:
    async with comfybot(fake, settings) as bot:
        mine = await wait_result(fake, await imagine(fake, "mine"))
        theirs = await wait_result(fake, await imagine(fake, "theirs", bob))
        [j_theirs, j_mine] = bot.engine.recent()

        def link(message: FakeMessage) -> str:
            return f"https://discord.com/channels/{fake.guild_id}/{fake.channel_id}/{message.id}"

        it, history = await answer(fake, "history")
        assert it.ephemeral
        lines = history.content.splitlines()
        assert f"`{j_theirs.id}`" in lines[0] and link(theirs) in lines[0]
        assert f"`{j_mine.id}`" in lines[1] and link(mine) in lines[1]
        _, only_bob = await answer(fake, "history", {"member": bob})
        assert j_theirs.id in only_bob.content and j_mine.id not in only_bob.content


async def test_history_links_to_a_result_posted_in_the_channel_after_the_token_expired(
    comfy: FakeComfyUI, tmp_path: Path
) -> None:
    async with installed_fake(token_lifetime=1.0) as fake:
        settings = make_settings(tmp_path, comfy.url)
        async with comfybot(fake, settings) as bot:
            it = await held(fake, comfy, "slow")
            await asyncio.sleep(1.2)
            comfy.release_steps()
            posted = await fake.wait_for(
                lambda: next((m for m in fake.messages_in() if m.attachments), None), timeout=10
            )
            assert posted.id != it.original_id
            # where the result is is written with the delivered mark, once Discord answered
            await fake.wait_for(lambda: bot.engine.recent(limit=1)[0].delivered, timeout=5)
            _, history = await answer(fake, "history")
            url = f"https://discord.com/channels/{fake.guild_id}/{fake.channel_id}/{posted.id}"
            assert url in history.content


# groups and remixes -------------------------------------------------------------------------------
async def test_count_four_delivers_four_images_in_one_message(
    fake: FakeDiscord, comfy: FakeComfyUI, settings: Settings
) -> None:
    async with comfybot(fake, settings) as bot:
        it = await imagine(fake, "four cats", count=4, seed=100)
        message = await wait_result(fake, it)
        assert len(message.attachments) == 4
        assert it.followups == []
        jobs = sorted(bot.engine.recent(), key=lambda j: j.values["seed"])
        assert [j.values["seed"] for j in jobs] == [100, 101, 102, 103]
        assert len({j.group_id for j in jobs}) == 1
        assert field(message.embeds[0], "Seeds") == "100, 101, 102, 103"
        variations = [c for c in message.custom_ids if c.startswith("cc:var:")]
        assert variations == [f"cc:var:{j.id}:{n}" for n, j in enumerate(jobs, start=1)]
        _, too_many = await answer(fake, "imagine", {"prompt": "x", "count": 5})
        assert "`count`" in too_many.content and "4" in too_many.content


async def test_variations_by_another_member_credit_the_original(
    fake: FakeDiscord, comfy: FakeComfyUI, settings: Settings
) -> None:
    alice, bob = fake.member_id, fake.add_member("bob")
    async with comfybot(fake, settings) as bot:
        original = await wait_result(fake, await imagine(fake, "a fox", count=2, seed=500))
        first, _ = sorted(bot.engine.recent(), key=lambda j: j.values["seed"])
        # Variations of the first image: seeds around 500 that the group has not used yet
        click = await fake.click(original.id, f"cc:var:{first.id}:1", user_id=bob)
        result = await wait_result(fake, click)
        assert len(result.attachments) == 2
        remixes = [j for j in bot.engine.recent() if j.owner_id == str(bob)]
        assert len(remixes) == 2
        assert {j.remix_of for j in remixes} == {first.id}
        assert all(j.values["prompt"] == "a fox" for j in remixes)
        seeds = {j.values["seed"] for j in remixes}
        assert len(seeds) == 2 and not {500, 501} & seeds
        assert all(abs(s - 500) <= 3 for s in seeds), seeds
        remix_of = field(result.embeds[0], "Remix of")
        assert remix_of is not None and f"<@{alice}>" in remix_of and first.id in remix_of
        assert f"<@{bob}>" in result.content
        # and a Reroll of someone else's result is credited too
        reroll = await fake.click(original.id, f"cc:reroll:{first.id}", user_id=bob)
        rerolled = await wait_result(fake, reroll)
        assert f"<@{alice}>" in (field(rerolled.embeds[0], "Remix of") or "")
        _, history = await answer(fake, "history", {"member": bob})
        assert f"remix of `{first.id}`" in history.content
