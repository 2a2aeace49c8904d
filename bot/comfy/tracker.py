"""One prompt followed on ComfyUI: its :class:`PromptTracker`, then its :class:`PromptResult`.

A tracker is a plain object: the client (``bot.comfy.client``) registers it, pushes it the events
its websocket demultiplexes (``bot.comfy.websocket``) and settles it, from those events or from
what ``GET /history/{id}`` says (:func:`history_verdict`), once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from bot.comfy.events import (
    Event,
    ExecutionCached,
    ExecutionError,
    ExecutionInterrupted,
    Finished,
    ImageRef,
    ResultStatus,
    parse_payload,
    refs_from_output,
)
from bot.comfy.listeners import notify
from bot.errors import BackendUnavailable, ExecutionFailed, Interrupted

log = logging.getLogger(__name__)

__all__ = [
    "MAX_QUEUED_EVENTS",
    "HistoryVerdict",
    "PromptResult",
    "PromptTracker",
    "history_verdict",
]

#: A prompt's event queue keeps at most this many events (the oldest are dropped).
MAX_QUEUED_EVENTS = 1000


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
        notify(
            listeners, self.ws_outputs, log, "success listener of prompt %s failed", self.prompt_id
        )

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

    def stop_grace(self) -> None:
        """Cancel the wait for ``executing node: null`` after an outcome, if one is armed."""
        if self.grace_timer is not None:
            self.grace_timer.cancel()
            self.grace_timer = None

    def settle(
        self,
        status: ResultStatus,
        *,
        outputs: Mapping[str, tuple[ImageRef, ...]] | None = None,
        error: ExecutionError | None = None,
        cached: tuple[str, ...] | None = None,
    ) -> PromptResult | None:
        """End the prompt with ``status``; returns its result, None if it had ended already.

        ``outputs`` default to the files its ``executed`` events named, ``error`` (for an error)
        to the one its ``execution_error`` carried, ``cached`` to its ``execution_cached`` nodes.
        """
        if status == "error" and error is None:
            error = self.error
        chosen = dict(self.ws_outputs if outputs is None else outputs)
        result = PromptResult(
            prompt_id=self.prompt_id,
            status=status,
            outputs={k: chosen[k] for k in sorted(chosen, key=_node_order)},
            error=error if status == "error" else None,
            cached_nodes=self.cached_nodes if cached is None else cached,
        )
        return result if self.finish(result) else None

    def finish(self, result: PromptResult) -> bool:
        """Set the result once; returns False if it was already set."""
        if self._result.done():
            return False
        self._result.set_result(result)
        self.stop_grace()
        self.push(Finished(self.prompt_id, result.status))
        return True

    def __repr__(self) -> str:
        state = self._result.result().status if self.done else "pending"
        return f"<PromptTracker {self.prompt_id} {state}>"


class HistoryVerdict(NamedTuple):
    """How a prompt ended according to its ``GET /history/{id}`` entry."""

    status: ResultStatus
    outputs: dict[str, tuple[ImageRef, ...]]
    error: ExecutionError | None
    cached: tuple[str, ...]


def history_verdict(tracker: PromptTracker, entry: Mapping[str, Any]) -> HistoryVerdict:
    """Read a history entry: its status messages and outputs, over what the socket said.

    History's outputs replace those of the ``executed`` events node by node; where history
    names no status, the outcome the socket saw (else success) stands.
    """
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
    return HistoryVerdict(
        status, outputs, error or tracker.error if status == "error" else None, cached
    )


def _node_order(node_id: str) -> tuple[int, int, str]:
    return (0, int(node_id), node_id) if node_id.isdigit() else (1, 0, node_id)
