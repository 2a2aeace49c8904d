"""Bodies of the admin operations: workflows (adding, previewing, removing, exporting) and the
operations view (backends, queue, the last hour)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class OptionInfo(BaseModel):
    """One option an imported workflow will offer, and what it sets."""

    model_config = ConfigDict(frozen=True)

    name: str
    type: str = Field(description="text, int, float, seed, bool, choice, enum, image...")
    required: bool
    sets: list[str] = Field(description='Each `node.input` it writes: `6 "Positive".text`')
    default: Any = None
    range: str = Field(description="The accepted values in words, or empty")


class WorkflowPreview(BaseModel):
    """An uploaded workflow, read and checked against ComfyUI, as it would be saved.

    Besides the fields listed, every list the preview has (what was repaired, advice on what
    the server lacks...) is given under its own name, as text.
    """

    model_config = ConfigDict(frozen=True, extra="allow")

    name: str = Field(description="The name it is (or would be) saved under")
    title: str
    checked: bool = Field(description="It was checked against ComfyUI's node list")
    can_save: bool = Field(description="No problem stops it from running")
    options: list[OptionInfo]
    problems: list[str] = Field(description="What ComfyUI lacks or would refuse")
    blocking: list[str] = Field(description="The problems that stop it from being saved")
    notes: list[str] = Field(default_factory=list)
    missing_classes: list[str] = Field(default_factory=list, description="Node classes missing")
    repairs: list[str] = Field(default_factory=list, description="What was changed in the graph")


class PackFile(BaseModel):
    """One file of a workflow's pack."""

    model_config = ConfigDict(frozen=True)

    name: str
    content_type: str
    content: str = Field(description="The file's text")


class PackFiles(BaseModel):
    """A workflow's pack: its graph (API format) and its YAML."""

    model_config = ConfigDict(frozen=True)

    workflow: str
    files: list[PackFile]


class BackendInfo(BaseModel):
    """One ComfyUI backend as it stands."""

    model_config = ConfigDict(frozen=True)

    name: str
    url: str
    state: str = Field(description="busy, idle or down")
    version: str = Field(description="ComfyUI's version, '?' until read")
    device: str = Field(description="Its first device, '?' until read")
    vram_total: int = Field(description="Bytes of VRAM (0 until read)")
    vram_free: int = Field(description="Bytes of VRAM free when last read")
    running: int = Field(description="Jobs handed to it")
    jobs_done: int
    busy_seconds: float = Field(description="Seconds it ran at least one job, since start")
    busy_share: float | None = Field(
        description="Share of the last sampled interval it was busy (0 to 1)"
    )
    last_error: str | None = None


class QueueItem(BaseModel):
    """A job that runs (position 0) or waits (1, 2...)."""

    model_config = ConfigDict(frozen=True)

    job_id: str
    workflow: str
    state: str
    position: int
    owner: str = Field(description="The key or Discord member it is for")
    created_at: float


class StatsSample(BaseModel):
    """The engine at one moment, over the interval that ended then."""

    model_config = ConfigDict(frozen=True)

    at: float = Field(description="Unix seconds")
    busy: dict[str, float] = Field(description="Backend -> share of the interval it was busy")
    queued: int = Field(description="Jobs waiting")
    running: int = Field(description="Jobs handed to a backend")
    jobs_done: int = Field(description="Jobs done during the interval")
    job_seconds: float | None = Field(description="Their mean seconds on ComfyUI")


class Stats(BaseModel):
    """Backends, the queue and the samples of the last hour."""

    model_config = ConfigDict(frozen=True)

    interval: float = Field(description="Seconds between two samples")
    span: float = Field(description="Seconds of samples kept")
    backends: list[BackendInfo]
    queue: list[QueueItem]
    samples: list[StatsSample] = Field(description="Oldest first")


ADMIN_MODELS: tuple[type[BaseModel], ...] = (
    OptionInfo,
    WorkflowPreview,
    PackFile,
    PackFiles,
    BackendInfo,
    QueueItem,
    StatsSample,
    Stats,
)
