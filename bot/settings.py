"""Settings: `config/comfycord.yaml` (optional) plus the environment.

Secrets come only from the environment (`DISCORD_TOKEN`, and header values written as
`${NAME}` in `comfyui.backends[].headers`). `COMFYUI_URL` (one URL, or several separated by commas)
replaces the ComfyUI backends of the file, `COMFYCORD_DATABASE_URL` (a `postgresql://` URL)
its `storage.url`, and `COMFYCORD_SHARD_ID` / `COMFYCORD_SHARD_COUNT` its `discord.shard_id` /
`discord.shard_count`. Every problem is reported with the file and key it concerns, e.g.
`config/comfycord.yaml: limits.max_queued_per_member: Input should be a valid integer`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from bot.errors import ConfigError

DEFAULT_CONFIG = Path("config/comfycord.yaml")
DEFAULT_COMFYUI_URL = "http://127.0.0.1:8188"
_ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,39}$")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _http_url(value: str) -> str:
    if not value.startswith(("http://", "https://")):
        raise ValueError("must start with http:// or https://")
    return value.rstrip("/")


def default_backend_name(url: str) -> str:
    """A backend's name when the settings give none: its host and port."""
    rest = url.split("://", 1)[-1]
    return rest.split("/", 1)[0] or url


class BackendSettings(_Section):
    """One ComfyUI server of the pool."""

    url: str
    name: str | None = None
    max_in_flight: int | None = Field(None, ge=1, le=64)
    headers: dict[str, str] = Field(default_factory=dict, repr=False)

    _check_url = field_validator("url")(_http_url)

    @field_validator("name")
    @classmethod
    def _plain_name(cls, value: str | None) -> str | None:
        if value is not None and not _NAME.match(value):
            raise ValueError("use 1 to 40 letters, digits, '.', '_' or '-'")
        return value

    @property
    def label(self) -> str:
        """The name shown in /queue, logs and `comfycord backends`."""
        return self.name or default_backend_name(self.url)


class ComfySettings(_Section):
    url: str = DEFAULT_COMFYUI_URL
    backends: tuple[BackendSettings, ...] = ()
    max_in_flight: int = Field(1, ge=1, le=64)
    prefetch: int = Field(1, ge=0, le=8)
    failover_grace: float = Field(30.0, ge=0)
    heartbeat: float = Field(15.0, gt=0)
    request_timeout: float = Field(30.0, gt=0)
    submit_retry_seconds: float = Field(60.0, ge=0)
    fetch_retry_seconds: float = Field(30.0, ge=0)
    substitute_missing_models: bool = True

    _check_url = field_validator("url")(_http_url)

    @model_validator(mode="after")
    def _unique_names(self) -> ComfySettings:
        seen: set[str] = set()
        for backend in self.backends:
            if backend.label in seen:
                raise ValueError(f"backends: two backends are called '{backend.label}'")
            seen.add(backend.label)
        return self

    def pool(self) -> tuple[BackendSettings, ...]:
        """The backends to use: `backends`, or the one at `url` when that list is empty."""
        return self.backends or (BackendSettings(url=self.url),)

    def in_flight(self, backend: BackendSettings) -> int:
        """Jobs one backend runs at once (its own `max_in_flight`, else the section's)."""
        return backend.max_in_flight or self.max_in_flight


class DiscordSettings(_Section):
    """How the bot meets Discord.

    `shard_id` and `shard_count` (both or neither) make this process one shard of several: it
    gets the events of the servers with `(server id >> 22) % shard_count == shard_id` only, so
    several `comfycord run` processes can share the servers (and one database) between them.
    """

    dev_guild: int | None = None
    owner_ids: tuple[int, ...] = ()
    progress_interval: float = Field(1.5, ge=0.2)
    sync_on_start: bool = False
    shard_count: int | None = Field(None, ge=1)
    shard_id: int | None = Field(None, ge=0, validate_default=True)

    @field_validator("shard_id")
    @classmethod
    def _one_shard_of_all(cls, value: int | None, info: ValidationInfo) -> int | None:
        if "shard_count" not in info.data:  # shard_count is wrong itself, and says so
            return value
        count = info.data["shard_count"]
        if value is None and count is not None:
            raise ValueError(f"set it too when shard_count is set (0 to {count - 1})")
        if value is not None and count is None:
            raise ValueError("set shard_count too (how many shards there are in all)")
        if value is not None and count is not None and value >= count:
            raise ValueError(f"must be less than shard_count ({count}); shards count from 0")
        return value


#: How the URL of a PostgreSQL database starts (`storage.url`).
POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def _postgres_url(value: str | None) -> str | None:
    if value is not None and not value.startswith(POSTGRES_SCHEMES):
        raise ValueError("must start with postgresql:// (unset it to use the SQLite file)")
    return value


class StorageSettings(_Section):
    """Where jobs, settings and the audit log live, and where results are written.

    `url` (a `postgresql://` URL; `COMFYCORD_DATABASE_URL` replaces the file's) puts the store on
    PostgreSQL; without it the store is the SQLite file at `path`. The URL may hold a password: it
    is left out of the settings' repr and never logged.
    """

    path: Path = Path("data/comfycord.sqlite3")
    url: str | None = Field(None, repr=False)
    outputs: Path = Path("data/outputs")

    _check_url = field_validator("url")(_postgres_url)


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


class HttpSettings(_Section):
    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    public_url: str | None = None
    max_body_bytes: int = Field(32 * 1024 * 1024, ge=1024)
    max_image_bytes: int = Field(25 * 1024 * 1024, ge=1024)
    image_urls: bool = True
    allow_private_urls: bool = False
    url_timeout: float = Field(20.0, gt=0)
    webhook_attempts: int = Field(5, ge=1, le=20)
    webhook_backoff: float = Field(2.0, ge=0)

    @field_validator("public_url")
    @classmethod
    def _public_http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/") if value else value


class Settings(_Section):
    comfyui: ComfySettings = ComfySettings()
    discord: DiscordSettings = DiscordSettings()
    storage: StorageSettings = StorageSettings()
    workflows: WorkflowSettings = WorkflowSettings()
    limits: LimitSettings = LimitSettings()
    http: HttpSettings = HttpSettings()
    log_level: str = "INFO"
    discord_token: str | None = Field(None, exclude=True, repr=False)


def _format_errors(source: str, exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        key = ".".join(str(part) for part in err["loc"]) or "(top level)"
        lines.append(f"{source}: {key}: {err['msg']}")
    return "\n".join(lines)


def _expand_headers(path: Path, backends: list[Any], env: Mapping[str, str]) -> list[Any]:
    """Replace `${NAME}` in header values with the environment variable NAME."""
    expanded = []
    for index, backend in enumerate(backends):
        headers = backend.get("headers") if isinstance(backend, dict) else None
        if not isinstance(headers, dict):
            expanded.append(backend)
            continue
        values = {}
        for key, value in headers.items():
            if isinstance(value, str):
                for name in _ENV_REFERENCE.findall(value):
                    if name not in env:
                        raise ConfigError(
                            f"{path}: comfyui.backends.{index}.headers.{key}: "
                            f"the environment variable {name} is not set"
                        )
                value = _ENV_REFERENCE.sub(lambda m: env[m.group(1)], value)
            values[key] = value
        expanded.append({**backend, "headers": values})
    return expanded


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
    comfy = data.get("comfyui")
    if url := env.get("COMFYUI_URL"):
        urls = [u.strip() for u in url.split(",") if u.strip()]
        comfy = dict(comfy) if isinstance(comfy, dict) else {}
        comfy.pop("backends", None)
        if len(urls) == 1:
            comfy["url"] = urls[0]
        else:
            comfy["backends"] = [{"url": u} for u in urls]
        data["comfyui"] = comfy
    elif isinstance(comfy, dict) and isinstance(comfy.get("backends"), list):
        data["comfyui"] = {**comfy, "backends": _expand_headers(path, comfy["backends"], env)}
    if database_url := env.get("COMFYCORD_DATABASE_URL"):
        storage = data.get("storage")
        data["storage"] = {**(storage if isinstance(storage, dict) else {}), "url": database_url}
    shards = {
        key: value
        for key, name in (
            ("shard_id", "COMFYCORD_SHARD_ID"),
            ("shard_count", "COMFYCORD_SHARD_COUNT"),
        )
        if (value := env.get(name))
    }
    if shards:
        discord = data.get("discord")
        data["discord"] = {**(discord if isinstance(discord, dict) else {}), **shards}
    token = env.get("DISCORD_TOKEN") or None
    try:
        settings = Settings.model_validate({**data, "discord_token": token})
    except ValidationError as exc:
        raise ConfigError(_format_errors(str(path), exc)) from None
    return settings
