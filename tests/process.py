"""The bot as its own process (`python -m bot run`), against the in-process fakes on loopback.

Faults are injected from outside, the way an operator meets them: SIGKILL at any moment, SIGTERM.
`COMFYCORD_DISCORD_API` / `COMFYCORD_DISCORD_GATEWAY` point the process at the fake Discord.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from bot.jobs.model import Job
from bot.jobs.store import ProcessInfo, Store
from tests.fakes.comfyui import FakeComfyUI
from tests.fakes.discord import FakeDiscord, FakeInteraction, FakeMessage

ROOT = Path(__file__).resolve().parent.parent


def bot_env(fake: FakeDiscord, config: Path) -> dict[str, str]:
    """The bot process's environment: this one's, pointed at ``fake`` and at ``config``.

    A ``COMFYUI_URL`` of the caller's is dropped, so the config file names the backends.
    """
    env = {
        **os.environ,
        "DISCORD_TOKEN": fake.bot_token,
        "COMFYCORD_CONFIG": str(config),
        "COMFYCORD_DISCORD_API": fake.api_base,
        "COMFYCORD_DISCORD_GATEWAY": fake.gateway_url,
        "PYTHONPATH": str(ROOT),
    }
    env.pop("COMFYUI_URL", None)
    return env


class BotProcess:
    """One `comfycord run` process at a time, sharing its settings and store across restarts."""

    def __init__(
        self, tmp_path: Path, fake: FakeDiscord, comfy: FakeComfyUI, **settings: Any
    ) -> None:
        self.fake = fake
        self.folder = tmp_path
        self.db = tmp_path / "db.sqlite3"
        config: dict[str, Any] = {
            "comfyui": {"url": comfy.url, "submit_retry_seconds": 10, "heartbeat": 5},
            "storage": {"path": str(self.db), "outputs": str(tmp_path / "outputs")},
            "workflows": {"dir": str(ROOT / "workflows"), "default": "sd15-txt2img"},
            "discord": {"progress_interval": 0.3, "dev_guild": fake.guild_id},
            "limits": {"max_queued_per_member": 20},
        }
        for key, values in settings.items():
            config[key] = {**config.get(key, {}), **values} if isinstance(values, dict) else values
        self.config = tmp_path / "comfycord.yaml"
        self.config.write_text(yaml.safe_dump(config), encoding="utf-8")
        self.proc: asyncio.subprocess.Process | None = None
        self.runs = 0

    @property
    def log(self) -> str:
        return "\n".join(
            (self.folder / f"bot-{n}.log").read_text(encoding="utf-8", errors="replace")
            for n in range(1, self.runs + 1)
        )

    async def start(self, timeout: float = 20.0) -> None:
        """Start the process and wait until it is connected and its commands are synced."""
        assert self.proc is None or self.proc.returncode is not None
        self.runs += 1
        identified = self.fake.identify_count
        env = bot_env(self.fake, self.config)
        with open(self.folder / f"bot-{self.runs}.log", "wb") as out:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bot", "run", cwd=self.folder, env=env, stdout=out, stderr=out
            )

        def ready() -> bool:
            if self.proc is not None and self.proc.returncode is not None:
                raise AssertionError(f"the bot exited ({self.proc.returncode}):\n{self.log}")
            synced = any(c["name"] == "imagine" for c in self.fake.commands)
            return self.fake.identify_count > identified and self.fake.gateway_connected and synced

        await self.fake.wait_for(ready, timeout=timeout)

    async def kill(self) -> None:
        """SIGKILL: no chance to save or say anything."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        await self.proc.wait()

    async def terminate(self, timeout: float = 15.0) -> tuple[int, float]:
        """SIGTERM; the exit code and how long the process took to exit."""
        assert self.proc is not None
        began = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(self.proc.wait(), timeout)
        return code, time.monotonic() - began

    async def stop(self) -> None:
        """Whatever state it is in, make sure the process is gone (test teardown)."""
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGKILL)
            await self.proc.wait()

    def jobs(self) -> list[Job]:
        """Every job the bot stored, read from its SQLite file (as the bot sees it)."""
        store = Store(self.db)
        try:
            return store.recent(limit=1000)
        finally:
            store.close()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class ApiProcess:
    """A `comfycord serve` process on `config` (a settings mapping), listening on a free port;
    the fake Discord's endpoints are in its environment, its token is not."""

    def __init__(self, folder: Path, fake: FakeDiscord, config: dict[str, Any]) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.port = free_port()
        config = {**config, "http": {"host": "127.0.0.1", "port": self.port}}
        self.config = folder / "comfycord.yaml"
        self.config.write_text(yaml.safe_dump(config), encoding="utf-8")
        self.env = bot_env(fake, self.config)
        self.env.pop("DISCORD_TOKEN")
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, session: aiohttp.ClientSession) -> None:
        with open(self.folder / "api.log", "wb") as out:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bot", "serve", cwd=ROOT, env=self.env, stdout=out, stderr=out
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.proc.returncode is None, (self.folder / "api.log").read_text()
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(f"{self.url}/readyz") as response:
                    if response.status == 200:
                        return
            await asyncio.sleep(0.1)
        raise AssertionError("the API did not come up:\n" + (self.folder / "api.log").read_text())

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()


def stored_jobs(url: str) -> list[Job]:
    """Every job in the store at `url` (a PostgreSQL database several processes share)."""
    store = Store(url)
    try:
        return store.recent(limit=1000)
    finally:
        store.close()


def shared_processes(url: str) -> list[ProcessInfo]:
    """The processes sharing the store at `url`, as they last recorded themselves."""
    store = Store(url)
    try:
        return store.processes()
    finally:
        store.close()


def result_messages(fake: FakeDiscord) -> dict[str, list[FakeMessage]]:
    """For each job id, the visible messages that carry one of its images."""
    found: dict[str, list[FakeMessage]] = {}
    for message in fake.messages_in(fake.channel_id):
        if message.deleted:
            continue
        for job_id in {a.filename.split("-")[0] for a in message.attachments}:
            found.setdefault(job_id, []).append(message)
    return found


def stale(it: FakeInteraction) -> str | None:
    """What is wrong with an acknowledged reply that is left as it is (None: nothing)."""
    message = it.original
    if message is None or message.deleted:
        return None
    if message.loading:
        return "still thinking"
    if "Queued" in message.content or "position" in message.content:
        return f"shows a queue position: {message.content!r}"
    if any(cid.startswith("cc:cancel:") for cid in message.custom_ids):
        return "still has a Cancel button"
    if "Running" in message.content or "Sent to ComfyUI" in message.content:
        return f"still shows progress: {message.content!r}"
    return None
