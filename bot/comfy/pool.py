"""A pool of ComfyUI backends: each one's client, health and capabilities, and their states.

    Backend   one ComfyUI server: its own ComfyClient (and websocket), its health from
              ``/system_stats`` (version, device, VRAM) and its capabilities from
              ``/object_info`` (node classes, model lists), both refreshed on every connection
    Pool      the backends and their states; every change is a BackendEvent to its listeners

States and the events that move them::

    down ──connected──> (refresh) ──> up ──socket lost──> down ──grace passed──> "expired"
      ^                                                     │
      └──────────────── probed by the client's reconnect loop, with backoff

"connected" comes first (before capabilities are known) so that work moved away from the
backend can be withdrawn from it before it runs; "up" follows once its capabilities are read;
"expired" says the backend stayed down for the grace period: its jobs should go elsewhere.
Which job goes to which backend is decided elsewhere (``bot.jobs.dispatch``); the pool only
keeps the facts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import operator
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal

import aiohttp

from bot.comfy.client import ComfyClient
from bot.comfy.listeners import notify
from bot.errors import ComfyError
from bot.settings import BackendSettings, ComfySettings
from bot.tasks import TaskGroup

log = logging.getLogger(__name__)

EventKind = Literal["connected", "up", "down", "expired", "refreshed"]
#: Waits between two tries of reading a connected backend's health and capabilities.
REFRESH_DELAYS: tuple[float, ...] = (0.5, 1.0, 2.0, 5.0, 10.0)


class BackendState(StrEnum):
    UP = "up"
    DOWN = "down"


@dataclass(frozen=True)
class Health:
    """What ``/system_stats`` says about a backend."""

    version: str = "?"
    device: str = "?"
    vram_total: int = 0
    vram_free: int = 0

    @classmethod
    def from_stats(cls, stats: Mapping[str, Any]) -> Health:
        system = stats.get("system")
        system = system if isinstance(system, Mapping) else {}
        devices = stats.get("devices")
        first = devices[0] if isinstance(devices, list) and devices else {}
        first = first if isinstance(first, Mapping) else {}

        def number(value: object) -> int:
            return int(value) if isinstance(value, int | float) else 0

        return cls(
            version=str(system.get("comfyui_version") or "?"),
            device=str(first.get("name") or "?"),
            vram_total=number(first.get("vram_total")),
            vram_free=number(first.get("vram_free")),
        )

    @property
    def vram_text(self) -> str:
        if not self.vram_total:
            return "?"
        gib = 1024**3
        return f"{self.vram_free / gib:.1f}/{self.vram_total / gib:.1f} GiB free"


@dataclass(frozen=True)
class BackendStatus:
    """One backend as `/queue` and `comfycord backends` show it."""

    name: str
    url: str
    state: str  # busy, idle or down
    health: Health | None
    running: int  # jobs handed to it (running or queued in its ComfyUI)
    jobs_done: int
    last_error: str | None
    busy_seconds: float = 0.0

    @property
    def version(self) -> str:
        return self.health.version if self.health else "?"

    @property
    def device(self) -> str:
        return self.health.device if self.health else "?"

    @property
    def vram(self) -> str:
        return self.health.vram_text if self.health else "?"


@dataclass(frozen=True)
class BackendEvent:
    backend: Backend
    kind: EventKind


class Backend:
    """One ComfyUI server of the pool. It owns its connection; it never picks jobs."""

    def __init__(
        self,
        settings: BackendSettings,
        client: ComfyClient,
        *,
        max_in_flight: int = 1,
        grace: float = 30.0,
        announce: Callable[[BackendEvent], None] = lambda event: None,
    ) -> None:
        self.name = settings.label
        self.url = client.base_url
        self.client = client
        self.max_in_flight = max_in_flight
        self.grace = grace
        self.state = BackendState.DOWN
        self.health: Health | None = None
        self.last_error: str | None = None
        self.jobs_done = 0
        self.busy_seconds = 0.0  # time its ComfyUI spent running our jobs (start to outcome)
        self.down_since: float | None = time.monotonic()
        self.expired = False
        self._announce = announce
        self._tasks = TaskGroup(f"backend:{self.name}")
        self._refreshing: asyncio.Task[None] | None = None
        self._grace_timer: asyncio.TimerHandle | None = None
        self._ready = asyncio.Event()
        client.on_connection(self._on_connection)

    def __repr__(self) -> str:
        return f"<Backend {self.name} {self.state.value}>"

    @property
    def object_info(self) -> Mapping[str, Any] | None:
        """Its node classes and model lists (None until first read)."""
        return self.client.cached_object_info

    @property
    def up(self) -> bool:
        return self.state is BackendState.UP

    async def start(self) -> None:
        """Connect (never raises: an unreachable backend stays down and is probed)."""
        await self.client.start()
        if not self.client.connected:
            self._arm_grace()

    async def wait_ready(self, timeout: float) -> bool:
        """Wait until the backend is up, at most `timeout` seconds."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._ready.wait(), timeout)
        return self._ready.is_set()

    async def close(self) -> None:
        if self._grace_timer is not None:
            self._grace_timer.cancel()
        await self._tasks.cancel_all()
        await self.client.close()

    def note_error(self, message: str) -> None:
        self.last_error = message

    def status(self, load: int, jobs_done: int | None = None) -> BackendStatus:
        """How it stands, given the jobs it holds now (`load`)."""
        state = "down" if not self.up else ("busy" if load else "idle")
        return BackendStatus(
            self.name,
            self.url,
            state,
            self.health,
            load,
            self.jobs_done if jobs_done is None else jobs_done,
            self.last_error,
            self.busy_seconds,
        )

    # events ---------------------------------------------------------------------------------
    def _on_connection(self, connected: bool) -> None:
        if connected:
            self._emit("connected")
            self._schedule_refresh()
            return
        if self._refreshing is not None:
            self._refreshing.cancel()
        self._ready.clear()
        if self.state is BackendState.UP:
            log.warning("backend %s is down", self.name)
            self.state = BackendState.DOWN
            self.down_since = time.monotonic()
            self._emit("down")
        self._arm_grace()

    def _arm_grace(self) -> None:
        if self._grace_timer is not None or self.expired:
            return
        since = self.down_since or time.monotonic()
        delay = max(0.0, self.grace - (time.monotonic() - since))
        self._grace_timer = asyncio.get_running_loop().call_later(delay, self._grace_over)

    def _grace_over(self) -> None:
        self._grace_timer = None
        if self.state is BackendState.DOWN and not self.expired:
            log.warning("backend %s down for %.0f s: moving its jobs", self.name, self.grace)
            self.expired = True
            self._emit("expired")

    def _schedule_refresh(self) -> None:
        if self._refreshing is None or self._refreshing.done():
            self._refreshing = self._tasks.spawn(self._refresh_until_read(), name="refresh")

    async def _refresh_until_read(self) -> None:
        attempt = 0
        while not await self.refresh():
            await asyncio.sleep(REFRESH_DELAYS[min(attempt, len(REFRESH_DELAYS) - 1)])
            attempt += 1

    async def refresh(self) -> bool:
        """Read health and capabilities again; returns whether it worked.

        A backend becomes up only once both are known.
        """
        try:
            stats = await self.client.system_stats()
            await self.client.object_info(refresh=True)
        except ComfyError as exc:
            self.last_error = exc.message
            log.warning("backend %s: cannot read its health and nodes: %s", self.name, exc)
            return False
        self.health = Health.from_stats(stats)
        if not self.client.connected:
            return False
        if self.state is BackendState.DOWN:
            log.info(
                "backend %s is up (ComfyUI %s, %s)",
                self.name,
                self.health.version,
                self.health.device,
            )
            self.state = BackendState.UP
            self.down_since = None
            self.expired = False
            if self._grace_timer is not None:
                self._grace_timer.cancel()
                self._grace_timer = None
            self._ready.set()
            self._emit("up")
        else:
            self._emit("refreshed")
        return True

    def _emit(self, kind: EventKind) -> None:
        self._announce(BackendEvent(self, kind))


class Pool:
    """The backends of the pool, in the order of the settings."""

    def __init__(self, backends: list[Backend]) -> None:
        if not backends:
            raise ValueError("a pool needs at least one backend")
        self.backends = backends
        self._listeners: list[Callable[[BackendEvent], None]] = []
        self._merged: tuple[list[Mapping[str, Any]], dict[str, Any]] | None = None
        for backend in backends:
            backend._announce = self._emit

    @classmethod
    def from_settings(cls, session: aiohttp.ClientSession, settings: ComfySettings) -> Pool:
        """One backend (and one client) per entry of `comfyui.backends` (or `comfyui.url`)."""
        backends = []
        for entry in settings.pool():
            client = ComfyClient(
                session,
                entry.url,
                heartbeat=settings.heartbeat,
                request_timeout=settings.request_timeout,
                headers=entry.headers,
            )
            backends.append(
                Backend(
                    entry,
                    client,
                    max_in_flight=settings.in_flight(entry),
                    grace=settings.failover_grace,
                )
            )
        return cls(backends)

    def __iter__(self) -> Any:
        return iter(self.backends)

    def __len__(self) -> int:
        return len(self.backends)

    def get(self, name: str | None) -> Backend | None:
        return next((b for b in self.backends if b.name == name), None)

    def listen(self, listener: Callable[[BackendEvent], None]) -> None:
        self._listeners.append(listener)

    def _emit(self, event: BackendEvent) -> None:
        notify(self._listeners, event, log, "backend listener failed on %s", event.kind)

    async def start(self, ready_timeout: float = 5.0) -> None:
        """Connect every backend; wait (briefly) until those that answer are up."""
        await asyncio.gather(*(b.start() for b in self.backends))
        await asyncio.gather(
            *(b.wait_ready(ready_timeout) for b in self.backends if b.client.connected)
        )

    async def close(self) -> None:
        await asyncio.gather(*(b.close() for b in self.backends))

    def object_info(self) -> dict[str, Any] | None:
        """The node classes of every backend that was read, model lists merged (None: none)."""
        infos = [b.object_info for b in self.backends if b.object_info is not None]
        if not infos:
            return None
        if len(infos) == 1:
            return infos[0] if isinstance(infos[0], dict) else dict(infos[0])
        cached = self._merged
        same = cached is not None and len(cached[0]) == len(infos)
        if cached is not None and same and all(map(operator.is_, cached[0], infos)):
            return cached[1]  # merged once per change of a backend's node list
        merged = merge_object_info(infos)
        self._merged = (infos, merged)
        return merged


def merge_object_info(infos: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Node definitions of several backends: every class, and list choices united."""
    merged: dict[str, Any] = {}
    for info in infos:
        for class_type, definition in info.items():
            if class_type not in merged:
                merged[class_type] = definition
                continue
            merged[class_type] = _merge_definition(merged[class_type], definition)
    return merged


def _merge_definition(first: Any, other: Any) -> Any:
    if not (isinstance(first, Mapping) and isinstance(other, Mapping)):
        return first
    first_inputs, other_inputs = first.get("input"), other.get("input")
    if not (isinstance(first_inputs, Mapping) and isinstance(other_inputs, Mapping)):
        return first
    inputs: dict[str, Any] = {}
    for category, specs in first_inputs.items():
        theirs = other_inputs.get(category)
        if not (isinstance(specs, Mapping) and isinstance(theirs, Mapping)):
            inputs[category] = specs
            continue
        section = dict(specs)
        for name, spec in specs.items():
            spec_other = theirs.get(name)
            if (
                isinstance(spec, list)
                and spec
                and isinstance(spec[0], list)
                and isinstance(spec_other, list)
                and spec_other
                and isinstance(spec_other[0], list)
            ):
                united = list(spec[0]) + [c for c in spec_other[0] if c not in spec[0]]
                section[name] = [united, *spec[1:]]
        inputs[category] = section
    return {**first, "input": inputs}
