"""End to end: the way from ComfyUI's ``execution_success`` to the Discord request with the image.

The result is posted without waiting for the history read (the socket saw the whole run) nor for
the disk write (the files are written once the upload went out); the record and files still end
up on disk, the delivered mark after them, and a crash in between delivers exactly once.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bot.jobs.model import JobState
from bot.jobs.store import Store
from tests.conftest import make_settings, spy_success
from tests.e2e import comfybot, has_files, output_images, wait_result
from tests.fakes.comfyui import FakeComfyUI
from tests.fakes.discord import FakeDiscord, FakeMessage

#: Longer than any wait here: a result that needs the history read cannot come in time.
HISTORY_DELAY = 30.0


def image_edit_at(message: FakeMessage) -> float:
    """When the edit that attached the result reached Discord."""
    [at] = [
        at
        for at, payload in message.edits
        if any(not str(name).startswith("preview") for name in payload.get("files", []))
    ]
    return at


def on_first_write(
    monkeypatch: pytest.MonkeyPatch, folder: Path, action: Callable[[], None]
) -> list[float]:
    """Call `action()` just before the first file under `folder` is written; returns when each
    such write began (``time.monotonic()``)."""
    began: list[float] = []
    write: Callable[[Path, Any], int] = Path.write_bytes

    def watched(self: Path, data: Any) -> int:
        if folder in self.parents:
            began.append(time.monotonic())
            if len(began) == 1:
                action()
        return write(self, data)

    monkeypatch.setattr(Path, "write_bytes", watched)
    return began


async def imagine_replied_first(fake: FakeDiscord, comfy: FakeComfyUI) -> FakeMessage:
    """/imagine whose run waits until its reply exists (else the files are written first, there
    being no delivery to hold them); its result."""
    comfy.hold_steps()
    it = await fake.slash("imagine", {"prompt": "a cat", "steps": 1})
    await it.wait_ack()
    comfy.release_steps()
    return await wait_result(fake, it)


async def test_the_image_is_posted_before_the_history_read_answers(
    fake: FakeDiscord, comfy: FakeComfyUI, tmp_path: Path
) -> None:
    """ComfyUI's socket carried the whole run: its messages name the files, so the result needs
    no history read (delayed here past the test's patience); the files are still saved."""
    succeeded = spy_success(comfy)
    settings = make_settings(tmp_path, comfy.url)
    async with comfybot(fake, settings) as bot:
        comfy.delay_next("/history/*", HISTORY_DELAY, times=100)
        it = await fake.slash("imagine", {"prompt": "a cat", "steps": 1})
        message = await wait_result(fake, it, timeout=10.0)
        assert image_edit_at(message) - succeeded[0] < 5.0
        [job] = bot.engine.recent(limit=1)
        produced = output_images(comfy, job.prompt_id)
        assert [a.data for a in message.attachments] == produced
        await fake.wait_for(lambda: (j := bot.engine.store.get(job.id)) and j.delivered, 5.0)
        stored = bot.engine.store.get(job.id)
        assert stored is not None and stored.state is JobState.DONE
        assert [Path(o.path).read_bytes() for o in stored.outputs] == produced


async def test_the_image_is_posted_before_its_files_are_written(
    fake: FakeDiscord, comfy: FakeComfyUI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings(tmp_path, comfy.url)
    seen: list[bool] = []  # at the first write: was the job marked delivered already?
    async with comfybot(fake, settings) as bot:

        def check() -> None:
            [job] = bot.engine.recent(limit=1)
            seen.append(job.delivered)

        began = on_first_write(monkeypatch, Path(settings.storage.outputs), check)
        message = await imagine_replied_first(fake, comfy)
        [job] = bot.engine.recent(limit=1)
        await fake.wait_for(lambda: (j := bot.engine.store.get(job.id)) and j.delivered, 5.0)
        # the upload went out first; the files and the record followed; the mark came last
        assert began and image_edit_at(message) < began[0]
        assert seen == [False]
        stored = bot.engine.store.get(job.id)
        assert stored is not None and stored.state is JobState.DONE
        produced = output_images(comfy, job.prompt_id)
        assert [a.data for a in message.attachments] == produced
        assert [Path(o.path).read_bytes() for o in stored.outputs] == produced
        assert stored.meta["result"]["message_id"] == message.id


async def test_a_crash_between_the_post_and_the_disk_write_delivers_exactly_once(
    fake: FakeDiscord, comfy: FakeComfyUI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The result reached Discord but the process died before its files and record were
    written: the restart collects the job from ComfyUI again, saves it and delivers it again
    to the same reply (an edit repeated), never as a second message."""
    before, crashed = tmp_path / "before", tmp_path / "crashed"
    settings = make_settings(before, comfy.url)
    posted: list[bool] = []

    def crash_here() -> None:  # what the disk holds now is what a crash now would leave
        posted.append(any(has_files(m) for m in fake.messages_in(fake.channel_id)))
        shutil.copytree(before, crashed)

    on_first_write(monkeypatch, Path(settings.storage.outputs), crash_here)
    async with comfybot(fake, settings) as bot:
        message = await imagine_replied_first(fake, comfy)
        [job] = bot.engine.recent(limit=1)
        await fake.wait_for(lambda: crashed.exists(), 5.0)
    monkeypatch.undo()
    assert posted == [True]
    edits_before = len(message.edits)

    def results() -> list[FakeMessage]:
        return [m for m in fake.messages_in(fake.channel_id) if has_files(m)]

    after = make_settings(crashed, comfy.url)
    store = Store(after.storage.path)
    left = store.get(job.id)
    store.close()
    assert left is not None and left.state is JobState.RUNNING and not left.delivered
    async with comfybot(fake, after) as bot:
        await fake.wait_for(lambda: (j := bot.engine.store.get(job.id)) and j.delivered, 15.0)
        stored = bot.engine.store.get(job.id)
        assert stored is not None and stored.state is JobState.DONE
        produced = output_images(comfy, job.prompt_id)
        assert [Path(o.path).read_bytes() for o in stored.outputs] == produced
        assert [m.id for m in results()] == [message.id]  # the same reply, edited again
        assert len(message.edits) > edits_before
        assert [a.data for a in message.attachments] == produced
