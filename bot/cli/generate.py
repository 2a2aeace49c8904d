"""`comfycord generate`: one workflow run through the engine from the terminal, with a progress
bar per job, its results copied to --out."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import aiohttp
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from bot.errors import UserError
from bot.jobs.model import JobState
from bot.jobs.runner import JobUpdate
from bot.jobs.store import Store
from bot.lifecycle import SHUTDOWN_SECONDS, stop_requested
from bot.settings import Settings


# generate ------------------------------------------------------------------------------------
def parse_assignments(items: Sequence[str], what: str) -> dict[str, str]:
    values = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise UserError(f"{what} '{item}' must look like NAME=VALUE")
        values[name.strip()] = value
    return values


async def generate(settings: Settings, args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Run one job through the engine with a live progress bar; write its images to --out."""
    out = out or sys.stderr
    from bot.admission import Admission, Requester, image_offer
    from bot.engine import Engine, ImageInput
    from bot.policy import Policy

    values: dict[str, Any] = parse_assignments(args.set, "--set")
    if args.prompt is not None:
        values["prompt"] = args.prompt
    images = {}
    for name, file in parse_assignments(args.files, "--file").items():
        path = Path(file)
        if not path.is_file():
            raise UserError(f"--file {name}: no such file: {file}")
        images[name] = ImageInput(path.name, path.read_bytes())

    # log lines go through tqdm, above the bars instead of through them
    with tempfile.TemporaryDirectory(prefix="comfycord-") as tmp, logging_redirect_tqdm():
        # a person at a terminal waits 10 s at most for an unreachable ComfyUI, not a minute
        retry = min(settings.comfyui.submit_retry_seconds, 10.0)
        cli_settings = settings.model_copy(
            update={
                "storage": replace_storage(settings, Path(tmp)),
                "comfyui": settings.comfyui.model_copy(update={"submit_retry_seconds": retry}),
            }
        )
        store = Store(":memory:")
        async with aiohttp.ClientSession() as session:
            engine = Engine(session, cli_settings, store=store)
            bar = ProgressBar(out)
            done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            ids: set[str] = set()
            finished: dict[str, Any] = {}
            interrupted = False

            def on_update(update: JobUpdate) -> None:
                if update.job.id not in ids:
                    return
                bar.show(update)
                if update.kind == "finished":
                    finished[update.job.id] = update.job
                    if len(finished) == len(ids) and not done.done():
                        done.set_result(None)

            engine.listen(on_update)
            await engine.start()
            try:
                admission = Admission(engine, Policy(store, cli_settings, lambda: engine.workflows))
                # the owner at the terminal: a moderator, exempt from the queue limits
                admitted = admission.admit(
                    Requester("cli", "cli", moderator=True),
                    args.workflow,
                    values,
                    images={k: image_offer(v) for k, v in images.items()},
                    count=args.count,
                )
                with stop_requested() as stop:
                    jobs = await admission.submit(admitted, images)
                    ids.update(j.id for j in jobs)
                    stopping = asyncio.ensure_future(stop.wait())
                    waiters: set[asyncio.Future[Any]] = {done, stopping}
                    await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
                    stopping.cancel()
                    if not done.done():
                        # nothing would collect these jobs later: don't leave them on the GPU
                        interrupted = True
                        with contextlib.suppress(UserError, TimeoutError):
                            async with asyncio.timeout(SHUTDOWN_SECONDS / 2):
                                for job_id in sorted(ids):
                                    await engine.cancel(job_id, by="a stop signal")
                        print(
                            f"interrupted: cancelled job(s) {', '.join(sorted(ids))}",
                            file=sys.stderr,
                        )
            finally:
                bar.close()
                await engine.stop()
                store.close()
        if interrupted:
            return 130
        args.out.mkdir(parents=True, exist_ok=True)
        status = 0
        for job in finished.values():
            if job.state is not JobState.DONE:
                print(f"job {job.id} {job.state.value}: {job.error}", file=sys.stderr)
                status = 1
                continue
            for note in job.meta.get("notes", []):
                print(f"note: {note}", file=sys.stderr)
            for output in job.outputs:
                target = args.out / f"{job.workflow}-{job.id}-{output.filename}"
                shutil.copyfile(output.path, target)
                print(target)
        return status


def replace_storage(settings: Settings, folder: Path) -> Any:
    return settings.storage.model_copy(update={"outputs": folder / "outputs"})


class ProgressBar:
    """A tqdm bar per job for its sampler steps; other states are written above the bars.

    Log lines go through tqdm as well (see `generate`), so they never cut a bar in half.
    """

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.bars: dict[str, tqdm[Any]] = {}
        self.node: dict[str, str] = {}

    def _bar(self, job_id: str) -> tqdm[Any]:
        existing = self.bars.get(job_id)
        if existing is not None:
            return existing
        bar: tqdm[Any] = tqdm(
            total=1,
            desc=f"[{job_id}]",
            file=self.out,
            position=len(self.bars),
            leave=True,
            bar_format="{desc} |{bar:24}| step {n}/{total} {postfix}",
        )
        self.bars[job_id] = bar
        return bar

    def show(self, update: JobUpdate) -> None:
        job = update.job
        if update.kind == "preview":
            return  # a terminal shows no pictures
        if update.kind == "progress":
            node = f"node {update.node_index}/{update.node_count}"
            if update.node_title:
                node += f" {update.node_title}"
            if not update.steps:
                if self.node.get(job.id) != node:
                    self.node[job.id] = node
                    self.write(f"[{job.id}] {node}")
                return
            bar = self._bar(job.id)
            if bar.total != update.steps or update.step < bar.n:
                bar.reset(total=update.steps)  # the next sampler of the graph
            bar.set_postfix_str(f"· {node}", refresh=False)
            bar.update(update.step - bar.n)
            return
        if update.kind in ("queued", "position"):
            self.write(f"[{job.id}] queued (position {update.position})")
        elif update.kind == "finished":
            shown = self.bars.get(job.id)
            if shown is not None:
                shown.refresh()
            self.write(f"[{job.id}] {job.state.value}" + (f": {job.error}" if job.error else ""))
        elif update.kind == "retrying":
            self.write(f"[{job.id}] ComfyUI is not reachable; retrying")

    def write(self, line: str) -> None:
        tqdm.write(line, file=self.out)

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()
