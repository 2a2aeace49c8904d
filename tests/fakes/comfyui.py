"""An in-process fake ComfyUI server that behaves like the recorded real one, message for message.

The fake is an aiohttp ``web.Application`` served on 127.0.0.1 (ephemeral port). It implements
the HTTP routes and the websocket protocol described in the recorded PROTOCOL.md and
reproduces the recorded transcripts (see ``tests/recordings.py``): the same JSON shapes,
message order, status codes and quirks. Prompts are validated against the recorded
``/object_info`` (plus the transcripts' test nodes ``ResearchSlowProgress`` and ``ResearchRaise``)
and run by a single worker in queue order, with ComfyUI's caching; nodes are simulated (samplers
report ``progress`` per step, SaveImage writes real PNG files made with Pillow).

Basic use::

    async with FakeComfyUI(previews=True) as fake:      # or: await fake.start() / fake.stop()
        client = MyClient(fake.url)
        ...
        await fake.wait_until_idle()
        assert fake.history[prompt_id]["status"]["status_str"] == "success"

Constructor: ``FakeComfyUI(*, previews=False, step_delay=0.01, checkpoints=[...],
max_upload_size=100 MiB, loras=(), root=None, job_seconds=0.0, extra_nodes={}, without_nodes=(),
require_headers={}, device="cpu", node_mappings=None)``. ``checkpoints``, ``loras`` and the uploaded
input files are what ``/object_info`` offers and what validation accepts (``value_not_in_list``
otherwise); ``root`` is a folder for ``input/``, ``output/`` and ``temp/`` (a temporary folder,
removed by ``stop()``, when not given). Several fakes can run at once (one port each), each its
own installation: ``extra_nodes`` (class name -> ``/object_info`` definition; unsimulated nodes
pass their inputs through) and ``without_nodes`` change its node classes; ``job_seconds`` is the
simulated GPU time every prompt takes on top of its steps (an interrupt ends it at once), and
``busy`` lists ``(start, end, prompt_id)`` of every finished run (``time.monotonic()``);
``require_headers`` makes it answer 401 to requests without those headers (a ComfyUI behind an
authenticating reverse proxy); ``node_mappings`` (a node class -> pack map) is served at
``/v2/customnode/getmappings`` and ``/customnode/getmappings`` as a ComfyUI with ComfyUI-Manager
does (without it those routes are 404, as on a ComfyUI without the Manager).

Fault injection and inspection (tests of the real client rely on these names):

- ``await drop_sockets()``: abort every websocket (clients see close code 1006); the server keeps
  running and executing, messages for absent clients are lost.
- ``await go_offline()`` / ``await go_online()``: the server stops answering (connections
  refused, sockets aborted) as after a network cut, then answers again on the same port; unlike
  ``restart`` its queue, running prompt and history are kept and its worker keeps going.
- ``await restart(forget_history=True, downtime=0.0)``: like a ComfyUI restart: sockets dropped,
  queue, running prompt, cache and (by default) history lost, prompt numbers start at 0 again,
  output files kept; serves again on the same port.
- ``fail_next(path, status=500, times=1, method=None, process=False)``: the next ``times``
  requests to ``path`` (``"/prompt"``, ``"/ws"``, ``"/history/*"``; ``/api`` is implied) answer
  ``status``. With ``process=True`` the request is handled first (a lost response).
- ``delay_next(path, seconds, times=1)``: the next requests to ``path`` are answered late.
- ``fail_node(class_type_or_node_id, exception_type="RuntimeError", message=..., times=None)``:
  that node raises when it runs, giving ``execution_error`` as recorded. ``clear_faults()``.
- ``pause()`` / ``resume()``: while paused no new prompt starts (cancel while pending).
- ``hold_steps()`` / ``release_steps(count=None)`` / ``await wait_until_held()``: samplers stop
  before their next step until released (``count`` steps at a time); an interrupt still ends
  a held step at once (cancel while running).
- ``step_delay`` (seconds per sampler step, settable), ``previews``, ``checkpoints``, ``loras``;
  ``honour_prompt_id = False`` ignores a client-chosen ``prompt_id`` (as older releases do);
  ``answers_feature_flags = False`` leaves a client's ``feature_flags`` unanswered (as releases
  before feature flags do).
- ``prompts_received`` (bodies of ``POST /prompt``), ``history`` (live dict), ``queue`` (same
  shape as ``GET /queue``), ``running_prompt_id``, ``ws_clients`` (open sockets),
  ``registered_clients``, ``output_files``/``read_output(filename)``, ``add_input_image()``,
  ``await wait_until_idle()``, ``await wait_for_history(prompt_id)``.

Recorded behaviour reproduced on purpose: prompt messages go only to the submitting client id
(``status`` and text frames to all; ``progress_state``, ``progress``, previews and
``execution_interrupted`` to all when the prompt has no client id, the other messages to
nobody); a second socket with the same client id replaces the first, and the first one closing
unregisters the id (the newer socket stays open and gets nothing); reconnecting during a run
gives ``executing {node}`` right after ``status``; deleting the only pending prompt sends two
``status`` messages; history is written before ``executing node=None``; the server never pings;
``input/example.png`` exists as in a fresh ComfyUI. ``prompts_received`` holds every parsed
body (rejected ones too, not those refused by ``fail_next`` without ``process``).

Known differences from the real server: ``ResearchSlowProgress`` waits ``step_delay`` per step
(not its ``delay`` input); KSampler previews are small noise JPEGs; nodes without a simulator
pass their inputs through (same-typed input, or a derived value) instantly; filename prefix
tokens like ``%date:...%`` are not expanded; there are no CORS headers and no front-end routes.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import fnmatch
import hashlib
import heapq
import json
import logging
import mimetypes
import os
import random
import shutil
import socket
import string
import struct
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

from aiohttp import WSMsgType, web
from PIL import Image

from tests.fakes import _comfy_media  # noqa: F401  (registers the media nodes)
from tests.fakes._comfy_nodes import (
    SIMULATORS,
    CacheEntry,
    ExecutionPlan,
    Images,
    ModelLists,
    NodeCatalog,
    NodeResult,
    check_linked_inputs,
    encode,
    is_link,
    iter_inputs,
    node_signatures,
    noise_image,
    passthrough,
    save_png_batch,
    traceback_lines,
    type_name,
    validate_prompt,
)

log = logging.getLogger(__name__)

__all__ = ["FakeComfyUI", "HeldStep"]

DEFAULT_CHECKPOINTS = ("v1-5-pruned-emaonly.safetensors",)
MAX_HISTORY = 10000
SERVER_ERROR_TEXT = "500 Internal Server Error\n\nServer got itself in trouble"
SENSITIVE_EXTRA_DATA_KEYS = ("auth_token_comfy_org", "api_key_comfy_org")
MODEL_FOLDERS = (
    "checkpoints",
    "configs",
    "loras",
    "vae",
    "text_encoders",
    "diffusion_models",
    "clip_vision",
    "style_models",
    "embeddings",
    "diffusers",
    "vae_approx",
    "controlnet",
    "gligen",
    "upscale_models",
    "custom_nodes",
    "hypernetworks",
    "photomaker",
    "classifiers",
    "model_patches",
    "audio_encoders",
)

# Binary websocket frames: 4-byte big-endian event type first.
PREVIEW_IMAGE = 1
TEXT = 3
PREVIEW_IMAGE_WITH_METADATA = 4
_IMAGE_TYPES = {"image/jpeg": 1, "image/png": 2}


def _now_ms() -> int:
    return int(time.time() * 1000)


def _message(event: str, data: Any) -> str:
    return json.dumps({"type": event, "data": data})


class Interrupted(Exception):
    """The running prompt was interrupted (POST /interrupt)."""


class InjectedFailure(Exception):
    """A failure asked for with :meth:`FakeComfyUI.fail_node`."""

    def __init__(self, reported_type: str, message: str) -> None:
        super().__init__(message)
        self.reported_type = reported_type


@dataclass
class QueueItem:
    number: int | float
    prompt_id: str
    prompt: dict[str, Any]
    extra_data: dict[str, Any]
    outputs: list[str]

    def as_list(self) -> list[Any]:
        return [self.number, self.prompt_id, self.prompt, self.extra_data, self.outputs]


@dataclass(frozen=True)
class HeldStep:
    """A sampler waiting at the step gate (see :meth:`FakeComfyUI.hold_steps`)."""

    prompt_id: str
    node_id: str
    step: int


@dataclass
class _RequestFault:
    path: str
    method: str | None
    times: int
    status: int = 500
    process: bool = False
    delay: float = 0.0


@dataclass
class _NodeFault:
    target: str
    exception_type: str
    message: str
    times: int | None


def _api_path(path: str) -> str:
    """The route without its optional ``/api`` prefix."""
    if path == "/api" or path.startswith("/api/"):
        return path[4:] or "/"
    return path


def _lookup(body: Any, key: str, default: Any = None) -> Any:
    """``body[key]`` after Python's ``in`` test, which ComfyUI applies to any JSON value."""
    if key not in body:
        return default
    return body[key]


def _split_annotation(name: str, default: str) -> tuple[str, str]:
    """``"x.png [output]"`` -> ``("x.png", "output")``."""
    for kind in ("input", "output", "temp"):
        suffix = f" [{kind}]"
        if name.endswith(suffix):
            return name[: -len(suffix)], kind
    return name, default


class FakeComfyUI:
    """A fake ComfyUI server for tests (see the module docstring)."""

    def __init__(
        self,
        *,
        previews: bool = False,
        step_delay: float = 0.01,
        checkpoints: list[str] | tuple[str, ...] = DEFAULT_CHECKPOINTS,
        max_upload_size: int = 100 * 1024 * 1024,
        loras: list[str] | tuple[str, ...] = (),
        root: str | os.PathLike[str] | None = None,
        job_seconds: float = 0.0,
        extra_nodes: Mapping[str, dict[str, Any]] | None = None,
        without_nodes: tuple[str, ...] | list[str] = (),
        require_headers: Mapping[str, str] | None = None,
        device: str = "cpu",
        node_mappings: Mapping[str, Any] | None = None,
    ) -> None:
        self.previews = previews
        self.step_delay = step_delay
        self.job_seconds = job_seconds
        self.require_headers = dict(require_headers or {})
        self.device = device
        self.node_mappings = node_mappings
        self.busy: list[tuple[float, float, str]] = []
        self.checkpoints: list[str] = list(checkpoints)
        self.loras: list[str] = list(loras)
        self.max_upload_size = max_upload_size
        self.honour_prompt_id = True
        self.answers_feature_flags = True
        self.prompts_received: list[Any] = []
        self._catalog = NodeCatalog.recorded().variant(extra_nodes or {}, without_nodes)
        self._given_root = Path(root) if root is not None else None
        self._root: Path | None = None
        self._port: int | None = None
        self._runner: web.AppRunner | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._worker_error: BaseException | None = None
        # websocket state: sid -> socket (newest wins), sid -> client feature flags
        self._sockets: dict[str, web.WebSocketResponse] = {}
        self._socket_flags: dict[str, dict[str, Any]] = {}
        self._connections: dict[web.WebSocketResponse, web.Request] = {}
        self._outbox: asyncio.Queue[tuple[str | None, str | bytes]] = asyncio.Queue()
        # faults
        self._request_faults: list[_RequestFault] = []
        self._node_faults: list[_NodeFault] = []
        # gates
        self._paused = False
        self._wake = asyncio.Event()
        self._interrupt = asyncio.Event()
        self._poke = asyncio.Event()
        self._step_budget: int | None = None
        self._held: HeldStep | None = None
        self._reset_server_state()

    def _reset_server_state(self) -> None:
        """What a real restart loses."""
        self._number = 0
        self._pending: list[tuple[int | float, str, int, QueueItem]] = []
        self._sequence = 0
        self._running: QueueItem | None = None
        self._history: dict[str, dict[str, Any]] = {}
        self._cache: dict[str, CacheEntry] = {}
        self._temp_prefixes: dict[tuple[str, str], str] = {}
        self._current_client: str | None = None
        self._last_node_id: str | None = None
        self._object_info_cache: tuple[ModelLists, bytes] | None = None

    # ----------------------------------------------------------------------------------------
    # Life cycle

    async def __aenter__(self) -> FakeComfyUI:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    @property
    def url(self) -> str:
        """The base URL, ``http://127.0.0.1:PORT``.

        Raises:
            RuntimeError: before :meth:`start`.
        """
        if self._port is None:
            raise RuntimeError("FakeComfyUI is not started")
        return f"http://127.0.0.1:{self._port}"

    async def start(self) -> str:
        """Serve and return the base URL (after :meth:`stop`: a fresh server, same port)."""
        if self._runner is not None:
            return self.url
        if self._root is None:
            if self._given_root is not None:
                self._root = self._given_root
            else:
                self._root = Path(tempfile.mkdtemp(prefix="fake-comfyui-"))
            for kind in ("input", "output", "temp"):
                (self._root / kind).mkdir(parents=True, exist_ok=True)
            example = self._root / "input" / "example.png"
            if not example.exists():
                noise_image(64, 64, "example").save(example, format="PNG")
        await self._serve()
        return self.url

    async def stop(self) -> None:
        """Stop serving, forget all state and remove the temporary folder (if the fake made it).

        Raises:
            RuntimeError: when the worker crashed (a bug in the fake) during the test.
        """
        await self._shutdown()
        self._reset_server_state()
        if self._root is not None and self._given_root is None:
            shutil.rmtree(self._root, ignore_errors=True)
            self._root = None
        if self._worker_error is not None:
            error, self._worker_error = self._worker_error, None
            raise RuntimeError("the fake ComfyUI worker crashed") from error

    async def restart(self, forget_history: bool = True, downtime: float = 0.0) -> None:
        """Simulate a ComfyUI restart on the same port (see the module docstring)."""
        history = self._history
        await self._shutdown()
        self._reset_server_state()
        if not forget_history:
            self._history = history
        if self._root is not None:
            shutil.rmtree(self._root / "temp", ignore_errors=True)
            (self._root / "temp").mkdir()
        if downtime > 0:
            await asyncio.sleep(downtime)
        await self._serve()

    async def go_offline(self) -> None:
        """Stop answering, keeping the queue, the running prompt and the history."""
        await self.drop_sockets()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def go_online(self) -> None:
        """Answer again on the same port after :meth:`go_offline`."""
        if self._runner is None:
            await self._listen()

    async def _serve(self) -> None:
        await self._listen()
        self._outbox = asyncio.Queue()
        self._wake = asyncio.Event()
        self._interrupt = asyncio.Event()
        self._poke = asyncio.Event()
        self._tasks = [
            asyncio.create_task(self._worker(), name="fake-comfyui-worker"),
            asyncio.create_task(self._sender(), name="fake-comfyui-sender"),
        ]

    async def _listen(self) -> None:
        app = web.Application(
            client_max_size=self.max_upload_size,
            middlewares=[
                self._not_found_middleware,
                self._origin_middleware,
                self._auth_middleware,
                self._fault_middleware,
            ],
        )
        self._add_routes(app)
        runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=2.0)
        await runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", self._port or 0))
        except OSError:
            sock.close()
            await runner.cleanup()
            raise
        self._port = sock.getsockname()[1]
        await web.SockSite(runner, sock).start()
        self._runner = runner

    async def _shutdown(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        self._held = None
        await self.drop_sockets()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # ----------------------------------------------------------------------------------------
    # Fault injection and inspection

    async def drop_sockets(self) -> None:
        """Abort every websocket connection (no close frame); the server keeps running."""
        for request in list(self._connections.values()):
            if request.transport is not None:
                request.transport.abort()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2.0):
                while self._connections:
                    await asyncio.sleep(0.001)

    def fail_next(
        self,
        path: str,
        status: int = 500,
        times: int = 1,
        *,
        method: str | None = None,
        process: bool = False,
    ) -> None:
        """Answer the next ``times`` requests to ``path`` (glob allowed) with ``status``."""
        fault = _RequestFault(_api_path(path), method, times, status=status, process=process)
        self._request_faults.append(fault)

    def delay_next(self, path: str, seconds: float, times: int = 1) -> None:
        """Answer the next ``times`` requests to ``path`` only after ``seconds``."""
        self._request_faults.append(_RequestFault(_api_path(path), None, times, delay=seconds))

    def fail_node(
        self,
        class_type_or_node_id: str,
        exception_type: str = "RuntimeError",
        message: str = "Injected failure",
        times: int | None = None,
    ) -> None:
        """Make a node (by id or class) raise when it runs (``times=None``: every time)."""
        self._node_faults.append(_NodeFault(class_type_or_node_id, exception_type, message, times))

    def clear_faults(self) -> None:
        self._request_faults.clear()
        self._node_faults.clear()

    def pause(self) -> None:
        """Start no new prompt until :meth:`resume`."""
        self._paused = True

    def resume(self) -> None:
        self._paused = False
        self._wake.set()

    def hold_steps(self) -> None:
        """Make samplers wait before their next step until :meth:`release_steps`."""
        self._step_budget = 0

    def release_steps(self, count: int | None = None) -> None:
        """Let ``count`` more steps run (then hold again), or all of them when ``None``."""
        if count is None or self._step_budget is None:
            self._step_budget = None
        else:
            self._step_budget += count
        self._held = None
        self._poke.set()

    async def wait_until_held(self, timeout: float = 5.0) -> HeldStep:
        """Wait until a sampler waits at the step gate; which prompt, node and step."""
        async with asyncio.timeout(timeout):
            while self._held is None:
                self._raise_worker_error()
                await asyncio.sleep(0.001)
        return self._held

    async def wait_until_idle(self, timeout: float = 10.0) -> None:
        """Wait until nothing runs, nothing can start, and every message has been sent."""
        async with asyncio.timeout(timeout):
            while True:
                self._raise_worker_error()
                if self._running is None and (not self._pending or self._paused):
                    await self._outbox.join()
                    if self._running is None and (not self._pending or self._paused):
                        return
                await asyncio.sleep(0.001)

    async def wait_for_history(self, prompt_id: str, timeout: float = 10.0) -> dict[str, Any]:
        """The history entry of ``prompt_id`` once it is written."""
        async with asyncio.timeout(timeout):
            while prompt_id not in self._history:
                self._raise_worker_error()
                await asyncio.sleep(0.001)
        return self._history[prompt_id]

    def _raise_worker_error(self) -> None:
        if self._worker_error is not None:
            raise RuntimeError("the fake ComfyUI worker crashed") from self._worker_error

    @property
    def history(self) -> dict[str, dict[str, Any]]:
        return self._history

    @property
    def queue(self) -> dict[str, list[list[Any]]]:
        """The queue as ``GET /queue`` shows it."""
        running = [self._running.as_list()] if self._running is not None else []
        return {"queue_running": running, "queue_pending": [e[3].as_list() for e in self._pending]}

    @property
    def running_prompt_id(self) -> str | None:
        return self._running.prompt_id if self._running is not None else None

    @property
    def ws_clients(self) -> int:
        """Open websocket connections (registered or not)."""
        return len(self._connections)

    @property
    def registered_clients(self) -> set[str]:
        """Client ids that currently receive messages."""
        return set(self._sockets)

    def _dir(self, kind: str) -> Path:
        if self._root is None:
            raise RuntimeError("FakeComfyUI is not started")
        return self._root / kind

    @property
    def input_dir(self) -> Path:
        return self._dir("input")

    @property
    def output_dir(self) -> Path:
        return self._dir("output")

    @property
    def temp_dir(self) -> Path:
        return self._dir("temp")

    @property
    def output_files(self) -> list[str]:
        """Files in the output folder, as ``subfolder/name`` paths."""
        root = self.output_dir
        return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())

    def read_output(self, filename: str, subfolder: str = "", type: str = "output") -> bytes:
        """The bytes of a produced file (as ``GET /view`` would serve them)."""
        return (self._dir(type) / subfolder / filename).read_bytes()

    def add_input_image(self, name: str, data: bytes | Image.Image) -> None:
        """Put a file into the input folder (as if uploaded)."""
        path = self.input_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(data, Image.Image):
            data.save(path, format="PNG")
        else:
            path.write_bytes(data)

    # ----------------------------------------------------------------------------------------
    # Routes

    def _add_routes(self, app: web.Application) -> None:
        routes: list[tuple[str, str, Callable[[web.Request], Awaitable[web.StreamResponse]]]] = [
            ("GET", "/ws", self._websocket),
            ("GET", "/embeddings", self._embeddings),
            ("GET", "/extensions", self._extensions),
            ("GET", "/models", self._models),
            ("GET", "/models/{folder}", self._model_folder),
            ("POST", "/upload/image", self._upload_image),
            ("GET", "/view", self._view),
            ("GET", "/system_stats", self._system_stats),
            ("GET", "/features", self._features),
            ("GET", "/prompt", self._get_prompt),
            ("POST", "/prompt", self._post_prompt),
            ("GET", "/object_info", self._object_info),
            ("GET", "/object_info/{node_class}", self._object_info_one),
            ("GET", "/history", self._get_history),
            ("GET", "/history/{prompt_id}", self._get_history_one),
            ("POST", "/history", self._post_history),
            ("GET", "/queue", self._get_queue),
            ("POST", "/queue", self._post_queue),
            ("POST", "/interrupt", self._post_interrupt),
            ("POST", "/free", self._post_free),
            ("GET", "/v2/customnode/getmappings", self._node_mappings),
            ("GET", "/customnode/getmappings", self._node_mappings),
        ]
        for method, path, handler in routes:
            app.router.add_route(method, path, handler)
            app.router.add_route(method, "/api" + path, handler)

    @web.middleware
    async def _not_found_middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPNotFound:  # unknown routes: an empty 404 as recorded
            return web.Response(status=404, content_type="application/octet-stream")

    @web.middleware
    async def _origin_middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        # ComfyUI on loopback refuses browsers from other origins.
        origin = request.headers.get("Origin")
        host = request.headers.get("Host")
        if origin and host and urlsplit(origin).netloc.lower() != host.lower():
            return web.Response(status=403)
        if request.method == "OPTIONS":
            return web.Response(status=200)
        return await handler(request)

    @web.middleware
    async def _auth_middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        # What an authenticating reverse proxy in front of ComfyUI does.
        for name, value in self.require_headers.items():
            if request.headers.get(name) != value:
                return web.Response(status=401, text="401: Unauthorized")
        return await handler(request)

    @web.middleware
    async def _fault_middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        fault = self._take_fault(request.method, _api_path(request.path))
        if fault is None:
            return await handler(request)
        if fault.delay:
            await asyncio.sleep(fault.delay)
            return await handler(request)
        if fault.process:
            await handler(request)
        if fault.status == 500:
            return web.Response(status=500, text=SERVER_ERROR_TEXT)
        return web.Response(status=fault.status)

    def _take_fault(self, method: str, path: str) -> _RequestFault | None:
        for fault in self._request_faults:
            if fault.method is not None and fault.method.upper() != method:
                continue
            if path == fault.path or fnmatch.fnmatchcase(path, fault.path):
                fault.times -= 1
                if fault.times <= 0:
                    self._request_faults.remove(fault)
                return fault
        return None

    async def _embeddings(self, request: web.Request) -> web.Response:
        return web.json_response([])

    async def _extensions(self, request: web.Request) -> web.Response:
        return web.json_response([])

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response(list(MODEL_FOLDERS))

    async def _model_folder(self, request: web.Request) -> web.Response:
        folder = request.match_info["folder"]
        if folder not in MODEL_FOLDERS:
            return web.Response(status=404)
        files = {"checkpoints": self.checkpoints, "loras": self.loras}.get(folder, [])
        return web.json_response(sorted(files))

    async def _node_mappings(self, request: web.Request) -> web.Response:
        # ComfyUI-Manager's route; it fails (500) without ?mode=.
        if self.node_mappings is None:
            raise web.HTTPNotFound()
        if "mode" not in request.query:
            return web.Response(status=500, text="500 Internal Server Error")
        return web.json_response(self.node_mappings)

    async def _system_stats(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "system": {
                    "os": os.name,
                    "ram_total": 17179869184,
                    "ram_free": 8589934592,
                    "comfyui_version": "0.3.64",
                    "required_frontend_version": "1.27.10",
                    "installed_templates_version": "0.1.95",
                    "required_templates_version": "0.1.95",
                    "python_version": sys.version,
                    "pytorch_version": "fake",
                    "embedded_python": False,
                    "argv": ["main.py", "--fake"],
                },
                "devices": [
                    {
                        "name": self.device,
                        "type": self.device.split(":")[0],
                        "index": None,
                        "vram_total": 17179869184,
                        "vram_free": 8589934592,
                        "torch_vram_total": 17179869184,
                        "torch_vram_free": 8589934592,
                    }
                ],
            }
        )

    def _server_features(self) -> dict[str, Any]:
        return {"supports_preview_metadata": True, "max_upload_size": self.max_upload_size}

    async def _features(self, request: web.Request) -> web.Response:
        return web.json_response(self._server_features())

    def _exec_info(self) -> dict[str, Any]:
        remaining = len(self._pending) + (1 if self._running is not None else 0)
        return {"exec_info": {"queue_remaining": remaining}}

    async def _get_prompt(self, request: web.Request) -> web.Response:
        return web.json_response(self._exec_info())

    def _lists(self) -> ModelLists:
        inputs = self.input_dir
        files = sorted(p.name for p in inputs.iterdir() if p.is_file()) if inputs.is_dir() else []
        return ModelLists(tuple(self.checkpoints), tuple(self.loras), tuple(files))

    async def _object_info(self, request: web.Request) -> web.Response:
        lists = self._lists()
        if self._object_info_cache is None or self._object_info_cache[0] != lists:
            body = json.dumps(self._catalog.object_info(lists)).encode()
            self._object_info_cache = (lists, body)
        return web.Response(body=self._object_info_cache[1], content_type="application/json")

    async def _object_info_one(self, request: web.Request) -> web.Response:
        name = request.match_info["node_class"]
        if name not in self._catalog:
            return web.json_response({})
        return web.json_response({name: self._catalog.definition(name, self._lists())})

    async def _get_history(self, request: web.Request) -> web.Response:
        max_items = request.query.get("max_items")
        offset = int(request.query.get("offset", -1))
        limit = int(max_items) if max_items is not None else None
        if offset < 0 and limit is not None:
            offset = len(self._history) - limit
        selected: dict[str, Any] = {}
        for index, (prompt_id, entry) in enumerate(self._history.items()):
            if index < offset:
                continue
            selected[prompt_id] = entry
            if limit is not None and len(selected) >= limit:
                break
        return web.json_response(selected)

    async def _get_history_one(self, request: web.Request) -> web.Response:
        prompt_id = request.match_info["prompt_id"]
        entry = self._history.get(prompt_id)
        return web.json_response({prompt_id: entry} if entry is not None else {})

    async def _post_history(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
            if body.get("clear"):
                self._history.clear()
            for prompt_id in body.get("delete", []):
                self._history.pop(prompt_id, None)
        except (ValueError, AttributeError, TypeError):
            return web.Response(status=500, text=SERVER_ERROR_TEXT)
        return web.Response(status=200)

    async def _get_queue(self, request: web.Request) -> web.Response:
        return web.json_response(self.queue)

    async def _post_queue(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
            if body.get("clear"):
                self._pending.clear()
                self._broadcast_status()
            for prompt_id in body.get("delete", []):
                self._delete_pending(prompt_id)
        except (ValueError, AttributeError, TypeError):
            return web.Response(status=500, text=SERVER_ERROR_TEXT)
        return web.Response(status=200)

    def _delete_pending(self, prompt_id: str) -> None:
        for index, entry in enumerate(self._pending):
            if entry[3].prompt_id != prompt_id:
                continue
            if len(self._pending) == 1:
                # ComfyUI wipes the queue (one status) and then reports again.
                self._pending.clear()
                self._broadcast_status()
            else:
                self._pending.pop(index)
                heapq.heapify(self._pending)
            self._broadcast_status()
            return

    async def _post_interrupt(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            body = {}
        prompt_id = body.get("prompt_id") if isinstance(body, dict) else None
        if prompt_id:
            if self._running is not None and self._running.prompt_id == prompt_id:
                self._do_interrupt()
        else:
            self._do_interrupt()
        return web.Response(status=200)

    def _do_interrupt(self) -> None:
        self._interrupt.set()
        self._poke.set()

    async def _post_free(self, request: web.Request) -> web.Response:
        return web.Response(status=200)

    async def _post_prompt(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            return web.Response(status=500, text=SERVER_ERROR_TEXT)
        self.prompts_received.append(copy.deepcopy(body))
        try:
            return self._queue_prompt(body)
        except Exception:
            log.debug("POST /prompt failed", exc_info=True)
            return web.Response(status=500, text=SERVER_ERROR_TEXT)

    def _queue_prompt(self, body: Any) -> web.Response:
        # Python's ``in`` on whatever JSON came, as ComfyUI does (a list body gives no_prompt).
        if "number" in body:
            number: int | float = float(body["number"])
        else:
            number = self._number
            if _lookup(body, "front"):
                number = -number
            self._number += 1
        if "prompt" not in body:
            error = {
                "type": "no_prompt",
                "message": "No prompt provided",
                "details": "No prompt provided",
                "extra_info": {},
            }
            return web.json_response({"error": error, "node_errors": {}}, status=400)
        prompt = body["prompt"]
        prompt_id = str(body.get("prompt_id", uuid.uuid4()))
        if not self.honour_prompt_id:  # like ComfyUI releases older than client prompt ids
            prompt_id = str(uuid.uuid4())
        targets = _lookup(body, "partial_execution_targets")
        checks = {
            "LoadImage": {"image": self._check_image},
            "LoadImageMask": {"image": self._check_image},
            "LoadVideo": {"file": self._check_image},
            "LoadAudio": {"audio": self._check_image},
            # VHS's upload loaders check that the file exists, as the core ones do
            # (VALIDATE_INPUTS), so an upload in a subfolder passes; given as extra_nodes.
            "VHS_LoadVideo": {"video": self._check_image},
            "VHS_LoadAudioUpload": {"audio": self._check_image},
        }
        result = validate_prompt(prompt, self._catalog, self._lists(), targets, checks)
        extra_data = _lookup(body, "extra_data", {})
        if "client_id" in body:
            extra_data["client_id"] = body["client_id"]
        if not result.ok:
            return web.json_response(
                {"error": result.error, "node_errors": result.node_errors}, status=400
            )
        for key in SENSITIVE_EXTRA_DATA_KEYS:
            extra_data.pop(key, None)
        item = QueueItem(number, prompt_id, prompt, extra_data, result.outputs)
        self._sequence += 1
        heapq.heappush(self._pending, (number, prompt_id, self._sequence, item))
        self._broadcast_status()
        self._wake.set()
        return web.json_response(
            {"prompt_id": prompt_id, "number": number, "node_errors": result.node_errors}
        )

    def _check_image(self, name: Any) -> str | bool:
        if isinstance(name, str) and self._find_file(name, "input") is not None:
            return True
        return f"Invalid image file: {name}"

    def _find_file(self, name: str, default_kind: str) -> Path | None:
        filename, kind = _split_annotation(name, default_kind)
        root = self._dir(kind).resolve()
        path = (root / filename).resolve()
        if not path.is_relative_to(root) or not path.is_file():
            return None
        return path

    async def _upload_image(self, request: web.Request) -> web.Response:
        post = await request.post()
        image = post.get("image")
        if not isinstance(image, web.FileField) or not image.filename:
            return web.Response(status=400)
        kind = post.get("type") or "input"
        if kind not in ("input", "temp", "output") or not isinstance(kind, str):
            return web.Response(status=500, text=SERVER_ERROR_TEXT)
        filename = image.filename
        subfolder = str(post.get("subfolder", ""))
        root = os.path.abspath(self._dir(kind))
        folder = os.path.join(root, os.path.normpath(subfolder))
        path = os.path.abspath(os.path.join(folder, filename))
        if os.path.commonpath((root, path)) != root:
            return web.Response(status=400)
        data = image.file.read()
        overwrite = post.get("overwrite")
        duplicate = False
        if overwrite not in ("true", "1"):
            stem, suffix = os.path.splitext(filename)
            counter = 1
            while os.path.exists(path):
                if Path(path).read_bytes() == data:
                    duplicate = True
                    break
                filename = f"{stem} ({counter}){suffix}"
                path = os.path.join(folder, filename)
                counter += 1
        if not duplicate:
            os.makedirs(folder, exist_ok=True)
            try:  # a folder named in the file name is not created: 500 as recorded
                Path(path).write_bytes(data)
            except OSError:
                return web.Response(status=500, text=SERVER_ERROR_TEXT)
        return web.json_response({"name": filename, "subfolder": subfolder, "type": kind})

    async def _view(self, request: web.Request) -> web.StreamResponse:
        query = request.query
        if "filename" not in query:
            return web.Response(status=404)
        filename, kind = _split_annotation(query["filename"], "")
        if not filename:
            return web.Response(status=400)
        if filename[0] == "/" or ".." in filename:
            return web.Response(status=400)
        kind = kind or query.get("type", "output")
        if kind not in ("input", "output", "temp"):
            return web.Response(status=400)
        folder = os.path.abspath(self._dir(kind))
        if "subfolder" in query:
            wanted = os.path.join(folder, query["subfolder"])
            if os.path.commonpath((os.path.abspath(wanted), folder)) != folder:
                return web.Response(status=403)
            folder = wanted
        name = os.path.basename(filename)
        path = Path(folder) / name
        if not path.is_file():
            return web.Response(status=404)
        headers = {"Content-Disposition": f'filename="{name}"'}
        preview = query.get("preview")
        channel = query.get("channel")
        if not preview and channel in (None, "rgba"):
            content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
            return web.Response(body=path.read_bytes(), content_type=content_type, headers=headers)
        with Image.open(path) as opened:
            picture = opened.copy()
        if channel == "rgb":
            picture = picture.convert("RGB")
        elif channel == "a":
            alpha = picture.convert("RGBA").getchannel("A")
            picture = Image.merge("RGBA", (alpha, alpha, alpha, Image.new("L", alpha.size, 255)))
        if preview:
            fmt, _, quality = preview.partition(";")
            fmt = fmt if fmt in ("webp", "jpeg") else "webp"
            body = encode(picture.convert("RGB"), fmt.upper(), quality=int(quality or 90))
            return web.Response(body=body, content_type=f"image/{fmt}", headers=headers)
        return web.Response(body=encode(picture, "PNG"), content_type="image/png", headers=headers)

    # ----------------------------------------------------------------------------------------
    # Websocket

    async def _websocket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        sid = request.query.get("clientId") or uuid.uuid4().hex
        # The newest socket of a client id replaces the older one; whichever closes first
        # unregisters the id (ComfyUI's quirk, transcript o).
        self._sockets[sid] = ws
        self._socket_flags[sid] = {}
        self._connections[ws] = request
        try:
            await ws.send_str(_message("status", {"status": self._exec_info(), "sid": sid}))
            if sid == self._current_client and self._last_node_id is not None:
                await ws.send_str(_message("executing", {"node": self._last_node_id}))
            first = True
            async for received in ws:
                if received.type != WSMsgType.TEXT:
                    continue
                try:
                    data = json.loads(received.data)
                except ValueError:
                    data = None
                if (
                    first
                    and self.answers_feature_flags
                    and isinstance(data, dict)
                    and data.get("type") == "feature_flags"
                ):
                    flags = data.get("data")
                    self._socket_flags[sid] = flags if isinstance(flags, dict) else {}
                    await ws.send_str(_message("feature_flags", self._server_features()))
                first = False
        except (ConnectionError, RuntimeError):
            pass
        finally:
            self._sockets.pop(sid, None)
            self._socket_flags.pop(sid, None)
            self._connections.pop(ws, None)
        return ws

    def _send(self, sid: str | None, payload: str | bytes) -> None:
        """Queue a frame for one client id (``None``: every registered socket)."""
        self._outbox.put_nowait((sid, payload))

    def _send_json(self, sid: str | None, event: str, data: Any) -> None:
        self._send(sid, _message(event, data))

    def _broadcast_status(self) -> None:
        self._send_json(None, "status", {"status": self._exec_info()})

    def _send_text(self, node_id: str, text: str) -> None:
        node = node_id.encode()
        self._send(None, struct.pack(">II", TEXT, len(node)) + node + text.encode())

    def _wants_metadata(self, sid: str | None) -> bool:
        return sid is not None and bool(
            self._socket_flags.get(sid, {}).get("supports_preview_metadata")
        )

    async def _sender(self) -> None:
        while True:
            sid, payload = await self._outbox.get()
            try:
                if sid is None:
                    targets = list(self._sockets.values())
                else:
                    target = self._sockets.get(sid)
                    targets = [target] if target is not None else []
                for ws in targets:
                    if ws.closed:
                        continue
                    try:
                        if isinstance(payload, bytes):
                            await ws.send_bytes(payload)
                        else:
                            await ws.send_str(payload)
                    except (ConnectionError, RuntimeError):
                        pass
            finally:
                self._outbox.task_done()

    # ----------------------------------------------------------------------------------------
    # Execution

    async def _worker(self) -> None:
        while True:
            while self._paused or not self._pending:
                self._wake.clear()
                await self._wake.wait()
            item = heapq.heappop(self._pending)[3]
            self._running = item
            self._broadcast_status()
            began = time.monotonic()
            try:
                await _Run(self, item).execute()
                self.busy.append((began, time.monotonic(), item.prompt_id))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a bug in the fake: make tests fail loudly
                log.exception("fake ComfyUI worker crashed")
                self._worker_error = exc
                self._running = None
                return

    def _changed(self, node_id: str, node: Mapping[str, Any]) -> str | None:
        """What IS_CHANGED adds to a cache key: the loaded file's hash."""
        if node.get("class_type") not in ("LoadImage", "LoadImageMask"):
            return None
        name = node.get("inputs", {}).get("image")
        path = self._find_file(name, "input") if isinstance(name, str) else None
        return hashlib.sha256(path.read_bytes()).hexdigest() if path is not None else None

    def _raise_if_interrupted(self) -> None:
        if self._interrupt.is_set():
            raise Interrupted

    def _raise_injected(self, node_id: str, class_type: str) -> None:
        for fault in self._node_faults:
            if fault.target not in (node_id, class_type):
                continue
            if fault.times is not None:
                fault.times -= 1
                if fault.times <= 0:
                    self._node_faults.remove(fault)
            raise InjectedFailure(fault.exception_type, fault.message)

    async def _step_gate(self, prompt_id: str, node_id: str, step: int) -> None:
        if self.step_delay > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.step_delay):
                    await self._interrupt.wait()
        try:
            while not self._interrupt.is_set():
                if self._step_budget is None:
                    break
                if self._step_budget > 0:
                    self._step_budget -= 1
                    break
                self._held = HeldStep(prompt_id, node_id, step)
                self._poke.clear()
                await self._poke.wait()
        finally:
            self._held = None
        self._raise_if_interrupted()

    def _temp_prefix(self, node_id: str, class_type: str) -> str:
        key = (node_id, class_type)
        if key not in self._temp_prefixes:
            letters = "".join(random.choices(string.ascii_lowercase, k=5))
            self._temp_prefixes[key] = f"ComfyUI_temp_{letters}"
        return self._temp_prefixes[key]

    def _complete(self, run: _Run, outcome: str) -> None:
        """Write history, report the queue, then ``executing node=None`` (as ComfyUI)."""
        item = run.item
        meta = {
            node_id: {
                "node_id": node_id,
                "display_node": node_id,
                "parent_node": None,
                "real_node_id": node_id,
            }
            for node_id in run.ui_outputs
        }
        self._history[item.prompt_id] = {
            "prompt": item.as_list(),
            "outputs": run.ui_outputs,
            "status": {
                "status_str": "success" if outcome == "success" else "error",
                "completed": outcome == "success",
                "messages": run.messages,
            },
            "meta": meta,
        }
        while len(self._history) > MAX_HISTORY:
            self._history.pop(next(iter(self._history)))
        self._running = None
        self._last_node_id = None
        self._broadcast_status()
        if run.client_id is not None:
            self._send_json(run.client_id, "executing", {"node": None, "prompt_id": item.prompt_id})


class _Run:
    """The execution of one queued prompt."""

    def __init__(self, fake: FakeComfyUI, item: QueueItem) -> None:
        self.fake = fake
        self.item = item
        client_id = item.extra_data.get("client_id") if isinstance(item.extra_data, dict) else None
        self.client_id: str | None = client_id
        self.messages: list[list[Any]] = []
        self.progress: dict[str, dict[str, Any]] = {}
        self.ui_outputs: dict[str, Any] = {}
        self.executed: list[str] = []
        self.signatures: dict[str, str] = {}

    # messages ---------------------------------------------------------------------------------

    def add_message(self, event: str, data: dict[str, Any], *, broadcast: bool) -> None:
        """A message that also goes into the history's ``status.messages``."""
        data = {**data, "timestamp": _now_ms()}
        self.messages.append([event, data])
        if self.client_id is not None or broadcast:
            self.fake._send_json(self.client_id, event, data)

    def to_client(self, event: str, data: dict[str, Any]) -> None:
        """Only to the submitting client (nobody when the prompt had no client_id)."""
        if self.client_id is not None:
            self.fake._send_json(self.client_id, event, data)

    def _send_progress_state(self) -> None:
        # sent to the client, or to everyone when the prompt has no client id
        nodes = {"prompt_id": self.item.prompt_id, "nodes": self.progress}
        self.fake._send_json(self.client_id, "progress_state", nodes)

    def start_progress(self, node_id: str) -> None:
        self.progress[node_id] = {
            "value": 0.0,
            "max": 1.0,
            "state": "running",
            "node_id": node_id,
            "prompt_id": self.item.prompt_id,
            "display_node_id": node_id,
            "parent_node_id": None,
            "real_node_id": node_id,
        }
        self._send_progress_state()

    def finish_progress(self, node_id: str) -> None:
        entry = self.progress.get(node_id)
        if entry is None:  # a cached node: finished without having started (ints, as recorded)
            entry = self.progress[node_id] = {
                "value": 1,
                "max": 1,
                "state": "finished",
                "node_id": node_id,
                "prompt_id": self.item.prompt_id,
                "display_node_id": node_id,
                "parent_node_id": None,
                "real_node_id": node_id,
            }
        entry["state"] = "finished"
        entry["value"] = entry["max"]
        self._send_progress_state()

    def report_progress(
        self, node_id: str, value: int, total: int, preview: tuple[str, bytes] | None
    ) -> None:
        entry = self.progress[node_id]
        entry["value"], entry["max"] = value, total
        self._send_progress_state()
        prompt_id = self.item.prompt_id
        progress = {"value": value, "max": total, "prompt_id": prompt_id, "node": node_id}
        if preview is None:
            self.fake._send_json(self.client_id, "progress", progress)
            return
        mime, image = preview
        if self.fake._wants_metadata(self.client_id):
            metadata = json.dumps(
                {
                    "node_id": node_id,
                    "prompt_id": prompt_id,
                    "display_node_id": node_id,
                    "parent_node_id": None,
                    "real_node_id": node_id,
                    "image_type": mime,
                }
            ).encode()
            header = struct.pack(">II", PREVIEW_IMAGE_WITH_METADATA, len(metadata))
            self.fake._send(self.client_id, header + metadata + image)
            self.fake._send_json(self.client_id, "progress", progress)
        else:
            self.fake._send_json(self.client_id, "progress", progress)
            header = struct.pack(">II", PREVIEW_IMAGE, _IMAGE_TYPES[mime])
            self.fake._send(self.client_id, header + image)

    # execution ------------------------------------------------------------------------------

    async def execute(self) -> None:
        fake, item = self.fake, self.item
        prompt_id = item.prompt_id
        fake._interrupt.clear()
        fake._current_client = self.client_id
        fake._last_node_id = None
        self.add_message("execution_start", {"prompt_id": prompt_id}, broadcast=False)
        self.signatures = node_signatures(item.prompt, fake._catalog, fake._changed)
        used = set(self.signatures.values())
        for key in [key for key in fake._cache if key not in used]:
            del fake._cache[key]
        cached = [node_id for node_id in item.prompt if self.signatures[node_id] in fake._cache]
        self.add_message(
            "execution_cached", {"nodes": cached, "prompt_id": prompt_id}, broadcast=False
        )

        if fake.job_seconds > 0:  # the simulated GPU time of the whole prompt
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(fake.job_seconds):
                    await fake._interrupt.wait()

        def is_output(node_id: str) -> bool:
            return fake._catalog.is_output(item.prompt[node_id]["class_type"])

        plan = ExecutionPlan(item.prompt, item.outputs, set(cached), is_output)
        outcome = "success"
        while (node_id := plan.next_node()) is not None:
            try:
                await self._run_node(node_id)
            except Interrupted:
                outcome = "interrupted"
                self.add_message(
                    "execution_interrupted",
                    {
                        "prompt_id": prompt_id,
                        "node_id": node_id,
                        "node_type": item.prompt[node_id]["class_type"],
                        "executed": self.executed[::-1],
                    },
                    broadcast=True,
                )
                break
            except Exception as exc:
                outcome = "error"
                self._report_error(node_id, exc)
                break
            plan.done(node_id)
        if outcome == "success":
            self.add_message("execution_success", {"prompt_id": prompt_id}, broadcast=False)
        fake._complete(self, outcome)

    def _report_error(self, node_id: str, exc: Exception) -> None:
        prompt = self.item.prompt
        current_inputs: dict[str, list[Any]] = {}
        for name, value in prompt[node_id].get("inputs", {}).items():
            if is_link(value):
                current_inputs[name] = [f"<output {value[1]} of node {value[0]}>"]
            else:
                current_inputs[name] = [value]
        self.add_message(
            "execution_error",
            {
                "prompt_id": self.item.prompt_id,
                "node_id": node_id,
                "node_type": prompt[node_id]["class_type"],
                "executed": self.executed[::-1],
                "exception_message": f"{exc}\n",
                "exception_type": type_name(exc),
                "traceback": traceback_lines(exc),
                "current_inputs": current_inputs,
                "current_outputs": [n for n in prompt if self.signatures[n] in self.fake._cache],
            },
            broadcast=False,
        )

    async def _run_node(self, node_id: str) -> None:
        fake = self.fake
        prompt_id = self.item.prompt_id
        node = self.item.prompt[node_id]
        class_type = node["class_type"]
        signature = self.signatures[node_id]
        entry = fake._cache.get(signature)
        if entry is not None:
            self._publish_ui(node_id, entry.ui)
            self.finish_progress(node_id)
            return
        self.start_progress(node_id)
        if self.client_id is not None:
            fake._last_node_id = node_id
            self.to_client(
                "executing", {"node": node_id, "display_node": node_id, "prompt_id": prompt_id}
            )
        fake._raise_if_interrupted()
        fake._raise_injected(node_id, class_type)
        definition = fake._catalog.definition(class_type, fake._lists())
        check_linked_inputs(definition, node["inputs"])
        inputs: dict[str, Any] = {}
        for _, name, _spec in iter_inputs(definition):
            if name not in node["inputs"]:
                continue
            value = node["inputs"][name]
            if is_link(value):
                value = fake._cache[self.signatures[value[0]]].outputs[value[1]]
            inputs[name] = value
        context = _NodeContext(self, node_id, class_type)
        simulate = SIMULATORS.get(class_type, passthrough)
        result: NodeResult = await simulate(context, inputs)
        fake._cache[signature] = CacheEntry(result.outputs, result.ui)
        self.executed.append(node_id)
        self._publish_ui(node_id, result.ui)
        self.finish_progress(node_id)

    def _publish_ui(self, node_id: str, ui: dict[str, Any] | None) -> None:
        if ui is None:
            return
        self.ui_outputs[node_id] = ui
        self.to_client(
            "executed",
            {
                "node": node_id,
                "display_node": node_id,
                "output": ui,
                "prompt_id": self.item.prompt_id,
            },
        )


class _NodeContext:
    """What a simulated node sees of the server (implements ``NodeContext``)."""

    def __init__(self, run: _Run, node_id: str, class_type: str) -> None:
        self._run = run
        self._fake = run.fake
        self.node_id = node_id
        self.class_type = class_type
        self.output_types = run.fake._catalog.output_types(class_type)
        self.prompt = run.item.prompt

    @property
    def previews(self) -> bool:
        return self._fake.previews

    async def step(self, value: int, total: int, preview: Image.Image | None = None) -> None:
        await self._fake._step_gate(self._run.item.prompt_id, self.node_id, value)
        encoded = ("image/jpeg", encode(preview, "JPEG", quality=80)) if preview else None
        self._run.report_progress(self.node_id, value, total, encoded)

    async def report(self, value: int, total: int, png: bytes | None = None) -> None:
        self._fake._raise_if_interrupted()
        preview = ("image/png", png) if png is not None else None
        self._run.report_progress(self.node_id, value, total, preview)

    def text(self, message: str) -> None:
        self._fake._send_text(self.node_id, message)

    def save(self, images: Images, prefix: str, kind: str) -> list[dict[str, str]]:
        text = {"prompt": json.dumps(self.prompt)}
        return save_png_batch(self._fake._dir(kind), prefix, images.frames, kind, text)

    def output_root(self) -> Path:
        return self._fake._dir("output")

    def temp_prefix(self) -> str:
        return self._fake._temp_prefix(self.node_id, self.class_type)

    def input_file(self, name: str) -> Path:
        path = self._fake._find_file(name, "input")
        if path is None:
            raise FileNotFoundError(f"[Errno 2] No such file or directory: '{name}'")
        return path
