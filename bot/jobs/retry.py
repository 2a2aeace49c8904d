"""The runner's retries while a ComfyUI is unreachable: the POST of a prompt (`submit`), any other
call, such as building a prompt or downloading an image (`retrying`), both with backoff up to a
deadline, and the plain words a member is told when it stayed unreachable (`plain_unreachable`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from bot.comfy.client import ComfyClient
from bot.errors import BackendUnavailable

log = logging.getLogger(__name__)

T = TypeVar("T")


async def submit(
    client: ComfyClient,
    prompt: dict[str, Any],
    prompt_id: str,
    *,
    seconds: float,
    retried: Callable[[], None],
) -> str:
    """POST the prompt, retrying for `seconds` while ComfyUI is unreachable (calling `retried()`
    before each wait); the id ComfyUI queued it as.

    Raises:
        BackendUnavailable: still unreachable at the deadline.
    """
    deadline = time.monotonic() + seconds
    delay = 0.5
    while True:
        try:
            return await client.submit(prompt, prompt_id=prompt_id)
        except BackendUnavailable:
            if time.monotonic() + delay > deadline:
                raise
            log.warning("ComfyUI unreachable; retrying prompt %s in %.1fs", prompt_id, delay)
            retried()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
            with contextlib.suppress(BackendUnavailable):
                if await client.queue_position(prompt_id) is not None:
                    return prompt_id  # the earlier POST did arrive


async def retrying(
    call: Callable[[], Awaitable[T]],
    *,
    job_id: str,
    note: str,
    seconds: float,
    retried: Callable[[], None],
) -> T:
    """`call()`, tried again with backoff while ComfyUI is unreachable, for at most `seconds`;
    `retried()` is called before each wait (members are told `note`, "...; retrying").

    Raises:
        BackendUnavailable: still unreachable at the deadline (says `note` in plain words).
    """
    deadline = time.monotonic() + seconds
    delay = 0.25
    while True:
        try:
            return await call()
        except BackendUnavailable as exc:
            if time.monotonic() + delay > deadline:
                log.warning("job %s: giving up: %s", job_id, exc.message)
                raise BackendUnavailable(
                    f"{note} and did not come back within {seconds:.0f} s"
                ) from exc
            log.warning("job %s: %s; retrying in %.1f s", job_id, exc.message, delay)
            retried()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


def plain_unreachable(exc: BackendUnavailable) -> str:
    """What a member is told when ComfyUI stayed unreachable: no address, no error class."""
    if exc.__cause__ is not None and isinstance(exc.__cause__, BackendUnavailable):
        return exc.message  # already plain (see `retrying`)
    return "ComfyUI could not be reached, so the job could not run. Try again later."
