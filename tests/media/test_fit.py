"""Fitting videos, animations and sounds to an upload limit: real encodes, decoded back."""

from __future__ import annotations

import asyncio
import io
import math
import random
import struct
import threading
import time
import wave
from collections.abc import Iterator
from fractions import Fraction

import av
import pytest
from PIL import Image, ImageDraw

from bot.media import Kind, fit, sniff
from bot.media.fit import CannotFit, fit_media
from tests.conftest import ROOT

MEDIA = ROOT / "tests" / "data" / "comfyui" / "media"


# --- making media -------------------------------------------------------------------------------


def make_video(
    width: int = 640,
    height: int = 360,
    frames: int = 48,
    fps: int = 24,
    bit_rate: int = 3_000_000,
    *,
    audio: bool = True,
) -> bytes:
    """Noise at a high bitrate (incompressible, so a small limit means real work), with a tone."""
    rnd = random.Random(7)
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        odd = width % 2 or height % 2
        video = out.add_stream("libx264", rate=fps)
        video.width, video.height = width, height
        video.pix_fmt = "yuv444p" if odd else "yuv420p"  # 4:2:0 cannot have odd sizes
        video.bit_rate = bit_rate
        video.options = {"preset": "ultrafast"}
        sound = out.add_stream("aac", rate=44100) if audio else None
        if sound is not None:
            sound.layout = "stereo"
            sound.bit_rate = 128_000
        for index in range(frames):
            frame = av.VideoFrame(width, height, video.pix_fmt)
            for plane in frame.planes:
                plane.update(rnd.randbytes(plane.buffer_size))
            frame.pts = index
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
        if sound is not None:
            for start in range(0, frames * 44100 // fps, 1024):
                out.mux(sound.encode(_tone(start, 1024, 44100, 2)))
            out.mux(sound.encode(None))
    return buf.getvalue()


def _tone(start: int, samples: int, rate: int, channels: int) -> av.AudioFrame:
    frame = av.AudioFrame(
        format="s16", layout="stereo" if channels == 2 else "mono", samples=samples
    )
    frame.planes[0].update(_pcm(start, samples, rate, channels))
    frame.sample_rate = rate
    frame.pts = start
    frame.time_base = Fraction(1, rate)
    return frame


def _pcm(start: int, samples: int, rate: int, channels: int) -> bytes:
    rnd = random.Random(start)
    values = (
        int(9000 * math.sin(2 * math.pi * 440 * i / rate)) + rnd.randint(-4000, 4000)
        for i in range(start, start + samples)
    )
    return b"".join(struct.pack("<h", v) * channels for v in values)


def make_wav(seconds: float, rate: int = 44100, channels: int = 2) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(_pcm(0, int(seconds * rate), rate, channels))
    return buf.getvalue()


def make_animation(fmt: str, delays: list[int], size: tuple[int, int] = (241, 181)) -> bytes:
    """A ball moving over a noisy background (odd sizes on purpose), one delay per frame (ms)."""
    rnd = random.Random(3)
    frames = []
    for index in range(len(delays)):
        image = Image.frombytes("RGB", size, rnd.randbytes(size[0] * size[1] * 3))
        x = 10 + index * 12
        ImageDraw.Draw(image).ellipse((x, 40, x + 60, 100), fill=(240, 200, 40))
        frames.append(image)
    buf = io.BytesIO()
    extra = {"lossless": True} if fmt == "WEBP" else {}
    frames[0].save(
        buf, fmt, save_all=True, append_images=frames[1:], duration=delays, loop=0, **extra
    )
    return buf.getvalue()


@pytest.fixture(scope="module")
def video() -> bytes:
    return make_video()


# --- reading results back -----------------------------------------------------------------------


def probe(data: bytes) -> dict[str, object]:
    with av.open(io.BytesIO(data)) as container:
        streams = {s.type: s for s in container.streams}
        result: dict[str, object] = {"format": container.format.name, "types": set(streams)}
        if "video" in streams:
            frames = list(container.decode(video=0))
            last = frames[-1]
            result |= {
                "codec": streams["video"].codec_context.name,
                "size": (frames[0].width, frames[0].height),
                "pix_fmt": frames[0].format.name,
                "frames": len(frames),
                "duration": container.duration / 1_000_000,
                "last_at": last.time,
            }
        elif "audio" in streams:
            frames = list(container.decode(audio=0))
            result |= {
                "codec": streams["audio"].codec_context.name,
                "channels": streams["audio"].codec_context.channels,
                "duration": sum(f.samples / f.sample_rate for f in frames),
            }
        return result


# --- video --------------------------------------------------------------------------------------


async def test_a_video_over_the_limit_is_reencoded_to_fit_and_plays(video: bytes) -> None:
    limit = len(video) // 3
    fitted = await fit_media(video, limit)
    assert len(fitted.data) <= limit
    assert (fitted.media.kind, fitted.media.mime) == (Kind.VIDEO, "video/mp4")
    assert sniff(fitted.data) == fitted.media
    info = probe(fitted.data)
    assert info["codec"] == "h264" and info["pix_fmt"] == "yuv420p"
    assert info["types"] == {"video", "audio"}
    width, height = info["size"]  # type: ignore[misc]
    assert width % 2 == 0 and height % 2 == 0
    assert info["frames"] == 48
    assert abs(info["duration"] - 2.0) < 0.15  # type: ignore[operator]
    # +faststart: the index comes before the media, so it plays while it downloads
    assert fitted.data.index(b"moov") < fitted.data.index(b"mdat")
    assert fitted.note is not None
    assert fitted.note.startswith(f"re-encoded to {width}x{height} at ")
    assert fitted.note.endswith(f"to fit the {limit / 1024:.0f} KiB upload limit")


async def test_a_low_bitrate_lowers_the_resolution() -> None:
    data = make_video(1280, 720, frames=24, audio=False, bit_rate=6_000_000)
    limit = 80_000  # 0.6 Mbit/s for a second of 720p: too few bits for that many pixels
    fitted = await fit_media(data, limit)
    assert len(fitted.data) <= limit
    info = probe(fitted.data)
    width, height = info["size"]  # type: ignore[misc]
    assert height < 720 and abs(width / height - 16 / 9) < 0.02
    assert info["types"] == {"video"}
    assert fitted.note is not None and f"{width}x{height}" in fitted.note


async def test_odd_dimensions_become_even() -> None:
    data = make_video(321, 241, frames=24, audio=False, bit_rate=2_000_000)
    fitted = await fit_media(data, len(data) // 2)
    width, height = probe(fitted.data)["size"]  # type: ignore[misc]
    assert width % 2 == 0 and height % 2 == 0
    assert abs(width - 321) <= 1 and abs(height - 241) <= 1


async def test_a_one_frame_video_fits() -> None:
    data = make_video(640, 360, frames=1, audio=False, bit_rate=20_000_000)
    fitted = await fit_media(data, len(data) // 2)
    assert len(fitted.data) <= len(data) // 2
    assert probe(fitted.data)["frames"] == 1


async def test_a_webm_is_reencoded_to_mp4() -> None:
    data = (MEDIA / "savewebm.webm").read_bytes()  # VP9, frames without durations
    limit = len(data) * 3 // 4
    fitted = await fit_media(data, limit)
    assert len(fitted.data) <= limit and fitted.media.mime == "video/mp4"
    info = probe(fitted.data)
    assert info["frames"] == 4 and info["size"] == (64, 64)
    assert abs(info["duration"] - 0.5) < 0.05  # type: ignore[operator]


@pytest.mark.parametrize(
    "name", ["savevideo.mp4", "savewebm.webm", "saveanimatedwebp.webp", "saveanimatedpng.png"]
)
async def test_each_recorded_comfyui_output_fits_under_a_smaller_limit(name: str) -> None:
    data = (MEDIA / name).read_bytes()
    limit = len(data) * 3 // 4
    fitted = await fit_media(data, limit)
    assert len(fitted.data) <= limit
    assert fitted.media.mime == "video/mp4"
    info = probe(fitted.data)
    assert info["codec"] == "h264" and info["frames"] == 4 and info["size"] == (64, 64)


async def test_a_video_holding_only_sound_is_fitted_as_audio() -> None:
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        sound = out.add_stream("aac", rate=44100)
        sound.layout = "stereo"
        sound.bit_rate = 256_000
        for start in range(0, 44100 * 2, 1024):
            out.mux(sound.encode(_tone(start, 1024, 44100, 2)))
        out.mux(sound.encode(None))
    data = buf.getvalue()
    assert sniff(data).kind is Kind.VIDEO  # an MP4 says nothing of its streams in its brands
    fitted = await fit_media(data, len(data) // 4)
    assert fitted.media.kind is Kind.AUDIO
    assert probe(fitted.data)["codec"] == "opus"


# --- animations ---------------------------------------------------------------------------------


async def test_an_animated_gif_over_the_limit_becomes_an_mp4_keeping_its_timing() -> None:
    delays = [80, 80, 200, 0, 120, 80, 80, 200, 0, 120]  # 0: played as 100 ms, as browsers do
    data = make_animation("GIF", delays)
    assert sniff(data).kind is Kind.ANIMATION
    limit = len(data) // 3
    fitted = await fit_media(data, limit)
    assert len(fitted.data) <= limit
    assert (fitted.media.kind, fitted.media.mime) == (Kind.VIDEO, "video/mp4")
    info = probe(fitted.data)
    assert info["frames"] == len(delays)
    width, height = info["size"]  # type: ignore[misc]
    assert abs(width - 241) <= 1 and abs(height - 181) <= 1 and width % 2 == height % 2 == 0
    # each frame shows when the GIF shows it: the last one after all delays but its own
    assert info["last_at"] == pytest.approx(sum(d or 100 for d in delays[:-1]) / 1000, abs=0.01)
    assert fitted.note is not None and fitted.note.startswith("converted to an MP4 video (")


async def test_an_animated_webp_over_the_limit_becomes_an_mp4() -> None:
    data = make_animation("WEBP", [100] * 8)
    assert sniff(data).kind is Kind.ANIMATION
    limit = len(data) // 3
    fitted = await fit_media(data, limit)
    assert len(fitted.data) <= limit and fitted.media.mime == "video/mp4"
    info = probe(fitted.data)
    assert info["frames"] == 8
    assert abs(info["duration"] - 0.8) < 0.05  # type: ignore[operator]


# --- audio --------------------------------------------------------------------------------------


async def test_audio_over_the_limit_gets_a_lower_bitrate_and_still_plays() -> None:
    data = make_wav(3.0)
    limit = len(data) // 10
    fitted = await fit_media(data, limit)
    assert len(fitted.data) <= limit
    assert (fitted.media.kind, fitted.media.mime) == (Kind.AUDIO, "audio/ogg")
    info = probe(fitted.data)
    assert info["codec"] == "opus" and info["channels"] == 2
    assert abs(info["duration"] - 3.0) < 0.1  # type: ignore[operator]
    assert fitted.note is not None and fitted.note.startswith("re-encoded to Opus at ")
    assert "kbit/s to fit the" in fitted.note


async def test_long_audio_for_a_small_limit_cannot_fit() -> None:
    data = make_wav(2.0, channels=1)
    with pytest.raises(CannotFit, match=r"the audio is 2 seconds long; even at the lowest"):
        await fit_media(data, 2000)


# --- what is left alone, and what cannot fit ----------------------------------------------------


async def test_under_the_limit_returns_the_same_bytes(video: bytes) -> None:
    fitted = await fit_media(video, len(video))
    assert fitted.data is video
    assert fitted.note is None
    assert fitted.media == sniff(video)


async def test_garbage_that_looks_like_a_video_cannot_fit() -> None:
    data = b"\x00\x00\x00\x18ftypmp42" + random.Random(1).randbytes(20_000)
    with pytest.raises(CannotFit, match="the video could not be read: it is damaged"):
        await fit_media(data, 1000)


async def test_garbage_bytes_cannot_be_made_smaller() -> None:
    data = random.Random(2).randbytes(20_000)
    with pytest.raises(CannotFit, match=r"a file of 20 KiB is over the 1000 bytes upload limit"):
        await fit_media(data, 1000)


async def test_a_too_small_limit_cannot_fit(video: bytes) -> None:
    with pytest.raises(
        CannotFit, match=r"the video is 2 seconds long; even at the lowest quality it does not"
    ):
        await fit_media(video, 8000)


async def test_the_deadline_is_enforced(video: bytes) -> None:
    with pytest.raises(CannotFit, match=r"re-encoding took longer than 0\.01 s"):
        await fit_media(video, len(video) // 3, deadline=0.01)


@pytest.fixture
def slow_decoding(monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    """Every decoded frame takes 50 ms (a stuck decoder); the event is set when it is closed."""
    closed = threading.Event()
    decode = fit._decode_video

    def slow(data: bytes, clock: fit._Clock) -> Iterator[object]:
        try:
            for item in decode(data, clock):
                time.sleep(0.05)
                yield item
        finally:
            closed.set()

    monkeypatch.setattr(fit, "_decode_video", slow)
    return closed


async def test_a_slow_encode_is_stopped_at_the_deadline(
    video: bytes, slow_decoding: threading.Event
) -> None:
    started = time.monotonic()
    with pytest.raises(CannotFit, match=r"re-encoding took longer than 0\.3 s"):
        await fit_media(video, len(video) // 3, deadline=0.3)
    assert time.monotonic() - started < 1.0  # the whole encode would take more than 2.5 s
    assert slow_decoding.is_set()


async def test_a_cancelled_fit_stops_its_worker(
    video: bytes, slow_decoding: threading.Event
) -> None:
    task = asyncio.create_task(fit_media(video, len(video) // 3))
    await asyncio.sleep(0.2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await asyncio.to_thread(slow_decoding.wait, 1.0)
