"""Media nodes of the fake ComfyUI: video, animation, audio, 3D and text outputs.

Written from the real server's answers (transcript ``p_media_outputs``, PROTOCOL.md's last
section): every saved file is listed under ``images`` with ``animated: [true]`` for ``SaveVideo``,
``SaveWEBM`` and the animated savers; text comes as ``{"text": [...]}``; the audio savers report
``audio``, VHS's Video Combine ``gifs`` and 3D savers their own key (``3d``). The files are real:
H.264 MP4 and VP9 WebM made with PyAV, animated WebP and APNG with Pillow, FLAC/MP3/Opus audio
with PyAV and a binary glTF, all small and deterministic for the same inputs.

The audio nodes are not in the recorded ``/object_info`` (that server lacked their libraries);
`AUDIO_NODES` holds their definitions, for a fake started with ``extra_nodes=AUDIO_NODES``.
"""

from __future__ import annotations

import io
import json
import math
import struct
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
from PIL import Image

from tests.fakes._comfy_nodes import (
    Images,
    Latent,
    NodeContext,
    NodeResult,
    _simulates,
    digest,
    next_names,
)


@dataclass(frozen=True, eq=False)
class Audio:
    """An AUDIO value: a tone of `seconds` whose pitch comes from what produced it."""

    seconds: float
    recipe: str
    rate: int = 16000

    @property
    def token(self) -> str:
        return self.recipe

    def samples(self) -> list[float]:
        pitch = 220 + int(self.recipe[:4], 16) % 440
        count = max(1, int(self.seconds * self.rate))
        return [0.3 * math.sin(2 * math.pi * pitch * i / self.rate) for i in range(count)]


@dataclass(frozen=True, eq=False)
class Video:
    """A VIDEO value (``CreateVideo``): frames, a frame rate and maybe a sound track."""

    frames: tuple[Image.Image, ...]
    fps: float
    audio: Audio | None = None

    @property
    def token(self) -> str:
        return digest(Images(self.frames).token, self.fps, self.audio and self.audio.token)


def _even(frame: Image.Image) -> Image.Image:
    width, height = frame.width + frame.width % 2, frame.height + frame.height % 2
    return frame if frame.size == (width, height) else frame.resize((width, height))


def encode_video(
    frames: tuple[Image.Image, ...], fps: float, container: str, codec: str, audio: Audio | None
) -> bytes:
    """A real video file of the frames (and the tone), in memory."""
    buffer = io.BytesIO()
    rate = Fraction(fps).limit_denominator(1000)
    with av.open(buffer, "w", format=container) as out:
        stream = out.add_stream(codec, rate=rate)
        first = _even(frames[0].convert("RGB"))
        stream.width, stream.height = first.size
        stream.pix_fmt = "yuv420p"
        sound = None
        if audio is not None:
            sound = out.add_stream("aac" if container == "mp4" else "libopus", rate=48000)
            sound.layout = "mono"
        for frame in frames:
            picture = av.VideoFrame.from_image(_even(frame.convert("RGB")).resize(first.size))
            for packet in stream.encode(picture):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
        if audio is not None and sound is not None:
            _encode_tone(out, sound, audio)
    return buffer.getvalue()


def _encode_tone(out: Any, stream: Any, audio: Audio) -> None:
    rate = stream.codec_context.sample_rate
    samples = Audio(audio.seconds, audio.recipe, rate).samples()
    chunk = stream.codec_context.frame_size or 1024
    pts = 0
    for start in range(0, len(samples), chunk):
        part = samples[start : start + chunk]
        part += [0.0] * (chunk - len(part))
        frame = av.AudioFrame(format="flt", layout="mono", samples=chunk)
        frame.planes[0].update(struct.pack(f"<{chunk}f", *part))
        frame.sample_rate, frame.pts = rate, pts
        pts += chunk
        for packet in stream.encode(frame):
            out.mux(packet)
    for packet in stream.encode():
        out.mux(packet)


def encode_audio(audio: Audio, container: str, codec: str) -> bytes:
    buffer = io.BytesIO()
    with av.open(buffer, "w", format=container) as out:
        rate = 48000 if codec == "libopus" else 44100 if codec == "libmp3lame" else audio.rate
        stream = out.add_stream(codec, rate=rate)
        stream.layout = "mono"
        _encode_tone(out, stream, audio)
    return buffer.getvalue()


def glb(recipe: str) -> bytes:
    """A minimal binary glTF 2.0 (one triangle), named by what produced it."""
    positions = struct.pack("<9f", 0, 0, 0, 1, 0, 0, 0, 1, 0)
    doc = {
        "asset": {"version": "2.0", "generator": f"fake-{recipe[:8]}"},
        "buffers": [{"byteLength": len(positions)}],
        "bufferViews": [{"buffer": 0, "byteLength": len(positions)}],
        "accessors": [
            {
                "bufferView": 0,
                "componentType": 5126,
                "count": 3,
                "type": "VEC3",
                "min": [0, 0, 0],
                "max": [1, 1, 0],
            }
        ],
        "meshes": [{"primitives": [{"attributes": {"POSITION": 0}}]}],
        "nodes": [{"mesh": 0}],
        "scenes": [{"nodes": [0]}],
    }
    text = json.dumps(doc).encode()
    text += b" " * (-len(text) % 4)
    chunks = struct.pack("<I4s", len(text), b"JSON") + text
    chunks += struct.pack("<I4s", len(positions), b"BIN\x00") + positions
    return struct.pack("<4sII", b"glTF", 2, 12 + len(chunks)) + chunks


def _write(ctx: NodeContext, prefix: str, ext: str, data: bytes) -> dict[str, str]:
    folder, subfolder, name = next_names(ctx.output_root(), prefix, ext, 1)[0]
    (folder / name).write_bytes(data)
    return {"filename": name, "subfolder": subfolder, "type": "output"}


def _frames(inputs: dict[str, Any]) -> tuple[Image.Image, ...]:
    images: Images = inputs["images"]
    return images.frames


@_simulates("CreateVideo")
async def _create_video(ctx: NodeContext, inputs: dict[str, Any]) -> NodeResult:
    audio = inputs.get("audio")
    return NodeResult((Video(_frames(inputs), float(inputs["fps"]), audio),))


@_simulates("SaveVideo")
async def _save_video(ctx: NodeContext, inputs: dict[str, Any]) -> NodeResult:
    video: Video = inputs["video"]
    data = encode_video(video.frames, video.fps, "mp4", "h264", video.audio)
    saved = _write(ctx, inputs["filename_prefix"], "mp4", data)
    return NodeResult((), {"images": [saved], "animated": [True]})


@_simulates("SaveWEBM")
async def _save_webm(ctx: NodeContext, inputs: dict[str, Any]) -> NodeResult:
    data = encode_video(_frames(inputs), float(inputs["fps"]), "webm", "libvpx-vp9", None)
    saved = _write(ctx, inputs["filename_prefix"], "webm", data)
    return NodeResult((), {"images": [saved], "animated": [True]})


def _animated(frames: tuple[Image.Image, ...], fmt: str, fps: float, **options: Any) -> bytes:
    buffer = io.BytesIO()
    first, *rest = (frame.convert("RGB") for frame in frames)
    duration = max(1, round(1000 / fps))
    first.save(buffer, format=fmt, save_all=True, append_images=rest, duration=duration, **options)
    return buffer.getvalue()


@_simulates("SaveAnimatedWEBP")
async def _save_webp(ctx: NodeContext, inputs: dict[str, Any]) -> NodeResult:
    data = _animated(_frames(inputs), "WEBP", float(inputs["fps"]), lossless=True, loop=0)
    return NodeResult(
        (), {"images": [_write(ctx, inputs["filename_prefix"], "webp", data)], "animated": [True]}
    )


@_simulates("SaveAnimatedPNG")
async def _save_apng(ctx: NodeContext, inputs: dict[str, Any]) -> NodeResult:
    data = _animated(_frames(inputs), "PNG", float(inputs["fps"]), loop=0)
    return NodeResult(
        (), {"images": [_write(ctx, inputs["filename_prefix"], "png", data)], "animated": [True]}
    )


@_simulates("PreviewAny")
async def _preview_any(ctx: NodeContext, inputs: dict[str, Any]) -> NodeResult:
    value = inputs["source"]
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return NodeResult((), {"text": [text]})


@_simulates("SaveGLB")
async def _save_glb(ctx: NodeContext, inputs: dict[str, Any]) -> NodeResult:
    saved = _write(ctx, inputs["filename_prefix"], "glb", glb(digest(inputs["mesh"])))
    return NodeResult((), {"3d": [saved]})


_VHS_FORMATS = {
    "video/h264-mp4": ("mp4", "mp4", "h264"),
    "video/webm": ("webm", "webm", "libvpx-vp9"),
}


@_simulates("VHS_VideoCombine")
async def _video_combine(ctx: NodeContext, inputs: dict[str, Any]) -> NodeResult:
    fmt = inputs.get("format", "image/gif")
    fps = float(inputs.get("frame_rate", 8))
    frames = _frames(inputs)
    if fmt in _VHS_FORMATS:
        ext, container, codec = _VHS_FORMATS[fmt]
        sound = inputs.get("audio")
        # An AUDIO from a node the fake does not simulate carries no samples: left out.
        data = encode_video(
            frames, fps, container, codec, sound if isinstance(sound, Audio) else None
        )
    else:
        ext = "webp" if fmt == "image/webp" else "gif"
        data = _animated(frames, ext.upper(), fps, loop=0)
    saved = _write(ctx, inputs.get("filename_prefix", "AnimateDiff"), ext, data)
    folder = ctx.output_root() / saved["subfolder"]
    entry = {
        **saved,
        "format": fmt,
        "frame_rate": fps,
        "workflow": "",
        "fullpath": str(Path(folder) / saved["filename"]),
    }
    return NodeResult((), {"gifs": [entry]})


# --- audio (absent from the recorded server: definitions shaped like the real ones) ---------


def _def(
    name: str, required: dict[str, list[Any]], output: list[str], node: bool
) -> dict[str, Any]:
    return {
        "input": {"required": required},
        "input_order": {"required": list(required)},
        "output": output,
        "output_is_list": [False] * len(output),
        "output_name": output,
        "name": name,
        "display_name": name,
        "category": "audio",
        "output_node": node,
    }


_PREFIX = ["STRING", {"default": "audio/ComfyUI"}]
AUDIO_NODES: dict[str, dict[str, Any]] = {
    "EmptyLatentAudio": _def(
        "EmptyLatentAudio",
        {
            "seconds": ["FLOAT", {"default": 47.6, "min": 1.0, "max": 1000.0, "step": 0.1}],
            "batch_size": ["INT", {"default": 1, "min": 1, "max": 4096}],
        },
        ["LATENT"],
        False,
    ),
    "VAEDecodeAudio": _def(
        "VAEDecodeAudio", {"samples": ["LATENT"], "vae": ["VAE"]}, ["AUDIO"], False
    ),
    "LoadAudio": _def("LoadAudio", {"audio": [[], {"audio_upload": True}]}, ["AUDIO"], False),
    "SaveAudio": _def("SaveAudio", {"audio": ["AUDIO"], "filename_prefix": _PREFIX}, [], True),
    "SaveAudioMP3": _def(
        "SaveAudioMP3",
        {
            "audio": ["AUDIO"],
            "filename_prefix": _PREFIX,
            "quality": [["V0", "128k", "320k"], {"default": "V0"}],
        },
        [],
        True,
    ),
    "SaveAudioOpus": _def(
        "SaveAudioOpus",
        {
            "audio": ["AUDIO"],
            "filename_prefix": _PREFIX,
            "quality": [["64k", "96k", "128k", "192k", "320k"], {"default": "128k"}],
        },
        [],
        True,
    ),
}


@_simulates("EmptyLatentAudio")
async def _empty_audio(ctx: NodeContext, inputs: dict[str, Any]) -> NodeResult:
    seconds = float(inputs["seconds"])
    return NodeResult((Latent(int(seconds * 100), 1, int(inputs["batch_size"]), "audio"),))


@_simulates("VAEDecodeAudio")
async def _decode_audio(ctx: NodeContext, inputs: dict[str, Any]) -> NodeResult:
    latent: Latent = inputs["samples"]
    return NodeResult((Audio(latent.width / 100, digest(latent.recipe)),))


_AUDIO_SAVERS = {
    "SaveAudio": ("flac", "flac", "flac"),
    "SaveAudioMP3": ("mp3", "mp3", "libmp3lame"),
    "SaveAudioOpus": ("opus", "ogg", "libopus"),
}


@_simulates(*_AUDIO_SAVERS)
async def _save_audio(ctx: NodeContext, inputs: dict[str, Any]) -> NodeResult:
    ext, container, codec = _AUDIO_SAVERS[ctx.class_type]
    data = encode_audio(inputs["audio"], container, codec)
    return NodeResult((), {"audio": [_write(ctx, inputs["filename_prefix"], ext, data)]})


@_simulates("PrimitiveString")
async def _primitive_string(ctx: NodeContext, inputs: dict[str, Any]) -> NodeResult:
    return NodeResult((str(inputs["value"]),))


def decode_video(path: Path) -> Video:
    """The frames and frame rate of a video file (any container PyAV reads)."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        fps = float(stream.average_rate or 8)
        frames = tuple(frame.to_image() for frame in container.decode(stream))
    if not frames:
        raise ValueError(f"No frames in {path.name}")
    return Video(frames, fps)


@_simulates("LoadVideo")
async def _load_video(ctx: NodeContext, inputs: dict[str, Any]) -> NodeResult:
    return NodeResult((decode_video(ctx.input_file(inputs["file"])),))


@_simulates("GetVideoComponents")
async def _video_components(ctx: NodeContext, inputs: dict[str, Any]) -> NodeResult:
    video: Video = inputs["video"]
    audio = video.audio or Audio(len(video.frames) / video.fps, digest(video.token))
    return NodeResult((Images(video.frames), audio, video.fps))


@_simulates("LoadAudio")
async def _load_audio(ctx: NodeContext, inputs: dict[str, Any]) -> NodeResult:
    path = ctx.input_file(inputs["audio"])
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        seconds = float(stream.duration * stream.time_base) if stream.duration else 1.0
    return NodeResult((Audio(min(seconds, 5.0), digest(path.read_bytes().hex()[:64])),))
