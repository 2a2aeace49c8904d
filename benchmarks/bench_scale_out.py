"""Several `comfycord run` processes on one PostgreSQL store: jobs per second and GPU busy share.

    .venv/bin/python -m benchmarks.bench_scale_out [--processes 1,2,4] [--backends 8]
        [--jobs 200] [--busy] [--busy-only] [--busy-backends 4,8] [--gpu-seconds 2.0]
        [--size 64] [--api]

Each case starts a throwaway PostgreSQL server in a temporary folder (Debian's binaries, as the
tests do), a fresh database on it, the fake Discord and K fake ComfyUI servers, then P bot
processes (`python -m bot run`, shard i of P; for P = 1 no shard settings) on that database and
one outputs folder. One of them holds the jobs: it dispatches to the backends and follows every
reply; the others store the jobs of their commands and hand them over. There is one server
(guild) per shard, and the J `/imagine` commands are spread evenly over them, sent round-robin
by the three users every fake server has (its owner, moderator and member; the limits are set
high enough for them to queue and run the whole burst).

- Jobs per second (`--processes`, `--backends` K, `--jobs` J): backends with no GPU time, so
  what is measured is the processes, the store and Discord. J over the burst, from the first
  command to the last result on Discord.
- GPU busy share (`--busy`, or `--busy-only` for these cases alone): two processes, T seconds
  of GPU time per prompt (`--gpu-seconds`, 2 by default) and K of `--busy-backends` (4 and 8),
  J = 5·K. The share of each backend is the time it spent on prompts within the burst over the
  burst; the mean and the lowest, and the makespan against J·T/K (T as measured on the fakes).
  `--api` adds a `comfycord serve` process on the same store, which takes every third job of
  these bursts over HTTP (an API job counts when the store has it done).

Every line also gives the lost jobs (a reply left without its image, a job with no result),
the duplicated ones (a result posted twice, a prompt run twice), the jobs the store has done,
which process held the jobs, the CPU time of all the bot processes per job, how long sending
the commands took, and the head (first command to first prompt) and tail (last prompt's end
to last result on Discord) of the burst. The fakes, the database and the bots share the
machine, so on a small one the figures are noisy.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from benchmarks.bench_pool import Burst, bench_workflows
from benchmarks.bench_throughput import cpu_seconds_of, delivered
from bot.http.keys import KeyStore
from bot.jobs.model import JobState
from bot.jobs.store import Store
from tests.fakes.comfyui import FakeComfyUI
from tests.fakes.discord import FakeDiscord, FakeGuild, FakeInteraction, shard_of
from tests.fakes.discord_fixtures import installed_fake
from tests.pg import Cluster, binaries
from tests.process import ApiProcess, bot_env, shared_processes


class Bot:
    """One `comfycord run` process: shard `shard` of `shards` (None: no shard settings)."""

    def __init__(
        self, folder: Path, fake: FakeDiscord, config: dict[str, Any], shard: tuple[int, int] | None
    ) -> None:
        folder.mkdir(parents=True)
        self.folder = folder
        self.fake = fake
        discord: dict[str, Any] = {"dev_guild": None, "sync_on_start": True}  # every server's
        if shard is not None:
            discord.update(shard_id=shard[0], shard_count=shard[1])
        self.config = folder / "comfycord.yaml"
        self.config.write_text(yaml.safe_dump({**config, "discord": discord}), encoding="utf-8")
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def log(self) -> str:
        return (self.folder / "bot.log").read_text(encoding="utf-8", errors="replace")

    async def start(self) -> None:
        with open(self.folder / "bot.log", "wb") as out:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "bot",
                "run",
                cwd=self.folder,
                env=bot_env(self.fake, self.config),
                stdout=out,
                stderr=out,
            )

    def check_alive(self) -> None:
        if self.proc is not None and self.proc.returncode is not None:
            raise RuntimeError(f"a bot exited ({self.proc.returncode}):\n{self.log[-4000:]}")

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()


def done_in_store(url: str, limit: int) -> int:
    store = Store(url)
    try:
        return sum(j.state is JobState.DONE for j in store.recent(limit=limit))
    finally:
        store.close()


@contextlib.asynccontextmanager
async def started_bots(
    folder: Path, fake: FakeDiscord, url: str, config: dict[str, Any], count: int
) -> AsyncIterator[list[Bot]]:
    """`count` bot processes, all connected, commands synced, one of them holding the jobs."""
    shards: list[tuple[int, int] | None] = (
        [None] if count == 1 else [(i, count) for i in range(count)]
    )
    bots = [Bot(folder / f"bot{n}", fake, config, shard) for n, shard in enumerate(shards)]
    identified = fake.identify_count
    try:
        for bot in bots:
            await bot.start()

        def ready() -> bool:
            for bot in bots:
                bot.check_alive()
            if fake.identify_count < identified + count or not fake.gateway_connected:
                return False
            if not any(c["name"] == "imagine" for c in fake.commands):
                return False
            seen = [p for p in shared_processes(url) if p.role == "bot"]
            return len(seen) == count and sum(p.leading for p in seen) == 1

        try:
            await fake.wait_for(ready, timeout=120, interval=0.2)
        except TimeoutError:
            logs = "\n".join(b.log[-2000:] for b in bots)
            raise RuntimeError(f"the bots did not come up:\n{logs}") from None
        # discord.py is ready 2 s after its last GUILD_CREATE (guild_ready_timeout); until then
        # the holder does not follow the replies of the others' jobs (it does once ready)
        await asyncio.sleep(3.0)
        yield bots
    finally:
        for bot in bots:
            await bot.stop()


@dataclass(frozen=True)
class Figures(Burst):
    processes: int
    lost: int
    duplicated: int
    done: int  # jobs the store has as done
    holder: str
    cpu_per_job: float  # all the bot processes together
    sent: float  # how long the harness took to send the J commands
    head: float  # from the first command to the first prompt on a GPU
    tail: float  # from the last prompt's end to the last result on Discord

    def line(self) -> str:
        ideal = self.ideal
        against = f" = {self.makespan / ideal:.3f} x J*T/K" if self.gpu_seconds >= 0.05 else ""
        return (
            f"P={self.processes} K={self.backends} J={self.jobs} T={self.gpu_seconds:.3f}s  "
            f"{self.jobs / self.makespan:6.1f} jobs/s  "
            f"busy mean {statistics.mean(self.busy):6.1%} min {min(self.busy):6.1%}  "
            f"makespan {self.makespan:6.2f}s{against}  "
            f"lost {self.lost} dup {self.duplicated} done in store {self.done}/{self.jobs}  "
            f"held by {self.holder}, bots' CPU {self.cpu_per_job * 1000:.1f} ms/job  "
            f"(commands sent in {self.sent:.2f}s, head {self.head * 1000:.0f} ms, "
            f"tail {self.tail * 1000:.0f} ms)"
        )


def guilds_for(fake: FakeDiscord, count: int) -> list[FakeGuild | None]:
    """One server per shard of `count` (None: the fake's main server, on its own shard)."""
    if count == 1:
        return [None]
    main = shard_of(fake.guild_id, count)
    return [
        None if shard == main else fake.add_guild(f"Shard {shard}", shard=(shard, count))
        for shard in range(count)
    ]


@dataclass
class Api:
    """A `comfycord serve` process sharing the store, its key, and the harness's session."""

    process: ApiProcess
    key: str
    session: aiohttp.ClientSession

    async def submit(self, n: int) -> str:
        url = f"{self.process.url}/v1/workflows/bench/jobs"
        headers = {"Authorization": f"Bearer {self.key}"}
        body = {"prompt": f"burst {n}", "steps": 1}
        async with self.session.post(url, json=body, headers=headers) as response:
            if response.status != 202:
                raise RuntimeError(f"the API refused a job: {await response.text()}")
            return str((await response.json())["jobs"][0]["id"])


@contextlib.asynccontextmanager
async def started_api(
    folder: Path, fake: FakeDiscord, url: str, config: dict[str, Any]
) -> AsyncIterator[Api]:
    process = ApiProcess(folder / "api", fake, config)
    async with aiohttp.ClientSession() as session:
        try:
            await process.start(session)
            store = Store(url)
            try:
                key = KeyStore(store).create("bench").secret
            finally:
                store.close()
            yield Api(process, key, session)
        finally:
            await process.stop()


async def burst(
    cluster: Cluster,
    *,
    count: int,
    backends: int,
    jobs: int,
    gpu_seconds: float,
    size: int,
    api: bool = False,
) -> Figures:
    url = cluster.new_database()
    servers = [FakeComfyUI(step_delay=0.0, job_seconds=gpu_seconds) for _ in range(backends)]
    for server in servers:
        await server.start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            config: dict[str, Any] = {
                "comfyui": {
                    "backends": [{"url": s.url, "name": f"gpu{i}"} for i, s in enumerate(servers)],
                },
                "storage": {"url": url, "outputs": str(folder / "outputs")},
                "workflows": {
                    "dir": str(bench_workflows(folder / "workflows", size)),
                    "default": "bench",
                },
                "limits": {"max_queued_per_member": jobs, "max_running_per_member": jobs},
                "log_level": "WARNING",
            }
            async with installed_fake() as fake:
                guilds = guilds_for(fake, count)  # before the bots, who get them on IDENTIFY
                async with (
                    started_bots(folder, fake, url, config, count) as bots,
                    contextlib.AsyncExitStack() as stack,
                ):
                    serve = (
                        await stack.enter_async_context(started_api(folder, fake, url, config))
                        if api
                        else None
                    )
                    holder = next(p for p in shared_processes(url) if p.leading).detail
                    # add_member adds to the main server only: these three are in every server
                    users = [fake.owner_id, fake.moderator_id, fake.member_id]
                    return await measure(
                        fake, bots, servers, guilds, users, url, jobs, gpu_seconds, holder, serve
                    )
    finally:
        for server in servers:
            await server.stop()


async def measure(
    fake: FakeDiscord,
    bots: Sequence[Bot],
    servers: Sequence[FakeComfyUI],
    guilds: Sequence[FakeGuild | None],
    users: Sequence[int],
    url: str,
    jobs: int,
    gpu_seconds: float,
    holder: str,
    api: Api | None = None,
) -> Figures:
    """The burst: every third job over the API when there is one, the others in Discord."""
    backends = len(servers)
    cpu_before = sum(cpu_seconds_of(b.pid) for b in bots)
    interactions: list[FakeInteraction] = []
    over_http: list[str] = []
    start = time.monotonic()
    for n in range(jobs):
        if api is not None and n % 3 == 2:
            over_http.append(await api.submit(n))
            continue
        guild = guilds[n % len(guilds)]
        user = users[(n // len(guilds)) % len(users)]
        options = {"prompt": f"burst {n}", "steps": 1}
        interactions.append(await fake.slash("imagine", options, user_id=user, guild=guild))
    sent = time.monotonic() - start
    pending = list(interactions)
    waiting = set(over_http)
    deadline = start + jobs * max(gpu_seconds, 0.05) * 3 / backends + 90
    store = Store(url)
    try:
        while (pending or waiting) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
            pending = [it for it in pending if not delivered(it)]
            for job_id in list(waiting):
                job = store.get(job_id)
                if job is not None and job.state is JobState.DONE:
                    waiting.discard(job_id)
            for bot in bots:
                bot.check_alive()
    finally:
        store.close()
    end = time.monotonic()
    if pending:
        shown = [it.original.content if it.original else "no reply" for it in pending]
        print(f"undelivered ({len(pending)}): {shown[:5]}")
        for n, bot in enumerate(bots):
            print(f"bot {n}'s log ends:\n{bot.log[-3000:]}")
    await asyncio.sleep(1.0)  # a second post would show up now
    cpu = sum(cpu_seconds_of(b.pid) for b in bots) - cpu_before
    channels = [fake.channel_id if g is None else g.channel_id for g in guilds]
    posted: dict[str, int] = {}
    for channel in channels:
        for message in fake.messages_in(channel):
            if not message.deleted:
                for job_id in {a.filename.split("-")[0] for a in message.attachments}:
                    posted[job_id] = posted.get(job_id, 0) + 1
    done = done_in_store(url, jobs + 100)
    runs = [run for server in servers for run in server.busy]
    prompts = len({p for _, _, p in runs})
    busy = [
        sum(max(0.0, min(e, end) - max(s, start)) for s, e, _ in server.busy) / (end - start)
        for server in servers
    ]
    # a prompt run twice, or a job sent again as another prompt (more runs than jobs)
    ran_twice = max(len(runs) - prompts, len(runs) - jobs, 0)
    duplicated = sum(n - 1 for n in posted.values()) + ran_twice
    lost = max(len(pending), len(interactions) - len(posted)) + len(waiting)
    return Figures(
        backends,
        jobs,
        len(users),
        statistics.mean(e - s for s, e, _ in runs) if runs else 0.0,
        end - start,
        busy,
        len(bots),
        lost,
        duplicated,
        done,
        holder,
        cpu / jobs,
        sent,
        min((s for s, _, _ in runs), default=start) - start,
        end - max((e for _, e, _ in runs), default=end),
    )


async def run(args: argparse.Namespace) -> None:
    bin_dir = binaries()
    if bin_dir is None:
        sys.exit("PostgreSQL is not installed: apt-get install postgresql")
    cluster = Cluster(bin_dir)
    cluster.start()
    try:
        if not args.busy_only:
            print(f"jobs per second: K={args.backends} backends with no GPU time, J={args.jobs}")
            for count in (int(p) for p in args.processes.split(",")):
                figures = await burst(
                    cluster,
                    count=count,
                    backends=args.backends,
                    jobs=args.jobs,
                    gpu_seconds=0.0,
                    size=args.size,
                )
                print("  " + figures.line(), flush=True)
        if args.busy or args.busy_only:
            also = " and the API (every third job)" if args.api else ""
            print(f"GPU busy share: 2 bot processes{also}, T={args.gpu_seconds}s, J=5*K")
            for backends in (int(k) for k in args.busy_backends.split(",")):
                figures = await burst(
                    cluster,
                    count=2,
                    backends=backends,
                    jobs=5 * backends,
                    gpu_seconds=args.gpu_seconds,
                    size=args.size,
                    api=args.api,
                )
                print("  " + figures.line(), flush=True)
    finally:
        cluster.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--processes", default="1,2,4", help="P, bot processes, comma-separated")
    parser.add_argument("--backends", type=int, default=8, help="K for jobs per second")
    parser.add_argument("--jobs", type=int, default=200, help="J for jobs per second")
    parser.add_argument("--busy", action="store_true", help="also the GPU busy share")
    parser.add_argument("--busy-only", action="store_true", help="the GPU busy share alone")
    parser.add_argument("--busy-backends", default="4,8", help="K for the busy share")
    parser.add_argument("--gpu-seconds", type=float, default=2.0, help="T for the busy share")
    parser.add_argument("--size", type=int, default=64, help="image width and height, px")
    parser.add_argument(
        "--api",
        action="store_true",
        help="the busy share with a `comfycord serve` too, taking every third job",
    )
    args = parser.parse_args()
    if args.gpu_seconds <= 0:
        parser.error("--gpu-seconds must be above 0")
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
