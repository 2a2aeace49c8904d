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

:class:`ComfyClient` is built in layers, one module each, the way httpx keeps its transport,
models and client apart::

    bot.comfy.routes     ComfyRoutes: the HTTP routes and their transport; QueueSnapshot
    bot.comfy.tracker    PromptTracker, PromptResult: one prompt's events and how it ended
    bot.comfy.websocket  ComfySocket(ComfyRoutes): the socket, its messages routed to trackers
    bot.comfy.reconcile  ReconcilingSocket(ComfySocket): what the socket missed, from the
                         queue and history
    bot.comfy.client     ComfyClient(ReconcilingSocket): start and close, track, submit,
                         cancel, and settling a run that ended
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Mapping
from typing import Any

import aiohttp

from bot.comfy.events import ResultStatus
from bot.comfy.reconcile import ReconcilingSocket
from bot.comfy.rejection import explain_rejection
from bot.comfy.routes import ClientConfig, QueueItem, QueueSnapshot, safe_filename, safe_subfolder
from bot.comfy.tracker import PromptResult, PromptTracker
from bot.comfy.websocket import FEATURE_FLAGS
from bot.errors import BackendUnavailable, ComfyError, PromptRejected

log = logging.getLogger(__name__)

__all__ = [
    "FEATURE_FLAGS",
    "ComfyClient",
    "PromptResult",
    "PromptTracker",
    "QueueItem",
    "QueueSnapshot",
    "safe_filename",
    "safe_subfolder",
]

#: Waits between tries of GET /history/{id} after ``executing`` with ``node: null``.
HISTORY_RETRY_DELAYS: tuple[float, ...] = (0.05, 0.1, 0.2, 0.4, 0.8, 1.5)
#: After an outcome message, how long to wait for ``executing node: null`` before reading history.
OUTCOME_GRACE = 5.0
#: How long start() waits for the first connection attempt.
START_WAIT = 5.0
#: Where ComfyUI-Manager serves its node class -> pack map (newest first), and how long to wait.
NODE_MAPPINGS_PATHS = ("/v2/customnode/getmappings", "/customnode/getmappings")
NODE_MAPPINGS_TIMEOUT = 5.0


class ComfyClient(ReconcilingSocket):
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
        super().__init__(
            ClientConfig(
                session,
                base_url,
                heartbeat,
                request_timeout,
                reconnect_max_delay,
                reconcile_interval,
                submit_grace,
                headers,
            )
        )
        self._socket_task: asyncio.Task[None] | None = None

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
            tracker.stop_grace()
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
        tracker.stop_grace()

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
            data = await self._post_prompt(body, prompt)
        except PromptRejected:
            self._forget(tracker)
            raise
        finally:
            tracker.submitting = False
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
            await self._delete_queued(prompt_id)
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

    # --- a run that ended ---------------------------------------------------------------------

    def _outcome(self, tracker: PromptTracker | None, status: ResultStatus) -> None:
        if tracker is None:
            return
        tracker.outcome = status
        if status == "success":
            tracker.succeeded()
        if tracker.grace_timer is None:
            loop = asyncio.get_running_loop()
            tracker.grace_timer = loop.call_later(OUTCOME_GRACE, self._start_finalize, tracker)

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
