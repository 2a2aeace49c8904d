"""A finished run's results, from ComfyUI to disk: how a run that did not succeed fails
(`run_failure`), which of its outputs a job delivers and their bytes (`collect`; the downloads
that start the moment ComfyUI says the run succeeded are `EarlyFetches`), and the writes of the
files and final records under way (`Writes`), which a delivery may hold while it sends the
bytes, and waits for before it marks a job delivered.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import struct
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from PIL import Image

from bot.comfy.client import PromptResult
from bot.comfy.events import ImageRef
from bot.errors import BackendUnavailable, ExecutionFailed, Interrupted, OutputMissing, UserError
from bot.jobs.model import Output
from bot.jobs.progress import node_label
from bot.media import TEXT, sniff
from bot.tasks import spawn

#: Longest a job's disk write waits for a delivery that holds it (see `Writes.hold`).
SAVE_HOLD = 5.0
A = TypeVar("A")  # what the runner holds of a job (its backend, its state)
Fetch = Callable[[ImageRef], Awaitable[bytes]]


def run_failure(
    result: PromptResult, prompt: dict[str, Any], cancel_by: str | None
) -> UserError | None:
    """Why a run ended without results (cancelled, or a node failed); None when it succeeded."""
    if result.status == "interrupted" or cancel_by is not None:
        who = cancel_by or "ComfyUI (interrupted)"
        return Interrupted(f"Cancelled by {who}")
    if result.status == "error":
        err = result.error
        title = node_label(prompt, err.node_id if err else None, err)
        detail = (err.exception_message if err else "") or "no details"
        kind = err.exception_type if err else "Error"
        return ExecutionFailed(
            _trim(f"{title} failed: {kind}: {detail.strip()}", 400),
            node_id=err.node_id if err else None,
            node_type=err.node_type if err else None,
            exception_type=kind,
        )
    return None


async def collect(
    outputs: Mapping[str, tuple[ImageRef, ...]], folder: Path, fetch: Fetch
) -> tuple[list[Output], list[bytes]]:
    """The outputs a job delivers (to be written in `folder`) and their bytes, in node order.

    Raises:
        OutputMissing: the run produced nothing to deliver.
    """
    chosen = _result_refs(outputs)
    if not chosen:
        raise OutputMissing("The workflow finished but produced no output")
    collected, images = [], []
    for index, (node, ref) in enumerate(chosen, start=1):
        if ref.text is not None:
            data, media = ref.text.encode(), TEXT
        else:
            data = await fetch(ref)
            media = sniff(data)
        path = folder / f"{index:02d}.{media.ext}"
        width, height = image_size(data) if media.kind.visual else (0, 0)
        collected.append(
            Output(str(path), path.name, node, width, height, media.kind.value, media.mime)
        )
        images.append(data)
    return collected, images


class EarlyFetches:
    """The output files of one run, downloading from the moment ComfyUI says it succeeded:
    settling the result may take one more round trip (the history read), and the downloads need
    not wait for it."""

    def __init__(self) -> None:
        self._tasks: dict[ImageRef, asyncio.Task[bytes]] = {}

    def __bool__(self) -> bool:
        return bool(self._tasks)

    def start(
        self,
        outputs: Mapping[str, tuple[ImageRef, ...]],
        fetch: Callable[[ImageRef], Coroutine[Any, Any, bytes]],
    ) -> None:
        """Start downloading every saved file of `outputs` not being downloaded yet."""
        for ref in (r for refs in outputs.values() for r in refs if r.type == "output"):
            if ref not in self._tasks:
                self._tasks[ref] = asyncio.get_running_loop().create_task(fetch(ref))

    async def take(self, ref: ImageRef) -> bytes | None:
        """The file's bytes if its early download succeeded; None: fetch it again."""
        early = self._tasks.pop(ref, None)
        if early is not None:
            try:
                return await early
            except (BackendUnavailable, OutputMissing):
                pass
        return None

    def drop(self) -> None:
        """Cancel the downloads not taken (their failures are not needed: never reported)."""
        for early in self._tasks.values():
            if early.done() and not early.cancelled():
                early.exception()  # retrieved, so never reported
            early.cancel()
        self._tasks.clear()


@dataclass
class _Saving(Generic[A]):
    """A result announced (`result` update) whose files and record are being written."""

    active: A  # out of its backend's slot already
    stored: asyncio.Future[None]  # done once its final record is stored
    task: asyncio.Task[None] | None = None  # the write
    hold: asyncio.Future[None] | None = None  # the write waits for it (a delivery under way)


class Writes(Generic[A]):
    """The results announced whose files and final records are being written, by job id."""

    def __init__(self) -> None:
        self._items: dict[str, _Saving[A]] = {}

    def __contains__(self, job_id: object) -> bool:
        return job_id in self._items

    def holder(self, job_id: str) -> A | None:
        """What the runner held of the job, while its result is being written."""
        saving = self._items.get(job_id)
        return saving.active if saving is not None else None

    def begin(self, job_id: str, active: A, write: Coroutine[Any, Any, None]) -> None:
        """Start `write`, which calls `held` first and `done` at its end."""
        saving = self._items[job_id] = _Saving(active, asyncio.get_running_loop().create_future())
        saving.task = spawn(write, name=f"save:{job_id}")

    async def held(self, job_id: str) -> None:
        """Wait while a delivery holds the write (at most `SAVE_HOLD` seconds)."""
        await asyncio.sleep(0)  # the tasks the `result` started run first: they may hold it
        hold = self._items[job_id].hold
        if hold is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(hold), SAVE_HOLD)

    def done(self, job_id: str) -> None:
        """The job's final record (done, or failed) is stored."""
        saving = self._items.pop(job_id, None)
        if saving is not None:
            saving.stored.set_result(None)

    async def saved(self, job_ids: Iterable[str]) -> None:
        """Wait until the final records of these jobs are stored (at once if they are)."""
        pending = [self._items[j].stored for j in job_ids if j in self._items]
        if pending:
            await asyncio.wait([asyncio.shield(f) for f in pending])

    def hold(self, job_ids: Iterable[str]) -> Callable[[], None]:
        """Make the writes of these jobs wait until the returned function is called (at most
        `SAVE_HOLD` seconds). Jobs not being written are left alone."""
        holds: list[asyncio.Future[None]] = []
        for job_id in job_ids:
            saving = self._items.get(job_id)
            if saving is not None:
                if saving.hold is None:
                    saving.hold = asyncio.get_running_loop().create_future()
                holds.append(saving.hold)

        def release() -> None:
            for hold in holds:
                if not hold.done():
                    hold.set_result(None)

        return release

    async def finish_all(self) -> None:
        """Release every hold and wait for the writes under way."""
        saving = list(self._items.values())
        for item in saving:
            if item.hold is not None and not item.hold.done():
                item.hold.set_result(None)
        if saving:
            await asyncio.gather(*(i.task for i in saving if i.task), return_exceptions=True)


async def write_files(folder: Path, outputs: list[Output], images: list[bytes]) -> None:
    """Write a job's files in a worker thread: creating a folder and files can take
    milliseconds on a busy disk, and the event loop has the next job's submission to make."""
    await asyncio.to_thread(_write_files, folder, outputs, images)


def _result_refs(outputs: Mapping[str, tuple[ImageRef, ...]]) -> list[tuple[str, ImageRef]]:
    """What a job delivers, as (node, ref) in node order: the saved files (previews only when
    nothing was saved) and every text output."""
    pairs = [(node, ref) for node, refs in outputs.items() for ref in refs]
    saved = [p for p in pairs if p[1].type == "output"]
    files = saved or [p for p in pairs if not p[1].is_text]
    keep = {id(p[1]) for p in files}
    return [p for p in pairs if id(p[1]) in keep or p[1].is_text]


def _write_files(folder: Path, outputs: list[Output], images: list[bytes]) -> None:
    """Write a job's images to their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    for output, data in zip(outputs, images, strict=True):
        Path(output.path).write_bytes(data)


def image_size(data: bytes) -> tuple[int, int]:
    """Width and height of an image: read from a PNG's header, else by Pillow; (0, 0) if unknown."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR":
        width, height = struct.unpack(">II", data[16:24])
        return int(width), int(height)
    try:
        with Image.open(io.BytesIO(data)) as img:
            return img.size
    except Exception:
        return (0, 0)


def _trim(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
