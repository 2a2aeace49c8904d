"""Reconciliation: learning from ComfyUI's queue and history what the websocket could not say.

Messages sent while the socket was down are not replayed, and prompts submitted under an old
clientId no longer reach us. So unfinished prompts are reconciled after every (re)connect, on
``status`` broadcasts (the queue changed; throttled to one look per
:data:`REFRESH_MIN_INTERVAL`, but at once for orphans when the queue length moved) and every
``reconcile_interval`` seconds:

    still in ``GET /queue``          keep waiting (and report the position: ``QueuePosition``)
    else in ``GET /history/{id}``    resolve from it
    else                             "lost": ComfyUI restarted or the prompt was deleted
                                     (resubmit it); one tracked but never submitted gets
                                     ``submit_grace`` seconds first
"""

from __future__ import annotations

import asyncio
import logging
from abc import ABC
from collections.abc import Iterable

from bot.comfy.events import QueuePosition
from bot.comfy.routes import ClientConfig
from bot.comfy.tracker import PromptTracker
from bot.comfy.websocket import ComfySocket
from bot.errors import BackendUnavailable

log = logging.getLogger(__name__)

__all__ = ["REFRESH_MIN_INTERVAL", "ReconcilingSocket"]

#: Least time between two reconciliations triggered by ``status`` broadcasts.
REFRESH_MIN_INTERVAL = 1.0


class ReconcilingSocket(ComfySocket, ABC):
    """A :class:`~bot.comfy.websocket.ComfySocket` that settles what its messages missed."""

    def __init__(self, config: ClientConfig) -> None:
        super().__init__(config)
        self._reconcile_interval = config.reconcile_interval
        self._submit_grace = config.submit_grace
        self._reconcile_lock = asyncio.Lock()
        self._refresh_wanted = False
        self._refresh_task: asyncio.Task[None] | None = None

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

    # --- what the socket's news start ---------------------------------------------------------

    def _on_connect(self) -> None:
        self._schedule_reconcile(None, reason="connect")

    def _on_queue_status(self, moved: bool) -> None:
        orphans = [t for t in self._trackers.values() if self.orphaned(t.prompt_id)]
        if moved and orphans:
            # the queue moved: an orphan may have just finished, and its messages went
            # to a socket that is gone; look now rather than after the refresh throttle
            self._schedule_reconcile(orphans, reason="queue changed")
        else:
            self._request_refresh()

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

    # --- reconciling --------------------------------------------------------------------------

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
