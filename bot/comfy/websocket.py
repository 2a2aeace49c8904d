"""The client's one websocket to ComfyUI, and the demultiplexing of its messages by prompt id.

:class:`ComfySocket` keeps the socket open (``feature_flags`` first, a client-side heartbeat,
reconnection with backoff under a fresh clientId) and routes each message to the
:class:`~bot.comfy.tracker.PromptTracker` of its prompt, noting what each message says about the
run (started, cached nodes, files written, outcome). What follows from the socket's news is left
to the layers above it, through four hooks:

    _on_connect()            a socket opened: reconcile (``bot.comfy.reconcile``)
    _on_queue_status(moved)  a ``status`` broadcast: reconcile what the socket can't follow
    _outcome(tracker, s)     ComfyUI said how the run ended (``bot.comfy.client``)
    _start_finalize(tracker) the run is over and its history written: read it
"""

from __future__ import annotations

import asyncio
import logging
import random
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp

import bot.comfy.events as events
from bot.comfy.listeners import notify
from bot.comfy.routes import ClientConfig, ComfyRoutes, describe
from bot.comfy.tracker import PromptTracker, history_verdict
from bot.tasks import TaskGroup

log = logging.getLogger(__name__)

__all__ = ["FEATURE_FLAGS", "ComfySocket"]

#: The first message on every socket: ask for previews that carry their prompt id (type 4).
FEATURE_FLAGS = {"type": "feature_flags", "data": {"supports_preview_metadata": True}}
#: First wait before reconnecting; doubles up to ``reconnect_max_delay``.
INITIAL_RECONNECT_DELAY = 0.25
#: Largest websocket frame accepted (SaveImageWebsocket sends whole images).
WS_MAX_MESSAGE = 64 * 1024 * 1024


class ComfySocket(ComfyRoutes, ABC):
    """ComfyUI's HTTP routes plus one websocket whose messages reach the prompts' trackers."""

    def __init__(self, config: ClientConfig) -> None:
        super().__init__(config)
        self._heartbeat = config.heartbeat
        self._reconnect_max_delay = config.reconnect_max_delay
        self._connection_listeners: list[Callable[[bool], None]] = []

        self._client_id = uuid.uuid4().hex
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._trackers: dict[str, PromptTracker] = {}
        self._running_prompt: str | None = None
        self._queue_remaining: int | None = None
        self._server_features: dict[str, Any] = {}
        self._features_on: str | None = None  # the clientId whose socket got feature_flags
        self._tasks = TaskGroup("comfy")
        self._first_attempt = asyncio.Event()
        self._connected = asyncio.Event()
        self._closing = False

    # --- what the layers above decide ---------------------------------------------------------

    @abstractmethod
    def _on_connect(self) -> None:
        """A socket opened (messages sent while none was open are lost)."""

    @abstractmethod
    def _on_queue_status(self, moved: bool) -> None:
        """A ``status`` broadcast; ``moved``: ComfyUI's queue length changed."""

    @abstractmethod
    def _outcome(self, tracker: PromptTracker | None, status: events.ResultStatus) -> None:
        """ComfyUI said how a run ended (its history may not be written yet); None: not ours."""

    @abstractmethod
    def _start_finalize(self, tracker: PromptTracker) -> None:
        """The prompt's run is over (``executing node: null``): settle it from its history."""

    # --- properties ---------------------------------------------------------------------------

    @property
    def client_id(self) -> str:
        """The clientId of the current socket (a new one after each disconnection)."""
        return self._client_id

    @property
    def connected(self) -> bool:
        """Whether the websocket is open."""
        return self._ws is not None and not self._ws.closed

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
        notify(
            self._connection_listeners, up, log, "connection listener of %s failed", self._base_url
        )

    async def wait_connected(self, timeout: float | None = None) -> bool:
        """Wait until the websocket is open; returns False on timeout."""
        try:
            await asyncio.wait_for(self._connected.wait(), timeout)
        except TimeoutError:
            return False
        return True

    def orphaned(self, prompt_id: str) -> bool:
        """Whether a tracked, unsettled prompt was submitted under an earlier socket: its own
        messages (progress, the end) no longer reach us; only reconciliation settles it."""
        tracker = self._trackers.get(prompt_id)
        if tracker is None or tracker.done or tracker.submitting or not tracker.submitted:
            return False
        return tracker.client_id != self._client_id  # None: resumed from an earlier process

    # --- the socket ---------------------------------------------------------------------------

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
                self._on_connect()
                self._announce_connection(True)
                await self._read(ws)
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                failures += 1
                log.log(
                    logging.WARNING if failures % 20 == 1 else logging.DEBUG,
                    "cannot connect to ComfyUI at %s (attempt %d): %s",
                    self._base_url,
                    failures,
                    describe(exc),
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
                event = events.parse_message(msg.data)
            elif msg.type is aiohttp.WSMsgType.BINARY:
                event = events.parse_binary(msg.data)
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

    # --- demultiplexing -----------------------------------------------------------------------

    def _dispatch(self, event: events.Event) -> None:
        match event:
            case events.Status():
                remaining = event.queue_remaining
                changed = remaining is not None and remaining != self._queue_remaining
                if remaining is not None:
                    self._queue_remaining = remaining
                self._on_queue_status(changed)
            case events.ExecutionStart(prompt_id=pid):
                self._running_prompt = pid
                tracker = self._route(pid, event)
                if tracker is not None:
                    tracker.started = True
                    tracker.started_on = self._client_id
            case events.Executing(prompt_id=None):
                log.debug("executing without prompt id: %r", event)
            case events.Executing(prompt_id=str(pid), node=None):
                if self._running_prompt == pid:
                    self._running_prompt = None
                tracker = self._route(pid, event)
                if tracker is not None:
                    if self._seen_whole(tracker):
                        self._resolve(tracker, "success")
                    else:
                        self._start_finalize(tracker)
            case events.Executing(prompt_id=str(pid)):
                self._running_prompt = pid
                tracker = self._route(pid, event)
                if tracker is not None:
                    tracker.started = True
            case events.ExecutionCached(prompt_id=pid):
                tracker = self._route(pid, event)
                if tracker is not None:
                    tracker.cached_nodes = event.nodes
            case events.Executed(prompt_id=pid):
                tracker = self._route(pid, event)
                if tracker is not None and event.images:
                    old = tracker.ws_outputs.get(event.node, ())
                    merged = old + tuple(r for r in event.images if r not in old)
                    tracker.ws_outputs[event.node] = merged
            case events.ExecutionSuccess(prompt_id=pid):
                self._outcome(self._route(pid, event), "success")
            case events.ExecutionError(prompt_id=pid):
                tracker = self._route(pid, event)
                if tracker is not None:
                    tracker.error = event
                self._outcome(tracker, "error")
            case events.ExecutionInterrupted(prompt_id=pid):
                self._outcome(self._route(pid, event), "interrupted")
            case events.Progress(prompt_id=str(pid)) | events.ProgressState(prompt_id=pid):
                self._route(pid, event)
            case events.Progress(prompt_id=None) if self._running_prompt is not None:
                running = self._running_prompt
                self._route(running, events.Progress(running, event.node, event.value, event.max))
            case events.FeatureFlags():
                self._server_features = event.flags
                self._features_on = self._client_id
            case events.Preview(prompt_id=pid):
                target = pid or self._running_prompt
                if target is not None:
                    if pid is None:
                        event = events.Preview(target, event.node_id, event.mime, event.data)
                    self._route(target, event)
            case events.Text():
                if self._running_prompt is not None:
                    text = events.Text(event.node_id, event.text, self._running_prompt)
                    self._route(self._running_prompt, text)
            case events.Unknown():
                log.debug("ignored websocket message %r", event)
            case _:
                pass

    def _route(self, prompt_id: str, event: events.Event) -> PromptTracker | None:
        tracker = self._trackers.get(prompt_id)
        if tracker is None or tracker.done:
            return None
        tracker.push(event)
        return tracker

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

    # --- settling -----------------------------------------------------------------------------

    def _resolve_from_history(self, tracker: PromptTracker, entry: Mapping[str, Any]) -> None:
        verdict = history_verdict(tracker, entry)
        self._resolve(
            tracker,
            verdict.status,
            outputs=verdict.outputs,
            error=verdict.error,
            cached=verdict.cached,
        )

    def _resolve(
        self,
        tracker: PromptTracker,
        status: events.ResultStatus,
        *,
        outputs: Mapping[str, tuple[events.ImageRef, ...]] | None = None,
        error: events.ExecutionError | None = None,
        cached: tuple[str, ...] | None = None,
        log_level: int = logging.INFO,
    ) -> None:
        result = tracker.settle(status, outputs=outputs, error=error, cached=cached)
        if result is None:
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
