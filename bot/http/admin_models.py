"""Bodies of the admin operations on workflows (adding, previewing, removing, exporting)."""

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


ADMIN_MODELS: tuple[type[BaseModel], ...] = (OptionInfo, WorkflowPreview, PackFile, PackFiles)
