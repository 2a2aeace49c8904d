"""Webhooks: when a job done or failed, POST its JSON to the URL its request named.

The body is signed with HMAC-SHA256 under the key's webhook secret; the header is
`Comfycord-Signature: t=<unix time>,v1=<hex digest>` where the digest covers
`<unix time>.<body>`, so a receiver can check both the sender and the freshness.

A webhook is kept in the store (`webhook_outbox`) before it is sent, and sent in the background
(never in the queue's way): tried `http.webhook_attempts` times with doubling backoff while the
receiver fails (a connection error or a 5xx/429 answer). A process takes a webhook for each try
with a lease; if it dies meanwhile, the lease runs out and another process (or this one, once
restarted) tries again. So a webhook is delivered at least once, and a second time only when a
process died between the receiver's answer and its note of it: the body's job id tells them
apart.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Callable
from typing import Any

import aiohttp

from bot.jobs.store import Store, Webhook
from bot.tasks import TaskGroup, spawn

log = logging.getLogger(__name__)

HEADER = "Comfycord-Signature"


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """The signature header value for `body` sent at `timestamp`."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def verify(secret: str, body: bytes, header: str, *, tolerance: float = 300.0) -> bool:
    """Whether `header` is a valid, fresh signature of `body` (what a receiver does)."""
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    try:
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs(time.time() - timestamp) > tolerance:
        return False
    expected = sign(secret, body, timestamp).split("v1=", 1)[1]
    return hmac.compare_digest(expected, parts.get("v1", ""))


POLL = 1.0  # seconds between two looks for due webhooks (another process may have added them)


class Webhooks:
    """Sends the webhooks kept in the store, retrying with backoff, one try at a time under a
    lease (see the module's docstring). `secret_of(key_name)` is an API key's webhook secret."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        store: Store,
        secret_of: Callable[[str], str | None],
        *,
        attempts: int,
        backoff: float,
        timeout: float,
        holder: str,
    ) -> None:
        self.session = session
        self.store = store
        self.secret_of = secret_of
        self.attempts = attempts
        self.backoff = backoff
        self.lease = timeout * 1.5 + 1.0  # a try ends well before, answered or not
        self.holder = holder
        self.tasks = TaskGroup("webhooks")
        self.delivered = 0
        self.failed = 0
        self._wake = asyncio.Event()
        self._loop: asyncio.Task[None] | None = None
        self._sending: set[str] = set()

    def start(self) -> None:
        if self._loop is None:
            self._loop = spawn(self._run(), name="webhooks")

    def send(self, url: str, key_name: str, payload: dict[str, Any], job_id: str) -> None:
        """Keep `payload` to deliver to `url` (once per job), and send it soon."""
        body = json.dumps(payload, separators=(",", ":"))
        if self.store.add_webhook(job_id, url, key_name, body):
            self._wake.set()

    async def _run(self) -> None:
        while True:
            try:
                self._take_due()
                wait = POLL
                soonest = self.store.next_webhook_at()
                if soonest is not None:
                    wait = min(POLL, max(0.0, soonest - time.time()))
            except Exception as exc:  # the database went away: look again later
                log.warning("could not look for webhooks to send: %s", exc)
                wait = POLL
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(wait, 0.01))
            self._wake.clear()

    def _take_due(self) -> None:
        now = time.time()
        for webhook in self.store.due_webhooks(now):
            if webhook.job_id in self._sending:
                continue
            if self.store.lease_webhook(webhook.job_id, self.holder, now + self.lease):
                self._sending.add(webhook.job_id)
                self.tasks.spawn(self._try(webhook), name=f"webhook-{webhook.job_id}")

    async def _try(self, webhook: Webhook) -> None:
        try:
            attempt = webhook.attempts + 1
            retry, reason = await self._post(webhook)
            if reason is None:
                self.delivered += 1
                log.info("webhook of job %s delivered (attempt %d)", webhook.job_id, attempt)
                self.store.webhook_tried(webhook.job_id, "sent", attempt, time.time())
            elif retry and attempt < self.attempts:
                delay = self.backoff * 2 ** (attempt - 1)
                log.info(
                    "webhook of job %s failed (%s); retrying in %.1f s",
                    webhook.job_id,
                    reason,
                    delay,
                )
                self.store.webhook_tried(webhook.job_id, "pending", attempt, time.time() + delay)
            else:
                self.failed += 1
                log.warning("webhook of job %s was not delivered (%s)", webhook.job_id, reason)
                self.store.webhook_tried(webhook.job_id, "failed", attempt, time.time())
        finally:
            self._sending.discard(webhook.job_id)
            self._wake.set()

    async def _post(self, webhook: Webhook) -> tuple[bool, str | None]:
        """One try: (worth retrying, why it failed), or (False, None) once delivered."""
        secret = self.secret_of(webhook.key_name)
        if secret is None:
            return False, "its API key was revoked"
        body = webhook.payload.encode()
        headers = {
            "Content-Type": "application/json",
            HEADER: sign(secret, body, int(time.time())),
            "User-Agent": "comfycord-webhook",
        }
        try:
            async with self.session.post(
                webhook.url, data=body, headers=headers, allow_redirects=False
            ) as response:
                if response.status < 300:
                    return False, None
                return response.status >= 500 or response.status == 429, f"HTTP {response.status}"
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return True, type(exc).__name__

    async def close(self) -> None:
        """Stop sending; a try cut short is tried again once its lease runs out."""
        if self._loop is not None:
            self._loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop
            self._loop = None
        await self.tasks.cancel_all()
