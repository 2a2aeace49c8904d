"""Shared fixtures: a fake ComfyUI, settings pointing at it, a running engine, a fake Discord."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bot.engine import Engine
from bot.jobs.runner import JobUpdate
from bot.settings import Settings
from tests.fakes.comfyui import FakeComfyUI
from tests.fakes.discord import FakeDiscord
from tests.fakes.discord_fixtures import installed_fake
from tests.media_packs import extra_nodes

#: A throwaway PostgreSQL server and a fixture for each database a store's tests run on
pytest_plugins = ["tests.pg"]

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = ROOT / "workflows"


def make_settings(tmp_path: Path, url: str, **overrides: Any) -> Settings:
    data: dict[str, Any] = {
        "comfyui": {"url": url, "submit_retry_seconds": 2, "heartbeat": 5},
        "storage": {"path": str(tmp_path / "db.sqlite3"), "outputs": str(tmp_path / "outputs")},
        "workflows": {"dir": str(WORKFLOWS), "default": "sd15-txt2img"},
        "discord": {"progress_interval": 0.3},
    }
    for section, values in overrides.items():
        data[section] = {**data.get(section, {}), **values}
    return Settings.model_validate(data)


@pytest.fixture
async def comfy() -> AsyncIterator[FakeComfyUI]:
    async with FakeComfyUI(previews=True, step_delay=0.005) as fake:
        yield fake


@pytest.fixture
async def media_comfy() -> AsyncIterator[FakeComfyUI]:
    """A fake ComfyUI that also has the audio nodes and VHS's Video Combine (media tests)."""
    async with FakeComfyUI(step_delay=0.0, extra_nodes=extra_nodes()) as fake:
        yield fake


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    """A started fake Discord that discord.py points at (undone after the test)."""
    async with installed_fake() as f:
        yield f


@pytest.fixture
def comfy_env(comfy: FakeComfyUI, monkeypatch: pytest.MonkeyPatch) -> None:
    """Points the command line at the fake ComfyUI (COMFYUI_URL)."""
    monkeypatch.setenv("COMFYUI_URL", comfy.url)


def shipped_copy(folder: Path) -> Path:
    """Creates `folder` with a copy of every shipped workflow file in it."""
    folder.mkdir()
    for file in WORKFLOWS.iterdir():
        shutil.copy(file, folder / file.name)
    return folder


#: A pack's YAML line: the required prompt, on the shipped txt2img graph's "Positive" encoder.
PROMPT_PARAM = "  prompt: {type: text, node: Positive, input: text, required: true}\n"


def txt2img_pack(folder: Path, name: str, spec: str) -> None:
    """Writes pack `name` in `folder` (made if need be): the shipped txt2img graph with the YAML
    `spec`."""
    folder.mkdir(exist_ok=True)
    shutil.copy(WORKFLOWS / "sd15-txt2img.json", folder / f"{name}.json")
    (folder / f"{name}.yaml").write_text(spec)


@pytest.fixture
def settings(tmp_path: Path, comfy: FakeComfyUI) -> Settings:
    return make_settings(tmp_path, comfy.url)


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


class Recorder:
    """Collects JobUpdates and waits for jobs to finish."""

    def __init__(self) -> None:
        self.updates: list[JobUpdate] = []
        self._changed = asyncio.Event()

    def __call__(self, update: JobUpdate) -> None:
        self.updates.append(update)
        self._changed.set()

    def of(self, job_id: str, kind: str | None = None) -> list[JobUpdate]:
        return [u for u in self.updates if u.job.id == job_id and (kind is None or u.kind == kind)]

    async def wait(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        async def loop() -> None:
            while not predicate():
                self._changed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), 0.05)

        await asyncio.wait_for(loop(), timeout)

    async def finished(self, *job_ids: str, timeout: float = 10.0) -> list[JobUpdate]:
        await self.wait(lambda: all(self.of(j, "finished") for j in job_ids), timeout)
        return [self.of(j, "finished")[-1] for j in job_ids]


def spy_success(comfy: FakeComfyUI) -> list[float]:
    """When the fake ComfyUI sends each ``execution_success`` (``time.monotonic()``)."""
    succeeded: list[float] = []
    send = comfy._send_json

    def spy(sid: str | None, event: str, data: dict[str, Any]) -> None:
        if event == "execution_success":
            succeeded.append(time.monotonic())
        send(sid, event, data)

    comfy._send_json = spy  # type: ignore[method-assign]
    return succeeded


@contextlib.asynccontextmanager
async def running_engine(
    session: aiohttp.ClientSession, settings: Settings, *, role: str = "api", detail: str = ""
) -> AsyncIterator[tuple[Engine, Recorder]]:
    """A started engine and a recorder of its updates; stopped (store closed) on exit. `role`
    and `detail` say what it is to the other engines sharing a PostgreSQL store."""
    engine = Engine(session, settings, role=role, detail=detail)
    recorder = Recorder()
    engine.listen(recorder)
    await engine.start()
    try:
        yield engine, recorder
    finally:
        await engine.stop()
        engine.close_store()


@pytest.fixture
async def engine(
    session: aiohttp.ClientSession, settings: Settings
) -> AsyncIterator[tuple[Engine, Recorder]]:
    async with running_engine(session, settings) as running:
        yield running
