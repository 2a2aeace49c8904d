"""bot/policy.py: workflow policy, limits, caps, banned words and the audit log, on a real store."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.errors import InvalidValue, NotAllowed, NotFound
from bot.jobs.store import Store
from bot.policy import Policy
from bot.settings import Settings
from bot.workflows import Workflow, load_workflows
from tests.conftest import WORKFLOWS

GUILD, OTHER_GUILD = "100", "200"
GENERAL, ART = "11", "12"
MOD = ("7", "Mod")


@pytest.fixture(scope="module")
def workflows() -> dict[str, Workflow]:
    loaded, problems = load_workflows(WORKFLOWS)
    assert not problems
    loaded = {name: w for name, w in loaded.items() if name.startswith("sd15-")}  # two plain ones
    txt2img = loaded["sd15-txt2img"]
    spicy = dataclasses.replace(
        txt2img, name="spicy", spec=txt2img.spec.model_copy(update={"nsfw": True})
    )
    return {**loaded, "spicy": spicy}


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "policy.sqlite3")
    yield s
    s.close()


@pytest.fixture
def policy(store: Store, workflows: dict[str, Workflow]) -> Policy:
    return Policy(store, Settings(), lambda: workflows)


def allowed(policy: Policy, channel: str = GENERAL, *, nsfw: bool = False) -> list[str]:
    return policy.allowed(GUILD, channel, nsfw_channel=nsfw)


def test_everything_but_nsfw_is_allowed_by_default(policy: Policy) -> None:
    assert allowed(policy) == ["sd15-img2img", "sd15-txt2img"]
    assert allowed(policy, nsfw=True) == ["sd15-img2img", "sd15-txt2img", "spicy"]
    with pytest.raises(NotAllowed, match="age-restricted"):
        policy.check_allowed("spicy", GUILD, GENERAL, nsfw_channel=False)


def test_channel_setting_wins_over_the_server_setting(policy: Policy) -> None:
    policy.set_enabled(GUILD, None, "sd15-img2img", False, MOD)
    policy.set_enabled(GUILD, ART, "sd15-img2img", True, MOD)
    policy.set_enabled(GUILD, ART, "sd15-txt2img", False, MOD)
    assert allowed(policy) == ["sd15-txt2img"]
    assert allowed(policy, ART) == ["sd15-img2img"]
    assert policy.allowed(OTHER_GUILD, "99", nsfw_channel=False) == [
        "sd15-img2img",
        "sd15-txt2img",
    ]
    with pytest.raises(NotAllowed, match="not enabled in this channel"):
        policy.check_allowed("sd15-txt2img", GUILD, ART, nsfw_channel=False)


def test_enabling_does_not_make_nsfw_usable_in_a_safe_channel(policy: Policy) -> None:
    policy.set_enabled(GUILD, GENERAL, "spicy", True, MOD)
    assert "spicy" not in allowed(policy)


def test_unknown_workflow_is_named_with_the_allowed_ones(policy: Policy) -> None:
    policy.set_enabled(GUILD, None, "sd15-img2img", False, MOD)
    with pytest.raises(NotFound, match=r"`nope`.*one of: sd15-txt2img$"):
        policy.check_allowed("nope", GUILD, GENERAL, nsfw_channel=False)
    with pytest.raises(NotFound):
        policy.set_enabled(GUILD, None, "nope", True, MOD)


def test_default_workflow_channel_then_server_then_settings(policy: Policy) -> None:
    assert policy.default_workflow(GUILD, GENERAL) == "sd15-txt2img"
    policy.set_default(GUILD, None, "sd15-img2img", MOD)
    assert policy.default_workflow(GUILD, GENERAL) == "sd15-img2img"
    policy.set_default(GUILD, ART, "sd15-txt2img", MOD)
    assert policy.default_workflow(GUILD, ART) == "sd15-txt2img"
    assert policy.default_workflow(OTHER_GUILD, "99") == "sd15-txt2img"


def test_nsfw_default_only_for_an_age_restricted_channel(policy: Policy) -> None:
    with pytest.raises(NotAllowed):
        policy.set_default(GUILD, None, "spicy", MOD)
    with pytest.raises(NotAllowed):
        policy.set_default(GUILD, GENERAL, "spicy", MOD, nsfw_channel=False)
    policy.set_default(GUILD, ART, "spicy", MOD, nsfw_channel=True)
    assert policy.default_workflow(GUILD, ART) == "spicy"


def test_policy_is_kept_in_the_store(
    store: Store, workflows: dict[str, Workflow], tmp_path: Path
) -> None:
    first = Policy(store, Settings(), lambda: workflows)
    first.set_enabled(GUILD, None, "sd15-img2img", False, MOD)
    first.set_moderator_role(GUILD, "55", True, MOD)
    store.close()
    reopened = Store(tmp_path / "policy.sqlite3")
    try:
        again = Policy(reopened, Settings(), lambda: workflows)
        assert again.allowed(GUILD, GENERAL, nsfw_channel=False) == ["sd15-txt2img"]
        assert again.moderator_roles(GUILD) == ["55"]
    finally:
        reopened.close()


def test_moderator_roles_add_and_remove(policy: Policy) -> None:
    policy.set_moderator_role(GUILD, "55", True, MOD)
    policy.set_moderator_role(GUILD, "55", True, MOD)
    policy.set_moderator_role(GUILD, "66", True, MOD)
    assert policy.moderator_roles(GUILD) == ["55", "66"]
    policy.set_moderator_role(GUILD, "55", False, MOD)
    assert policy.moderator_roles(GUILD) == ["66"]
    assert policy.moderator_roles(OTHER_GUILD) == []


def test_limits_override_the_settings_per_server(policy: Policy) -> None:
    policy.set_limit(GUILD, "max_queued_per_member", "20", MOD)
    policy.set_limit(GUILD, "moderators_first", True, MOD)
    assert policy.limits(GUILD).max_queued_per_member == 20
    assert policy.limits(GUILD).moderators_first is True
    assert policy.limits(GUILD).max_running_per_member == 1  # untouched: the settings' value
    assert policy.limits(OTHER_GUILD).max_queued_per_member == 5


@pytest.mark.parametrize(
    ("key", "value", "says"),
    [
        ("max_count", "11", "less than or equal to 10"),
        ("max_count", "lots", "valid integer"),
        ("cooldown_seconds", "-1", "greater than or equal to 0"),
        ("nonsense", "1", "unknown limit"),
    ],
)
def test_bad_limits_are_refused_with_the_reason(
    policy: Policy, key: str, value: str, says: str
) -> None:
    with pytest.raises(InvalidValue, match=says):
        policy.set_limit(GUILD, key, value, MOD)
    assert policy.limits(GUILD) == Settings().limits
    assert policy.audit_log(GUILD) == []


def test_caps_on_numbers_and_choices(policy: Policy, workflows: dict[str, Workflow]) -> None:
    policy.set_cap(GUILD, "steps", maximum=30, actor=MOD)
    policy.set_cap(GUILD, "size", choices=["square", "portrait"], actor=MOD)
    policy.check_caps(GUILD, {"steps": 30, "size": "portrait"})
    with pytest.raises(InvalidValue, match=r"`steps`: this server allows at most 30$"):
        policy.check_caps(GUILD, {"steps": 31})
    with pytest.raises(InvalidValue, match=r"`size`: .*only square, portrait"):
        policy.check_caps(GUILD, {"size": "landscape"})
    policy.check_caps(OTHER_GUILD, {"steps": 50, "size": "landscape"})
    # the workflow's defaults count when the member gives no value
    policy.set_cap(GUILD, "steps", maximum=10, actor=MOD)
    with pytest.raises(InvalidValue, match="`steps`"):
        policy.check_caps(GUILD, {}, workflows["sd15-txt2img"])
    policy.check_caps(GUILD, {"steps": 8}, workflows["sd15-txt2img"])
    # a cap with neither maximum nor choices is removed
    policy.set_cap(GUILD, "steps", actor=MOD)
    assert "steps" not in policy.caps(GUILD)


def test_banned_words_match_whole_words_and_are_not_echoed(policy: Policy) -> None:
    policy.set_banned_word(GUILD, "  Dragon ", True, MOD)
    assert policy.banned_words(GUILD) == ["dragon"]
    policy.check_prompt(GUILD, {"prompt": "a dragonfly over snapdragons"})
    with pytest.raises(NotAllowed) as caught:
        policy.check_prompt(GUILD, {"prompt": "ok", "negative": "no DRAGON, please"})
    assert "`negative`" in caught.value.message
    assert "dragon" not in caught.value.message.lower()
    policy.check_prompt(OTHER_GUILD, {"prompt": "dragon"})
    policy.set_banned_word(GUILD, "dragon", False, MOD)
    policy.check_prompt(GUILD, {"prompt": "dragon"})
    with pytest.raises(InvalidValue):
        policy.set_banned_word(GUILD, "   ", True, MOD)


def test_every_change_is_audited_newest_first(policy: Policy) -> None:
    policy.set_enabled(GUILD, None, "sd15-img2img", False, MOD)
    policy.set_default(GUILD, ART, "sd15-txt2img", ("8", "Owner"))
    policy.set_limit(GUILD, "max_count", 2, MOD)
    policy.set_cap(GUILD, "steps", maximum=30, actor=MOD)
    policy.set_banned_word(GUILD, "secret", True, MOD)
    policy.set_moderator_role(GUILD, "55", True, MOD)
    log = policy.audit_log(GUILD)
    assert [(e.actor_id, e.action) for e in log] == [
        ("7", "moderators add"),
        ("7", "banned add"),
        ("7", "cap"),
        ("7", "limit"),
        ("8", "default"),
        ("7", "disable"),
    ]
    assert log[-1].detail == "sd15-img2img server-wide"
    assert log[-2].actor_name == "Owner" and log[-2].detail == f"sd15-txt2img in <#{ART}>"
    assert "secret" not in log[1].detail
    assert all(e.at > 0 for e in log)
    assert policy.audit_log(OTHER_GUILD) == []


def test_a_thread_follows_its_channel_unless_it_has_its_own_setting(policy: Policy) -> None:
    thread = "13"
    policy.set_parent_lookup(lambda channel: ART if channel == thread else None)
    policy.set_enabled(GUILD, ART, "sd15-img2img", False, MOD)
    policy.set_default(GUILD, ART, "sd15-txt2img", MOD)
    assert allowed(policy, thread) == ["sd15-txt2img"]
    assert policy.default_workflow(GUILD, thread) == "sd15-txt2img"
    policy.set_enabled(GUILD, thread, "sd15-img2img", True, MOD)  # the thread's own wins
    assert allowed(policy, thread) == ["sd15-img2img", "sd15-txt2img"]
    assert allowed(policy, ART) == ["sd15-txt2img"]


def test_limits_are_read_once_a_second_and_a_change_here_applies_at_once(
    policy: Policy, store: Store, workflows: dict[str, Workflow], monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = [1000.0]
    monkeypatch.setattr("bot.policy.monotonic", lambda: clock[0])
    assert policy.limits(GUILD).max_queued_per_member == 5
    policy.set_limit(GUILD, "max_queued_per_member", "20", MOD)
    assert policy.limits(GUILD).max_queued_per_member == 20  # this policy's change: at once
    other = Policy(store, Settings(), lambda: workflows)  # as another process would
    other.set_limit(GUILD, "max_queued_per_member", "7", MOD)
    assert policy.limits(GUILD).max_queued_per_member == 20  # as read within the second
    clock[0] += 1.5
    assert policy.limits(GUILD).max_queued_per_member == 7
