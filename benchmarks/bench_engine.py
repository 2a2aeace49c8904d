"""Engine overhead and fair-queue cost, against the in-process fake ComfyUI.

    .venv/bin/python -m benchmarks.bench_engine [--jobs 200] [--members 20]

Prints: jobs per second through the whole engine (submit -> ComfyUI -> images saved) with
1-step samplers, the median and 95th percentile time from submit to finished, and the time
to compute every queue position with many jobs waiting (what each queue change costs).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import aiohttp

from bot.engine import Engine, JobRequest
from bot.jobs.model import Job
from bot.jobs.runner import JobUpdate
from bot.jobs.scheduler import FairQueue
from tests.conftest import make_settings
from tests.fakes.comfyui import FakeComfyUI


async def engine_throughput(jobs: int, members: int, in_flight: int) -> None:
    async with FakeComfyUI(step_delay=0.0) as comfy, aiohttp.ClientSession() as session:
        with tempfile.TemporaryDirectory() as tmp:
            settings = make_settings(
                Path(tmp),
                comfy.url,
                comfyui={"max_in_flight": in_flight},
                limits={"max_queued_per_member": jobs},
            )
            engine = Engine(session, settings)
            submitted: dict[str, float] = {}
            latencies: list[float] = []
            done = asyncio.Event()

            def on_update(update: JobUpdate) -> None:
                if update.kind == "finished":
                    latencies.append(time.perf_counter() - submitted[update.job.id])
                    if len(latencies) == jobs:
                        done.set()

            engine.listen(on_update)
            await engine.start()
            start = time.perf_counter()
            for i in range(jobs):
                request = JobRequest(
                    "sd15-txt2img", {"prompt": f"bench {i}", "steps": 1}, owner_id=str(i % members)
                )
                [job] = await engine.submit(request)
                submitted[job.id] = time.perf_counter()
            await done.wait()
            elapsed = time.perf_counter() - start
            await engine.stop()
            engine.close_store()
    latencies.sort()
    p95 = latencies[int(0.95 * (len(latencies) - 1))]
    print(
        f"engine: {jobs} jobs, {members} members, {in_flight} in flight: "
        f"{jobs / elapsed:.1f} jobs/s; submit->finished median "
        f"{statistics.median(latencies) * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms"
    )


def queue_cost(waiting: int, members: int) -> None:
    queue = FairQueue()
    for i in range(waiting):
        queue.add(Job(f"{i:08x}", "wf", {}, str(i % members), created_at=float(i)))
    rounds = 20
    start = time.perf_counter()
    for _ in range(rounds):
        queue.positions()
    per_call = (time.perf_counter() - start) / rounds
    print(
        f"fair queue: positions of {waiting} waiting jobs from {members} members: "
        f"{per_call * 1000:.2f} ms per call"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--members", type=int, default=20)
    parser.add_argument("--in-flight", type=int, default=2)
    args = parser.parse_args()
    asyncio.run(engine_throughput(args.jobs, args.members, args.in_flight))
    for waiting, members in ((100, 10), (1000, 100)):
        queue_cost(waiting, members)


if __name__ == "__main__":
    main()
