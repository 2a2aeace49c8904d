"""Property-based tests of the HTTP API against its own /openapi.json (schemathesis).

The API, the engine and the fake ComfyUI run in a thread with their own event loop, since
schemathesis calls the API with a blocking client. Every operation gets a bounded number of
generated requests; none may answer 5xx, an undocumented status or content type, or a body that
breaks its documented schema. The admin operations (adding, removing and exporting workflows, the
operations view) are called with an admin key, on a copy of the shipped workflows; the others
with a member key.
"""

from __future__ import annotations

import asyncio
import copy
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from bot.http.openapi import admin_paths, build_document
from bot.workflows import load_workflows
from tests.conftest import WORKFLOWS, make_settings
from tests.fakes.comfyui import FakeComfyUI
from tests.http_helpers import http_settings, served

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]


class LiveApi:
    """The fake ComfyUI, an engine and the API, served from a thread until `stop()`."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.url = ""
        self.secret = ""
        self.admin_secret = ""
        self.document: dict[str, Any] = {}
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="live-api", daemon=True)

    def start(self) -> None:
        self._thread.start()
        if not self._ready.wait(30):
            raise TimeoutError("the API did not start")
        if self._error is not None:
            raise self._error

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported to the test thread
            self._error = exc
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        comfy = FakeComfyUI(previews=False, step_delay=0.0)
        await comfy.start()
        try:
            # an admin may add and remove workflows: a copy of the shipped ones, never those
            workflows = self.folder / "workflows"
            shutil.copytree(WORKFLOWS, workflows)
            settings = make_settings(self.folder, comfy.url, workflows={"dir": str(workflows)})
            # image URLs off: generated strings must never make the server fetch anything
            settings = http_settings(settings, image_urls=False)
            async with served(settings) as srv:
                self.url = srv.url
                self.secret = srv.key("schema", limit_queued=3).secret
                self.admin_secret = srv.key("schema-admin", role="admin", limit_queued=3).secret
                async with srv.http.get(f"{srv.url}/openapi.json") as r:
                    self.document = await r.json()
                self._ready.set()
                await self._stop.wait()
        finally:
            await comfy.stop()


@pytest.fixture(scope="module")
def live_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveApi]:
    api = LiveApi(tmp_path_factory.mktemp("live-api"))
    api.start()
    try:
        yield api
    finally:
        api.stop()


@pytest.fixture(scope="module")
def api_schema(live_api: LiveApi) -> Any:
    document = copy.deepcopy(live_api.document)
    # webhooks are tested with a receiver of their own: generated ones would call out
    for name, schema in document["components"]["schemas"].items():
        if name.endswith(("Request", "Form")):
            schema["properties"].pop("webhook", None)
    return schemathesis.openapi.from_dict(document)


@pytest.fixture(scope="module")
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session


ADMIN_OPERATIONS = {(method.upper(), path) for path, ops in admin_paths().items() for method in ops}


def _operations() -> list[tuple[str, str]]:
    workflows, _ = load_workflows(WORKFLOWS)
    document = build_document(workflows, max_count=4, image_urls=False)
    return [(method.upper(), path) for path, ops in document["paths"].items() for method in ops]


@pytest.mark.parametrize(("method", "path"), _operations())
def test_api_answers_as_documented(
    method: str, path: str, api_schema: Any, live_api: LiveApi, http: requests.Session
) -> None:
    operation = api_schema[path][method]
    secret = live_api.admin_secret if (method, path) in ADMIN_OPERATIONS else live_api.secret

    @given(case=operation.as_strategy())
    @settings(
        max_examples=12,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        database=None,
    )
    def check(case: Any) -> None:
        case.call_and_validate(
            base_url=live_api.url,
            session=http,
            headers={"Authorization": f"Bearer {secret}"},
            checks=CHECKS,
            timeout=30,
        )

    check()


def test_every_admin_operation_is_called_with_the_admin_key() -> None:
    assert {("POST", "/v1/workflows"), ("DELETE", "/v1/workflows/{name}")} <= ADMIN_OPERATIONS
    assert ("GET", "/v1/stats") in ADMIN_OPERATIONS
    assert set(_operations()) >= ADMIN_OPERATIONS


@pytest.mark.parametrize("path", ["/v1/workflows", "/v1/workflows/sd15-txt2img/jobs"])
async def test_a_part_with_headers_that_are_not_http_is_a_400(
    path: str, tmp_path: Path, comfy: FakeComfyUI
) -> None:
    # what schemathesis sent: a part name with a control character in it
    body = b'--b\r\nContent-Disposition: form-data; name="\xf2\x03x"\r\n\r\nvalue\r\n--b--\r\n'
    async with served(http_settings(make_settings(tmp_path, comfy.url))) as srv:
        admin = srv.key("boss", role="admin")
        async with srv.http.post(
            f"{srv.url}{path}",
            data=body,
            headers={**srv.auth(admin), "Content-Type": "multipart/form-data; boundary=b"},
        ) as r:
            assert r.status == 400, await r.text()
            assert r.content_type == "application/problem+json"
            assert (await r.json())["field"] == "body"
