"""bot/admission.py: the checks every way in shares, against a running engine."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from bot.admission import Admission, ImageOffer, Requester, image_offer
from bot.engine import Engine, ImageInput
from bot.errors import InvalidValue, NotAllowed, NotFound
from bot.jobs.model import JobState
from bot.policy import Policy
from bot.settings import LimitSettings
from tests.conftest import Recorder

EngineFx = tuple[Engine, Recorder]
GUILD, CHANNEL = "100", "11"
MOD = ("7", "Mod")


def admission_of(engine: Engine) -> Admission:
    return Admission(engine, Policy(engine.store, engine.settings, lambda: engine.workflows))


def member(user: str = "1", **kw: object) -> Requester:
    return Requester(user, f"user{user}", guild_id=GUILD, channel_id=CHANNEL, **kw)  # type: ignore[arg-type]


def png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 10, 10)).save(buf, "PNG")
    return buf.getvalue()


async def test_admitted_request_runs_and_refused_ones_store_nothing(engine: EngineFx) -> None:
    eng, rec = engine
    adm = admission_of(eng)
    for values, error in [
        ({"prompt": "x", "steps": "500"}, InvalidValue),
        ({"prompt": "x", "colour": "red"}, InvalidValue),
        ({"steps": 3}, InvalidValue),  # the prompt is required
    ]:
        with pytest.raises(error):
            adm.admit(member(), None, values)
    with pytest.raises(NotFound):
        adm.admit(member(), "nope", {"prompt": "x"})
    with pytest.raises(InvalidValue, match="count"):
        adm.admit(member(), None, {"prompt": "x"}, count="many")
    assert eng.store.recent() == []
    admitted = adm.admit(member(), None, {"prompt": "a cat", "steps": "3"}, count=2)
    jobs = await adm.submit(admitted)
    assert [j.values["steps"] for j in jobs] == [3, 3]
    done = await rec.finished(*(j.id for j in jobs))
    assert all(u.job.state is JobState.DONE for u in done)


async def test_caps_compare_numbers_given_as_text(engine: EngineFx) -> None:
    eng, _ = engine
    adm = admission_of(eng)
    adm.policy.set_cap(GUILD, "steps", maximum=10, actor=MOD)
    with pytest.raises(InvalidValue, match="at most 10"):
        adm.admit(member(), None, {"prompt": "x", "steps": "40"})
    adm.policy.set_banned_word(GUILD, "forbidden", True, MOD)
    with pytest.raises(NotAllowed, match="prompt"):
        adm.admit(member(), None, {"prompt": "a Forbidden thing", "steps": 5})


async def test_a_requester_limited_to_some_workflows_and_its_own_limits(
    engine: EngineFx,
) -> None:
    eng, _ = engine
    adm = admission_of(eng)
    key = Requester(
        "key:app",
        "app",
        workflows=frozenset({"sd15-img2img"}),
        limits=LimitSettings(max_count=2),
    )
    with pytest.raises(NotAllowed, match="sd15-txt2img"):
        adm.admit(key, "sd15-txt2img", {"prompt": "x"})
    with pytest.raises(NotFound):
        adm.admit(key, "nope", {"prompt": "x"})
    offer = ImageOffer("in.png", "image/png", 100)
    with pytest.raises(InvalidValue, match="count"):
        adm.admit(key, "sd15-img2img", {"prompt": "x"}, images={"image": offer}, count=3)
    admitted = adm.admit(key, "sd15-img2img", {"prompt": "x"}, images={"image": offer}, count=2)
    assert admitted.count == 2 and admitted.request.owner_id == "key:app"


async def test_images_must_be_images_and_go_to_image_options(engine: EngineFx) -> None:
    eng, _ = engine
    adm = admission_of(eng)
    text = image_offer(ImageInput("notes.png", b"hello, not a picture"))
    with pytest.raises(InvalidValue, match="must be an image"):
        adm.admit(member(), "sd15-img2img", {"prompt": "x"}, images={"image": text})
    real = image_offer(ImageInput("in.png", png()))
    assert real.content_type == "image/png"
    with pytest.raises(InvalidValue, match="not an image option"):
        adm.admit(member(), "sd15-img2img", {"image": "x"}, images={"prompt": real})
    huge = ImageOffer("big.png", "image/png", 26 * 1024 * 1024)
    with pytest.raises(InvalidValue, match="too large"):
        adm.admit(member(), "sd15-img2img", {"prompt": "x"}, images={"image": huge})


async def test_remix_keeps_values_and_credits_the_original(engine: EngineFx) -> None:
    eng, rec = engine
    adm = admission_of(eng)
    [original] = await adm.submit(adm.admit(member("1"), None, {"prompt": "a cat", "steps": 3}))
    await rec.finished(original.id)
    done = eng.get_job(original.id)
    assert done is not None
    reroll = adm.remix(member("2"), done, variations=False)
    assert reroll.request.remix_of == original.id
    assert reroll.request.values["prompt"] == "a cat"
    own = adm.remix(member("1"), done, variations=True)
    assert own.request.remix_of is None
    assert own.seeds == (done.values["seed"] + 1,) or own.seeds == (
        (done.values["seed"] + 1) % 2**32,
    )
