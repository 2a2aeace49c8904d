"""The job record and its states.

    queued ──> submitted ──> running ──> done
       │            │           ├──────> failed
       └────────────┴───────────┴──────> cancelled

A job is written to the store before it is queued and after every state change.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

from bot.media import Kind, MediaType, mime_of


class JobState(StrEnum):
    QUEUED = "queued"
    SUBMITTED = "submitted"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (JobState.DONE, JobState.FAILED, JobState.CANCELLED)

    @property
    def active(self) -> bool:
        return not self.finished


@dataclass(frozen=True)
class Output:
    """One file a job produced, kept on local disk; `kind` and `mime` come from its bytes
    (`bot.media.sniff`), and its name's extension matches them."""

    path: str
    filename: str
    node: str
    width: int = 0
    height: int = 0
    kind: str = "image"  # a `bot.media.Kind` value
    mime: str = "image/png"

    @property
    def media(self) -> MediaType:
        return MediaType(Kind(self.kind), self.mime, Path(self.filename).suffix.lstrip("."))


def new_job_id() -> str:
    return secrets.token_hex(4)


@dataclass(frozen=True)
class Job:
    """A request to run one workflow with given values, and everything that happened to it."""

    id: str
    workflow: str
    values: dict[str, Any]
    owner_id: str
    owner_name: str = ""
    guild_id: str | None = None
    channel_id: str | None = None
    state: JobState = JobState.QUEUED
    priority: int = 0
    created_at: float = field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    prompt_id: str | None = None
    attempts: int = 0
    outputs: tuple[Output, ...] = ()
    error: str | None = None
    group_id: str | None = None
    remix_of: str | None = None
    delivered: bool = False
    backend: str | None = None  # the ComfyUI backend (by name) its prompt was sent to
    meta: dict[str, Any] = field(default_factory=dict)

    def evolve(self, **changes: Any) -> Job:
        return replace(self, **changes)

    @property
    def elapsed(self) -> float | None:
        if self.started_at is None:
            return None
        end = self.finished_at if self.finished_at is not None else time.time()
        return max(0.0, end - self.started_at)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "workflow": self.workflow,
            "values": self.values,
            "owner_id": self.owner_id,
            "owner_name": self.owner_name,
            "guild_id": self.guild_id,
            "channel_id": self.channel_id,
            "state": self.state.value,
            "priority": self.priority,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "prompt_id": self.prompt_id,
            "attempts": self.attempts,
            "outputs": [o.__dict__ for o in self.outputs],
            "error": self.error,
            "group_id": self.group_id,
            "remix_of": self.remix_of,
            "delivered": self.delivered,
            "backend": self.backend,
            "meta": self.meta,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Job:
        data = dict(data)
        data["state"] = JobState(data["state"])
        data["outputs"] = tuple(_output(o) for o in data.get("outputs", ()))
        return cls(**data)


def _output(record: dict[str, Any]) -> Output:
    """An output from its stored record (records from before kinds were kept are images)."""
    if "mime" not in record:
        record = {**record, "mime": mime_of(str(record.get("filename", "")))}
    return Output(**record)
