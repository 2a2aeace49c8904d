"""Throughput and memory of the real bot process: K fast fake GPUs, a burst from many members.

    .venv/bin/python -m benchmarks.bench_throughput [--backends 8] [--gpu-seconds 0,0.1]
        [--jobs 400] [--members 40] [--repeat 3] [--size 64] [--prefetch 1] [--profile FILE]
    .venv/bin/python -m benchmarks.bench_throughput --soak 10000 [--sample-every 250]
        [--window 400] [--csv benchmarks/rss_soak.csv] [--svg docs/rss_soak.svg]

The bot runs as its own process (`python -m bot run`, as in `tests/process.py`) against the
fake Discord (with its rate-limit model) and K fake ComfyUI servers, each spending T seconds of
simulated GPU time on a prompt, one at a time. All J `/imagine` commands are sent at once by M
members (the default limit of one running job per member holds). A job counts as delivered
when its reply carries its image. For each T it prints:

- jobs per second, from the first command to the last result on Discord;
- GPU busy share: the time each backend spent on a prompt within the burst over the burst
  (mean and lowest), and the makespan against J·T/K (T as measured on the servers);
- lost and duplicated jobs (a reply without its image, a job run or posted twice);
- the bot's peak RSS (VmHWM from /proc) and its CPU time per job;
- where GPU time was lost: from the first command to the first prompt (head), between prompts
  (gaps; "late" when the next prompt reached the server only after the last one ended, i.e.
  the bot was late), and from the last prompt's end to its result on Discord (tail); and how
  much of a core the fakes themselves used (they share the machine with the bot).

Images are `--size` px square (64 by default: the fakes' own work for a 512 px PNG would cost
more than the GPU time; a larger size shows what results cost in the bot's memory).

`--profile FILE` runs the bot under cProfile and writes its statistics to FILE when it exits
(`python -m pstats FILE`). `--soak N` keeps `--window` jobs waiting while N jobs go through
and samples the bot's RSS every `--sample-every` delivered jobs; the samples go to a CSV file
and a small SVG chart.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import math
import os
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from benchmarks.bench_pool import Burst, bench_workflows
from tests.fakes.comfyui import FakeComfyUI
from tests.fakes.discord import FakeDiscord, FakeInteraction
from tests.fakes.discord_fixtures import installed_fake
from tests.process import bot_env

PROFILED = """
import cProfile, signal, sys
from bot.__main__ import main
profiler = cProfile.Profile()
def stop(*_):
    raise SystemExit(0)
signal.signal(signal.SIGUSR1, stop)
profiler.enable()
try:
    main(["run"])
finally:
    profiler.disable()
    profiler.dump_stats(sys.argv[1])
"""


def memory_of(pid: int) -> tuple[float, float]:
    """The process's resident set now and at its peak, in MB (VmRSS, VmHWM)."""
    fields: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024
    return fields["VmRSS"], fields["VmHWM"]


def cpu_seconds_of(pid: int) -> float:
    """User and system CPU time the process has used so far."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    parts = stat[stat.rindex(")") + 2 :].split()
    return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")


class Bot:
    """One `comfycord run` process on the benchmark's settings (optionally under cProfile)."""

    def __init__(
        self,
        folder: Path,
        fake: FakeDiscord,
        servers: Sequence[FakeComfyUI],
        *,
        per_member: int,
        profile: Path | None,
        size: int,
        prefetch: int,
    ) -> None:
        self.fake = fake
        self.folder = folder
        self.profile = profile
        config: dict[str, Any] = {
            "comfyui": {
                "backends": [{"url": s.url, "name": f"gpu{i}"} for i, s in enumerate(servers)],
                "prefetch": prefetch,
            },
            "storage": {"path": str(folder / "db.sqlite3"), "outputs": str(folder / "outputs")},
            "workflows": {
                "dir": str(bench_workflows(folder / "workflows", size)),
                "default": "bench",
            },
            "discord": {"dev_guild": fake.guild_id},
            "limits": {"max_queued_per_member": per_member},
            "log_level": "WARNING",
        }
        self.config = folder / "comfycord.yaml"
        self.config.write_text(yaml.safe_dump(config), encoding="utf-8")
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def start(self) -> None:
        env = bot_env(self.fake, self.config)
        if self.profile is None:
            argv = [sys.executable, "-m", "bot", "run"]
        else:
            argv = [sys.executable, "-c", PROFILED, str(self.profile)]
        with open(self.folder / "bot.log", "wb") as out:
            self.proc = await asyncio.create_subprocess_exec(
                *argv, cwd=self.folder, env=env, stdout=out, stderr=out
            )

        def ready() -> bool:
            if self.proc is not None and self.proc.returncode is not None:
                log = (self.folder / "bot.log").read_text(errors="replace")
                raise AssertionError(f"the bot exited ({self.proc.returncode}):\n{log}")
            synced = any(c["name"] == "imagine" for c in self.fake.commands)
            return self.fake.gateway_connected and synced

        await self.fake.wait_for(ready, timeout=60)

    async def stop(self) -> None:
        if self.proc is None or self.proc.returncode is not None:
            return
        if self.profile is not None:
            self.proc.send_signal(signal.SIGUSR1)  # the profile is written on the way out
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.proc.wait(), 60)
                return
        self.proc.send_signal(signal.SIGKILL)
        await self.proc.wait()


@contextlib.asynccontextmanager
async def setup(
    args: argparse.Namespace, gpu_seconds: float, per_member: int, profile: Path | None
) -> AsyncIterator[tuple[FakeDiscord, list[FakeComfyUI], Bot]]:
    servers = [FakeComfyUI(step_delay=0.0, job_seconds=gpu_seconds) for _ in range(args.backends)]
    for server in servers:
        server.prompts_received = Arrivals()
        await server.start()
    try:
        async with installed_fake() as fake:
            with tempfile.TemporaryDirectory() as tmp:
                bot = Bot(
                    Path(tmp),
                    fake,
                    servers,
                    per_member=per_member,
                    profile=profile,
                    size=args.size,
                    prefetch=args.prefetch,
                )
                try:
                    await bot.start()
                    yield fake, servers, bot
                finally:
                    await bot.stop()
    finally:
        for server in servers:
            await server.stop()


class Arrivals(list[Any]):
    """A fake server's `prompts_received` that also notes when each prompt arrived."""

    def __init__(self) -> None:
        super().__init__()
        self.at: dict[str, float] = {}

    def append(self, body: Any) -> None:
        self.at[str(body.get("prompt_id"))] = time.monotonic()
        super().append(body)


def starved(server: FakeComfyUI) -> tuple[int, float]:
    """Gaps where the GPU waited for the bot: how many, and their time (its next prompt
    arrived after the previous one ended)."""
    arrivals = server.prompts_received
    assert isinstance(arrivals, Arrivals)
    ordered = sorted(server.busy)
    late = [
        b[0] - a[1] for a, b in itertools.pairwise(ordered) if arrivals.at.get(b[2], 0.0) > a[1]
    ]
    return len(late), sum(late)


def delivered(it: FakeInteraction) -> bool:
    message = it.original
    return message is not None and bool(message.attachments)


@dataclass(frozen=True)
class Figures(Burst):
    lost: int
    duplicated: int
    peak_mb: float
    cpu_per_job: float
    head: float  # from the first command to the first prompt on a GPU
    gaps: float  # idle time between prompts, per GPU (mean)
    tail: float  # from the last prompt's end to its result on Discord
    harness_cpu: float  # share of one core the fakes used during the burst
    starved: tuple[int, float]  # gaps where the next prompt came after the last one ended

    def line(self) -> str:
        ideal = self.ideal
        against = f"{self.makespan / ideal:.3f} x J*T/K" if ideal > 0.05 else "(no GPU time)"
        return (
            f"K={self.backends} J={self.jobs} M={self.members} T={self.gpu_seconds:.3f}s  "
            f"{self.jobs / self.makespan:6.1f} jobs/s  "
            f"busy mean {statistics.mean(self.busy):6.1%} min {min(self.busy):6.1%}  "
            f"makespan {self.makespan:6.2f}s = {against}  "
            f"lost {self.lost} dup {self.duplicated}  "
            f"bot peak RSS {self.peak_mb:5.0f} MB, CPU {self.cpu_per_job * 1000:.1f} ms/job  "
            f"(head {self.head * 1000:.0f} ms, gaps {self.gaps * 1000:.0f} ms/GPU, "
            f"of which the bot was late {self.starved[0]} times, {self.starved[1] * 1000:.0f} ms "
            f"in all; tail {self.tail * 1000:.0f} ms; the fakes used {self.harness_cpu:.0%} of "
            "a core)"
        )


async def burst(args: argparse.Namespace, gpu_seconds: float, profile: Path | None) -> Figures:
    backends, jobs, members = args.backends, args.jobs, args.members
    per_member = math.ceil(jobs / members) + 1
    async with setup(args, gpu_seconds, per_member, profile) as (
        fake,
        servers,
        bot,
    ):
        users = [fake.add_member(f"member{n}") for n in range(members)]
        await asyncio.sleep(0.5)  # the members' arrival reaches the bot
        cpu_before = cpu_seconds_of(bot.pid)
        interactions: list[FakeInteraction] = []
        own_before = sum(os.times()[:2])
        start = time.monotonic()
        for n in range(jobs):
            options = {"prompt": f"burst {n}", "steps": 1}
            interactions.append(await fake.slash("imagine", options, user_id=users[n % members]))
        pending = list(interactions)
        deadline = start + jobs * max(gpu_seconds, 0.05) * 3 + 60
        while pending and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
            pending = [it for it in pending if not delivered(it)]
        end = time.monotonic()
        own = sum(os.times()[:2]) - own_before
        if pending:
            log = (bot.folder / "bot.log").read_text(errors="replace")
            shown = [it.original.content if it.original else "no reply" for it in pending]
            print(f"undelivered: {shown[:5]}\nthe bot's log ends:\n{log[-4000:]}")
        await asyncio.sleep(0.5)  # a duplicate would show up now
        cpu = cpu_seconds_of(bot.pid) - cpu_before
        _, peak = memory_of(bot.pid)
        posted: dict[str, int] = {}
        for message in fake.messages_in(fake.channel_id):
            if not message.deleted:
                for job_id in {a.filename.split("-")[0] for a in message.attachments}:
                    posted[job_id] = posted.get(job_id, 0) + 1
    runs = [run for server in servers for run in server.busy]
    busy = [
        sum(max(0.0, min(e, end) - max(s, start)) for s, e, _ in server.busy) / (end - start)
        for server in servers
    ]
    prompts = len({p for _, _, p in runs})
    gaps = []
    for server in servers:
        ordered = sorted(server.busy)
        gaps.append(sum(max(0.0, b[0] - a[1]) for a, b in itertools.pairwise(ordered)))
    duplicated = sum(n - 1 for n in posted.values()) + (len(runs) - prompts)
    lost = len(pending) + max(0, jobs - len(posted))
    return Figures(
        backends,
        jobs,
        members,
        statistics.mean(e - s for s, e, _ in runs) if runs else 0.0,
        end - start,
        busy,
        lost,
        duplicated,
        peak,
        cpu / jobs,
        min((s for s, _, _ in runs), default=start) - start,
        statistics.mean(gaps),
        end - max((e for _, e, _ in runs), default=end),
        own / (end - start),
        (sum(starved(s)[0] for s in servers), sum(starved(s)[1] for s in servers)),
    )


async def soak(args: argparse.Namespace) -> None:
    backends, total, members, window = args.backends, args.soak, args.members, args.window
    gpu_seconds, every, csv, svg = args.soak_gpu_seconds, args.sample_every, args.csv, args.svg
    per_member = math.ceil(window / members) + 2
    samples: list[tuple[int, float, float, float]] = []  # jobs, seconds, RSS MB, peak MB
    async with setup(args, gpu_seconds, per_member, None) as (fake, _, bot):
        users = [fake.add_member(f"member{n}") for n in range(members)]
        await asyncio.sleep(0.5)
        start = time.monotonic()
        per_user: dict[int, list[FakeInteraction]] = {u: [] for u in users}
        sent = done = 0
        next_sample = every
        rss, peak = memory_of(bot.pid)
        samples.append((0, 0.0, rss, peak))
        while done < total:
            for user in users:
                mine = per_user[user] = [it for it in per_user[user] if not delivered(it)]
                while len(mine) < window // members and sent < total:
                    options = {"prompt": f"soak {sent}", "steps": 1}
                    mine.append(await fake.slash("imagine", options, user_id=user))
                    sent += 1
            done = sent - sum(len(v) for v in per_user.values())
            while done >= next_sample:
                rss, peak = memory_of(bot.pid)
                samples.append((next_sample, time.monotonic() - start, rss, peak))
                print(f"  {next_sample:>6} jobs  RSS {rss:6.1f} MB  peak {peak:6.1f} MB")
                next_sample += every
            await asyncio.sleep(0.05)
    csv.parent.mkdir(parents=True, exist_ok=True)
    csv.write_text(
        "jobs,seconds,rss_mb,peak_mb\n"
        + "".join(f"{j},{t:.2f},{r:.1f},{p:.1f}\n" for j, t, r, p in samples)
    )
    svg.parent.mkdir(parents=True, exist_ok=True)
    svg.write_text(chart([(j, r) for j, _, r, _ in samples], gpu_seconds, backends))
    after = [r for j, _, r, _ in samples if j >= 1000]
    if after:
        print(
            f"RSS from job 1,000 to {samples[-1][0]:,}: {min(after):.1f} to {max(after):.1f} MB "
            f"({max(after) / min(after) - 1:.1%} spread); {total / samples[-1][1]:.1f} jobs/s; "
            f"samples in {csv}, chart in {svg}"
        )


def chart(points: list[tuple[int, float]], gpu_seconds: float, backends: int) -> str:
    """A small line chart of RSS (MB) against jobs delivered, as SVG."""
    width, height, left, right, top, bottom = 480, 200, 44, 12, 22, 30
    max_jobs = max(j for j, _ in points) or 1
    ceiling = max(50.0, math.ceil(max(r for _, r in points) / 50) * 50)

    def x(jobs: float) -> float:
        return left + (width - left - right) * jobs / max_jobs

    def y(mb: float) -> float:
        return top + (height - top - bottom) * (1 - mb / ceiling)

    line = " ".join(f"{x(j):.1f},{y(r):.1f}" for j, r in points)
    grid = []
    for mb in range(0, int(ceiling) + 1, 50):
        grid.append(
            f'<line x1="{left}" x2="{width - right}" y1="{y(mb):.1f}" y2="{y(mb):.1f}" '
            f'stroke="#ddd"/><text x="{left - 4}" y="{y(mb) + 4:.1f}" text-anchor="end">{mb}</text>'
        )
    step = max(1000, math.ceil(max_jobs / 5 / 1000) * 1000)
    for jobs in range(0, max_jobs + 1, step):
        grid.append(
            f'<text x="{x(jobs):.1f}" y="{height - bottom + 14}" '
            f'text-anchor="middle">{jobs:,}</text>'
        )
    title = f"bot RSS (MB) over {max_jobs:,} jobs, K={backends}, T={gpu_seconds:g} s"
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'font-family="sans-serif" font-size="11">\n'
        f'<text x="{left}" y="14">{title}</text>\n'
        + "\n".join(grid)
        + f'\n<text x="{(width + left) / 2}" y="{height - 4}" text-anchor="middle">'
        f"jobs delivered</text>\n"
        f'<polyline fill="none" stroke="#3b6ea5" stroke-width="2" points="{line}"/>\n</svg>\n'
    )


async def run(args: argparse.Namespace) -> None:
    if args.soak:
        print(f"soak: {args.soak} jobs, K={args.backends}, T={args.soak_gpu_seconds}s")
        await soak(args)
        return
    for gpu_seconds in (float(t) for t in args.gpu_seconds.split(",")):
        lines = []
        for attempt in range(args.repeat):
            profile = Path(args.profile) if args.profile and attempt == 0 else None
            figures = await burst(args, gpu_seconds, profile)
            lines.append(figures)
            print("  " + figures.line(), flush=True)
        if args.repeat > 1:
            middle = sorted(lines, key=lambda f: f.makespan)[len(lines) // 2]
            print("median " + middle.line())
    if args.profile:
        print(f"profile of the first run: {args.profile}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backends", type=int, default=8, help="K")
    parser.add_argument("--gpu-seconds", default="0,0.1", help="T per prompt, comma-separated")
    parser.add_argument("--jobs", type=int, default=400, help="J")
    parser.add_argument("--members", type=int, default=40, help="M")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--profile", help="run the bot under cProfile, stats to this file")
    parser.add_argument("--soak", type=int, default=0, help="jobs in the soak (0: no soak)")
    parser.add_argument("--soak-gpu-seconds", type=float, default=0.0)
    parser.add_argument("--window", type=int, default=400, help="jobs kept waiting in the soak")
    parser.add_argument("--sample-every", type=int, default=250)
    parser.add_argument("--prefetch", type=int, default=1, help="comfyui.prefetch")
    parser.add_argument("--size", type=int, default=64, help="image width and height, px")
    parser.add_argument("--csv", type=Path, default=Path("benchmarks/rss_soak.csv"))
    parser.add_argument("--svg", type=Path, default=Path("docs/rss_soak.svg"))
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
