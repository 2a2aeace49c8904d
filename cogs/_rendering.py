"""What a reply shows: a job's status line, and a result's files and texts ready to post."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import discord

from bot.delivery import FittedFile, fit_file, format_wait, progress_bar
from bot.jobs.model import Job, JobState
from bot.jobs.runner import JobUpdate
from bot.media import Kind
from bot.media.fit import CannotFit
from cogs._common import clip

#: A text output up to this long goes into the message; a longer one is attached as a .txt file.
TEXT_INLINE = 1500


@dataclass
class Prepared:
    """A result ready to post: its files (fitted), the texts it showed, notes for the member."""

    files: list[FittedFile] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def discord_files(self) -> list[discord.File]:
        """New `discord.File`s of the files (a send reads them, so each send needs its own)."""
        return [discord.File(io.BytesIO(f.data), filename=f.filename) for f in self.files]


def with_texts(content: str, texts: list[str]) -> str:
    """The message with the result's text outputs below it, in code blocks, within 2,000."""
    for text in texts:
        block = "\n```\n" + text.replace("```", "ʼʼʼ") + "\n```"
        room = 2000 - len(content)
        if room < 20:
            break
        if len(block) > room:
            block = block[: room - 5] + "…\n```"
        content += block
    return clip(content, 2000)


async def result_files(
    jobs: list[Job], limit: int, in_memory: dict[str, tuple[bytes, ...]] | None = None
) -> Prepared:
    """The files to attach and the texts to show: the bytes the engine handed over, else
    the copies on disk; each file fitted to `limit` as what it is."""
    prepared = Prepared()
    for job in jobs:
        held = (in_memory or {}).get(job.id, ())
        for index, output in enumerate(job.outputs):
            path = Path(output.path)
            if index < len(held):
                data = held[index]
            elif path.is_file():
                data = path.read_bytes()
            else:
                prepared.notes.append(
                    f"{output.media.kind.noun} {output.filename} of job {job.id} is missing on disk"
                )
                continue
            name = f"{job.id}-{output.filename}"
            if output.kind == Kind.TEXT and len(data) <= TEXT_INLINE:
                prepared.texts.append(data.decode("utf-8", "replace"))
                continue
            try:
                fitted = await fit_file(data, name, limit)
            except CannotFit as exc:
                prepared.notes.append(f"{exc}: it is kept as output {index + 1} of job `{job.id}`")
                continue
            if output.kind == Kind.TEXT:
                prepared.notes.append(f"the text is long, so it is attached as {name}")
            elif fitted.note:
                prepared.notes.append(f"{name} was {fitted.note} to fit Discord's upload limit")
            prepared.files.append(fitted)
    return prepared


def status_line(
    job: Job, update: JobUpdate | None, position: int | None, wait: float | None = None
) -> str:
    if job.state is JobState.QUEUED:
        where = f"#{position}" if position else "…"
        eta = f" · starts in {format_wait(wait)}" if wait is not None else ""
        return f"⏳ Queued · position {where}{eta}"
    if job.state is JobState.DONE:
        return "✅ Done"
    if job.state is JobState.FAILED:
        return f"❌ Failed: {job.error}"
    if job.state is JobState.CANCELLED:
        return f"🚫 {job.error or 'Cancelled'}"
    if update is not None and update.kind == "retrying":
        return f"⚠️ {update.note or 'ComfyUI is not reachable right now'}; retrying…"
    if update is None and job.state is JobState.RUNNING:
        return "⚙️ Running"  # followed again after a restart; the next event says more
    if update is None or update.kind in ("submitted", "position", "queued"):
        return "📨 Sent to ComfyUI, waiting to start…"
    parts = ["⚙️ Running"]
    if update.node_title:
        parts.append(f"`{update.node_title}`")
    if update.node_count:
        parts.append(f"node {update.node_index}/{update.node_count}")
    line = " · ".join(parts)
    if update.steps:
        line += f" · step {update.step}/{update.steps}\n{progress_bar(update.step, update.steps)}"
    return line
