"""A pool of K ComfyUI backends under a burst, against fake ComfyUI servers with GPU time.

    .venv/bin/python -m benchmarks.bench_pool [--gpu-seconds 1.0] [--prefetch 1]

Each fake server spends `--gpu-seconds` (T) of simulated GPU time on every prompt, one prompt at
a time, as a GPU does. J jobs from M members are submitted at once; each member may run as many
at once as they queued (the pool is measured, not the limits: under the default of one running
job per member, 5 members can't keep 8 backends busy; one line shows that default at K=4). The
burst lasts from the first submit to the last job finished. For each configuration it prints:

- GPU busy share: the time each backend spent running a prompt within the burst, divided by
  the burst; the mean and the lowest over the backends;
- makespan against J·T/K, the burst K perfect GPUs would need (T measured: the mean time a
  server spent on one prompt, i.e. the GPU time plus the fake's own work for the tiny graph);
- dispatch latency: how long a GPU waited for its next prompt while jobs were waiting
  (from the later of the job's submission and the end of that GPU's previous prompt to the
  start of the prompt), median and maximum;
- nothing lost or duplicated: every job finished once, done, and the servers ran J prompts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from bot.engine import Engine, JobRequest
from bot.jobs.model import JobState
from bot.jobs.runner import JobUpdate
from tests.conftest import WORKFLOWS, make_settings
from tests.fakes.comfyui import FakeComfyUI

BENCH_PACK = """title: Pool benchmark (SD 1.5 graph, 64 px)
graph: bench.json
params:
  prompt: {type: text, node: Positive, input: text, required: true}
  seed: {type: seed, node: KSampler, input: seed}
  steps: {type: int, node: KSampler, input: steps, default: 1, min: 1, max: 50}
"""


def bench_workflows(folder: Path, size: int = 64) -> Path:
    """The shipped SD 1.5 graph at `size` px (64 by default: the fakes' own work stays far
    below T)."""
    graph = json.loads((WORKFLOWS / "sd15-txt2img.json").read_text())
    for node in graph.values():
        if node["class_type"] == "EmptyLatentImage":
            node["inputs"].update(width=size, height=size)
    folder.mkdir()
    (folder / "bench.json").write_text(json.dumps(graph))
    (folder / "bench.yaml").write_text(BENCH_PACK)
    return folder


@dataclass(frozen=True)
class Burst:
    """What every burst measures (this one and the one through Discord in bench_throughput)."""

    backends: int
    jobs: int
    members: int
    gpu_seconds: float  # measured: the mean time a server spent on one prompt
    makespan: float
    busy: list[float]

    @property
    def ideal(self) -> float:
        """J·T/K: the burst K perfect GPUs would need."""
        return self.jobs * self.gpu_seconds / self.backends


@dataclass(frozen=True)
class Figures(Burst):
    latencies: list[float]
    sound: bool

    def line(self) -> str:
        gaps = sorted(self.latencies)
        return (
            f"K={self.backends:<2} J={self.jobs:<3} M={self.members:<2} T={self.gpu_seconds:.3f}s  "
            f"busy mean {statistics.mean(self.busy):6.1%} min {min(self.busy):6.1%}  "
            f"makespan {self.makespan:6.2f}s = {self.makespan / self.ideal:.3f} x J*T/K  "
            f"dispatch latency median {statistics.median(gaps) * 1000:5.1f} ms "
            f"max {gaps[-1] * 1000:5.1f} ms  "
            f"{'nothing lost or duplicated' if self.sound else 'LOST OR DUPLICATED JOBS'}"
        )


async def burst(
    backends: int, jobs: int, members: int, gpu_seconds: float, prefetch: int, running: int
) -> Figures:
    servers = [FakeComfyUI(step_delay=0.0, job_seconds=gpu_seconds) for _ in range(backends)]
    for server in servers:
        await server.start()
    try:
        async with aiohttp.ClientSession() as session:
            with tempfile.TemporaryDirectory() as tmp:
                settings = make_settings(
                    Path(tmp),
                    servers[0].url,
                    comfyui={
                        "backends": [
                            {"url": s.url, "name": f"gpu{i}"} for i, s in enumerate(servers)
                        ],
                        "prefetch": prefetch,
                    },
                    limits={"max_queued_per_member": jobs, "max_running_per_member": running},
                    workflows={"dir": str(bench_workflows(Path(tmp) / "workflows"))},
                )
                engine = Engine(session, settings)
                finished: dict[str, list[JobUpdate]] = {}
                all_done = asyncio.Event()

                def on_update(update: JobUpdate) -> None:
                    if update.kind == "finished":
                        finished.setdefault(update.job.id, []).append(update)
                        if len(finished) == jobs:
                            all_done.set()

                engine.listen(on_update)
                await engine.start()
                submitted: dict[str, float] = {}
                start = time.monotonic()
                for i in range(jobs):
                    request = JobRequest(
                        "bench",
                        {"prompt": f"burst {i}"},
                        owner_id=f"member{i % members}",
                    )
                    [job] = await engine.submit(request)
                    submitted[job.id] = time.monotonic()
                    await asyncio.sleep(0)  # members' requests arrive as separate tasks
                await asyncio.wait_for(all_done.wait(), jobs * gpu_seconds * 3 + 30)
                end = time.monotonic()
                prompt_to_job = {
                    u.job.prompt_id: job_id for job_id, us in finished.items() for u in us
                }
                await engine.stop()
                engine.close_store()
    finally:
        for server in servers:
            await server.stop()
    makespan = end - start
    busy = []
    latencies = []
    for server in servers:
        runs = sorted(server.busy)
        inside = sum(max(0.0, min(e, end) - max(s, start)) for s, e, _ in runs)
        busy.append(inside / makespan)
        previous_end = start
        for began, ended, prompt_id in runs:
            ready = max(previous_end, submitted.get(prompt_to_job.get(prompt_id, ""), start))
            latencies.append(max(0.0, began - ready))
            previous_end = ended
    sound = (
        len(finished) == jobs
        and all(len(us) == 1 and us[0].job.state is JobState.DONE for us in finished.values())
        and sum(len(s.busy) for s in servers) == jobs
    )
    durations = [e - s for server in servers for s, e, _ in server.busy]
    mean_run = statistics.mean(durations)
    return Figures(backends, jobs, members, mean_run, makespan, busy, latencies, sound)


async def run(gpu_seconds: float, prefetch: int) -> None:
    print(f"prefetch={prefetch}; a member may run as many jobs at once as they queued")
    for jobs, members in ((40, 8), (20, 5)):
        print(f"{jobs} jobs from {members} members:")
        for backends in (1, 4, 8):
            figures = await burst(backends, jobs, members, gpu_seconds, prefetch, jobs)
            print("  " + figures.line())
    print("the default limits (one running job per member), 20 jobs from 5 members:")
    print("  " + (await burst(4, 20, 5, gpu_seconds, prefetch, 1)).line())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gpu-seconds", type=float, default=1.0, help="T, per prompt")
    parser.add_argument("--prefetch", type=int, default=1)
    args = parser.parse_args()
    asyncio.run(run(args.gpu_seconds, args.prefetch))


if __name__ == "__main__":
    main()
