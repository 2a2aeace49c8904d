"""Fitting a video, an animation or a sound to an upload limit by re-encoding it (PyAV).

A result over the limit (Discord's per-interaction ``attachment_size_limit``, 10 MiB where
unboosted) is re-encoded into something every Discord client plays inline:

- a **video** becomes H.264/AAC in MP4 (yuv420p, ``+faststart``). The bitrate comes from its
  duration and the limit, less room for the container and the sound; when that many bits spread
  over every pixel of every frame would look like mush (`_MIN_BPP` bits per pixel), the picture
  is scaled down a step at a time (1080, 720, 540, 480, 360, 240, 144 lines). The result is
  measured: still over, it is encoded again with the bitrate scaled by limit / size x 0.9 (and
  fewer pixels when the encoder could not get near its target), at most `ATTEMPTS` times;
- an **animation** (GIF, animated WebP, APNG) becomes such an MP4 the same way. Its frames are
  read with Pillow, which composes every frame of the three formats (FFmpeg cannot read an
  animated WebP) and gives each frame's own delay, so a variable frame rate stays as it was;
- **audio** becomes Opus in Ogg (what Discord's own voice messages are) at the bitrate that fits
  (`bot.media.fit_audio`; the limits both share are in `bot.media.budget`).

Everything else (a still image, which `bot.delivery.fit_image` handles, a 3D model, text) and
whatever cannot be decoded, or cannot fit even at the lowest quality, raises `CannotFit` with a
reason written for the member. Codec work runs in a small pool of worker threads, never on the
event loop, and the deadline is checked between packets: past it the encode stops and
`CannotFit` says so, so a stuck encode cannot keep a thread.

    CannotFit(UserError)    the file cannot be made to fit; its message says why
"""

from __future__ import annotations

import asyncio
import io
import itertools
import logging
import math
import os
import tempfile
import time
from collections.abc import Callable, Generator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass
from fractions import Fraction
from typing import NamedTuple

import av
import av.error
from av.audio.frame import AudioFrame
from av.video.frame import VideoFrame
from av.video.reformatter import VideoReformatter
from PIL import Image, ImageSequence

from bot.media.budget import (
    ATTEMPTS,
    HEADROOM,
    Clock,
    duration_words,
    rate_words,
    size_words,
    unreadable,
)
from bot.media.budget import CannotFit as CannotFit  # part of this module's API
from bot.media.budget import Fitted as Fitted  # part of this module's API
from bot.media.fit_audio import OGG as OGG  # part of this module's API
from bot.media.fit_audio import fit_audio
from bot.media.sniff import Kind, MediaType, sniff

log = logging.getLogger(__name__)

#: Concurrent re-encodes; each one's encoder already uses every core.
_WORKERS = 2
_pool = ThreadPoolExecutor(max_workers=_WORKERS, thread_name_prefix="media-fit")

#: Bits per pixel per frame under which the picture is scaled down rather than blurred further.
_MIN_BPP = 0.05
#: Bits per pixel per frame at the smallest size under which it is not worth trying.
_FLOOR_BPP = 0.02
#: Picture heights (of the shorter side) to step down through.
_LADDER = (1080, 720, 540, 480, 360, 240, 144)
#: The time base of the MP4's video timestamps: fine enough for any frame rate's timing.
_TIME_BASE = Fraction(1, 90_000)
_X264_PRESET = "veryfast"
#: Bitrates the sound inside a video may get (the larger the budget, the better).
_VIDEO_AUDIO_RATES = (128_000, 96_000, 64_000, 48_000, 32_000)
_AAC_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000)
#: A GIF delay of 10 ms or less plays as 100 ms in browsers; an animation here plays the same.
_DEFAULT_DELAY = 0.1

MP4 = MediaType(Kind.VIDEO, "video/mp4", "mp4")


async def fit_media(data: bytes, limit: int, *, deadline: float = 120.0) -> Fitted:
    """Make a video, an animation or a sound fit in `limit` bytes, re-encoding it if it is over.

    The codec work runs in a worker thread; `deadline` seconds after the call it is abandoned
    (checked between packets, so it stops within a packet's work).

    Raises:
        CannotFit: it is of another kind (a still image, a 3D model, text), it does not decode,
            it would not fit even at the lowest quality, or re-encoding took past the deadline.
    """
    media = sniff(data)
    if len(data) <= limit:
        return Fitted(data, media, None)
    if media.kind not in (Kind.VIDEO, Kind.ANIMATION, Kind.AUDIO):
        article = "an" if media.kind.noun[0] in "aeiou" else "a"
        raise CannotFit(
            f"{article} {media.kind.noun} of {size_words(len(data))} is over the "
            f"{size_words(limit)} upload limit and cannot be made smaller"
        )
    clock = Clock(time.monotonic() + deadline, deadline)
    loop = asyncio.get_running_loop()
    try:
        return await loop.run_in_executor(_pool, _fit, data, media, limit, clock)
    finally:
        clock.stopped.set()  # a cancelled caller: the worker stops at its next packet


def _fit(data: bytes, media: MediaType, limit: int, clock: Clock) -> Fitted:
    clock.check()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="comfycord-fit-") as tmp:
        source = None  # audio, or a video file holding only sound (an MP4 of AAC)
        if media.kind is Kind.ANIMATION:
            source = _animation(data, clock)
        elif media.kind is Kind.VIDEO:
            source = _video(data, clock)
        try:
            if source is None:
                fitted = fit_audio(data, limit, clock, os.path.join(tmp, "out.ogg"))
            else:
                fitted = _fit_video(source, limit, clock, os.path.join(tmp, "out.mp4"))
        except av.error.FFmpegError as exc:  # decoding errors are CannotFit already
            log.warning("re-encoding a %s failed", media.kind.noun, exc_info=True)
            raise CannotFit(f"the {media.kind.noun} could not be re-encoded") from exc
    log.info(
        "fitted %s of %d bytes to %d bytes (limit %d) in %.1f s: %s",
        media.kind.noun,
        len(data),
        len(fitted.data),
        limit,
        time.monotonic() - started,
        fitted.note,
    )
    return fitted


# --- what is being re-encoded -------------------------------------------------------------------


class _Picture(NamedTuple):
    """A decoded frame and when it shows (seconds from the start) and for how long."""

    frame: VideoFrame
    time: float
    duration: float


@dataclass(frozen=True)
class _AudioInfo:
    channels: int
    sample_rate: int


@dataclass(frozen=True)
class _Source:
    """What a video or animation holds, and how to decode it again for each attempt."""

    noun: str  # "video" or "animation", for messages
    width: int
    height: int
    duration: float  # seconds
    frames: int
    rate: Fraction  # average frames per second
    steady: bool  # False when frames have different durations (a variable frame rate)
    audio: _AudioInfo | None
    decode: Callable[[Clock], Generator[_Picture | AudioFrame, None, None]]


def _video(data: bytes, clock: Clock) -> _Source | None:
    """Probe a video with FFmpeg: its size, sound, and frame times (from every packet).

    None when it has no picture at all (then it is fitted as the sound it holds).
    """
    try:
        with av.open(io.BytesIO(data), "r") as src:
            if not src.streams.video:
                return None
            vstream = src.streams.video[0]
            astream = src.streams.audio[0] if src.streams.audio else None
            width, height = vstream.codec_context.width, vstream.codec_context.height
            declared = vstream.average_rate or vstream.guessed_rate
            frames, times, end = 0, [], 0.0
            for packet in src.demux(vstream):
                clock.check()
                if packet.size == 0:
                    continue
                frames += 1
                stamp = packet.pts if packet.pts is not None else packet.dts
                if stamp is not None:
                    at = float(stamp * packet.time_base)
                    times.append(at)
                    end = max(end, at + float((packet.duration or 0) * packet.time_base))
            audio = (
                _AudioInfo(astream.codec_context.channels, astream.codec_context.sample_rate)
                if astream is not None and astream.codec_context.sample_rate
                else None
            )
    except av.error.FFmpegError as exc:
        raise unreadable("video") from exc
    if frames == 0 or width <= 0 or height <= 0:
        raise unreadable("video")
    if declared is not None and not 0 < declared <= 240:
        declared = None
    times.sort()
    steps = [b - a for a, b in itertools.pairwise(times)]
    if times and end <= times[-1]:  # the last frame has no duration (WebM): one more step
        end = times[-1] + (float(1 / declared) if declared else _typical(steps))
    span = end - times[0] if times else 0.0
    if span <= 0:
        span = frames * (float(1 / declared) if declared else _DEFAULT_DELAY)
    rate = declared or Fraction(frames / span).limit_denominator(1001)
    return _Source(
        "video",
        width,
        height,
        span,
        frames,
        rate,
        _steady(steps),
        audio,
        lambda clock: _decode_video(data, clock),
    )


def _typical(steps: list[float]) -> float:
    """The time between frames most of them have (the median), for a frame of no duration."""
    return sorted(steps)[len(steps) // 2] if steps else _DEFAULT_DELAY


def _steady(steps: list[float]) -> bool:
    """Whether frames come at one rate (within a millisecond or 2 %)."""
    return not steps or max(steps) - min(steps) <= max(0.001, 0.02 * min(steps))


def _decode_video(data: bytes, clock: Clock) -> Generator[_Picture | AudioFrame, None, None]:
    """The frames of a video (pictures with their times, and its sound) in the file's order.

    A packet that does not decode is skipped, as players do; none decoding is `CannotFit`.
    """
    pictures = 0
    try:
        with av.open(io.BytesIO(data), "r") as src:
            vstream = src.streams.video[0]
            vstream.thread_type = "AUTO"
            astream = src.streams.audio[0] if src.streams.audio else None
            streams = (vstream,) if astream is None else (vstream, astream)
            start: float | None = None
            previous = 0.0
            for frame in clock.frames(src.demux(streams)):
                if isinstance(frame, AudioFrame):
                    yield frame
                elif isinstance(frame, VideoFrame):
                    pictures += 1
                    at = frame.time
                    length = (
                        float(frame.duration * frame.time_base)
                        if frame.duration and frame.time_base
                        else 0.0
                    )
                    if at is None:
                        at = previous + (length or _DEFAULT_DELAY)
                    if start is None:
                        start = at
                    previous = at
                    yield _Picture(frame, at - start, length)
    except av.error.FFmpegError as exc:
        raise unreadable("video") from exc
    if pictures == 0:
        raise unreadable("video")


def _animation(data: bytes, clock: Clock) -> _Source:
    """Probe an animated GIF, WebP or PNG with Pillow: its size, frames and their delays."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            delays = []
            for frame in ImageSequence.Iterator(image):
                clock.check()
                delays.append(_delay(frame.info.get("duration")))
    except (OSError, ValueError, EOFError, SyntaxError, Image.DecompressionBombError) as exc:
        raise unreadable("animation") from exc
    if not delays or width <= 0 or height <= 0:
        raise unreadable("animation")
    span = sum(delays)
    rate = Fraction(len(delays) / span).limit_denominator(1001)
    return _Source(
        "animation",
        width,
        height,
        span,
        len(delays),
        rate,
        _steady(delays),
        None,
        lambda clock: _decode_animation(data, clock),
    )


def _delay(value: object) -> float:
    """A frame's delay in seconds from Pillow's ``duration`` (milliseconds)."""
    if isinstance(value, int | float) and value > 10:
        return float(value) / 1000
    return _DEFAULT_DELAY


def _decode_animation(data: bytes, clock: Clock) -> Generator[_Picture | AudioFrame, None, None]:
    """Each composed frame of an animation, over black where it is transparent."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            at = 0.0
            for frame in ImageSequence.Iterator(image):
                clock.check()
                length = _delay(frame.info.get("duration"))
                rgba = frame.convert("RGBA")
                flat = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
                flat.alpha_composite(rgba)
                picture = VideoFrame.from_bytes(flat.tobytes(), flat.width, flat.height, "rgba")
                yield _Picture(picture, at, length)
                at += length
    except (OSError, ValueError, EOFError, SyntaxError, Image.DecompressionBombError) as exc:
        raise unreadable("animation") from exc


# --- video --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Plan:
    width: int
    height: int
    video_rate: int
    audio_rate: int  # 0 without sound


def _fit_video(source: _Source, limit: int, clock: Clock, path: str) -> Fitted:
    audio_packets = source.duration * source.audio.sample_rate / 1024 if source.audio else 0.0
    # moov + x264's SEI + per-sample tables (size, time, chunk offset)
    overhead = 2048 + 24 * (source.frames + audio_packets)
    total = (limit - overhead) * 8 * HEADROOM / source.duration
    max_pixels: int | None = None
    plan: _Plan | None = None
    size = 0
    for _ in range(ATTEMPTS):
        plan = _plan_video(source, total, max_pixels, limit)
        out = _encode_video(source, plan, clock, path)
        size = len(out)
        if size <= limit:
            rate = size * 8 / source.duration
            shape = f"{plan.width}x{plan.height} at {rate_words(rate)}"
            if source.noun == "animation":
                note = f"converted to an MP4 video ({shape})"
            else:
                note = f"re-encoded to {shape}"
            return Fitted(out, sniff(out), f"{note} to fit the {size_words(limit)} upload limit")
        aimed = (plan.video_rate + plan.audio_rate) * source.duration / 8 + overhead
        log.info(
            "re-encoded %s at %dx%d came to %d bytes for a %d limit (aimed at %d); again",
            source.noun,
            plan.width,
            plan.height,
            size,
            limit,
            aimed,
        )
        if size > aimed * 1.3:  # far off: the encoder cannot spend so little on this many pixels
            max_pixels = int(plan.width * plan.height * limit / size)
        total *= limit / size * 0.9
    assert plan is not None
    raise CannotFit(
        f"even re-encoded to {plan.width}x{plan.height} the {source.noun} is "
        f"{size_words(size)}, over the {size_words(limit)} upload limit"
    )


def _plan_video(source: _Source, total: float, max_pixels: int | None, limit: int) -> _Plan:
    """Split `total` bits per second between sound and picture, and pick the picture's size."""
    audio_rate = 0
    if source.audio is not None:
        audio_rate = next(
            (r for r in _VIDEO_AUDIO_RATES if r <= total * 0.15), _VIDEO_AUDIO_RATES[-1]
        )
    video_rate = total - audio_rate
    fps = float(source.rate)
    sizes = _sizes(source.width, source.height)
    smallest = sizes[-1]
    if video_rate < smallest[0] * smallest[1] * fps * _FLOOR_BPP:
        raise CannotFit(
            f"the {source.noun} is {duration_words(source.duration)} long; even at the lowest "
            f"quality it does not fit in {size_words(limit)}"
        )
    fitting = [s for s in sizes if max_pixels is None or s[0] * s[1] <= max_pixels]
    if not fitting:  # below the ladder: scaled to the pixels asked for, within reason
        assert max_pixels is not None
        scale = max(math.sqrt(max_pixels / (source.width * source.height)), 32 / min(sizes[0]))
        fitting = [(_even(source.width * scale), _even(source.height * scale))]
    width, height = next(
        (s for s in fitting if video_rate / (s[0] * s[1] * fps) >= _MIN_BPP), fitting[-1]
    )
    return _Plan(width, height, int(video_rate), audio_rate)


def _sizes(width: int, height: int) -> list[tuple[int, int]]:
    """The picture sizes to try, largest first: the source's own (made even), then the ladder."""
    short = min(width, height)
    sizes = [(_even(width), _even(height))]
    for step in _LADDER:
        if step < short:
            scale = step / short
            sizes.append((_even(width * scale), _even(height * scale)))
    return sizes


def _even(value: float) -> int:
    """H.264 in 4:2:0 needs even sizes."""
    return max(2, 2 * round(value / 2))


def _encode_video(source: _Source, plan: _Plan, clock: Clock, path: str) -> bytes:
    with av.open(path, "w", format="mp4", options={"movflags": "+faststart"}) as out:
        video = out.add_stream("libx264", rate=source.rate)
        video.width, video.height, video.pix_fmt = plan.width, plan.height, "yuv420p"
        video.bit_rate = plan.video_rate
        video.codec_context.time_base = _TIME_BASE
        # A buffer of at most a second (a quarter of a short clip) at the target rate keeps
        # even a clip of a few frames near it: x264's average-bitrate mode alone overshoots
        # short clips by half or more.
        buffer = plan.video_rate * min(1.0, source.duration / 4)
        video.options = {
            "preset": _X264_PRESET,
            # B-frames reorder timestamps; with frames of different durations the MP4 muxer
            # then cuts the last frame short. Without them, each frame keeps its own.
            **({} if source.steady else {"bf": "0"}),
            "maxrate": str(plan.video_rate),
            "bufsize": str(max(1, int(buffer))),
        }
        sound = None
        if source.audio is not None and plan.audio_rate:
            hz = source.audio.sample_rate if source.audio.sample_rate in _AAC_RATES else 48000
            sound = out.add_stream("aac", rate=hz)
            sound.layout = "mono" if source.audio.channels == 1 else "stereo"
            sound.bit_rate = plan.audio_rate
        scaler = VideoReformatter()
        last = -1
        samples = 0
        step = 1 / float(source.rate)
        with closing(source.decode(clock)) as items:
            for item in items:
                clock.check()
                if isinstance(item, AudioFrame):
                    if sound is not None:
                        item.pts, item.time_base = samples, Fraction(1, item.sample_rate)
                        samples += item.samples
                        out.mux(sound.encode(item))
                    continue
                pts = round(item.time / _TIME_BASE)
                if pts <= last:  # two frames at one time: the later one is dropped
                    continue
                last = pts
                frame = scaler.reformat(
                    item.frame,
                    width=plan.width,
                    height=plan.height,
                    format="yuv420p",
                    interpolation="AREA",
                )
                frame.pts, frame.time_base = pts, _TIME_BASE
                frame.duration = round((item.duration or step) / _TIME_BASE)
                out.mux(video.encode(frame))
        clock.check()
        out.mux(video.encode(None))
        if sound is not None:
            out.mux(sound.encode(None))
    with open(path, "rb") as file:
        return file.read()


_Clock = Clock
"""The deadline's old name, kept for callers that patch the decoders."""
