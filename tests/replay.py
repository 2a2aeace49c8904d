"""Replay one prompt of a recorded ComfyUI transcript to a real client.

The recorded transcripts (see ``tests/recordings.py``) hold every HTTP exchange and websocket
frame a real ComfyUI sent. :func:`prompt_script` cuts out what one prompt produced (its frames,
its recorded ``/history`` entry, the requests that gated it such as ``POST /interrupt``) and
:class:`ReplayServer` serves it from a small aiohttp app, replacing the recorded prompt id and
clientId with the ones the client chose. Binary frames are stored as headers only; they are
rebuilt with :func:`frame_bytes` (image bytes = the recorded magic, padded to the recorded length).

Faults: ``hold`` (prompt stays pending until released or deleted), ``drop_after`` (close the
socket after N frames; the run goes on, frames for the dead clientId are lost like on ComfyUI),
``history_empty`` (first N ``/history`` reads are ``{}``), ``forget`` (after a drop the server
"restarts": history and queue are empty), ``autoping=False`` (never answers pings),
``mute_after`` (after N frames the socket stays open but receives nothing more, like a socket
ComfyUI unregistered).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import struct
import uuid
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestServer

from tests.recordings import RECORDINGS as DATA
from tests.recordings import TRANSCRIPTS


def load_transcript(name: str) -> dict[str, Any]:
    """A transcript by file stem, e.g. ``"a_basic_emptyimage_save"``."""
    transcript: dict[str, Any] = json.loads((TRANSCRIPTS / f"{name}.json").read_text())
    return transcript


def all_transcripts() -> dict[str, dict[str, Any]]:
    return {p.stem: json.loads(p.read_text()) for p in sorted(TRANSCRIPTS.glob("*.json"))}


def load_examples() -> dict[str, Any]:
    examples: dict[str, Any] = json.loads((DATA / "ws_message_examples.json").read_text())
    return examples


def _image_bytes(magic_hex: str, length: int) -> bytes:
    magic = bytes.fromhex(magic_hex)
    return (magic + bytes(max(0, length - len(magic))))[: max(length, len(magic))]


def frame_bytes(record: dict[str, Any], replace: dict[str, str] | None = None) -> bytes:
    """Rebuild a binary frame from its recorded header fields (``event_type`` + ``decoded``)."""
    kind = record["event_type"]
    decoded = record["decoded"]
    if kind == 1:
        image = _image_bytes(decoded["image_magic_hex"], decoded["image_len"])
        return struct.pack(">II", 1, decoded["image_type"]) + image
    if kind == 3:
        node = str(decoded["node_id"]).encode()
        return struct.pack(">II", 3, len(node)) + node + str(decoded["text"]).encode()
    if kind == 4:
        meta = _substitute(decoded["metadata"], replace or {})
        meta_bytes = json.dumps(meta).encode()
        image = _image_bytes(decoded["image_magic_hex"], decoded["image_len"])
        return struct.pack(">II", 4, len(meta_bytes)) + meta_bytes + image
    raise ValueError(f"unknown binary frame type {kind}")


def _substitute(obj: Any, replace: dict[str, str]) -> Any:
    text = json.dumps(obj)
    for old, new in replace.items():
        text = text.replace(old, new)
    return json.loads(text)


def _frame_prompt_id(event: dict[str, Any]) -> str | None:
    if event["kind"] == "ws_recv":
        data = event["json"].get("data")
        return data.get("prompt_id") if isinstance(data, dict) else None
    meta = event.get("decoded", {}).get("metadata")
    return meta.get("prompt_id") if isinstance(meta, dict) else None


@dataclass
class Frame:
    """One step of a replay: a JSON frame, a binary frame, or a gate (wait for a request)."""

    kind: str  # "json" | "binary" | "gate"
    payload: Any = None


@dataclass
class PromptScript:
    """What one recorded prompt produced, ready to replay."""

    recorded_id: str
    recorded_client_id: str
    prompt: dict[str, Any]
    frames: list[Frame]
    history: dict[str, Any] | None

    def outputs(self) -> dict[str, list[dict[str, str]]]:
        """The recorded outputs (from history, else from the executed frames)."""
        if self.history is not None:
            return {k: v.get("images", []) for k, v in self.history.get("outputs", {}).items()}
        return _outputs_from_frames(self.frames)


def _outputs_from_frames(frames: list[Frame]) -> dict[str, list[dict[str, str]]]:
    outputs: dict[str, list[dict[str, str]]] = {}
    for frame in frames:
        if frame.kind == "json" and frame.payload["type"] == "executed":
            data = frame.payload["data"]
            outputs.setdefault(data["node"], []).extend(data["output"].get("images", []))
    return outputs


def _synth_history(script: PromptScript) -> dict[str, Any]:
    """A history entry like ComfyUI's, for transcripts that only kept a summary of it."""
    messages: list[list[Any]] = []
    status_str, completed = "success", True
    for frame in script.frames:
        if frame.kind != "json":
            continue
        kind = frame.payload["type"]
        if kind in ("execution_start", "execution_cached", "execution_success"):
            messages.append([kind, frame.payload["data"]])
        elif kind in ("execution_error", "execution_interrupted"):
            messages.append([kind, frame.payload["data"]])
            status_str, completed = "error", False
    outputs = {node: {"images": refs} for node, refs in _outputs_from_frames(script.frames).items()}
    return {
        "prompt": [0, script.recorded_id, script.prompt, {}, list(outputs)],
        "outputs": outputs,
        "status": {"status_str": status_str, "completed": completed, "messages": messages},
        "meta": {},
    }


def prompt_script(name: str, id_prefix: str, client: str = "A") -> PromptScript:
    """Cut out the frames one prompt produced on one recorded client's socket.

    ``id_prefix`` is the start of the recorded prompt id (as shown in the transcript sequence).
    """
    events = load_transcript(name)["events"]
    start = next(
        i
        for i, e in enumerate(events)
        if e["kind"] == "http"
        and e["method"] == "POST"
        and e["path"] == "/prompt"
        and str(e.get("response_json", {}).get("prompt_id", "")).startswith(id_prefix)
    )
    post = events[start]
    recorded_id = post["response_json"]["prompt_id"]
    recorded_client = post["request_json"].get("client_id", "")
    frames: list[Frame] = []
    history: dict[str, Any] | None = None
    for event in events[start + 1 :]:
        kind = event["kind"]
        if kind == "http":
            body = event.get("request_json")
            is_interrupt = event["method"] == "POST" and event["path"] == "/interrupt"
            if is_interrupt and (body is None or body.get("prompt_id") == recorded_id):
                frames.append(Frame("gate", "interrupt"))
            if event["method"] == "GET" and event["path"] == f"/history/{recorded_id}":
                entry = event.get("response_json", {}).get(recorded_id)
                if entry is not None and history is None:
                    history = entry
            continue
        if kind not in ("ws_recv", "ws_recv_binary") or event["client"] != client:
            continue
        pid = _frame_prompt_id(event)
        if pid not in (None, recorded_id):
            continue
        if kind == "ws_recv":
            if pid is None and event["json"]["type"] != "status":
                continue  # e.g. "executing" without prompt id after a reconnect
            frames.append(Frame("json", event["json"]))
            data = event["json"]["data"]
            if event["json"]["type"] == "executing" and data.get("node") is None and pid:
                if history is None:
                    history = _find_history(events, recorded_id)
                break
        else:
            frames.append(Frame("binary", event))
    script = PromptScript(
        recorded_id, recorded_client, post["request_json"]["prompt"], frames, history
    )
    if script.history is None:
        script.history = _synth_history(script)
    return script


def _find_history(events: list[dict[str, Any]], recorded_id: str) -> dict[str, Any] | None:
    for event in events:
        if event["kind"] == "http" and event["path"] == f"/history/{recorded_id}":
            entry = event.get("response_json", {}).get(recorded_id)
            if isinstance(entry, dict):
                return entry
    return None


def rejection_cases() -> list[tuple[str, dict[str, Any], int, Any]]:
    """Every ``POST /prompt`` of transcript c: (case name, request, status, response body)."""
    cases = []
    note = ""
    for event in load_transcript("c_invalid_workflows")["events"]:
        if event["kind"] == "note" and event["text"].startswith("case "):
            note = event["text"][len("case ") :]
        elif event["kind"] == "http" and event["path"] == "/prompt" and event["method"] == "POST":
            body = event.get("response_json", event.get("response_text"))
            cases.append((note, event.get("request_json"), event["status"], body))
    return cases


@dataclass
class _Run:
    prompt_id: str
    client_id: str
    number: int
    script: PromptScript
    state: str = "pending"  # pending | running | done | deleted
    gate: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None


class ReplayServer:
    """A fake ComfyUI that replays recorded prompts (one script per ``POST /prompt``)."""

    def __init__(
        self,
        *scripts: PromptScript,
        reject: tuple[int, Any] | None = None,
        hold: bool = False,
        drop_after: int | None = None,
        pause_after_drop: float = 0.0,
        forget: bool = False,
        history_empty: int = 0,
        autoping: bool = True,
        mute_after: int | None = None,
    ) -> None:
        self.scripts = list(scripts)
        self.reject = reject
        self.hold = hold
        self.drop_after = drop_after
        self.pause_after_drop = pause_after_drop
        self.forget = forget
        self.history_empty = history_empty
        self.autoping = autoping
        self.mute_after = mute_after
        self.requests: list[tuple[str, str, Any]] = []
        self.ws_received: list[tuple[str, Any]] = []
        self.ws_client_ids: list[str] = []
        self.sockets: dict[str, web.WebSocketResponse] = {}
        self.runs: dict[str, _Run] = {}
        self.history_entries: dict[str, dict[str, Any]] = {}
        self.released = asyncio.Event()
        self.uploads: list[tuple[str, str, bytes]] = []
        self._number = 100
        self._server: TestServer | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        app = web.Application()
        app.router.add_get("/ws", self._ws)
        app.router.add_post("/prompt", self._post_prompt)
        app.router.add_get("/queue", self._get_queue)
        app.router.add_post("/queue", self._post_queue)
        app.router.add_post("/interrupt", self._post_interrupt)
        app.router.add_get("/history/{prompt_id}", self._get_history)
        app.router.add_get("/view", self._view)
        app.router.add_post("/upload/image", self._upload)
        app.router.add_get("/object_info", self._object_info)
        app.router.add_get("/system_stats", self._system_stats)
        app.on_shutdown.append(self._on_shutdown)
        self.app = app

    # --- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> ReplayServer:
        self._server = TestServer(self.app)
        await self._server.start_server()
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        assert self._server is not None
        await self._server.close()

    @property
    def url(self) -> str:
        assert self._server is not None
        return str(self._server.make_url("")).rstrip("/")

    async def _on_shutdown(self, app: web.Application) -> None:
        for ws in list(self.sockets.values()):
            await ws.close()

    def requests_to(self, method: str, path: str) -> list[Any]:
        return [body for m, p, body in self.requests if m == method and p == path]

    # --- websocket ---------------------------------------------------------------------------

    async def _ws(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=self.autoping)
        await ws.prepare(request)
        client_id = request.query.get("clientId") or uuid.uuid4().hex
        self.ws_client_ids.append(client_id)
        self.sockets[client_id] = ws
        status = {"status": {"exec_info": {"queue_remaining": self._remaining()}}, "sid": client_id}
        await ws.send_json({"type": "status", "data": status})
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    self.ws_received.append((client_id, json.loads(msg.data)))
        finally:
            if self.sockets.get(client_id) is ws:
                del self.sockets[client_id]
        return ws

    async def drop(self, client_id: str) -> None:
        ws = self.sockets.pop(client_id, None)
        if ws is not None:
            await ws.close()

    def _remaining(self) -> int:
        return sum(1 for r in self.runs.values() if r.state in ("pending", "running"))

    async def _send(self, client_id: str, frame: Frame, replace: dict[str, str]) -> None:
        if frame.kind == "json":
            payload = _substitute(frame.payload, replace)
            if payload["type"] == "status":
                payload["data"]["status"]["exec_info"]["queue_remaining"] = self._remaining()
                targets = list(self.sockets.values())  # status is broadcast
            else:
                targets = [ws for cid, ws in self.sockets.items() if cid == client_id]
            for ws in targets:
                with contextlib.suppress(ConnectionError, RuntimeError):
                    await ws.send_json(payload)
        else:
            data = frame_bytes(frame.payload, replace)
            target = self.sockets.get(client_id)
            if target is not None:
                with contextlib.suppress(ConnectionError, RuntimeError):
                    await target.send_bytes(data)

    async def broadcast_status(self) -> None:
        status = {"status": {"exec_info": {"queue_remaining": self._remaining()}}}
        for ws in list(self.sockets.values()):
            with contextlib.suppress(ConnectionError, RuntimeError):
                await ws.send_json({"type": "status", "data": status})

    # --- the prompt's run --------------------------------------------------------------------

    async def _play(self, run: _Run) -> None:
        script = run.script
        replace = {script.recorded_id: run.prompt_id}
        if script.recorded_client_id:
            replace[script.recorded_client_id] = run.client_id
        if self.hold:
            await self.released.wait()
        sent = 0
        for frame in script.frames:
            await asyncio.sleep(0.001)
            if frame.kind == "gate":
                await run.gate.wait()
                continue
            if frame.kind == "json":
                kind = frame.payload["type"]
                data = frame.payload["data"]
                if kind == "execution_start":
                    run.state = "running"
                if kind == "executing" and data.get("node") is None:
                    self._finish(run, replace)
                if kind in ("execution_success", "execution_error", "execution_interrupted"):
                    # ComfyUI writes history and leaves the queue before its next status.
                    self._finish(run, replace)
            if self.mute_after is None or sent < self.mute_after:
                await self._send(run.client_id, frame, replace)
            sent += 1
            if self.drop_after is not None and sent == self.drop_after:
                self.drop_after = None
                await self.drop(run.client_id)
                if self.forget:
                    self.runs.clear()
                    self.history_entries.clear()
                    return
                await asyncio.sleep(self.pause_after_drop)
        self._finish(run, replace)

    def _finish(self, run: _Run, replace: dict[str, str]) -> None:
        if run.state == "done":
            return
        run.state = "done"
        assert run.script.history is not None
        self.history_entries[run.prompt_id] = _substitute(run.script.history, replace)

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # --- HTTP ---------------------------------------------------------------------------------

    async def _post_prompt(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append(("POST", "/prompt", body))
        if self.reject is not None:
            status, answer = self.reject
            if isinstance(answer, str):
                return web.Response(status=status, text=answer)
            return web.json_response(answer, status=status)
        prompt_id = body.get("prompt_id") or str(uuid.uuid4())
        script = self.scripts.pop(0)
        self._number += 1
        run = _Run(prompt_id, body.get("client_id", ""), self._number, script)
        self.runs[prompt_id] = run
        run.task = self._spawn(self._play(run))
        return web.json_response({"prompt_id": prompt_id, "number": run.number, "node_errors": {}})

    def _item(self, run: _Run) -> list[Any]:
        return [run.number, run.prompt_id, {}, {"client_id": run.client_id}, []]

    async def _get_queue(self, request: web.Request) -> web.Response:
        self.requests.append(("GET", "/queue", None))
        running = [self._item(r) for r in self.runs.values() if r.state == "running"]
        pending = [self._item(r) for r in self.runs.values() if r.state == "pending"]
        return web.json_response({"queue_running": running, "queue_pending": pending[::-1]})

    async def _post_queue(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append(("POST", "/queue", body))
        for prompt_id in body.get("delete", []):
            run = self.runs.get(prompt_id)
            if run is not None and run.state == "pending":
                run.state = "deleted"
                if run.task is not None:
                    run.task.cancel()
        return web.Response()

    async def _post_interrupt(self, request: web.Request) -> web.Response:
        body = await request.json() if request.can_read_body else None
        self.requests.append(("POST", "/interrupt", body))
        target = body.get("prompt_id") if isinstance(body, dict) else None
        for run in self.runs.values():
            if run.state == "running" and target in (None, run.prompt_id):
                run.gate.set()
        return web.Response()

    async def _get_history(self, request: web.Request) -> web.Response:
        prompt_id = request.match_info["prompt_id"]
        self.requests.append(("GET", f"/history/{prompt_id}", None))
        entry = self.history_entries.get(prompt_id)
        if entry is None:
            return web.json_response({})
        if self.history_empty > 0:
            self.history_empty -= 1
            return web.json_response({})
        return web.json_response({prompt_id: entry})

    async def _view(self, request: web.Request) -> web.Response:
        self.requests.append(("GET", "/view", dict(request.query)))
        filename = request.query.get("filename", "")
        if not filename or ".." in filename or filename.startswith("/"):
            return web.Response(status=400)
        if filename.startswith("missing"):
            return web.Response(status=404)
        return web.Response(body=b"\x89PNG\r\n\x1a\n" + filename.encode(), content_type="image/png")

    async def _upload(self, request: web.Request) -> web.Response:
        form = await request.post()
        self.requests.append(("POST", "/upload/image", {k: str(v) for k, v in form.items()}))
        image = form["image"]
        assert isinstance(image, web.FileField)
        data = image.file.read()
        subfolder = str(form.get("subfolder", ""))
        name = image.filename
        if any(n == name and s == subfolder for n, s, _ in self.uploads):
            stem, _, ext = name.rpartition(".")
            name = f"{stem} (1).{ext}"
        self.uploads.append((name, subfolder, data))
        return web.json_response({"name": name, "subfolder": subfolder, "type": "input"})

    async def _object_info(self, request: web.Request) -> web.Response:
        self.requests.append(("GET", "/object_info", None))
        return web.Response(
            body=(DATA / "object_info.json").read_bytes(), content_type="application/json"
        )

    async def _system_stats(self, request: web.Request) -> web.Response:
        return web.json_response({"system": {"comfyui_version": "0.3.64"}, "devices": []})
