"""Every kind of result (video, animation, audio, 3D, text) through /imagine, HTTP and generate.

The fake ComfyUI saves real files (H.264 MP4, VP9 WebM, animated WebP and APNG, MP3, GLB) and
reports them the way a real server does (all under ``images`` with ``animated``, ``audio``,
``gifs``, ``3d``, text as strings); each way out must name, type and carry them as what they are.
"""

from __future__ import annotations

import io
import shutil
from pathlib import Path
from typing import Any

import av
import pytest

from bot.media import sniff
from bot.settings import Settings
from tests.cli.test_cli import run_cli, write_config
from tests.conftest import WORKFLOWS, make_settings
from tests.e2e import comfybot
from tests.fakes.comfyui import FakeComfyUI
from tests.fakes.discord import FakeDiscord, FakeMessage
from tests.fakes.discord_fixtures import installed_fake
from tests.http_helpers import http_settings, served
from tests.media_packs import EXPECTED, write_packs

KINDS = sorted(EXPECTED)


@pytest.fixture
def packs(tmp_path: Path) -> Path:
    folder = write_packs(tmp_path / "workflows")
    for name in ("upscale.json", "upscale.yaml"):
        shutil.copy(WORKFLOWS / name, folder / name)
    return folder


@pytest.fixture
def media_settings(tmp_path: Path, media_comfy: FakeComfyUI, packs: Path) -> Settings:
    return make_settings(
        tmp_path, media_comfy.url, workflows={"dir": str(packs), "default": "txt2video"}
    )


def saved_files(comfy: FakeComfyUI, prompt_id: str) -> list[bytes]:
    """The bytes of every file ComfyUI saved for a prompt, in node order, whatever the key."""
    outputs = comfy.history[prompt_id]["outputs"]
    found = []
    for node in sorted(outputs, key=int):
        for key, items in outputs[node].items():
            for item in items if isinstance(items, list) else []:
                if isinstance(item, dict) and item.get("type") == "output" and key != "text":
                    found.append(comfy.read_output(item["filename"], item.get("subfolder", "")))
    return found


def recorded_texts(comfy: FakeComfyUI, prompt_id: str) -> list[str]:
    outputs = comfy.history[prompt_id]["outputs"]
    return [t for node in sorted(outputs, key=int) for t in outputs[node].get("text", [])]


def is_result(message: FakeMessage | None) -> bool:
    return message is not None and ("ready" in message.content or "❌" in message.content)


@pytest.mark.parametrize("workflow", KINDS)
async def test_imagine_attaches_each_kind_as_what_it_is(
    workflow: str, fake: FakeDiscord, media_comfy: FakeComfyUI, media_settings: Settings
) -> None:
    async with comfybot(fake, media_settings) as bot:
        it = await fake.slash("imagine", {"prompt": "a lighthouse", "workflow": workflow})
        message = await it.wait_original(is_result, timeout=30)
        assert message is not None and "❌" not in message.content, message and message.content
        [job] = bot.engine.recent(limit=1)
        expected = EXPECTED[workflow]
        files = [e for e in expected if e[0] != "text"]
        names = [a.filename for a in message.attachments]
        assert names == [f"{job.id}-{i:02d}.{ext}" for i, (_, _, ext) in enumerate(files, 1)]
        assert [a.data for a in message.attachments] == saved_files(media_comfy, job.prompt_id)
        assert [sniff(a.data).mime for a in message.attachments] == [m for _, m, _ in files]
        kinds = {k for k, _, _ in files}
        if len(kinds) == 1 and len(files) == 1:
            noun = {"model": "3D model"}.get(files[0][0], files[0][0])
            assert f"your {noun} is ready" in message.content
        else:
            assert "your results are ready" in message.content
        for text in recorded_texts(media_comfy, job.prompt_id):
            assert text in message.content
        upscales = [c for c in message.custom_ids if c.startswith("cc:fu:")]
        images = sum(1 for k, _, _ in files if k == "image")
        assert len(upscales) == images  # Upscale is offered on still images only
        assert f"cc:reroll:{job.id}" in message.custom_ids
        assert fake.errors == []


@pytest.mark.parametrize("workflow", KINDS)
async def test_http_outputs_carry_their_kind_and_content_type(
    workflow: str, media_comfy: FakeComfyUI, media_settings: Settings
) -> None:
    async with served(http_settings(media_settings)) as srv:
        key = srv.key()
        url = f"{srv.url}/v1/workflows/{workflow}/jobs?wait=60"
        async with srv.http.post(url, json={"prompt": "a lighthouse"}, headers=srv.auth(key)) as r:
            assert r.status == 200, await r.text()
            [job] = (await r.json())["jobs"]
        assert job["state"] == "done", job
        expected = EXPECTED[workflow]
        shown = [(o["kind"], o["content_type"].split(";")[0]) for o in job["outputs"]]
        assert shown == [(k, m) for k, m, _ in expected]
        bodies: list[bytes] = []
        for output, (kind, mime, ext) in zip(job["outputs"], expected, strict=True):
            assert output["filename"].endswith(f".{ext}")
            async with srv.http.get(output["url"], headers=srv.auth(key)) as r:
                assert r.status == 200 and r.content_type == mime
                body = await r.read()
                if kind == "text":
                    assert r.charset == "utf-8"
                    assert body.decode() in recorded_texts(media_comfy, _prompt(srv, job))
                else:
                    bodies.append(body)
        assert bodies == saved_files(media_comfy, _prompt(srv, job))


def _prompt(srv: Any, job: dict[str, Any]) -> str:
    return str(srv.engine.get_job(job["id"]).prompt_id)


@pytest.mark.parametrize("workflow", ["txt2video", "still-and-text", "txt2audio", "txt2mesh"])
async def test_generate_writes_files_named_for_what_they_hold(
    workflow: str,
    media_comfy: FakeComfyUI,
    packs: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("COMFYUI_URL", media_comfy.url)
    out = tmp_path / "out"
    config = write_config(tmp_path, packs)
    code = await run_cli(
        "--config", str(config), "generate", workflow, "--prompt", "a lighthouse",
        "--out", str(out),
    )  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0, captured.err
    written = sorted(out.iterdir())
    expected = EXPECTED[workflow]
    assert [p.suffix for p in written] == [f".{ext}" for _, _, ext in expected]
    files_only = [p for p in written if p.suffix != ".txt"]
    assert [sniff(p.read_bytes()).mime for p in files_only] == [
        m for k, m, _ in expected if k != "text"
    ]
    [prompt_id] = media_comfy.history
    files = [p.read_bytes() for p in written if p.suffix != ".txt"]
    assert files == saved_files(media_comfy, prompt_id)
    texts = [p.read_text() for p in written if p.suffix == ".txt"]
    assert texts == recorded_texts(media_comfy, prompt_id)
    for path in written:
        assert str(path) in captured.out


async def test_a_video_over_the_upload_limit_is_re_encoded_to_fit(
    media_comfy: FakeComfyUI, media_settings: Settings
) -> None:
    limit = 2500
    async with (
        installed_fake(attachment_size_limit=limit) as fake,
        comfybot(fake, media_settings) as bot,
    ):
        it = await fake.slash("imagine", {"prompt": "a lighthouse", "workflow": "txt2video"})
        message = await it.wait_original(is_result, timeout=60)
        assert message is not None and "❌" not in message.content, message
        [job] = bot.engine.recent(limit=1)
        [original] = saved_files(media_comfy, job.prompt_id)
        assert len(original) > limit
        [attached] = message.attachments
        assert len(attached.data) <= limit and attached.filename.endswith(".mp4")
        assert sniff(attached.data).mime == "video/mp4"
        with av.open(io.BytesIO(attached.data)) as container:
            assert len(list(container.decode(video=0))) >= 1
        assert "re-encoded" in message.content and "your video is ready" in message.content
        assert fake.errors == []
