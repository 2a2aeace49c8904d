"""Getting results to people: coalesced progress updates, and files fitted to upload limits.

Nothing here knows Discord: `Coalescer` calls any async `send`; `fit_image` and `fit_file` work
on bytes (`fit_file` for every kind of result: images here, video, animations and audio
re-encoded by `bot.media.fit`, off the event loop).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from PIL import Image

from bot.jobs.model import Job
from bot.jobs.scheduler import band_of
from bot.media import Kind, MediaType, sniff
from bot.media.fit import CannotFit, fit_media

log = logging.getLogger(__name__)
T = TypeVar("T")


class Coalescer(Generic[T]):
    """Sends the latest of many updates, at most one per `interval` seconds.

    `push()` never waits; intermediate states are dropped when newer ones arrive. `close()`
    stops the updates (letting one in flight complete); `finish()` closes, then sends the final
    state, which is never dropped.

    Once closed it lets go of `send` and of the last state: a `send` that refers back to what
    owns the coalescer (a reply and its results) would otherwise keep both alive in a cycle
    until the collector's next full pass, which under load comes only every few thousand jobs.
    """

    def __init__(self, send: Callable[[T], Awaitable[None]], interval: float = 1.5) -> None:
        self._send = send
        self.interval = interval
        self._pending: T | None = None
        self._has_pending = False
        self._last = -float("inf")
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._sending = False
        self._lock = asyncio.Lock()
        self.sent = 0

    def mark_sent(self) -> None:
        """Something else just updated the message: the next update waits a full interval."""
        self._last = time.monotonic()

    def push(self, state: T) -> None:
        if self._closed:
            return
        self._pending, self._has_pending = state, True
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while self._has_pending and not self._closed:
            wait = self._last + self.interval - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
                continue
            state, self._has_pending = self._pending, False
            await self._deliver(state)  # type: ignore[arg-type]

    async def _deliver(self, state: T) -> None:
        async with self._lock:
            self._last = time.monotonic()
            self._sending = True
            try:
                await self._send(state)
                self.sent += 1
            except Exception:
                log.warning("a progress update could not be sent", exc_info=True)
            finally:
                self._sending = False

    async def close(self) -> None:
        """Stop intermediate updates; an update already in flight is allowed to complete."""
        self._closed = True
        self._has_pending = False
        task = self._task
        if task is not None and not task.done():
            if self._sending:
                await task  # never cut a request in flight: let it finish, then stop
            else:
                task.cancel()  # it only waits for its interval
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._task = None
        self._pending = None
        self._send = _closed

    async def finish(self, final: T, *, send: Callable[[T], Awaitable[None]] | None = None) -> None:
        """Stop intermediate updates and deliver `final` (after the one in flight, if any)."""
        send = send or self._send
        await self.close()
        async with self._lock:
            await send(final)
            self.sent += 1


async def _closed(state: object) -> None:
    """What a closed `Coalescer` sends: nothing (it no longer holds its `send`)."""


@dataclass(frozen=True)
class FittedImage:
    data: bytes
    filename: str
    note: str | None  # what was done to make it fit, None when untouched


@dataclass(frozen=True)
class FittedFile:
    """A result file ready to attach: its bytes, name and what it is, and what was done to it."""

    data: bytes
    filename: str
    media: MediaType
    note: str | None  # what was done to make it fit, None when untouched


async def fit_file(data: bytes, filename: str, limit: int) -> FittedFile:
    """Make a result file fit in `limit` bytes, as what it is: an image re-encoded or scaled,
    a video or an animation re-encoded as MP4, audio at a lower bitrate. The file's name keeps
    its stem and takes the extension of what it now holds.

    Raises:
        CannotFit: it cannot be made to fit (a 3D model or text over the limit, a video too
            long for any bitrate, a re-encode over its time cap, a file that does not decode).
    """
    media = sniff(data)
    stem = filename.rsplit(".", 1)[0] or "file"
    if len(data) <= limit:
        return FittedFile(data, f"{stem}.{media.ext}", media, None)
    if media.kind is Kind.IMAGE:
        try:
            image = await asyncio.to_thread(fit_image, data, filename, limit)
        except (ValueError, OSError) as exc:
            raise CannotFit(f"{filename} cannot be made smaller than the upload limit") from exc
        return FittedFile(image.data, image.filename, sniff(image.data), image.note)
    if media.kind in (Kind.VIDEO, Kind.ANIMATION, Kind.AUDIO):
        fitted = await fit_media(data, limit)
        return FittedFile(fitted.data, f"{stem}.{fitted.media.ext}", fitted.media, fitted.note)
    raise CannotFit(
        f"{filename} ({media.kind.noun}, {len(data) / 2**20:.1f} MiB) is over the "
        f"{limit / 2**20:.0f} MiB upload limit and cannot be made smaller"
    )


def ready_words(jobs: Sequence[Job]) -> str:
    """What a result message says is ready, after what the jobs made: "your video is ready",
    "your images are ready", "your results are ready" when they are of several kinds."""
    kinds = [Kind(o.kind) for job in jobs for o in job.outputs]
    files = [k for k in kinds if k is not Kind.TEXT] or kinds
    if not files:
        return "your results are ready"
    if len(set(files)) > 1:
        return "your results are ready"
    kind = files[0]
    if len(files) == 1 or kind is Kind.TEXT:
        return f"your {kind.noun} is ready"
    return f"your {kind.plural} are ready"


def fit_image(data: bytes, filename: str, limit: int) -> FittedImage:
    """Make an image fit in `limit` bytes: as is, re-encoded (WebP, then JPEG), or downscaled.

    Raises:
        ValueError: the data is not an image Pillow can read and it is over the limit.
    """
    if len(data) <= limit:
        return FittedImage(data, filename, None)
    stem = filename.rsplit(".", 1)[0] or "image"
    with Image.open(io.BytesIO(data)) as img:
        img.load()
        original = img.size
        image = img.convert("RGB")
    scale = 1.0
    while True:
        current = (
            image
            if scale == 1.0
            else image.resize(
                (max(1, int(original[0] * scale)), max(1, int(original[1] * scale))),
                Image.Resampling.LANCZOS,
            )
        )
        for fmt, ext, qualities in (("WEBP", "webp", (90, 80)), ("JPEG", "jpg", (90, 80, 70))):
            for quality in qualities:
                buf = io.BytesIO()
                current.save(buf, fmt, quality=quality)
                if buf.tell() <= limit:
                    note = f"re-encoded as {fmt} (quality {quality})"
                    if scale < 1.0:
                        note += f", downscaled to {current.width}x{current.height}"
                    return FittedImage(buf.getvalue(), f"{stem}.{ext}", note)
        scale *= 0.75
        if original[0] * scale < 16 or original[1] * scale < 16:
            raise ValueError(f"{filename} cannot be made smaller than {limit} bytes")


#: How often a waiting reply may be edited when its position only moved to the next band, in
#: progress intervals (30 s at the default 1.5 s).
POSITION_REFRESH = 20

# What a reply costs. Per job of T seconds on the GPU a reply may make ceil(T / interval) + 3
# Discord requests: the acknowledgement (it shows the first position), the edit when the job
# starts, the result, and one per interval besides: its "slack". Waiting and running edits share
# the slack. The running edits are held to it as they go (`edit_budget`); the waiting ones come
# first, so they are planned on how long the workflow's recent runs took at least
# (`waiting_allowance`), in this order:
# 1. edits that keep the shown position within one band of the truth (the band two away was
#    entered); one more than the slack may go, the start edit then being left out;
# 2. the next band towards the front: every band among the next three, while it and the edits
#    of kind 1 still ahead fit in the slack; further back at most once per `refresh`, and only
#    while they take at most half of it: the other half stays for the step bar and previews.


def edits_to_front(position: int) -> int:
    """Edits that keep a reply showing `position` within one band until its job is next.

    An edit is due when the job is two bands ahead of what the reply shows, so each covers two
    bands: from band b (see `BANDS`) that is b // 2 edits.
    """
    return max(0, band_of(position)) // 2


def position_edit_due(
    shown: int | None,
    current: int,
    since_edit: float,
    *,
    edits: int = 0,
    allowance: int | None = None,
    refresh: float = POSITION_REFRESH * 1.5,
) -> bool:
    """Whether a waiting reply that shows place `shown` should be edited to show `current`.

    `edits`: waiting edits the reply made so far; `allowance`: its slack (None: nothing measured
    yet, no limit). See the rules above.
    """
    if shown is None:
        return True
    gap = abs(band_of(current) - band_of(shown))
    if gap == 0:
        return False
    if gap >= 2:
        return allowance is None or edits + 1 <= allowance + 1
    if current > 3 and (current > shown or since_edit < refresh):
        return False  # one band further back, or the next band too soon after the last edit
    if allowance is None:
        return True
    # among the next three the whole slack may go; further back, half stays for the running
    share = allowance if current <= 3 else allowance // 2
    return edits + 1 + edits_to_front(current) <= share


def start_edit_due(waiting_edits: int, allowance: int | None) -> bool:
    """Whether the edit that says a job started fits, after `waiting_edits` waiting edits."""
    return allowance is None or waiting_edits <= allowance


#: A run as the bot times it (from the start message's arrival to the result's) is a little
#: longer than on the GPU itself; its budget is planned on this many intervals less.
TIMING_MARGIN = 0.1


def _intervals(seconds: float, interval: float) -> int:
    return math.ceil(max(0.0, seconds / interval - TIMING_MARGIN))


def waiting_allowance(jobs: int, run_seconds: float | None, interval: float) -> int | None:
    """The slack of a reply of `jobs` jobs that run `run_seconds` each: one edit per interval.

    None when no job of the workflow has been measured yet.
    """
    if run_seconds is None:
        return None
    return jobs * max(1, _intervals(run_seconds, interval))


def edit_budget(jobs: int, running_seconds: float, interval: float) -> int:
    """Discord requests a reply may make in all, `running_seconds` after its first job started:
    three per job (acknowledgement, start, result) plus one per `interval` running."""
    return _intervals(running_seconds, interval) + 3 * jobs


def format_wait(seconds: float) -> str:
    """A rough duration for people: `~40 s`, `~2 min`, `~1 h 20 min`."""
    if seconds < 60:
        return f"~{max(5, round(seconds / 5) * 5)} s"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"~{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"~{hours} h {minutes} min" if minutes else f"~{hours} h"


def progress_bar(value: int, total: int, width: int = 16) -> str:
    """A text bar like `▰▰▰▰▱▱▱▱ 50%`."""
    total = max(1, total)
    filled = max(0, min(width, round(width * value / total)))
    return "▰" * filled + "▱" * (width - filled) + f" {round(100 * value / total)}%"
