"""What progress costs: Discord requests per job, the fair queue at 10,000 jobs, result latency.

    .venv/bin/python -m benchmarks.bench_progress [--sizes 20,200,2000] [--scale S]
        [--gpu-seconds 7.5,2] [--latency-jobs 40] [--latency-step-delay 0.03]
        [--skip-requests] [--skip-latency]

1. Requests per job: the real bot (discord.py against the in-process fake Discord) runs `size`
   `/imagine` jobs queued at once by `size / 10` members on one fake GPU. Time is scaled down by
   `--scale` (by default so that a job takes 0.2 s) everywhere (progress interval, the 30 s
   refresh, step time, Discord's per-message rate limits), so a run shows what a job of
   `--gpu-seconds` on a real GPU costs without taking that long. Prints requests per job (all
   requests about the job: acknowledgement, edits, the result), the budget ceil(T / interval) + 3
   with T the job's time on the GPU as ComfyUI reports it (execution_start to
   execution_success), how many jobs went over it, and how far the positions members saw were
   from the truth (sampled every half interval).
2. The fair queue with 10,000 waiting jobs from 1,000 members: the cost of one change (add,
   cancel, start; each followed by finding the jobs whose band changed) and its memory per
   waiting job (tracemalloc; the Job records themselves are counted apart).
3. Latency from ComfyUI's `execution_success` (as the fake ComfyUI sends it) to the Discord
   request that carries the image (when the fake Discord has read it whole; also when it has
   checked and applied the edit, which Discord's own servers do in production), for the bot
   and, side by side in the same run on the same fakes, a minimal bot that only forwards the
   bytes. Each job has one sampler step of `--latency-step-delay` seconds, so that the run's
   start and progress reach both bots before its end, as they do from a GPU; with 0 the fake
   sends the whole run at once after `execution_success` and the bot's handling of the run's
   start (saving the running state, the started update) falls inside the measured time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import math
import random
import re
import statistics
import tempfile
import time
import tracemalloc
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import discord
from discord import app_commands
from PIL import Image

from bot.app import ComfyBot
from bot.engine import Engine
from bot.jobs.model import Job
from bot.jobs.scheduler import FairQueue, band_of
from bot.settings import Settings
from bot.workflows.patch import apply, coerce_values
from tests.conftest import make_settings
from tests.fakes import _comfy_nodes
from tests.fakes.comfyui import FakeComfyUI
from tests.fakes.discord import DEFAULT_RATE_LIMITS, FakeDiscord, FakeInteraction
from tests.fakes.discord_fixtures import installed_fake, running_bot

INTERVAL = 1.5
POSITION = re.compile(r"Queued · position #(\d+)")


@contextlib.asynccontextmanager
async def bot_on(
    fake: FakeDiscord, settings: Settings, extra: app_commands.Command[Any, Any, Any] | None = None
) -> AsyncIterator[ComfyBot]:
    async with aiohttp.ClientSession() as session:
        engine = Engine(session, settings)
        bot = ComfyBot(engine, settings, guild_ready_timeout=0.1)
        if extra is not None:
            bot.tree.add_command(extra)
        try:
            async with running_bot(bot, fake, timeout=60) as ready:
                yield ready
        finally:
            engine.close_store()


async def wait_until(condition: Any, timeout: float, step: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("the benchmark did not finish in time")
        await asyncio.sleep(step)


# 1. requests per job ---------------------------------------------------------------------------
async def requests_per_job(size: int, scale: float, gpu_seconds: float) -> None:
    interval = INTERVAL / scale
    steps = 5
    limits = {
        name: (count, per / scale)
        for name, (count, per) in DEFAULT_RATE_LIMITS.items()
        if name != "application_commands"
    }
    limits["interaction_callback"] = (max(20, size), 1.0)
    with tempfile.TemporaryDirectory() as tmp:
        async with (
            installed_fake(rate_limits=limits) as fake,
            FakeComfyUI(previews=True, step_delay=gpu_seconds / scale / steps) as comfy,
        ):
            # each job's time on the GPU, as ComfyUI tells it: execution_start to success
            ran: dict[str, list[float]] = {}
            send = comfy._send_json

            def spy(sid: str | None, event: str, data: dict[str, Any]) -> None:
                if event in ("execution_start", "execution_success"):
                    ran.setdefault(data["prompt_id"], []).append(time.monotonic())
                send(sid, event, data)

            comfy._send_json = spy  # type: ignore[method-assign]
            settings = make_settings(
                Path(tmp),
                comfy.url,
                limits={"max_queued_per_member": size, "max_count": 1},
            )
            # below the 0.2 s a server may set: the whole run is sped up `scale` times
            object.__setattr__(settings.discord, "progress_interval", interval)
            members = [fake.add_member(f"m{i}") for i in range(max(2, size // 10))]
            async with bot_on(fake, settings) as bot:
                comfy.hold_steps()  # everything is queued before the first job moves
                interactions: list[FakeInteraction] = []
                for i in range(size):
                    it = await fake.slash(
                        "imagine",
                        {"prompt": f"job {i}", "steps": steps},
                        user_id=members[i % len(members)],
                    )
                    await it.wait_ack(timeout=30)
                    interactions.append(it)
                baseline_requests = len(fake.requests)
                jobs_by_prompt = {
                    str(job.values["prompt"]): job.id for job in bot.engine.recent(limit=size)
                }
                job_of = [jobs_by_prompt[f"job {i}"] for i in range(size)]
                # samples; off by more than one band; and so for longer than one interval (an
                # edit may wait that long for its turn, Discord allowing a message few edits)
                errors = [0, 0, 0]
                off_since: dict[int, float] = {}
                done = asyncio.Event()

                async def sample() -> None:
                    while not done.is_set():
                        now = time.monotonic()
                        for i, it in enumerate(interactions):
                            message = it.original
                            match = POSITION.search(message.content) if message else None
                            true = bot.engine.position(job_of[i]) if match else None
                            if match is None or not true:
                                off_since.pop(i, None)
                                continue
                            off = abs(band_of(true) - band_of(int(match.group(1)))) > 1
                            errors[0] += 1
                            errors[1] += off
                            if not off:
                                off_since.pop(i, None)
                            elif now - off_since.setdefault(i, now) > interval:
                                errors[2] += 1
                        await asyncio.sleep(max(interval / 2, 0.01 * size / 20))

                sampler = asyncio.create_task(sample())
                start = time.monotonic()
                comfy.release_steps()
                await wait_until(
                    lambda: all(
                        it.original is not None and "ready" in it.original.content
                        for it in interactions
                    ),
                    timeout=size * (gpu_seconds / scale + 1.0) + 60,
                )
                elapsed = time.monotonic() - start
                done.set()
                await sampler
                jobs = {j.id: j for j in bot.engine.recent(limit=size)}
                per_token: dict[str, int] = {}
                for _, path in fake.requests:
                    for it in interactions:
                        if it.token in path:
                            per_token[it.token] = per_token.get(it.token, 0) + 1
                            break
                over, counts, budgets, gpu, waiting_edits = 0, [], [], [], []
                for i, it in enumerate(interactions):
                    job = jobs[job_of[i]]
                    begin, end = ran[str(job.prompt_id)]
                    count = per_token.get(it.token, 0)
                    budget = math.ceil((end - begin) / interval) + 3
                    counts.append(count)
                    budgets.append(budget)
                    gpu.append((end - begin) * scale)
                    over += count > budget
                    edits = it.original.edits if it.original else []
                    waiting_edits.append(sum("Queued" in p.get("content", "") for _, p in edits))
                    if count > budget and over <= 3:
                        print(
                            f"  over: job {i}, {count} requests for a budget of {budget} "
                            f"(T {(end - begin) * scale:.2f} s): {len(edits)} edits, "
                            f"{waiting_edits[-1]} while queued"
                        )
                print(
                    f"queue of {size:>5}, {gpu_seconds:g} s on the GPU per job: "
                    f"{sum(counts) / size:5.2f} requests/job (max {max(counts)}; waiting edits "
                    f"{statistics.mean(waiting_edits):.2f}/job, max {max(waiting_edits)}), "
                    f"budget ceil(T/1.5)+3 median {statistics.median(budgets):.0f} (T on the GPU "
                    f"median {statistics.median(gpu):.1f} s at real speed), {over} job(s) over "
                    f"budget; positions seen off by >1 band in {errors[1]}/{errors[0]} samples, "
                    f"{errors[2]} of them for longer than one interval; "
                    f"{len(fake.requests) - baseline_requests} requests after queueing, "
                    f"{fake.rate_limited_count} 429s, {elapsed:.0f} s"
                )


# 2. the fair queue at 10,000 jobs ----------------------------------------------------------------
def queue_cost(waiting: int, members: int, changes: int = 3000) -> None:
    jobs = [
        Job(f"{i:08x}", "wf", {}, str(i % members), created_at=float(i)) for i in range(waiting)
    ]
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    queue = FairQueue()
    for job in jobs:
        queue.add(job)
    queue.take_band_changes()
    queue_bytes = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    sample = [
        Job(f"x{i:07x}", "wf", {"prompt": "a lighthouse at dusk", "steps": 20}, "1", meta={})
        for i in range(1000)
    ]
    job_bytes = (tracemalloc.get_traced_memory()[0] - before) / len(sample)
    tracemalloc.stop()

    times: dict[str, list[float]] = {"add": [], "cancel": [], "start": []}
    counter = waiting
    ids = [j.id for j in jobs]
    for i in range(changes):
        kind = ("start", "add", "cancel")[i % 3]
        begin = time.perf_counter()
        if kind == "start":
            queue.pop_next({}, lambda j: None)
        elif kind == "add":
            counter += 1
            queue.add(Job(f"{counter:08x}", "wf", {}, str(counter % members), float(counter)))
            ids.append(f"{counter:08x}")
        else:
            victim = ids[(i * 7919) % len(ids)]
            queue.remove(victim)
        queue.take_band_changes()
        times[kind].append(time.perf_counter() - begin)
    parts = ", ".join(
        f"{kind} median {statistics.median(t) * 1e6:.0f} µs / p99 "
        f"{sorted(t)[int(0.99 * len(t))] * 1e6:.0f} µs / max {max(t) * 1e6:.0f} µs"
        for kind, t in times.items()
    )
    slow = sum(t > 1e-3 for ts in times.values() for t in ts)
    print(
        f"fair queue, {waiting} waiting jobs from {members} members: one change (with the band "
        f"changes it causes): {parts}; {slow} of {changes} over 1 ms; memory "
        f"{queue_bytes / waiting:.0f} B per waiting job for the queue (+ {job_bytes:.0f} B for "
        "a Job record)"
    )


# 3. execution_success -> the request with the image ---------------------------------------------
class Forwarder:
    """A bot that only forwards the bytes: submit, wait for success, GET /view, post."""

    def __init__(self, session: aiohttp.ClientSession, url: str) -> None:
        self.session, self.url = session, url
        self.client_id = uuid.uuid4().hex
        self.images: dict[str, list[dict[str, Any]]] = {}
        self.done: dict[str, asyncio.Future[None]] = {}
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        ws = await self.session.ws_connect(f"{self.url}/ws?clientId={self.client_id}")
        self.task = asyncio.create_task(self._read(ws))

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for msg in ws:
            if msg.type is not aiohttp.WSMsgType.TEXT:
                continue
            data = json.loads(msg.data)
            body = data.get("data", {})
            pid = body.get("prompt_id")
            if data["type"] == "executed":
                self.images.setdefault(pid, []).extend(body["output"].get("images", []))
            elif data["type"] == "execution_success" and pid in self.done:
                self.done[pid].set_result(None)

    async def run(self, prompt: dict[str, Any]) -> tuple[str, bytes]:
        pid = uuid.uuid4().hex
        self.done[pid] = asyncio.get_running_loop().create_future()
        body = {"prompt": prompt, "client_id": self.client_id, "prompt_id": pid}
        async with self.session.post(f"{self.url}/prompt", json=body) as response:
            response.raise_for_status()
        await self.done[pid]
        image = next(i for i in self.images[pid] if i["type"] == "output")
        async with self.session.get(f"{self.url}/view", params=image) as response:
            return pid, await response.read()


def photo_like_outputs() -> None:
    """Make the fake's images as hard to compress as photos (~0.6 MB PNG at 512x512)."""
    plain = _comfy_nodes.decode_latent

    def textured(latent: Any, index: int) -> Image.Image:
        picture = plain(latent, index)
        grain = Image.frombytes(
            "RGB", picture.size, random.randbytes(picture.width * picture.height * 3)
        )
        return Image.blend(picture, grain, 0.25)

    _comfy_nodes.decode_latent = textured


async def latency(jobs: int, step_delay: float) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        async with (
            installed_fake() as fake,
            FakeComfyUI(step_delay=step_delay) as comfy,
            aiohttp.ClientSession() as session,
        ):
            success_at: dict[str, float] = {}
            send = comfy._send_json

            def spy(sid: str | None, event: str, data: dict[str, Any]) -> None:
                if event == "execution_success":
                    success_at[data["prompt_id"]] = time.monotonic()
                send(sid, event, data)

            comfy._send_json = spy  # type: ignore[method-assign]
            # when the fake Discord has read the whole request with an image (by URL path, which
            # holds the interaction's token), before it checks and applies it
            received: dict[str, float] = {}
            read_body = fake._read_body

            async def spy_body(request: Any) -> Any:
                payload, uploads = await read_body(request)
                if any(not u.filename.startswith("preview") for u in uploads):
                    received.setdefault(request.path, time.monotonic())
                return payload, uploads

            fake._read_body = spy_body  # type: ignore[method-assign]
            settings = make_settings(Path(tmp), comfy.url, discord={"progress_interval": INTERVAL})
            forwarder = Forwarder(session, comfy.url)
            await forwarder.start()
            forwarded: dict[int, str] = {}

            @app_commands.command(name="forward", description="forward only")
            async def forward(interaction: discord.Interaction, prompt: str) -> None:
                await interaction.response.send_message("⏳")
                workflow = bot.engine.workflows["sd15-txt2img"]
                values = coerce_values(workflow, {"prompt": prompt, "steps": 1, "seed": 1})
                pid, data = await forwarder.run(apply(workflow, values))
                forwarded[interaction.id] = pid
                await interaction.edit_original_response(
                    attachments=[discord.File(io.BytesIO(data), filename="image.png")]
                )

            ours: list[float] = []  # request received
            theirs: list[float] = []
            ours_applied: list[float] = []  # edit applied by the fake Discord
            theirs_applied: list[float] = []
            sizes: list[int] = []
            async with bot_on(fake, settings, forward) as bot:

                def image_edit_at(it: FakeInteraction) -> float | None:
                    message = it.original
                    for at, payload in message.edits if message else []:
                        names = [str(f) for f in payload.get("files", [])]
                        if any(not n.startswith("preview") for n in names):
                            return at
                    return None

                def received_at(it: FakeInteraction) -> float:
                    return next(at for path, at in received.items() if it.token in path)

                for i in range(jobs):
                    it = await fake.slash("imagine", {"prompt": f"ours {i}", "steps": 1})
                    await wait_until(lambda it=it: image_edit_at(it) is not None, 30, 0.005)
                    [job] = [
                        j for j in bot.engine.recent(limit=3) if j.values["prompt"] == f"ours {i}"
                    ]
                    sizes.append(len(it.original.attachments[0].data))  # type: ignore[union-attr]
                    began = success_at[job.prompt_id]  # type: ignore[index]
                    ours.append(received_at(it) - began)
                    ours_applied.append(image_edit_at(it) - began)  # type: ignore[operator]
                    it = await fake.slash("forward", {"prompt": f"forward {i}"})
                    await wait_until(lambda it=it: image_edit_at(it) is not None, 30, 0.005)
                    began = success_at[forwarded[it.id]]
                    theirs.append(received_at(it) - began)
                    theirs_applied.append(image_edit_at(it) - began)  # type: ignore[operator]
            if forwarder.task is not None:
                forwarder.task.cancel()
    print(
        f"execution_success -> request with the image ({statistics.median(sizes) / 1e6:.2f} MB "
        f"PNG, sampler step {step_delay * 1000:.0f} ms), {jobs} jobs each, side by side:"
    )
    for what, bot_times, forward_times in (
        ("request received by Discord", ours, theirs),
        ("edit applied by the fake Discord", ours_applied, theirs_applied),
    ):
        ms = [1000 * statistics.median(x) for x in (bot_times, forward_times)]
        p90 = [1000 * sorted(x)[int(0.9 * (jobs - 1))] for x in (bot_times, forward_times)]
        print(
            f"  {what}: bot median {ms[0]:.1f} ms (p90 {p90[0]:.1f}), forward-only median "
            f"{ms[1]:.1f} ms (p90 {p90[1]:.1f}); difference {ms[0] - ms[1]:+.1f} ms"
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="20,200,2000")
    parser.add_argument(
        "--scale", type=float, default=None, help="speed-up (default: a job takes 0.2 s)"
    )
    parser.add_argument("--gpu-seconds", default="7.5,2", help="seconds on the GPU per job")
    parser.add_argument("--latency-jobs", type=int, default=40)
    parser.add_argument("--latency-step-delay", type=float, default=0.03)
    parser.add_argument("--skip-requests", action="store_true")
    parser.add_argument("--skip-latency", action="store_true")
    args = parser.parse_args()
    queue_cost(10_000, 1_000)
    if not args.skip_latency:
        photo_like_outputs()
        asyncio.run(latency(args.latency_jobs, args.latency_step_delay))
    if not args.skip_requests:
        for gpu_seconds in (float(s) for s in args.gpu_seconds.split(",")):
            for size in (int(s) for s in args.sizes.split(",")):
                scale = args.scale or max(1.0, gpu_seconds / 0.2)
                asyncio.run(requests_per_job(size, scale, gpu_seconds))


if __name__ == "__main__":
    main()
