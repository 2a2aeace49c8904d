"""What a file is, from its bytes: the real server's media files and files made here."""

from __future__ import annotations

import io
import struct

import pytest
from PIL import Image

from bot.media import Kind, sniff
from tests.recordings import MEDIA


@pytest.mark.parametrize(
    ("name", "kind", "mime", "ext"),
    [
        ("savevideo.mp4", Kind.VIDEO, "video/mp4", "mp4"),
        ("savewebm.webm", Kind.VIDEO, "video/webm", "webm"),
        ("saveanimatedwebp.webp", Kind.ANIMATION, "image/webp", "webp"),
        ("saveanimatedpng.png", Kind.ANIMATION, "image/png", "png"),
    ],
)
def test_the_real_servers_files_are_told_apart(name: str, kind: Kind, mime: str, ext: str) -> None:
    media = sniff((MEDIA / name).read_bytes())
    assert (media.kind, media.mime, media.ext) == (kind, mime, ext)


def _pillow(fmt: str, frames: int, **options: object) -> bytes:
    images = [Image.new("RGB", (8, 8), (i * 40, 0, 0)) for i in range(frames)]
    buffer = io.BytesIO()
    if frames > 1:
        images[0].save(buffer, fmt, save_all=True, append_images=images[1:], **options)
    else:
        images[0].save(buffer, fmt, **options)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("data", "kind", "ext"),
    [
        (_pillow("PNG", 1), Kind.IMAGE, "png"),
        (_pillow("JPEG", 1), Kind.IMAGE, "jpg"),
        (_pillow("GIF", 1), Kind.IMAGE, "gif"),
        (_pillow("GIF", 3, duration=100), Kind.ANIMATION, "gif"),
        (_pillow("WEBP", 1), Kind.IMAGE, "webp"),
        (_pillow("WEBP", 3, duration=100), Kind.ANIMATION, "webp"),
        (_pillow("PNG", 3, duration=100), Kind.ANIMATION, "png"),
        (_pillow("BMP", 1), Kind.IMAGE, "bmp"),
    ],
)
def test_stills_and_animations_by_their_frames(data: bytes, kind: Kind, ext: str) -> None:
    media = sniff(data)
    assert (media.kind, media.ext) == (kind, ext)


def _ftyp(brand: bytes, *compatible: bytes) -> bytes:
    body = brand + b"\x00\x00\x02\x00" + b"".join(compatible)
    return struct.pack(">I", 8 + len(body)) + b"ftyp" + body + b"\x00" * 32


@pytest.mark.parametrize(
    ("data", "kind", "mime"),
    [
        (_ftyp(b"isom", b"isom", b"avc1", b"mp41"), Kind.VIDEO, "video/mp4"),
        (_ftyp(b"qt  ", b"qt  "), Kind.VIDEO, "video/quicktime"),
        (_ftyp(b"M4A ", b"M4A ", b"mp42"), Kind.AUDIO, "audio/mp4"),
        (_ftyp(b"avif", b"avif", b"mif1"), Kind.IMAGE, "image/avif"),
        (b"RIFF\x24\x00\x00\x00WAVEfmt " + b"\x00" * 32, Kind.AUDIO, "audio/wav"),
        (b"fLaC\x00\x00\x00\x22" + b"\x00" * 40, Kind.AUDIO, "audio/flac"),
        (b"ID3\x04\x00\x00" + b"\x00" * 40, Kind.AUDIO, "audio/mpeg"),
        (b"\xff\xfb\x90\x64" + b"\x00" * 40, Kind.AUDIO, "audio/mpeg"),
        (b"OggS\x00\x02" + b"\x00" * 22 + b"OpusHead" + b"\x00" * 20, Kind.AUDIO, "audio/ogg"),
        (b"glTF\x02\x00\x00\x00" + b"\x00" * 40, Kind.MODEL, "model/gltf-binary"),
        (b"ply\nformat ascii 1.0\n", Kind.MODEL, "application/x-ply"),
        (b"just some bytes", Kind.FILE, "application/octet-stream"),
        (b"", Kind.FILE, "application/octet-stream"),
    ],
)
def test_video_audio_and_models_by_their_signature(data: bytes, kind: Kind, mime: str) -> None:
    media = sniff(data)
    assert (media.kind, media.mime) == (kind, mime)
