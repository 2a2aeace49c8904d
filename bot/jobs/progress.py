"""What listeners hear about a job while it runs: `JobUpdate`, the message every way out (Discord,
the HTTP API, the CLI) receives, and `Progress`, which turns one run's ComfyUI events into
"node k of n, step x of y" and live previews. The runner emits them; delivery coalesces them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bot.comfy.events import Event, Executing, ExecutionCached, Preview, Progress
from bot.jobs.model import Job


@dataclass(frozen=True)
class JobUpdate:
    """Something happened to a job: what listeners (Discord, the CLI) are told.

    kind is one of: queued, position, submitted, retrying (ComfyUI unreachable; `note` says
    what is retried, in plain words), started, progress, preview, result, finished.

    `result` comes just before `finished` when a run succeeded: the job as it will be saved
    (done, with its outputs) and the images' bytes, while they are still being written to disk;
    a listener that only needs the bytes (a Discord reply) can send them at once. `finished`
    follows once the files and the record are on disk (see `Runner.saved`).
    """

    job: Job
    kind: str
    position: int | None = None
    node_index: int = 0
    node_count: int = 0
    node_title: str | None = None
    step: int = 0
    steps: int = 0
    preview: bytes | None = None
    preview_mime: str | None = None
    note: str | None = None
    images: tuple[bytes, ...] = ()  # result, finished: the outputs' bytes (`job.outputs`)


Emit = Callable[[JobUpdate], None]


class RunProgress:
    """Turns ComfyUI events into "node k of n, step x of y" for one run."""

    def __init__(self, prompt: dict[str, Any]) -> None:
        self.prompt = prompt
        self.node_count = len(prompt)
        self.node_index = 0
        self.node_title: str | None = None
        self.step = 0
        self.steps = 0

    def feed(self, event: Event) -> Preview | str | None:
        if isinstance(event, ExecutionCached):
            self.node_count = max(0, self.node_count - len(event.nodes))
            return None
        if isinstance(event, Executing) and event.node is not None:
            self.node_index += 1
            self.node_count = max(self.node_count, self.node_index)
            self.node_title = node_label(self.prompt, event.node, None)
            self.step = self.steps = 0
            return "progress"
        if isinstance(event, Progress):
            self.step, self.steps = int(event.value), int(event.max)
            return "progress"
        if isinstance(event, Preview):
            return event
        return None

    def update(self, job: Job, what: Preview | str) -> JobUpdate:
        common: dict[str, Any] = {
            "node_index": self.node_index,
            "node_count": self.node_count,
            "node_title": self.node_title,
            "step": self.step,
            "steps": self.steps,
        }
        if isinstance(what, Preview):
            return JobUpdate(job, "preview", preview=what.data, preview_mime=what.mime, **common)
        return JobUpdate(job, "progress", **common)


def node_label(prompt: dict[str, Any], node_id: str | None, err: Any) -> str:
    node = prompt.get(node_id or "", {}) if node_id else {}
    title = node.get("_meta", {}).get("title") or node.get("class_type")
    if not title and err is not None:
        title = getattr(err, "node_type", None)
    title = title or "a node"
    return f"{title} (#{node_id})" if node_id else str(title)
