"""What keeps a busy bot fast and its memory flat: nothing of a delivered reply stays alive,
files are written off the event loop, and the runner answers for the jobs it holds."""

from __future__ import annotations

import asyncio
import gc
import threading
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bot.delivery import Coalescer
from bot.engine import Engine, JobRequest
from bot.jobs import results as runner_module
from bot.jobs.model import Job, JobState
from tests.conftest import Recorder
from tests.fakes.comfyui import FakeComfyUI

EngineFx = tuple[Engine, Recorder]


def request(prompt: str = "a lighthouse at dusk", owner: str = "1") -> JobRequest:
    return JobRequest("sd15-txt2img", {"prompt": prompt, "steps": 1}, owner_id=owner)


class Owner:
    """Stands for a reply: it owns a coalescer whose `send` refers back to it."""

    def __init__(self) -> None:
        self.results = [b"\x89PNG" + bytes(100_000)]
        self.coalescer: Coalescer[None] = Coalescer(lambda _: self.render(), interval=0.01)

    async def render(self) -> None:
        pass


@pytest.fixture
def no_collector() -> Iterator[None]:
    """Only reference counts free objects: what a cycle holds stays until re-enabled."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


async def test_a_closed_coalescer_lets_go_of_what_its_send_refers_to(no_collector: None) -> None:
    owner = Owner()
    owner.coalescer.push(None)
    await asyncio.sleep(0.05)  # one update went out
    await owner.coalescer.close()
    gone = weakref.ref(owner)
    del owner
    assert gone() is None  # freed at once, not at the collector's next full pass


async def test_a_finished_coalescer_lets_go_of_what_its_send_refers_to(
    no_collector: None,
) -> None:
    owner = Owner()
    sent: list[str] = []

    async def final(state: str) -> None:
        sent.append(state)

    owner.coalescer.push(None)
    await owner.coalescer.finish("done", send=final)
    await owner.coalescer.finish("again")  # a closed coalescer's own send does nothing
    assert sent == ["done"]
    gone = weakref.ref(owner)
    del owner
    assert gone() is None


async def test_a_results_files_are_written_outside_the_event_loop(
    engine: EngineFx, monkeypatch: pytest.MonkeyPatch
) -> None:
    eng, rec = engine
    threads: list[threading.Thread] = []
    write = runner_module._write_files

    def spy(*args: Any) -> None:
        threads.append(threading.current_thread())
        write(*args)

    monkeypatch.setattr(runner_module, "_write_files", spy)
    [job] = await eng.submit(request())
    [done] = await rec.finished(job.id)
    assert done.job.state is JobState.DONE, done.job.error
    assert threads and threading.main_thread() not in threads
    assert all(Path(o.path).read_bytes() for o in done.job.outputs)  # on disk when finished


async def test_the_next_job_goes_to_comfyui_while_the_last_ones_image_downloads(
    engine: EngineFx, comfy: FakeComfyUI
) -> None:
    eng, rec = engine
    comfy.delay_next("/view", 1.0)  # the first result's download is slow
    [first] = await eng.submit(request("first", owner="1"))
    [second] = await eng.submit(request("second", owner="2"))
    await rec.finished(first.id, second.id)
    order = [(u.job.id, u.kind) for u in rec.updates if u.kind in ("submitted", "result")]
    # the GPU was done with the first job when ComfyUI said so: the second did not wait for
    # the download to be sent
    assert order.index((second.id, "submitted")) < order.index((first.id, "result"))
    assert all(u.job.state is JobState.DONE for u in rec.updates if u.kind == "finished")


async def test_jobs_the_runner_holds_are_answered_without_reading_the_store(
    engine: EngineFx, comfy: FakeComfyUI, monkeypatch: pytest.MonkeyPatch
) -> None:
    eng, rec = engine
    comfy.hold_steps()
    [running] = await eng.submit(request("first"))
    await comfy.wait_until_held()
    [waiting] = await eng.submit(request("second"))  # one ComfyUI: it waits its turn
    eng.update_meta(waiting.id, note="kept")
    reads: list[str] = []
    get = eng.store.get

    def counting_get(job_id: str) -> Job | None:
        reads.append(job_id)
        return get(job_id)

    monkeypatch.setattr(eng.store, "get", counting_get)
    held_running, held_waiting = eng.get_job(running.id), eng.get_job(waiting.id)
    assert held_running is not None and held_running.state is JobState.RUNNING
    assert held_waiting is not None and held_waiting.state is JobState.QUEUED
    assert held_waiting.meta["note"] == "kept"
    assert reads == []
    comfy.release_steps()
    await rec.finished(running.id, waiting.id)
    finished = eng.get_job(running.id)  # no longer held: from the store
    assert finished is not None and finished.state is JobState.DONE
    assert reads == [running.id]


async def test_what_start_up_loaded_is_kept_out_of_the_collectors_passes(
    engine: EngineFx,
) -> None:
    assert gc.get_freeze_count() > 0
