"""Video and audio params: a file given over HTTP or to generate is checked by its bytes and
uploaded to ComfyUI for its loader; a file of the wrong kind is refused by name, nothing queued."""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp
import pytest
import yaml

from tests.conftest import make_settings
from tests.fakes.comfyui import FakeComfyUI
from tests.http_helpers import http_settings, served
from tests.recordings import MEDIA

VIDEO = (MEDIA / "savevideo.mp4").read_bytes()

VID2VID = {
    "1": {"class_type": "LoadVideo", "inputs": {"file": "clip.mp4"}},
    "2": {"class_type": "GetVideoComponents", "inputs": {"video": ["1", 0]}},
    "3": {"class_type": "ImageInvert", "inputs": {"image": ["2", 0]}},
    "4": {"class_type": "CreateVideo", "inputs": {"images": ["3", 0], "fps": 8}},
    "5": {
        "class_type": "SaveVideo",
        "inputs": {"video": ["4", 0], "filename_prefix": "video/v", "format": "auto",
                   "codec": "auto"},
    },
}  # fmt: skip


@pytest.fixture
def packs(tmp_path: Path) -> Path:
    folder = tmp_path / "workflows"
    folder.mkdir()
    (folder / "vid2vid.json").write_text(json.dumps(VID2VID))
    spec = {"title": "Invert a video"}  # no params: detection finds the video loader
    (folder / "vid2vid.yaml").write_text(yaml.safe_dump(spec))
    return folder


async def test_a_video_param_is_detected_uploaded_and_run(
    media_comfy: FakeComfyUI, packs: Path, tmp_path: Path
) -> None:
    settings = make_settings(tmp_path, media_comfy.url, workflows={"dir": str(packs)})
    async with served(http_settings(settings)) as srv:
        workflow = srv.engine.workflows["vid2vid"]
        assert [(p.name, p.type) for p in workflow.params if p.is_file] == [("video", "video")]
        key = srv.key()
        form = aiohttp.FormData()
        form.add_field("video", VIDEO, filename="holiday.mp4", content_type="video/mp4")
        url = f"{srv.url}/v1/workflows/vid2vid/jobs?wait=60"
        async with srv.http.post(url, data=form, headers=srv.auth(key)) as r:
            assert r.status == 200, await r.text()
            [job] = (await r.json())["jobs"]
        assert job["state"] == "done", job
        [output] = job["outputs"]
        assert (output["kind"], output["content_type"]) == ("video", "video/mp4")
        [sent] = [n for n in media_comfy.prompts_received[-1]["prompt"].values()
                  if n["class_type"] == "LoadVideo"]  # fmt: skip
        uploaded = media_comfy.input_dir / sent["inputs"]["file"]
        assert uploaded.suffix == ".mp4" and uploaded.read_bytes() == VIDEO


@pytest.mark.parametrize(
    ("data", "content_type"),
    [(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, "image/png"), (b"\x89PNG\r\n\x1a\n" + b"\x00" * 64,
                                                         "video/mp4"), (b"junk", "video/mp4")],
)  # fmt: skip
async def test_a_file_that_is_no_video_is_refused_by_name(
    media_comfy: FakeComfyUI, packs: Path, tmp_path: Path, data: bytes, content_type: str
) -> None:
    settings = make_settings(tmp_path, media_comfy.url, workflows={"dir": str(packs)})
    async with served(http_settings(settings)) as srv:
        key = srv.key()
        form = aiohttp.FormData()
        form.add_field("video", data, filename="clip.mp4", content_type=content_type)
        url = f"{srv.url}/v1/workflows/vid2vid/jobs"
        async with srv.http.post(url, data=form, headers=srv.auth(key)) as r:
            assert r.status == 422, await r.text()
            problem = await r.json()
        assert problem["field"] == "video" and "not a video file" in problem["detail"]
        assert srv.engine.store.recent() == []
        assert media_comfy.prompts_received == []
