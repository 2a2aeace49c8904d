"""An in-process fake Discord (REST v10 + gateway) for end-to-end tests of real discord.py.

The unmodified discord.py client logs in, syncs its command tree, receives INTERACTION_CREATE
(slash commands, autocomplete, buttons, selects) and answers through interaction callbacks,
interaction webhooks and channel messages, all against an aiohttp server on 127.0.0.1. The fake
stores every message (content, embeds, components, attachments with their bytes, edit history)
and answers like Discord does when a platform limit is broken, so the limits become tests::

    fake = FakeDiscord(token_lifetime=2.0)
    await fake.start()
    fake.install()                      # points discord.py's Route.BASE and gateway at the fake
    bot = commands.Bot(command_prefix="!", intents=discord.Intents.default(),
                       guild_ready_timeout=0.1)
    await bot.login(fake.bot_token)
    task = asyncio.create_task(bot.connect())
    ...
    it = await fake.slash("imagine", {"prompt": "a lighthouse"})
    msg = await it.wait_original(lambda m: m.attachments)
    assert it.acknowledged_at < 1 and fake.rate_limited_count == 0
    ...
    await bot.close(); fake.uninstall(); await fake.stop()

Errors returned (HTTP status / Discord code), each recorded in ``fake.errors``:

- first interaction response later than ``ack_timeout`` (3 s): 404 / 10062 Unknown interaction
- interaction token older than ``token_lifetime`` (15 min): 401 / 50027 Invalid Webhook Token
- a second initial response: 400 / 40060; follow-ups or @original before it: 404 / 10015
- file above ``attachment_size_limit`` (interactions and channel messages): 413 / 40005
- more than 10 attachments on a message: 400 / 30015
- content > 2000; > 10 embeds, title > 256, description > 4096, > 25 fields, > 6000 in all;
  > 5 action rows, > 5 buttons a row, custom_id > 100 or repeated, label > 80;
  autocomplete answers > 25 choices; command names/descriptions/options/choices out of range:
  400 / 50035 Invalid Form Body (with Discord's nested ``errors`` object)
- a channel message whose ``nonce`` is longer than 25 characters: 400 / 50035; with
  ``enforce_nonce`` the same nonce from the same author within ``nonce_window`` (a few minutes,
  as Discord says) returns the message already created instead of posting again
- empty message: 400 / 50006; editing another user's message: 403 / 50005;
  bot missing channel permissions: 403 / 50013; unknown ids: 404 / 10003, 10008, 10015, 10063...
- rate limits: per-route buckets (see ``DEFAULT_RATE_LIMITS``) and a global 50/s for bot-token
  requests answer 429 with ``retry_after``, ``Retry-After``, ``X-RateLimit-*`` and ``Via``; every
  response carries ``X-RateLimit-Limit/Remaining/Reset/Reset-After/Bucket`` so discord.py's own
  limiter can avoid 429s. ``fake.rate_limited_count`` counts the 429s served.

Sharding: ``add_guild(shard=(1, 2))`` adds a server whose id falls on that shard
(``(guild_id >> 22) % shard_count``). A gateway session that IDENTIFYs with ``shard: [id, count]``
is told of, and sent the events of, only its shard's servers (events outside a server go to
shard 0); a session without ``shard`` gets everything. ``GET /gateway/bot`` answers
``shards = fake.recommended_shards``.

Helpers that play the user (``slash``, ``autocomplete``, ``click``, ``select``) raise
``FakeDiscordError`` for things the Discord client would never send (unknown option, value not in
the choices, a command the member cannot see, a button that is not on the message).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import fnmatch
import hashlib
import io
import json
import math
import mimetypes
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import discord.gateway
import discord.http
import yarl
from aiohttp import BodyPartReader, WSMsgType, web

__all__ = [
    "DEFAULT_RATE_LIMITS",
    "ApiErrorRecord",
    "CommandUnavailable",
    "FakeAttachment",
    "FakeDiscord",
    "FakeDiscordError",
    "FakeGuild",
    "FakeInteraction",
    "FakeMessage",
    "InteractionTimeout",
]

API_PREFIX = "/api/v10"
DISCORD_EPOCH_MS = 1_420_070_400_000
MIB = 1024 * 1024

# Interaction types and callback types.
APPLICATION_COMMAND, MESSAGE_COMPONENT, AUTOCOMPLETE, MODAL_SUBMIT = 2, 3, 4, 5
CHANNEL_MESSAGE, DEFERRED_CHANNEL_MESSAGE, DEFERRED_UPDATE_MESSAGE, UPDATE_MESSAGE = 4, 5, 6, 7
AUTOCOMPLETE_RESULT, MODAL = 8, 9
_VALID_CALLBACKS = {
    APPLICATION_COMMAND: {CHANNEL_MESSAGE, DEFERRED_CHANNEL_MESSAGE, MODAL},
    MESSAGE_COMPONENT: {
        CHANNEL_MESSAGE,
        DEFERRED_CHANNEL_MESSAGE,
        DEFERRED_UPDATE_MESSAGE,
        UPDATE_MESSAGE,
        MODAL,
    },
    AUTOCOMPLETE: {AUTOCOMPLETE_RESULT},
    MODAL_SUBMIT: {
        CHANNEL_MESSAGE,
        DEFERRED_CHANNEL_MESSAGE,
        DEFERRED_UPDATE_MESSAGE,
        UPDATE_MESSAGE,
    },
}

# Message flags.
FLAG_SUPPRESS_EMBEDS = 1 << 2
FLAG_EPHEMERAL = 1 << 6
FLAG_LOADING = 1 << 7
FLAG_SUPPRESS_NOTIFICATIONS = 1 << 12
FLAG_COMPONENTS_V2 = 1 << 15
_CREATE_FLAGS = FLAG_SUPPRESS_EMBEDS | FLAG_SUPPRESS_NOTIFICATIONS | FLAG_COMPONENTS_V2

# Permission bits.
PERM_ADMINISTRATOR = 1 << 3
PERM_MANAGE_GUILD = 1 << 5
PERM_ADD_REACTIONS = 1 << 6
PERM_VIEW_CHANNEL = 1 << 10
PERM_SEND_MESSAGES = 1 << 11
PERM_MANAGE_MESSAGES = 1 << 13
PERM_EMBED_LINKS = 1 << 14
PERM_ATTACH_FILES = 1 << 15
PERM_READ_MESSAGE_HISTORY = 1 << 16
PERM_USE_EXTERNAL_EMOJIS = 1 << 18
PERM_USE_APPLICATION_COMMANDS = 1 << 31
PERM_CREATE_PUBLIC_THREADS = 1 << 35
PERM_CREATE_PRIVATE_THREADS = 1 << 36
PERM_SEND_MESSAGES_IN_THREADS = 1 << 38
PERM_ALL = (1 << 51) - 1
PERM_EVERYONE_DEFAULT = (
    PERM_VIEW_CHANNEL
    | PERM_SEND_MESSAGES
    | PERM_EMBED_LINKS
    | PERM_ATTACH_FILES
    | PERM_READ_MESSAGE_HISTORY
    | PERM_ADD_REACTIONS
    | PERM_USE_EXTERNAL_EMOJIS
    | PERM_USE_APPLICATION_COMMANDS
    | PERM_CREATE_PUBLIC_THREADS
    | PERM_CREATE_PRIVATE_THREADS
    | PERM_SEND_MESSAGES_IN_THREADS
)
THREAD_TYPES = (10, 11, 12)

# Application command option types.
OPT_SUB_COMMAND, OPT_SUB_COMMAND_GROUP, OPT_STRING, OPT_INTEGER, OPT_BOOLEAN = 1, 2, 3, 4, 5
OPT_USER, OPT_CHANNEL, OPT_ROLE, OPT_MENTIONABLE, OPT_NUMBER, OPT_ATTACHMENT = 6, 7, 8, 9, 10, 11
# How sub-commands and their groups nest: the deepest each may be, what Discord says past that,
# which option types it may not hold, and what Discord says of those.
_NESTING: dict[int, tuple[int, str, Callable[[object], bool], str]] = {
    OPT_SUB_COMMAND_GROUP: (
        0,
        "Sub-command groups can not be nested",
        lambda kind: kind != OPT_SUB_COMMAND,
        "Sub-command groups can only contain sub-commands",
    ),
    OPT_SUB_COMMAND: (
        1,
        "Sub-commands nested too deep",
        lambda kind: kind in (OPT_SUB_COMMAND, OPT_SUB_COMMAND_GROUP),
        "Sub-commands can not contain sub-commands",
    ),
}

_COMPONENT_ACTION_ROW, _COMPONENT_BUTTON = 1, 2
_COMPONENT_SELECTS = {3, 5, 6, 7, 8}
_BUTTON_LINK = 5
_BUTTON_PREMIUM = 6

_CHAT_INPUT_NAME = re.compile(r"^[-_\w]{1,32}$")

#: Per-route buckets as ``name: (requests, per_seconds)``; ``global`` applies to every request made
#: with the bot token. Override any of them with ``FakeDiscord(rate_limits={...})``.
DEFAULT_RATE_LIMITS: dict[str, tuple[int, float]] = {
    "global": (50, 1.0),
    "channel_message_create": (5, 5.0),
    "channel_message_edit": (5, 5.0),
    "channel_message_delete": (5, 1.0),
    "webhook_execute": (5, 2.0),
    "webhook_message_edit": (5, 2.0),
    "interaction_callback": (20, 1.0),
    "application_commands": (10, 10.0),
    "default": (50, 1.0),
}

#: Route (method and path template under /api/v10) -> named bucket. Other routes get a bucket
#: of their own with the ``default`` rule.
ROUTE_BUCKETS: dict[str, str] = {
    "POST /channels/{channel_id}/messages": "channel_message_create",
    "PATCH /channels/{channel_id}/messages/{message_id}": "channel_message_edit",
    "DELETE /channels/{channel_id}/messages/{message_id}": "channel_message_delete",
    "POST /webhooks/{application_id}/{token}": "webhook_execute",
    "PATCH /webhooks/{application_id}/{token}/messages/{message_id}": "webhook_message_edit",
    "POST /interactions/{interaction_id}/{token}/callback": "interaction_callback",
    "PUT /applications/{application_id}/commands": "application_commands",
    "PUT /applications/{application_id}/guilds/{guild_id}/commands": "application_commands",
}


class FakeDiscordError(Exception):
    """A test drove the fake in a way the Discord client never would, or a wait timed out."""


class CommandUnavailable(FakeDiscordError):
    """The member could not see or use this command (permissions, NSFW channel, contexts)."""


class InteractionTimeout(FakeDiscordError, TimeoutError):
    """The bot did not answer an interaction in time (e.g. autocomplete within 3 s)."""


class _ApiError(Exception):
    def __init__(
        self,
        status: int,
        code: int,
        message: str,
        *,
        errors: dict[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        body: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.errors = errors
        self.headers = dict(headers or {})
        self.body = body

    def payload(self) -> dict[str, Any]:
        if self.body is not None:
            return self.body
        data: dict[str, Any] = {"message": self.message, "code": self.code}
        if self.errors:
            data["errors"] = self.errors
        return data


def _not_found(code: int, what: str) -> _ApiError:
    return _ApiError(404, code, f"Unknown {what}")


@dataclass(frozen=True)
class ApiErrorRecord:
    """A 4xx answer the fake gave: ``status``, Discord ``code``, ``route`` (``"PATCH /webhooks/
    {application_id}/{token}/messages/{message_id}"``), the concrete ``path`` and ``message``."""

    status: int
    code: int
    route: str
    path: str
    message: str
    errors: dict[str, Any] | None = None
    at: float = 0.0


class _FormErrors:
    """Collects Invalid Form Body problems into Discord's nested ``errors`` object."""

    def __init__(self) -> None:
        self.items: list[tuple[tuple[Any, ...], str, str]] = []

    def add(self, path: tuple[Any, ...], code: str, message: str) -> None:
        self.items.append((path, code, message))

    def raise_if_any(self) -> None:
        if not self.items:
            return
        tree: dict[str, Any] = {}
        for path, code, message in self.items:
            node = tree
            for part in path:
                node = node.setdefault(str(part), {})
            node.setdefault("_errors", []).append({"code": code, "message": message})
        raise _ApiError(400, 50035, "Invalid Form Body", errors=tree)

    def length(self, path: tuple[Any, ...], value: Any, low: int, high: int) -> None:
        if not isinstance(value, str):
            self.add(path, "BASE_TYPE_STRING", "Must be a string.")
        elif not low <= len(value) <= high:
            if low == 0:
                self.add(path, "BASE_TYPE_MAX_LENGTH", f"Must be {high} or fewer in length.")
            else:
                self.add(
                    path, "BASE_TYPE_BAD_LENGTH", f"Must be between {low} and {high} in length."
                )


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


@dataclass(eq=False)
class FakeAttachment:
    """A stored file: served on the fake CDN at ``url``."""

    id: int
    filename: str
    data: bytes
    content_type: str
    url: str
    description: str | None = None
    width: int | None = None
    height: int | None = None
    ephemeral: bool = False

    @property
    def size(self) -> int:
        return len(self.data)

    def to_payload(self) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "id": str(self.id),
            "filename": self.filename,
            "size": self.size,
            "url": self.url,
            "proxy_url": self.url,
            "content_type": self.content_type,
        }
        if self.description is not None:
            payload["description"] = self.description
        if self.width is not None:
            payload["width"] = self.width
            payload["height"] = self.height
        if self.ephemeral:
            payload["ephemeral"] = True
        return payload


@dataclass(eq=False)
class FakeMessage:
    """A message as the fake stores it. ``edits`` holds ``(time.monotonic(), payload)`` per edit;
    the payload is the JSON the bot sent, plus ``"files"`` naming any uploaded files."""

    id: int
    channel_id: int
    author_id: int
    content: str = ""
    embeds: list[dict[str, Any]] = field(default_factory=list)
    components: list[dict[str, Any]] = field(default_factory=list)
    attachments: list[FakeAttachment] = field(default_factory=list)
    flags: int = 0
    type: int = 0
    interaction_id: int | None = None
    webhook_id: int | None = None
    created_at: float = field(default_factory=time.monotonic)
    timestamp: datetime = field(default_factory=_utcnow)
    edited_timestamp: datetime | None = None
    edits: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    deleted: bool = False
    nonce: str | None = None

    @property
    def ephemeral(self) -> bool:
        return bool(self.flags & FLAG_EPHEMERAL)

    @property
    def loading(self) -> bool:
        """True while this is a deferred "thinking..." response nobody has filled in yet."""
        return bool(self.flags & FLAG_LOADING)

    def iter_components(self) -> Iterator[dict[str, Any]]:
        """Every component, depth first (rows, then what they hold)."""
        yield from _walk_components(self.components)

    @property
    def custom_ids(self) -> list[str]:
        return [c["custom_id"] for c in self.iter_components() if c.get("custom_id")]

    def component(self, custom_id: str) -> dict[str, Any] | None:
        return next((c for c in self.iter_components() if c.get("custom_id") == custom_id), None)

    def button(self, label: str) -> dict[str, Any] | None:
        """The button with this label, if any."""
        return next(
            (
                c
                for c in self.iter_components()
                if c.get("type") == _COMPONENT_BUTTON and c.get("label") == label
            ),
            None,
        )

    def attachment(self, filename: str) -> FakeAttachment | None:
        return next((a for a in self.attachments if a.filename == filename), None)


def _walk_components(components: Sequence[Any]) -> Iterator[dict[str, Any]]:
    for component in components:
        if not isinstance(component, dict):
            continue
        yield component
        yield from _walk_components(component.get("components") or [])
        accessory = component.get("accessory")
        if isinstance(accessory, dict):
            yield from _walk_components([accessory])


class FakeInteraction:
    """One interaction the fake dispatched, and what the bot did with it.

    ``acknowledged_at`` is seconds from dispatch to the first accepted callback (None until
    then); ``response_type`` is the callback type (4 message, 5 deferred, 6 deferred update,
    7 update, 8 autocomplete, 9 modal); ``original`` is the message @original refers to.
    """

    def __init__(
        self,
        fake: FakeDiscord,
        *,
        id: int,
        token: str,
        type: int,
        user_id: int,
        channel_id: int,
        name: str | None = None,
        custom_id: str | None = None,
        source_message_id: int | None = None,
    ) -> None:
        self._fake = fake
        self.id = id
        self.token = token
        self.type = type
        self.user_id = user_id
        self.channel_id = channel_id
        self.name = name
        self.custom_id = custom_id
        self.source_message_id = source_message_id
        self.payload: dict[str, Any] = {}
        self.dispatched_at = time.monotonic()
        self.acknowledged_at: float | None = None
        self.response_type: int | None = None
        self.ephemeral = False
        self.choices: list[dict[str, Any]] | None = None
        self.modal: dict[str, Any] | None = None
        self.followups: list[FakeMessage] = []
        self.original_id: int | None = None
        #: The ``shard`` each gateway session sent INTERACTION_CREATE to identified with (None
        #: for a session without shards); empty when no connected session's shard holds the guild.
        self.delivered_to: list[tuple[int, int] | None] = []
        self._awaiting_first_followup = False

    def __repr__(self) -> str:
        what = self.name or self.custom_id or ""
        return (
            f"<FakeInteraction id={self.id} type={self.type} {what!r} "
            f"response_type={self.response_type} acknowledged_at={self.acknowledged_at}>"
        )

    @property
    def acknowledged(self) -> bool:
        return self.response_type is not None

    @property
    def original(self) -> FakeMessage | None:
        if self.original_id is None:
            return None
        return self._fake._messages.get(self.original_id)

    @property
    def failed(self) -> bool:
        """Discord shows "This interaction failed": no answer within ``ack_timeout``."""
        late = time.monotonic() - self.dispatched_at > self._fake.ack_timeout
        return not self.acknowledged and late

    @property
    def token_expired(self) -> bool:
        return time.monotonic() - self.dispatched_at > self._fake.token_lifetime

    async def wait_ack(self, timeout: float | None = None) -> int:
        """Wait for the first response; returns its callback type.

        Raises:
            InteractionTimeout: not acknowledged within ``timeout`` (default ``ack_timeout``).
        """
        limit = self._fake.ack_timeout + 0.5 if timeout is None else timeout
        try:
            await self._fake.wait_for(lambda: self.acknowledged, timeout=limit)
        except TimeoutError:
            raise InteractionTimeout(f"{self!r} was not acknowledged within {limit} s") from None
        assert self.response_type is not None
        return self.response_type

    async def wait_original(
        self,
        predicate: Callable[[FakeMessage], Any] | None = None,
        timeout: float = 5.0,
    ) -> FakeMessage:
        """Wait until @original exists (and ``predicate(original)`` is true); return it."""

        def check() -> FakeMessage | None:
            message = self.original
            if message is None or (predicate is not None and not predicate(message)):
                return None
            return message

        try:
            return await self._fake.wait_for(check, timeout=timeout)
        except TimeoutError:
            raise InteractionTimeout(
                f"{self!r}: original response did not match within {timeout} s; "
                f"it is {self.original!r}"
            ) from None

    async def wait_followups(self, count: int = 1, timeout: float = 5.0) -> list[FakeMessage]:
        """Wait until at least ``count`` follow-ups were sent; return them."""
        try:
            await self._fake.wait_for(lambda: len(self.followups) >= count, timeout=timeout)
        except TimeoutError:
            raise InteractionTimeout(
                f"{self!r}: {len(self.followups)} follow-ups after {timeout} s, wanted {count}"
            ) from None
        return list(self.followups)


@dataclass
class _Upload:
    index: int
    filename: str
    data: bytes
    content_type: str


@dataclass
class _Window:
    limit: int
    per: float
    count: int = 0
    reset_at: float = 0.0

    def take(self, now: float) -> float | None:
        """Count a request; returns None when allowed, else the seconds until the window resets."""
        if now >= self.reset_at:
            self.count = 0
            self.reset_at = now + self.per
        if self.count >= self.limit:
            return self.reset_at - now
        self.count += 1
        return None


@dataclass
class _Fault:
    pattern: str
    status: int
    code: int
    message: str
    retry_after: float
    is_global: bool
    remaining: int


@dataclass(eq=False)
class _Session:
    id: str
    intents: int
    shard: list[int] | None
    seq: int = 0
    ws: web.WebSocketResponse | None = None
    ready: bool = False
    invalid: bool = False
    buffer: list[dict[str, Any]] = field(default_factory=list)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


@dataclass(frozen=True)
class FakeGuild:
    """A server added with ``FakeDiscord.add_guild``: its id and its text channel's id."""

    guild_id: int
    channel_id: int
    name: str

    def shard(self, shard_count: int) -> int:
        """The shard that receives this server's events when the bot runs ``shard_count``."""
        return shard_of(self.guild_id, shard_count)


@dataclass(eq=False)
class _Guild:
    """One server's own state: its roles (by id; @everyone's id is the server's), its members
    (user id -> member without ``user``) and its Integrations overrides per command name."""

    id: int
    name: str
    roles: dict[int, dict[str, Any]]
    members: dict[int, dict[str, Any]]
    overrides: dict[str, dict[int, bool]]
    moderator_role_id: int = 0


def shard_of(guild_id: int, shard_count: int) -> int:
    """The shard a server's events go to, as Discord computes it."""
    return (guild_id >> 22) % shard_count


def _ceil_ms(seconds: float) -> float:
    return math.ceil(max(seconds, 0.0) * 1000) / 1000


class FakeDiscord:
    """The fake: one application (its bot user), one guild with channels, roles and members
    (more with ``add_guild``).

    Attributes set up for tests: ``bot_token``, ``application_id`` (== the bot user's id),
    ``guild_id``, ``channel_id`` (text), ``nsfw_channel_id`` (age-restricted), ``owner_id`` (guild
    and application owner), ``moderator_id`` (Manage Server through ``moderator_role_id``),
    ``member_id`` (plain member, the default user of ``slash``/``click``).
    """

    def __init__(
        self,
        *,
        token_lifetime: float = 900.0,
        attachment_size_limit: int = 10 * MIB,
        ack_timeout: float = 3.0,
        rate_limits: Mapping[str, tuple[int, float]] | None = None,
        heartbeat_interval: float = 41.25,
        host: str = "127.0.0.1",
        nonce_window: float = 300.0,
    ) -> None:
        self.token_lifetime = token_lifetime
        #: What ``GET /gateway/bot`` recommends as the number of shards.
        self.recommended_shards = 1
        self.nonce_window = nonce_window
        self.attachment_size_limit = attachment_size_limit
        self.ack_timeout = ack_timeout
        self.heartbeat_interval = heartbeat_interval
        self.host = host
        self.rate_limits: dict[str, tuple[int, float]] = {
            **DEFAULT_RATE_LIMITS,
            **(rate_limits or {}),
        }

        self.errors: list[ApiErrorRecord] = []
        self.requests: list[tuple[str, str]] = []
        self.rate_limited_count = 0
        self.identify_count = 0
        self.resume_count = 0
        self.heartbeat_count = 0

        self._last_snowflake = 0
        self._runner: web.AppRunner | None = None
        self._port: int | None = None
        self._installed: tuple[str, yarl.URL] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._sockets: set[web.WebSocketResponse] = set()
        self._server_closed: set[web.WebSocketResponse] = set()
        self._sessions: dict[str, _Session] = {}
        self._windows: dict[tuple[str, str], _Window] = {}
        self._global_window: _Window | None = None
        self._faults: list[_Fault] = []
        self._holds: list[_Fault] = []
        self._release = asyncio.Event()
        self.held: list[str] = []
        self._nonces: dict[tuple[int, str], tuple[float, FakeMessage]] = {}

        self._users: dict[int, dict[str, Any]] = {}
        self._members: dict[int, dict[str, Any]] = {}
        self._roles: dict[int, dict[str, Any]] = {}
        self._channels: dict[int, dict[str, Any]] = {}
        self._messages: dict[int, FakeMessage] = {}
        self._files: dict[int, FakeAttachment] = {}
        self._interactions: dict[int, FakeInteraction] = {}
        self._by_token: dict[str, FakeInteraction] = {}
        self._global_commands: list[dict[str, Any]] = []
        self._guild_commands: dict[int, list[dict[str, Any]]] = {}
        self._command_ids: dict[tuple[int | None, int, str], int] = {}
        self._command_overrides: dict[str, dict[int, bool]] = {}

        self.application_id = self._snowflake()
        self.guild_id = self._snowflake()
        self.bot_token = self._make_token()
        self.public_key = secrets.token_hex(32)
        self.guild_name = "Fake Guild"
        self._guilds: dict[int, _Guild] = {
            self.guild_id: _Guild(
                self.guild_id, self.guild_name, self._roles, self._members, self._command_overrides
            )
        }

        self._roles[self.guild_id] = self._role_payload(
            self.guild_id, "@everyone", PERM_EVERYONE_DEFAULT, position=0
        )
        self.moderator_role_id = self.add_role("Moderators", permissions=PERM_MANAGE_GUILD)
        self._guilds[self.guild_id].moderator_role_id = self.moderator_role_id
        self.bot_role_id = self.add_role(
            "Bot", permissions=PERM_EVERYONE_DEFAULT | PERM_MANAGE_MESSAGES
        )
        self._users[self.application_id] = {
            "id": str(self.application_id),
            "username": "fakebot",
            "global_name": None,
            "discriminator": "0",
            "avatar": None,
            "bot": True,
            "public_flags": 0,
        }
        self._members[self.application_id] = self._new_member([self.bot_role_id])
        self.owner_id = self.add_member("owner")
        self.moderator_id = self.add_member("moderator", manage_guild=True)
        self.member_id = self.add_member("member")
        self.channel_id = self.add_channel("general")
        self.nsfw_channel_id = self.add_channel("nsfw-art", nsfw=True)

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Serve on an ephemeral port of ``host``."""
        if self._runner is not None:
            return
        self._runner = web.AppRunner(self._build_app(), handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, 0)
        await site.start()
        server = site._server
        assert server is not None
        self._port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]

    async def stop(self) -> None:
        """Close every gateway socket and stop serving (restores discord.py if installed)."""
        self.uninstall()
        self._release.set()
        for ws in list(self._sockets):
            self._server_closed.add(ws)
            with contextlib.suppress(Exception):
                await ws.close(code=1001, message=b"fake discord stopping")
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeDiscord:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        if self._port is None:
            raise FakeDiscordError("FakeDiscord is not started")
        return f"http://{self.host}:{self._port}"

    @property
    def api_base(self) -> str:
        return self.url + API_PREFIX

    @property
    def gateway_url(self) -> str:
        return f"ws://{self.host}:{self._port}/gateway/"

    def install(self) -> None:
        """Point discord.py (process-wide) at this fake; ``uninstall`` restores the old values."""
        if self._installed is None:
            self._installed = (
                discord.http.Route.BASE,
                discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY,
            )
        discord.http.Route.BASE = self.api_base
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(self.gateway_url)

    def uninstall(self) -> None:
        if self._installed is None:
            return
        discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = self._installed
        self._installed = None

    # ------------------------------------------------------------------ ids and world setup

    def _snowflake(self) -> int:
        value = (int(time.time() * 1000) - DISCORD_EPOCH_MS) << 22
        value = max(value, self._last_snowflake + 1)
        self._last_snowflake = value
        return value

    def _make_token(self) -> str:
        head = base64.urlsafe_b64encode(str(self.application_id).encode()).decode().rstrip("=")
        return f"{head}.fake.{secrets.token_urlsafe(27)}"

    def _role_payload(
        self, role_id: int, name: str, permissions: int, *, position: int
    ) -> dict[str, Any]:
        return {
            "id": str(role_id),
            "name": name,
            "color": 0,
            "colors": {"primary_color": 0, "secondary_color": None, "tertiary_color": None},
            "hoist": False,
            "icon": None,
            "unicode_emoji": None,
            "position": position,
            "permissions": str(permissions),
            "managed": False,
            "mentionable": False,
            "flags": 0,
        }

    def _new_member(self, roles: Sequence[int]) -> dict[str, Any]:
        return {
            "roles": [str(r) for r in roles],
            "joined_at": _iso(_utcnow()),
            "nick": None,
            "avatar": None,
            "premium_since": None,
            "deaf": False,
            "mute": False,
            "pending": False,
            "flags": 0,
            "communication_disabled_until": None,
        }

    def add_role(self, name: str, *, permissions: int = 0, guild_id: int | None = None) -> int:
        """Create a role (in the first guild unless ``guild_id`` says); returns its id."""
        guild = self._guild(guild_id)
        role_id = self._snowflake()
        guild.roles[role_id] = self._role_payload(
            role_id, name, permissions, position=len(guild.roles)
        )
        self._announce(
            "GUILD_ROLE_CREATE", {"guild_id": str(guild.id), "role": guild.roles[role_id]}
        )
        return role_id

    def add_member(
        self, name: str, *, manage_guild: bool = False, roles: Sequence[int] = ()
    ) -> int:
        """Create a user who is a member of the guild; returns the user id."""
        user_id = self._snowflake()
        self._users[user_id] = {
            "id": str(user_id),
            "username": name,
            "global_name": name.title(),
            "discriminator": "0",
            "avatar": None,
            "bot": False,
            "public_flags": 0,
        }
        role_ids = list(roles)
        if manage_guild:
            role_ids.append(self.moderator_role_id)
        for role_id in role_ids:
            if role_id not in self._roles:
                raise FakeDiscordError(f"unknown role {role_id}")
        self._members[user_id] = self._new_member(role_ids)
        self._announce(
            "GUILD_MEMBER_ADD",
            {**self._member_payload(user_id), "guild_id": str(self.guild_id)},
            intent=1 << 1,
        )
        return user_id

    def add_channel(self, name: str, *, nsfw: bool = False, guild_id: int | None = None) -> int:
        """Create a text channel (in the first guild unless ``guild_id`` says); returns its id."""
        channel_id = self._new_channel(self._guild(guild_id).id, name, nsfw=nsfw)
        self._announce("CHANNEL_CREATE", self._channels[channel_id])
        return channel_id

    def _new_channel(self, guild_id: int, name: str, *, nsfw: bool) -> int:
        channel_id = self._snowflake()
        self._channels[channel_id] = {
            "id": str(channel_id),
            "type": 0,
            "guild_id": str(guild_id),
            "name": name,
            "position": len(self._channels),
            "permission_overwrites": [],
            "nsfw": nsfw,
            "topic": None,
            "parent_id": None,
            "rate_limit_per_user": 0,
            "last_message_id": None,
            "flags": 0,
        }
        return channel_id

    def add_guild(
        self, name: str = "Other Guild", *, shard: tuple[int, int] | None = None
    ) -> FakeGuild:
        """Add the bot to another server, with a text channel "general" and the owner (its
        owner too), the moderator (Manage Server through a role) and the member as members.

        With ``shard=(shard_id, shard_count)`` the server's id falls on that shard. A connected
        bot whose shard holds it gets GUILD_CREATE, as when a bot is added to a server.
        """
        if shard is not None and not 0 <= shard[0] < shard[1]:
            raise FakeDiscordError(f"no shard {shard[0]} of {shard[1]}")
        guild_id = self._snowflake()
        while shard is not None and shard_of(guild_id, shard[1]) != shard[0]:
            # the shard is read from the timestamp bits: go on to the next millisecond's ids
            self._last_snowflake = (((guild_id >> 22) + 1) << 22) - 1
            guild_id = self._snowflake()
        guild = _Guild(guild_id, name, {}, {}, {})
        guild.roles[guild_id] = self._role_payload(
            guild_id, "@everyone", PERM_EVERYONE_DEFAULT, position=0
        )
        self._guilds[guild_id] = guild
        guild.moderator_role_id = self._new_role(guild, "Moderators", PERM_MANAGE_GUILD)
        bot_role = self._new_role(guild, "Bot", PERM_EVERYONE_DEFAULT | PERM_MANAGE_MESSAGES)
        guild.members[self.application_id] = self._new_member([bot_role])
        guild.members[self.owner_id] = self._new_member([])
        guild.members[self.moderator_id] = self._new_member([guild.moderator_role_id])
        guild.members[self.member_id] = self._new_member([])
        channel_id = self._new_channel(guild_id, "general", nsfw=False)
        self._announce("GUILD_CREATE", self._guild_create_payload(guild_id))
        return FakeGuild(guild_id=guild_id, channel_id=channel_id, name=name)

    def _new_role(self, guild: _Guild, name: str, permissions: int) -> int:
        role_id = self._snowflake()
        guild.roles[role_id] = self._role_payload(
            role_id, name, permissions, position=len(guild.roles)
        )
        return role_id

    def _guild(self, guild_id: int | FakeGuild | None = None) -> _Guild:
        """A server's state (the first guild's for None)."""
        if isinstance(guild_id, FakeGuild):
            guild_id = guild_id.guild_id
        try:
            return self._guilds[self.guild_id if guild_id is None else int(guild_id)]
        except (KeyError, ValueError):
            raise FakeDiscordError(f"unknown guild {guild_id}") from None

    def _guild_of(self, channel_id: int) -> _Guild:
        """The server a channel (or thread) belongs to."""
        return self._guilds[int(self._channel(channel_id)["guild_id"])]

    def _channel_in(self, guild: FakeGuild | int | None, channel_id: int | None) -> int:
        """The channel a user action happens in: ``channel_id``, else the text channel of
        ``guild`` (a ``FakeGuild``), else the first guild's ``channel_id``."""
        if channel_id is not None:
            return channel_id
        if isinstance(guild, FakeGuild):
            return guild.channel_id
        if guild is not None and int(guild) != self.guild_id:
            self._guild(guild)
            return next(
                int(c["id"])
                for c in self._channels.values()
                if c["guild_id"] == str(guild) and c["type"] == 0
            )
        return self.channel_id

    def set_channel_permissions(
        self, channel_id: int, target_id: int, *, allow: int = 0, deny: int = 0
    ) -> None:
        """Set a permission overwrite for a role or member (``target_id == guild_id`` is
        @everyone) on a channel."""
        channel = self._channel(channel_id)
        kind = 0 if target_id in self._guild_of(channel_id).roles else 1
        overwrites = [o for o in channel["permission_overwrites"] if o["id"] != str(target_id)]
        overwrites.append(
            {"id": str(target_id), "type": kind, "allow": str(allow), "deny": str(deny)}
        )
        channel["permission_overwrites"] = overwrites
        self._announce("CHANNEL_UPDATE", channel)

    def set_command_permission(
        self, name: str, target_id: int, *, allow: bool | None, guild_id: int | None = None
    ) -> None:
        """What a server administrator does in Server Settings → Integrations: let a role or a
        member (``target_id == guild_id`` is @everyone) use the command ``name``, or keep them
        from it, whatever its ``default_member_permissions``; ``allow=None`` removes the
        override. Administrators and the owner may always use every command. In the first guild
        unless ``guild_id`` says."""
        overrides = self._guild(guild_id).overrides.setdefault(name, {})
        if allow is None:
            overrides.pop(target_id, None)
        else:
            overrides[target_id] = allow

    def _command_override(self, name: str, user_id: int, guild: _Guild) -> bool | None:
        """The Integrations override for this member, as Discord resolves it: the member's own,
        else any of their roles allowing (an allow beats a deny), else @everyone's."""
        overrides = guild.overrides.get(name, {})
        if user_id in overrides:
            return overrides[user_id]
        roles = [int(r) for r in guild.members[user_id]["roles"]]
        verdicts = [overrides[r] for r in roles if r in overrides]
        if verdicts:
            return any(verdicts)
        return overrides.get(guild.id)

    def _channel(self, channel_id: int) -> dict[str, Any]:
        try:
            return self._channels[int(channel_id)]
        except (KeyError, ValueError):
            raise FakeDiscordError(f"unknown channel {channel_id}") from None

    def permissions(
        self, user_id: int, channel_id: int | None = None, *, guild_id: int | None = None
    ) -> int:
        """A member's permission bits (in a channel, with its overwrites; without one, in
        ``guild_id``, by default the first guild)."""
        guild = self._guild(guild_id) if channel_id is None else self._guild_of(channel_id)
        if user_id == self.owner_id:
            return PERM_ALL
        member = guild.members.get(user_id)
        if member is None:
            return 0
        role_ids = [int(r) for r in member["roles"]]
        perms = int(guild.roles[guild.id]["permissions"])
        for role_id in role_ids:
            perms |= int(guild.roles[role_id]["permissions"])
        if perms & PERM_ADMINISTRATOR:
            return PERM_ALL
        if channel_id is None:
            return perms
        channel = self._channel(channel_id)
        if channel["type"] in THREAD_TYPES:  # a thread has its parent channel's permissions
            channel = self._channel(int(channel["parent_id"]))
        overwrites = {int(o["id"]): o for o in channel["permission_overwrites"]}
        everyone = overwrites.get(guild.id)
        if everyone:
            perms = (perms & ~int(everyone["deny"])) | int(everyone["allow"])
        allow = deny = 0
        for role_id in role_ids:
            if role_id in overwrites:
                allow |= int(overwrites[role_id]["allow"])
                deny |= int(overwrites[role_id]["deny"])
        perms = (perms & ~deny) | allow
        own = overwrites.get(user_id)
        if own:
            perms = (perms & ~int(own["deny"])) | int(own["allow"])
        return perms

    def _member_payload(
        self, user_id: int, *, with_user: bool = True, guild_id: int | None = None
    ) -> dict[str, Any]:
        payload = dict(self._guild(guild_id).members[user_id])
        if with_user:
            payload["user"] = dict(self._users[user_id])
        return payload

    def _guild_payload(self, guild_id: int | None = None) -> dict[str, Any]:
        guild = self._guild(guild_id)
        return {
            "id": str(guild.id),
            "name": self.guild_name if guild.id == self.guild_id else guild.name,
            "icon": None,
            "splash": None,
            "discovery_splash": None,
            "banner": None,
            "description": None,
            "owner_id": str(self.owner_id),
            "afk_channel_id": None,
            "afk_timeout": 300,
            "verification_level": 0,
            "default_message_notifications": 0,
            "explicit_content_filter": 0,
            "mfa_level": 0,
            "nsfw_level": 0,
            "premium_tier": 0,
            "premium_subscription_count": 0,
            "preferred_locale": "en-US",
            "system_channel_id": None,
            "system_channel_flags": 0,
            "rules_channel_id": None,
            "public_updates_channel_id": None,
            "safety_alerts_channel_id": None,
            "vanity_url_code": None,
            "features": [],
            "roles": list(guild.roles.values()),
            "emojis": [],
            "stickers": [],
            "premium_progress_bar_enabled": False,
        }

    def _guild_create_payload(self, guild_id: int | None = None) -> dict[str, Any]:
        guild = self._guild(guild_id)
        channels = [c for c in self._channels.values() if c["guild_id"] == str(guild.id)]
        return {
            **self._guild_payload(guild.id),
            "joined_at": _iso(_utcnow()),
            "large": False,
            "unavailable": False,
            "member_count": len(guild.members),
            "members": [self._member_payload(uid, guild_id=guild.id) for uid in guild.members],
            "channels": [
                {k: v for k, v in c.items() if k != "guild_id"}
                for c in channels
                if c["type"] not in THREAD_TYPES
            ],
            "threads": [copy.deepcopy(c) for c in channels if c["type"] in THREAD_TYPES],
            "presences": [],
            "voice_states": [],
            "stage_instances": [],
            "guild_scheduled_events": [],
            "soundboard_sounds": [],
        }

    # ------------------------------------------------------------------ test-side queries

    @property
    def commands(self) -> list[dict[str, Any]]:
        """Every registered command (global, then guild ones, which carry ``guild_id``)."""
        result = [copy.deepcopy(c) for c in self._global_commands]
        for commands in self._guild_commands.values():
            result.extend(copy.deepcopy(c) for c in commands)
        return result

    def command(
        self, name: str, *, guild: bool | None = None, guild_id: int | None = None
    ) -> dict[str, Any]:
        """A registered top-level command by name (guild scope first unless ``guild`` says),
        as members of ``guild_id`` (default: the first guild) see it."""
        scopes: list[list[dict[str, Any]]] = []
        if guild in (None, True):
            scopes.append(self._guild_commands.get(self._guild(guild_id).id, []))
        if guild in (None, False):
            scopes.append(self._global_commands)
        for scope in scopes:
            for command in scope:
                if command["name"] == name and command.get("type", 1) == 1:
                    return command
        registered = sorted({c["name"] for c in self.commands})
        where = {None: "here or globally", True: "here", False: "globally"}[guild]
        raise FakeDiscordError(
            f"no command /{name} is registered {where} (guild {self._guild(guild_id).id}); "
            f"registered anywhere: {registered}"
        )

    def messages_in(
        self, channel_id: int | None = None, *, include_deleted: bool = False
    ) -> list[FakeMessage]:
        """Messages of a channel (default ``channel_id``), oldest first, ephemeral ones included."""
        channel_id = self.channel_id if channel_id is None else channel_id
        return sorted(
            (
                m
                for m in self._messages.values()
                if m.channel_id == channel_id and (include_deleted or not m.deleted)
            ),
            key=lambda m: m.id,
        )

    def threads_of(self, channel_id: int | None = None) -> list[dict[str, Any]]:
        """The threads created in a channel (default ``channel_id``), oldest first."""
        parent = str(self.channel_id if channel_id is None else channel_id)
        return [
            copy.deepcopy(c)
            for c in self._channels.values()
            if c["type"] in THREAD_TYPES and c.get("parent_id") == parent
        ]

    def post(
        self,
        content: str = "",
        *,
        user_id: int | None = None,
        channel_id: int | None = None,
        files: Sequence[tuple[str, bytes, str]] = (),
        guild: FakeGuild | int | None = None,
    ) -> FakeMessage:
        """A member posts a message (with ``(filename, bytes, content_type)`` files) in a channel
        (default: the text channel of ``guild``, else ``channel_id``); the bot gets
        MESSAGE_CREATE."""
        user_id = self.member_id if user_id is None else user_id
        channel_id = self._channel_in(guild, channel_id)
        if user_id not in self._guild_of(channel_id).members:
            raise FakeDiscordError(f"user {user_id} is not a member of the guild")
        if not content and not files:
            raise FakeDiscordError("a message needs content or files")
        message = FakeMessage(id=self._snowflake(), channel_id=channel_id, author_id=user_id)
        message.content = content
        message.attachments = [
            self._store_file(channel_id, name, bytes(data), ctype) for name, data, ctype in files
        ]
        self._messages[message.id] = message
        self._channels[channel_id]["last_message_id"] = str(message.id)
        self._announce("MESSAGE_CREATE", self._message_payload(message, for_gateway=True))
        return message

    async def message_command(
        self,
        name: str,
        message_id: int,
        *,
        user_id: int | None = None,
        force: bool = False,
    ) -> FakeInteraction:
        """Run the message context-menu command ``name`` (Apps → name) on a stored message.

        Raises:
            CommandUnavailable: the member could not use the command (unless ``force``).
            FakeDiscordError: no such message command or message.
        """
        user_id = self.member_id if user_id is None else user_id
        message = self._messages.get(int(message_id))
        if message is None or message.deleted or message.ephemeral:
            raise FakeDiscordError(f"no message {message_id} to run {name!r} on")
        command = next(
            (
                c
                for scope in (
                    self._guild_commands.get(self._guild_of(message.channel_id).id, []),
                    self._global_commands,
                )
                for c in scope
                if c["name"] == name and c.get("type") == 3
            ),
            None,
        )
        if command is None:
            registered = sorted(c["name"] for c in self.commands if c.get("type") == 3)
            raise FakeDiscordError(f"no message command {name!r}; registered: {registered}")
        if not force:
            self._check_available(command, user_id, message.channel_id)
        data: dict[str, Any] = {
            "id": command["id"],
            "name": command["name"],
            "type": 3,
            "target_id": str(message.id),
            "resolved": {"messages": {str(message.id): self._message_payload(message)}},
        }
        if command.get("guild_id"):
            data["guild_id"] = command["guild_id"]
        return await self._dispatch_interaction(
            APPLICATION_COMMAND, data, user_id=user_id, channel_id=message.channel_id, name=name
        )

    def message(self, message_id: int) -> FakeMessage:
        """A stored message by id (deleted ones too; check ``.deleted``).

        Raises:
            KeyError: no such message.
        """
        return self._messages[int(message_id)]

    def interaction(self, interaction_id: int) -> FakeInteraction:
        return self._interactions[int(interaction_id)]

    @property
    def interactions(self) -> list[FakeInteraction]:
        return list(self._interactions.values())

    def errors_with(self, code: int) -> list[ApiErrorRecord]:
        return [e for e in self.errors if e.code == code]

    async def wait_for(
        self, predicate: Callable[[], Any], timeout: float = 5.0, *, interval: float = 0.01
    ) -> Any:
        """Poll ``predicate()`` until it returns something truthy; return that.

        Raises:
            TimeoutError: still falsy after ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        while True:
            result = predicate()
            if result:
                return result
            if time.monotonic() >= deadline:
                raise TimeoutError(f"condition not met within {timeout} s")
            await asyncio.sleep(interval)

    @property
    def gateway_connected(self) -> bool:
        """A bot is identified (or resumed) on an open gateway socket."""
        return any(
            s.ready and s.ws is not None and not s.ws.closed for s in self._sessions.values()
        )

    async def wait_for_gateway(self, timeout: float = 5.0) -> None:
        await self.wait_for(lambda: self.gateway_connected, timeout=timeout)

    async def restart_gateway(self, *, resume: bool = True) -> None:
        """Make connected bots reconnect: with ``resume`` Discord's RECONNECT (op 7; the bot
        RESUMEs and missed events are replayed), else INVALID_SESSION (op 9; it IDENTIFYs anew).
        A test can also just close one Bot and start another: commands and messages persist."""
        for session in list(self._sessions.values()):
            ws = session.ws
            if ws is None or ws.closed:
                continue
            if not resume:
                session.invalid = True
            session.ready = False
            frame = {"op": 7, "d": None} if resume else {"op": 9, "d": False}
            with contextlib.suppress(ConnectionError, RuntimeError):
                await ws.send_str(json.dumps({**frame, "s": None, "t": None}))

    async def disconnect_gateway(self, code: int = 4000) -> None:
        """Close every gateway socket from the server side (the bot reconnects and RESUMEs)."""
        for session in self._sessions.values():
            session.ready = False
        for ws in list(self._sockets):
            self._server_closed.add(ws)
            with contextlib.suppress(Exception):
                await ws.close(code=code, message=b"fake discord disconnect")

    def reset_rate_limits(self) -> None:
        self._windows.clear()
        self._global_window = None

    def inject_error(
        self,
        route: str,
        status: int,
        *,
        code: int = 0,
        message: str | None = None,
        times: int = 1,
        retry_after: float = 0.5,
        is_global: bool = False,
    ) -> None:
        """Answer the next ``times`` requests matching ``route`` with an error instead.

        ``route`` is an fnmatch pattern over ``"METHOD /template"`` (as in ``ROUTE_BUCKETS``) or
        ``"METHOD /concrete/path"``, without the /api/v10 prefix. A 429 gets ``retry_after`` and
        the proper rate limit headers.
        """
        self._faults.append(
            _Fault(
                pattern=route,
                status=status,
                code=code,
                message=message or f"{status}: injected",
                retry_after=retry_after,
                is_global=is_global,
                remaining=times,
            )
        )

    def hold_after_apply(self, route: str, *, times: int = 1, with_files: bool = False) -> None:
        """Apply the next ``times`` requests matching ``route``, then never answer them.

        What a client sees when it dies (or its connection does) after Discord applied a request
        but before the answer arrived. ``route`` is matched as in ``inject_error`` (with
        ``with_files``, only requests that upload files count); each held request is appended to
        ``held``; on ``stop`` their connections are dropped.
        """
        self._holds.append(_Fault(route, 1 if with_files else 0, 0, "", 0.0, False, times))

    # ------------------------------------------------------------------ user actions

    async def slash(
        self,
        name: str,
        options: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
        *,
        user_id: int | None = None,
        channel_id: int | None = None,
        attachments: Mapping[str, tuple[str, bytes, str]] | None = None,
        locale: str = "en-US",
        force: bool = False,
        guild: FakeGuild | int | None = None,
    ) -> FakeInteraction:
        """Dispatch a slash command (``name`` may be a path: ``"workflows enable"``) in
        ``channel_id``, else in the text channel of ``guild``, else in ``channel_id``.

        ``options`` maps option names to values, converted by the registered option types
        (user/channel/role ids are resolved; an attachment option takes ``(filename, bytes,
        content_type)``, or put those in ``attachments``). A list of raw option dicts is sent
        as is. Returns as soon as INTERACTION_CREATE is sent.

        Raises:
            CommandUnavailable: the member could not use the command (unless ``force``).
            FakeDiscordError: unknown command or option, or a value Discord would refuse.
        """
        user_id = self.member_id if user_id is None else user_id
        channel_id = self._channel_in(guild, channel_id)
        command, path, schema = self._resolve_path(name, channel_id)
        if not force:
            self._check_available(command, user_id, channel_id)
        resolved: dict[str, dict[str, Any]] = {}
        if isinstance(options, Sequence) and not isinstance(options, str | bytes):
            built = [dict(o) for o in options]
        else:
            values: dict[str, Any] = dict(options or {})
            values.update(attachments or {})
            built = self._build_options(
                name,
                schema,
                values,
                resolved,
                user_id=user_id,
                channel_id=channel_id,
                autocomplete=False,
            )
        data = self._command_data(command, path, built)
        if resolved:
            data["resolved"] = resolved
        return await self._dispatch_interaction(
            APPLICATION_COMMAND,
            data,
            user_id=user_id,
            channel_id=channel_id,
            locale=locale,
            name=name,
        )

    async def autocomplete(
        self,
        name: str,
        options: Mapping[str, Any] | None,
        focused: str,
        *,
        user_id: int | None = None,
        channel_id: int | None = None,
        locale: str = "en-US",
        force: bool = False,
        timeout: float | None = None,
        guild: FakeGuild | int | None = None,
    ) -> list[dict[str, Any]]:
        """Dispatch an autocomplete for option ``focused`` (its typed text is
        ``options[focused]`` or ""), wait for the answer and return its choices.

        Raises:
            InteractionTimeout: no valid answer within ``ack_timeout``.
        """
        user_id = self.member_id if user_id is None else user_id
        channel_id = self._channel_in(guild, channel_id)
        command, path, schema = self._resolve_path(name, channel_id)
        if not force:
            self._check_available(command, user_id, channel_id)
        by_name = {o["name"]: o for o in schema}
        if focused not in by_name:
            raise FakeDiscordError(f"/{name} has no option {focused!r}")
        if not by_name[focused].get("autocomplete"):
            raise FakeDiscordError(f"/{name} option {focused!r} has no autocomplete")
        values = dict(options or {})
        typed = str(values.pop(focused, ""))
        built = self._build_options(
            name, schema, values, {}, user_id=user_id, channel_id=channel_id, autocomplete=True
        )
        focus = {"name": focused, "type": by_name[focused]["type"], "value": typed, "focused": True}
        order = [o["name"] for o in schema]
        built.append(focus)
        built.sort(key=lambda o: order.index(o["name"]))
        data = self._command_data(command, path, built)
        it = await self._dispatch_interaction(
            AUTOCOMPLETE, data, user_id=user_id, channel_id=channel_id, locale=locale, name=name
        )
        await it.wait_ack(self.ack_timeout if timeout is None else timeout)
        return list(it.choices or [])

    async def click(
        self, message_id: int, custom_id: str, *, user_id: int | None = None
    ) -> FakeInteraction:
        """Press the button ``custom_id`` on a stored message.

        Raises:
            FakeDiscordError: no such message/button, the button is disabled or a link, or the
                message is ephemeral and not this user's.
        """
        return await self._component(message_id, custom_id, user_id=user_id, values=None)

    async def select(
        self,
        message_id: int,
        custom_id: str,
        values: Sequence[str],
        *,
        user_id: int | None = None,
    ) -> FakeInteraction:
        """Choose ``values`` in the select menu ``custom_id`` of a stored message."""
        return await self._component(message_id, custom_id, user_id=user_id, values=values)

    async def submit_modal(
        self,
        interaction: FakeInteraction,
        values: Mapping[str, str],
        *,
        user_id: int | None = None,
    ) -> FakeInteraction:
        """Submit the modal the bot opened in answer to ``interaction`` with text ``values``
        keyed by the text inputs' custom_ids."""
        modal = interaction.modal
        if modal is None:
            raise FakeDiscordError(f"{interaction!r} did not open a modal")
        rows = []
        for component in _walk_components(modal.get("components") or []):
            if component.get("type") == 4:
                cid = component["custom_id"]
                rows.append(
                    {
                        "type": _COMPONENT_ACTION_ROW,
                        "components": [{"type": 4, "custom_id": cid, "value": values.get(cid, "")}],
                    }
                )
        data = {"custom_id": modal["custom_id"], "components": rows}
        user_id = interaction.user_id if user_id is None else user_id
        return await self._dispatch_interaction(
            MODAL_SUBMIT,
            data,
            user_id=user_id,
            channel_id=interaction.channel_id,
            custom_id=modal["custom_id"],
        )

    async def _component(
        self,
        message_id: int,
        custom_id: str,
        *,
        user_id: int | None,
        values: Sequence[str] | None,
    ) -> FakeInteraction:
        user_id = self.member_id if user_id is None else user_id
        message = self._messages.get(int(message_id))
        if message is None or message.deleted:
            raise FakeDiscordError(f"no message {message_id} to interact with")
        component = message.component(custom_id)
        if component is None:
            raise FakeDiscordError(
                f"message {message_id} has no component {custom_id!r}; it has {message.custom_ids}"
            )
        if component.get("disabled"):
            raise FakeDiscordError(f"component {custom_id!r} is disabled")
        if message.ephemeral:
            owner = self._interactions.get(message.interaction_id or 0)
            if owner is not None and owner.user_id != user_id:
                raise FakeDiscordError("only the user who got an ephemeral message can use it")
        ctype = component.get("type")
        if values is None:
            if ctype != _COMPONENT_BUTTON:
                raise FakeDiscordError(f"{custom_id!r} is not a button; use select()")
            data: dict[str, Any] = {"custom_id": custom_id, "component_type": ctype}
        else:
            if ctype not in _COMPONENT_SELECTS:
                raise FakeDiscordError(f"{custom_id!r} is not a select menu")
            low, high = component.get("min_values", 1), component.get("max_values", 1)
            if not low <= len(values) <= high:
                raise FakeDiscordError(f"select {custom_id!r} takes {low}..{high} values")
            if ctype == 3:
                offered = {o["value"] for o in component.get("options", [])}
                unknown = set(values) - offered
                if unknown:
                    raise FakeDiscordError(f"{sorted(unknown)} are not options of {custom_id!r}")
            data = {"custom_id": custom_id, "component_type": ctype, "values": list(values)}
        return await self._dispatch_interaction(
            MESSAGE_COMPONENT,
            data,
            user_id=user_id,
            channel_id=message.channel_id,
            message=message,
            custom_id=custom_id,
        )

    def _resolve_path(
        self, name: str, channel_id: int
    ) -> tuple[dict[str, Any], list[tuple[str, int]], list[dict[str, Any]]]:
        parts = name.split()
        if not parts:
            raise FakeDiscordError("empty command name")
        command = self.command(parts[0], guild_id=self._guild_of(channel_id).id)
        schema: list[dict[str, Any]] = command.get("options") or []
        path: list[tuple[str, int]] = []
        for part in parts[1:]:
            option = next(
                (
                    o
                    for o in schema
                    if o["name"] == part and o["type"] in (OPT_SUB_COMMAND, OPT_SUB_COMMAND_GROUP)
                ),
                None,
            )
            if option is None:
                raise FakeDiscordError(f"/{' '.join(parts)}: no subcommand {part!r}")
            path.append((part, option["type"]))
            schema = option.get("options") or []
        if any(o["type"] in (OPT_SUB_COMMAND, OPT_SUB_COMMAND_GROUP) for o in schema):
            subs = [o["name"] for o in schema]
            raise FakeDiscordError(f"/{name} needs a subcommand: one of {subs}")
        return command, path, schema

    def _command_data(
        self, command: dict[str, Any], path: list[tuple[str, int]], options: list[dict[str, Any]]
    ) -> dict[str, Any]:
        nested = options
        for part, kind in reversed(path):
            nested = [{"name": part, "type": kind, "options": nested}]
        data: dict[str, Any] = {
            "id": command["id"],
            "name": command["name"],
            "type": 1,
            "options": nested,
        }
        if command.get("guild_id"):
            data["guild_id"] = command["guild_id"]
        return data

    def _check_available(self, command: dict[str, Any], user_id: int, channel_id: int) -> None:
        guild = self._guild_of(channel_id)
        if user_id not in guild.members:
            raise FakeDiscordError(f"user {user_id} is not a member of the guild")
        contexts = command.get("contexts")
        if contexts is not None and 0 not in contexts:
            raise CommandUnavailable(f"/{command['name']} is not available in guilds")
        if command.get("nsfw") and not self._channel(channel_id).get("nsfw"):
            raise CommandUnavailable(f"/{command['name']} is age-restricted: only in NSFW channels")
        perms = self.permissions(user_id, guild_id=guild.id)
        if perms & PERM_ADMINISTRATOR or user_id == self.owner_id:
            return
        override = self._command_override(command["name"], user_id, guild)
        if override is not None:
            if not override:
                raise CommandUnavailable(
                    f"/{command['name']} is turned off for user {user_id} in Integrations"
                )
            return
        required = command.get("default_member_permissions")
        if required is not None:
            needed = int(required)
            allowed = needed != 0 and perms & needed == needed
            if not allowed:
                raise CommandUnavailable(
                    f"/{command['name']} needs permissions {needed:#x}; "
                    f"user {user_id} has {perms:#x}"
                )

    def _build_options(
        self,
        name: str,
        schema: list[dict[str, Any]],
        values: dict[str, Any],
        resolved: dict[str, dict[str, Any]],
        *,
        user_id: int,
        channel_id: int,
        autocomplete: bool,
    ) -> list[dict[str, Any]]:
        by_name = {o["name"]: o for o in schema}
        unknown = set(values) - set(by_name)
        if unknown:
            raise FakeDiscordError(
                f"/{name} has no option(s) {sorted(unknown)}; it has {list(by_name)}"
            )
        if not autocomplete:
            missing = [o["name"] for o in schema if o.get("required") and o["name"] not in values]
            if missing:
                raise FakeDiscordError(f"/{name} is missing required option(s) {missing}")
        built = []
        for option in schema:
            if option["name"] not in values:
                continue
            value = values[option["name"]]
            if value is None:
                continue
            if autocomplete and option["type"] == OPT_ATTACHMENT:
                continue
            built.append(
                {
                    "name": option["name"],
                    "type": option["type"],
                    "value": self._option_value(name, option, value, resolved, user_id, channel_id),
                }
            )
        return built

    def _option_value(
        self,
        name: str,
        option: dict[str, Any],
        value: Any,
        resolved: dict[str, dict[str, Any]],
        user_id: int,
        channel_id: int,
    ) -> Any:
        kind = option["type"]
        label = f"/{name} {option['name']}"
        if kind == OPT_STRING:
            if not isinstance(value, str):
                raise FakeDiscordError(f"{label} takes a string, got {value!r}")
            low, high = option.get("min_length", 0), option.get("max_length", 6000)
            if not low <= len(value) <= high:
                raise FakeDiscordError(f"{label}: length must be {low}..{high}")
        elif kind == OPT_INTEGER:
            if isinstance(value, bool) or not isinstance(value, int):
                raise FakeDiscordError(f"{label} takes an integer, got {value!r}")
        elif kind == OPT_NUMBER:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise FakeDiscordError(f"{label} takes a number, got {value!r}")
        elif kind == OPT_BOOLEAN and not isinstance(value, bool):
            raise FakeDiscordError(f"{label} takes a boolean, got {value!r}")
        if kind in (OPT_INTEGER, OPT_NUMBER):
            low, high = option.get("min_value"), option.get("max_value")
            if (low is not None and value < low) or (high is not None and value > high):
                raise FakeDiscordError(f"{label}: {value} is outside {low}..{high}")
        if kind in (OPT_STRING, OPT_INTEGER, OPT_NUMBER) and option.get("choices"):
            offered = [c["value"] for c in option["choices"]]
            if value not in offered:
                raise FakeDiscordError(f"{label}: {value!r} is not one of the choices {offered}")
        if kind in (OPT_STRING, OPT_INTEGER, OPT_NUMBER, OPT_BOOLEAN):
            return value
        if kind == OPT_ATTACHMENT:
            if not (isinstance(value, tuple) and len(value) == 3):
                raise FakeDiscordError(f"{label} takes (filename, bytes, content_type)")
            filename, data, content_type = value
            attachment = self._store_file(
                channel_id, filename, bytes(data), content_type, ephemeral=True
            )
            resolved.setdefault("attachments", {})[str(attachment.id)] = attachment.to_payload()
            return str(attachment.id)
        target = int(value)
        guild = self._guild_of(channel_id)
        if kind in (OPT_USER, OPT_MENTIONABLE) and target in self._users:
            resolved.setdefault("users", {})[str(target)] = dict(self._users[target])
            if target in guild.members:
                member = self._member_payload(target, with_user=False, guild_id=guild.id)
                member["permissions"] = str(self.permissions(target, channel_id))
                resolved.setdefault("members", {})[str(target)] = member
            return str(target)
        if kind in (OPT_ROLE, OPT_MENTIONABLE) and target in guild.roles:
            resolved.setdefault("roles", {})[str(target)] = dict(guild.roles[target])
            return str(target)
        if (
            kind == OPT_CHANNEL
            and target in self._channels
            and self._channels[target]["guild_id"] == str(guild.id)
        ):
            channel = self._channels[target]
            types = option.get("channel_types")
            if types and channel["type"] not in types:
                raise FakeDiscordError(f"{label}: channel type {channel['type']} not in {types}")
            resolved.setdefault("channels", {})[str(target)] = {
                "id": channel["id"],
                "name": channel["name"],
                "type": channel["type"],
                "permissions": str(self.permissions(user_id, target)),
                "parent_id": channel["parent_id"],
                "nsfw": channel["nsfw"],
                "position": channel["position"],
                "topic": channel["topic"],
                "last_message_id": channel["last_message_id"],
                "rate_limit_per_user": channel["rate_limit_per_user"],
                "flags": 0,
            }
            return str(target)
        raise FakeDiscordError(f"{label}: {value!r} is not a known id for option type {kind}")

    async def _dispatch_interaction(
        self,
        itype: int,
        data: dict[str, Any],
        *,
        user_id: int,
        channel_id: int,
        locale: str = "en-US",
        message: FakeMessage | None = None,
        name: str | None = None,
        custom_id: str | None = None,
    ) -> FakeInteraction:
        guild = self._guild_of(channel_id)
        if user_id not in guild.members:
            raise FakeDiscordError(f"user {user_id} is not a member of the guild {guild.id}")
        it = FakeInteraction(
            self,
            id=self._snowflake(),
            token="aW50ZXJhY3Rpb24" + secrets.token_urlsafe(48),
            type=itype,
            user_id=user_id,
            channel_id=channel_id,
            name=name,
            custom_id=custom_id,
            source_message_id=None if message is None else message.id,
        )
        member = self._member_payload(user_id, guild_id=guild.id)
        member["permissions"] = str(self.permissions(user_id, channel_id))
        channel = dict(self._channels[channel_id])
        channel["permissions"] = member["permissions"]
        payload: dict[str, Any] = {
            "id": str(it.id),
            "application_id": str(self.application_id),
            "type": itype,
            "data": data,
            "guild_id": str(guild.id),
            "guild": {"id": str(guild.id), "locale": "en-US", "features": []},
            "channel_id": str(channel_id),
            "channel": channel,
            "member": member,
            "token": it.token,
            "version": 1,
            "app_permissions": str(self.permissions(self.application_id, channel_id)),
            "locale": locale,
            "guild_locale": "en-US",
            "entitlements": [],
            "authorizing_integration_owners": {"0": str(guild.id)},
            "context": 0,
            "attachment_size_limit": self.attachment_size_limit,
        }
        if message is not None:
            payload["message"] = self._message_payload(message)
        it.payload = payload
        self._interactions[it.id] = it
        self._by_token[it.token] = it
        it.dispatched_at = time.monotonic()
        sent = await self._dispatch("INTERACTION_CREATE", payload, required=True)
        it.delivered_to = [None if s.shard is None else (s.shard[0], s.shard[1]) for s in sent]
        return it

    # ------------------------------------------------------------------ gateway

    def _announce(self, event: str, data: dict[str, Any], *, intent: int | None = None) -> None:
        """Best-effort dispatch from synchronous code (only when a bot is connected)."""
        if not any(not s.invalid for s in self._sessions.values()):
            return
        self._spawn(self._dispatch(event, data, intent=intent))

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _dispatch(
        self,
        event: str,
        data: dict[str, Any],
        *,
        required: bool = False,
        intent: int | None = None,
    ) -> list[_Session]:
        """Send an event to every live session whose shard holds its guild (and that has the
        ``intent``); returns those sessions. With ``required``, first wait (up to 5 s) for a
        bot to be connected at all."""
        sessions = [s for s in self._sessions.values() if not s.invalid]
        if not sessions and required:
            try:
                await self.wait_for(
                    lambda: any(not s.invalid for s in self._sessions.values()), timeout=5.0
                )
            except TimeoutError:
                raise FakeDiscordError(f"no bot is connected to the gateway for {event}") from None
            sessions = [s for s in self._sessions.values() if not s.invalid]
        guild_id = _event_guild(event, data)
        sent = []
        for session in sessions:
            if intent is not None and not session.intents & intent:
                continue
            if not _on_shard(session, guild_id):
                continue
            await self._send_event(session, event, data)
            sent.append(session)
        return sent

    async def _send_event(self, session: _Session, event: str, data: dict[str, Any]) -> None:
        async with session.lock:
            session.seq += 1
            frame = {"op": 0, "t": event, "s": session.seq, "d": data}
            session.buffer.append(frame)
            del session.buffer[:-500]
            ws = session.ws
            if ws is not None and not ws.closed:
                with contextlib.suppress(ConnectionError, RuntimeError):
                    await ws.send_str(json.dumps(frame))

    async def _gateway_socket(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        self._sockets.add(ws)
        session: _Session | None = None
        try:
            hello = {"heartbeat_interval": int(self.heartbeat_interval * 1000)}
            await ws.send_str(json.dumps({"op": 10, "d": hello, "s": None, "t": None}))
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                frame = json.loads(msg.data)
                op, d = frame.get("op"), frame.get("d")
                if op == 1:
                    self.heartbeat_count += 1
                    await ws.send_str(json.dumps({"op": 11, "d": None, "s": None, "t": None}))
                elif op == 2:
                    if d.get("token") != self.bot_token:
                        await ws.close(code=4004, message=b"Authentication failed.")
                        break
                    session = await self._identify(ws, d)
                elif op == 6:
                    session = await self._resume(ws, d) or session
                elif op == 8:
                    await self._request_members(ws, session, d)
        finally:
            self._sockets.discard(ws)
            by_server = ws in self._server_closed
            self._server_closed.discard(ws)
            if session is not None and session.ws is ws:
                session.ws = None
                session.ready = False
                if not by_server and ws.close_code in (1000, 1001):
                    # A client closing with 1000/1001 ends its session (it cannot RESUME).
                    session.invalid = True
        return ws

    async def _identify(self, ws: web.WebSocketResponse, d: dict[str, Any]) -> _Session:
        session = _Session(
            id=secrets.token_hex(16), intents=int(d.get("intents", 0)), shard=d.get("shard")
        )
        session.ws = ws
        guild_ids = [g for g in self._guilds if _on_shard(session, g)]
        ready: dict[str, Any] = {
            "v": 10,
            "user": {
                **self._users[self.application_id],
                "verified": True,
                "mfa_enabled": False,
                "flags": 0,
            },
            "guilds": [{"id": str(g), "unavailable": True} for g in guild_ids],
            "session_id": session.id,
            "session_type": "normal",
            "resume_gateway_url": self.gateway_url,
            "application": {"id": str(self.application_id), "flags": 0},
            "private_channels": [],
            "relationships": [],
            "presences": [],
            "guild_join_requests": [],
            "geo_ordered_rtc_regions": [],
            "user_settings": {},
        }
        if session.shard is not None:
            ready["shard"] = session.shard
        await self._send_event(session, "READY", ready)
        for guild_id in guild_ids:
            await self._send_event(session, "GUILD_CREATE", self._guild_create_payload(guild_id))
        self._sessions[session.id] = session
        session.ready = True
        self.identify_count += 1
        return session

    async def _resume(self, ws: web.WebSocketResponse, d: dict[str, Any]) -> _Session | None:
        session = self._sessions.get(str(d.get("session_id")))
        if session is None or session.invalid or d.get("token") != self.bot_token:
            await asyncio.sleep(0.05)
            await ws.send_str(json.dumps({"op": 9, "d": False, "s": None, "t": None}))
            return None
        last = int(d.get("seq") or 0)
        async with session.lock:
            session.ws = ws
            for frame in session.buffer:
                if frame["s"] > last:
                    await ws.send_str(json.dumps(frame))
        await self._send_event(session, "RESUMED", {})
        session.ready = True
        self.resume_count += 1
        return session

    async def _request_members(
        self, ws: web.WebSocketResponse, session: _Session | None, d: dict[str, Any]
    ) -> None:
        if session is None:
            return
        guild = self._guilds.get(_int_or_zero(d.get("guild_id")))
        if guild is None or not _on_shard(session, guild.id):
            return
        members = [self._member_payload(uid, guild_id=guild.id) for uid in guild.members]
        ids = d.get("user_ids")
        if ids:
            wanted = {int(i) for i in (ids if isinstance(ids, list) else [ids])}
            members = [m for m in members if int(m["user"]["id"]) in wanted]
        query = d.get("query") or ""
        members = [m for m in members if m["user"]["username"].startswith(query)]
        chunk: dict[str, Any] = {
            "guild_id": str(guild.id),
            "members": members,
            "chunk_index": 0,
            "chunk_count": 1,
        }
        if d.get("nonce"):
            chunk["nonce"] = d["nonce"]
        await self._send_event(session, "GUILD_MEMBERS_CHUNK", chunk)

    # ------------------------------------------------------------------ HTTP plumbing

    def _build_app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware], client_max_size=1024 * MIB)
        api = API_PREFIX

        def route(
            path: str, **handlers: Callable[[web.Request], Awaitable[web.StreamResponse]]
        ) -> None:
            """Routes each verb given (get=, put=, post=, ...) on `path` to its handler."""
            for verb, handler in handlers.items():
                app.router.add_route(verb.upper(), path, handler)

        def read_edit_delete(path: str, name: str) -> None:
            """Routes GET, PATCH and DELETE on `path` to `_get_<name>`, `_edit_<name>` and
            `_delete_<name>`."""
            for verb, action in {"get": "get", "patch": "edit", "delete": "delete"}.items():
                app.router.add_route(verb.upper(), path, getattr(self, f"_{action}_{name}"))

        for path, handler in {
            "/users/@me": self._get_me,
            "/users/{user_id}": self._get_user,
            "/oauth2/applications/@me": self._get_application,
            "/applications/@me": self._get_application,
            "/gateway": self._get_gateway,
            "/gateway/bot": self._get_gateway_bot,
        }.items():
            route(api + path, get=handler)
        for base in (
            "/applications/{application_id}/commands",
            "/applications/{application_id}/guilds/{guild_id}/commands",
        ):
            route(
                api + base,
                get=self._list_commands,
                put=self._put_commands,
                post=self._create_command,
            )
            read_edit_delete(api + base + "/{command_id}", "command")
        route(api + "/interactions/{interaction_id}/{token}/callback", post=self._callback)
        route(api + "/webhooks/{application_id}/{token}", post=self._execute_webhook)
        read_edit_delete(
            api + "/webhooks/{application_id}/{token}/messages/{message_id}", "webhook_message"
        )
        route(api + "/channels/{channel_id}", get=self._get_channel)
        route(
            api + "/channels/{channel_id}/messages",
            get=self._list_messages,
            post=self._create_channel_message,
        )
        read_edit_delete(api + "/channels/{channel_id}/messages/{message_id}", "channel_message")
        route(api + "/channels/{channel_id}/typing", post=self._typing)
        route(api + "/channels/{channel_id}/threads", post=self._create_thread)
        for path, handler in {
            "": self._get_guild,
            "/channels": self._get_guild_channels,
            "/roles": self._get_guild_roles,
            "/members": self._list_members,
            "/members/{user_id}": self._get_member,
        }.items():
            route(api + "/guilds/{guild_id}" + path, get=handler)
        route("/cdn/attachments/{channel_id}/{attachment_id}/{filename}", get=self._cdn)
        route("/gateway", get=self._gateway_socket)
        route("/gateway/", get=self._gateway_socket)
        return app

    @staticmethod
    def _json(
        data: Any, status: int = 200, headers: Mapping[str, str] | None = None
    ) -> web.Response:
        # Exactly "application/json": discord.py does not parse "application/json; charset=utf-8".
        return web.Response(
            body=json.dumps(data).encode(),
            status=status,
            headers={"Content-Type": "application/json", **(headers or {})},
        )

    @staticmethod
    def _no_content() -> web.Response:
        return web.Response(status=204)

    def _route_key(self, request: web.Request) -> str:
        resource = request.match_info.route.resource
        template = resource.canonical if resource is not None else request.path
        return f"{request.method} {template.removeprefix(API_PREFIX)}"

    def _major(self, request: web.Request) -> str:
        info = request.match_info
        for key in ("channel_id", "guild_id"):
            if key in info:
                return info[key]
        if "token" in info:
            return f"{info.get('application_id') or info.get('interaction_id')}+{info['token']}"
        return ""

    @web.middleware
    async def _middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        path = request.path
        if not path.startswith(API_PREFIX + "/"):
            return await handler(request)  # CDN, gateway socket (or aiohttp's plain 404)
        key = self._route_key(request)
        concrete = f"{request.method} {path.removeprefix(API_PREFIX)}"
        self.requests.append((request.method, path.removeprefix(API_PREFIX)))
        rate_headers: dict[str, str] = {}
        try:
            fault = self._take_fault(key, concrete)
            if fault is not None:
                raise fault
            bot_auth = request.headers.get("Authorization") == f"Bot {self.bot_token}"
            webhook_route = "{token}" in key
            if not webhook_route and not bot_auth:
                raise _ApiError(401, 0, "401: Unauthorized")
            now = time.monotonic()
            if bot_auth:
                self._check_global(now)
            rate_headers = self._take_bucket(key, self._major(request), now)
            response = await handler(request)
            if self._take_hold(key, concrete, request.content_type.startswith("multipart/")):
                self.held.append(concrete)
                await self._release.wait()
                if request.transport is not None:
                    request.transport.close()
        except _ApiError as error:
            response = self._json(error.payload(), error.status, error.headers)
            self._record_error(error.status, error.code, key, path, error.message, error.errors)
        except web.HTTPException as exc:
            code = {404: "404: Not Found", 405: "405: Method Not Allowed"}.get(
                exc.status, exc.reason
            )
            response = self._json({"message": code, "code": 0}, exc.status)
            self._record_error(exc.status, 0, key, path, code, None)
        for name, value in rate_headers.items():
            response.headers.setdefault(name, value)
        return response

    def _record_error(
        self,
        status: int,
        code: int,
        route: str,
        path: str,
        message: str,
        errors: dict[str, Any] | None,
    ) -> None:
        if status == 429:
            self.rate_limited_count += 1
        if 400 <= status < 500:
            self.errors.append(
                ApiErrorRecord(
                    status=status,
                    code=code,
                    route=route,
                    path=path.removeprefix(API_PREFIX),
                    message=message,
                    errors=errors,
                    at=time.monotonic(),
                )
            )

    def _take_fault(self, key: str, concrete: str) -> _ApiError | None:
        for fault in self._faults:
            if fault.remaining > 0 and (
                fnmatch.fnmatchcase(key, fault.pattern)
                or fnmatch.fnmatchcase(concrete, fault.pattern)
            ):
                fault.remaining -= 1
                if fault.status == 429:
                    return self._rate_limited(fault.retry_after, is_global=fault.is_global)
                return _ApiError(fault.status, fault.code, fault.message)
        return None

    def _take_hold(self, key: str, concrete: str, files: bool) -> bool:
        for hold in self._holds:
            if hold.status and not files:  # status 1: only requests that upload files
                continue
            matches = fnmatch.fnmatchcase(key, hold.pattern) or fnmatch.fnmatchcase(
                concrete, hold.pattern
            )
            if hold.remaining > 0 and matches:
                hold.remaining -= 1
                return True
        return False

    def _rate_limited(
        self, retry_after: float, *, is_global: bool, headers: Mapping[str, str] | None = None
    ) -> _ApiError:
        retry_after = _ceil_ms(retry_after)
        all_headers = {
            "Retry-After": str(max(1, math.ceil(retry_after))),
            "Via": "1.1 google",
            "X-RateLimit-Scope": "global" if is_global else "user",
            **(headers or {}),
        }
        if is_global:
            all_headers["X-RateLimit-Global"] = "true"
        body = {
            "message": "You are being rate limited.",
            "retry_after": retry_after,
            "global": is_global,
            "code": 0,
        }
        return _ApiError(429, 0, "You are being rate limited.", headers=all_headers, body=body)

    def _check_global(self, now: float) -> None:
        if self._global_window is None:
            limit, per = self.rate_limits["global"]
            self._global_window = _Window(limit, per)
        wait = self._global_window.take(now)
        if wait is not None:
            raise self._rate_limited(wait, is_global=True)

    def _take_bucket(self, key: str, major: str, now: float) -> dict[str, str]:
        name = ROUTE_BUCKETS.get(key, f"route:{key}")
        limit, per = self.rate_limits.get(name, self.rate_limits["default"])
        window = self._windows.get((name, major))
        if window is None:
            window = self._windows[(name, major)] = _Window(limit, per)
        wait = window.take(now)
        reset_after = _ceil_ms(window.reset_at - now)
        headers = {
            "X-RateLimit-Limit": str(window.limit),
            "X-RateLimit-Remaining": str(max(0, window.limit - window.count)),
            "X-RateLimit-Reset": f"{math.ceil((time.time() + reset_after) * 1000) / 1000:.3f}",
            "X-RateLimit-Reset-After": f"{reset_after:.3f}",
            "X-RateLimit-Bucket": hashlib.sha1(name.encode()).hexdigest()[:32],
        }
        if wait is not None:
            raise self._rate_limited(wait, is_global=False, headers=headers)
        return headers

    async def _read_body(self, request: web.Request) -> tuple[dict[str, Any], list[_Upload]]:
        """JSON body, or multipart ``payload_json`` plus ``files[n]``."""
        uploads: list[_Upload] = []
        if request.content_type.startswith("multipart/"):
            payload: dict[str, Any] = {}
            reader = await request.multipart()
            while True:
                part = await reader.next()
                if part is None:
                    break
                if not isinstance(part, BodyPartReader):
                    continue
                name = part.name
                if name == "payload_json":
                    payload = self._parse_json(await part.text())
                elif part.filename is not None:
                    match = re.fullmatch(r"files\[(\d+)\]", name or "")
                    index = int(match.group(1)) if match else len(uploads)
                    data = bytes(await part.read(decode=False))
                    filename = part.filename or f"file{index}"
                    sent_type = part.headers.get("Content-Type", "application/octet-stream")
                    guessed = mimetypes.guess_type(filename)[0]
                    if sent_type == "application/octet-stream" and guessed:
                        sent_type = guessed
                    uploads.append(_Upload(index, filename, data, sent_type))
            uploads.sort(key=lambda u: u.index)
            return payload, uploads
        if not request.can_read_body:
            return {}, []
        text = await request.text()
        return (self._parse_json(text) if text else {}), []

    @staticmethod
    def _parse_json(text: str) -> dict[str, Any]:
        try:
            data = json.loads(text)
        except ValueError:
            raise _ApiError(400, 50109, "The request body contains invalid JSON.") from None
        if not isinstance(data, dict):
            raise _ApiError(400, 50109, "The request body contains invalid JSON.")
        return data

    def _check_app(self, request: web.Request) -> None:
        if request.match_info.get("application_id") != str(self.application_id):
            raise _not_found(10002, "Application")

    def _check_guild(self, request: web.Request) -> _Guild:
        """The server of the request's ``guild_id`` (the first guild for routes without one).

        Raises:
            _ApiError: 403 / 50001, the bot is in no such server.
        """
        guild_id = request.match_info.get("guild_id")
        if guild_id is None:
            return self._guild()
        guild = self._guilds.get(_int_or_zero(guild_id))
        if guild is None:
            raise _ApiError(403, 50001, "Missing Access")
        return guild

    # ------------------------------------------------------------------ users, app, guild

    async def _get_me(self, request: web.Request) -> web.Response:
        me = {
            **self._users[self.application_id],
            "verified": True,
            "mfa_enabled": False,
            "flags": 0,
        }
        return self._json(me)

    async def _get_user(self, request: web.Request) -> web.Response:
        user = self._users.get(_int(request.match_info["user_id"]))
        if user is None:
            raise _not_found(10013, "User")
        return self._json(user)

    async def _get_application(self, request: web.Request) -> web.Response:
        return self._json(
            {
                "id": str(self.application_id),
                "name": "Fake App",
                "description": "",
                "icon": None,
                "bot_public": True,
                "bot_require_code_grant": False,
                "owner": self._users[self.owner_id],
                "verify_key": self.public_key,
                "team": None,
                "flags": 0,
                "bot": self._users[self.application_id],
                "interactions_endpoint_url": None,
                "redirect_uris": [],
                "tags": [],
                "approximate_guild_count": len(self._guilds),
            }
        )

    async def _get_gateway(self, request: web.Request) -> web.Response:
        return self._json({"url": self.gateway_url.rstrip("/")})

    async def _get_gateway_bot(self, request: web.Request) -> web.Response:
        limit = {"total": 1000, "remaining": 999, "reset_after": 0, "max_concurrency": 1}
        return self._json(
            {
                "url": self.gateway_url.rstrip("/"),
                "shards": self.recommended_shards,
                "session_start_limit": limit,
            }
        )

    async def _get_guild(self, request: web.Request) -> web.Response:
        guild = self._check_guild(request)
        return self._json(
            {**self._guild_payload(guild.id), "approximate_member_count": len(guild.members)}
        )

    async def _get_guild_channels(self, request: web.Request) -> web.Response:
        guild = self._check_guild(request)
        return self._json(
            [
                c
                for c in self._channels.values()
                if c["guild_id"] == str(guild.id) and c["type"] not in THREAD_TYPES
            ]
        )

    async def _get_guild_roles(self, request: web.Request) -> web.Response:
        return self._json(list(self._check_guild(request).roles.values()))

    async def _list_members(self, request: web.Request) -> web.Response:
        guild = self._check_guild(request)
        limit = min(int(request.query.get("limit", "1")), 1000)
        after = int(request.query.get("after", "0"))
        ids = sorted(uid for uid in guild.members if uid > after)[:limit]
        return self._json([self._member_payload(uid, guild_id=guild.id) for uid in ids])

    async def _get_member(self, request: web.Request) -> web.Response:
        guild = self._check_guild(request)
        user_id = _int(request.match_info["user_id"])
        if user_id not in guild.members:
            raise _not_found(10007, "Member")
        return self._json(self._member_payload(user_id, guild_id=guild.id))

    async def _get_channel(self, request: web.Request) -> web.Response:
        return self._json(self._api_channel(request))

    def _api_channel(self, request: web.Request) -> dict[str, Any]:
        channel = self._channels.get(_int(request.match_info["channel_id"]))
        if channel is None:
            raise _not_found(10003, "Channel")
        return channel

    async def _cdn(self, request: web.Request) -> web.Response:
        attachment = self._files.get(_int(request.match_info["attachment_id"]))
        if attachment is None or attachment.filename != request.match_info["filename"]:
            return web.Response(status=404, text="Not Found")
        return web.Response(body=attachment.data, headers={"Content-Type": attachment.content_type})

    # ------------------------------------------------------------------ application commands

    def _scope(self, request: web.Request) -> tuple[int | None, list[dict[str, Any]]]:
        self._check_app(request)
        guild = self._check_guild(request)
        if "guild_id" in request.match_info:
            return guild.id, self._guild_commands.setdefault(guild.id, [])
        return None, self._global_commands

    async def _list_commands(self, request: web.Request) -> web.Response:
        _, commands = self._scope(request)
        return self._json(commands)

    async def _put_commands(self, request: web.Request) -> web.Response:
        guild_id, _ = self._scope(request)
        text = await request.text()
        try:
            payload = json.loads(text or "[]")
        except ValueError:
            raise _ApiError(400, 50109, "The request body contains invalid JSON.") from None
        if not isinstance(payload, list):
            raise _ApiError(400, 50035, "Invalid Form Body")
        commands = self._validate_commands(payload, guild_id)
        if guild_id is None:
            self._global_commands[:] = commands
        else:
            self._guild_commands[guild_id] = commands
        return self._json(commands)

    async def _create_command(self, request: web.Request) -> web.Response:
        guild_id, commands = self._scope(request)
        payload, _ = await self._read_body(request)
        kind = payload.get("type", 1)
        others = [
            c for c in commands if not (c["name"] == payload.get("name") and c["type"] == kind)
        ]
        validated = self._validate_commands([*others, payload], guild_id)
        new = validated[-1]
        existed = len(others) != len(commands)
        commands[:] = validated
        return self._json(new, 200 if existed else 201)

    def _find_command(self, request: web.Request) -> tuple[list[dict[str, Any]], int]:
        _, commands = self._scope(request)
        command_id = request.match_info["command_id"]
        for index, command in enumerate(commands):
            if command["id"] == command_id:
                return commands, index
        raise _not_found(10063, "application command")

    async def _get_command(self, request: web.Request) -> web.Response:
        commands, index = self._find_command(request)
        return self._json(commands[index])

    async def _edit_command(self, request: web.Request) -> web.Response:
        commands, index = self._find_command(request)
        payload, _ = await self._read_body(request)
        updated = {**commands[index], **payload}
        candidate = [*commands[:index], updated, *commands[index + 1 :]]
        guild_id, _ = self._scope(request)
        commands[:] = self._validate_commands(candidate, guild_id)
        return self._json(commands[index])

    async def _delete_command(self, request: web.Request) -> web.Response:
        commands, index = self._find_command(request)
        del commands[index]
        return self._no_content()

    def _validate_commands(self, payload: list[Any], guild_id: int | None) -> list[dict[str, Any]]:
        errors = _FormErrors()
        seen: set[tuple[int, str]] = set()
        counts: dict[int, int] = {}
        for i, command in enumerate(payload):
            if not isinstance(command, dict):
                errors.add((i,), "DICT_TYPE_CONVERT", "Only dictionaries may be used in a DictType")
                continue
            kind = command.get("type", 1)
            counts[kind] = counts.get(kind, 0) + 1
            name = command.get("name")
            if kind == 1:
                if (
                    not isinstance(name, str)
                    or not _CHAT_INPUT_NAME.match(name)
                    or name != name.lower()
                ):
                    errors.add(
                        (i, "name"),
                        "APPLICATION_COMMAND_INVALID_NAME",
                        "Command name is invalid",
                    )
                errors.length((i, "description"), command.get("description"), 1, 100)
                self._validate_options(command.get("options") or [], (i, "options"), 0, errors)
                if _command_size(command) > 8000:
                    errors.add(
                        (i,), "APPLICATION_COMMAND_TOO_LARGE", "Command exceeds maximum size (8000)"
                    )
            elif kind in (2, 3):
                errors.length((i, "name"), name, 1, 32)
                if command.get("description"):
                    errors.add(
                        (i, "description"), "BASE_TYPE_MAX_LENGTH", "Must be 0 or fewer in length."
                    )
                if command.get("options"):
                    errors.add(
                        (i, "options"), "BASE_TYPE_MAX_LENGTH", "Must be 0 or fewer in length."
                    )
            else:
                errors.add((i, "type"), "BASE_TYPE_CHOICES", "Value must be one of {1, 2, 3, 4}.")
            if (kind, str(name)) in seen:
                errors.add(
                    (i, "name"),
                    "APPLICATION_COMMANDS_DUPLICATE_NAME",
                    f"Application command names must be unique ({name})",
                )
            seen.add((kind, str(name)))
            permissions = command.get("default_member_permissions")
            if permissions is not None:
                try:
                    int(permissions)
                except (TypeError, ValueError):
                    errors.add(
                        (i, "default_member_permissions"), "NUMBER_TYPE_COERCE", "Value is not int."
                    )
        errors.raise_if_any()
        if counts.get(1, 0) > 100 or counts.get(2, 0) > 15 or counts.get(3, 0) > 15:
            raise _ApiError(400, 30032, "Maximum number of application commands reached")
        result = []
        for command in payload:
            kind = command.get("type", 1)
            ident = (guild_id, kind, command["name"])
            command_id = self._command_ids.get(ident)
            if command_id is None:
                command_id = self._command_ids[ident] = self._snowflake()
            permissions = command.get("default_member_permissions")
            stored: dict[str, Any] = {
                "id": str(command_id),
                "application_id": str(self.application_id),
                "version": str(self._snowflake()),
                "type": kind,
                "name": command["name"],
                "name_localizations": command.get("name_localizations"),
                "description": command.get("description", ""),
                "description_localizations": command.get("description_localizations"),
                "options": copy.deepcopy(command.get("options") or []),
                "default_member_permissions": None if permissions is None else str(permissions),
                "dm_permission": command.get("dm_permission", True),
                "nsfw": bool(command.get("nsfw", False)),
                "contexts": command.get("contexts"),
                "integration_types": command.get("integration_types") or [0],
            }
            if guild_id is not None:
                stored["guild_id"] = str(guild_id)
            result.append(stored)
        return result

    def _validate_options(
        self, options: Any, path: tuple[Any, ...], depth: int, errors: _FormErrors
    ) -> None:
        if not isinstance(options, list):
            errors.add(path, "BASE_TYPE_LIST", "Must be a list.")
            return
        if len(options) > 25:
            errors.add(path, "BASE_TYPE_MAX_LENGTH", "Must be 25 or fewer in length.")
        kinds = [o.get("type") for o in options if isinstance(o, dict)]
        subs = [k for k in kinds if k in (OPT_SUB_COMMAND, OPT_SUB_COMMAND_GROUP)]
        if subs and len(subs) != len(kinds):
            errors.add(
                path,
                "APPLICATION_COMMAND_OPTIONS_TYPE_INVALID",
                "Sub-command and sub-command group option types are mutually exclusive "
                "to all other types",
            )
        names: set[str] = set()
        optional_seen = False
        for j, option in enumerate(options):
            here = (*path, j)
            if not isinstance(option, dict):
                errors.add(here, "DICT_TYPE_CONVERT", "Only dictionaries may be used in a DictType")
                continue
            kind = option.get("type")
            name = option.get("name")
            if (
                not isinstance(name, str)
                or not _CHAT_INPUT_NAME.match(name)
                or name != name.lower()
            ):
                errors.add(
                    (*here, "name"), "APPLICATION_COMMAND_INVALID_NAME", "Command name is invalid"
                )
            elif name in names:
                errors.add(
                    (*here, "name"),
                    "APPLICATION_COMMAND_OPTION_NAME_ALREADY_EXISTS",
                    "Option names must be unique",
                )
            names.add(str(name))
            errors.length((*here, "description"), option.get("description"), 1, 100)
            if kind not in range(1, 12):
                errors.add((*here, "type"), "BASE_TYPE_CHOICES", "Value must be one of {1..11}.")
                continue
            if kind in _NESTING:
                deepest, too_deep, refused, holds_refused = _NESTING[kind]
                if depth > deepest:
                    errors.add((*here, "type"), "APPLICATION_COMMAND_OPTION_TYPE_INVALID", too_deep)
                inner = option.get("options") or []
                if any(isinstance(o, dict) and refused(o.get("type")) for o in inner):
                    errors.add(
                        (*here, "options"), "APPLICATION_COMMAND_OPTION_TYPE_INVALID", holds_refused
                    )
                self._validate_options(inner, (*here, "options"), depth + 1, errors)
                continue
            if option.get("required"):
                if optional_seen:
                    errors.add(
                        (*here, "required"),
                        "APPLICATION_COMMAND_OPTIONS_REQUIRED_INVALID",
                        "Required options must be placed before non-required options",
                    )
            else:
                optional_seen = True
            choices = option.get("choices")
            if choices:
                if kind not in (OPT_STRING, OPT_INTEGER, OPT_NUMBER):
                    errors.add(
                        (*here, "choices"),
                        "APPLICATION_COMMAND_OPTION_CHOICES_INVALID",
                        "Choices are not allowed for this option type",
                    )
                if option.get("autocomplete"):
                    errors.add(
                        (*here, "autocomplete"),
                        "APPLICATION_COMMAND_AUTOCOMPLETE_INVALID",
                        "Autocomplete can not be enabled with choices",
                    )
                if len(choices) > 25:
                    errors.add(
                        (*here, "choices"), "BASE_TYPE_MAX_LENGTH", "Must be 25 or fewer in length."
                    )
                for k, choice in enumerate(choices):
                    errors.length((*here, "choices", k, "name"), choice.get("name"), 1, 100)
                    value = choice.get("value")
                    if kind == OPT_STRING:
                        errors.length((*here, "choices", k, "value"), value, 1, 100)
            for key, low, high in (("min_length", 0, 6000), ("max_length", 1, 6000)):
                if key in option and not (
                    isinstance(option[key], int) and low <= option[key] <= high
                ):
                    errors.add(
                        (*here, key),
                        "NUMBER_TYPE_MAX",
                        f"int value should be between {low} and {high}.",
                    )

    # ------------------------------------------------------------------ messages

    def _store_file(
        self,
        channel_id: int,
        filename: str,
        data: bytes,
        content_type: str,
        *,
        description: str | None = None,
        ephemeral: bool = False,
    ) -> FakeAttachment:
        attachment_id = self._snowflake()
        url = f"{self.url}/cdn/attachments/{channel_id}/{attachment_id}/{filename}"
        width = height = None
        if content_type.startswith("image/"):
            width, height = _image_size(data)
        attachment = FakeAttachment(
            id=attachment_id,
            filename=filename,
            data=data,
            content_type=content_type,
            url=url,
            description=description,
            width=width,
            height=height,
            ephemeral=ephemeral,
        )
        self._files[attachment_id] = attachment
        return attachment

    def _message_payload(
        self, message: FakeMessage, *, for_gateway: bool = False
    ) -> dict[str, Any]:
        by_name = {a.filename: a for a in message.attachments}
        payload: dict[str, Any] = {
            "id": str(message.id),
            "channel_id": str(message.channel_id),
            "type": message.type,
            "content": message.content,
            "author": dict(self._users[message.author_id]),
            "timestamp": _iso(message.timestamp),
            "edited_timestamp": _iso(message.edited_timestamp),
            "tts": False,
            "mention_everyone": False,
            "mentions": [],
            "mention_roles": [],
            "attachments": [a.to_payload() for a in message.attachments],
            "embeds": [_embed_out(e, by_name) for e in message.embeds],
            "pinned": False,
            "flags": message.flags,
            "components": copy.deepcopy(message.components),
        }
        if message.nonce is not None:
            payload["nonce"] = message.nonce
        if message.webhook_id is not None:
            payload["webhook_id"] = str(message.webhook_id)
            payload["application_id"] = str(self.application_id)
        guild_id = self._channels[message.channel_id]["guild_id"]
        interaction = self._interactions.get(message.interaction_id or 0)
        if interaction is not None:
            metadata: dict[str, Any] = {
                "id": str(interaction.id),
                "type": interaction.type,
                "user": dict(self._users[interaction.user_id]),
                "authorizing_integration_owners": {"0": guild_id},
            }
            if interaction.name:
                metadata["name"] = interaction.name
            if interaction.source_message_id is not None:
                metadata["interacted_message_id"] = str(interaction.source_message_id)
            if interaction.original_id is not None and interaction.original_id != message.id:
                metadata["original_response_message_id"] = str(interaction.original_id)
            payload["interaction_metadata"] = metadata
        if for_gateway:
            payload["guild_id"] = guild_id
            payload["member"] = self._member_payload(
                message.author_id, with_user=False, guild_id=int(guild_id)
            )
        return payload

    def _prepare(
        self,
        payload: dict[str, Any],
        uploads: list[_Upload],
        *,
        existing: FakeMessage | None,
        path: tuple[Any, ...] = (),
        allowed_flags: int = _CREATE_FLAGS,
    ) -> dict[str, Any]:
        """Validate a create/edit payload; returns the message's new fields (nothing stored)."""
        for upload in uploads:
            if len(upload.data) > self.attachment_size_limit:
                raise _ApiError(413, 40005, "Request entity too large")
        kept: dict[int, FakeAttachment] = (
            {} if existing is None else {a.id: a for a in existing.attachments}
        )
        errors = _FormErrors()
        final: list[FakeAttachment | tuple[_Upload, dict[str, Any]]] = []
        entries = payload.get("attachments")
        if isinstance(entries, list):
            used: set[int] = set()
            by_index = {u.index: u for u in uploads}
            for i, entry in enumerate(entries):
                try:
                    ident = int(entry.get("id"))
                except (TypeError, ValueError, AttributeError):
                    errors.add(
                        (*path, "attachments", i, "id"),
                        "NUMBER_TYPE_COERCE",
                        "Value is not snowflake.",
                    )
                    continue
                if ident in kept:
                    final.append(kept[ident])
                elif ident in by_index and ident not in used:
                    used.add(ident)
                    final.append((by_index[ident], entry))
                else:
                    errors.add(
                        (*path, "attachments", i, "id"),
                        "ATTACHMENT_NOT_FOUND",
                        "Unknown attachment",
                    )
            final.extend((u, {}) for u in uploads if u.index not in used)
        else:
            final.extend(kept.values())
            final.extend((u, {}) for u in uploads)
        if len(final) > 10:
            raise _ApiError(400, 30015, "Maximum number of attachments in a message reached (10)")

        def pick(key: str, default: Any) -> Any:
            if key in payload:
                return payload[key]
            return default if existing is None else getattr(existing, key)

        content = pick("content", "") or ""
        embeds = pick("embeds", []) or []
        components = pick("components", []) or []
        if existing is None:
            flags = int(payload.get("flags") or 0) & allowed_flags
        else:
            flags = existing.flags & ~(FLAG_LOADING | FLAG_SUPPRESS_EMBEDS)
            source = payload.get("flags", existing.flags)
            flags |= int(source or 0) & FLAG_SUPPRESS_EMBEDS
            if (
                existing.flags & FLAG_COMPONENTS_V2
                or int(payload.get("flags") or 0) & FLAG_COMPONENTS_V2
            ):
                flags |= FLAG_COMPONENTS_V2
        if not isinstance(content, str):
            errors.add((*path, "content"), "BASE_TYPE_STRING", "Must be a string.")
        elif len(content) > 2000:
            errors.add(
                (*path, "content"), "BASE_TYPE_MAX_LENGTH", "Must be 2000 or fewer in length."
            )
        _validate_embeds(embeds, (*path, "embeds"), errors)
        _validate_components(components, flags, (*path, "components"), errors)
        if flags & FLAG_COMPONENTS_V2 and (content or embeds):
            errors.add(
                (*path, "content") if content else (*path, "embeds"),
                "MESSAGE_CANNOT_USE_LEGACY_FIELDS_WITH_COMPONENTS_V2",
                "The 'content' and 'embeds' fields cannot be used when using "
                "MessageFlags.IS_COMPONENTS_V2",
            )
        errors.raise_if_any()
        if not (content or embeds or components or final):
            raise _ApiError(400, 50006, "Cannot send an empty message")
        return {
            "content": content,
            "embeds": embeds,
            "components": components,
            "flags": flags,
            "attachments": final,
        }

    def _commit(self, message: FakeMessage, fields: dict[str, Any]) -> None:
        attachments = []
        for item in fields["attachments"]:
            if isinstance(item, FakeAttachment):
                attachments.append(item)
            else:
                upload, entry = item
                attachments.append(
                    self._store_file(
                        message.channel_id,
                        entry.get("filename") or upload.filename,
                        upload.data,
                        upload.content_type,
                        description=entry.get("description"),
                    )
                )
        message.content = fields["content"]
        message.embeds = fields["embeds"]
        message.components = fields["components"]
        message.flags = fields["flags"]
        message.attachments = attachments

    def _create_message(
        self,
        channel_id: int,
        payload: dict[str, Any],
        uploads: list[_Upload],
        *,
        interaction: FakeInteraction | None = None,
        type: int = 0,
        path: tuple[Any, ...] = (),
        allowed_flags: int = _CREATE_FLAGS,
    ) -> FakeMessage:
        fields = self._prepare(
            payload, uploads, existing=None, path=path, allowed_flags=allowed_flags
        )
        message = FakeMessage(
            id=self._snowflake(),
            channel_id=channel_id,
            author_id=self.application_id,
            type=type,
            interaction_id=None if interaction is None else interaction.id,
            webhook_id=None if interaction is None else self.application_id,
        )
        self._commit(message, fields)
        self._messages[message.id] = message
        self._channels[channel_id]["last_message_id"] = str(message.id)
        if not message.ephemeral:
            self._announce("MESSAGE_CREATE", self._message_payload(message, for_gateway=True))
        return message

    def _edit_message(
        self,
        message: FakeMessage,
        payload: dict[str, Any],
        uploads: list[_Upload],
        *,
        path: tuple[Any, ...] = (),
    ) -> None:
        fields = self._prepare(payload, uploads, existing=message, path=path)
        self._commit(message, fields)
        record = copy.deepcopy(payload)
        if uploads:
            record["files"] = [{"filename": u.filename, "size": len(u.data)} for u in uploads]
        message.edits.append((time.monotonic(), record))
        message.edited_timestamp = _utcnow()
        if not message.ephemeral:
            self._announce("MESSAGE_UPDATE", self._message_payload(message, for_gateway=True))

    def _delete_message(self, message: FakeMessage) -> None:
        message.deleted = True
        if not message.ephemeral:
            self._announce(
                "MESSAGE_DELETE",
                {
                    "id": str(message.id),
                    "channel_id": str(message.channel_id),
                    "guild_id": self._channels[message.channel_id]["guild_id"],
                },
            )

    # ------------------------------------------------------------------ interactions (REST)

    async def _callback(self, request: web.Request) -> web.Response:
        payload, uploads = await self._read_body(request)
        it = self._interactions.get(_int(request.match_info["interaction_id"]))
        if it is None or it.token != request.match_info["token"]:
            raise _not_found(10062, "interaction")
        elapsed = time.monotonic() - it.dispatched_at
        if it.acknowledged:
            raise _ApiError(400, 40060, "Interaction has already been acknowledged.")
        if elapsed > self.ack_timeout:
            raise _not_found(10062, "interaction")
        rtype = payload.get("type")
        if rtype not in _VALID_CALLBACKS.get(it.type, set()):
            errors = _FormErrors()
            errors.add(
                ("type",), "INTERACTION_RESPONSE_TYPE_INVALID", "Invalid interaction response type"
            )
            errors.raise_if_any()
        data = payload.get("data") or {}
        flags = int(data.get("flags") or 0)
        message: FakeMessage | None = None
        if rtype == CHANNEL_MESSAGE:
            message = self._create_message(
                it.channel_id,
                data,
                uploads,
                interaction=it,
                type=20 if it.type == APPLICATION_COMMAND else 0,
                path=("data",),
                allowed_flags=_CREATE_FLAGS | FLAG_EPHEMERAL,
            )
            it.original_id = message.id
            it.ephemeral = message.ephemeral
        elif rtype == DEFERRED_CHANNEL_MESSAGE:
            message = FakeMessage(
                id=self._snowflake(),
                channel_id=it.channel_id,
                author_id=self.application_id,
                flags=FLAG_LOADING | (flags & FLAG_EPHEMERAL),
                type=20 if it.type == APPLICATION_COMMAND else 0,
                interaction_id=it.id,
                webhook_id=self.application_id,
            )
            self._messages[message.id] = message
            it.original_id = message.id
            it.ephemeral = message.ephemeral
            it._awaiting_first_followup = True
        elif rtype in (DEFERRED_UPDATE_MESSAGE, UPDATE_MESSAGE):
            source = self._messages.get(it.source_message_id or 0)
            if source is None or source.deleted:
                raise _not_found(10008, "Message")
            if rtype == UPDATE_MESSAGE:
                self._edit_message(source, data, uploads, path=("data",))
            it.original_id = source.id
            it.ephemeral = source.ephemeral
            message = source
        elif rtype == AUTOCOMPLETE_RESULT:
            it.choices = _validate_choices(data)
        elif rtype == MODAL:
            errors = _FormErrors()
            errors.length(("data", "custom_id"), data.get("custom_id"), 1, 100)
            errors.length(("data", "title"), data.get("title"), 1, 45)
            _validate_modal(data.get("components"), errors)
            errors.raise_if_any()
            it.modal = data
        it.response_type = rtype
        it.acknowledged_at = elapsed
        if request.query.get("with_response", "").lower() not in ("1", "true"):
            return self._no_content()
        body: dict[str, Any] = {
            "interaction": {
                "id": str(it.id),
                "type": it.type,
                "response_message_loading": rtype == DEFERRED_CHANNEL_MESSAGE,
                "response_message_ephemeral": it.ephemeral,
            }
        }
        if message is not None:
            body["interaction"]["response_message_id"] = str(message.id)
            body["resource"] = {"type": rtype, "message": self._message_payload(message)}
        else:
            body["resource"] = {"type": rtype}
        return self._json(body)

    def _token_interaction(self, request: web.Request) -> FakeInteraction:
        if request.match_info["application_id"] != str(self.application_id):
            raise _not_found(10015, "Webhook")
        it = self._by_token.get(request.match_info["token"])
        if it is None or it.token_expired:
            raise _ApiError(401, 50027, "Invalid Webhook Token")
        if not it.acknowledged:
            raise _not_found(10015, "Webhook")
        return it

    def _token_message(self, request: web.Request, it: FakeInteraction) -> FakeMessage:
        raw = request.match_info["message_id"]
        if raw == "@original":
            message = it.original
        else:
            ident = _int(raw)
            ids = {it.original_id, *(m.id for m in it.followups)}
            message = self._messages.get(ident) if ident in ids else None
        if message is None or message.deleted:
            raise _not_found(10008, "Message")
        return message

    async def _execute_webhook(self, request: web.Request) -> web.Response:
        payload, uploads = await self._read_body(request)
        it = self._token_interaction(request)
        original = it.original
        if it._awaiting_first_followup and original is not None and original.loading:
            # The first follow-up after a "thinking" defer fills in the deferred message.
            self._edit_message(original, payload, uploads)
            message = original
        else:
            message = self._create_message(
                it.channel_id,
                payload,
                uploads,
                interaction=it,
                allowed_flags=_CREATE_FLAGS | FLAG_EPHEMERAL,
            )
        it._awaiting_first_followup = False
        it.followups.append(message)
        if request.query.get("wait", "").lower() in ("1", "true"):
            return self._json(self._message_payload(message))
        return self._no_content()

    async def _get_webhook_message(self, request: web.Request) -> web.Response:
        it = self._token_interaction(request)
        return self._json(self._message_payload(self._token_message(request, it)))

    async def _edit_webhook_message(self, request: web.Request) -> web.Response:
        payload, uploads = await self._read_body(request)
        it = self._token_interaction(request)
        message = self._token_message(request, it)
        self._edit_message(message, payload, uploads)
        if message.id == it.original_id:
            it._awaiting_first_followup = False
        return self._json(self._message_payload(message))

    async def _delete_webhook_message(self, request: web.Request) -> web.Response:
        it = self._token_interaction(request)
        self._delete_message(self._token_message(request, it))
        return self._no_content()

    # ------------------------------------------------------------------ channel messages

    def _require(self, channel_id: int, needed: int) -> None:
        perms = self.permissions(self.application_id, channel_id)
        if not perms & PERM_VIEW_CHANNEL:
            raise _ApiError(403, 50001, "Missing Access")
        if perms & needed != needed:
            raise _ApiError(403, 50013, "Missing Permissions")

    def _channel_message(self, request: web.Request) -> FakeMessage:
        channel = self._api_channel(request)
        message = self._messages.get(_int(request.match_info["message_id"]))
        if (
            message is None
            or message.deleted
            or message.ephemeral
            or message.loading
            or str(message.channel_id) != channel["id"]
        ):
            raise _not_found(10008, "Message")
        return message

    async def _list_messages(self, request: web.Request) -> web.Response:
        channel_id = int(self._api_channel(request)["id"])
        self._require(channel_id, PERM_READ_MESSAGE_HISTORY)
        limit = max(1, min(int(request.query.get("limit", "50")), 100))
        before = request.query.get("before")
        after = request.query.get("after")
        messages = [m for m in self.messages_in(channel_id) if not m.ephemeral and not m.loading]
        if before:
            messages = [m for m in messages if m.id < int(before)]
        if after:
            messages = [m for m in messages if m.id > int(after)][:limit]
        messages = sorted(messages, key=lambda m: m.id, reverse=True)[:limit]
        return self._json([self._message_payload(m) for m in messages])

    async def _create_channel_message(self, request: web.Request) -> web.Response:
        payload, uploads = await self._read_body(request)
        channel_id = int(self._api_channel(request)["id"])
        thread = self._channels[channel_id]["type"] in THREAD_TYPES
        needed = PERM_SEND_MESSAGES_IN_THREADS if thread else PERM_SEND_MESSAGES
        self._require(channel_id, needed | (PERM_ATTACH_FILES if uploads else 0))
        nonce = payload.get("nonce")
        if nonce is not None:
            if not isinstance(nonce, str | int) or len(str(nonce)) > 25:
                raise _ApiError(
                    400,
                    50035,
                    "Invalid Form Body",
                    errors={
                        "nonce": {
                            "_errors": [
                                {"code": "BASE_TYPE_MAX_LENGTH", "message": "Must be 25 or fewer."}
                            ]
                        }
                    },
                )
            nonce = str(nonce)
            if payload.get("enforce_nonce"):
                now = time.monotonic()
                seen = self._nonces.get((self.application_id, nonce))
                if seen is not None and now - seen[0] < self.nonce_window and not seen[1].deleted:
                    return self._json(self._message_payload(seen[1]))
        message = self._create_message(channel_id, payload, uploads)
        if nonce is not None:
            message.nonce = nonce
            self._nonces[(self.application_id, nonce)] = (time.monotonic(), message)
        return self._json(self._message_payload(message))

    async def _get_channel_message(self, request: web.Request) -> web.Response:
        return self._json(self._message_payload(self._channel_message(request)))

    async def _edit_channel_message(self, request: web.Request) -> web.Response:
        payload, uploads = await self._read_body(request)
        message = self._channel_message(request)
        if message.author_id != self.application_id:
            raise _ApiError(403, 50005, "Cannot edit a message authored by another user")
        self._edit_message(message, payload, uploads)
        return self._json(self._message_payload(message))

    async def _delete_channel_message(self, request: web.Request) -> web.Response:
        message = self._channel_message(request)
        if message.author_id != self.application_id:
            self._require(message.channel_id, PERM_MANAGE_MESSAGES)
        self._delete_message(message)
        return self._no_content()

    async def _create_thread(self, request: web.Request) -> web.Response:
        """``POST /channels/{id}/threads`` without a message: a public (11) or private (12)
        thread in a text channel, announced with THREAD_CREATE."""
        payload, _ = await self._read_body(request)
        parent = self._api_channel(request)
        parent_id = int(parent["id"])
        kind = payload.get("type", 12)
        errors = _FormErrors()
        errors.length(("name",), payload.get("name"), 1, 100)
        if kind not in (11, 12):
            errors.add(("type",), "BASE_TYPE_CHOICES", "Value must be one of {11, 12}.")
        duration = payload.get("auto_archive_duration") or 4320
        if duration not in (60, 1440, 4320, 10080):
            errors.add(
                ("auto_archive_duration",),
                "BASE_TYPE_CHOICES",
                "Value must be one of {60, 1440, 4320, 10080}.",
            )
        errors.raise_if_any()
        if parent["type"] != 0:
            raise _ApiError(400, 50024, "Cannot execute action on this channel type")
        needed = PERM_CREATE_PUBLIC_THREADS if kind == 11 else PERM_CREATE_PRIVATE_THREADS
        self._require(parent_id, needed)
        thread_id = self._snowflake()
        now = _iso(_utcnow())
        thread: dict[str, Any] = {
            "id": str(thread_id),
            "type": kind,
            "guild_id": parent["guild_id"],
            "parent_id": str(parent_id),
            "owner_id": str(self.application_id),
            "name": payload["name"],
            "nsfw": parent["nsfw"],
            "last_message_id": None,
            "rate_limit_per_user": payload.get("rate_limit_per_user") or 0,
            "message_count": 0,
            "member_count": 1,
            "total_message_sent": 0,
            "flags": 0,
            "thread_metadata": {
                "archived": False,
                "auto_archive_duration": duration,
                "archive_timestamp": now,
                "locked": False,
                "invitable": bool(payload.get("invitable", True)),
                "create_timestamp": now,
            },
            "member": {
                "id": str(thread_id),
                "user_id": str(self.application_id),
                "join_timestamp": now,
                "flags": 0,
            },
        }
        self._channels[thread_id] = thread
        self._announce("THREAD_CREATE", {**thread, "newly_created": True})
        return self._json(thread, 201)

    async def _typing(self, request: web.Request) -> web.Response:
        self._require(int(self._api_channel(request)["id"]), PERM_SEND_MESSAGES)
        return self._no_content()


# ---------------------------------------------------------------------- validation helpers


def _event_guild(event: str, data: Mapping[str, Any]) -> int | None:
    """The server a gateway event belongs to (None: none, as for a direct message)."""
    raw = data.get("id") if event in ("GUILD_CREATE", "GUILD_UPDATE", "GUILD_DELETE") else None
    raw = raw if raw is not None else data.get("guild_id")
    return None if raw is None else int(raw)


def _on_shard(session: _Session, guild_id: int | None) -> bool:
    """Whether a session gets the events of this server: all of them without shards; else those
    of its shard's servers, and the ones outside any server on shard 0."""
    if session.shard is None:
        return True
    shard_id, shard_count = session.shard
    if guild_id is None:
        return shard_id == 0
    return shard_of(guild_id, shard_count) == shard_id


def _int_or_zero(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def _int(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise _ApiError(
            400,
            50035,
            "Invalid Form Body",
            errors={
                "id": {
                    "_errors": [
                        {"code": "NUMBER_TYPE_COERCE", "message": "Value is not snowflake."}
                    ]
                }
            },
        ) from None


def _image_size(data: bytes) -> tuple[int | None, int | None]:
    try:
        from PIL import Image
    except ImportError:
        return None, None
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.width, image.height
    except Exception:
        return None, None


def _embed_out(embed: dict[str, Any], attachments: Mapping[str, FakeAttachment]) -> dict[str, Any]:
    """An embed as Discord returns it: ``attachment://name`` urls point at the stored file."""
    out = copy.deepcopy(embed)
    out.setdefault("type", "rich")
    for key, url_key in (
        ("image", "url"),
        ("thumbnail", "url"),
        ("author", "icon_url"),
        ("footer", "icon_url"),
    ):
        part = out.get(key)
        if isinstance(part, dict) and isinstance(part.get(url_key), str):
            url = part[url_key]
            if url.startswith("attachment://") and url[13:] in attachments:
                attachment = attachments[url[13:]]
                part[url_key] = attachment.url
                if key in ("image", "thumbnail"):
                    part["proxy_url"] = attachment.url
                    if attachment.width is not None:
                        part["width"], part["height"] = attachment.width, attachment.height
    return out


def _validate_embeds(embeds: Any, path: tuple[Any, ...], errors: _FormErrors) -> None:
    if not isinstance(embeds, list):
        errors.add(path, "BASE_TYPE_LIST", "Must be a list.")
        return
    if len(embeds) > 10:
        errors.add(path, "BASE_TYPE_MAX_LENGTH", "Must be 10 or fewer in length.")
    total = 0
    for i, embed in enumerate(embeds):
        here = (*path, i)
        if not isinstance(embed, dict):
            errors.add(here, "DICT_TYPE_CONVERT", "Only dictionaries may be used in a DictType")
            continue

        def text(key: str, high: int, container: dict[str, Any], where: tuple[Any, ...]) -> int:
            value = container.get(key)
            if value is None:
                return 0
            errors.length((*where, key), value, 0, high)
            return len(value) if isinstance(value, str) else 0

        total += text("title", 256, embed, here)
        total += text("description", 4096, embed, here)
        if isinstance(embed.get("footer"), dict):
            total += text("text", 2048, embed["footer"], (*here, "footer"))
        if isinstance(embed.get("author"), dict):
            total += text("name", 256, embed["author"], (*here, "author"))
        fields = embed.get("fields") or []
        if len(fields) > 25:
            errors.add((*here, "fields"), "BASE_TYPE_MAX_LENGTH", "Must be 25 or fewer in length.")
        for j, field_ in enumerate(fields):
            where = (*here, "fields", j)
            errors.length((*where, "name"), field_.get("name"), 1, 256)
            errors.length((*where, "value"), field_.get("value"), 1, 1024)
            total += len(str(field_.get("name", ""))) + len(str(field_.get("value", "")))
    if total > 6000:
        errors.add(path, "MAX_EMBED_SIZE_EXCEEDED", "Embed size exceeds maximum size of 6000")


def _validate_components(
    components: Any, flags: int, path: tuple[Any, ...], errors: _FormErrors
) -> None:
    if not isinstance(components, list):
        errors.add(path, "BASE_TYPE_LIST", "Must be a list.")
        return
    if flags & FLAG_COMPONENTS_V2:
        if sum(1 for _ in _walk_components(components)) > 40:
            errors.add(path, "BASE_TYPE_MAX_LENGTH", "Must be 40 or fewer in length.")
    else:
        if len(components) > 5:
            errors.add(path, "BASE_TYPE_MAX_LENGTH", "Must be 5 or fewer in length.")
        for i, row in enumerate(components):
            here = (*path, i)
            if not isinstance(row, dict) or row.get("type") != _COMPONENT_ACTION_ROW:
                errors.add(
                    (*here, "type"),
                    "UNION_TYPE_CHOICES",
                    'Value of field "type" must be one of (1,).',
                )
                continue
            children = row.get("components") or []
            if not 1 <= len(children) <= 5:
                errors.add(
                    (*here, "components"),
                    "BASE_TYPE_BAD_LENGTH",
                    "Must be between 1 and 5 in length.",
                )
            if len(children) > 1 and any(c.get("type") in _COMPONENT_SELECTS for c in children):
                errors.add(
                    (*here, "components"),
                    "COMPONENT_LAYOUT_WIDTH_EXCEEDED",
                    "The specified component exceeds the maximum width",
                )
    seen: set[str] = set()
    for where, component in _walk_with_paths(components, path):
        kind = component.get("type")
        custom_id = component.get("custom_id")
        if kind == _COMPONENT_BUTTON:
            style = component.get("style")
            if style == _BUTTON_LINK:
                if not component.get("url"):
                    errors.add((*where, "url"), "BASE_TYPE_REQUIRED", "This field is required")
                if custom_id is not None:
                    errors.add(
                        (*where, "custom_id"),
                        "BUTTON_LINK_CUSTOM_ID",
                        "A link button cannot have a custom_id",
                    )
            elif style != _BUTTON_PREMIUM and custom_id is None:
                errors.add((*where, "custom_id"), "BASE_TYPE_REQUIRED", "This field is required")
            if component.get("label") is not None:
                errors.length((*where, "label"), component["label"], 0, 80)
        elif kind in _COMPONENT_SELECTS:
            if custom_id is None:
                errors.add((*where, "custom_id"), "BASE_TYPE_REQUIRED", "This field is required")
            if kind == 3 and len(component.get("options") or []) > 25:
                errors.add(
                    (*where, "options"), "BASE_TYPE_MAX_LENGTH", "Must be 25 or fewer in length."
                )
            if component.get("placeholder") is not None:
                errors.length((*where, "placeholder"), component["placeholder"], 0, 150)
        if custom_id is not None:
            errors.length((*where, "custom_id"), custom_id, 1, 100)
            if custom_id in seen:
                errors.add(
                    path,
                    "COMPONENT_CUSTOM_ID_DUPLICATED",
                    "Component custom id cannot be duplicated",
                )
            seen.add(str(custom_id))


def _validate_modal(components: Any, errors: _FormErrors) -> None:
    """A modal holds 1-5 rows (or labels), each with one text input of Discord's limits."""
    path: tuple[Any, ...] = ("data", "components")
    if not isinstance(components, list) or not 1 <= len(components) <= 5:
        errors.add(path, "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 5 in length.")
        return
    seen: set[str] = set()
    for i, row in enumerate(components):
        inner = row.get("components") if row.get("type") == _COMPONENT_ACTION_ROW else None
        if row.get("type") == 18:  # a label around one component
            inner = [row.get("component")] if isinstance(row.get("component"), dict) else None
            errors.length((*path, i, "label"), row.get("label"), 1, 45)
        if not isinstance(inner, list) or len(inner) != 1:
            errors.add((*path, i), "BASE_TYPE_BAD_LENGTH", "Must be 1 in length.")
            continue
        text = inner[0]
        where = (*path, i, "components", 0)
        if text.get("type") != 4:
            errors.add((*where, "type"), "UNION_TYPE_CHOICES", "Value must be one of (4,).")
            continue
        custom_id = text.get("custom_id")
        errors.length((*where, "custom_id"), custom_id, 1, 100)
        if custom_id in seen:
            errors.add(path, "COMPONENT_CUSTOM_ID_DUPLICATED", "Component custom id duplicated")
        seen.add(str(custom_id))
        if row.get("type") == _COMPONENT_ACTION_ROW:
            errors.length((*where, "label"), text.get("label"), 1, 45)
        if text.get("style") not in (1, 2):
            errors.add((*where, "style"), "BASE_TYPE_CHOICES", "Value must be one of {1, 2}.")
        for key, high in (("value", 4000), ("placeholder", 100)):
            if text.get(key) is not None:
                errors.length((*where, key), text[key], 0, high)
        low, high = text.get("min_length", 0), text.get("max_length", 4000)
        if not (0 <= low <= 4000 and 1 <= high <= 4000 and low <= high):
            errors.add((*where, "max_length"), "NUMBER_TYPE_MAX", "length limits out of range")
        value = text.get("value")
        if isinstance(value, str) and len(value) > high:
            errors.add((*where, "value"), "BASE_TYPE_MAX_LENGTH", f"Must be {high} or fewer.")


def _walk_with_paths(
    components: Sequence[Any], path: tuple[Any, ...]
) -> Iterator[tuple[tuple[Any, ...], dict[str, Any]]]:
    for i, component in enumerate(components):
        if not isinstance(component, dict):
            continue
        here = (*path, i)
        yield here, component
        yield from _walk_with_paths(component.get("components") or [], (*here, "components"))
        accessory = component.get("accessory")
        if isinstance(accessory, dict):
            yield (*here, "accessory"), accessory


def _validate_choices(data: dict[str, Any]) -> list[dict[str, Any]]:
    errors = _FormErrors()
    choices = data.get("choices")
    if not isinstance(choices, list):
        errors.add(("data", "choices"), "BASE_TYPE_REQUIRED", "This field is required")
        errors.raise_if_any()
    assert isinstance(choices, list)
    if len(choices) > 25:
        errors.add(("data", "choices"), "BASE_TYPE_MAX_LENGTH", "Must be 25 or fewer in length.")
    for i, choice in enumerate(choices):
        errors.length(("data", "choices", i, "name"), choice.get("name"), 1, 100)
        value = choice.get("value")
        if isinstance(value, str):
            errors.length(("data", "choices", i, "value"), value, 1, 100)
        elif isinstance(value, bool) or not isinstance(value, int | float):
            errors.add(
                ("data", "choices", i, "value"), "BASE_TYPE_STRING", "Must be a string or number."
            )
    errors.raise_if_any()
    return choices


def _command_size(command: dict[str, Any]) -> int:
    """Characters Discord counts towards a command's 8000-character total."""
    size = len(str(command.get("name", ""))) + len(str(command.get("description", "")))
    for option in command.get("options") or []:
        if isinstance(option, dict):
            size += _command_size(option)
            for choice in option.get("choices") or []:
                size += len(str(choice.get("name", ""))) + len(str(choice.get("value", "")))
    return size
