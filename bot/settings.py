"""Settings: `config/comfycord.yaml` (optional) plus the environment.

Secrets come only from the environment (`DISCORD_TOKEN`); `COMFYUI_URL` overrides the backend URL.
Every problem is reported with the file and key it concerns, e.g.
`config/comfycord.yaml: limits.max_queued_per_member: Input should be a valid integer`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from bot.errors import ConfigError

DEFAULT_CONFIG = Path("config/comfycord.yaml")
DEFAULT_COMFYUI_URL = "http://127.0.0.1:8188"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ComfySettings(_Section):
    url: str = DEFAULT_COMFYUI_URL
    max_in_flight: int = Field(1, ge=1, le=64)
    heartbeat: float = Field(15.0, gt=0)
    request_timeout: float = Field(30.0, gt=0)
    submit_retry_seconds: float = Field(60.0, ge=0)
    substitute_missing_models: bool = True

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")


class DiscordSettings(_Section):
    dev_guild: int | None = None
    owner_ids: tuple[int, ...] = ()
    progress_interval: float = Field(1.5, ge=0.2)
    sync_on_start: bool = False


class StorageSettings(_Section):
    path: Path = Path("data/comfycord.sqlite3")
    outputs: Path = Path("data/outputs")


class WorkflowSettings(_Section):
    dir: Path = Path("workflows")
    default: str = "sd15-txt2img"


class LimitSettings(_Section):
    max_queued_per_member: int = Field(5, ge=1)
    max_running_per_member: int = Field(1, ge=1)
    cooldown_seconds: float = Field(0.0, ge=0)
    max_count: int = Field(4, ge=1, le=10)
    moderators_exempt: bool = True
    moderators_first: bool = False


class Settings(_Section):
    comfyui: ComfySettings = ComfySettings()
    discord: DiscordSettings = DiscordSettings()
    storage: StorageSettings = StorageSettings()
    workflows: WorkflowSettings = WorkflowSettings()
    limits: LimitSettings = LimitSettings()
    log_level: str = "INFO"
    discord_token: str | None = Field(None, exclude=True, repr=False)


def _format_errors(source: str, exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        key = ".".join(str(part) for part in err["loc"]) or "(top level)"
        lines.append(f"{source}: {key}: {err['msg']}")
    return "\n".join(lines)


def load_settings(path: Path | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Read the YAML settings file (if any) and the environment.

    Args:
        path: the YAML file; `config/comfycord.yaml` when None (missing is fine then).
        env: the environment to read (defaults to `os.environ`).

    Raises:
        ConfigError: the file is unreadable, not YAML, or a key is wrong (names file and key).
    """
    env = os.environ if env is None else env
    explicit = path is not None
    path = path or Path(env.get("COMFYCORD_CONFIG", DEFAULT_CONFIG))
    data: dict[str, Any] = {}
    if path.exists():
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"{path}: cannot read settings: {exc}") from exc
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of keys")
        data = dict(loaded or {})
    elif explicit:
        raise ConfigError(f"{path}: settings file not found")
    if url := env.get("COMFYUI_URL"):
        data.setdefault("comfyui", {})
        if isinstance(data["comfyui"], dict):
            data["comfyui"] = {**data["comfyui"], "url": url}
    token = env.get("DISCORD_TOKEN") or None
    try:
        settings = Settings.model_validate({**data, "discord_token": token})
    except ValidationError as exc:
        raise ConfigError(_format_errors(str(path), exc)) from None
    return settings
