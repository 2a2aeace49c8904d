"""API keys: created on the command line, shown once, stored hashed.

A key is `cc_` and 43 random URL-safe characters (256 bits), so a plain SHA-256 of it is a safe
thing to store: it cannot be reversed or guessed. Each key has a webhook signing secret (also
shown once) used to sign the webhooks of its jobs, its own queue limit and, optionally, the only
workflows it may use. Its role is `member` (runs the workflows it may use) or `admin` (also adds
and removes workflows and sees every job); keys made before roles existed are members. Keys live
in the store's settings table under the scope `apikey`; revoking one also ends the console
sessions it signed in.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass

from bot.admission import Requester
from bot.errors import InvalidValue, NotFound
from bot.jobs.store import Store
from bot.settings import LimitSettings

SCOPE = "apikey"
SESSION_SCOPE = "console-session"  # the console's sessions (bot/http/console/sessions.py)
PREFIX = "cc_"
ROLES = ("member", "admin")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class ApiKey:
    """A key as stored: never the key itself."""

    name: str
    key_hash: str
    webhook_secret: str
    created_at: float
    limit_queued: int | None = None
    workflows: tuple[str, ...] | None = None
    role: str = "member"

    @property
    def is_admin(self) -> bool:
        """Whether it may manage workflows and see every job."""
        return self.role == "admin"

    @property
    def member_id(self) -> str:
        """Its member id in the fair queue."""
        return f"key:{self.name}"

    def requester(self, limits: LimitSettings) -> Requester:
        """The key as a member of the queue, with its own limits and workflows."""
        own = limits
        if self.limit_queued is not None:
            own = limits.model_copy(update={"max_queued_per_member": self.limit_queued})
        return Requester(
            id=self.member_id,
            name=self.name,
            # a key given a list of workflows may use exactly those, NSFW ones included
            nsfw_channel=self.workflows is not None,
            workflows=frozenset(self.workflows) if self.workflows is not None else None,
            limits=own,
            meta={"api_key": self.name},
        )


@dataclass(frozen=True)
class CreatedKey:
    key: ApiKey
    secret: str  # the bearer key, shown once
    webhook_secret: str


class KeyStore:
    """Create, list, revoke and check API keys."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def create(
        self,
        name: str,
        *,
        limit_queued: int | None = None,
        workflows: list[str] | None = None,
        role: str = "member",
    ) -> CreatedKey:
        """A new key called `name`, with the role `member` or `admin`.

        Raises:
            InvalidValue: a bad name, a name in use, a limit below 1 or an unknown role.
        """
        if not NAME_RE.match(name):
            raise InvalidValue("name", "use letters, digits, '.', '_' or '-' (64 at most)")
        if self.get(name) is not None:
            raise InvalidValue("name", f"a key called '{name}' exists; revoke it first")
        if limit_queued is not None and limit_queued < 1:
            raise InvalidValue("limit-queued", "must be at least 1")
        if role not in ROLES:
            raise InvalidValue("role", f"must be one of: {', '.join(ROLES)}")
        secret = PREFIX + secrets.token_urlsafe(32)
        key = ApiKey(
            name=name,
            key_hash=hash_key(secret),
            webhook_secret="whsec_" + secrets.token_urlsafe(32),
            created_at=time.time(),
            limit_queued=limit_queued,
            workflows=tuple(workflows) if workflows else None,
            role=role,
        )
        self.store.set_setting(SCOPE, name, key.__dict__)
        return CreatedKey(key, secret, key.webhook_secret)

    def get(self, name: str) -> ApiKey | None:
        data = self.store.get_setting(SCOPE, name)
        return _load(data) if data else None

    def list(self) -> list[ApiKey]:
        keys = [_load(v) for (_, _), v in self.store.settings_in(SCOPE).items()]
        return sorted(keys, key=lambda k: k.name)

    def revoke(self, name: str) -> None:
        """Revoke a key and end every console session it signed in.

        Raises:
            NotFound: there is no such key.
        """
        if self.get(name) is None:
            raise NotFound(f"There is no key called '{name}'.")
        with self.store.transaction():
            self.store.set_setting(SCOPE, name, None)
            for (_, session), data in self.store.settings_in(SESSION_SCOPE).items():
                if isinstance(data, dict) and data.get("key") == name:
                    self.store.set_setting(SESSION_SCOPE, session, None)

    def check(self, secret: str) -> ApiKey | None:
        """The key whose secret this is, or None."""
        if not secret.startswith(PREFIX):
            return None
        digest = hash_key(secret)
        found = None
        for key in self.list():
            if hmac.compare_digest(key.key_hash, digest):
                found = key
        return found


def _load(data: dict[str, object]) -> ApiKey:
    workflows = data.get("workflows")
    limit = data.get("limit_queued")
    role = data.get("role")
    return ApiKey(
        name=str(data["name"]),
        key_hash=str(data["key_hash"]),
        webhook_secret=str(data["webhook_secret"]),
        created_at=float(data.get("created_at") or 0),  # type: ignore[arg-type]
        limit_queued=int(limit) if isinstance(limit, int) else None,
        workflows=tuple(str(w) for w in workflows) if isinstance(workflows, list) else None,
        role=role if isinstance(role, str) and role in ROLES else "member",
    )
