"""A typed client generated from /openapi.json with openapi-python-client, by the command the
console's workflow page shows, runs jobs against the API and the fake ComfyUI: JSON and
multipart, the result's bytes, a refusal parsed as a Problem."""

from __future__ import annotations

import asyncio
import html
import importlib
import os
import re
import shlex
import sys
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.fakes.comfyui import FakeComfyUI
from tests.http.console.test_console import browser, console_settings, sign_in
from tests.http_helpers import Served, served

BIN = Path(sys.executable).parent
GENERATOR = BIN / "openapi-python-client"
PACKAGE = "comfycord_client"

pytestmark = pytest.mark.skipif(
    not GENERATOR.exists() and not os.environ.get("CI"),
    reason="openapi-python-client is not installed (pip install -e '.[dev]')",
)


@pytest.fixture
def client_path() -> Iterator[list[Path]]:
    """Folders put on sys.path for the test; taken off, with the package's modules, after."""
    added: list[Path] = []
    yield added
    for folder in added:
        sys.path.remove(str(folder))
    for name in [m for m in sys.modules if m == PACKAGE or m.startswith(PACKAGE + ".")]:
        del sys.modules[name]


async def shown_command(srv: Served, secret: str) -> list[str]:
    """The generator command from the workflow page's "Typed client" snippet."""
    async with browser() as http:
        await sign_in(srv, http, secret)
        async with http.get(f"{srv.url}/workflows/sd15-txt2img") as r:
            page = await r.text()
    shell = r'<code class="snippet" data-language="shell">(.*?)</code>'
    blocks = [html.unescape(code) for code in re.findall(shell, page, re.S)]
    (code,) = [b for b in blocks if "openapi-python-client generate" in b]
    (line,) = [x for x in code.splitlines() if x.startswith("openapi-python-client generate")]
    return shlex.split(line)


async def generate(command: list[str], folder: Path) -> Path:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    process = await asyncio.create_subprocess_exec(
        str(GENERATOR),
        *command[1:],
        cwd=folder,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), 600)
    text = output.decode(errors="replace")
    assert process.returncode == 0, text
    assert "Warning" not in text and "Error" not in text, text  # every operation generated
    (project,) = [p for p in folder.iterdir() if (p / PACKAGE).is_dir()]
    return project


def load(name: str) -> ModuleType:
    return importlib.import_module(f"{PACKAGE}.{name}")


async def test_a_generated_client_runs_a_job(
    tmp_path: Path, comfy: FakeComfyUI, client_path: list[Path]
) -> None:
    async with served(console_settings(tmp_path, comfy)) as srv:
        key = srv.key("typed")
        command = await shown_command(srv, key.secret)
        assert command[:3] == ["openapi-python-client", "generate", "--url"]
        assert command[3] == f"{srv.url}/openapi.json"
        out = tmp_path / "generated"
        out.mkdir()
        project = await generate(command, out)
        client_path.append(project)
        sys.path.insert(0, str(project))

        client_module: Any = load("client")
        models: Any = load("models")
        types: Any = load("types")
        run_txt2img: Any = load("api.default.run_sd15_txt2img")
        run_img2img: Any = load("api.default.run_sd15_img2img")
        get_output: Any = load("api.default.get_output")
        get_job: Any = load("api.default.get_job")
        authenticated = client_module.AuthenticatedClient(
            base_url=srv.url, token=key.secret, timeout=60
        )
        async with authenticated as client:
            # JSON: a typed request, the typed answer, the image's bytes
            body = models.Sd15Txt2ImgRequest(
                prompt="a lighthouse at dusk", steps=3, size=models.Sd15Txt2ImgRequestSize.PORTRAIT
            )
            answer = await run_txt2img.asyncio_detailed(client=client, body=body, wait=30)
            assert answer.status_code == 200, answer.content
            created = answer.parsed
            assert isinstance(created, models.JobsCreated) and created.finished
            (job,) = created.jobs
            assert job.state == models.JobInfoState.DONE and job.values["steps"] == 3
            image = await get_output.asyncio_detailed(job.id, 0, client=client)
            assert image.status_code == 200 and image.content.startswith(b"\x89PNG")
            again = await get_job.asyncio(job.id, client=client)
            assert isinstance(again, models.JobInfo) and again.outputs[0].kind.value == "image"

            # multipart: a typed form with a file
            png = image.content
            form = models.Sd15Img2ImgForm(
                prompt="the same, in oil",
                image=types.File(payload=BytesIO(png), file_name="in.png", mime_type="image/png"),
            )
            answer = await run_img2img.asyncio_detailed(client=client, body=form, wait=30)
            assert answer.status_code == 200, answer.content
            assert answer.parsed.jobs[0].state == models.JobInfoState.DONE

            # a refusal is a typed Problem naming the field
            refused = await run_txt2img.asyncio_detailed(
                client=client, body=models.Sd15Txt2ImgRequest(prompt="x", steps=10_000)
            )
            assert refused.status_code == 422
            assert isinstance(refused.parsed, models.Problem) and refused.parsed.field == "steps"
