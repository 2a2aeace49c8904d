"""One ComfyUI backend: its HTTP routes and one persistent websocket, demultiplexed by prompt id.

Life of a prompt::

    prompt_id = client.new_prompt_id()
    tracker = client.track(prompt_id)        # registered before POST /prompt: nothing is missed
    await client.submit(prompt, prompt_id=prompt_id)
    async for event in tracker:              # Progress, Preview, Executed…, ends with Finished
        ...
    result = await tracker.result()          # success / error / interrupted / lost + outputs

How no prompt is lost or stuck (see the recorded protocol notes):

- The socket sends ``feature_flags`` first so previews carry their prompt id, and uses a
  client-side heartbeat because ComfyUI never pings. A dropped socket is closed fully and
  replaced, with backoff, under a fresh clientId (two sockets with one clientId confuse ComfyUI).
- The outcome comes from ``execution_success|error|interrupted``; the outputs from
  ``GET /history/{id}`` once ``executing`` with ``node: null`` says history is written (retried
  briefly: it may lag), merged with the ``executed`` events. A success seen whole on one socket
  (``execution_start`` to ``executing node: null``, from a server that answered
  ``feature_flags`` and so sends ``executed`` for cached outputs too) is settled from the
  ``executed`` events alone: they are what history would say, and the result comes one round
  trip sooner.
- Messages missed while the socket was down are not replayed, and prompts submitted under an
  old clientId no longer reach us. So after every (re)connect, on ``status`` broadcasts (the
  queue changed) and every ``reconcile_interval`` seconds, unfinished prompts are reconciled:
  still in ``GET /queue`` -> keep waiting (and report the position); else in ``GET /history`` ->
  resolve from it; else -> "lost" (ComfyUI restarted or the prompt was deleted: resubmit it).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import mimetypes
import random
import re
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import aiohttp

from bot.comfy.events import (
    Event,
    Executed,
    Executing,
    ExecutionCached,
    ExecutionError,
    ExecutionInterrupted,
    ExecutionStart,
    ExecutionSuccess,
    FeatureFlags,
    Finished,
    ImageRef,
    Preview,
    Progress,
    ProgressState,
    QueuePosition,
    ResultStatus,
    Status,
    Text,
    Unknown,
    parse_binary,
    parse_message,
    parse_payload,
    refs_from_output,
)
from bot.comfy.rejection import explain_rejection
from bot.errors import (
    BackendUnavailable,
    ComfyError,
    ExecutionFailed,
    Interrupted,
    OutputMissing,
    PromptRejected,
)
from bot.tasks import TaskGroup

log = logging.getLogger(__name__)

__all__ = [
    "ComfyClient",
    "PromptResult",
    "PromptTracker",
    "QueueItem",
    "QueueSnapshot",
    "safe_filename",
    "safe_subfolder",
]

#: The first message on every socket: ask for previews that carry their prompt id (type 4).
FEATURE_FLAGS = {"type": "feature_flags", "data": {"supports_preview_metadata": True}}
#: Waits between tries of GET /history/{id} after ``executing`` with ``node: null``.
HISTORY_RETRY_DELAYS: tuple[float, ...] = (0.05, 0.1, 0.2, 0.4, 0.8, 1.5)
#: After an outcome message, how long to wait for ``executing node: null`` before reading history.
OUTCOME_GRACE = 5.0
#: Least time between two reconciliations triggered by ``status`` broadcasts.
REFRESH_MIN_INTERVAL = 1.0
#: First wait before reconnecting; doubles up to ``reconnect_max_delay``.
INITIAL_RECONNECT_DELAY = 0.25
#: A prompt's event queue keeps at most this many events (the oldest are dropped).
MAX_QUEUED_EVENTS = 1000
#: Largest websocket frame accepted (SaveImageWebsocket sends whole images).
WS_MAX_MESSAGE = 64 * 1024 * 1024
#: How long start() waits for the first connection attempt.
START_WAIT = 5.0
#: Where ComfyUI-Manager serves its node class -> pack map (newest first), and how long to wait.
NODE_MAPPINGS_PATHS = ("/v2/customnode/getmappings", "/customnode/getmappings")
NODE_MAPPINGS_TIMEOUT = 5.0


@dataclass(frozen=True, slots=True)
class PromptResult:
    """How a prompt ended, and the files its output nodes wrote (by node id)."""

    prompt_id: str
    status: ResultStatus
    outputs: dict[str, tuple[ImageRef, ...]] = field(default_factory=dict)
    error: ExecutionError | None = None
    cached_nodes: tuple[str, ...] = ()

    @property
    def images(self) -> tuple[ImageRef, ...]:
        """Every output file, in node order."""
        return tuple(ref for refs in self.outputs.values() for ref in refs)

    def raise_for_status(self) -> None:
        """Raise the error matching a result that isn't a success.

        Raises:
            ExecutionFailed: a node raised (``status == "error"``).
            Interrupted: the prompt was interrupted or cancelled.
            BackendUnavailable: ComfyUI lost the prompt (it restarted, or someone deleted it).
        """
        if self.status == "error":
            if self.error is not None:
                raise self.error.to_exception()
            raise ExecutionFailed("ComfyUI reported an error but gave no details")
        if self.status == "interrupted":
            raise Interrupted("the generation was interrupted")
        if self.status == "lost":
            raise BackendUnavailable(
                "ComfyUI lost the generation (it was probably restarted); try again"
            )


@dataclass(frozen=True, slots=True)
class QueueItem:
    """One entry of ``GET /queue``."""

    number: float
    prompt_id: str
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


class PromptTracker:
    """Follows one prompt: its events as they come, then its :class:`PromptResult`.

    ``events`` is an :class:`asyncio.Queue` (the oldest events are dropped past
    :data:`MAX_QUEUED_EVENTS`); iterating the tracker reads it and stops after :class:`Finished`.
    Type-1 previews and text frames get the prompt id of the prompt running on our socket.
    """

    def __init__(self, prompt_id: str, *, resume: bool, created: float) -> None:
        self.prompt_id = prompt_id
        self.events: asyncio.Queue[Event] = asyncio.Queue(maxsize=MAX_QUEUED_EVENTS)
        self._result: asyncio.Future[PromptResult] = asyncio.get_running_loop().create_future()
        # The state below belongs to ComfyClient.
        self.created = created
        self.submitted = resume  # ComfyUI has (or had) it: POST answered, or tracked to resume
        self.submitting = False
        self.client_id: str | None = None  # the clientId it was submitted under
        self.started = False
        self.started_on: str | None = None  # the clientId whose socket saw execution_start
        self.cancel_requested = False
        self.outcome: ResultStatus | None = None
        self.error: ExecutionError | None = None
        self.ws_outputs: dict[str, tuple[ImageRef, ...]] = {}
        self.cached_nodes: tuple[str, ...] = ()
        self.last_position: int | None = None
        self.finalizing: asyncio.Task[None] | None = None
        self.grace_timer: asyncio.TimerHandle | None = None
        self.dropped = 0
        self._success_listeners: list[Callable[[Mapping[str, tuple[ImageRef, ...]]], None]] = []

    @property
    def done(self) -> bool:
        """Whether the result is known."""
        return self._result.done()

    async def result(self) -> PromptResult:
        """Wait for the prompt to end (cancelling the wait doesn't cancel the prompt)."""
        return await asyncio.shield(self._result)

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._stream()

    async def _stream(self) -> AsyncIterator[Event]:
        while True:
            event = await self.events.get()
            yield event
            if isinstance(event, Finished):
                return

    def on_success(self, listener: Callable[[Mapping[str, tuple[ImageRef, ...]]], None]) -> None:
        """Call ``listener(outputs)`` the moment ComfyUI says the run succeeded, with the files
        its ``executed`` messages named so far (node id -> files), before the result is settled:
        e.g. to start downloading them. Called at once if that moment has passed."""
        if self.outcome == "success":
            listener(self.ws_outputs)
        else:
            self._success_listeners.append(listener)

    def succeeded(self) -> None:
        """ComfyUI said the run succeeded: tell the :meth:`on_success` listeners."""
        listeners, self._success_listeners = self._success_listeners, []
        for listener in listeners:
            try:
                listener(self.ws_outputs)
            except Exception:
                log.exception("success listener of prompt %s failed", self.prompt_id)

    def push(self, event: Event) -> None:
        """Queue an event for the consumer, dropping the oldest one when full."""
        while True:
            try:
                self.events.put_nowait(event)
                return
            except asyncio.QueueFull:
                with contextlib.suppress(asyncio.QueueEmpty):
                    self.events.get_nowait()
                    self.dropped += 1
                    if self.dropped == 1:
                        log.debug("prompt %s: event queue full, dropping oldest", self.prompt_id)

    def finish(self, result: PromptResult) -> bool:
        """Set the result once; returns False if it was already set."""
        if self._result.done():
            return False
        self._result.set_result(result)
        if self.grace_timer is not None:
            self.grace_timer.cancel()
            self.grace_timer = None
        self.push(Finished(self.prompt_id, result.status))
        return True

    def __repr__(self) -> str:
        state = self._result.result().status if self.done else "pending"
        return f"<PromptTracker {self.prompt_id} {state}>"


class _Response(NamedTuple):
    status: int
    body: bytes


class ComfyClient:
    """A client for one ComfyUI server (see the module docstring)."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str = "http://127.0.0.1:8188",
        *,
        heartbeat: float = 15.0,
        request_timeout: float = 30.0,
        reconnect_max_delay: float = 10.0,
        reconcile_interval: float = 30.0,
        submit_grace: float = 60.0,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Create a client; nothing connects until :meth:`start`.

        Args:
            session: the application's aiohttp session (not closed by this client).
            base_url: ComfyUI's address, e.g. ``http://127.0.0.1:8188`` (a path prefix is kept).
            heartbeat: seconds between websocket pings; no pong within half of it = dead socket.
            request_timeout: total timeout of each HTTP request.
            reconnect_max_delay: longest wait between two connection attempts.
            reconcile_interval: seconds between two safety-net reconciliations.
            submit_grace: how long a prompt tracked with ``track()`` but never submitted may be
                absent from ComfyUI before it is reported lost.
            headers: sent with every request and the websocket handshake (e.g. the
                ``Authorization`` of a reverse proxy); never logged.
        """
        self._session = session
        self._base_url = base_url.rstrip("/")
        self._heartbeat = heartbeat
        self._request_timeout = request_timeout
        self._reconnect_max_delay = reconnect_max_delay
        self._reconcile_interval = reconcile_interval
        self._submit_grace = submit_grace
        self._headers = dict(headers or {})
        self._connection_listeners: list[Callable[[bool], None]] = []

        self._client_id = uuid.uuid4().hex
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._trackers: dict[str, PromptTracker] = {}
        self._running_prompt: str | None = None
        self._queue_remaining: int | None = None
        self._server_features: dict[str, Any] = {}
        self._features_on: str | None = None  # the clientId whose socket got feature_flags
        self._tasks = TaskGroup("comfy")
        self._socket_task: asyncio.Task[None] | None = None
        self._first_attempt = asyncio.Event()
        self._connected = asyncio.Event()
        self._closing = False
        self._reconcile_lock = asyncio.Lock()
        self._refresh_wanted = False
        self._refresh_task: asyncio.Task[None] | None = None
        self._object_info: dict[str, Any] | None = None
        self._object_info_lock = asyncio.Lock()

    # --- properties ---------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """ComfyUI's address, without a trailing slash."""
        return self._base_url

    @property
    def client_id(self) -> str:
        """The clientId of the current socket (a new one after each disconnection)."""
        return self._client_id

    @property
    def connected(self) -> bool:
        """Whether the websocket is open."""
        return self._ws is not None and not self._ws.closed

    @property
    def cached_object_info(self) -> dict[str, Any] | None:
        """The last ``/object_info`` read (None before the first :meth:`object_info`)."""
        return self._object_info

    @property
    def queue_remaining(self) -> int | None:
        """ComfyUI's queue length from its last ``status`` message (None before the first)."""
        return self._queue_remaining

    @property
    def server_features(self) -> dict[str, Any]:
        """The server's ``feature_flags`` answer (e.g. ``max_upload_size``); empty before it."""
        return self._server_features

    def on_connection(self, listener: Callable[[bool], None]) -> None:
        """Call ``listener(True)`` each time the websocket opens, ``listener(False)`` when lost."""
        self._connection_listeners.append(listener)

    def _announce_connection(self, up: bool) -> None:
        for listener in list(self._connection_listeners):
            try:
                listener(up)
            except Exception:
                log.exception("connection listener of %s failed", self._base_url)

    # --- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the websocket task; returns after the first connection attempt (or 5 s).

        Never raises when ComfyUI is down: the task keeps retrying with backoff.
        """
        if self._socket_task is not None and not self._socket_task.done():
            return
        self._closing = False
        self._first_attempt.clear()
        self._socket_task = self._tasks.spawn(self._socket_loop(), name="websocket")
        self._tasks.spawn(self._periodic_reconcile(), name="reconcile")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                self._first_attempt.wait(), min(START_WAIT, self._request_timeout)
            )

    async def wait_connected(self, timeout: float | None = None) -> bool:
        """Wait until the websocket is open; returns False on timeout."""
        try:
            await asyncio.wait_for(self._connected.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def close(self) -> None:
        """Close the websocket and stop every background task.

        Unfinished trackers stay unresolved (their prompts may still run on ComfyUI): keep their
        ids to follow them again with ``track(prompt_id, resume=True)`` after a restart.
        """
        self._closing = True
        ws = self._ws
        if ws is not None:
            await ws.close()
        for tracker in self._trackers.values():
            if tracker.grace_timer is not None:
                tracker.grace_timer.cancel()
                tracker.grace_timer = None
        await self._tasks.cancel_all()
        self._socket_task = None
        self._refresh_task = None

    async def __aenter__(self) -> ComfyClient:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # --- prompts ------------------------------------------------------------------------------

    @staticmethod
    def new_prompt_id() -> str:
        """A fresh prompt id (uuid4) to register with :meth:`track` before submitting."""
        return str(uuid.uuid4())

    def track(self, prompt_id: str, *, resume: bool = False) -> PromptTracker:
        """Register a prompt so that none of its events are missed; returns its tracker.

        Call it before :meth:`submit`, or after an engine restart with ``resume=True`` to follow
        a prompt submitted earlier (it is then reconciled at once). Tracking an id that is
        already tracked returns the same tracker.
        """
        tracker = self._trackers.get(prompt_id)
        if tracker is not None and not tracker.done:
            if resume and not tracker.submitted:
                tracker.submitted = True
                self._schedule_reconcile([tracker], reason="resume")
            return tracker
        tracker = PromptTracker(prompt_id, resume=resume, created=asyncio.get_running_loop().time())
        self._trackers[prompt_id] = tracker
        if resume:
            self._schedule_reconcile([tracker], reason="resume")
        return tracker

    def _forget(self, tracker: PromptTracker) -> None:
        if self._trackers.get(tracker.prompt_id) is tracker:
            del self._trackers[tracker.prompt_id]
        if tracker.grace_timer is not None:
            tracker.grace_timer.cancel()
            tracker.grace_timer = None

    def orphaned(self, prompt_id: str) -> bool:
        """Whether a tracked, unsettled prompt was submitted under an earlier socket: its own
        messages (progress, the end) no longer reach us; only reconciliation settles it."""
        tracker = self._trackers.get(prompt_id)
        if tracker is None or tracker.done or tracker.submitting or not tracker.submitted:
            return False
        return tracker.client_id != self._client_id  # None: resumed from an earlier process

    def untrack(self, prompt_id: str) -> None:
        """Stop following a prompt; if its result is still unknown it becomes ``"lost"``."""
        tracker = self._trackers.pop(prompt_id, None)
        if tracker is None:
            return
        if tracker.finalizing is not None and not tracker.finalizing.done():
            tracker.finalizing.cancel()
        self._resolve(tracker, "lost", log_level=logging.DEBUG)

    async def submit(
        self,
        prompt: Mapping[str, Any],
        *,
        prompt_id: str | None = None,
        extra_data: Mapping[str, Any] | None = None,
    ) -> str:
        """Queue an API-format prompt (``POST /prompt``) and return its prompt id.

        The prompt is tracked before the request (see :meth:`track`). When ComfyUI rejects it the
        tracker is dropped unresolved; when ComfyUI can't be reached it stays tracked, so that
        submitting again with the same ``prompt_id`` reuses it (and if the request did arrive
        after all, reconciliation finds the prompt in the queue).

        Raises:
            PromptRejected: ComfyUI refused the workflow (HTTP 400, or 413 when it is too large);
                the message names the offending node, input and problem.
            BackendUnavailable: ComfyUI is unreachable or answered with a server error.
        """
        pid = prompt_id or self.new_prompt_id()
        tracker = self.track(pid)
        tracker.submitting = True
        tracker.client_id = self._client_id
        body: dict[str, Any] = {"prompt": prompt, "client_id": tracker.client_id, "prompt_id": pid}
        if extra_data:
            body["extra_data"] = dict(extra_data)
        try:
            response = await self._request("POST", "/prompt", json_body=body)
        finally:
            tracker.submitting = False
        if response.status in (400, 413):
            self._forget(tracker)
            if response.status == 413:
                message = "the workflow is larger than ComfyUI accepts (HTTP 413)"
                raise PromptRejected(message)
            data = self._decode_json(response, "POST /prompt", default={})
            data = data if isinstance(data, dict) else {}
            message = explain_rejection(data, prompt, self._object_info)
            log.info("ComfyUI rejected prompt %s: %s", pid, message)
            raise PromptRejected(message, data)
        self._check_status(response, "POST /prompt")
        data = self._decode_json(response, "POST /prompt")
        answer = data if isinstance(data, Mapping) else {}
        returned = answer.get("prompt_id")
        if isinstance(returned, str) and returned != pid:
            # An old ComfyUI that ignores the client's prompt_id: follow the one it chose.
            log.warning("ComfyUI renamed prompt %s to %s", pid, returned)
            self._trackers.pop(pid, None)
            tracker.prompt_id = returned
            self._trackers[returned] = tracker
            pid = returned
        node_errors = answer.get("node_errors")
        if isinstance(node_errors, Mapping) and node_errors:
            log.warning(
                "ComfyUI queued prompt %s but skips some outputs: %s",
                pid,
                explain_rejection({"node_errors": node_errors}, prompt, self._object_info),
            )
        tracker.submitted = True
        log.info("queued prompt %s (#%s) on %s", pid, answer.get("number"), self._base_url)
        if tracker.cancel_requested and not tracker.done:
            await self.cancel(pid)
        return pid

    async def reconcile(self, prompt_id: str | None = None) -> None:
        """Settle a tracked prompt (or every one) now, from ``GET /queue`` and ``/history``.

        A prompt named here counts as submitted: if ComfyUI has neither queued nor finished it,
        it is resolved as ``"lost"``. Never raises: when ComfyUI can't be reached, the
        reconciliation that follows the next connection settles it.
        """
        if prompt_id is None:
            await self._reconcile(None, reason="requested")
            return
        tracker = self._trackers.get(prompt_id)
        if tracker is None or tracker.done:
            return
        if not tracker.submitting:
            tracker.submitted = True
        await self._reconcile([tracker], reason="requested")

    async def cancel(self, prompt_id: str) -> None:
        """Cancel a prompt: delete it if pending, interrupt it if running.

        A deleted pending prompt gets no message from ComfyUI, so its tracker is resolved here
        as ``"interrupted"``; a running one is resolved by ComfyUI's ``execution_interrupted``.

        Raises:
            BackendUnavailable: ComfyUI is unreachable.
        """
        tracker = self._trackers.get(prompt_id)
        if tracker is not None:
            tracker.cancel_requested = True
            if tracker.submitting:
                return  # submit() cancels it once ComfyUI has answered
        position = (await self.queue_snapshot()).position(prompt_id)
        if position == 0:
            await self._interrupt(prompt_id)
            return
        if position is not None:
            log.info("deleting pending prompt %s", prompt_id)
            await self._expect_ok("POST", "/queue", {"delete": [prompt_id]})
            position = (await self.queue_snapshot()).position(prompt_id)
            if position == 0:  # it started before the delete: interrupt it instead
                await self._interrupt(prompt_id)
                return
            if position is not None:
                log.warning("prompt %s is still pending after its deletion", prompt_id)
                return
        if tracker is not None and not tracker.done:
            entry = await self.history(prompt_id)
            if entry is not None:
                self._resolve_from_history(tracker, entry)
            elif tracker.submitted:
                self._resolve(tracker, "interrupted")

    async def delete_pending(self, prompt_id: str) -> bool:
        """Take a prompt out of ComfyUI's queue if it has not started; returns whether it did.

        False when it is running or done (it is left alone) or unknown. Its tracker, if any,
        is left as it is: stop following it first.

        Raises:
            BackendUnavailable: ComfyUI is unreachable.
        """
        if not (await self.queue_snapshot()).position(prompt_id):
            return False
        await self._expect_ok("POST", "/queue", {"delete": [prompt_id]})
        if (await self.queue_snapshot()).position(prompt_id) is not None:
            return False  # it started before the delete
        return await self.history(prompt_id) is None  # else it even finished meanwhile

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

    async def node_mappings(self) -> Mapping[str, Any] | None:
        """ComfyUI-Manager's map from node class to pack, as this server's Manager serves it.

        ``GET /v2/customnode/getmappings?mode=local`` (Manager 4), else the older
        ``/customnode/getmappings``; read it with ``bot.workflows.nodemap.NodeMap.for_server``.
        None when ComfyUI has no Manager (404), is unreachable, or answers something else; never
        raises.
        """
        for path in NODE_MAPPINGS_PATHS:
            try:
                response = await self._request(
                    "GET", path, params={"mode": "local"}, timeout=NODE_MAPPINGS_TIMEOUT
                )
            except ComfyError as exc:
                log.debug("GET %s: %s", path, exc)
                return None
            if response.status == 404:
                continue
            data = self._decode_json(response, f"GET {path}", default=None)
            if response.status == 200 and isinstance(data, dict):
                return data
            log.debug("GET %s: HTTP %d, not a JSON object", path, response.status)
            return None
        log.debug("ComfyUI at %s serves no node mappings (no ComfyUI-Manager)", self._base_url)
        return None

    # --- HTTP ---------------------------------------------------------------------------------

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
                f"ComfyUI at {self._base_url} is not reachable ({_describe(exc)})"
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

    # --- websocket ----------------------------------------------------------------------------

    def _ws_url(self) -> str:
        base = self._base_url
        if base.startswith("https://"):
            base = "wss://" + base[len("https://") :]
        elif base.startswith("http://"):
            base = "ws://" + base[len("http://") :]
        return f"{base}/ws?clientId={self._client_id}"

    async def _socket_loop(self) -> None:
        delay = INITIAL_RECONNECT_DELAY
        failures = 0
        while not self._closing:
            ws: aiohttp.ClientWebSocketResponse | None = None
            try:
                async with asyncio.timeout(self._request_timeout):
                    ws = await self._session.ws_connect(
                        self._ws_url(),
                        heartbeat=self._heartbeat,
                        max_msg_size=WS_MAX_MESSAGE,
                        headers=self._headers or None,
                        timeout=aiohttp.ClientWSTimeout(ws_close=min(self._heartbeat, 5.0)),
                    )
                    await ws.send_json(FEATURE_FLAGS)
                self._ws = ws
                self._connected.set()
                self._first_attempt.set()
                log.info(
                    "connected to ComfyUI at %s (clientId %s)", self._base_url, self._client_id
                )
                delay = INITIAL_RECONNECT_DELAY
                failures = 0
                self._schedule_reconcile(None, reason="connect")
                self._announce_connection(True)
                await self._read(ws)
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                failures += 1
                log.log(
                    logging.WARNING if failures % 20 == 1 else logging.DEBUG,
                    "cannot connect to ComfyUI at %s (attempt %d): %s",
                    self._base_url,
                    failures,
                    _describe(exc),
                )
            finally:
                self._first_attempt.set()
                self._connected.clear()
                self._ws = None
                self._running_prompt = None
                if ws is not None:
                    if not self._closing:
                        self._announce_connection(False)
                    await ws.close()
                    # A socket was opened under this clientId: never reuse it (see PROTOCOL.md).
                    self._client_id = uuid.uuid4().hex
            if self._closing:
                break
            wait = delay * random.uniform(0.8, 1.2)
            log.debug("reconnecting to %s in %.2f s", self._base_url, wait)
            await asyncio.sleep(wait)
            delay = min(delay * 2, self._reconnect_max_delay)

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        while True:
            msg = await ws.receive()
            if msg.type is aiohttp.WSMsgType.TEXT:
                event = parse_message(msg.data)
            elif msg.type is aiohttp.WSMsgType.BINARY:
                event = parse_binary(msg.data)
            elif msg.type in (
                aiohttp.WSMsgType.CLOSE,
                aiohttp.WSMsgType.CLOSING,
                aiohttp.WSMsgType.CLOSED,
                aiohttp.WSMsgType.ERROR,
            ):
                if not self._closing:
                    log.warning(
                        "lost the websocket to ComfyUI at %s (%s)",
                        self._base_url,
                        ws.exception() or f"close code {ws.close_code}",
                    )
                return
            else:
                continue
            try:
                self._dispatch(event)
            except Exception:
                log.exception("failed to handle %r", event)

    def _dispatch(self, event: Event) -> None:
        match event:
            case Status():
                remaining = event.queue_remaining
                changed = remaining is not None and remaining != self._queue_remaining
                if remaining is not None:
                    self._queue_remaining = remaining
                orphans = [t for t in self._trackers.values() if self.orphaned(t.prompt_id)]
                if changed and orphans:
                    # the queue moved: an orphan may have just finished, and its messages went
                    # to a socket that is gone; look now rather than after the refresh throttle
                    self._schedule_reconcile(orphans, reason="queue changed")
                else:
                    self._request_refresh()
            case ExecutionStart(prompt_id=pid):
                self._running_prompt = pid
                tracker = self._route(pid, event)
                if tracker is not None:
                    tracker.started = True
                    tracker.started_on = self._client_id
            case Executing(prompt_id=None):
                log.debug("executing without prompt id: %r", event)
            case Executing(prompt_id=str(pid), node=None):
                if self._running_prompt == pid:
                    self._running_prompt = None
                tracker = self._route(pid, event)
                if tracker is not None:
                    if self._seen_whole(tracker):
                        self._resolve(tracker, "success")
                    else:
                        self._start_finalize(tracker)
            case Executing(prompt_id=str(pid)):
                self._running_prompt = pid
                tracker = self._route(pid, event)
                if tracker is not None:
                    tracker.started = True
            case ExecutionCached(prompt_id=pid):
                tracker = self._route(pid, event)
                if tracker is not None:
                    tracker.cached_nodes = event.nodes
            case Executed(prompt_id=pid):
                tracker = self._route(pid, event)
                if tracker is not None and event.images:
                    old = tracker.ws_outputs.get(event.node, ())
                    merged = old + tuple(r for r in event.images if r not in old)
                    tracker.ws_outputs[event.node] = merged
            case ExecutionSuccess(prompt_id=pid):
                self._outcome(self._route(pid, event), "success")
            case ExecutionError(prompt_id=pid):
                tracker = self._route(pid, event)
                if tracker is not None:
                    tracker.error = event
                self._outcome(tracker, "error")
            case ExecutionInterrupted(prompt_id=pid):
                self._outcome(self._route(pid, event), "interrupted")
            case Progress(prompt_id=str(pid)) | ProgressState(prompt_id=pid):
                self._route(pid, event)
            case Progress(prompt_id=None) if self._running_prompt is not None:
                running = self._running_prompt
                self._route(running, Progress(running, event.node, event.value, event.max))
            case FeatureFlags():
                self._server_features = event.flags
                self._features_on = self._client_id
            case Preview(prompt_id=pid):
                target = pid or self._running_prompt
                if target is not None:
                    if pid is None:
                        event = Preview(target, event.node_id, event.mime, event.data)
                    self._route(target, event)
            case Text():
                if self._running_prompt is not None:
                    text = Text(event.node_id, event.text, self._running_prompt)
                    self._route(self._running_prompt, text)
            case Unknown():
                log.debug("ignored websocket message %r", event)
            case _:
                pass

    def _route(self, prompt_id: str, event: Event) -> PromptTracker | None:
        tracker = self._trackers.get(prompt_id)
        if tracker is None or tracker.done:
            return None
        tracker.push(event)
        return tracker

    def _outcome(self, tracker: PromptTracker | None, status: ResultStatus) -> None:
        if tracker is None:
            return
        tracker.outcome = status
        if status == "success":
            tracker.succeeded()
        if tracker.grace_timer is None:
            loop = asyncio.get_running_loop()
            tracker.grace_timer = loop.call_later(OUTCOME_GRACE, self._start_finalize, tracker)

    # --- resolving ----------------------------------------------------------------------------

    def _seen_whole(self, tracker: PromptTracker) -> bool:
        """Whether this socket carried a successful run from its start to its end.

        ComfyUI sends a prompt's messages only to the socket that submitted it, in order, so a
        run whose ``execution_start`` and outcome both came on the current socket was seen
        whole: its ``executed`` events name every file it wrote. Servers that answer
        ``feature_flags`` also send ``executed`` for cached outputs (older ones did not), so
        without that answer the history is read as before.
        """
        return (
            tracker.outcome == "success"
            and tracker.started_on == self._client_id
            and self._features_on == self._client_id
        )

    def _start_finalize(self, tracker: PromptTracker) -> None:
        if tracker.done or self._closing:
            return
        if tracker.finalizing is not None and not tracker.finalizing.done():
            return
        tracker.finalizing = self._tasks.spawn(
            self._finalize(tracker), name=f"finalize:{tracker.prompt_id}"
        )

    async def _finalize(self, tracker: PromptTracker) -> None:
        """Read the history of a prompt ComfyUI says is over; retried while history lags."""
        pid = tracker.prompt_id
        for delay in (0.0, *HISTORY_RETRY_DELAYS):
            if delay:
                await asyncio.sleep(delay)
            if tracker.done:
                return
            try:
                entry = await self.history(pid)
            except BackendUnavailable as exc:
                log.debug("history of %s not readable yet: %s", pid, exc)
                continue
            if entry is not None:
                self._resolve_from_history(tracker, entry)
                return
        if tracker.done:
            return
        if tracker.outcome is not None:
            log.warning("ComfyUI has no history for finished prompt %s; using its messages", pid)
            self._resolve(tracker, tracker.outcome)
        else:
            await self._reconcile([tracker], reason="no history")

    def _resolve_from_history(self, tracker: PromptTracker, entry: Mapping[str, Any]) -> None:
        status_obj = entry.get("status")
        status_obj = status_obj if isinstance(status_obj, Mapping) else {}
        error: ExecutionError | None = None
        interrupted = False
        cached = tracker.cached_nodes
        messages = status_obj.get("messages")
        for message in messages if isinstance(messages, list) else []:
            if not (isinstance(message, list) and len(message) == 2):
                continue
            event = parse_payload({"type": message[0], "data": message[1]})
            if isinstance(event, ExecutionError):
                error = event
            elif isinstance(event, ExecutionInterrupted):
                interrupted = True
            elif isinstance(event, ExecutionCached):
                cached = event.nodes
        status_str = status_obj.get("status_str")
        status: ResultStatus
        if interrupted:
            status = "interrupted"
        elif error is not None or status_str == "error":
            status = "error"
        elif status_str == "success" or status_obj.get("completed") is True:
            status = "success"
        else:
            status = tracker.outcome or "success"
        outputs = dict(tracker.ws_outputs)
        raw_outputs = entry.get("outputs")
        if isinstance(raw_outputs, Mapping):
            for node_id, output in raw_outputs.items():
                refs = refs_from_output(output)
                if refs:
                    outputs[str(node_id)] = refs
        self._resolve(
            tracker,
            status,
            outputs=outputs,
            error=error or tracker.error if status == "error" else None,
            cached=cached,
        )

    def _resolve(
        self,
        tracker: PromptTracker,
        status: ResultStatus,
        *,
        outputs: Mapping[str, tuple[ImageRef, ...]] | None = None,
        error: ExecutionError | None = None,
        cached: tuple[str, ...] | None = None,
        log_level: int = logging.INFO,
    ) -> None:
        if status == "error" and error is None:
            error = tracker.error
        chosen = dict(tracker.ws_outputs if outputs is None else outputs)
        result = PromptResult(
            prompt_id=tracker.prompt_id,
            status=status,
            outputs={k: chosen[k] for k in sorted(chosen, key=_node_order)},
            error=error if status == "error" else None,
            cached_nodes=tracker.cached_nodes if cached is None else cached,
        )
        if not tracker.finish(result):
            return
        if self._trackers.get(tracker.prompt_id) is tracker:
            del self._trackers[tracker.prompt_id]
        log.log(
            log_level,
            "prompt %s finished: %s (%d files)",
            tracker.prompt_id,
            status,
            len(result.images),
        )

    # --- reconciliation -----------------------------------------------------------------------

    def _schedule_reconcile(self, trackers: list[PromptTracker] | None, *, reason: str) -> None:
        if self._closing or (trackers is None and not self._trackers):
            return
        self._tasks.spawn(self._safe_reconcile(trackers, reason=reason), name=f"reconcile:{reason}")

    def _request_refresh(self) -> None:
        """A ``status`` broadcast: the queue changed. Check prompts the socket can't follow."""
        if not any(self._wants_refresh(t) for t in self._trackers.values()):
            return
        self._refresh_wanted = True
        if self._refresh_task is None or self._refresh_task.done():
            self._refresh_task = self._tasks.spawn(self._refresh_loop(), name="refresh")

    def _wants_refresh(self, tracker: PromptTracker) -> bool:
        if tracker.done or tracker.submitting:
            return False
        orphan = tracker.client_id != self._client_id
        return orphan or not tracker.started

    async def _refresh_loop(self) -> None:
        while self._refresh_wanted and not self._closing:
            self._refresh_wanted = False
            targets = [t for t in self._trackers.values() if self._wants_refresh(t)]
            if targets:
                await self._safe_reconcile(targets, reason="status")
            await asyncio.sleep(REFRESH_MIN_INTERVAL)

    async def _periodic_reconcile(self) -> None:
        while not self._closing:
            await asyncio.sleep(self._reconcile_interval)
            if self._trackers:
                await self._safe_reconcile(None, reason="periodic")

    async def _safe_reconcile(self, trackers: list[PromptTracker] | None, *, reason: str) -> None:
        """A reconciliation whose bugs are logged instead of stopping the loop that runs it."""
        try:
            await self._reconcile(trackers, reason=reason)
        except Exception:
            log.exception("reconciliation (%s) failed", reason)

    async def _reconcile(self, trackers: Iterable[PromptTracker] | None, *, reason: str) -> None:
        """Settle unfinished prompts from ``GET /queue`` then ``GET /history/{id}``.

        The queue is read first: a prompt leaves the queue only once its history is written, so
        a prompt absent from the queue is either in history or gone for good.
        """
        async with self._reconcile_lock:
            pool = list(self._trackers.values()) if trackers is None else list(trackers)
            candidates = [t for t in pool if not t.done and not t.submitting]
            if not candidates:
                return
            try:
                snapshot = await self.queue_snapshot()
            except BackendUnavailable as exc:
                log.debug("reconcile (%s) postponed: %s", reason, exc)
                return
            now = asyncio.get_running_loop().time()
            for tracker in candidates:
                if tracker.done:
                    continue
                position = snapshot.position(tracker.prompt_id)
                if position is not None:
                    tracker.submitted = True
                    if position != tracker.last_position:
                        tracker.last_position = position
                        tracker.push(QueuePosition(tracker.prompt_id, position))
                    continue
                try:
                    entry = await self.history(tracker.prompt_id)
                except BackendUnavailable as exc:
                    log.debug("reconcile (%s) postponed: %s", reason, exc)
                    return
                if tracker.done:
                    continue
                if entry is not None:
                    log.info("prompt %s settled from history (%s)", tracker.prompt_id, reason)
                    self._resolve_from_history(tracker, entry)
                elif tracker.outcome is not None:
                    self._resolve(tracker, tracker.outcome)
                elif tracker.cancel_requested and tracker.submitted:
                    self._resolve(tracker, "interrupted")
                elif tracker.submitted or now - tracker.created >= self._submit_grace:
                    log.warning(
                        "prompt %s is neither queued nor in the history of %s: lost (%s)",
                        tracker.prompt_id,
                        self._base_url,
                        reason,
                    )
                    self._resolve(tracker, "lost")


# --- helpers -------------------------------------------------------------------------------------


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _node_order(node_id: str) -> tuple[int, int, str]:
    return (0, int(node_id), node_id) if node_id.isdigit() else (1, 0, node_id)


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
