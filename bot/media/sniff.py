"""What a result file is, read from its bytes: kind, MIME type and file extension.

ComfyUI lists every saved file under ``images`` whatever it holds (an MP4 from ``SaveVideo``, an
APNG named ``.png``), and a saver picks its file's name: neither the output key nor the name is
evidence. The first bytes are. Every way out (Discord attachments and words, the CLI's files, the
store, HTTP ``Content-Type``, jam galleries) asks `sniff` and nothing else.

Kinds: ``image`` (one still picture), ``animation`` (animated GIF, WebP or PNG), ``video``,
``audio``, ``model`` (a 3D model), ``text`` (a string a node returned), ``file`` (anything else,
sent as ``application/octet-stream``).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import StrEnum


class Kind(StrEnum):
    IMAGE = "image"
    ANIMATION = "animation"
    VIDEO = "video"
    AUDIO = "audio"
    MODEL = "model"
    TEXT = "text"
    FILE = "file"

    @property
    def noun(self) -> str:
        """The word a message uses for it: "your video is ready"."""
        return _NOUNS[self]

    @property
    def plural(self) -> str:
        return _PLURALS[self]

    @property
    def visual(self) -> bool:
        """Whether it is a picture, still or moving (what image follow-ups can take a frame of)."""
        return self in (Kind.IMAGE, Kind.ANIMATION)


_NOUNS = {
    Kind.IMAGE: "image",
    Kind.ANIMATION: "animation",
    Kind.VIDEO: "video",
    Kind.AUDIO: "audio",
    Kind.MODEL: "3D model",
    Kind.TEXT: "text",
    Kind.FILE: "file",
}
_PLURALS = {
    Kind.IMAGE: "images",
    Kind.ANIMATION: "animations",
    Kind.VIDEO: "videos",
    Kind.AUDIO: "audio files",
    Kind.MODEL: "3D models",
    Kind.TEXT: "texts",
    Kind.FILE: "files",
}


@dataclass(frozen=True, slots=True)
class MediaType:
    """What a file is: its kind, MIME type and the extension its name gets (without the dot)."""

    kind: Kind
    mime: str
    ext: str

    @property
    def content_type(self) -> str:
        """The ``Content-Type`` to send it with (text declares its charset)."""
        return f"{self.mime}; charset=utf-8" if self.kind is Kind.TEXT else self.mime


TEXT = MediaType(Kind.TEXT, "text/plain", "txt")
UNKNOWN = MediaType(Kind.FILE, "application/octet-stream", "bin")

#: The MIME type of each extension `sniff` gives, for records written before kinds were kept.
MIME_BY_EXT = {
    "png": "image/png",
    "jpg": "image/jpeg",
    "webp": "image/webp",
    "gif": "image/gif",
    "bmp": "image/bmp",
    "tiff": "image/tiff",
    "avif": "image/avif",
    "mp4": "video/mp4",
    "mov": "video/quicktime",
    "webm": "video/webm",
    "mkv": "video/x-matroska",
    "ogv": "video/ogg",
    "mp3": "audio/mpeg",
    "wav": "audio/wav",
    "flac": "audio/flac",
    "ogg": "audio/ogg",
    "opus": "audio/ogg",
    "m4a": "audio/mp4",
    "glb": "model/gltf-binary",
    "gltf": "model/gltf+json",
    "ply": "application/x-ply",
    "stl": "model/stl",
    "obj": "model/obj",
    "txt": "text/plain",
    "bin": "application/octet-stream",
}


def _t(kind: Kind, ext: str) -> MediaType:
    return MediaType(kind, MIME_BY_EXT[ext], ext)


def sniff(data: bytes) -> MediaType:
    """What ``data`` is, from its signature; `UNKNOWN` when nothing matches."""
    head = data[:64]
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return _t(Kind.ANIMATION if _apng(data) else Kind.IMAGE, "png")
    if head.startswith(b"\xff\xd8\xff"):
        return _t(Kind.IMAGE, "jpg")
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return _t(Kind.ANIMATION if _gif_frames(data) > 1 else Kind.IMAGE, "gif")
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return _t(Kind.ANIMATION if _webp_animated(data) else Kind.IMAGE, "webp")
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return _t(Kind.AUDIO, "wav")
    if head[4:8] == b"ftyp":
        return _iso_media(head)
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return _matroska(data[:4096])
    if head.startswith(b"OggS"):
        return _t(Kind.VIDEO, "ogv") if b"\x80theora" in data[:4096] else _t(Kind.AUDIO, "ogg")
    if head.startswith(b"fLaC"):
        return _t(Kind.AUDIO, "flac")
    if head.startswith(b"ID3") or (len(head) > 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0):
        return _t(Kind.AUDIO, "mp3")
    if head.startswith(b"glTF"):
        return _t(Kind.MODEL, "glb")
    if head.startswith(b"ply\n") or head.startswith(b"ply\r\n"):
        return _t(Kind.MODEL, "ply")
    if head[:2] == b"BM" and len(data) > 26:
        return _t(Kind.IMAGE, "bmp")
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return _t(Kind.IMAGE, "tiff")
    return UNKNOWN


def _apng(data: bytes) -> bool:
    """Whether a PNG has an animation control chunk (``acTL``) before its first image data."""
    pos = 8
    while pos + 8 <= len(data):
        length, chunk = struct.unpack(">I4s", data[pos : pos + 8])
        if chunk == b"acTL":
            return True
        if chunk in (b"IDAT", b"IEND"):
            return False
        pos += 12 + length
    return False


def _webp_animated(data: bytes) -> bool:
    """Whether a WebP's extended header (``VP8X``) sets the animation flag."""
    return data[12:16] == b"VP8X" and len(data) > 20 and bool(data[20] & 0x02)


def _gif_frames(data: bytes, stop: int = 2) -> int:
    """How many images a GIF holds, counted up to `stop` (walking its blocks, not decoding)."""
    if len(data) < 13:
        return 0
    pos = 13
    flags = data[10]
    if flags & 0x80:
        pos += 3 * (2 ** ((flags & 0x07) + 1))
    frames = 0
    while pos < len(data) and frames < stop:
        block = data[pos]
        if block == 0x3B:  # trailer
            break
        if block == 0x21:  # extension: label, then sub-blocks
            pos += 2
        elif block == 0x2C:  # image descriptor, optional local table, LZW size, sub-blocks
            frames += 1
            if pos + 10 > len(data):
                break
            local = data[pos + 9]
            pos += 10
            if local & 0x80:
                pos += 3 * (2 ** ((local & 0x07) + 1))
            pos += 1
        else:
            break
        while pos < len(data) and data[pos]:
            pos += data[pos] + 1
        pos += 1
    return frames


_IMAGE_BRANDS = {b"avif", b"avis", b"heic", b"heix", b"mif1", b"msf1"}
_AUDIO_BRANDS = {b"M4A ", b"M4B ", b"F4A "}


def _iso_media(head: bytes) -> MediaType:
    """An ISO base media file (MP4, MOV, M4A, AVIF), told apart by its brands."""
    size = struct.unpack(">I", head[:4])[0]
    brands = {head[8:12]} | {head[i : i + 4] for i in range(16, min(size, len(head)) - 3, 4)}
    major = head[8:12]
    if major in _IMAGE_BRANDS:
        return _t(Kind.IMAGE, "avif")
    if major in _AUDIO_BRANDS or (brands & _AUDIO_BRANDS and major not in (b"isom", b"mp42")):
        return _t(Kind.AUDIO, "m4a")
    if major == b"qt  ":
        return _t(Kind.VIDEO, "mov")
    return _t(Kind.VIDEO, "mp4")


def _matroska(head: bytes) -> MediaType:
    """WebM or Matroska, by the EBML header's DocType; audio when no video track is declared."""
    webm = b"webm" in head[:64]
    # A track's type: 0x83 (TrackType) followed by size 0x81 and 1 (video) or 2 (audio).
    video = b"\x83\x81\x01" in head
    audio = b"\x83\x81\x02" in head
    if audio and not video:
        return MediaType(Kind.AUDIO, "audio/webm" if webm else "audio/x-matroska", "webm")
    return _t(Kind.VIDEO, "webm" if webm else "mkv")


def mime_of(filename: str) -> str:
    """The MIME type a stored file's extension stands for (names the bot gave it from `sniff`)."""
    ext = filename.rsplit(".", 1)[-1].lower() if "." in filename else ""
    return MIME_BY_EXT.get(ext, UNKNOWN.mime)
