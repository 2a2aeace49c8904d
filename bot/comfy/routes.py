"""ComfyUI's HTTP routes, one method each, over one small transport; no websocket here.

    ComfyRoutes   ``POST /prompt``, ``GET /history/{id}``, ``GET /view``, ``POST /upload/image``,
                  ``GET /object_info``, ``GET|POST /queue``, ``POST /interrupt``,
                  ``GET /system_stats``; every request through ``_request``, which turns
                  aiohttp's errors and HTTP 5xx into :class:`~bot.errors.BackendUnavailable`
    QueueSnapshot what ``GET /queue`` says (its entries are :class:`QueueItem`)

:class:`~bot.comfy.client.ComfyClient` is a ``ComfyRoutes`` with a websocket; the file names it
sends are made safe by :func:`safe_filename` and :func:`safe_subfolder`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import mimetypes
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import aiohttp

from bot.comfy.events import ImageRef
from bot.comfy.rejection import explain_rejection
from bot.errors import BackendUnavailable, ComfyError, OutputMissing, PromptRejected

log = logging.getLogger(__name__)

__all__ = [
    "ClientConfig",
    "ComfyRoutes",
    "QueueItem",
    "QueueSnapshot",
    "describe",
    "safe_filename",
    "safe_subfolder",
]


@dataclass(frozen=True, slots=True)
class QueueItem:
    """One entry of ``GET /queue``."""

    #: Its number in ComfyUI's queue (run order); ``inf`` when the entry has none.
    number: float
    prompt_id: str
    #: The clientId it was submitted under, when ComfyUI says.
    client_id: str | None = None


@dataclass(frozen=True, slots=True)
class QueueSnapshot:
    """ComfyUI's queue at one moment; ``pending`` is sorted in run order."""

    running: tuple[QueueItem, ...] = ()
    pending: tuple[QueueItem, ...] = ()

    def position(self, prompt_id: str) -> int | None:
        """0 if running, 1 if it runs next, 2…; None if not queued."""
        if any(item.prompt_id == prompt_id for item in self.running):
            return 0
        for index, item in enumerate(self.pending, start=1):
            if item.prompt_id == prompt_id:
                return index
        return None

    @classmethod
    def from_json(cls, data: object) -> QueueSnapshot:
        """Parse ``{"queue_running": [item], "queue_pending": [item]}``; bad items are skipped."""
        if not isinstance(data, Mapping):
            return cls()
        running = _queue_items(data.get("queue_running"))
        pending = sorted(_queue_items(data.get("queue_pending")), key=lambda i: i.number)
        return cls(running=tuple(running), pending=tuple(pending))


def _queue_items(raw: object) -> list[QueueItem]:
    items: list[QueueItem] = []
    if not isinstance(raw, list):
        return items
    for entry in raw:
        if not isinstance(entry, list) or len(entry) < 2 or not isinstance(entry[1], str):
            continue
        number = entry[0] if isinstance(entry[0], int | float) else float("inf")
        extra = entry[3] if len(entry) > 3 and isinstance(entry[3], Mapping) else {}
        client_id = extra.get("client_id")
        items.append(
            QueueItem(
                number=number,
                prompt_id=entry[1],
                client_id=client_id if isinstance(client_id, str) else None,
            )
        )
    return items


@dataclass(frozen=True, slots=True)
class ClientConfig:
    """What each layer of a ComfyClient reads: its server, session and timings.

    The fields are ComfyClient's arguments, in their order (see them there).
    """

    session: aiohttp.ClientSession
    base_url: str
    heartbeat: float
    request_timeout: float
    reconnect_max_delay: float
    reconcile_interval: float
    submit_grace: float
    headers: Mapping[str, str] | None


class _Response(NamedTuple):
    status: int
    body: bytes


class ComfyRoutes:
    """The HTTP routes of one ComfyUI server (the client's transport, models and calls)."""

    def __init__(self, config: ClientConfig) -> None:
        self._session = config.session
        self._base_url = config.base_url.rstrip("/")
        self._request_timeout = config.request_timeout
        self._headers = dict(config.headers or {})
        self._object_info: dict[str, Any] | None = None
        self._object_info_lock = asyncio.Lock()

    @property
    def base_url(self) -> str:
        """ComfyUI's address, without a trailing slash."""
        return self._base_url

    @property
    def cached_object_info(self) -> dict[str, Any] | None:
        """The last ``/object_info`` read (None before the first :meth:`object_info`)."""
        return self._object_info

    # --- the queue ----------------------------------------------------------------------------

    async def _post_prompt(self, body: Mapping[str, Any], prompt: Mapping[str, Any]) -> Any:
        """``POST /prompt`` with ``body``; returns ComfyUI's decoded answer.

        Raises:
            PromptRejected: HTTP 400 (explained in plain words) or 413.
            BackendUnavailable: ComfyUI is unreachable or answered with a server error.
        """
        response = await self._request("POST", "/prompt", json_body=body)
        if response.status == 413:
            raise PromptRejected("the workflow is larger than ComfyUI accepts (HTTP 413)")
        if response.status == 400:
            data = self._decode_json(response, "POST /prompt", default={})
            data = data if isinstance(data, dict) else {}
            message = explain_rejection(data, prompt, self._object_info)
            log.info("ComfyUI rejected prompt %s: %s", body.get("prompt_id"), message)
            raise PromptRejected(message, data)
        self._check_status(response, "POST /prompt")
        return self._decode_json(response, "POST /prompt")

    async def delete_pending(self, prompt_id: str) -> bool:
        """Take a prompt out of ComfyUI's queue if it has not started; returns whether it did.

        False when it is running or done (it is left alone) or unknown. Its tracker, if any,
        is left as it is: stop following it first.

        Raises:
            BackendUnavailable: ComfyUI is unreachable.
        """
        if not (await self.queue_snapshot()).position(prompt_id):
            return False
        await self._delete_queued(prompt_id)
        if (await self.queue_snapshot()).position(prompt_id) is not None:
            return False  # it started before the delete
        return await self.history(prompt_id) is None  # else it even finished meanwhile

    async def _delete_queued(self, prompt_id: str) -> None:
        await self._expect_ok("POST", "/queue", {"delete": [prompt_id]})

    async def _interrupt(self, prompt_id: str) -> None:
        log.info("interrupting running prompt %s", prompt_id)
        await self._expect_ok("POST", "/interrupt", {"prompt_id": prompt_id})

    async def queue_snapshot(self) -> QueueSnapshot:
        """ComfyUI's queue (``GET /queue``), pending prompts in run order.

        Raises:
            BackendUnavailable: ComfyUI is unreachable.
        """
        response = await self._request("GET", "/queue")
        self._check_status(response, "GET /queue")
        return QueueSnapshot.from_json(self._decode_json(response, "GET /queue"))

    async def queue_position(self, prompt_id: str) -> int | None:
        """0 if the prompt is running, 1 if it runs next, 2…; None if it isn't queued.

        Raises:
            BackendUnavailable: ComfyUI is unreachable.
        """
        return (await self.queue_snapshot()).position(prompt_id)

    # --- other routes -------------------------------------------------------------------------

    async def history(self, prompt_id: str) -> dict[str, Any] | None:
        """The history entry of a finished prompt (``GET /history/{id}``), None if absent.

        Raises:
            BackendUnavailable: ComfyUI is unreachable.
        """
        response = await self._request("GET", f"/history/{prompt_id}")
        if response.status == 404:
            return None
        self._check_status(response, "GET /history")
        data = self._decode_json(response, "GET /history")
        entry = data.get(prompt_id) if isinstance(data, dict) else None
        return entry if isinstance(entry, dict) else None

    async def fetch_image(self, ref: ImageRef) -> bytes:
        """Download an output file (``GET /view``).

        Raises:
            OutputMissing: ComfyUI has no such file (or refused the path).
            BackendUnavailable: ComfyUI is unreachable.
        """
        if not _safe_ref(ref):
            raise OutputMissing(f"ComfyUI gave an unsafe file name: {ref.filename!r}")
        params = {"filename": ref.filename, "subfolder": ref.subfolder, "type": ref.type}
        response = await self._request("GET", "/view", params=params)
        if response.status == 200:
            return response.body
        if response.status == 404:
            raise OutputMissing(f"ComfyUI no longer has the file '{ref.filename}'")
        raise OutputMissing(
            f"ComfyUI refused to send the file '{ref.filename}' (HTTP {response.status})"
        )

    async def upload_image(
        self,
        data: bytes,
        filename: str,
        *,
        subfolder: str = "comfycord",
        overwrite: bool = False,
    ) -> str:
        """Upload an input image (``POST /upload/image``) and return the name to give LoadImage.

        The given file name is reduced to a safe basename; ComfyUI may rename it (``x (1).png``),
        so use the returned ``"subfolder/name"``.

        Raises:
            ComfyError: ComfyUI refused the file (too large, or invalid).
            BackendUnavailable: ComfyUI is unreachable.
        """
        name = safe_filename(filename)
        folder = safe_subfolder(subfolder)
        form = aiohttp.FormData()
        content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
        form.add_field("image", data, filename=name, content_type=content_type)
        form.add_field("type", "input")
        form.add_field("subfolder", folder)
        form.add_field("overwrite", "true" if overwrite else "false")
        response = await self._request("POST", "/upload/image", data=form)
        if response.status == 413:
            raise ComfyError(
                f"the image '{name}' ({len(data) // 1024} KiB) is larger than ComfyUI accepts"
            )
        if response.status != 200:
            self._check_status(response, "POST /upload/image")
            raise ComfyError(f"ComfyUI refused the image '{name}' (HTTP {response.status})")
        answer = self._decode_json(response, "POST /upload/image")
        if not isinstance(answer, Mapping) or not isinstance(answer.get("name"), str):
            raise BackendUnavailable(
                f"ComfyUI at {self._base_url} sent an invalid answer to POST /upload/image"
            )
        stored = answer["name"]
        stored_folder = answer.get("subfolder")
        stored_folder = stored_folder if isinstance(stored_folder, str) else folder
        return f"{stored_folder}/{stored}" if stored_folder else stored

    async def object_info(self, refresh: bool = False) -> dict[str, Any]:
        """Every node class ComfyUI knows (``GET /object_info``), cached after the first call.

        Raises:
            BackendUnavailable: ComfyUI is unreachable.
        """
        async with self._object_info_lock:
            if self._object_info is None or refresh:
                response = await self._request("GET", "/object_info")
                self._check_status(response, "GET /object_info")
                data = self._decode_json(response, "GET /object_info")
                if not isinstance(data, dict):
                    raise BackendUnavailable(
                        f"ComfyUI at {self._base_url} sent an invalid answer to GET /object_info"
                    )
                self._object_info = data
            return self._object_info

    async def system_stats(self) -> dict[str, Any]:
        """ComfyUI's version, Python, devices and memory (``GET /system_stats``).

        Raises:
            BackendUnavailable: ComfyUI is unreachable.
        """
        response = await self._request("GET", "/system_stats")
        self._check_status(response, "GET /system_stats")
        data = self._decode_json(response, "GET /system_stats")
        return data if isinstance(data, dict) else {}

    # --- transport ----------------------------------------------------------------------------

    async def _request(
        self,
        method: str,
        path: str,
        *,
        json_body: object = None,
        data: Any = None,
        params: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> _Response:
        url = self._base_url + path
        total = self._request_timeout if timeout is None else min(timeout, self._request_timeout)
        client_timeout = aiohttp.ClientTimeout(total=total)
        try:
            async with self._session.request(
                method,
                url,
                json=json_body,
                data=data,
                params=params,
                timeout=client_timeout,
                headers=self._headers or None,
            ) as resp:
                body = await resp.read()
                status = resp.status
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise BackendUnavailable(
                f"ComfyUI at {self._base_url} is not reachable ({describe(exc)})"
            ) from exc
        if status >= 500:
            raise BackendUnavailable(
                f"ComfyUI at {self._base_url} answered {method} {path} with HTTP {status}"
            )
        return _Response(status, body)

    def _check_status(self, response: _Response, what: str) -> None:
        if response.status == 403:
            raise BackendUnavailable(
                f"ComfyUI at {self._base_url} refused {what} (HTTP 403); "
                "check its origin/proxy settings"
            )
        if response.status != 200:
            raise BackendUnavailable(
                f"ComfyUI at {self._base_url} answered {what} with HTTP {response.status}"
            )

    async def _expect_ok(self, method: str, path: str, body: object) -> None:
        response = await self._request(method, path, json_body=body)
        self._check_status(response, f"{method} {path}")

    def _decode_json(self, response: _Response, what: str, default: object = ...) -> Any:
        try:
            return json.loads(response.body)
        except ValueError as exc:
            if default is not ...:
                return default
            raise BackendUnavailable(
                f"ComfyUI at {self._base_url} sent an invalid answer to {what}"
            ) from exc


# --- helpers -------------------------------------------------------------------------------------


def describe(exc: BaseException) -> str:
    """An exception as a log line shows it: ``ClientConnectorError: …`` (its type if no text)."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_filename(name: str, default_ext: str = "png") -> str:
    """Reduce an untrusted file name to a safe basename (letters, digits, ``._-``).

    ``"../../my cat.png"`` gives ``"my_cat.png"``; a name with nothing usable gives
    ``"image.png"``.
    """
    base = re.split(r"[\\/]", name)[-1]
    stem, dot, ext = base.rpartition(".")
    if not dot:
        stem, ext = base, ""
    stem = _UNSAFE.sub("_", stem).strip("._-")[:90] or "image"
    ext = _UNSAFE.sub("", ext)[:10] or default_ext
    return f"{stem}.{ext}"


def safe_subfolder(subfolder: str) -> str:
    """Reduce an untrusted subfolder to safe relative segments (no ``..``, no absolute path)."""
    parts = []
    for segment in re.split(r"[\\/]", subfolder):
        cleaned = _UNSAFE.sub("_", segment).strip("._")
        if cleaned:
            parts.append(cleaned[:64])
    return "/".join(parts)


def _safe_ref(ref: ImageRef) -> bool:
    if not ref.filename or "/" in ref.filename or "\\" in ref.filename or ref.filename == "..":
        return False
    return not (ref.subfolder.startswith(("/", "\\")) or ".." in re.split(r"[\\/]", ref.subfolder))
