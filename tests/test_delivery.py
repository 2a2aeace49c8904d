"""Progress coalescing and fitting images to upload limits."""

from __future__ import annotations

import asyncio
import io
import itertools
import os
import time

from PIL import Image

from bot.delivery import Coalescer, fit_image, progress_bar


async def test_coalescer_sends_the_latest_state_at_most_once_per_interval() -> None:
    sent: list[tuple[float, int]] = []

    async def send(state: int) -> None:
        sent.append((time.monotonic(), state))

    coalescer: Coalescer[int] = Coalescer(send, interval=0.2)
    began = time.monotonic()
    for i in range(50):
        coalescer.push(i)
        await asyncio.sleep(0.01)
    pushing = time.monotonic() - began  # 0.5 s, longer on a loaded machine
    await coalescer.finish(999)
    states = [s for _, s in sent]
    assert states[0] == 0 and states[-1] == 999
    # one send per 0.2 s while pushing (the first at once), plus the final
    assert 3 <= len(sent) - 1 <= int(pushing / 0.2) + 1
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(sent[:-1])]
    assert all(gap >= 0.19 for gap in gaps)
    assert states[:-1] == sorted(states[:-1])


async def test_final_state_is_never_dropped_even_when_a_send_fails() -> None:
    calls: list[int] = []

    async def flaky(state: int) -> None:
        calls.append(state)
        if state == 1:
            raise RuntimeError("edit failed")

    coalescer: Coalescer[int] = Coalescer(flaky, interval=0.05)
    coalescer.push(1)
    await asyncio.sleep(0.01)
    await coalescer.finish(2)
    coalescer.push(3)  # ignored once finished
    await asyncio.sleep(0.1)
    assert calls == [1, 2]


def _noise_png(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.frombytes("RGB", (width, height), os.urandom(width * height * 3)).save(buf, "PNG")
    return buf.getvalue()


def test_small_images_are_left_alone() -> None:
    data = _noise_png(32, 32)
    fitted = fit_image(data, "a.png", 1024 * 1024)
    assert fitted.data == data and fitted.filename == "a.png" and fitted.note is None


def test_large_images_are_reencoded_or_downscaled_to_fit() -> None:
    data = _noise_png(600, 600)
    limit = 200_000
    assert len(data) > limit
    fitted = fit_image(data, "big.png", limit)
    assert len(fitted.data) <= limit
    assert fitted.note and "re-encoded" in fitted.note
    with Image.open(io.BytesIO(fitted.data)) as img:
        assert img.format in ("WEBP", "JPEG")
        assert fitted.filename.endswith((".webp", ".jpg"))
    tiny = fit_image(data, "big.png", 20_000)
    assert len(tiny.data) <= 20_000 and tiny.note and "downscaled" in tiny.note


def test_progress_bar() -> None:
    assert progress_bar(0, 10, width=4) == "▱▱▱▱ 0%"
    assert progress_bar(5, 10, width=4) == "▰▰▱▱ 50%"
    assert progress_bar(10, 10, width=4) == "▰▰▰▰ 100%"


async def test_finish_lets_a_send_in_flight_complete_instead_of_cutting_it() -> None:
    started, release = asyncio.Event(), asyncio.Event()
    completed: list[int] = []

    async def slow(state: int) -> None:
        started.set()
        await release.wait()
        completed.append(state)

    coalescer: Coalescer[int] = Coalescer(slow, interval=0.05)
    coalescer.push(1)
    await started.wait()
    finishing = asyncio.create_task(coalescer.finish(2, send=lambda s: _record(completed, s)))
    await asyncio.sleep(0.05)
    assert not finishing.done()  # waiting for the edit in flight, not cancelling it
    release.set()
    await finishing
    assert completed == [1, 2]


async def _record(into: list[int], state: int) -> None:
    into.append(state)


def test_a_waiting_reply_is_edited_for_bands_not_for_moves() -> None:
    from bot.delivery import position_edit_due

    assert position_edit_due(None, 40, 0.0)  # nothing shown yet
    assert not position_edit_due(40, 21, 0.0)  # same band (20-49)
    assert not position_edit_due(40, 19, 5.0)  # next band, shown 5 s ago: wait
    assert position_edit_due(40, 19, 31.0)  # next band, 30 s later: show it
    assert position_edit_due(40, 9, 0.0)  # two bands away: never wrong by more than one
    assert position_edit_due(3, 2, 0.0)  # among the next three, every band shows
    assert position_edit_due(12, 30, 0.0) is False  # pushed back by one band
    assert position_edit_due(40, 60, 60.0) is False  # not even when the last edit is old
    assert position_edit_due(1, 2, 0.0)  # among the next three, every band shows
    assert position_edit_due(12, 60, 0.0)  # pushed back two bands
    # what a reply can afford. Its slack is shared with the running progress: edits that keep
    # it within one band may use all of it and one more (the start edit then left out)...
    assert position_edit_due(40, 9, 0.0, edits=4, allowance=4)
    assert not position_edit_due(40, 9, 0.0, edits=5, allowance=4)
    # ...the next band only while it and those still needed on the way (from #19: 10-19 is
    # band 4, so two: at #4 and #1) take at most half of it
    assert position_edit_due(40, 19, 31.0, edits=0, allowance=6)  # 0 + 1 + 2 <= 3
    assert not position_edit_due(40, 19, 31.0, edits=1, allowance=6)
    # among the next three, the whole slack
    assert position_edit_due(3, 2, 0.0, edits=3, allowance=4)  # 3 + 1 + 0 <= 4
    assert not position_edit_due(3, 2, 0.0, edits=4, allowance=4)
    assert position_edit_due(9, 4, 31.0, edits=0, allowance=4)  # 0 + 1 + 1 (at #1) <= 4 // 2
    assert not position_edit_due(9, 4, 31.0, edits=1, allowance=4)


def test_edits_to_the_front_cover_two_bands_each() -> None:
    from bot.delivery import edits_to_front, start_edit_due

    # bands 1, 2, 3-4, 5-9, 10-19, 20-49, 50-99, 100-199, 200-499, 500-999, 1000-1999
    assert [edits_to_front(p) for p in (1, 2, 3, 5, 10, 20, 50, 199, 200, 1999)] == [
        0,
        0,
        1,
        1,
        2,
        2,
        3,
        3,
        4,
        5,
    ]
    assert start_edit_due(4, 4) and not start_edit_due(5, 4) and start_edit_due(9, None)


def test_a_reply_may_wait_with_as_many_edits_as_its_running_would_make() -> None:
    from bot.delivery import waiting_allowance

    assert waiting_allowance(1, None, 1.5) is None  # nothing measured: no limit yet
    assert waiting_allowance(1, 6.0, 1.5) == 4
    assert waiting_allowance(2, 2.0, 1.5) == 4
    assert waiting_allowance(1, 0.2, 1.5) == 1  # a job that runs at all runs one interval
    # 3 s on the GPU, as the bot times it a little more: still two intervals, not three
    assert waiting_allowance(1, 3.05, 1.5) == 2


def test_the_budget_is_three_requests_a_job_plus_one_per_interval_running() -> None:
    from bot.delivery import edit_budget, format_wait

    assert edit_budget(1, 0.0, 1.5) == 3
    assert edit_budget(1, 2.0, 1.5) == 5
    assert edit_budget(4, 3.0, 1.5) == 14
    assert edit_budget(1, 1.55, 1.5) == 4  # within the timing margin of one interval
    assert [format_wait(s) for s in (3, 42, 130, 3600, 4800)] == [
        "~5 s",
        "~40 s",
        "~2 min",
        "~1 h",
        "~1 h 20 min",
    ]
