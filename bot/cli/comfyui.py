"""The subcommands that ask the ComfyUI backends: `comfycord check` (settings and every workflow,
against the node classes of the backends that answer) and `comfycord backends` (their state),
and the reads of ComfyUI that `import` shares with them (node classes, the class -> pack map,
the version)."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import aiohttp

from bot.errors import ComfyError
from bot.jobs.store import ProcessInfo, Store
from bot.settings import BackendSettings, Settings
from bot.workflows import load_workflows
from bot.workflows.nodemap import NodeMap

if TYPE_CHECKING:
    from bot.comfy.client import ComfyClient


# check ---------------------------------------------------------------------------------------
async def check(settings: Settings, *, offline: bool = False, out: TextIO | None = None) -> int:
    """Validate settings and workflows (and against ComfyUI's /object_info when reachable)."""
    out = out or sys.stdout
    problems: list[str] = []
    object_info: dict[str, Any] | None = None
    version: str | None = None
    if not offline:
        object_info = await fetch_object_info(settings, out)
        version = await fetch_version(settings) if object_info is not None else None
    node_map = await fetch_node_map(settings) if object_info is not None else None
    workflows, load_problems = load_workflows(
        settings.workflows.dir, object_info, comfyui_version=version, node_map=node_map
    )
    problems += [str(p) for p in load_problems]  # with object_info, checked against it too
    if settings.workflows.default not in workflows:
        problems.append(
            f"settings: workflows.default: no workflow called '{settings.workflows.default}'"
            f" in {settings.workflows.dir}"
        )
    for name in sorted(workflows):
        print(f"ok: workflow {name} ({len(workflows[name].params)} parameters)", file=out)
        for repair in workflows[name].repairs:
            print(f"repaired: workflow {name}: {repair}", file=out)
    for problem in problems:
        print(f"problem: {problem}", file=out)
    print(f"{len(workflows)} workflow(s), {len(problems)} problem(s)", file=out)
    return 1 if problems else 0


def _session(settings: Settings) -> aiohttp.ClientSession:
    """A session for a few quick reads of the backends (10 seconds at most each)."""
    timeout = aiohttp.ClientTimeout(total=min(10.0, settings.comfyui.request_timeout))
    return aiohttp.ClientSession(timeout=timeout)


@contextlib.asynccontextmanager
async def _client(
    session: aiohttp.ClientSession, backend: BackendSettings
) -> AsyncIterator[ComfyClient]:
    """A client of one backend for those reads, closed after them."""
    from bot.comfy.client import ComfyClient

    client = ComfyClient(session, backend.url, request_timeout=10.0, headers=backend.headers)
    try:
        yield client
    finally:
        await client.close()


async def fetch_object_info(settings: Settings, out: TextIO) -> dict[str, Any] | None:
    """The node classes of every backend that answers (model lists merged), None if none does."""
    from bot.comfy.pool import merge_object_info

    infos = []
    async with _session(settings) as session:
        for backend in settings.comfyui.pool():
            async with _client(session, backend) as client:
                try:
                    info = await client.object_info()
                except ComfyError as exc:
                    print(f"note: {exc}; checked without its node list", file=out)
                    continue
            print(f"ok: ComfyUI at {backend.url} ({len(info)} node types)", file=out)
            infos.append(info)
    if not infos:
        print("note: checked without ComfyUI's node list", file=out)
        return None
    return infos[0] if len(infos) == 1 else merge_object_info(infos)


async def fetch_node_map(settings: Settings) -> NodeMap:
    """The class -> pack map: the first backend's ComfyUI-Manager's, over the bundled copy."""
    async with _session(settings) as session:
        for backend in settings.comfyui.pool():
            async with _client(session, backend) as client:
                live = await client.node_mappings()
            if live is not None:
                return NodeMap.for_server(live)
    return NodeMap.bundled()


async def fetch_version(settings: Settings) -> str | None:
    """The ComfyUI version `/system_stats` reports, or None when it can't be read."""
    backend = settings.comfyui.pool()[0]
    async with _session(settings) as session, _client(session, backend) as client:
        try:
            stats = await client.system_stats()
        except ComfyError:
            return None
    system = stats.get("system")
    version = system.get("comfyui_version") if isinstance(system, dict) else None
    return version if isinstance(version, str) and version else None


# backends ------------------------------------------------------------------------------------
async def show_backends(settings: Settings, out: TextIO | None = None) -> int:
    """Print a table of the ComfyUI backends; exits 1 when one of them is down."""
    from bot.comfy.pool import Pool

    out = out or sys.stdout
    done: dict[str, int] = {}
    processes: list[ProcessInfo] = []
    if settings.storage.url or Path(settings.storage.path).exists():
        store = Store.open(settings.storage)
        try:
            done = store.done_by_backend()
            processes = store.processes() if settings.storage.url else []
        finally:
            store.close()
    timeout = min(10.0, settings.comfyui.request_timeout)
    comfy = settings.comfyui.model_copy(update={"request_timeout": timeout})
    async with aiohttp.ClientSession() as session:
        pool = Pool.from_settings(session, comfy)
        try:
            await pool.start(ready_timeout=timeout)
            rows = []
            for backend in pool:
                if not backend.up:
                    await backend.refresh()  # to say why
                status = backend.status(0, done.get(backend.name, 0))
                state = status.state
                if backend.up:
                    state = "busy" if backend.client.queue_remaining else "idle"
                rows.append(
                    [
                        status.name,
                        status.url,
                        state,
                        status.version,
                        status.device,
                        status.vram,
                        str(status.jobs_done),
                        status.last_error or "-",
                    ]
                )
        finally:
            await pool.close()
    header = ["NAME", "URL", "STATE", "VERSION", "DEVICE", "VRAM", "JOBS DONE", "LAST ERROR"]
    _table(header, rows, out)
    if processes:  # several processes on one PostgreSQL store: which one holds the jobs
        print(file=out)
        now = time.time()
        _table(
            ["PROCESS", "ROLE", "SERVES", "HOLDS THE JOBS", "SEEN"],
            [
                [p.id, p.role, p.detail or "-", "yes" if p.leading else "no", _ago(now - p.seen_at)]
                for p in processes
            ],
            out,
        )
    return 1 if any(row[2] == "down" for row in rows) else 0


def _ago(seconds: float) -> str:
    return f"{max(0.0, seconds):.0f} s ago"


def _table(header: list[str], rows: list[list[str]], out: TextIO) -> None:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header) - 1)]
    for row in [header, *rows]:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        print("  ".join([*cells, row[-1]]).rstrip(), file=out)
