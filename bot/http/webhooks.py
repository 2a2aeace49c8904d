"""Webhooks: when a job done or failed, POST its JSON to the URL its request named.

The body is signed with HMAC-SHA256 under the key's webhook secret; the header is
`Comfycord-Signature: t=<unix time>,v1=<hex digest>` where the digest covers
`<unix time>.<body>`, so a receiver can check both the sender and the freshness. Deliveries run
in the background (never in the queue's way) and are tried `http.webhook_attempts` times with
doubling backoff while the receiver fails (a connection error or a 5xx/429 answer).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
from typing import Any

import aiohttp

from bot.tasks import TaskGroup

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


class Webhooks:
    """Sends signed webhooks in the background, retrying with backoff."""

    def __init__(self, session: aiohttp.ClientSession, *, attempts: int, backoff: float) -> None:
        self.session = session
        self.attempts = attempts
        self.backoff = backoff
        self.tasks = TaskGroup("webhooks")
        self.delivered = 0
        self.failed = 0

    def send(self, url: str, secret: str, payload: dict[str, Any], job_id: str) -> None:
        """Deliver `payload` to `url` in the background."""
        body = json.dumps(payload, separators=(",", ":")).encode()
        self.tasks.spawn(self._deliver(url, secret, body, job_id), name=f"webhook-{job_id}")

    async def _deliver(self, url: str, secret: str, body: bytes, job_id: str) -> None:
        delay = self.backoff
        for attempt in range(1, self.attempts + 1):
            headers = {
                "Content-Type": "application/json",
                HEADER: sign(secret, body, int(time.time())),
                "User-Agent": "comfycord-webhook",
            }
            try:
                async with self.session.post(
                    url, data=body, headers=headers, allow_redirects=False
                ) as response:
                    if response.status < 300:
                        self.delivered += 1
                        log.info("webhook of job %s delivered (attempt %d)", job_id, attempt)
                        return
                    retry = response.status >= 500 or response.status == 429
                    reason = f"HTTP {response.status}"
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                retry, reason = True, type(exc).__name__
            if not retry or attempt == self.attempts:
                break
            log.info("webhook of job %s failed (%s); retrying in %.1f s", job_id, reason, delay)
            await asyncio.sleep(delay)
            delay *= 2
        self.failed += 1
        log.warning("webhook of job %s was not delivered (%s)", job_id, reason)

    async def close(self) -> None:
        await self.tasks.cancel_all()
