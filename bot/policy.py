"""What each server and channel may generate, decided by its moderators, kept in the store.

Resolution of "is workflow W allowed in channel C of server G":
a channel setting for W wins (a thread without one follows its parent channel), then the server
setting for W, else allowed. Workflows marked
`nsfw: true` are only ever allowed in age-restricted channels. Every change is audited.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from time import monotonic
from typing import Any

from pydantic import ValidationError

from bot.errors import InvalidValue, NotAllowed, NotFound
from bot.jobs.store import AuditEntry, Store
from bot.settings import LimitSettings, Settings
from bot.workflows import Workflow

LIMIT_KEYS = (
    "max_queued_per_member",
    "max_running_per_member",
    "cooldown_seconds",
    "max_count",
    "moderators_exempt",
    "moderators_first",
)

#: Seconds a server's limits are used as read before the store is asked again (a change made
#: here applies at once; one made by another process within this long).
LIMITS_FRESH = 1.0
LIMITS_CACHED = 4096  # servers whose limits are kept at once


def _g(guild_id: str) -> str:
    return f"guild:{guild_id}"


def _c(channel_id: str) -> str:
    return f"channel:{channel_id}"


class Policy:
    """Per-server and per-channel workflow policy, limits, caps and banned words."""

    def __init__(
        self,
        store: Store,
        settings: Settings,
        workflows: Callable[[], Mapping[str, Workflow]],
    ) -> None:
        self.store = store
        self.settings = settings
        self._workflows = workflows
        self._parent_of: Callable[[str], str | None] = lambda channel_id: None
        # a server's limits as last read, and when: the runner asks for them on every dispatch
        self._limits: dict[str, tuple[float, LimitSettings]] = {}

    def set_parent_lookup(self, parent_of: Callable[[str], str | None]) -> None:
        """How to find a thread's channel: a thread without a setting of its own follows it."""
        self._parent_of = parent_of

    def _channel_setting(self, channel_id: str, key: str) -> Any:
        """A channel's setting; for a thread without its own, its parent channel's."""
        value = self.store.get_setting(_c(channel_id), key)
        if value is None:
            parent = self._parent_of(channel_id)
            if parent is not None and parent != channel_id:
                value = self.store.get_setting(_c(parent), key)
        return value

    # workflows ------------------------------------------------------------------------------
    def is_allowed(
        self, name: str, guild_id: str | None, channel_id: str | None, *, nsfw_channel: bool
    ) -> bool:
        workflow = self._workflows().get(name)
        if workflow is None:
            return False
        if workflow.spec.nsfw and not nsfw_channel:
            return False
        if guild_id is None:
            return True
        if channel_id is not None:
            value = self._channel_setting(channel_id, f"wf:{name}")
            if value is not None:
                return bool(value)
        value = self.store.get_setting(_g(guild_id), f"wf:{name}")
        return True if value is None else bool(value)

    def allowed(
        self, guild_id: str | None, channel_id: str | None, *, nsfw_channel: bool
    ) -> list[str]:
        return [
            name
            for name in sorted(self._workflows())
            if self.is_allowed(name, guild_id, channel_id, nsfw_channel=nsfw_channel)
        ]

    def check_allowed(
        self, name: str, guild_id: str | None, channel_id: str | None, *, nsfw_channel: bool
    ) -> Workflow:
        """The workflow, if this channel may use it.

        Raises:
            NotFound: no such workflow.
            NotAllowed: moderators disabled it here, or it is NSFW outside an age-restricted
                channel.
        """
        workflow = self._workflows().get(name)
        if workflow is None:
            allowed = ", ".join(self.allowed(guild_id, channel_id, nsfw_channel=nsfw_channel))
            raise NotFound(f"There is no workflow called `{name}`. Try one of: {allowed or 'none'}")
        if workflow.spec.nsfw and not nsfw_channel:
            raise NotAllowed(f"`{name}` is marked NSFW: use it in an age-restricted channel.")
        if not self.is_allowed(name, guild_id, channel_id, nsfw_channel=nsfw_channel):
            raise NotAllowed(f"`{name}` is not enabled in this channel by the moderators.")
        return workflow

    def set_enabled(
        self,
        guild_id: str,
        channel_id: str | None,
        name: str,
        enabled: bool,
        actor: tuple[str, str],
    ) -> None:
        if name not in self._workflows():
            raise NotFound(f"There is no workflow called `{name}`.")
        scope = _c(channel_id) if channel_id else _g(guild_id)
        self.store.set_setting(scope, f"wf:{name}", enabled)
        where = f"in <#{channel_id}>" if channel_id else "server-wide"
        self._audit(guild_id, actor, "enable" if enabled else "disable", f"{name} {where}")

    def default_workflow(self, guild_id: str | None, channel_id: str | None) -> str:
        if channel_id is not None:
            value = self._channel_setting(channel_id, "default")
            if value:
                return str(value)
        if guild_id is not None:
            value = self.store.get_setting(_g(guild_id), "default")
            if value:
                return str(value)
        return self.settings.workflows.default

    def set_default(
        self,
        guild_id: str,
        channel_id: str | None,
        name: str,
        actor: tuple[str, str],
        *,
        nsfw_channel: bool = False,
    ) -> None:
        """Make `name` what /imagine uses without a workflow option, server-wide or in a channel.

        Raises:
            NotFound: no such workflow.
            NotAllowed: the workflow is NSFW and the scope is not an age-restricted channel.
        """
        workflow = self._workflows().get(name)
        if workflow is None:
            raise NotFound(f"There is no workflow called `{name}`.")
        if workflow.spec.nsfw and not (channel_id and nsfw_channel):
            raise NotAllowed(
                f"`{name}` is marked NSFW: it can only be the default of an age-restricted channel."
            )
        scope = _c(channel_id) if channel_id else _g(guild_id)
        self.store.set_setting(scope, "default", name)
        where = f"in <#{channel_id}>" if channel_id else "server-wide"
        self._audit(guild_id, actor, "default", f"{name} {where}")

    # moderators -----------------------------------------------------------------------------
    def _listed(self, guild_id: str, key: str) -> list[str]:
        """A server's list setting (moderator roles, banned words)."""
        return [str(item) for item in self.store.get_setting(_g(guild_id), key, [])]

    def _set_listed(self, guild_id: str, key: str, item: str, add: bool) -> None:
        """Add `item` to a server's list setting, or take it out."""
        items = self._listed(guild_id, key)
        if add and item not in items:
            items.append(item)
        elif not add and item in items:
            items.remove(item)
        self.store.set_setting(_g(guild_id), key, items)

    def moderator_roles(self, guild_id: str) -> list[str]:
        return self._listed(guild_id, "moderator_roles")

    def set_moderator_role(
        self, guild_id: str, role_id: str, add: bool, actor: tuple[str, str]
    ) -> None:
        self._set_listed(guild_id, "moderator_roles", role_id, add)
        self._audit(
            guild_id, actor, "moderators add" if add else "moderators remove", f"<@&{role_id}>"
        )

    # limits ---------------------------------------------------------------------------------
    def limits(self, guild_id: str | None) -> LimitSettings:
        """The server's limits: the settings' with its moderators' overrides. Read again from
        the store at most every `LIMITS_FRESH` seconds (at once after this policy changes them);
        the runner asks for them each time it hands out a job."""
        if guild_id is None:
            return self.settings.limits
        now = monotonic()
        cached = self._limits.get(guild_id)
        if cached is not None and now - cached[0] < LIMITS_FRESH:
            return cached[1]
        overrides = self.store.get_setting(_g(guild_id), "limits", {})
        limits = self.settings.limits.model_copy(update=overrides)
        if len(self._limits) >= LIMITS_CACHED:
            self._limits.clear()
        self._limits[guild_id] = (now, limits)
        return limits

    def set_limit(self, guild_id: str, key: str, value: Any, actor: tuple[str, str]) -> None:
        """Override one of the settings' `limits` in this server.

        Raises:
            InvalidValue: unknown limit, or a value the settings would refuse (says why).
        """
        if key not in LIMIT_KEYS:
            raise InvalidValue("limit", f"unknown limit '{key}'; one of {', '.join(LIMIT_KEYS)}")
        try:
            checked = LimitSettings.model_validate(
                {**self.limits(guild_id).model_dump(), key: value}
            )
        except ValidationError as exc:
            reason = exc.errors()[0]["msg"] if exc.errors() else "not valid"
            raise InvalidValue(key, f"'{value}': {reason}") from None
        overrides = dict(self.store.get_setting(_g(guild_id), "limits", {}))
        overrides[key] = getattr(checked, key)
        self.store.set_setting(_g(guild_id), "limits", overrides)
        self._limits.pop(guild_id, None)
        self._audit(guild_id, actor, "limit", f"{key} = {overrides[key]}")

    def caps(self, guild_id: str | None) -> dict[str, dict[str, Any]]:
        if guild_id is None:
            return {}
        return dict(self.store.get_setting(_g(guild_id), "caps", {}))

    def set_cap(
        self,
        guild_id: str,
        param: str,
        *,
        maximum: float | None = None,
        choices: list[str] | None = None,
        actor: tuple[str, str],
    ) -> None:
        caps = self.caps(guild_id)
        cap: dict[str, Any] = {}
        if maximum is not None:
            cap["max"] = maximum
        if choices:
            cap["choices"] = choices
        if cap:
            caps[param] = cap
        else:
            caps.pop(param, None)
        self.store.set_setting(_g(guild_id), "caps", caps)
        detail = f"{param}: " + (", ".join(f"{k}={v}" for k, v in cap.items()) or "removed")
        self._audit(guild_id, actor, "cap", detail)

    def check_caps(
        self, guild_id: str | None, values: Mapping[str, Any], workflow: Workflow | None = None
    ) -> None:
        """Check values against this server's caps; with `workflow`, its defaults count too
        (a default of 40 steps is over a cap of 30 just as a typed 40 is).

        Raises:
            InvalidValue: a value is over a cap (names the parameter and the cap).
        """
        caps = self.caps(guild_id)
        if not caps:
            return
        effective = dict(values)
        if workflow is not None:
            for param in workflow.params:
                if effective.get(param.name) is None and param.default is not None:
                    effective[param.name] = param.default
        for param_name, cap in caps.items():
            value = effective.get(param_name)
            if value is None:
                continue
            if (
                "max" in cap
                and isinstance(value, int | float)
                and not isinstance(value, bool)
                and value > cap["max"]
            ):
                raise InvalidValue(param_name, f"this server allows at most {cap['max']:g}")
            if "choices" in cap and str(value) not in cap["choices"]:
                raise InvalidValue(
                    param_name, "this server allows only " + ", ".join(cap["choices"])
                )

    # banned words ---------------------------------------------------------------------------
    def banned_words(self, guild_id: str | None) -> list[str]:
        if guild_id is None:
            return []
        return self._listed(guild_id, "banned_words")

    def set_banned_word(self, guild_id: str, word: str, add: bool, actor: tuple[str, str]) -> None:
        word = word.strip().lower()
        if not word:
            raise InvalidValue("word", "must not be empty")
        self._set_listed(guild_id, "banned_words", word, add)
        self._audit(guild_id, actor, "banned add" if add else "banned remove", "one word")

    def check_prompt(self, guild_id: str | None, texts: Mapping[str, str]) -> None:
        """Raises NotAllowed when a text value contains a word this server bans."""
        words = self.banned_words(guild_id)
        if not words:
            return
        for param, text in texts.items():
            lowered = text.lower()
            for word in words:
                if re.search(rf"(?<!\w){re.escape(word)}(?!\w)", lowered):
                    raise NotAllowed(
                        f"Your `{param}` contains a word this server does not allow. "
                        "Please rephrase it."
                    )

    # audit ----------------------------------------------------------------------------------
    def record(self, guild_id: str, actor: tuple[str, str], action: str, detail: str) -> None:
        """Add a change made outside the policy (an imported workflow) to the audit log."""
        self._audit(guild_id, actor, action, detail)

    def _audit(self, guild_id: str, actor: tuple[str, str], action: str, detail: str) -> None:
        self.store.audit(guild_id, actor[0], actor[1], action, detail)

    def audit_log(self, guild_id: str, limit: int = 20) -> list[AuditEntry]:
        return self.store.audit_log(guild_id, limit)
