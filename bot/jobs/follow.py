"""Following one prompt on its ComfyUI until it ends: its events become the job's `started` and
progress updates, its GPU time is clocked from the run's start, and the moment ComfyUI says the
run succeeded its outputs start downloading (`Active.early`) and its backend's slot is free.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Mapping

from bot.comfy.client import PromptResult, PromptTracker
from bot.comfy.events import ExecutionStart, ImageRef
from bot.jobs.held import Active, Held
from bot.jobs.model import JobState
from bot.jobs.progress import JobUpdate, RunProgress


async def follow(held: Held, active: Active, tracker: PromptTracker) -> PromptResult:
    """Pass on the run's events until its result (success, failure, or lost)."""
    tracker.on_success(functools.partial(_fetch_early, held, active))
    progress = RunProgress(active.prompt)
    consumer = asyncio.create_task(_consume(held, active, tracker, progress))
    try:
        return await tracker.result()
    finally:
        consumer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await consumer
        active.backend.client.untrack(tracker.prompt_id)


async def _consume(
    held: Held, active: Active, tracker: PromptTracker, progress: RunProgress
) -> None:
    downloads_first = True
    async for event in tracker:
        if downloads_first and active.early:
            # the run is over and its images are being fetched: their requests go out
            # before the progress that arrived with the end is passed on
            downloads_first = False
            await asyncio.sleep(0)
        update = progress.feed(event)
        if isinstance(event, ExecutionStart) and active.gpu_since is None:
            active.gpu_since = time.monotonic()
        if isinstance(event, ExecutionStart) and active.job.state is not JobState.RUNNING:
            held.update(active, state=JobState.RUNNING)
            held.emit(JobUpdate(active.job, "started"))
        if update is not None:
            held.emit(progress.update(active.job, update))


def _fetch_early(held: Held, active: Active, outputs: Mapping[str, tuple[ImageRef, ...]]) -> None:
    """Start downloading the files the run announced, the moment ComfyUI says it succeeded
    (called by the client as that message arrives): settling the result may take one more
    round trip (the history read), and the download need not wait for it. The backend's
    slot is free from now on (see `Held.load`): the next job is handed to it meanwhile."""
    active.ran = True
    held.wake.set()
    active.early.start(outputs, active.backend.client.fetch_image)
