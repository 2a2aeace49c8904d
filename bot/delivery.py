"""Getting results to people: coalesced progress updates, and images fitted to upload limits.

Nothing here knows Discord: `Coalescer` calls any async `send`, `fit_image` works on bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from PIL import Image

log = logging.getLogger(__name__)
T = TypeVar("T")


class Coalescer(Generic[T]):
    """Sends the latest of many updates, at most one per `interval` seconds.

    `push()` never waits; intermediate states are dropped when newer ones arrive. `close()`
    stops the updates (letting one in flight complete); `finish()` closes, then sends the final
    state, which is never dropped.
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

    async def finish(self, final: T, *, send: Callable[[T], Awaitable[None]] | None = None) -> None:
        """Stop intermediate updates and deliver `final` (after the one in flight, if any)."""
        await self.close()
        async with self._lock:
            await (send or self._send)(final)
            self.sent += 1


@dataclass(frozen=True)
class FittedImage:
    data: bytes
    filename: str
    note: str | None  # what was done to make it fit, None when untouched


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


def progress_bar(value: int, total: int, width: int = 16) -> str:
    """A text bar like `▰▰▰▰▱▱▱▱ 50%`."""
    total = max(1, total)
    filled = max(0, min(width, round(width * value / total)))
    return "▰" * filled + "▱" * (width - filled) + f" {round(100 * value / total)}%"
