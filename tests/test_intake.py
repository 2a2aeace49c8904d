"""The intake: a burst of requests is worked on a few at a time, first come first served; a turn
is given back early, or taken from a slow peer, and nobody waits past their deadline."""

from __future__ import annotations

import asyncio
import time

import pytest

from bot.intake import Intake, Turn
from bot.settings import Settings
from tests.e2e import comfybot, wait_result
from tests.fakes.discord import FakeDiscord


async def test_at_most_so_many_at_once_in_the_order_they_came() -> None:
    intake = Intake(at_once=2)
    working: list[int] = []
    most = 0
    order: list[int] = []

    async def request(n: int) -> None:
        nonlocal most
        async with intake.turn() as turn:
            assert turn.held
            order.append(n)
            working.append(n)
            most = max(most, len(working))
            await asyncio.sleep(0.01)
            working.remove(n)

    await asyncio.gather(*(request(n) for n in range(7)))
    assert most == 2
    assert order == list(range(7))
    assert intake.free == 2 and intake.went_ahead == 0


async def test_a_turn_given_back_early_passes_to_the_next() -> None:
    intake = Intake(at_once=1)
    second_in = asyncio.Event()
    first_done = asyncio.Event()

    async def first() -> None:
        async with intake.turn() as turn:
            turn.release()
            turn.release()  # twice is once
            await asyncio.wait_for(second_in.wait(), 1)
        first_done.set()

    async def second() -> None:
        async with intake.turn() as turn:
            assert turn.held
            second_in.set()

    await asyncio.gather(first(), second())
    assert first_done.is_set() and intake.free == 1


async def test_a_slow_peer_keeps_its_turn_only_so_long() -> None:
    intake = Intake(at_once=1)
    entered: list[float] = []
    start = time.monotonic()

    async def slow() -> None:
        async with intake.turn() as turn:
            turn.release_within(0.05)
            await asyncio.sleep(0.5)  # its acknowledgement takes long

    async def next_one() -> None:
        await asyncio.sleep(0.01)
        async with intake.turn():
            entered.append(time.monotonic() - start)

    await asyncio.gather(slow(), next_one())
    assert entered and entered[0] < 0.3
    assert intake.free == 1


async def test_past_its_deadline_a_request_goes_ahead_without_a_turn() -> None:
    intake = Intake(at_once=1)
    held = asyncio.Event()
    release = asyncio.Event()
    outcome: list[Turn] = []

    async def holder() -> None:
        async with intake.turn():
            held.set()
            await release.wait()

    async def late() -> None:
        await held.wait()
        async with intake.turn(deadline=time.time() + 0.05) as turn:
            outcome.append(turn)
        release.set()

    await asyncio.wait_for(asyncio.gather(holder(), late()), 2)
    assert not outcome[0].held and intake.went_ahead == 1
    assert intake.free == 1  # the holder's turn came back, and nobody else's was taken


async def test_a_request_cancelled_while_waiting_leaves_no_turn_taken() -> None:
    intake = Intake(at_once=1)
    held = asyncio.Event()
    release = asyncio.Event()

    async def holder() -> None:
        async with intake.turn():
            held.set()
            await release.wait()

    async def waiter() -> None:
        async with intake.turn():
            pass

    holding = asyncio.create_task(holder())
    await held.wait()
    waiting = asyncio.create_task(waiter())
    await asyncio.sleep(0.01)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    release.set()
    await holding
    assert intake.free == 1
    async with intake.turn() as turn:
        assert turn.held


def test_an_intake_needs_a_turn() -> None:
    with pytest.raises(ValueError, match="at least one"):
        Intake(at_once=0)


async def test_a_command_waiting_behind_a_held_intake_is_still_answered_in_time(
    fake: FakeDiscord, settings: Settings
) -> None:
    async with comfybot(fake, settings) as bot:
        bot.engine.intake = Intake(at_once=1)
        async with bot.engine.intake.turn():  # every turn taken, as by a stuck request
            it = await fake.slash("imagine", {"prompt": "a lighthouse", "steps": 1})
            await it.wait_ack(timeout=5)
        assert it.acknowledged_at is not None and 0.5 < it.acknowledged_at < 2.5
        assert bot.engine.intake.went_ahead == 1
        assert (await wait_result(fake, it)).attachments
