"""End to end with several ComfyUI backends: /queue shows them, results name theirs."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.comfy.test_pool import fakes, pool_settings, wait_for
from tests.e2e import answer, comfybot, field, wait_result, wait_stored
from tests.fakes.discord import FakeDiscord


async def test_queue_shows_each_backend_and_results_name_theirs(
    fake: FakeDiscord, tmp_path: Path
) -> None:
    bob, carol = fake.add_member("bob"), fake.add_member("carol")
    async with fakes(a={}, b={}, c={}) as servers:
        settings = pool_settings(tmp_path, servers, comfyui={"prefetch": 0})
        await servers["c"].go_offline()
        for server in servers.values():
            server.hold_steps()
        async with comfybot(fake, settings) as bot:
            its = []
            for user in (None, bob, carol):
                it = await fake.slash("imagine", {"prompt": "x", "steps": 1}, user_id=user)
                await it.wait_ack()
                its.append(it)
            await wait_for(lambda: all(servers[n].running_prompt_id for n in ("a", "b")))
            _, listing = await answer(fake, "queue")
            lines = listing.content.splitlines()
            assert "**a** · busy · 1 job(s)" in lines[0]
            assert "**b** · busy · 1 job(s)" in lines[1]
            assert "**c** · down" in lines[2]
            assert "1 job(s) waiting for a backend" in lines[3]
            assert sum("running on a" in line for line in lines) == 1
            assert sum("running on b" in line for line in lines) == 1
            await servers["c"].go_online()
            c = bot.engine.pool.get("c")
            assert c is not None
            await wait_for(lambda: c.up)  # the waiting job goes there now
            for server in servers.values():
                server.release_steps()
            made_on = set()
            for it in its:
                message = await wait_result(fake, it)
                made_on.add(field(message.embeds[0], "Backend"))
            assert made_on == {"a", "b", "c"}
            await wait_stored(bot)  # a job runs until stored, a moment after its result is posted
            _, idle = await answer(fake, "queue")
            assert "**a** · idle" in idle.content and "**c** · idle" in idle.content


async def test_a_job_handed_to_a_busy_comfyui_is_no_edit_until_it_starts(
    fake: FakeDiscord, tmp_path: Path
) -> None:
    members = [fake.add_member(f"m{i}") for i in range(5)]
    async with fakes(a={}, b={}) as servers:
        settings = pool_settings(tmp_path, servers, comfyui={"prefetch": 1})
        for server in servers.values():
            server.hold_steps()
        async with comfybot(fake, settings):
            its = []
            for member in members:
                it = await fake.slash("imagine", {"prompt": "x", "steps": 1}, user_id=member)
                await it.wait_ack()
                its.append(it)

            def received() -> int:
                return sum(len(s.prompts_received) for s in servers.values())

            # two run, two wait on the backends themselves, the fifth waits here
            await wait_for(lambda: received() == 4)
            last = its[4]
            assert last.original is not None and "position #1" in last.original.content
            servers["a"].release_steps(1)  # a's job ends, its next starts: the fifth goes to a
            await wait_for(lambda: received() == 5)
            await asyncio.sleep(1.0)  # over the progress interval: an edit due would have gone
            assert last.original is not None and "position #1" in last.original.content
            assert not last.original.edits  # #1 is close enough: waiting on ComfyUI is next
            for server in servers.values():
                server.release_steps()
            message = await wait_result(fake, last)
            assert not any("Sent to ComfyUI" in p.get("content", "") for _, p in message.edits)
            for it in its[:4]:
                await wait_result(fake, it)
