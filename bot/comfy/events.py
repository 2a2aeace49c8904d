"""Typed ComfyUI websocket messages and their parsers.

ComfyUI sends JSON text frames ``{"type": ..., "data": {...}}`` and binary frames that start with
a 4-byte big-endian event type (as ComfyUI sends them). :func:`parse_message` and
:func:`parse_binary` turn either into one of the frozen dataclasses below. They never raise: a frame
that is malformed or of a type this module doesn't know becomes :class:`Unknown`, and fields a newer
ComfyUI adds are ignored.

Two events are made by the client, never sent by ComfyUI: :class:`QueuePosition` (where a waiting
prompt stands in ComfyUI's queue) and :class:`Finished` (the last event of a prompt's stream).
"""

from __future__ import annotations

import json
import logging
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias
from urllib.parse import urlencode

from bot.errors import ExecutionFailed

log = logging.getLogger(__name__)

__all__ = [
    "Event",
    "Executed",
    "Executing",
    "ExecutionCached",
    "ExecutionError",
    "ExecutionInterrupted",
    "ExecutionStart",
    "ExecutionSuccess",
    "FeatureFlags",
    "Finished",
    "ImageRef",
    "NodeState",
    "Preview",
    "Progress",
    "ProgressState",
    "QueuePosition",
    "Status",
    "Text",
    "Unknown",
    "parse_binary",
    "parse_message",
    "parse_payload",
]

#: Binary frame types (first 4 bytes, big-endian).
BINARY_PREVIEW = 1
BINARY_TEXT = 3
BINARY_PREVIEW_WITH_METADATA = 4

#: Image type codes of a type-1 preview frame.
_PREVIEW_MIME = {1: "image/jpeg", 2: "image/png"}

#: How much of a traceback an ExecutionError keeps (for logs; never shown to users).
TRACEBACK_KEEP_CHARS = 1500
#: How much of an exception message an ExecutionError keeps.
MESSAGE_KEEP_CHARS = 1000

ResultStatus: TypeAlias = Literal["success", "error", "interrupted", "lost"]


@dataclass(frozen=True, slots=True)
class ImageRef:
    """A file ComfyUI wrote: what ``/view`` needs to send it back."""

    filename: str
    subfolder: str = ""
    type: str = "output"
    #: A text output (``PreviewAny``, ShowText-style nodes): the string itself, no file to fetch.
    text: str | None = None

    @property
    def is_text(self) -> bool:
        return self.text is not None

    @classmethod
    def of_text(cls, text: str) -> ImageRef:
        """A text output of a node (``{"text": ["…"]}``); it travels with the files, in order."""
        return cls(filename="text.txt", type="text", text=text)

    @property
    def query(self) -> str:
        """The URL query string for ``GET /view`` (``filename=…&subfolder=…&type=…``)."""
        return urlencode(
            {"filename": self.filename, "subfolder": self.subfolder, "type": self.type}
        )

    @classmethod
    def from_json(cls, obj: object) -> ImageRef | None:
        """Build a reference from ``{"filename", "subfolder", "type"}``; None if it isn't one."""
        if not isinstance(obj, Mapping):
            return None
        filename = obj.get("filename")
        if not isinstance(filename, str) or not filename:
            return None
        subfolder = obj.get("subfolder")
        kind = obj.get("type")
        return cls(
            filename=filename,
            subfolder=subfolder if isinstance(subfolder, str) else "",
            type=kind if isinstance(kind, str) and kind else "output",
        )


def refs_from_output(output: object) -> tuple[ImageRef, ...]:
    """Every file reference in a node's UI output (``images``, ``gifs``, ``audio``…), in order,
    then its text outputs (``{"text": ["…"]}``, strings rather than files)."""
    if not isinstance(output, Mapping):
        return ()
    refs: list[ImageRef] = []
    # "images" first: it is what SaveImage/PreviewImage use; then any other list of files.
    keys = sorted(output, key=lambda k: (k != "images", str(k)))
    for key in keys:
        items = output[key]
        if not isinstance(items, list):
            continue
        for item in items:
            ref = ImageRef.from_json(item)
            if ref is not None:
                refs.append(ref)
    texts = output.get("text")
    if isinstance(texts, list):
        refs.extend(ImageRef.of_text(t) for t in texts if isinstance(t, str) and t.strip())
    return tuple(refs)


# --- JSON messages ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Status:
    """Queue status, broadcast to every client; the first one on a socket carries its ``sid``."""

    queue_remaining: int | None
    sid: str | None = None


@dataclass(frozen=True, slots=True)
class ExecutionStart:
    """ComfyUI started running the prompt."""

    prompt_id: str


@dataclass(frozen=True, slots=True)
class ExecutionCached:
    """These nodes' outputs came from the cache: they send no ``executing``/``progress``."""

    prompt_id: str
    nodes: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Executing:
    """A node started; ``node`` None means the prompt is over and its history is written."""

    prompt_id: str | None
    node: str | None


@dataclass(frozen=True, slots=True)
class Progress:
    """A node's step counter (KSampler steps, for instance)."""

    prompt_id: str | None
    node: str | None
    value: float
    max: float


@dataclass(frozen=True, slots=True)
class NodeState:
    """One node's entry in a ``progress_state`` message."""

    value: float
    max: float
    state: str


@dataclass(frozen=True, slots=True)
class ProgressState:
    """The state of every node of the prompt that has started so far."""

    prompt_id: str
    nodes: dict[str, NodeState]


@dataclass(frozen=True, slots=True)
class Executed:
    """An output node finished; ``images`` are the files it wrote."""

    prompt_id: str
    node: str
    images: tuple[ImageRef, ...]


@dataclass(frozen=True, slots=True)
class ExecutionSuccess:
    """The prompt finished without error (history is written a moment later)."""

    prompt_id: str


@dataclass(frozen=True, slots=True)
class ExecutionError:
    """A node raised while the prompt ran.

    ``traceback`` keeps only the tail of ComfyUI's traceback (for logs); the node's inputs are
    dropped.
    """

    prompt_id: str
    node_id: str | None
    node_type: str | None
    exception_type: str
    exception_message: str
    traceback: str = ""

    @property
    def message(self) -> str:
        """A plain-words description that names the node, e.g. ``ImageToMask (#2) failed: …``."""
        where = _node_label(self.node_type, self.node_id)
        text = self.exception_message.strip() or "no details"
        kind = self.exception_type.rsplit(".", 1)[-1] if self.exception_type else "error"
        return f"{where} failed: {kind}: {text}"

    def to_exception(self) -> ExecutionFailed:
        """The :class:`~bot.errors.ExecutionFailed` to raise for this error."""
        return ExecutionFailed(
            self.message,
            node_id=self.node_id,
            node_type=self.node_type,
            exception_type=self.exception_type,
        )


@dataclass(frozen=True, slots=True)
class ExecutionInterrupted:
    """The prompt was interrupted (``POST /interrupt``) while ``node_id`` ran."""

    prompt_id: str
    node_id: str | None
    node_type: str | None = None


@dataclass(frozen=True, slots=True)
class FeatureFlags:
    """The server's answer to our ``feature_flags`` message."""

    flags: dict[str, Any]


# --- binary frames ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Preview:
    """A preview image (type 1, or type 4 with metadata).

    Type 1 carries no prompt or node id: the client fills in the prompt running on its socket.
    """

    prompt_id: str | None
    node_id: str | None
    mime: str
    data: bytes

    def __repr__(self) -> str:
        return (
            f"Preview(prompt_id={self.prompt_id!r}, node_id={self.node_id!r}, "
            f"mime={self.mime!r}, data=<{len(self.data)} bytes>)"
        )


@dataclass(frozen=True, slots=True)
class Text:
    """A text frame (type 3) a node sent for display; it carries no prompt id of its own."""

    node_id: str
    text: str
    prompt_id: str | None = None


@dataclass(frozen=True, slots=True)
class Unknown:
    """A message this client doesn't understand (new type, or malformed): kept, never raised."""

    type: str | int
    data: Any

    def __repr__(self) -> str:
        shown = f"<{len(self.data)} bytes>" if isinstance(self.data, bytes) else repr(self.data)
        if len(shown) > 200:
            shown = shown[:200] + "…"
        return f"Unknown(type={self.type!r}, data={shown})"


# --- made by the client ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class QueuePosition:
    """Where a prompt stands in ComfyUI's queue: 0 = running, 1 = next, 2…"""

    prompt_id: str
    position: int


@dataclass(frozen=True, slots=True)
class Finished:
    """The last event of a prompt's stream; ``await tracker.result()`` has the details."""

    prompt_id: str
    status: ResultStatus


Event: TypeAlias = (
    Status
    | ExecutionStart
    | ExecutionCached
    | Executing
    | Progress
    | ProgressState
    | Executed
    | ExecutionSuccess
    | ExecutionError
    | ExecutionInterrupted
    | FeatureFlags
    | Preview
    | Text
    | Unknown
    | QueuePosition
    | Finished
)


# --- parsing ---------------------------------------------------------------------------------


class _Malformed(Exception):
    """A known message type with fields missing or of the wrong type."""


def _node_label(node_type: str | None, node_id: str | None) -> str:
    if node_type and node_id:
        return f"{node_type} (#{node_id})"
    if node_id:
        return f"node #{node_id}"
    return node_type or "a node"


def _req_str(data: Mapping[str, Any], key: str) -> str:
    value = data.get(key)
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)  # node ids are strings, but be lenient with numbers
    raise _Malformed(key)


def _opt_str(data: Mapping[str, Any], key: str) -> str | None:
    if data.get(key) is None:
        return None
    return _req_str(data, key)


def _number(data: Mapping[str, Any], key: str) -> float:
    value = data.get(key)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value
    raise _Malformed(key)


def _str_tuple(value: object) -> tuple[str, ...]:
    if not isinstance(value, list | tuple):
        raise _Malformed("list")
    return tuple(str(v) for v in value if isinstance(v, str | int) and not isinstance(v, bool))


def _trim_traceback(value: object) -> str:
    if isinstance(value, list):
        text = "".join(str(line) for line in value)
    elif isinstance(value, str):
        text = value
    else:
        return ""
    if len(text) > TRACEBACK_KEEP_CHARS:
        text = "…" + text[-TRACEBACK_KEEP_CHARS:]
    return text


def _trim(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


def _parse_status(d: Mapping[str, Any]) -> Status:
    remaining: int | None = None
    status = d.get("status")
    if isinstance(status, Mapping):
        exec_info = status.get("exec_info")
        if isinstance(exec_info, Mapping):
            value = exec_info.get("queue_remaining")
            if isinstance(value, int) and not isinstance(value, bool):
                remaining = value
    sid = d.get("sid")
    return Status(queue_remaining=remaining, sid=sid if isinstance(sid, str) else None)


def _parse_progress_state(d: Mapping[str, Any]) -> ProgressState:
    raw = d.get("nodes")
    if not isinstance(raw, Mapping):
        raise _Malformed("nodes")
    nodes: dict[str, NodeState] = {}
    for node_id, entry in raw.items():
        if not isinstance(entry, Mapping):
            continue
        try:
            value, maximum = _number(entry, "value"), _number(entry, "max")
        except _Malformed:
            continue
        state = entry.get("state")
        nodes[str(node_id)] = NodeState(value, maximum, state if isinstance(state, str) else "")
    return ProgressState(prompt_id=_req_str(d, "prompt_id"), nodes=nodes)


def _parse_executed(d: Mapping[str, Any]) -> Executed:
    return Executed(
        prompt_id=_req_str(d, "prompt_id"),
        node=_req_str(d, "node"),
        images=refs_from_output(d.get("output")),
    )


def _parse_error(d: Mapping[str, Any]) -> ExecutionError:
    exc_type = d.get("exception_type")
    exc_message = d.get("exception_message")
    return ExecutionError(
        prompt_id=_req_str(d, "prompt_id"),
        node_id=_opt_str(d, "node_id"),
        node_type=_opt_str(d, "node_type"),
        exception_type=exc_type if isinstance(exc_type, str) else "",
        exception_message=_trim(
            exc_message if isinstance(exc_message, str) else "", MESSAGE_KEEP_CHARS
        ),
        traceback=_trim_traceback(d.get("traceback")),
    )


def _parse_known(kind: str, d: Mapping[str, Any]) -> Event | None:
    """Parse a known type; None if the type is unknown. Raises _Malformed on bad fields."""
    match kind:
        case "status":
            return _parse_status(d)
        case "execution_start":
            return ExecutionStart(_req_str(d, "prompt_id"))
        case "execution_cached":
            return ExecutionCached(_req_str(d, "prompt_id"), _str_tuple(d.get("nodes", [])))
        case "executing":
            return Executing(prompt_id=_opt_str(d, "prompt_id"), node=_opt_str(d, "node"))
        case "progress":
            return Progress(
                prompt_id=_opt_str(d, "prompt_id"),
                node=_opt_str(d, "node"),
                value=_number(d, "value"),
                max=_number(d, "max"),
            )
        case "progress_state":
            return _parse_progress_state(d)
        case "executed":
            return _parse_executed(d)
        case "execution_success":
            return ExecutionSuccess(_req_str(d, "prompt_id"))
        case "execution_error":
            return _parse_error(d)
        case "execution_interrupted":
            return ExecutionInterrupted(
                prompt_id=_req_str(d, "prompt_id"),
                node_id=_opt_str(d, "node_id"),
                node_type=_opt_str(d, "node_type"),
            )
        case "feature_flags":
            return FeatureFlags(dict(d))
    return None


def parse_payload(obj: object) -> Event:
    """Parse an already-decoded ``{"type", "data"}`` message.

    Never raises: anything malformed or unknown becomes :class:`Unknown`.
    """
    if not isinstance(obj, Mapping):
        return Unknown(type="", data=obj)
    kind = obj.get("type")
    data = obj.get("data")
    if not isinstance(kind, str):
        return Unknown(type="", data=obj)
    if not isinstance(data, Mapping):
        return Unknown(type=kind, data=data)
    try:
        event = _parse_known(kind, data)
    except _Malformed as exc:
        log.debug("malformed %r message (field %s)", kind, exc)
        return Unknown(type=kind, data=data)
    return event if event is not None else Unknown(type=kind, data=data)


def parse_message(text: str | bytes) -> Event:
    """Parse one JSON text frame from ComfyUI's websocket.

    Never raises: invalid JSON, unknown types and malformed fields give :class:`Unknown`.
    """
    try:
        obj = json.loads(text)
    except (ValueError, TypeError):
        return Unknown(type="", data=text)
    return parse_payload(obj)


def parse_binary(frame: bytes) -> Event:
    """Parse one binary frame (4-byte big-endian type, then the payload).

    Types: 1 preview (4-byte image type, image), 3 text (4-byte node id length, node id, text),
    4 preview with metadata (4-byte JSON length, JSON, image). Never raises: anything else or
    anything truncated gives :class:`Unknown`.
    """
    if len(frame) < 4:
        return Unknown(type=-1, data=bytes(frame))
    (kind,) = struct.unpack_from(">I", frame, 0)
    body = bytes(frame[4:])
    if kind == BINARY_PREVIEW and len(body) >= 4:
        (image_type,) = struct.unpack_from(">I", body, 0)
        mime = _PREVIEW_MIME.get(image_type, "application/octet-stream")
        return Preview(prompt_id=None, node_id=None, mime=mime, data=body[4:])
    if kind == BINARY_TEXT and len(body) >= 4:
        (id_len,) = struct.unpack_from(">I", body, 0)
        if 4 + id_len <= len(body):
            node_id = body[4 : 4 + id_len].decode("utf-8", "replace")
            text = body[4 + id_len :].decode("utf-8", "replace")
            return Text(node_id=node_id, text=text)
    if kind == BINARY_PREVIEW_WITH_METADATA and len(body) >= 4:
        (meta_len,) = struct.unpack_from(">I", body, 0)
        if 4 + meta_len <= len(body):
            try:
                meta = json.loads(body[4 : 4 + meta_len])
            except ValueError:
                meta = None
            if isinstance(meta, Mapping):
                meta_mime = meta.get("image_type")
                if not isinstance(meta_mime, str) or not meta_mime:
                    meta_mime = "application/octet-stream"
                return Preview(
                    prompt_id=_meta_str(meta, "prompt_id"),
                    node_id=_meta_str(meta, "node_id"),
                    mime=meta_mime,
                    data=body[4 + meta_len :],
                )
    return Unknown(type=kind, data=body)


def _meta_str(meta: Mapping[str, Any], key: str) -> str | None:
    value = meta.get(key)
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None
